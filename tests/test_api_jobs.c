/*
 * test_api_jobs.c - black-box tests of the job endpoints of the HTTP API (docs/API.md):
 * submission and its validation, idempotency, batches, delays, cancel and retry, waiting for a
 * job, limits, authentication and the generic HTTP rules (HEAD, 404, 405, query strings).
 * Each test starts its own spool-server on a free port.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "support/spt.h"

#define ID_MAX 64

static bool all_digits(const char *s)
{
    if (!s || !*s) return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s)) return false;
    return true;
}

/* A string of n copies of c, malloc'd. */
static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static spt_resp_t get_job(int port, const char *id)
{
    char target[128];
    snprintf(target, sizeof(target), "/v1/jobs/%s", id);
    return spt_do(port, "GET", target, NULL, NULL);
}

/* Posts body to queue's jobs route, asserts the status, and copies the answer's id. */
static void submit_raw(int port, const char *queue, const char *body, const char *headers,
                       int status, char *id)
{
    char target[256];
    snprintf(target, sizeof(target), "/v1/queues/%s/jobs", queue);
    spt_resp_t r = spt_do(port, "POST", target, body, headers);
    if (r.status != status)
        fail_msg("POST %s %s: expected %d, got %d %s", target, body, status, r.status,
                 r.body ? r.body : "");
    if (id) {
        const char *got = spt_jstr(r.json, "id");
        assert_true(all_digits(got));
        snprintf(id, ID_MAX, "%s", got);
    }
    spt_resp_free(&r);
}

static void submit_ok(int port, const char *queue, const char *extra, char *id)
{
    char got[ID_MAX];
    assert_int_equal(spt_submit(port, queue, "t", extra, got, sizeof(got)), 201);
    assert_true(all_digits(got));
    if (id) snprintf(id, ID_MAX, "%s", got);
}

static void expect_state(int port, const char *id, const char *state)
{
    spt_resp_t r = get_job(port, id);
    assert_int_equal(r.status, 200);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), state);
    spt_resp_free(&r);
}

typedef struct {
    const char *body;
    const char *names; /* what the error message must name, or NULL */
} bad_case_t;

/* Every case must get 400; all are tried before failing, so that one run reports them all. */
static void expect_all_400(int port, const char *target, const bad_case_t *cases, size_t n)
{
    int failures = 0;
    for (size_t i = 0; i < n; i++)
        if (spt_expect(port, "POST", target, cases[i].body, NULL, 400, cases[i].names) != 0)
            failures++;
    assert_int_equal(failures, 0);
}

static void test_submit_answer(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    long long before = spt_wall_ms();
    spt_resp_t r = spt_do(s.port, "POST", "/v1/queues/mail/jobs",
                          "{\"type\":\"email.send\",\"payload\":{\"to\":\"a@example.com\"}}", NULL);
    long long after = spt_wall_ms();
    assert_int_equal(r.status, 201);
    const char *ct = spt_header(&r, "Content-Type");
    assert_non_null(ct);
    assert_true(strncmp(ct, "application/json", 16) == 0);
    const char *id = spt_jstr(r.json, "id");
    assert_true(all_digits(id));
    char loc[128];
    snprintf(loc, sizeof(loc), "/v1/jobs/%s", id);
    SPT_ASSERT_STR(spt_header(&r, "Location"), loc);
    SPT_ASSERT_STR(spt_jstr(r.json, "queue"), "mail");
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "queued");
    long long created = spt_jint(r.json, "created_at");
    SPT_ASSERT_BETWEEN(created, before - 1000, after + 1000);
    SPT_ASSERT_BETWEEN(spt_jint(r.json, "run_at"), created, after + 1000);

    /* The Location leads to the job. */
    spt_resp_t g = spt_do(s.port, "GET", loc, NULL, NULL);
    assert_int_equal(g.status, 200);
    SPT_ASSERT_STR(spt_jstr(g.json, "id"), id);
    spt_resp_free(&g);

    /* A second job gets another id. */
    char id2[ID_MAX];
    submit_ok(s.port, "mail", "", id2);
    assert_string_not_equal(id, id2);
    spt_resp_free(&r);
    SPT_STOP(s);
}

static void test_job_record_defaults(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    char id[ID_MAX];
    submit_raw(s.port, "rec", "{\"type\":\"t1\"}", NULL, 201, id);
    spt_resp_t r = get_job(s.port, id);
    assert_int_equal(r.status, 200);
    const cJSON *j = r.json;
    SPT_ASSERT_STR(spt_jstr(j, "id"), id);
    SPT_ASSERT_STR(spt_jstr(j, "queue"), "rec");
    SPT_ASSERT_STR(spt_jstr(j, "type"), "t1");
    SPT_ASSERT_STR(spt_jstr(j, "state"), "queued");
    SPT_ASSERT_JNULL(j, "payload");
    assert_int_equal(spt_jint(j, "priority"), 5);
    assert_int_equal(spt_jint(j, "max_attempts"), 3);
    assert_int_equal(spt_jint(j, "timeout_ms"), 30000);
    assert_int_equal(spt_jint(j, "backoff_ms"), 1000);
    assert_int_equal(spt_jint(j, "attempts"), 0);
    assert_true(spt_jint(j, "created_at") > 0);
    assert_true(spt_jint(j, "run_at") >= spt_jint(j, "created_at"));
    static const char *const unset[] = {"started_at",     "finished_at", "result",
                                        "last_error",     "worker",      "lease_expires_at",
                                        "idempotency_key"};
    for (size_t i = 0; i < sizeof(unset) / sizeof(unset[0]); i++) SPT_ASSERT_JNULL(j, unset[i]);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "cancel_requested")));
    spt_resp_free(&r);
    SPT_STOP(s);
}

static void test_job_record_given_fields(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    char id[ID_MAX];
    submit_raw(s.port, "rec",
               "{\"type\":\"t2\",\"payload\":{\"a\":[1,2]},\"priority\":7,\"max_attempts\":10,"
               "\"timeout_ms\":500,\"backoff_ms\":0,\"idempotency_key\":\"key-1\","
               "\"delay_ms\":60000}",
               NULL, 201, id);
    spt_resp_t r = get_job(s.port, id);
    assert_int_equal(r.status, 200);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "scheduled");
    assert_int_equal(spt_jint(r.json, "priority"), 7);
    assert_int_equal(spt_jint(r.json, "max_attempts"), 10);
    assert_int_equal(spt_jint(r.json, "timeout_ms"), 500);
    assert_int_equal(spt_jint(r.json, "backoff_ms"), 0);
    SPT_ASSERT_STR(spt_jstr(r.json, "idempotency_key"), "key-1");
    assert_true(spt_json_same(r.body, r.body_len, "payload", "{\"a\":[1,2]}"));
    long long created = spt_jint(r.json, "created_at");
    SPT_ASSERT_BETWEEN(spt_jint(r.json, "run_at"), created + 59000, created + 61000);
    spt_resp_free(&r);

    /* null in an optional field means its default. */
    submit_raw(s.port, "rec",
               "{\"type\":\"t3\",\"payload\":null,\"priority\":null,\"max_attempts\":null,"
               "\"timeout_ms\":null,\"backoff_ms\":null,\"delay_ms\":null,\"run_at\":null,"
               "\"idempotency_key\":null}",
               NULL, 201, id);
    r = get_job(s.port, id);
    assert_int_equal(r.status, 200);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "queued");
    assert_int_equal(spt_jint(r.json, "priority"), 5);
    assert_int_equal(spt_jint(r.json, "max_attempts"), 3);
    assert_int_equal(spt_jint(r.json, "timeout_ms"), 30000);
    assert_int_equal(spt_jint(r.json, "backoff_ms"), 1000);
    SPT_ASSERT_JNULL(r.json, "idempotency_key");
    SPT_ASSERT_JNULL(r.json, "payload");
    spt_resp_free(&r);

    /* Whitespace anywhere JSON allows it. */
    submit_raw(s.port, "rec", " \r\n\t{ \"type\" :\n\"t4\" , \"payload\" : [ 1 , { } ] }\n ", NULL,
               201, id);
    r = get_job(s.port, id);
    assert_true(spt_json_same(r.body, r.body_len, "payload", "[1,{}]"));
    spt_resp_free(&r);
    SPT_STOP(s);
}

static void test_payload_round_trip(void **state)
{
    (void)state;
    static const char *const payloads[] = {
        "12345678901234567890123",
        "-98765432109876543210987654321",
        "3.14159265358979323846264338327950288419716939937510",
        "0.10000000000000000000000000000000000000001",
        "1.5E+300",
        "-0.0",
        "\"\\u0000\"",
        "\"a\\u0000b\\u0000\"",
        "\"h\\u00e9llo \\u2603 \\ud83d\\ude00\"",
        "\"h\xc3\xa9llo \xe2\x98\x83 \xf0\x9f\x98\x80\"",
        "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u001f\"",
        "{\"big\":12345678901234567890123,\"dec\":0.1000000000000000000000001,"
        "\"s\":\"a\\u0000b\",\"arr\":[1,[2,[3,{}]],[]],\"t\":true,\"f\":false,\"n\":null}",
        "[[[[[[[[[[[[[[[[\"deep\"]]]]]]]]]]]]]]]]",
        "null",
        "true",
        "[]",
        "{}",
        "\"\"",
        "0",
    };
    spt_proc_t s;
    SPT_START(s, NULL);
    int failures = 0;
    for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
        char body[1024];
        char id[ID_MAX];
        snprintf(body, sizeof(body), "{\"type\":\"p\",\"payload\":%s}", payloads[i]);
        submit_raw(s.port, "pay", body, NULL, 201, id);
        spt_resp_t r = get_job(s.port, id);
        assert_int_equal(r.status, 200);
        if (!spt_json_same(r.body, r.body_len, "payload", payloads[i])) failures++;
        spt_resp_free(&r);
    }

    /* A number keeps every digit however long. */
    size_t digits = 5000;
    char *big = repeat('7', digits);
    size_t cap = digits + 64;
    char *body = malloc(cap);
    assert_non_null(body);
    snprintf(body, cap, "{\"type\":\"p\",\"payload\":[%s]}", big);
    char id[ID_MAX];
    submit_raw(s.port, "pay", body, NULL, 201, id);
    spt_resp_t r = get_job(s.port, id);
    snprintf(body, cap, "[%s]", big);
    if (!spt_json_same(r.body, r.body_len, "payload", body)) failures++;
    spt_resp_free(&r);
    free(body);
    free(big);
    assert_int_equal(failures, 0);
    SPT_STOP(s);
}

static void test_validation_type(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    char *t128 = repeat('a', 128);
    char *t129 = repeat('a', 129);
    char ok[256], bad[256];
    snprintf(ok, sizeof(ok), "{\"type\":\"%s\"}", t128);
    snprintf(bad, sizeof(bad), "{\"type\":\"%s\"}", t129);
    const bad_case_t cases[] = {
        {"{}", "type"},
        {"{\"payload\":1}", "type"},
        {"{\"type\":null}", "type"},
        {"{\"type\":\"\"}", "type"},
        {"{\"type\":\"a b\"}", "type"},
        {"{\"type\":\"a/b\"}", "type"},
        {"{\"type\":\"a!\"}", "type"},
        {"{\"type\":\"\xc3\xa9t\xc3\xa9\"}", "type"},
        {"{\"type\":\"a\\u0000\"}", "type"},
        {"{\"type\":5}", "type"},
        {"{\"type\":[\"a\"]}", "type"},
        {bad, "type"},
    };
    expect_all_400(s.port, "/v1/queues/v/jobs", cases, sizeof(cases) / sizeof(cases[0]));
    submit_raw(s.port, "v", ok, NULL, 201, NULL);
    submit_raw(s.port, "v", "{\"type\":\"Az09._:-\"}", NULL, 201, NULL);
    /* Nothing invalid was stored. */
    assert_int_equal(spt_queue_num(s.port, "v", "totals", "enqueued"), 2);
    free(t128);
    free(t129);
    SPT_STOP(s);
}

static void test_validation_numbers(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    char far_run_at[128];
    snprintf(far_run_at, sizeof(far_run_at), "{\"type\":\"t\",\"run_at\":%lld}",
             spt_wall_ms() + 400LL * 24 * 3600 * 1000);
    const bad_case_t cases[] = {
        {"{\"type\":\"t\",\"priority\":10}", "priority"},
        {"{\"type\":\"t\",\"priority\":-1}", "priority"},
        {"{\"type\":\"t\",\"priority\":5.0}", "priority"},
        {"{\"type\":\"t\",\"priority\":5.5}", "priority"},
        {"{\"type\":\"t\",\"priority\":1e1}", "priority"},
        {"{\"type\":\"t\",\"priority\":\"5\"}", "priority"},
        {"{\"type\":\"t\",\"priority\":true}", "priority"},
        {"{\"type\":\"t\",\"delay_ms\":10,\"run_at\":1}", NULL},
        {"{\"type\":\"t\",\"delay_ms\":-1}", "delay_ms"},
        {"{\"type\":\"t\",\"delay_ms\":31536000001}", "delay_ms"},
        {"{\"type\":\"t\",\"delay_ms\":1.5}", "delay_ms"},
        {"{\"type\":\"t\",\"delay_ms\":\"10\"}", "delay_ms"},
        {"{\"type\":\"t\",\"run_at\":-1}", "run_at"},
        {far_run_at, "run_at"},
        {"{\"type\":\"t\",\"max_attempts\":0}", "max_attempts"},
        {"{\"type\":\"t\",\"max_attempts\":1001}", "max_attempts"},
        {"{\"type\":\"t\",\"max_attempts\":2.0}", "max_attempts"},
        {"{\"type\":\"t\",\"timeout_ms\":99}", "timeout_ms"},
        {"{\"type\":\"t\",\"timeout_ms\":86400001}", "timeout_ms"},
        {"{\"type\":\"t\",\"backoff_ms\":-1}", "backoff_ms"},
        {"{\"type\":\"t\",\"backoff_ms\":86400001}", "backoff_ms"},
        {"{\"type\":\"t\",\"backoff_ms\":99999999999999999999999}", "backoff_ms"},
    };
    expect_all_400(s.port, "/v1/queues/v/jobs", cases, sizeof(cases) / sizeof(cases[0]));

    /* The bounds themselves are accepted. */
    static const char *const good[] = {
        ",\"priority\":0",
        ",\"priority\":9",
        ",\"delay_ms\":0",
        ",\"delay_ms\":31536000000",
        ",\"run_at\":0",
        ",\"max_attempts\":1",
        ",\"max_attempts\":1000",
        ",\"timeout_ms\":100",
        ",\"timeout_ms\":86400000",
        ",\"backoff_ms\":0",
        ",\"backoff_ms\":86400000",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_int_equal(spt_submit(s.port, "v", "t", good[i], NULL, 0), 201);
    assert_int_equal(spt_queue_num(s.port, "v", "totals", "enqueued"),
                     (long long)(sizeof(good) / sizeof(good[0])));
    SPT_STOP(s);
}

static void test_validation_key_and_unknown_fields(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    char *k256 = repeat('k', 256);
    char *k257 = repeat('k', 257);
    char ok[512], bad[512];
    snprintf(ok, sizeof(ok), "{\"type\":\"t\",\"idempotency_key\":\"%s\"}", k256);
    snprintf(bad, sizeof(bad), "{\"type\":\"t\",\"idempotency_key\":\"%s\"}", k257);
    const bad_case_t cases[] = {
        {"{\"type\":\"t\",\"idempotency_key\":\"\"}", "idempotency_key"},
        {"{\"type\":\"t\",\"idempotency_key\":5}", "idempotency_key"},
        {bad, "idempotency_key"},
        {"{\"type\":\"t\",\"priorty\":1}", "priorty"},
        {"{\"type\":\"t\",\"extra_field\":{}}", "extra_field"},
        {"{\"type\":\"t\",\"id\":\"1\"}", "id"},
        {"{\"type\":\"t\",\"state\":\"succeeded\"}", "state"},
    };
    expect_all_400(s.port, "/v1/queues/v/jobs", cases, sizeof(cases) / sizeof(cases[0]));
    submit_raw(s.port, "v", ok, NULL, 201, NULL);
    free(k256);
    free(k257);
    SPT_STOP(s);
}

static void test_validation_body(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    const bad_case_t cases[] = {
        {"", NULL},
        {" ", NULL},
        {"{", NULL},
        {"{\"type\":\"t\"", NULL},
        {"[{\"type\":\"t\"}]", NULL},
        {"\"type\"", NULL},
        {"null", NULL},
        {"42", NULL},
        {"{\"type\":\"t\"} x", NULL},
        {"{\"type\":\"t\"}{}", NULL},
        {"{\"type\":\"t\",}", NULL},
        {"{'type':'t'}", NULL},
        {"{\"type\":\"t\",\"payload\":NaN}", NULL},
        {"{\"type\":\"t\",\"payload\":01}", NULL},
        {"{\"type\":\"a\",\"type\":\"b\"}", NULL},
        {"{\"type\":\"t\",\"priority\":1,\"priority\":2}", NULL},
        {"\xef\xbb\xbf{\"type\":\"t\"}", NULL},
        {"{\"type\":\"t\",\"payload\":\"\\ud800\"}", NULL},
        {"{\"type\":\"t\",\"payload\":\"\\udc00x\"}", NULL},
        {"{\"type\":\"t\",\"payload\":\"\\ud800\\u0041\"}", NULL},
        {"{\"type\":\"t\",\"payload\":\"\xff\"}", NULL},
        {"{\"type\":\"t\",\"payload\":\"\xc0\xaf\"}", NULL},
        {"{\"type\":\"t\",\"payload\":\"\xed\xa0\x80\"}", NULL},
        {"{\"type\":\"t\",\"payload\":\"\xe2\x82\"}", NULL},
        {"{\"type\":\"t\",\"payload\":\"\xf8\x88\x80\x80\x80\"}", NULL},
        {"{\"type\":\"t\",\"\xff\":1}", NULL},
        {"{\"type\":\"t\",\"payload\":\"tab\there\"}", NULL},
    };
    expect_all_400(s.port, "/v1/queues/v/jobs", cases, sizeof(cases) / sizeof(cases[0]));
    /* A queue that no valid submission reached does not exist. */
    SPT_EXPECT(s.port, "GET", "/v1/queues/v", NULL, NULL, 404, NULL);
    SPT_STOP(s);
}

static void test_content_type(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    const char *body = "{\"type\":\"t\"}";
    SPT_EXPECT(s.port, "POST", "/v1/queues/ct/jobs", body, "Content-Type: text/plain\r\n", 415,
               NULL);
    SPT_EXPECT(s.port, "POST", "/v1/queues/ct/jobs", body,
               "Content-Type: application/x-www-form-urlencoded\r\n", 415, NULL);
    SPT_EXPECT(s.port, "POST", "/v1/queues/ct/jobs", body, "Content-Type: application/jsonx\r\n",
               415, NULL);
    SPT_EXPECT(s.port, "POST", "/v1/queues/ct/jobs", body,
               "Content-Type: application/json; charset=utf-8\r\n", 201, NULL);
    SPT_EXPECT(s.port, "POST", "/v1/queues/ct/jobs", body,
               "Content-Type: application/json;charset=UTF-8\r\n", 201, NULL);

    /* No Content-Type at all is accepted. */
    char raw[256];
    int n = snprintf(raw, sizeof(raw),
                     "POST /v1/queues/ct/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
    spt_resp_t r;
    assert_int_equal(spt_exchange(s.port, raw, (size_t)n, false, &r), 0);
    assert_int_equal(r.status, 201);
    assert_true(all_digits(spt_jstr(r.json, "id")));
    spt_resp_free(&r);
    assert_int_equal(spt_queue_num(s.port, "ct", "totals", "enqueued"), 3);
    SPT_STOP(s);
}

static void test_idempotency(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    char id1[ID_MAX], id2[ID_MAX], id3[ID_MAX];
    submit_raw(port, "idem", "{\"type\":\"t\",\"idempotency_key\":\"k1\"}", NULL, 201, id1);

    /* A repeat answers 200 with the first job, whatever its other fields say. */
    spt_resp_t r = spt_do(port, "POST", "/v1/queues/idem/jobs",
                          "{\"type\":\"other\",\"priority\":9,\"idempotency_key\":\"k1\"}", NULL);
    assert_int_equal(r.status, 200);
    SPT_ASSERT_STR(spt_jstr(r.json, "id"), id1);
    SPT_ASSERT_STR(spt_jstr(r.json, "queue"), "idem");
    assert_non_null(spt_jstr(r.json, "state"));
    assert_true(spt_jint(r.json, "created_at") > 0);
    assert_true(spt_jint(r.json, "run_at") > 0);
    spt_resp_free(&r);
    r = get_job(port, id1);
    SPT_ASSERT_STR(spt_jstr(r.json, "type"), "t");
    assert_int_equal(spt_jint(r.json, "priority"), 5);
    SPT_ASSERT_STR(spt_jstr(r.json, "idempotency_key"), "k1");
    spt_resp_free(&r);

    /* The header works the same way. */
    submit_raw(port, "idem", "{\"type\":\"t\"}", "Idempotency-Key: h1\r\n", 201, id2);
    r = get_job(port, id2);
    SPT_ASSERT_STR(spt_jstr(r.json, "idempotency_key"), "h1");
    spt_resp_free(&r);
    submit_raw(port, "idem", "{\"type\":\"t\"}", "Idempotency-Key: h1\r\n", 200, id3);
    assert_string_equal(id2, id3);
    /* Header and body that agree are one key; that differ, 400. */
    submit_raw(port, "idem", "{\"type\":\"t\",\"idempotency_key\":\"h1\"}",
               "Idempotency-Key: h1\r\n", 200, id3);
    assert_string_equal(id2, id3);
    SPT_EXPECT(port, "POST", "/v1/queues/idem/jobs", "{\"type\":\"t\",\"idempotency_key\":\"b\"}",
               "Idempotency-Key: h\r\n", 400, NULL);
    SPT_EXPECT(port, "POST", "/v1/queues/idem/jobs", "{\"type\":\"t\"}", "Idempotency-Key:\r\n",
               400, NULL);

    /* A key is per queue. */
    submit_raw(port, "idem2", "{\"type\":\"t\",\"idempotency_key\":\"k1\"}", NULL, 201, id3);
    assert_string_not_equal(id1, id3);

    /* Repeats are not counted. */
    assert_int_equal(spt_queue_num(port, "idem", "totals", "enqueued"), 2);
    assert_int_equal(spt_queue_num(port, "idem", "counts", "queued"), 2);
    assert_int_equal(spt_queue_num(port, "idem2", "totals", "enqueued"), 1);

    /* The key still holds once the job is finished (within 24 h). */
    char target[128];
    snprintf(target, sizeof(target), "/v1/jobs/%s", id1);
    SPT_EXPECT(port, "DELETE", target, NULL, NULL, 200, NULL);
    submit_raw(port, "idem", "{\"type\":\"t\",\"idempotency_key\":\"k1\"}", NULL, 200, id3);
    assert_string_equal(id1, id3);
    SPT_STOP(s);
}

/* The ids of a batch answer, in order; asserts there are n of them. Caller frees each. */
static char **batch_ids(const spt_resp_t *r, int n)
{
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(r->json, "jobs");
    assert_true(cJSON_IsArray(jobs));
    assert_int_equal(cJSON_GetArraySize(jobs), n);
    char **ids = calloc((size_t)n, sizeof(*ids));
    assert_non_null(ids);
    for (int i = 0; i < n; i++) {
        const cJSON *j = cJSON_GetArrayItem(jobs, i);
        const char *id = spt_jstr(j, "id");
        assert_true(all_digits(id));
        assert_non_null(spt_jstr(j, "state"));
        ids[i] = strdup(id);
        assert_non_null(ids[i]);
    }
    return ids;
}

static void free_ids(char **ids, int n)
{
    for (int i = 0; i < n; i++) free(ids[i]);
    free(ids);
}

static void test_batch(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    spt_resp_t r =
        spt_do(port, "POST", "/v1/queues/b/batch",
               "{\"jobs\":[{\"type\":\"a\"},{\"type\":\"b\",\"priority\":9},"
               "{\"type\":\"c\",\"delay_ms\":60000,\"payload\":12345678901234567890123}]}",
               NULL);
    assert_int_equal(r.status, 201);
    char **ids = batch_ids(&r, 3);
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(r.json, "jobs");
    SPT_ASSERT_STR(spt_jstr(cJSON_GetArrayItem(jobs, 0), "state"), "queued");
    SPT_ASSERT_STR(spt_jstr(cJSON_GetArrayItem(jobs, 1), "state"), "queued");
    SPT_ASSERT_STR(spt_jstr(cJSON_GetArrayItem(jobs, 2), "state"), "scheduled");
    spt_resp_free(&r);
    assert_string_not_equal(ids[0], ids[1]);
    assert_string_not_equal(ids[1], ids[2]);
    static const char *const types[] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) {
        r = get_job(port, ids[i]);
        assert_int_equal(r.status, 200);
        SPT_ASSERT_STR(spt_jstr(r.json, "type"), types[i]);
        SPT_ASSERT_STR(spt_jstr(r.json, "queue"), "b");
        spt_resp_free(&r);
    }
    r = get_job(port, ids[2]);
    assert_true(spt_json_same(r.body, r.body_len, "payload", "12345678901234567890123"));
    spt_resp_free(&r);
    free_ids(ids, 3);

    /* All or nothing: one bad entry is named by its index and nothing is stored. */
    const bad_case_t cases[] = {
        {"{\"jobs\":[{\"type\":\"a\"},{\"type\":\"b\"},{\"type\":\"c\",\"priority\":10},"
         "{\"type\":\"d\"}]}",
         "jobs[2]"},
        {"{\"jobs\":[{\"type\":\"a\"},{\"type\":\"b\",\"priorty\":1}]}", "jobs[1]"},
        {"{\"jobs\":[{\"type\":\"a\"},5]}", "jobs[1]"},
        {"{\"jobs\":[{}]}", "jobs[0]"},
        {"{\"jobs\":[]}", NULL},
        {"{}", NULL},
        {"", NULL},
        {"[]", NULL},
        {"{\"jobs\":{}}", NULL},
        {"{\"jobs\":null}", NULL},
        {"{\"jobs\":[{\"type\":\"a\"}],\"extra\":1}", "extra"},
    };
    expect_all_400(port, "/v1/queues/b/batch", cases, sizeof(cases) / sizeof(cases[0]));
    assert_int_equal(spt_queue_num(port, "b", "counts", "queued"), 2);
    assert_int_equal(spt_queue_num(port, "b", "counts", "scheduled"), 1);
    assert_int_equal(spt_queue_num(port, "b", "totals", "enqueued"), 3);

    /* Keys go in each job: the header is refused on a batch. */
    SPT_EXPECT(port, "POST", "/v1/queues/b/batch", "{\"jobs\":[{\"type\":\"a\"}]}",
               "Idempotency-Key: x\r\n", 400, NULL);

    /* Within one batch a repeated key makes one job; a batch of repeats answers 200. */
    r = spt_do(port, "POST", "/v1/queues/bk/batch",
               "{\"jobs\":[{\"type\":\"a\",\"idempotency_key\":\"k\"},"
               "{\"type\":\"b\",\"idempotency_key\":\"k\"},{\"type\":\"c\"}]}",
               NULL);
    assert_int_equal(r.status, 201);
    ids = batch_ids(&r, 3);
    spt_resp_free(&r);
    assert_string_equal(ids[0], ids[1]);
    assert_string_not_equal(ids[0], ids[2]);
    assert_int_equal(spt_queue_num(port, "bk", "totals", "enqueued"), 2);
    r = spt_do(port, "POST", "/v1/queues/bk/batch",
               "{\"jobs\":[{\"type\":\"z\",\"idempotency_key\":\"k\"}]}", NULL);
    assert_int_equal(r.status, 200);
    char **again = batch_ids(&r, 1);
    spt_resp_free(&r);
    assert_string_equal(again[0], ids[0]);
    free_ids(again, 1);

    /* A batch with one new job among repeats is 201; a single submission sees batch keys. */
    r = spt_do(port, "POST", "/v1/queues/bk/batch",
               "{\"jobs\":[{\"type\":\"z\",\"idempotency_key\":\"k\"},{\"type\":\"y\"}]}", NULL);
    assert_int_equal(r.status, 201);
    again = batch_ids(&r, 2);
    spt_resp_free(&r);
    assert_string_equal(again[0], ids[0]);
    free_ids(again, 2);
    char id[ID_MAX];
    submit_raw(port, "bk", "{\"type\":\"t\",\"idempotency_key\":\"k\"}", NULL, 200, id);
    assert_string_equal(id, ids[0]);
    assert_int_equal(spt_queue_num(port, "bk", "totals", "enqueued"), 3);
    free_ids(ids, 3);
    SPT_STOP(s);
}

static char *batch_body(int n)
{
    size_t cap = (size_t)n * 16 + 32;
    char *body = malloc(cap);
    assert_non_null(body);
    size_t len = (size_t)snprintf(body, cap, "{\"jobs\":[");
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(body + len, cap - len, "%s{\"type\":\"a\"}", i ? "," : "");
    snprintf(body + len, cap - len, "]}");
    return body;
}

static void test_batch_limits(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    char *body = batch_body(10000);
    spt_resp_t r = spt_do(s.port, "POST", "/v1/queues/big/batch", body, NULL);
    assert_int_equal(r.status, 201);
    char **ids = batch_ids(&r, 10000);
    spt_resp_free(&r);
    free_ids(ids, 10000);
    free(body);
    assert_int_equal(spt_queue_num(s.port, "big", "counts", "queued"), 10000);

    body = batch_body(10001);
    SPT_EXPECT(s.port, "POST", "/v1/queues/big/batch", body, NULL, 413, NULL);
    free(body);
    assert_int_equal(spt_queue_num(s.port, "big", "counts", "queued"), 10000);
    assert_int_equal(spt_queue_num(s.port, "big", "totals", "enqueued"), 10000);
    SPT_STOP(s);
}

static void test_delayed_jobs(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    char id1[ID_MAX], id2[ID_MAX], id3[ID_MAX], id4[ID_MAX];

    spt_resp_t r =
        spt_do(port, "POST", "/v1/queues/d/jobs", "{\"type\":\"t\",\"delay_ms\":300}", NULL);
    assert_int_equal(r.status, 201);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "scheduled");
    long long created = spt_jint(r.json, "created_at");
    SPT_ASSERT_BETWEEN(spt_jint(r.json, "run_at"), created + 300, created + 1300);
    snprintf(id1, sizeof(id1), "%s", spt_jstr(r.json, "id"));
    spt_resp_free(&r);

    long long at = spt_wall_ms() + 300;
    char extra[64];
    snprintf(extra, sizeof(extra), ",\"run_at\":%lld", at);
    submit_ok(port, "d", extra, id2);
    r = get_job(port, id2);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "scheduled");
    assert_int_equal(spt_jint(r.json, "run_at"), at);
    spt_resp_free(&r);

    /* A time in the past means now. */
    r = spt_do(port, "POST", "/v1/queues/d/jobs", "{\"type\":\"t\",\"run_at\":1000}", NULL);
    assert_int_equal(r.status, 201);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "queued");
    snprintf(id3, sizeof(id3), "%s", spt_jstr(r.json, "id"));
    spt_resp_free(&r);

    /* Far in the future: stays scheduled, is not leased. */
    submit_ok(port, "d", ",\"delay_ms\":600000", id4);
    assert_int_equal(spt_queue_num(port, "d", "counts", "scheduled"), 3);

    assert_int_equal(spt_wait_state(port, id1, "queued", 5000), 0);
    assert_int_equal(spt_wait_state(port, id2, "queued", 5000), 0);
    expect_state(port, id4, "scheduled");
    assert_int_equal(spt_queue_num(port, "d", "counts", "scheduled"), 1);
    assert_int_equal(spt_queue_num(port, "d", "counts", "queued"), 3);

    char got[ID_MAX];
    int leased = 0;
    while (spt_lease_one(port, "d", got, sizeof(got), NULL, 0) == 1) {
        assert_string_not_equal(got, id4);
        leased++;
    }
    assert_int_equal(leased, 3);
    (void)id3;
    SPT_STOP(s);
}

static void test_cancel_and_retry(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    char a[ID_MAX], b[ID_MAX], c[ID_MAX], d[ID_MAX];
    char target[128];
    submit_ok(port, "cr", "", a);
    submit_ok(port, "cr", ",\"delay_ms\":600000", b);

    snprintf(target, sizeof(target), "/v1/jobs/%s", a);
    spt_resp_t r = spt_do(port, "DELETE", target, NULL, NULL);
    assert_int_equal(r.status, 200);
    SPT_ASSERT_STR(spt_jstr(r.json, "id"), a);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "canceled");
    assert_true(spt_jint(r.json, "finished_at") > 0);
    spt_resp_free(&r);
    expect_state(port, a, "canceled");
    SPT_EXPECT(port, "DELETE", target, NULL, NULL, 409, NULL);

    /* A scheduled job is canceled too; an empty JSON object body is fine. */
    snprintf(target, sizeof(target), "/v1/jobs/%s", b);
    SPT_EXPECT(port, "DELETE", target, "{}", NULL, 200, NULL);
    expect_state(port, b, "canceled");
    assert_int_equal(spt_queue_num(port, "cr", "counts", "canceled"), 2);
    assert_int_equal(spt_queue_num(port, "cr", "counts", "scheduled"), 0);

    /* Retry brings a canceled job back, attempts reset; a queued job cannot be retried. */
    snprintf(target, sizeof(target), "/v1/jobs/%s/retry", a);
    r = spt_do(port, "POST", target, NULL, NULL);
    assert_int_equal(r.status, 200);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "queued");
    assert_int_equal(spt_jint(r.json, "attempts"), 0);
    spt_resp_free(&r);
    expect_state(port, a, "queued");
    SPT_EXPECT(port, "POST", target, NULL, NULL, 409, NULL);
    snprintf(target, sizeof(target), "/v1/jobs/%s/retry", b);
    SPT_EXPECT(port, "POST", target, "{}", NULL, 200, NULL);
    expect_state(port, b, "queued");

    /* A failed job is retried with its attempts reset; a succeeded one is not. */
    submit_ok(port, "cr2", ",\"max_attempts\":5", c);
    char lease[ID_MAX], got[ID_MAX], body[256];
    assert_int_equal(spt_lease_one(port, "cr2", got, sizeof(got), lease, sizeof(lease)), 1);
    assert_string_equal(got, c);
    snprintf(target, sizeof(target), "/v1/jobs/%s/fail", c);
    snprintf(body, sizeof(body), "{\"lease\":\"%s\",\"error\":\"no\",\"retry\":false}", lease);
    SPT_EXPECT(port, "POST", target, body, NULL, 200, NULL);
    expect_state(port, c, "failed");
    snprintf(target, sizeof(target), "/v1/jobs/%s/retry", c);
    r = spt_do(port, "POST", target, NULL, NULL);
    assert_int_equal(r.status, 200);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "queued");
    assert_int_equal(spt_jint(r.json, "attempts"), 0);
    spt_resp_free(&r);
    r = get_job(port, c);
    assert_int_equal(spt_jint(r.json, "attempts"), 0);
    spt_resp_free(&r);

    submit_ok(port, "cr3", "", d);
    assert_int_equal(spt_lease_one(port, "cr3", got, sizeof(got), lease, sizeof(lease)), 1);
    snprintf(target, sizeof(target), "/v1/jobs/%s/ack", d);
    snprintf(body, sizeof(body), "{\"lease\":\"%s\",\"result\":1}", lease);
    SPT_EXPECT(port, "POST", target, body, NULL, 200, NULL);
    snprintf(target, sizeof(target), "/v1/jobs/%s/retry", d);
    SPT_EXPECT(port, "POST", target, NULL, NULL, 409, NULL);
    snprintf(target, sizeof(target), "/v1/jobs/%s", d);
    SPT_EXPECT(port, "DELETE", target, NULL, NULL, 409, NULL);
    expect_state(port, d, "succeeded");

    SPT_EXPECT(port, "DELETE", "/v1/jobs/999999999", NULL, NULL, 404, NULL);
    SPT_EXPECT(port, "POST", "/v1/jobs/999999999/retry", NULL, NULL, 404, NULL);
    snprintf(target, sizeof(target), "/v1/jobs/%s", a);
    SPT_EXPECT(port, "DELETE", target, "{\"bogus\":1}", NULL, 400, "bogus");
    SPT_STOP(s);
}

static void test_wait_for_job(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, "--workers", "1");
    int port = s.port;
    char id[ID_MAX], held[ID_MAX], target[160];

    /* Returns as soon as the job finishes. */
    submit_raw(port, "w", "{\"type\":\"sleep\",\"payload\":{\"ms\":300}}", NULL, 201, id);
    snprintf(target, sizeof(target), "/v1/jobs/%s?wait_ms=10000", id);
    long long t0 = spt_now_ms();
    spt_resp_t r = spt_do(port, "GET", target, NULL, NULL);
    long long took = spt_now_ms() - t0;
    assert_int_equal(r.status, 200);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "succeeded");
    assert_true(took < 9000);
    spt_resp_free(&r);

    /* A finished job answers at once, even with the longest wait. */
    snprintf(target, sizeof(target), "/v1/jobs/%s?wait_ms=60000", id);
    t0 = spt_now_ms();
    SPT_EXPECT(port, "GET", target, NULL, NULL, 200, NULL);
    assert_true(spt_now_ms() - t0 < 9000);

    /* An unfinished job (its queue paused, so nothing runs it) answers after wait_ms. */
    SPT_EXPECT(port, "POST", "/v1/queues/held/pause", NULL, NULL, 200, NULL);
    submit_raw(port, "held", "{\"type\":\"noop\"}", NULL, 201, held);
    snprintf(target, sizeof(target), "/v1/jobs/%s?wait_ms=300", held);
    t0 = spt_now_ms();
    r = spt_do(port, "GET", target, NULL, NULL);
    took = spt_now_ms() - t0;
    assert_int_equal(r.status, 200);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "queued");
    assert_true(took >= 250);
    spt_resp_free(&r);
    snprintf(target, sizeof(target), "/v1/jobs/%s?wait_ms=0", held);
    SPT_EXPECT(port, "GET", target, NULL, NULL, 200, NULL);

    /* A waiting reader wakes when the job is canceled from another connection. */
    int fd = spt_connect(port);
    assert_true(fd >= 0);
    char raw[256];
    int n = snprintf(raw, sizeof(raw),
                     "GET /v1/jobs/%s?wait_ms=10000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", held);
    t0 = spt_now_ms();
    assert_int_equal(spt_send(fd, raw, (size_t)n), 0);
    spt_sleep_ms(200);
    snprintf(target, sizeof(target), "/v1/jobs/%s", held);
    SPT_EXPECT(port, "DELETE", target, NULL, NULL, 200, NULL);
    assert_int_equal(spt_read_response(fd, &r, false), 0);
    took = spt_now_ms() - t0;
    assert_int_equal(r.status, 200);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "canceled");
    assert_true(took < 9000);
    spt_resp_free(&r);
    spt_close(fd);

    static const char *const bad[] = {"60001", "-1", "abc", "1.5", "", "99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(target, sizeof(target), "/v1/jobs/%s?wait_ms=%s", id, bad[i]);
        SPT_EXPECT(port, "GET", target, NULL, NULL, 400, NULL);
    }
    snprintf(target, sizeof(target), "/v1/jobs/%s?wait_ms=60001", id);
    SPT_EXPECT(port, "GET", target, NULL, NULL, 400, "wait_ms");
    SPT_EXPECT(port, "GET", "/v1/jobs/999999999?wait_ms=100", NULL, NULL, 404, NULL);
    SPT_STOP(s);
}

static void test_query_strings(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    char id[ID_MAX], target[160];
    submit_ok(port, "qs", "", id);
    snprintf(target, sizeof(target), "/v1/jobs/%s?foo=1", id);
    SPT_EXPECT(port, "GET", target, NULL, NULL, 400, "foo");
    snprintf(target, sizeof(target), "/v1/jobs/%s?wait_ms=1&wait_ms=2", id);
    SPT_EXPECT(port, "GET", target, NULL, NULL, 400, NULL);
    SPT_EXPECT(port, "GET", "/v1/queues?verbose=1", NULL, NULL, 400, "verbose");
    SPT_EXPECT(port, "POST", "/v1/queues/qs/jobs?priority=1", "{\"type\":\"t\"}", NULL, 400,
               "priority");
    SPT_EXPECT(port, "GET", "/v1/queues/qs/jobs?state=queued&state=queued", NULL, NULL, 400, NULL);
    SPT_EXPECT(port, "POST", "/v1/lease?wait=1", "{}", NULL, 400, "wait");
    SPT_EXPECT(port, "POST", "/v1/ack?fast=1", "{\"acks\":[{}]}", NULL, 400, "fast");
    /* Outside /v1/ a query string is ignored. */
    SPT_EXPECT(port, "GET", "/healthz?probe=1", NULL, NULL, 200, NULL);
    SPT_EXPECT(port, "GET", "/readyz?probe=1", NULL, NULL, 200, NULL);
    assert_int_equal(spt_queue_num(port, "qs", "totals", "enqueued"), 1);
    SPT_STOP(s);
}

static void test_unknown_and_wrong_method(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    char id[ID_MAX], target[160];
    submit_ok(port, "m", "", id);

    SPT_EXPECT(port, "GET", "/v1/jobs/999999999", NULL, NULL, 404, NULL);
    SPT_EXPECT(port, "GET", "/nope", NULL, NULL, 404, NULL);
    SPT_EXPECT(port, "GET", "/v1/nope", NULL, NULL, 404, NULL);
    SPT_EXPECT(port, "GET", "/v1/queues/m/nope", NULL, NULL, 404, NULL);
    SPT_EXPECT(port, "POST", "/v1/jobs/999999999/nope", "{}", NULL, 404, NULL);
    static const char *const bad_ids[] = {"abc", "-1", "1.5", "99999999999999999999999999", "%00"};
    for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
        snprintf(target, sizeof(target), "/v1/jobs/%s", bad_ids[i]);
        spt_resp_t r = spt_do(port, "GET", target, NULL, NULL);
        if (r.status != 404 && r.status != 400)
            fail_msg("GET %s: expected 404 or 400, got %d", target, r.status);
        assert_true(spt_error_code(&r)[0] != '\0');
        spt_resp_free(&r);
    }

    struct {
        const char *method;
        const char *target; /* %s is the job id */
        const char *allow[2];
    } wrong[] = {
        {"PUT", "/v1/jobs/%s", {"GET", "DELETE"}},
        {"POST", "/v1/jobs/%s", {"GET", "DELETE"}},
        {"GET", "/v1/jobs/%s/retry", {"POST", NULL}},
        {"GET", "/v1/jobs/%s/ack", {"POST", NULL}},
        {"GET", "/v1/lease", {"POST", NULL}},
        {"DELETE", "/v1/queues", {"GET", NULL}},
        {"GET", "/v1/queues/m/batch", {"POST", NULL}},
        {"PUT", "/v1/queues/m/jobs", {"GET", "POST"}},
        {"GET", "/v1/queues/m/pause", {"POST", NULL}},
        {"POST", "/healthz", {"GET", NULL}},
    };
    for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
        snprintf(target, sizeof(target), wrong[i].target, id);
        const char *body = strcmp(wrong[i].method, "GET") == 0 ? NULL : "{}";
        spt_resp_t r = spt_do(port, wrong[i].method, target, body, NULL);
        if (r.status != 405)
            fail_msg("%s %s: expected 405, got %d", wrong[i].method, target, r.status);
        assert_true(spt_error_code(&r)[0] != '\0');
        const char *allow = spt_header(&r, "Allow");
        if (!allow) fail_msg("%s %s: 405 without Allow", wrong[i].method, target);
        for (int k = 0; k < 2; k++)
            if (wrong[i].allow[k] && !spt_list_has(allow, wrong[i].allow[k]))
                fail_msg("%s %s: Allow \"%s\" lacks %s", wrong[i].method, target, allow,
                         wrong[i].allow[k]);
        spt_resp_free(&r);
    }
    /* Nothing was changed by the refused requests. */
    expect_state(port, id, "queued");
    SPT_STOP(s);
}

static void test_head(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    char id[ID_MAX], target[128];
    submit_ok(port, "h", ",\"payload\":{\"x\":\"y\"}", id);
    snprintf(target, sizeof(target), "/v1/jobs/%s", id);
    spt_resp_t g = spt_do(port, "GET", target, NULL, NULL);
    assert_int_equal(g.status, 200);
    char get_len[32];
    const char *cl = spt_header(&g, "Content-Length");
    assert_non_null(cl);
    snprintf(get_len, sizeof(get_len), "%s", cl);

    spt_resp_t h = spt_do(port, "HEAD", target, NULL, NULL);
    assert_int_equal(h.status, 200);
    assert_int_equal(h.body_len, 0);
    SPT_ASSERT_STR(spt_header(&h, "Content-Length"), get_len);
    spt_resp_free(&h);

    /* On one keep-alive connection, a HEAD answer carries no body bytes: the next answer
     * starts right after its headers. */
    int fd = spt_connect(port);
    assert_true(fd >= 0);
    char raw[512];
    int n = snprintf(raw, sizeof(raw),
                     "HEAD %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                     target, target);
    assert_int_equal(spt_send(fd, raw, (size_t)n), 0);
    assert_int_equal(spt_read_response(fd, &h, true), 0);
    assert_int_equal(h.status, 200);
    spt_resp_free(&h);
    assert_int_equal(spt_read_response(fd, &h, false), 0);
    assert_int_equal(h.status, 200);
    assert_int_equal(h.body_len, g.body_len);
    SPT_ASSERT_STR(spt_jstr(h.json, "id"), id);
    spt_resp_free(&h);
    spt_close(fd);
    spt_resp_free(&g);

    static const char *const routes[] = {"/healthz", "/readyz", "/v1/queues", "/v1/queues/h",
                                         "/v1/queues/h/jobs"};
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        h = spt_do(port, "HEAD", routes[i], NULL, NULL);
        if (h.status != 200) fail_msg("HEAD %s: expected 200, got %d", routes[i], h.status);
        assert_int_equal(h.body_len, 0);
        spt_resp_free(&h);
    }
    h = spt_do(port, "HEAD", "/healthz", NULL, NULL);
    SPT_ASSERT_STR(spt_header(&h, "Content-Length"), "2");
    spt_resp_free(&h);
    h = spt_do(port, "HEAD", "/v1/jobs/999999999", NULL, NULL);
    assert_int_equal(h.status, 404);
    assert_int_equal(h.body_len, 0);
    spt_resp_free(&h);
    SPT_STOP(s);
}

static void test_queue_names_in_paths(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    char *q128 = repeat('q', 128);
    char *q129 = repeat('q', 129);
    char target[512];
    snprintf(target, sizeof(target), "/v1/queues/%s/jobs", q128);
    SPT_EXPECT(port, "POST", target, "{\"type\":\"t\"}", NULL, 201, NULL);
    snprintf(target, sizeof(target), "/v1/queues/%s/jobs", q129);
    SPT_EXPECT(port, "POST", target, "{\"type\":\"t\"}", NULL, 400, NULL);
    SPT_EXPECT(port, "POST", "/v1/queues/bad%20name/jobs", "{\"type\":\"t\"}", NULL, 400, NULL);
    SPT_EXPECT(port, "POST", "/v1/queues/bad!/jobs", "{\"type\":\"t\"}", NULL, 400, NULL);
    SPT_EXPECT(port, "POST", "/v1/queues/a%2Fb/jobs", "{\"type\":\"t\"}", NULL, 400, NULL);
    SPT_EXPECT(port, "POST", "/v1/queues/bad!/batch", "{\"jobs\":[{\"type\":\"t\"}]}", NULL, 400,
               NULL);

    /* Segments are percent-decoded before the name is checked. */
    spt_resp_t r = spt_do(port, "POST", "/v1/queues/a%2Eb%3Ac/jobs", "{\"type\":\"t\"}", NULL);
    assert_int_equal(r.status, 201);
    SPT_ASSERT_STR(spt_jstr(r.json, "queue"), "a.b:c");
    spt_resp_free(&r);
    assert_int_equal(spt_queue_num(port, "a.b:c", "totals", "enqueued"), 1);
    free(q128);
    free(q129);
    SPT_STOP(s);
}

static void test_max_body(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, "--max-body", "1k");
    int port = s.port;
    char *fill = repeat('x', 2000);
    char body[2100];
    snprintf(body, sizeof(body), "{\"type\":\"t\",\"payload\":\"%s\"}", fill);
    SPT_EXPECT(port, "POST", "/v1/queues/mb/jobs", body, NULL, 413, NULL);
    snprintf(body, sizeof(body), "{\"jobs\":[{\"type\":\"t\",\"payload\":\"%s\"}]}", fill);
    SPT_EXPECT(port, "POST", "/v1/queues/mb/batch", body, NULL, 413, NULL);
    fill[900] = '\0';
    snprintf(body, sizeof(body), "{\"type\":\"t\",\"payload\":\"%s\"}", fill);
    SPT_EXPECT(port, "POST", "/v1/queues/mb/jobs", body, NULL, 201, NULL);
    assert_int_equal(spt_queue_num(port, "mb", "totals", "enqueued"), 1);
    free(fill);
    SPT_STOP(s);
}

static void test_max_depth(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, "--max-depth", "3");
    int port = s.port;
    char a[ID_MAX], b[ID_MAX], c[ID_MAX], d[ID_MAX], got[ID_MAX], target[128];
    submit_ok(port, "md", ",\"idempotency_key\":\"ka\"", a);
    submit_ok(port, "md", "", b);
    submit_ok(port, "md", ",\"delay_ms\":600000", c);

    spt_resp_t r = spt_do(port, "POST", "/v1/queues/md/jobs", "{\"type\":\"t\"}", NULL);
    assert_int_equal(r.status, 429);
    assert_true(spt_error_code(&r)[0] != '\0');
    const char *ra = spt_header(&r, "Retry-After");
    assert_non_null(ra);
    assert_true(isdigit((unsigned char)ra[0]));
    spt_resp_free(&r);
    SPT_EXPECT(port, "POST", "/v1/queues/md/batch", "{\"jobs\":[{\"type\":\"t\"}]}", NULL, 429,
               NULL);
    assert_int_equal(spt_queue_num(port, "md", "counts", "queued"), 2);
    assert_int_equal(spt_queue_num(port, "md", "counts", "scheduled"), 1);
    assert_int_equal(spt_queue_num(port, "md", "totals", "enqueued"), 3);

    /* A repeat stores nothing, so it is answered at the limit. */
    submit_raw(port, "md", "{\"type\":\"t\",\"idempotency_key\":\"ka\"}", NULL, 200, got);
    assert_string_equal(got, a);
    SPT_EXPECT(port, "POST", "/v1/queues/md/batch",
               "{\"jobs\":[{\"type\":\"t\",\"idempotency_key\":\"ka\"}]}", NULL, 200, NULL);

    /* Other queues have their own depth. */
    submit_ok(port, "md2", "", NULL);

    /* A finished job frees its place. */
    snprintf(target, sizeof(target), "/v1/jobs/%s", b);
    SPT_EXPECT(port, "DELETE", target, NULL, NULL, 200, NULL);
    submit_ok(port, "md", "", d);
    SPT_EXPECT(port, "POST", "/v1/queues/md/jobs", "{\"type\":\"t\"}", NULL, 429, NULL);

    /* A batch that would pass the limit is refused whole. */
    snprintf(target, sizeof(target), "/v1/jobs/%s", a);
    SPT_EXPECT(port, "DELETE", target, NULL, NULL, 200, NULL);
    SPT_EXPECT(port, "POST", "/v1/queues/md/batch",
               "{\"jobs\":[{\"type\":\"t\"},{\"type\":\"t\"}]}", NULL, 429, NULL);
    assert_int_equal(spt_queue_num(port, "md", "counts", "queued"), 1);
    assert_int_equal(spt_queue_num(port, "md", "counts", "scheduled"), 1);
    SPT_EXPECT(port, "POST", "/v1/queues/md/batch", "{\"jobs\":[{\"type\":\"t\"}]}", NULL, 201,
               NULL);
    assert_int_equal(spt_queue_num(port, "md", "totals", "enqueued"), 5);

    /* Repeats in a batch store nothing, so only its new jobs count against the limit. */
    snprintf(target, sizeof(target), "/v1/jobs/%s", d);
    SPT_EXPECT(port, "DELETE", target, NULL, NULL, 200, NULL);
    spt_resp_t mixed = spt_do(port, "POST", "/v1/queues/md/batch",
                              "{\"jobs\":[{\"type\":\"t\",\"idempotency_key\":\"ka\"},"
                              "{\"type\":\"t\"}]}",
                              NULL);
    assert_int_equal(mixed.status, 201);
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(mixed.json, "jobs");
    SPT_ASSERT_STR(spt_jstr(cJSON_GetArrayItem(jobs, 0), "id"), a);
    spt_resp_free(&mixed);
    assert_int_equal(spt_queue_num(port, "md", "totals", "enqueued"), 6);
    SPT_EXPECT(port, "POST", "/v1/queues/md/jobs", "{\"type\":\"t\"}", NULL, 429, NULL);
    (void)c;
    SPT_STOP(s);
}

static void test_auth(void **state)
{
    (void)state;
    char path[] = "/tmp/spt-token-XXXXXX";
    int tfd = mkstemp(path);
    assert_true(tfd >= 0);
    assert_int_equal(write(tfd, "s3cret\n", 7), 7);
    close(tfd);
    spt_proc_t s;
    SPT_START(s, "--token-file", path);
    int port = s.port;
    const char *good = "Authorization: Bearer s3cret\r\n";
    const char *body = "{\"type\":\"t\"}";

    SPT_EXPECT(port, "POST", "/v1/queues/au/jobs", body, NULL, 401, NULL);
    SPT_EXPECT(port, "POST", "/v1/queues/au/jobs", body, "Authorization: Bearer nope\r\n", 401,
               NULL);
    SPT_EXPECT(port, "POST", "/v1/queues/au/jobs", body, "Authorization: Bearer s3cre\r\n", 401,
               NULL);
    SPT_EXPECT(port, "POST", "/v1/queues/au/jobs", body, "Authorization: Bearer s3cretx\r\n", 401,
               NULL);
    SPT_EXPECT(port, "POST", "/v1/queues/au/jobs", body, "Authorization: Basic s3cret\r\n", 401,
               NULL);
    spt_resp_t r = spt_do(port, "POST", "/v1/queues/au/jobs", body, good);
    assert_int_equal(r.status, 201);
    char target[128];
    snprintf(target, sizeof(target), "/v1/jobs/%s", spt_jstr(r.json, "id"));
    spt_resp_free(&r);
    SPT_EXPECT(port, "GET", target, NULL, NULL, 401, NULL);
    SPT_EXPECT(port, "GET", target, NULL, good, 200, NULL);
    SPT_EXPECT(port, "GET", "/v1/queues", NULL, NULL, 401, NULL);
    SPT_EXPECT(port, "GET", "/v1/queues", NULL, good, 200, NULL);
    SPT_EXPECT(port, "POST", "/v1/lease", "{}", NULL, 401, NULL);
    SPT_EXPECT(port, "GET", "/metrics", NULL, NULL, 401, NULL);
    r = spt_do(port, "GET", "/metrics", NULL, good);
    assert_true(r.status != 0 && r.status != 401);
    spt_resp_free(&r);
    SPT_EXPECT(port, "GET", "/v1/nope", NULL, good, 404, NULL);

    /* What holds no data is open. */
    SPT_EXPECT(port, "GET", "/healthz", NULL, NULL, 200, NULL);
    SPT_EXPECT(port, "GET", "/readyz", NULL, NULL, 200, NULL);
    r = spt_do(port, "GET", "/", NULL, NULL);
    assert_true(r.status != 0 && r.status != 401);
    spt_resp_free(&r);

    /* Refused requests stored nothing. */
    r = spt_do(port, "GET", "/v1/queues/au", NULL, good);
    const cJSON *totals = cJSON_GetObjectItemCaseSensitive(r.json, "totals");
    assert_int_equal(spt_jint(totals, "enqueued"), 1);
    spt_resp_free(&r);
    SPT_STOP(s);
    unlink(path);
}

/* Sends raw bytes on a new connection and reads one answer; asserts it came. */
static spt_resp_t raw_exchange(int port, const char *raw, size_t len)
{
    spt_resp_t r;
    assert_int_equal(spt_exchange(port, raw, len, false, &r), 0);
    return r;
}

/* Sends a request the server cannot frame: it must answer status, say Connection: close, and
 * close. */
static void expect_broken(int port, const char *raw, int status)
{
    int fd = spt_connect(port);
    assert_true(fd >= 0);
    assert_int_equal(spt_send(fd, raw, strlen(raw)), 0);
    spt_resp_t r;
    assert_int_equal(spt_read_response(fd, &r, false), 0);
    if (r.status != status) fail_msg("expected %d, got %d for:\n%s", status, r.status, raw);
    const char *conn = spt_header(&r, "Connection");
    if (!conn || strcasecmp(conn, "close") != 0)
        fail_msg("a %d for a request that cannot be framed lacks Connection: close", status);
    spt_resp_free(&r);
    assert_true(spt_closed(fd, 5000));
    spt_close(fd);
}

static void test_http_layer(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;

    /* A chunked request body. */
    const char *chunked = "POST /v1/queues/hl/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                          "Connection: close\r\n\r\n"
                          "5\r\n{\"typ\r\n7\r\ne\":\"t\"}\r\n0\r\n\r\n";
    spt_resp_t r = raw_exchange(port, chunked, strlen(chunked));
    assert_int_equal(r.status, 201);
    spt_resp_free(&r);
    assert_int_equal(spt_queue_num(port, "hl", "totals", "enqueued"), 1);

    /* HTTP/1.0 is spoken; other versions are not. */
    const char *v10 = "GET /healthz HTTP/1.0\r\n\r\n";
    r = raw_exchange(port, v10, strlen(v10));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok");
    spt_resp_free(&r);
    const char *v20 = "GET /healthz HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n";
    r = raw_exchange(port, v20, strlen(v20));
    assert_int_equal(r.status, 505);
    spt_resp_free(&r);

    /* Pipelined requests are answered in order on one connection. */
    int fd = spt_connect(port);
    assert_true(fd >= 0);
    const char *three = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                        "GET /v1/queues/hl HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                        "GET /v1/nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    assert_int_equal(spt_send(fd, three, strlen(three)), 0);
    assert_int_equal(spt_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok");
    spt_resp_free(&r);
    assert_int_equal(spt_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 200);
    SPT_ASSERT_STR(spt_jstr(r.json, "name"), "hl");
    spt_resp_free(&r);
    assert_int_equal(spt_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 404);
    spt_resp_free(&r);
    /* An error answer does not close a connection that can still be framed. */
    const char *one = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    assert_int_equal(spt_send(fd, one, strlen(one)), 0);
    assert_int_equal(spt_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 200);
    spt_resp_free(&r);
    spt_close(fd);

    /* A Transfer-Encoding other than chunked is 501. */
    const char *gzip = "POST /v1/queues/hl/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       "Content-Type: application/json\r\nTransfer-Encoding: gzip\r\n\r\n";
    fd = spt_connect(port);
    assert_true(fd >= 0);
    assert_int_equal(spt_send(fd, gzip, strlen(gzip)), 0);
    assert_int_equal(spt_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 501);
    spt_resp_free(&r);
    spt_close(fd);

    /* Requests that cannot be framed: a 4xx, Connection: close, and the connection closed. */
    expect_broken(port,
                  "POST /v1/queues/hl/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  "Content-Type: application/json\r\nContent-Length: 12\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n5\r\n{\"typ\r\n7\r\ne\":\"t\"}\r\n0\r\n\r\n",
                  400);
    expect_broken(port,
                  "POST /v1/queues/hl/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "zz\r\n{\"type\":\"t\"}\r\n0\r\n\r\n",
                  400);
    expect_broken(port,
                  "POST /v1/queues/hl/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  "Content-Length: 5\r\nContent-Length: 6\r\n\r\n{\"a\":",
                  400);

    /* A target over the limit is 414; too many headers, 431. */
    size_t cap = 16384;
    char *big = malloc(cap);
    assert_non_null(big);
    int n = snprintf(big, cap, "GET /v1/jobs/1?x=");
    memset(big + n, 'a', 9000);
    n += 9000;
    n += snprintf(big + n, cap - (size_t)n, " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    r = raw_exchange(port, big, (size_t)n);
    assert_int_equal(r.status, 414);
    spt_resp_free(&r);
    n = snprintf(big, cap, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (int i = 0; i < 200; i++) n += snprintf(big + n, cap - (size_t)n, "X-H%d: v\r\n", i);
    n += snprintf(big + n, cap - (size_t)n, "\r\n");
    r = raw_exchange(port, big, (size_t)n);
    assert_int_equal(r.status, 431);
    spt_resp_free(&r);
    free(big);

    /* The server is still fine. */
    SPT_EXPECT(port, "GET", "/healthz", NULL, NULL, 200, NULL);
    assert_int_equal(spt_queue_num(port, "hl", "totals", "enqueued"), 1);
    SPT_STOP(s);
}

static void test_retention(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, "--retention", "300ms");
    int port = s.port;
    char done[ID_MAX], waiting[ID_MAX], again[ID_MAX], target[128];
    submit_ok(port, "ret", ",\"idempotency_key\":\"rk\"", done);
    submit_ok(port, "ret", "", waiting);
    snprintf(target, sizeof(target), "/v1/jobs/%s", done);
    SPT_EXPECT(port, "DELETE", target, NULL, NULL, 200, NULL);

    /* A finished job is forgotten once the retention has passed, its key with it. */
    long long deadline = spt_now_ms() + 10000;
    for (;;) {
        spt_resp_t r = spt_do(port, "GET", target, NULL, NULL);
        int status = r.status;
        spt_resp_free(&r);
        if (status == 404) break;
        assert_int_equal(status, 200);
        if (spt_now_ms() >= deadline) fail_msg("job %s still kept after 10 s", done);
        spt_sleep_ms(20);
    }
    assert_int_equal(spt_queue_num(port, "ret", "counts", "canceled"), 0);
    submit_raw(port, "ret", "{\"type\":\"t\",\"idempotency_key\":\"rk\"}", NULL, 201, again);
    assert_string_not_equal(again, done);
    /* Unfinished jobs are never forgotten. */
    expect_state(port, waiting, "queued");
    SPT_STOP(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_submit_answer),
        cmocka_unit_test(test_job_record_defaults),
        cmocka_unit_test(test_job_record_given_fields),
        cmocka_unit_test(test_payload_round_trip),
        cmocka_unit_test(test_validation_type),
        cmocka_unit_test(test_validation_numbers),
        cmocka_unit_test(test_validation_key_and_unknown_fields),
        cmocka_unit_test(test_validation_body),
        cmocka_unit_test(test_content_type),
        cmocka_unit_test(test_idempotency),
        cmocka_unit_test(test_batch),
        cmocka_unit_test(test_batch_limits),
        cmocka_unit_test(test_delayed_jobs),
        cmocka_unit_test(test_cancel_and_retry),
        cmocka_unit_test(test_wait_for_job),
        cmocka_unit_test(test_query_strings),
        cmocka_unit_test(test_unknown_and_wrong_method),
        cmocka_unit_test(test_head),
        cmocka_unit_test(test_queue_names_in_paths),
        cmocka_unit_test(test_max_body),
        cmocka_unit_test(test_max_depth),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_http_layer),
        cmocka_unit_test(test_retention),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
