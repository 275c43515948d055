/*
 * job.c - the job model at the edges: a submission validated into an sp_job_spec_t with
 * messages that name the field and say how to fix it, job records written as JSON, and ids
 * parsed back (see job.h).
 */
#include "job.h"

#include <stdio.h>
#include <string.h>

enum {
    F_TYPE,
    F_PAYLOAD,
    F_PRIORITY,
    F_DELAY_MS,
    F_RUN_AT,
    F_MAX_ATTEMPTS,
    F_TIMEOUT_MS,
    F_BACKOFF_MS,
    F_IDEM_KEY,
    F_COUNT
};

static const struct {
    const char *name;
    size_t len;
} fields[F_COUNT] = {
    [F_TYPE] = {"type", 4},
    [F_PAYLOAD] = {"payload", 7},
    [F_PRIORITY] = {"priority", 8},
    [F_DELAY_MS] = {"delay_ms", 8},
    [F_RUN_AT] = {"run_at", 6},
    [F_MAX_ATTEMPTS] = {"max_attempts", 12},
    [F_TIMEOUT_MS] = {"timeout_ms", 10},
    [F_BACKOFF_MS] = {"backoff_ms", 10},
    [F_IDEM_KEY] = {"idempotency_key", 15},
};

#define KNOWN_FIELDS                                                                               \
    "type, payload, priority, delay_ms, run_at, max_attempts, timeout_ms, backoff_ms, "            \
    "idempotency_key"
#define NAME_RULE "1-128 characters of A-Z a-z 0-9 . _ : -"

/* The index of a known field, or -1. Keys are matched on their decoded text, so an escaped
 * spelling of a known name is that name; the raw comparison settles the usual case. */
static int field_index(sp_json_val_t key)
{
    const char *s = key.start + 1;
    size_t n = key.len - 2;
    for (int i = 0; i < F_COUNT; i++)
        if (fields[i].len == n && memcmp(fields[i].name, s, n) == 0) return i;
    if (!memchr(s, '\\', n)) return -1;
    for (int i = 0; i < F_COUNT; i++)
        if (sp_json_str_eq(key, fields[i].name)) return i;
    return -1;
}

/* A message about one field: "<prefix><field>: <what>". */
static int field_err(char *err, size_t errlen, const char *prefix, int field, const char *what)
{
    if (err && errlen) snprintf(err, errlen, "%s%s: %s", prefix, fields[field].name, what);
    return SP_EINVAL;
}

/* A message about the whole object: "jobs[3]: <what>" in a batch, "<what>" alone otherwise. */
static int object_err(char *err, size_t errlen, const char *prefix, const char *what)
{
    if (!err || !errlen) return SP_EINVAL;
    size_t plen = strlen(prefix);
    if (plen && prefix[plen - 1] == '.') plen--;
    if (plen)
        snprintf(err, errlen, "%.*s: %s", (int)plen, prefix, what);
    else
        snprintf(err, errlen, "%s", what);
    return SP_EINVAL;
}

/* An integer field within [lo, hi]: JSON integers only, so 5.0, 1e1, "5" and true fail. */
static bool int_in(sp_json_val_t v, int64_t lo, int64_t hi, int64_t *out)
{
    int64_t x;
    if (sp_json_int(v, &x) != 0 || x < lo || x > hi) return false;
    *out = x;
    return true;
}

static int parse_type(sp_json_val_t v, bool given, const char *prefix, sp_job_spec_t *out,
                      char *err, size_t errlen)
{
    if (!given)
        return field_err(err, errlen, prefix, F_TYPE, "required (a string of " NAME_RULE ")");
    size_t n;
    if (v.type != SP_JSON_STRING || sp_json_str_decode(v, out->type, SP_NAME_MAX, &n) != 0 ||
        !sp_name_valid(out->type, n))
        return field_err(err, errlen, prefix, F_TYPE, "must be " NAME_RULE);
    out->type[n] = '\0';
    out->type_len = n;
    return 0;
}

static int parse_schedule(const sp_json_val_t *f, const bool *given, int64_t now,
                          const char *prefix, sp_job_spec_t *out, char *err, size_t errlen)
{
    int64_t v;
    out->run_at = now;
    out->run_at_given = false;
    if (given[F_DELAY_MS] && given[F_RUN_AT]) {
        if (err && errlen)
            snprintf(err, errlen, "%sdelay_ms and %srun_at: give at most one", prefix, prefix);
        return SP_EINVAL;
    }
    if (given[F_DELAY_MS]) {
        if (!int_in(f[F_DELAY_MS], 0, SP_DELAY_MS_MAX, &v))
            return field_err(err, errlen, prefix, F_DELAY_MS,
                             "must be an integer from 0 to 31536000000 (a year)");
        out->run_at = now + v;
    } else if (given[F_RUN_AT]) {
        int64_t hi = now > INT64_MAX - SP_DELAY_MS_MAX ? INT64_MAX : now + SP_DELAY_MS_MAX;
        if (!int_in(f[F_RUN_AT], 0, hi, &v))
            return field_err(err, errlen, prefix, F_RUN_AT,
                             "must be an integer time in ms since the Unix epoch, at most a "
                             "year ahead");
        out->run_at = v > now ? v : now;
        out->run_at_given = true;
    }
    out->delayed = out->run_at > now;
    out->parsed_at = now;
    return 0;
}

/* The three bounded uint32 fields share one shape. */
static int parse_limits(const sp_json_val_t *f, const bool *given, const char *prefix,
                        sp_job_spec_t *out, char *err, size_t errlen)
{
    static const struct {
        int field;
        int64_t lo, hi, def;
        const char *what;
    } lim[] = {
        {F_MAX_ATTEMPTS, 1, SP_MAX_ATTEMPTS_LIMIT, SP_DEFAULT_MAX_ATTEMPTS,
         "must be an integer from 1 to 1000"},
        {F_TIMEOUT_MS, SP_TIMEOUT_MS_MIN, SP_TIMEOUT_MS_MAX, SP_DEFAULT_TIMEOUT_MS,
         "must be an integer from 100 to 86400000 (ms)"},
        {F_BACKOFF_MS, 0, SP_BACKOFF_MS_MAX, SP_DEFAULT_BACKOFF_MS,
         "must be an integer from 0 to 86400000 (ms)"},
    };
    uint32_t *dst[] = {&out->max_attempts, &out->timeout_ms, &out->backoff_ms};
    for (size_t i = 0; i < SP_ARRAY_LEN(lim); i++) {
        int64_t v = lim[i].def;
        if (given[lim[i].field] && !int_in(f[lim[i].field], lim[i].lo, lim[i].hi, &v))
            return field_err(err, errlen, prefix, lim[i].field, lim[i].what);
        *dst[i] = (uint32_t)v;
    }
    return 0;
}

static int parse_idem_key(sp_json_val_t v, bool given, const char *prefix, sp_job_spec_t *out,
                          char *err, size_t errlen)
{
    out->has_idem_key = false;
    out->idem_key_len = 0;
    if (!given) return 0;
    size_t n;
    if (v.type != SP_JSON_STRING || sp_json_str_decode(v, out->idem_key, SP_IDEM_KEY_MAX, &n) ||
        n == 0)
        return field_err(err, errlen, prefix, F_IDEM_KEY, "must be a string of 1-256 bytes");
    out->has_idem_key = true;
    out->idem_key_len = n;
    return 0;
}

int sp_job_spec_parse(sp_json_val_t obj, int64_t now, const char *prefix, sp_job_spec_t *out,
                      char *err, size_t errlen)
{
    sp_json_val_t f[F_COUNT];
    bool given[F_COUNT] = {false}; /* present and not null */
    bool present[F_COUNT] = {false};
    sp_json_iter_t it;
    sp_json_val_t k, v;
    char msg[320];
    int rc;

    memset(f, 0, sizeof f);
    if (!prefix) prefix = "";
    if (obj.type != SP_JSON_OBJECT)
        return object_err(err, errlen, prefix,
                          *prefix ? "must be a JSON object" : "body must be a JSON object");

    /* One pass over the members. A repeated known field shows in `present`; the full duplicate
     * check (unknown keys included) runs only on the error path, so that a duplicate is still
     * reported before an unknown field, as if it had been checked first. */
    sp_json_val_t unknown = {SP_JSON_NULL, NULL, 0};
    sp_json_iter_init(&it, obj);
    while (sp_json_obj_next(&it, &k, &v)) {
        int i = field_index(k);
        if (i < 0) {
            if (!unknown.start) unknown = k;
            continue;
        }
        if (present[i]) {
            if (!unknown.start || sp_json_check_unique_keys(obj, msg, sizeof msg) == 0)
                snprintf(msg, sizeof msg, "duplicate key '%s'", fields[i].name);
            return object_err(err, errlen, prefix, msg);
        }
        f[i] = v;
        present[i] = true;
        given[i] = v.type != SP_JSON_NULL;
    }
    if (unknown.start) {
        if (sp_json_check_unique_keys(obj, msg, sizeof msg) == 0) {
            char name[80];
            sp_json_str_preview(unknown, name, sizeof name);
            snprintf(msg, sizeof msg, "unknown field '%s' (known fields: " KNOWN_FIELDS ")", name);
        }
        return object_err(err, errlen, prefix, msg);
    }

    if ((rc = parse_type(f[F_TYPE], given[F_TYPE], prefix, out, err, errlen)) != 0) return rc;
    /* A payload given as null is the same value as none: its text is "null" either way. */
    if (present[F_PAYLOAD]) {
        out->payload = f[F_PAYLOAD].start;
        out->payload_len = f[F_PAYLOAD].len;
    } else {
        out->payload = "null";
        out->payload_len = 4;
    }
    int64_t pri = SP_DEFAULT_PRIORITY;
    if (given[F_PRIORITY] && !int_in(f[F_PRIORITY], 0, 9, &pri))
        return field_err(err, errlen, prefix, F_PRIORITY, "must be an integer from 0 to 9");
    out->priority = (int)pri;
    if ((rc = parse_schedule(f, given, now, prefix, out, err, errlen)) != 0) return rc;
    if ((rc = parse_limits(f, given, prefix, out, err, errlen)) != 0) return rc;
    return parse_idem_key(f[F_IDEM_KEY], given[F_IDEM_KEY], prefix, out, err, errlen);
}

int sp_job_spec_set_header_key(sp_job_spec_t *spec, const char *key, size_t len, char *err,
                               size_t errlen)
{
    /* The key is shown back in job records, so it must be text that JSON can carry. */
    if (len == 0 || len > SP_IDEM_KEY_MAX || sp_json_utf8_span(key, len) != len) {
        if (err && errlen)
            snprintf(err, errlen, "Idempotency-Key header: must be 1-256 bytes of UTF-8 text");
        return SP_EINVAL;
    }
    if (spec->has_idem_key) {
        if (spec->idem_key_len == len && memcmp(spec->idem_key, key, len) == 0) return 0;
        if (err && errlen)
            snprintf(err, errlen,
                     "idempotency_key: differs from the Idempotency-Key header (send one key, "
                     "or the same in both)");
        return SP_EINVAL;
    }
    memcpy(spec->idem_key, key, len);
    spec->idem_key_len = len;
    spec->has_idem_key = true;
    return 0;
}

/* ---- writing records ------------------------------------------------------------------------- */

#define PUT_LIT(b, s) sp_buf_append((b), s, sizeof(s) - 1)

static void put_id(sp_buf_t *b, uint64_t id)
{
    sp_buf_putc(b, '"');
    sp_buf_u64(b, id);
    sp_buf_putc(b, '"');
}

static void put_time(sp_buf_t *b, int64_t t)
{
    if (t < 0)
        PUT_LIT(b, "null");
    else
        sp_buf_i64(b, t);
}

static void put_raw(sp_buf_t *b, const char *json, size_t n)
{
    if (json && n)
        sp_buf_append(b, json, n);
    else
        PUT_LIT(b, "null");
}

/* Text that may come from outside (handler output, headers): bytes that are not UTF-8 are shown
 * as U+FFFD, so that the record is always valid JSON. */
static void put_text(sp_buf_t *b, const char *s, size_t n)
{
    if (!s) {
        PUT_LIT(b, "null");
        return;
    }
    size_t ok = sp_json_utf8_span(s, n);
    if (ok == n) {
        sp_buf_json_str(b, s, n);
        return;
    }
    sp_buf_t tmp = SP_BUF_INIT;
    while (n) {
        sp_buf_append(&tmp, s, ok);
        PUT_LIT(&tmp, "\xEF\xBF\xBD");
        s += ok + 1;
        n -= ok + 1;
        ok = sp_json_utf8_span(s, n);
        if (ok == n) {
            sp_buf_append(&tmp, s, n);
            break;
        }
    }
    if (tmp.oom)
        b->oom = true;
    else
        sp_buf_json_str(b, tmp.data, tmp.len);
    sp_buf_free(&tmp);
}

static void put_head(sp_buf_t *b, const sp_jobrec_t *job)
{
    PUT_LIT(b, "{\"id\":");
    put_id(b, job->id);
    PUT_LIT(b, ",\"queue\":");
    sp_buf_json_str(b, job->queue, job->queue_len);
    PUT_LIT(b, ",\"type\":");
    sp_buf_json_str(b, job->type, job->type_len);
    PUT_LIT(b, ",\"payload\":");
    put_raw(b, job->payload, job->payload_len);
}

void sp_job_write_json(sp_buf_t *b, const sp_jobrec_t *job)
{
    sp_buf_reserve(b, 400 + job->queue_len + job->type_len + job->payload_len + job->result_len +
                          job->last_error_len + job->worker_len + job->idem_key_len);
    put_head(b, job);
    PUT_LIT(b, ",\"state\":\"");
    sp_buf_puts(b, sp_state_name(job->state));
    PUT_LIT(b, "\",\"priority\":");
    sp_buf_i64(b, job->priority);
    PUT_LIT(b, ",\"attempts\":");
    sp_buf_u64(b, job->attempts);
    PUT_LIT(b, ",\"max_attempts\":");
    sp_buf_u64(b, job->max_attempts);
    PUT_LIT(b, ",\"timeout_ms\":");
    sp_buf_u64(b, job->timeout_ms);
    PUT_LIT(b, ",\"backoff_ms\":");
    sp_buf_u64(b, job->backoff_ms);
    PUT_LIT(b, ",\"idempotency_key\":");
    put_text(b, job->idem_key, job->idem_key_len);
    PUT_LIT(b, ",\"created_at\":");
    put_time(b, job->created_at);
    PUT_LIT(b, ",\"run_at\":");
    put_time(b, job->run_at);
    PUT_LIT(b, ",\"started_at\":");
    put_time(b, job->started_at);
    PUT_LIT(b, ",\"finished_at\":");
    put_time(b, job->finished_at);
    PUT_LIT(b, ",\"lease_expires_at\":");
    put_time(b, job->lease_expires_at);
    if (job->cancel_requested)
        PUT_LIT(b, ",\"cancel_requested\":true");
    else
        PUT_LIT(b, ",\"cancel_requested\":false");
    PUT_LIT(b, ",\"result\":");
    put_raw(b, job->result, job->result_len);
    PUT_LIT(b, ",\"last_error\":");
    put_text(b, job->last_error, job->last_error_len);
    PUT_LIT(b, ",\"worker\":");
    put_text(b, job->worker, job->worker_len);
    sp_buf_putc(b, '}');
}

void sp_job_write_lease_json(sp_buf_t *b, const sp_jobrec_t *job)
{
    sp_buf_reserve(b, 200 + job->queue_len + job->type_len + job->payload_len);
    put_head(b, job);
    PUT_LIT(b, ",\"attempts\":");
    sp_buf_u64(b, job->attempts);
    PUT_LIT(b, ",\"max_attempts\":");
    sp_buf_u64(b, job->max_attempts);
    PUT_LIT(b, ",\"timeout_ms\":");
    sp_buf_u64(b, job->timeout_ms);
    PUT_LIT(b, ",\"lease\":");
    put_id(b, job->lease);
    PUT_LIT(b, ",\"lease_expires_at\":");
    put_time(b, job->lease_expires_at);
    sp_buf_putc(b, '}');
}

/* ---- ids ------------------------------------------------------------------------------------- */

int sp_job_parse_id(const char *s, size_t len, uint64_t *out)
{
    if (!s || len == 0 || len > 20) return SP_EINVAL;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return SP_EINVAL;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) return SP_EINVAL;
        v = v * 10 + d;
    }
    if (v == 0) return SP_EINVAL;
    *out = v;
    return 0;
}

int sp_job_parse_id_json(sp_json_val_t v, uint64_t *out)
{
    if (v.type == SP_JSON_STRING) {
        char digits[20];
        size_t n;
        if (sp_json_str_decode(v, digits, sizeof digits, &n) != 0) return SP_EINVAL;
        return sp_job_parse_id(digits, n, out);
    }
    /* A JSON integer's text is already plain digits; '-', '.' and 'e' are refused below. */
    if (v.type == SP_JSON_NUMBER) return sp_job_parse_id(v.start, v.len, out);
    return SP_EINVAL;
}
