/* test_job.c - submission validation, job record and lease JSON, id parsing. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "job.h"
#include "json.h"
#include "sp.h"

#define NOW 1700000000000LL
#define YEAR 31536000000LL

static int parse_spec(const char *json, const char *prefix, sp_job_spec_t *out, char *err,
                      size_t errlen)
{
    sp_json_val_t v;
    char perr[200];
    if (sp_json_parse(json, strlen(json), SP_JSON_MAX_DEPTH, &v, perr, sizeof perr) != 0) {
        print_error("test input is not JSON: %s: %s\n", json, perr);
        fail();
    }
    return sp_job_spec_parse(v, NOW, prefix, out, err, errlen);
}

static void expect_ok(const char *json, sp_job_spec_t *out)
{
    char err[400] = "";
    if (parse_spec(json, "", out, err, sizeof err) != 0) {
        print_error("%s: unexpected error '%s'\n", json, err);
        fail();
    }
}

/* Asserts that the submission is refused with a message that starts with `want`. */
static void expect_err_prefixed(const char *json, const char *prefix, const char *want)
{
    sp_job_spec_t s;
    char err[400] = "";
    int rc = parse_spec(json, prefix, &s, err, sizeof err);
    if (rc != SP_EINVAL || strncmp(err, want, strlen(want)) != 0) {
        print_error("%s: rc %d, message '%s', wanted '%s...'\n", json, rc, err, want);
        fail();
    }
}

static void expect_err(const char *json, const char *want)
{
    expect_err_prefixed(json, "", want);
}

static void test_defaults(void **state)
{
    (void)state;
    sp_job_spec_t s;
    expect_ok("{\"type\":\"email.send\"}", &s);
    assert_string_equal(s.type, "email.send");
    assert_int_equal(s.type_len, 10);
    assert_int_equal(s.payload_len, 4);
    assert_memory_equal(s.payload, "null", 4);
    assert_int_equal(s.priority, SP_DEFAULT_PRIORITY);
    assert_true(s.run_at == NOW);
    assert_false(s.delayed);
    assert_int_equal(s.max_attempts, SP_DEFAULT_MAX_ATTEMPTS);
    assert_int_equal(s.timeout_ms, SP_DEFAULT_TIMEOUT_MS);
    assert_int_equal(s.backoff_ms, SP_DEFAULT_BACKOFF_MS);
    assert_false(s.has_idem_key);

    /* null in every optional field means the default. */
    expect_ok("{\"type\":\"t\",\"payload\":null,\"priority\":null,\"delay_ms\":null,"
              "\"run_at\":null,\"max_attempts\":null,\"timeout_ms\":null,\"backoff_ms\":null,"
              "\"idempotency_key\":null}",
              &s);
    assert_memory_equal(s.payload, "null", s.payload_len);
    assert_int_equal(s.priority, 5);
    assert_true(s.run_at == NOW);
    assert_false(s.delayed);
    assert_int_equal(s.max_attempts, 3);
    assert_int_equal(s.timeout_ms, 30000);
    assert_int_equal(s.backoff_ms, 1000);
    assert_false(s.has_idem_key);

    /* Every field at once. */
    expect_ok("{\"type\":\"a:b-c_d.e\",\"payload\":[1],\"priority\":9,\"delay_ms\":10,"
              "\"max_attempts\":7,\"timeout_ms\":100,\"backoff_ms\":0,"
              "\"idempotency_key\":\"k1\"}",
              &s);
    assert_int_equal(s.priority, 9);
    assert_true(s.run_at == NOW + 10);
    assert_true(s.delayed);
    assert_int_equal(s.max_attempts, 7);
    assert_int_equal(s.timeout_ms, 100);
    assert_int_equal(s.backoff_ms, 0);
    assert_true(s.has_idem_key);
    assert_int_equal(s.idem_key_len, 2);
    assert_memory_equal(s.idem_key, "k1", 2);
}

static void test_type(void **state)
{
    (void)state;
    sp_job_spec_t s;
    char name[200];
    expect_err("{}", "type: required");
    expect_err("{\"type\":null}", "type: required");
    expect_err("{\"payload\":1}", "type: required");
    static const char *const bad[] = {
        "{\"type\":\"\"}", "{\"type\":\"a b\"}", "{\"type\":\"a/b\"}", "{\"type\":\"\xc3\xa9\"}",
        "{\"type\":5}",    "{\"type\":true}",    "{\"type\":[\"a\"]}", "{\"type\":\"a\\u0000\"}",
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(bad); i++)
        expect_err(bad[i], "type: must be 1-128 characters of A-Z a-z 0-9 . _ : -");

    memset(name, 'x', 128);
    char doc[300];
    snprintf(doc, sizeof doc, "{\"type\":\"%.128s\"}", name);
    expect_ok(doc, &s);
    assert_int_equal(s.type_len, 128);
    assert_int_equal(strlen(s.type), 128);
    snprintf(doc, sizeof doc, "{\"type\":\"%.128sy\"}", name);
    expect_err(doc, "type: must be");

    /* Escapes are decoded before the check. */
    expect_ok("{\"type\":\"\\u0061\\u002eb\"}", &s);
    assert_string_equal(s.type, "a.b");
    expect_ok("{\"type\":\"AZaz09._:-\"}", &s);
    assert_string_equal(s.type, "AZaz09._:-");
}

static void test_payload(void **state)
{
    (void)state;
    sp_job_spec_t s;
    static const char *const payloads[] = {
        "{ \"a\" : [1, 2.50, -0, 1e400] }",
        "\"text \\u0000 with NUL and \\uD83D\\uDE00\"",
        "123456789012345678901234567890.000000000000000000001",
        "[]",
        "false",
        "\"\"",
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(payloads); i++) {
        char doc[300];
        snprintf(doc, sizeof doc, "{\"payload\": %s ,\"type\":\"t\"}", payloads[i]);
        expect_ok(doc, &s);
        assert_int_equal(s.payload_len, strlen(payloads[i]));
        assert_memory_equal(s.payload, payloads[i], s.payload_len);
        /* The payload is a span of the caller's body, not a copy. */
        assert_ptr_equal(s.payload, strstr(doc, payloads[i]));
    }
}

static const char *const not_integers[] = {"5.0", "1e1", "\"5\"", "true", "[5]", "{}", "0.5"};

static void check_int_field(const char *field, long long lo, long long hi, const char *msg)
{
    char doc[200], want[200];
    sp_job_spec_t s;
    snprintf(want, sizeof want, "%s: %s", field, msg);
    const long long bad[] = {lo - 1, hi + 1, -1000000000000LL, 99999999999999LL};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad); i++) {
        if (bad[i] >= lo && bad[i] <= hi) continue;
        snprintf(doc, sizeof doc, "{\"type\":\"t\",\"%s\":%lld}", field, bad[i]);
        expect_err(doc, want);
    }
    for (size_t i = 0; i < SP_ARRAY_LEN(not_integers); i++) {
        snprintf(doc, sizeof doc, "{\"type\":\"t\",\"%s\":%s}", field, not_integers[i]);
        expect_err(doc, want);
    }
    snprintf(doc, sizeof doc, "{\"type\":\"t\",\"%s\":99999999999999999999999}", field);
    expect_err(doc, want);
    snprintf(doc, sizeof doc, "{\"type\":\"t\",\"%s\":%lld}", field, lo);
    expect_ok(doc, &s);
    snprintf(doc, sizeof doc, "{\"type\":\"t\",\"%s\":%lld}", field, hi);
    expect_ok(doc, &s);
}

static void test_integer_fields(void **state)
{
    (void)state;
    sp_job_spec_t s;
    check_int_field("priority", 0, 9, "must be an integer from 0 to 9");
    check_int_field("max_attempts", 1, 1000, "must be an integer from 1 to 1000");
    check_int_field("timeout_ms", 100, 86400000, "must be an integer from 100 to 86400000");
    check_int_field("backoff_ms", 0, 86400000, "must be an integer from 0 to 86400000");
    check_int_field("delay_ms", 0, YEAR, "must be an integer from 0 to 31536000000");

    expect_ok("{\"type\":\"t\",\"priority\":0,\"max_attempts\":1000,\"timeout_ms\":86400000,"
              "\"backoff_ms\":86400000}",
              &s);
    assert_int_equal(s.priority, 0);
    assert_int_equal(s.max_attempts, 1000);
    assert_int_equal(s.timeout_ms, 86400000);
    assert_int_equal(s.backoff_ms, 86400000);
    expect_ok("{\"type\":\"t\",\"priority\":-0}", &s);
    assert_int_equal(s.priority, 0);
}

static void test_delay_and_run_at(void **state)
{
    (void)state;
    sp_job_spec_t s;
    char doc[200];

    expect_ok("{\"type\":\"t\",\"delay_ms\":0}", &s);
    assert_true(s.run_at == NOW);
    assert_false(s.delayed);
    expect_ok("{\"type\":\"t\",\"delay_ms\":1500}", &s);
    assert_true(s.run_at == NOW + 1500);
    assert_true(s.delayed);
    expect_ok("{\"type\":\"t\",\"delay_ms\":31536000000}", &s);
    assert_true(s.run_at == NOW + YEAR);

    snprintf(doc, sizeof doc, "{\"type\":\"t\",\"run_at\":%lld}", NOW + 5000);
    expect_ok(doc, &s);
    assert_true(s.run_at == NOW + 5000);
    assert_true(s.delayed);
    snprintf(doc, sizeof doc, "{\"type\":\"t\",\"run_at\":%lld}", NOW + YEAR);
    expect_ok(doc, &s);
    assert_true(s.run_at == NOW + YEAR);
    snprintf(doc, sizeof doc, "{\"type\":\"t\",\"run_at\":%lld}", NOW);
    expect_ok(doc, &s);
    assert_true(s.run_at == NOW);
    assert_false(s.delayed);

    /* A past time means now. */
    snprintf(doc, sizeof doc, "{\"type\":\"t\",\"run_at\":%lld}", NOW - 1);
    expect_ok(doc, &s);
    assert_true(s.run_at == NOW);
    assert_false(s.delayed);
    expect_ok("{\"type\":\"t\",\"run_at\":0}", &s);
    assert_true(s.run_at == NOW);
    assert_false(s.delayed);

    snprintf(doc, sizeof doc, "{\"type\":\"t\",\"run_at\":%lld}", NOW + YEAR + 1);
    expect_err(doc, "run_at: must be an integer");
    expect_err("{\"type\":\"t\",\"run_at\":-1}", "run_at: must be an integer");
    expect_err("{\"type\":\"t\",\"run_at\":1.7e12}", "run_at: must be an integer");
    expect_err("{\"type\":\"t\",\"run_at\":\"1700000000000\"}", "run_at: must be an integer");

    /* At most one of them; null counts as absent. */
    expect_err("{\"type\":\"t\",\"delay_ms\":1,\"run_at\":1}",
               "delay_ms and run_at: give at most one");
    expect_err("{\"run_at\":5,\"type\":\"t\",\"delay_ms\":0}",
               "delay_ms and run_at: give at most one");
    expect_ok("{\"type\":\"t\",\"delay_ms\":null,\"run_at\":0}", &s);
    expect_ok("{\"type\":\"t\",\"delay_ms\":10,\"run_at\":null}", &s);
    assert_true(s.run_at == NOW + 10);
}

static void test_idempotency_key(void **state)
{
    (void)state;
    sp_job_spec_t s;
    char doc[2000];
    char key[300];

    expect_ok("{\"type\":\"t\",\"idempotency_key\":\"order-17\"}", &s);
    assert_true(s.has_idem_key);
    assert_int_equal(s.idem_key_len, 8);
    assert_memory_equal(s.idem_key, "order-17", 8);

    memset(key, 'k', 257);
    snprintf(doc, sizeof doc, "{\"type\":\"t\",\"idempotency_key\":\"%.256s\"}", key);
    expect_ok(doc, &s);
    assert_int_equal(s.idem_key_len, 256);
    snprintf(doc, sizeof doc, "{\"type\":\"t\",\"idempotency_key\":\"%.257s\"}", key);
    expect_err(doc, "idempotency_key: must be a string of 1-256 bytes");
    expect_err("{\"type\":\"t\",\"idempotency_key\":\"\"}",
               "idempotency_key: must be a string of 1-256 bytes");
    expect_err("{\"type\":\"t\",\"idempotency_key\":17}",
               "idempotency_key: must be a string of 1-256 bytes");

    /* Bytes are counted after decoding: 128 'é' are 256 bytes, 129 are too many. */
    size_t n = (size_t)snprintf(doc, sizeof doc, "{\"type\":\"t\",\"idempotency_key\":\"");
    for (int i = 0; i < 128; i++) n += (size_t)snprintf(doc + n, sizeof doc - n, "\\u00e9");
    snprintf(doc + n, sizeof doc - n, "\"}");
    expect_ok(doc, &s);
    assert_int_equal(s.idem_key_len, 256);
    assert_memory_equal(s.idem_key, "\xc3\xa9", 2);
    snprintf(doc + n, sizeof doc - n, "\\u00e9\"}");
    expect_err(doc, "idempotency_key: must be");

    /* Any code point, NUL included. */
    expect_ok("{\"type\":\"t\",\"idempotency_key\":\"\\u0000a\"}", &s);
    assert_int_equal(s.idem_key_len, 2);
    assert_memory_equal(s.idem_key, "\0a", 2);
}

static void test_unknown_and_duplicate_fields(void **state)
{
    (void)state;
    sp_job_spec_t s;
    expect_err("{\"type\":\"t\",\"priorty\":9}", "unknown field 'priorty'");
    expect_err("{\"priorty\":9}", "unknown field 'priorty'");
    expect_err("{\"type\":\"t\",\"Type\":\"t\"}", "unknown field 'Type'");
    expect_err("{\"type\":\"t\",\"\":1}", "unknown field ''");
    expect_err("{\"type\":\"t\",\"a\\nb\":1}", "unknown field 'a?b'");
    expect_err("{\"type\":\"t\",\"type \":1}", "unknown field 'type '");
    /* The message lists what is known. */
    char err[400];
    assert_int_equal(parse_spec("{\"type\":\"t\",\"x\":1}", "", &s, err, sizeof err), SP_EINVAL);
    assert_non_null(strstr(err, "idempotency_key"));

    /* A known name spelt with escapes is that name. */
    expect_ok("{\"\\u0074ype\":\"t\",\"pri\\u006frity\":2}", &s);
    assert_int_equal(s.priority, 2);

    expect_err("{\"type\":\"a\",\"type\":\"b\"}", "duplicate key 'type'");
    expect_err("{\"type\":\"a\",\"\\u0074ype\":\"a\"}", "duplicate key 'type'");
    expect_err("{\"type\":\"a\",\"priority\":null,\"priority\":1}", "duplicate key 'priority'");

    expect_err("[]", "body must be a JSON object");
    expect_err("\"type\"", "body must be a JSON object");
    expect_err("null", "body must be a JSON object");
}

static void test_prefix_in_messages(void **state)
{
    (void)state;
    const char *p = "jobs[3].";
    expect_err_prefixed("{\"type\":\"t\",\"priority\":10}", p,
                        "jobs[3].priority: must be an integer from 0 to 9");
    expect_err_prefixed("{}", p, "jobs[3].type: required");
    expect_err_prefixed("{\"type\":\"?\"}", p, "jobs[3].type: must be 1-128 characters");
    expect_err_prefixed("{\"type\":\"t\",\"priorty\":1}", p, "jobs[3]: unknown field 'priorty'");
    expect_err_prefixed("{\"type\":\"t\",\"type\":\"t\"}", p, "jobs[3]: duplicate key 'type'");
    expect_err_prefixed("[1]", p, "jobs[3]: must be a JSON object");
    expect_err_prefixed("{\"type\":\"t\",\"delay_ms\":1,\"run_at\":1}", p,
                        "jobs[3].delay_ms and jobs[3].run_at: give at most one");
    expect_err_prefixed("{\"type\":\"t\",\"idempotency_key\":\"\"}", p,
                        "jobs[3].idempotency_key: must be");
    expect_err_prefixed("{\"type\":\"t\",\"timeout_ms\":5}", p,
                        "jobs[3].timeout_ms: must be an integer from 100 to 86400000");
    /* NULL is the same as "". */
    expect_err_prefixed("{\"type\":\"t\",\"priority\":10}", NULL, "priority: must be");

    /* A NULL or empty err buffer is allowed. */
    sp_job_spec_t s;
    assert_int_equal(parse_spec("{}", "", &s, NULL, 0), SP_EINVAL);
    char tiny[5];
    assert_int_equal(parse_spec("{\"x\":1}", "jobs[1].", &s, tiny, sizeof tiny), SP_EINVAL);
    assert_string_equal(tiny, "jobs");
}

static void test_header_key(void **state)
{
    (void)state;
    sp_job_spec_t s;
    char err[400];
    char key[300];

    expect_ok("{\"type\":\"t\"}", &s);
    assert_int_equal(sp_job_spec_set_header_key(&s, "h-1", 3, err, sizeof err), 0);
    assert_true(s.has_idem_key);
    assert_int_equal(s.idem_key_len, 3);
    assert_memory_equal(s.idem_key, "h-1", 3);

    expect_ok("{\"type\":\"t\",\"idempotency_key\":\"same\"}", &s);
    assert_int_equal(sp_job_spec_set_header_key(&s, "same", 4, err, sizeof err), 0);
    assert_int_equal(s.idem_key_len, 4);
    assert_int_equal(sp_job_spec_set_header_key(&s, "samf", 4, err, sizeof err), SP_EINVAL);
    assert_non_null(strstr(err, "idempotency_key: differs from the Idempotency-Key header"));
    assert_int_equal(sp_job_spec_set_header_key(&s, "sam", 3, err, sizeof err), SP_EINVAL);
    assert_int_equal(sp_job_spec_set_header_key(&s, "same!", 5, err, sizeof err), SP_EINVAL);
    assert_memory_equal(s.idem_key, "same", 4);

    expect_ok("{\"type\":\"t\"}", &s);
    assert_int_equal(sp_job_spec_set_header_key(&s, "", 0, err, sizeof err), SP_EINVAL);
    assert_non_null(strstr(err, "Idempotency-Key"));
    assert_false(s.has_idem_key);
    memset(key, 'k', sizeof key);
    assert_int_equal(sp_job_spec_set_header_key(&s, key, 257, err, sizeof err), SP_EINVAL);
    assert_false(s.has_idem_key);
    assert_int_equal(sp_job_spec_set_header_key(&s, "\xff\xfe", 2, err, sizeof err), SP_EINVAL);
    assert_false(s.has_idem_key);
    assert_int_equal(sp_job_spec_set_header_key(&s, key, 256, err, sizeof err), 0);
    assert_int_equal(s.idem_key_len, 256);
    assert_int_equal(sp_job_spec_set_header_key(&s, "x", 1, NULL, 0), SP_EINVAL);
}

static const char *const record_keys[] = {
    "id",
    "queue",
    "type",
    "payload",
    "state",
    "priority",
    "attempts",
    "max_attempts",
    "timeout_ms",
    "backoff_ms",
    "idempotency_key",
    "created_at",
    "run_at",
    "started_at",
    "finished_at",
    "lease_expires_at",
    "cancel_requested",
    "result",
    "last_error",
    "worker",
};

static const char *const lease_keys[] = {
    "id",           "queue",      "type",  "payload",          "attempts",
    "max_attempts", "timeout_ms", "lease", "lease_expires_at",
};

/* Parses b as one JSON object whose keys are exactly `keys`, in order. */
static sp_json_val_t check_object(const sp_buf_t *b, const char *const *keys, size_t nkeys)
{
    sp_json_val_t obj, k, v;
    char err[200];
    assert_false(b->oom);
    if (sp_json_parse(b->data, b->len, SP_JSON_MAX_DEPTH, &obj, err, sizeof err) != 0) {
        print_error("not JSON: %s\n%s\n", err, b->data);
        fail();
    }
    assert_int_equal(obj.type, SP_JSON_OBJECT);
    assert_int_equal(sp_json_check_unique_keys(obj, err, sizeof err), 0);
    sp_json_iter_t it;
    sp_json_iter_init(&it, obj);
    for (size_t i = 0; i < nkeys; i++) {
        assert_true(sp_json_obj_next(&it, &k, &v));
        if (!sp_json_str_eq(k, keys[i])) {
            print_error("key %zu is %.*s, wanted %s\n", i, (int)k.len, k.start, keys[i]);
            fail();
        }
    }
    assert_false(sp_json_obj_next(&it, &k, &v));
    return obj;
}

static void expect_member(sp_json_val_t obj, const char *key, const char *raw)
{
    sp_json_val_t v;
    assert_true(sp_json_obj_get(obj, key, &v));
    if (v.len != strlen(raw) || memcmp(v.start, raw, v.len) != 0) {
        print_error("%s is %.*s, wanted %s\n", key, (int)v.len, v.start, raw);
        fail();
    }
}

static void expect_str_member(sp_json_val_t obj, const char *key, const char *want, size_t n)
{
    sp_json_val_t v;
    char out[600];
    size_t len;
    assert_true(sp_json_obj_get(obj, key, &v));
    assert_int_equal(v.type, SP_JSON_STRING);
    assert_int_equal(sp_json_str_decode(v, out, sizeof out, &len), 0);
    assert_int_equal(len, n);
    assert_memory_equal(out, want, n);
}

static void test_record_json(void **state)
{
    (void)state;
    const char *body =
        "{\"type\":\"resize\",\"priority\":7,\"idempotency_key\":\"k\\u0000\\\"1\","
        "\"payload\":{\"big\":123456789012345678901234567890,"
        "\"dec\":0.10000000000000000000000000001,\"s\":\"a\\u0000b\\uD83D\\uDE00\"}}";
    sp_json_val_t v;
    assert_int_equal(sp_json_parse(body, strlen(body), SP_JSON_MAX_DEPTH, &v, NULL, 0), 0);
    sp_job_spec_t s;
    char err[400];
    assert_int_equal(sp_job_spec_parse(v, NOW, "", &s, err, sizeof err), 0);

    sp_jobrec_t r = {
        .id = UINT64_MAX,
        .queue = "default",
        .queue_len = 7,
        .type = s.type,
        .type_len = s.type_len,
        .payload = s.payload,
        .payload_len = s.payload_len,
        .state = SP_STATE_RUNNING,
        .priority = s.priority,
        .attempts = 2,
        .max_attempts = s.max_attempts,
        .timeout_ms = s.timeout_ms,
        .backoff_ms = s.backoff_ms,
        .created_at = NOW,
        .run_at = s.run_at,
        .started_at = NOW + 1,
        .finished_at = -1,
        .lease_expires_at = NOW + 30001,
        .result = "[1.000000000000000000000001]",
        .result_len = strlen("[1.000000000000000000000001]"),
        .last_error = "tab\there \"quoted\"",
        .last_error_len = strlen("tab\there \"quoted\""),
        .worker = "host:42",
        .worker_len = 7,
        .idem_key = s.idem_key,
        .idem_key_len = s.idem_key_len,
        .cancel_requested = true,
        .lease = 99,
    };
    sp_buf_t b = SP_BUF_INIT;
    sp_job_write_json(&b, &r);
    sp_json_val_t obj = check_object(&b, record_keys, SP_ARRAY_LEN(record_keys));
    expect_member(obj, "id", "\"18446744073709551615\"");
    expect_member(obj, "queue", "\"default\"");
    expect_member(obj, "type", "\"resize\"");
    /* The payload comes back byte for byte: every digit, every code point. */
    expect_member(obj, "payload",
                  "{\"big\":123456789012345678901234567890,"
                  "\"dec\":0.10000000000000000000000000001,\"s\":\"a\\u0000b\\uD83D\\uDE00\"}");
    expect_member(obj, "state", "\"running\"");
    expect_member(obj, "priority", "7");
    expect_member(obj, "attempts", "2");
    expect_member(obj, "max_attempts", "3");
    expect_member(obj, "timeout_ms", "30000");
    expect_member(obj, "backoff_ms", "1000");
    expect_str_member(obj, "idempotency_key", "k\0\"1", 4);
    expect_member(obj, "created_at", "1700000000000");
    expect_member(obj, "run_at", "1700000000000");
    expect_member(obj, "started_at", "1700000000001");
    expect_member(obj, "finished_at", "null");
    expect_member(obj, "lease_expires_at", "1700000030001");
    expect_member(obj, "cancel_requested", "true");
    expect_member(obj, "result", "[1.000000000000000000000001]");
    expect_str_member(obj, "last_error", "tab\there \"quoted\"", 17);
    expect_str_member(obj, "worker", "host:42", 7);

    /* A fresh job: unset fields are null. */
    sp_jobrec_t fresh = {
        .id = 1,
        .queue = "q",
        .queue_len = 1,
        .type = "t",
        .type_len = 1,
        .payload = "null",
        .payload_len = 4,
        .state = SP_STATE_QUEUED,
        .priority = 5,
        .max_attempts = 3,
        .timeout_ms = 30000,
        .backoff_ms = 1000,
        .created_at = 0,
        .run_at = 0,
        .started_at = -1,
        .finished_at = -1,
        .lease_expires_at = -1,
    };
    sp_buf_reset(&b);
    sp_job_write_json(&b, &fresh);
    assert_string_equal(
        b.data,
        "{\"id\":\"1\",\"queue\":\"q\",\"type\":\"t\",\"payload\":null,\"state\":\"queued\","
        "\"priority\":5,\"attempts\":0,\"max_attempts\":3,\"timeout_ms\":30000,"
        "\"backoff_ms\":1000,\"idempotency_key\":null,\"created_at\":0,\"run_at\":0,"
        "\"started_at\":null,\"finished_at\":null,\"lease_expires_at\":null,"
        "\"cancel_requested\":false,\"result\":null,\"last_error\":null,\"worker\":null}");

    /* Appends: two records in one buffer stay whole. */
    size_t one = b.len;
    sp_job_write_json(&b, &fresh);
    assert_int_equal(b.len, 2 * one);
    sp_buf_free(&b);
}

static void test_record_text_not_utf8(void **state)
{
    (void)state;
    /* Handler output may be any bytes: the record must still be valid JSON. */
    sp_jobrec_t r = {
        .id = 5,
        .queue = "q",
        .queue_len = 1,
        .type = "t",
        .type_len = 1,
        .payload = "1",
        .payload_len = 1,
        .state = SP_STATE_FAILED,
        .started_at = -1,
        .finished_at = 10,
        .lease_expires_at = -1,
        .last_error = "bad \xff\xc3 end\xe2\x82",
        .last_error_len = 12,
        .worker = "ok \xc3\xa9",
        .worker_len = 5,
    };
    sp_buf_t b = SP_BUF_INIT;
    sp_job_write_json(&b, &r);
    sp_json_val_t obj = check_object(&b, record_keys, SP_ARRAY_LEN(record_keys));
    const char want[] = "bad \xef\xbf\xbd\xef\xbf\xbd end\xef\xbf\xbd\xef\xbf\xbd";
    expect_str_member(obj, "last_error", want, sizeof want - 1);
    expect_str_member(obj, "worker", "ok \xc3\xa9", 5);
    sp_buf_free(&b);
}

static void test_lease_json(void **state)
{
    (void)state;
    sp_jobrec_t r = {
        .id = 42,
        .queue = "critical",
        .queue_len = 8,
        .type = "echo",
        .type_len = 4,
        .payload = "{\"n\":1e999}",
        .payload_len = 11,
        .state = SP_STATE_RUNNING,
        .attempts = 1,
        .max_attempts = 3,
        .timeout_ms = 5000,
        .lease_expires_at = NOW + 5000,
        .lease = 12345678901234567890ULL,
    };
    sp_buf_t b = SP_BUF_INIT;
    sp_job_write_lease_json(&b, &r);
    check_object(&b, lease_keys, SP_ARRAY_LEN(lease_keys));
    assert_string_equal(b.data, "{\"id\":\"42\",\"queue\":\"critical\",\"type\":\"echo\","
                                "\"payload\":{\"n\":1e999},\"attempts\":1,\"max_attempts\":3,"
                                "\"timeout_ms\":5000,\"lease\":\"12345678901234567890\","
                                "\"lease_expires_at\":1700000005000}");
    sp_buf_free(&b);
}

static int id_json(const char *text, uint64_t *out)
{
    sp_json_val_t v;
    assert_int_equal(sp_json_parse(text, strlen(text), 8, &v, NULL, 0), 0);
    return sp_job_parse_id_json(v, out);
}

static void test_parse_id(void **state)
{
    (void)state;
    uint64_t id = 0;
    assert_int_equal(sp_job_parse_id("1", 1, &id), 0);
    assert_true(id == 1);
    assert_int_equal(sp_job_parse_id("18446744073709551615", 20, &id), 0);
    assert_true(id == UINT64_MAX);
    assert_int_equal(sp_job_parse_id("00000000000000000042", 20, &id), 0);
    assert_true(id == 42);
    assert_int_equal(sp_job_parse_id("123", 2, &id), 0);
    assert_true(id == 12);
    id = 7;
    static const char *const bad[] = {
        "",
        "0",
        "00",
        "-1",
        "+1",
        "1a",
        " 1",
        "1 ",
        "1.0",
        "1e3",
        "18446744073709551616",
        "99999999999999999999",
        "000000000000000000001",
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(bad); i++)
        assert_int_equal(sp_job_parse_id(bad[i], strlen(bad[i]), &id), SP_EINVAL);
    assert_true(id == 7);
    assert_int_equal(sp_job_parse_id(NULL, 0, &id), SP_EINVAL);

    assert_int_equal(id_json("\"42\"", &id), 0);
    assert_true(id == 42);
    assert_int_equal(id_json("42", &id), 0);
    assert_true(id == 42);
    assert_int_equal(id_json("18446744073709551615", &id), 0);
    assert_true(id == UINT64_MAX);
    assert_int_equal(id_json("\"18446744073709551615\"", &id), 0);
    assert_int_equal(id_json("\"\\u0034\\u0032\"", &id), 0);
    assert_true(id == 42);
    static const char *const bad_json[] = {
        "0",    "-1",   "1.0", "1e3",        "18446744073709551616",      "\"\"", "\"0\"", "\" 4\"",
        "true", "null", "[1]", "{\"id\":1}", "\"123456789012345678901\"", "-0",
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(bad_json); i++) {
        if (id_json(bad_json[i], &id) != SP_EINVAL) {
            print_error("%s accepted\n", bad_json[i]);
            fail();
        }
    }
}

/* A batch body as the API receives it, validated job by job with index prefixes. */
static void test_batch_of_ten_thousand(void **state)
{
    (void)state;
    const size_t n = 10000;
    sp_buf_t b = SP_BUF_INIT;
    sp_buf_puts(&b, "{\"jobs\":[");
    for (size_t i = 0; i < n; i++) {
        if (i) sp_buf_putc(&b, ',');
        sp_buf_printf(&b,
                      "{\"type\":\"email.send\",\"payload\":{\"to\":\"user%zu@example.com\","
                      "\"n\":%zu},\"priority\":%zu}",
                      i, i, i % 10);
    }
    sp_buf_puts(&b, "]}");
    assert_false(b.oom);

    sp_json_val_t doc, jobs, job;
    char err[400];
    assert_int_equal(sp_json_parse(b.data, b.len, SP_JSON_MAX_DEPTH, &doc, err, sizeof err), 0);
    assert_int_equal(sp_json_check_unique_keys(doc, err, sizeof err), 0);
    assert_true(sp_json_obj_get(doc, "jobs", &jobs));
    assert_int_equal(sp_json_arr_len(jobs), n);
    sp_job_spec_t *specs = calloc(n, sizeof *specs);
    assert_non_null(specs);
    sp_json_iter_t it;
    sp_json_iter_init(&it, jobs);
    for (size_t i = 0; sp_json_arr_next(&it, &job); i++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "jobs[%zu].", i);
        assert_int_equal(sp_job_spec_parse(job, NOW, prefix, &specs[i], err, sizeof err), 0);
        assert_int_equal(specs[i].priority, (int)(i % 10));
    }
    free(specs);
    sp_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_type),
        cmocka_unit_test(test_payload),
        cmocka_unit_test(test_integer_fields),
        cmocka_unit_test(test_delay_and_run_at),
        cmocka_unit_test(test_idempotency_key),
        cmocka_unit_test(test_unknown_and_duplicate_fields),
        cmocka_unit_test(test_prefix_in_messages),
        cmocka_unit_test(test_header_key),
        cmocka_unit_test(test_record_json),
        cmocka_unit_test(test_record_text_not_utf8),
        cmocka_unit_test(test_lease_json),
        cmocka_unit_test(test_parse_id),
        cmocka_unit_test(test_batch_of_ten_thousand),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
