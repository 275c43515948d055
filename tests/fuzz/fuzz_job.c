/*
 * fuzz_job.c - libFuzzer driver for the JSON scanner and the job model: any bytes go through
 * sp_json_parse; every value is then walked with each accessor, and an object is validated as a
 * submission whose record is written and must parse back with its payload unchanged.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "job.h"
#include "json.h"
#include "sp.h"

#define NOW 1700000000000LL

static void check(int cond)
{
    if (!cond) abort();
}

/* Decoding and re-encoding a string must give back the same decoded text. */
static void walk_string(sp_json_val_t v)
{
    char small[16], preview[32];
    size_t n, n2;
    int rc = sp_json_str_decode(v, small, sizeof small, &n);
    check(rc == (n > sizeof small ? SP_ETOOBIG : 0));
    check(sp_json_str_len(v) == n);
    sp_json_str_preview(v, preview, sizeof preview);
    check(strlen(preview) < sizeof preview);

    char *full = malloc(n + 1);
    if (!full) return;
    check(sp_json_str_decode(v, full, n, &n2) == 0 && n2 == n);
    check(sp_json_utf8_span(full, n) == n);
    full[n] = '\0';
    if (strlen(full) == n) check(sp_json_str_eq(v, full));

    sp_buf_t b = SP_BUF_INIT;
    sp_buf_json_str(&b, full, n);
    sp_json_val_t again;
    if (!b.oom) {
        check(sp_json_parse(b.data, b.len, 1, &again, NULL, 0) == 0);
        char *back = malloc(n + 1);
        if (back) {
            check(sp_json_str_decode(again, back, n, &n2) == 0 && n2 == n);
            check(memcmp(back, full, n) == 0);
            free(back);
        }
    }
    sp_buf_free(&b);
    free(full);
}

static void walk(sp_json_val_t v, int depth)
{
    sp_json_iter_t it;
    sp_json_val_t k, e;
    size_t count = 0;
    int64_t i64;
    uint64_t id;
    char err[128];

    check(depth <= SP_JSON_MAX_DEPTH);
    (void)sp_job_parse_id_json(v, &id);
    switch (v.type) {
    case SP_JSON_NUMBER:
        (void)sp_json_int(v, &i64);
        break;
    case SP_JSON_STRING:
        walk_string(v);
        break;
    case SP_JSON_ARRAY:
        sp_json_iter_init(&it, v);
        while (sp_json_arr_next(&it, &e)) {
            walk(e, depth + 1);
            count++;
        }
        check(sp_json_arr_len(v) == count);
        break;
    case SP_JSON_OBJECT:
        (void)sp_json_check_unique_keys(v, err, sizeof err);
        sp_json_iter_init(&it, v);
        while (sp_json_obj_next(&it, &k, &e)) {
            check(k.type == SP_JSON_STRING);
            walk(k, depth + 1);
            walk(e, depth + 1);
            /* obj_get finds the first member with that key; for a plain key that is e or an
             * earlier duplicate. */
            char key[64];
            size_t kn;
            if (sp_json_str_decode(k, key, sizeof key - 1, &kn) == 0 && !memchr(key, 0, kn)) {
                key[kn] = '\0';
                check(sp_json_obj_get(v, key, &e));
            }
        }
        break;
    default:
        break;
    }
}

static void submit(sp_json_val_t obj)
{
    sp_job_spec_t spec;
    char err[512];
    if (sp_job_spec_parse(obj, NOW, "jobs[7].", &spec, err, sizeof err) != 0) {
        check(err[0] != '\0');
        check(sp_json_utf8_span(err, strlen(err)) == strlen(err));
        return;
    }
    check(sp_name_valid(spec.type, spec.type_len));
    check(spec.priority >= 0 && spec.priority <= 9);
    check(spec.run_at >= NOW && spec.run_at <= NOW + SP_DELAY_MS_MAX);
    check(spec.delayed == (spec.run_at > NOW));
    (void)sp_job_spec_set_header_key(&spec, "hdr", 3, err, sizeof err);

    sp_jobrec_t r = {
        .id = 1 + (uint64_t)spec.payload_len,
        .queue = "q",
        .queue_len = 1,
        .type = spec.type,
        .type_len = spec.type_len,
        .payload = spec.payload,
        .payload_len = spec.payload_len,
        .state = (sp_state_t)(spec.payload_len % SP_STATE_COUNT),
        .priority = spec.priority,
        .max_attempts = spec.max_attempts,
        .timeout_ms = spec.timeout_ms,
        .backoff_ms = spec.backoff_ms,
        .created_at = NOW,
        .run_at = spec.run_at,
        .started_at = -1,
        .finished_at = spec.delayed ? -1 : NOW,
        .lease_expires_at = -1,
        .result = spec.payload,
        .result_len = spec.payload_len,
        .last_error = spec.idem_key,
        .last_error_len = spec.idem_key_len,
        .idem_key = spec.has_idem_key ? spec.idem_key : NULL,
        .idem_key_len = spec.idem_key_len,
        .lease = spec.payload_len,
    };
    sp_buf_t b = SP_BUF_INIT;
    sp_job_write_json(&b, &r);
    sp_job_write_lease_json(&b, &r);
    if (!b.oom) {
        /* Two objects back to back: each must parse alone, the payload unchanged. */
        sp_json_val_t rec, p;
        size_t split = 0, depth = 0;
        for (size_t i = 0; i < b.len && !split; i++) {
            if (b.data[i] == '"') {
                for (i++; b.data[i] != '"'; i++)
                    if (b.data[i] == '\\') i++;
            } else if (b.data[i] == '{') {
                depth++;
            } else if (b.data[i] == '}' && --depth == 0) {
                split = i + 1;
            }
        }
        check(sp_json_parse(b.data, split, SP_JSON_MAX_DEPTH + 1, &rec, err, sizeof err) == 0);
        check(sp_json_obj_get(rec, "payload", &p));
        check(p.len == spec.payload_len && memcmp(p.start, spec.payload, p.len) == 0);
        check(sp_json_parse(b.data + split, b.len - split, SP_JSON_MAX_DEPTH + 1, &rec, err,
                            sizeof err) == 0);
    }
    sp_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sp_json_val_t v;
    char err[256];
    uint64_t id;

    (void)sp_job_parse_id((const char *)data, size, &id);
    (void)sp_json_utf8_span((const char *)data, size);
    if (sp_json_parse((const char *)data, size, SP_JSON_MAX_DEPTH, &v, err, sizeof err) != 0) {
        check(strstr(err, "byte") != NULL || strstr(err, "nesting") != NULL);
        return 0;
    }
    walk(v, 0);
    if (v.type == SP_JSON_OBJECT) submit(v);
    return 0;
}
