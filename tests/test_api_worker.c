/*
 * test_api_worker.c - black-box tests of the worker protocol of the HTTP API (docs/API.md):
 * lease (order, priority, long poll, paused queues), ack, batch ack, fail and retries,
 * heartbeat and cancel requests, lease expiry and release. The tests act as the worker by hand,
 * against a spool-server started without embedded workers.
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

#include "support/spt.h"

#define ID_MAX 64

typedef struct {
    char id[ID_MAX];
    char lease[ID_MAX];
} leased_t;

static void submit(int port, const char *queue, const char *extra, char *id)
{
    char got[ID_MAX];
    assert_int_equal(spt_submit(port, queue, "work", extra, got, sizeof(got)), 201);
    if (id) snprintf(id, ID_MAX, "%s", got);
}

static spt_resp_t get_job(int port, const char *id)
{
    char target[128];
    snprintf(target, sizeof(target), "/v1/jobs/%s", id);
    spt_resp_t r = spt_do(port, "GET", target, NULL, NULL);
    assert_int_equal(r.status, 200);
    return r;
}

/* Leases one job from queue, which must have one ready. */
static void lease_one(int port, const char *queue, leased_t *out)
{
    int rc = spt_lease_one(port, queue, out->id, sizeof(out->id), out->lease, sizeof(out->lease));
    if (rc != 1) fail_msg("expected a job from queue %s, lease gave %d", queue, rc);
}

/* POST /v1/jobs/{id}/{action} with body; returns the answer. */
static spt_resp_t job_post(int port, const char *id, const char *action, const char *body)
{
    char target[160];
    snprintf(target, sizeof(target), "/v1/jobs/%s/%s", id, action);
    return spt_do(port, "POST", target, body, NULL);
}

/* Posts {"lease": lease, <extra>} to the job's action and asserts the status. */
static void job_action(int port, const char *id, const char *action, const char *lease,
                       const char *extra, int status)
{
    char target[160], body[1024];
    snprintf(target, sizeof(target), "/v1/jobs/%s/%s", id, action);
    snprintf(body, sizeof(body), "{\"lease\":\"%s\"%s}", lease, extra ? extra : "");
    SPT_EXPECT(port, "POST", target, body, NULL, status, NULL);
}

/* A lease token that is well formed but not the current one: the real one with its last digit
 * changed, keeping its length (and never making it larger than a token can be). */
static void wrong_lease(const char *lease, char *out, size_t cap)
{
    snprintf(out, cap, "%s", lease);
    size_t n = strlen(out);
    assert_true(n > 0 && isdigit((unsigned char)out[n - 1]));
    out[n - 1] = out[n - 1] == '0' ? '1' : (char)(out[n - 1] - 1);
}

static void expect_state(int port, const char *id, const char *state)
{
    spt_resp_t r = get_job(port, id);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), state);
    spt_resp_free(&r);
}

static const cJSON *jobs_of(const spt_resp_t *r)
{
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(r->json, "jobs");
    if (!cJSON_IsArray(jobs)) fail_msg("no jobs array in %s", r->body ? r->body : "(none)");
    return jobs;
}

static void test_lease_queue_order(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    char hi[ID_MAX], lo[ID_MAX];
    /* The later queue's job is older and has a higher priority: order of queues still wins. */
    submit(port, "low", ",\"priority\":9", lo);
    submit(port, "high", ",\"priority\":0", hi);
    spt_resp_t r = spt_do(port, "POST", "/v1/lease", "{\"queues\":[\"high\",\"low\"]}", NULL);
    assert_int_equal(r.status, 200);
    const cJSON *jobs = jobs_of(&r);
    assert_int_equal(cJSON_GetArraySize(jobs), 1);
    SPT_ASSERT_STR(spt_jstr(cJSON_GetArrayItem(jobs, 0), "id"), hi);
    spt_resp_free(&r);
    r = spt_do(port, "POST", "/v1/lease", "{\"queues\":[\"high\",\"low\"]}", NULL);
    assert_int_equal(r.status, 200);
    SPT_ASSERT_STR(spt_jstr(cJSON_GetArrayItem(jobs_of(&r), 0), "id"), lo);
    spt_resp_free(&r);

    /* Reversed order, reversed outcome. */
    submit(port, "high", "", hi);
    submit(port, "low", "", lo);
    r = spt_do(port, "POST", "/v1/lease", "{\"queues\":[\"low\",\"high\"],\"max\":1}", NULL);
    SPT_ASSERT_STR(spt_jstr(cJSON_GetArrayItem(jobs_of(&r), 0), "id"), lo);
    spt_resp_free(&r);

    /* A queue not listed is not leased from. */
    r = spt_do(port, "POST", "/v1/lease", "{\"queues\":[\"low\",\"other\"]}", NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(cJSON_GetArraySize(jobs_of(&r)), 0);
    spt_resp_free(&r);

    /* Without queues, every queue is tried. */
    submit(port, "low", "", NULL);
    r = spt_do(port, "POST", "/v1/lease", "{\"max\":10}", NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(cJSON_GetArraySize(jobs_of(&r)), 2);
    spt_resp_free(&r);
    SPT_STOP(s);
}

static void test_lease_priority_fifo_and_max(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    static const int prio[] = {5, 9, 5, 0, 9, 5};
    static const int order[] = {1, 4, 0, 2, 5, 3}; /* indexes of prio, in lease order */
    char ids[6][ID_MAX];
    for (int i = 0; i < 6; i++) {
        char extra[32];
        snprintf(extra, sizeof(extra), ",\"priority\":%d", prio[i]);
        submit(port, "pf", extra, ids[i]);
    }
    for (int i = 0; i < 6; i++) {
        leased_t l;
        lease_one(port, "pf", &l);
        if (strcmp(l.id, ids[order[i]]) != 0)
            fail_msg("lease %d: expected job %s (priority %d), got %s", i, ids[order[i]],
                     prio[order[i]], l.id);
    }

    /* max bounds how many come back; fewer come when fewer are ready. */
    for (int i = 0; i < 3; i++) submit(port, "mx", "", NULL);
    spt_resp_t r = spt_do(port, "POST", "/v1/lease", "{\"queues\":[\"mx\"],\"max\":2}", NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(cJSON_GetArraySize(jobs_of(&r)), 2);
    spt_resp_free(&r);
    r = spt_do(port, "POST", "/v1/lease", "{\"queues\":[\"mx\"],\"max\":10}", NULL);
    assert_int_equal(cJSON_GetArraySize(jobs_of(&r)), 1);
    spt_resp_free(&r);
    assert_int_equal(spt_queue_num(port, "mx", "counts", "running"), 3);

    /* A batch of leases comes in priority order too. */
    submit(port, "mo", ",\"priority\":1", ids[0]);
    submit(port, "mo", ",\"priority\":8", ids[1]);
    r = spt_do(port, "POST", "/v1/lease", "{\"queues\":[\"mo\"],\"max\":5}", NULL);
    const cJSON *jobs = jobs_of(&r);
    assert_int_equal(cJSON_GetArraySize(jobs), 2);
    SPT_ASSERT_STR(spt_jstr(cJSON_GetArrayItem(jobs, 0), "id"), ids[1]);
    SPT_ASSERT_STR(spt_jstr(cJSON_GetArrayItem(jobs, 1), "id"), ids[0]);
    spt_resp_free(&r);
    SPT_STOP(s);
}

static void test_lease_record(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    char id[ID_MAX];
    const char *payload = "{\"big\":12345678901234567890123,\"s\":\"a\\u0000b \\u00e9\","
                          "\"d\":0.1000000000000000000001}";
    char extra[256];
    snprintf(extra, sizeof(extra), ",\"payload\":%s,\"max_attempts\":4,\"timeout_ms\":20000",
             payload);
    submit(port, "lr", extra, id);
    long long before = spt_wall_ms();
    spt_resp_t r = spt_do(port, "POST", "/v1/lease",
                          "{\"queues\":[\"lr\"],\"worker\":\"host-a:42\",\"wait_ms\":0}", NULL);
    long long after = spt_wall_ms();
    assert_int_equal(r.status, 200);
    const cJSON *job = cJSON_GetArrayItem(jobs_of(&r), 0);
    assert_non_null(job);
    SPT_ASSERT_STR(spt_jstr(job, "id"), id);
    SPT_ASSERT_STR(spt_jstr(job, "queue"), "lr");
    SPT_ASSERT_STR(spt_jstr(job, "type"), "work");
    assert_true(spt_json_same(r.body, r.body_len, "jobs.0.payload", payload));
    assert_int_equal(spt_jint(job, "attempts"), 1);
    assert_int_equal(spt_jint(job, "max_attempts"), 4);
    const char *lease = spt_jstr(job, "lease");
    assert_non_null(lease);
    assert_true(lease[0] != '\0');
    long long expires = spt_jint(job, "lease_expires_at");
    SPT_ASSERT_BETWEEN(expires, before + 20000 - 1000, after + 20000 + 1000);

    spt_resp_t g = get_job(port, id);
    SPT_ASSERT_STR(spt_jstr(g.json, "state"), "running");
    SPT_ASSERT_STR(spt_jstr(g.json, "worker"), "host-a:42");
    assert_int_equal(spt_jint(g.json, "attempts"), 1);
    assert_int_equal(spt_jint(g.json, "lease_expires_at"), expires);
    SPT_ASSERT_BETWEEN(spt_jint(g.json, "started_at"), before - 1000, after + 1000);
    SPT_ASSERT_JNULL(g.json, "finished_at");
    spt_resp_free(&g);
    spt_resp_free(&r);

    /* Without a worker string, the job records the client's address. */
    submit(port, "lr", "", id);
    leased_t l;
    lease_one(port, "lr", &l);
    g = get_job(port, id);
    const char *worker = spt_jstr(g.json, "worker");
    assert_non_null(worker);
    assert_true(strncmp(worker, "127.0.0.1:", 10) == 0);
    char *end;
    long long wport = strtoll(worker + 10, &end, 10);
    assert_true(*end == '\0' && wport > 0 && wport < 65536);
    spt_resp_free(&g);
    SPT_STOP(s);
}

static void test_lease_validation(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    char worker257[300];
    memset(worker257, 'w', 257);
    worker257[257] = '\0';
    char body[400];
    snprintf(body, sizeof(body), "{\"worker\":\"%s\"}", worker257);
    struct {
        const char *body;
        const char *names;
    } bad[] = {
        {"{\"queues\":[]}", "queues"},
        {"{\"queues\":\"q\"}", "queues"},
        {"{\"queues\":[5]}", "queues"},
        {"{\"queues\":[\"bad name\"]}", NULL},
        {"{\"max\":0}", "max"},
        {"{\"max\":1001}", "max"},
        {"{\"max\":1.0}", "max"},
        {"{\"max\":\"1\"}", "max"},
        {"{\"wait_ms\":60001}", "wait_ms"},
        {"{\"wait_ms\":-1}", "wait_ms"},
        {"{\"worker\":5}", "worker"},
        {body, "worker"},
        {"{\"queue\":[\"q\"]}", "queue"},
        {"[]", NULL},
        {"{", NULL},
        {"{\"max\":1,\"max\":2}", NULL},
    };
    int failures = 0;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (spt_expect(port, "POST", "/v1/lease", bad[i].body, NULL, 400, bad[i].names) != 0)
            failures++;
    assert_int_equal(failures, 0);

    /* An empty body means {}; the bounds are accepted. */
    static const char *const good[] = {NULL,
                                       "",
                                       "{}",
                                       "{\"max\":1000}",
                                       "{\"max\":1,\"wait_ms\":0}",
                                       "{\"queues\":null,\"max\":null,\"wait_ms\":null}",
                                       "{\"queues\":[\"never-seen\"]}"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        spt_resp_t r = spt_do(port, "POST", "/v1/lease", good[i], NULL);
        if (r.status != 200)
            fail_msg("lease %s: expected 200, got %d %s", good[i] ? good[i] : "(no body)", r.status,
                     r.body ? r.body : "");
        assert_int_equal(cJSON_GetArraySize(jobs_of(&r)), 0);
        spt_resp_free(&r);
    }
    SPT_EXPECT(port, "POST", "/v1/lease", "{}", "Content-Type: text/plain\r\n", 415, NULL);
    /* The longest worker string is fine. */
    worker257[256] = '\0';
    snprintf(body, sizeof(body), "{\"worker\":\"%s\"}", worker257);
    SPT_EXPECT(port, "POST", "/v1/lease", body, NULL, 200, NULL);
    SPT_STOP(s);
}

static void test_long_poll(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;

    /* Nothing ready: the answer is an empty list once wait_ms has passed. */
    long long t0 = spt_now_ms();
    spt_resp_t r = spt_do(port, "POST", "/v1/lease", "{\"queues\":[\"lp\"],\"wait_ms\":300}", NULL);
    long long took = spt_now_ms() - t0;
    assert_int_equal(r.status, 200);
    assert_int_equal(cJSON_GetArraySize(jobs_of(&r)), 0);
    SPT_ASSERT_BETWEEN(took, 250, 10000);
    spt_resp_free(&r);

    /* A job submitted while a lease waits is handed to it at once. */
    int fd = spt_connect(port);
    assert_true(fd >= 0);
    const char *body = "{\"queues\":[\"lp\"],\"wait_ms\":5000,\"worker\":\"poller\"}";
    char raw[512];
    int n = snprintf(raw, sizeof(raw),
                     "POST /v1/lease HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     "application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
    t0 = spt_now_ms();
    assert_int_equal(spt_send(fd, raw, (size_t)n), 0);
    /* Lets the lease reach the server first, so that it is a waiting one. */
    spt_sleep_ms(200);
    char id[ID_MAX];
    submit(port, "lp", "", id);
    assert_int_equal(spt_read_response(fd, &r, false), 0);
    took = spt_now_ms() - t0;
    assert_int_equal(r.status, 200);
    const cJSON *jobs = jobs_of(&r);
    assert_int_equal(cJSON_GetArraySize(jobs), 1);
    SPT_ASSERT_STR(spt_jstr(cJSON_GetArrayItem(jobs, 0), "id"), id);
    assert_true(took < 3000);
    spt_resp_free(&r);
    spt_close(fd);
    r = get_job(port, id);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "running");
    SPT_ASSERT_STR(spt_jstr(r.json, "worker"), "poller");
    spt_resp_free(&r);

    /* A job in a later queue of the list also wakes the poll. */
    fd = spt_connect(port);
    assert_true(fd >= 0);
    body = "{\"queues\":[\"lp-a\",\"lp-b\"],\"wait_ms\":5000}";
    n = snprintf(raw, sizeof(raw),
                 "POST /v1/lease HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                 "application/json\r\nContent-Length: %zu\r\n\r\n%s",
                 strlen(body), body);
    t0 = spt_now_ms();
    assert_int_equal(spt_send(fd, raw, (size_t)n), 0);
    spt_sleep_ms(200);
    submit(port, "lp-b", "", id);
    assert_int_equal(spt_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 200);
    SPT_ASSERT_STR(spt_jstr(cJSON_GetArrayItem(jobs_of(&r), 0), "id"), id);
    assert_true(spt_now_ms() - t0 < 3000);
    spt_resp_free(&r);
    spt_close(fd);
    SPT_STOP(s);
}

/* Sends POST /v1/lease with body on a connection of its own, left open; returns the socket. */
static int send_lease_raw(int port, const char *body)
{
    int fd = spt_connect(port);
    assert_true(fd >= 0);
    char raw[512];
    int n = snprintf(raw, sizeof(raw),
                     "POST /v1/lease HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     "application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
    assert_int_equal(spt_send(fd, raw, (size_t)n), 0);
    return fd;
}

static void test_long_poll_client_gone(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    int fd = send_lease_raw(port, "{\"queues\":[\"gone\"],\"wait_ms\":10000}");
    /* The poll is parked, then its client hangs up; the server sees the close before the
     * submission below is even sent. */
    spt_sleep_ms(200);
    spt_close(fd);
    spt_sleep_ms(200);
    char id[ID_MAX];
    submit(port, "gone", "", id);
    spt_resp_t r = spt_do(port, "POST", "/v1/lease", "{\"queues\":[\"gone\"]}", NULL);
    assert_int_equal(r.status, 200);
    const cJSON *jobs = jobs_of(&r);
    assert_int_equal(cJSON_GetArraySize(jobs), 1);
    SPT_ASSERT_STR(spt_jstr(cJSON_GetArrayItem(jobs, 0), "id"), id);
    assert_int_equal(spt_jint(cJSON_GetArrayItem(jobs, 0), "attempts"), 1);
    spt_resp_free(&r);
    SPT_STOP(s);
}

/* A lease answered after its client left (the Redis backend answers a round trip later, here
 * held up on purpose) hands the jobs back at once, their attempt not counted, rather than
 * leaving them running until the lease runs out. The memory backend answers at once. */
static void test_lease_client_gone_at_once(void **state)
{
    (void)state;
    const char *url = spt_test_backend_url();
    if (!url) skip();
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    char id[ID_MAX];
    submit(port, "left", "", id);
    /* Redis holds the server's scripts for 800 ms: the client leaves while its lease is out. */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "redis-cli -u '%s' CLIENT PAUSE 800 WRITE >/dev/null", url);
    assert_int_equal(system(cmd), 0);
    int fd = send_lease_raw(port, "{\"queues\":[\"left\"]}");
    spt_sleep_ms(300);
    spt_close(fd);
    const char *st = NULL;
    long long attempts = -1;
    for (int i = 0; i < 100; i++) {
        spt_resp_t r = get_job(port, id);
        st = spt_jstr(r.json, "state");
        attempts = spt_jint(r.json, "attempts");
        bool back = st && strcmp(st, "queued") == 0 && attempts == 0;
        st = back ? "queued" : "not back";
        spt_resp_free(&r);
        if (back) break;
        spt_sleep_ms(50);
    }
    SPT_ASSERT_STR(st, "queued");
    /* The next worker gets it as a first attempt. */
    leased_t l;
    lease_one(port, "left", &l);
    SPT_ASSERT_STR(l.id, id);
    spt_resp_t r = get_job(port, id);
    assert_int_equal(spt_jint(r.json, "attempts"), 1);
    spt_resp_free(&r);
    SPT_STOP(s);
}

static void test_ack(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    char id[ID_MAX], wrong[ID_MAX];
    submit(port, "ack", "", id);
    leased_t l;
    lease_one(port, "ack", &l);
    assert_string_equal(l.id, id);
    wrong_lease(l.lease, wrong, sizeof(wrong));

    /* A stale lease leaves the job untouched. */
    job_action(port, id, "ack", wrong, ",\"result\":1", 409);
    expect_state(port, id, "running");

    const char *result =
        "{\"big\":12345678901234567890123,\"s\":\"a\\u0000b \\u00e9\\ud83d\\ude00\","
        "\"d\":3.14159265358979323846264338327950288,\"l\":[null,true,{}]}";
    char extra[512];
    snprintf(extra, sizeof(extra), ",\"result\":%s", result);
    long long before = spt_wall_ms();
    spt_resp_t r;
    char body[1024];
    snprintf(body, sizeof(body), "{\"lease\":\"%s\"%s}", l.lease, extra);
    r = job_post(port, id, "ack", body);
    assert_int_equal(r.status, 200);
    spt_resp_free(&r);
    long long after = spt_wall_ms();
    r = get_job(port, id);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "succeeded");
    assert_true(spt_json_same(r.body, r.body_len, "result", result));
    assert_int_equal(spt_jint(r.json, "attempts"), 1);
    SPT_ASSERT_BETWEEN(spt_jint(r.json, "finished_at"), before - 1000, after + 1000);
    SPT_ASSERT_JNULL(r.json, "last_error");
    spt_resp_free(&r);

    /* The same ack again (its answer was lost) is 200 again; another lease is 409. */
    r = job_post(port, id, "ack", body);
    assert_int_equal(r.status, 200);
    spt_resp_free(&r);
    job_action(port, id, "ack", wrong, ",\"result\":2", 409);
    r = get_job(port, id);
    assert_true(spt_json_same(r.body, r.body_len, "result", result));
    spt_resp_free(&r);

    job_action(port, "999999999", "ack", l.lease, ",\"result\":1", 404);
    assert_int_equal(spt_queue_num(port, "ack", "counts", "succeeded"), 1);
    assert_int_equal(spt_queue_num(port, "ack", "counts", "running"), 0);
    assert_int_equal(spt_queue_num(port, "ack", "totals", "succeeded"), 1);

    /* Bad ack bodies. */
    submit(port, "ack", "", id);
    lease_one(port, "ack", &l);
    char target[160];
    snprintf(target, sizeof(target), "/v1/jobs/%s/ack", id);
    SPT_EXPECT(port, "POST", target, "{\"result\":1}", NULL, 400, "lease");
    SPT_EXPECT(port, "POST", target, "", NULL, 400, NULL);
    SPT_EXPECT(port, "POST", target, "[]", NULL, 400, NULL);
    snprintf(body, sizeof(body), "{\"lease\":\"%s\",\"resutl\":1}", l.lease);
    SPT_EXPECT(port, "POST", target, body, NULL, 400, "resutl");
    snprintf(body, sizeof(body), "{\"lease\":\"%s\",\"result\":\"\\ud800\"}", l.lease);
    SPT_EXPECT(port, "POST", target, body, NULL, 400, NULL);
    expect_state(port, id, "running");
    SPT_STOP(s);
}

static void test_fail_and_retry(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    char id[ID_MAX];
    leased_t l;

    /* With attempts left, a failure waits out its backoff in scheduled. */
    submit(port, "f", ",\"max_attempts\":3,\"backoff_ms\":60000", id);
    lease_one(port, "f", &l);
    long long before = spt_wall_ms();
    char body[512];
    snprintf(body, sizeof(body), "{\"lease\":\"%s\",\"error\":\"boom \\u00e9\"}", l.lease);
    spt_resp_t r = job_post(port, id, "fail", body);
    assert_int_equal(r.status, 200);
    SPT_ASSERT_STR(spt_jstr(r.json, "id"), id);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "scheduled");
    spt_resp_free(&r);
    r = get_job(port, id);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "scheduled");
    SPT_ASSERT_STR(spt_jstr(r.json, "last_error"), "boom \xc3\xa9");
    assert_int_equal(spt_jint(r.json, "attempts"), 1);
    /* backoff_ms * 2^0 plus up to 10 % jitter, never less. */
    SPT_ASSERT_BETWEEN(spt_jint(r.json, "run_at"), before + 60000, spt_wall_ms() + 66000 + 1000);
    SPT_ASSERT_JNULL(r.json, "lease_expires_at");
    spt_resp_free(&r);
    assert_int_equal(spt_queue_num(port, "f", "counts", "scheduled"), 1);
    assert_int_equal(spt_queue_num(port, "f", "totals", "retried"), 1);
    assert_int_equal(spt_lease_one(port, "f", NULL, 0, NULL, 0), 0);
    /* The lease that failed is spent. */
    job_action(port, id, "fail", l.lease, "", 409);
    job_action(port, id, "ack", l.lease, "", 409);

    /* retry_in_ms 0: straight back to queued; the next lease counts attempt 2. */
    submit(port, "f0", ",\"backoff_ms\":60000", id);
    lease_one(port, "f0", &l);
    snprintf(body, sizeof(body), "{\"lease\":\"%s\",\"retry_in_ms\":0}", l.lease);
    r = job_post(port, id, "fail", body);
    assert_int_equal(r.status, 200);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "queued");
    spt_resp_free(&r);
    r = get_job(port, id);
    SPT_ASSERT_STR(spt_jstr(r.json, "last_error"), "failed");
    spt_resp_free(&r);
    r = spt_do(port, "POST", "/v1/lease", "{\"queues\":[\"f0\"]}", NULL);
    const cJSON *job = cJSON_GetArrayItem(jobs_of(&r), 0);
    assert_non_null(job);
    SPT_ASSERT_STR(spt_jstr(job, "id"), id);
    assert_int_equal(spt_jint(job, "attempts"), 2);
    spt_resp_free(&r);

    /* retry_in_ms replaces the backoff. */
    submit(port, "f1", ",\"backoff_ms\":0", id);
    lease_one(port, "f1", &l);
    before = spt_wall_ms();
    snprintf(body, sizeof(body), "{\"lease\":\"%s\",\"retry_in_ms\":120000}", l.lease);
    r = job_post(port, id, "fail", body);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "scheduled");
    spt_resp_free(&r);
    r = get_job(port, id);
    SPT_ASSERT_BETWEEN(spt_jint(r.json, "run_at"), before + 119000, spt_wall_ms() + 121000);
    spt_resp_free(&r);

    /* retry: false ends it failed at once. */
    submit(port, "fx", ",\"max_attempts\":10", id);
    lease_one(port, "fx", &l);
    snprintf(body, sizeof(body), "{\"lease\":\"%s\",\"error\":\"fatal\",\"retry\":false}", l.lease);
    r = job_post(port, id, "fail", body);
    assert_int_equal(r.status, 200);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "failed");
    spt_resp_free(&r);
    r = get_job(port, id);
    SPT_ASSERT_STR(spt_jstr(r.json, "last_error"), "fatal");
    assert_true(spt_jint(r.json, "finished_at") > 0);
    spt_resp_free(&r);
    assert_int_equal(spt_queue_num(port, "fx", "totals", "failed"), 1);
    assert_int_equal(spt_queue_num(port, "fx", "totals", "retried"), 0);

    /* No attempts left: failed even though retry is asked for. */
    submit(port, "fl", ",\"max_attempts\":2,\"backoff_ms\":0", id);
    for (int attempt = 1; attempt <= 2; attempt++) {
        lease_one(port, "fl", &l);
        snprintf(body, sizeof(body), "{\"lease\":\"%s\",\"error\":\"e%d\",\"retry\":true}", l.lease,
                 attempt);
        r = job_post(port, id, "fail", body);
        assert_int_equal(r.status, 200);
        SPT_ASSERT_STR(spt_jstr(r.json, "state"), attempt == 1 ? "queued" : "failed");
        spt_resp_free(&r);
    }
    r = get_job(port, id);
    SPT_ASSERT_STR(spt_jstr(r.json, "last_error"), "e2");
    assert_int_equal(spt_jint(r.json, "attempts"), 2);
    spt_resp_free(&r);
    assert_int_equal(spt_queue_num(port, "fl", "totals", "failed"), 1);
    assert_int_equal(spt_queue_num(port, "fl", "totals", "retried"), 1);

    /* Bad fail bodies and unknown jobs. */
    submit(port, "fb", "", id);
    lease_one(port, "fb", &l);
    static const char *const bad[] = {",\"retry_in_ms\":-1",  ",\"retry_in_ms\":86400001",
                                      ",\"retry_in_ms\":1.5", ",\"retry\":\"yes\"",
                                      ",\"error\":5",         ",\"eror\":\"x\""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        job_action(port, id, "fail", l.lease, bad[i], 400);
    expect_state(port, id, "running");
    job_action(port, "999999999", "fail", l.lease, "", 404);
    SPT_STOP(s);
}

static void test_heartbeat_and_cancel(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    char id[ID_MAX], wrong[ID_MAX], body[256];
    leased_t l;
    submit(port, "hb", ",\"timeout_ms\":5000", id);
    lease_one(port, "hb", &l);
    spt_resp_t g = get_job(port, id);
    long long first = spt_jint(g.json, "lease_expires_at");
    spt_resp_free(&g);

    snprintf(body, sizeof(body), "{\"lease\":\"%s\",\"extend_ms\":60000}", l.lease);
    long long before = spt_wall_ms();
    spt_resp_t r = job_post(port, id, "heartbeat", body);
    long long after = spt_wall_ms();
    assert_int_equal(r.status, 200);
    long long extended = spt_jint(r.json, "lease_expires_at");
    SPT_ASSERT_BETWEEN(extended, before + 60000, after + 60000);
    assert_true(extended > first);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(r.json, "cancel_requested")));
    spt_resp_free(&r);
    g = get_job(port, id);
    assert_int_equal(spt_jint(g.json, "lease_expires_at"), extended);
    spt_resp_free(&g);

    /* Without extend_ms the lease runs to now + timeout_ms. */
    snprintf(body, sizeof(body), "{\"lease\":\"%s\"}", l.lease);
    before = spt_wall_ms();
    r = job_post(port, id, "heartbeat", body);
    after = spt_wall_ms();
    assert_int_equal(r.status, 200);
    SPT_ASSERT_BETWEEN(spt_jint(r.json, "lease_expires_at"), before + 5000, after + 5000);
    spt_resp_free(&r);

    job_action(port, id, "heartbeat", l.lease, ",\"extend_ms\":50", 400);
    job_action(port, id, "heartbeat", l.lease, ",\"extend_ms\":99", 400);
    job_action(port, id, "heartbeat", l.lease, ",\"extend_ms\":86400001", 400);
    job_action(port, id, "heartbeat", l.lease, ",\"extend\":1000", 400);
    job_action(port, id, "heartbeat", l.lease, ",\"extend_ms\":86400000", 200);
    job_action(port, id, "heartbeat", l.lease, ",\"extend_ms\":60000", 200);
    wrong_lease(l.lease, wrong, sizeof(wrong));
    job_action(port, id, "heartbeat", wrong, "", 409);
    job_action(port, "999999999", "heartbeat", l.lease, "", 404);

    /* Cancel while running: it keeps running with cancel_requested, the worker learns at its
     * heartbeat, and its fail ends the job canceled, not retried. */
    char target[128];
    snprintf(target, sizeof(target), "/v1/jobs/%s", id);
    r = spt_do(port, "DELETE", target, NULL, NULL);
    assert_int_equal(r.status, 200);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "running");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r.json, "cancel_requested")));
    spt_resp_free(&r);
    g = get_job(port, id);
    SPT_ASSERT_STR(spt_jstr(g.json, "state"), "running");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(g.json, "cancel_requested")));
    spt_resp_free(&g);
    r = job_post(port, id, "heartbeat", body);
    assert_int_equal(r.status, 200);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r.json, "cancel_requested")));
    spt_resp_free(&r);
    snprintf(body, sizeof(body), "{\"lease\":\"%s\",\"error\":\"stopped\"}", l.lease);
    r = job_post(port, id, "fail", body);
    assert_int_equal(r.status, 200);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "canceled");
    spt_resp_free(&r);
    expect_state(port, id, "canceled");
    assert_int_equal(spt_queue_num(port, "hb", "counts", "canceled"), 1);
    assert_int_equal(spt_queue_num(port, "hb", "totals", "retried"), 0);
    assert_int_equal(spt_queue_num(port, "hb", "totals", "failed"), 0);

    /* An ack that comes first still ends it succeeded: the work was done. */
    submit(port, "hb2", "", id);
    lease_one(port, "hb2", &l);
    snprintf(target, sizeof(target), "/v1/jobs/%s", id);
    SPT_EXPECT(port, "DELETE", target, NULL, NULL, 200, NULL);
    job_action(port, id, "ack", l.lease, ",\"result\":\"done\"", 200);
    expect_state(port, id, "succeeded");

    /* A release of a job whose cancel was requested ends it canceled. */
    submit(port, "hb3", "", id);
    lease_one(port, "hb3", &l);
    snprintf(target, sizeof(target), "/v1/jobs/%s", id);
    SPT_EXPECT(port, "DELETE", target, NULL, NULL, 200, NULL);
    job_action(port, id, "release", l.lease, "", 200);
    expect_state(port, id, "canceled");

    /* So does a lease that expires after the cancel request. */
    submit(port, "hb4", ",\"timeout_ms\":300,\"max_attempts\":5", id);
    lease_one(port, "hb4", &l);
    snprintf(target, sizeof(target), "/v1/jobs/%s", id);
    SPT_EXPECT(port, "DELETE", target, NULL, NULL, 200, NULL);
    assert_int_equal(spt_wait_state(port, id, "canceled", 5000), 0);
    assert_int_equal(spt_lease_one(port, "hb4", NULL, 0, NULL, 0), 0);
    SPT_STOP(s);
}

/* Leases from queue every 20 ms until a job comes, at most timeout_ms. */
static void lease_within(int port, const char *queue, int timeout_ms, leased_t *out)
{
    long long deadline = spt_now_ms() + timeout_ms;
    for (;;) {
        int rc =
            spt_lease_one(port, queue, out->id, sizeof(out->id), out->lease, sizeof(out->lease));
        assert_true(rc >= 0);
        if (rc == 1) return;
        if (spt_now_ms() >= deadline) fail_msg("nothing to lease from %s in time", queue);
        spt_sleep_ms(20);
    }
}

/* Fails the job's current attempt and asserts its run_at is the backoff delay after the fail,
 * plus at most 10 % jitter. */
static void fail_and_check_delay(int port, const char *id, const char *lease, long long delay)
{
    char body[256];
    snprintf(body, sizeof(body), "{\"lease\":\"%s\",\"error\":\"again\"}", lease);
    long long before = spt_wall_ms();
    spt_resp_t r = job_post(port, id, "fail", body);
    long long after = spt_wall_ms();
    assert_int_equal(r.status, 200);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "scheduled");
    spt_resp_free(&r);
    r = get_job(port, id);
    SPT_ASSERT_BETWEEN(spt_jint(r.json, "run_at"), before + delay, after + delay + delay / 10 + 1);
    spt_resp_free(&r);
}

static void test_backoff(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    char id[ID_MAX];
    leased_t l;

    /* base * 2^(attempt-1): 200 ms, then 400 ms. */
    submit(port, "bo", ",\"backoff_ms\":200,\"max_attempts\":4", id);
    lease_one(port, "bo", &l);
    fail_and_check_delay(port, id, l.lease, 200);
    lease_within(port, "bo", 5000, &l);
    assert_string_equal(l.id, id);
    fail_and_check_delay(port, id, l.lease, 400);
    lease_within(port, "bo", 5000, &l);
    spt_resp_t r = get_job(port, id);
    assert_int_equal(spt_jint(r.json, "attempts"), 3);
    spt_resp_free(&r);

    /* Capped at one hour. */
    submit(port, "bo2", ",\"backoff_ms\":86400000", id);
    lease_one(port, "bo2", &l);
    fail_and_check_delay(port, id, l.lease, 3600000);
    SPT_STOP(s);
}

static bool mentions_lease(const char *text)
{
    return text && strcasestr(text, "lease");
}

static void test_lease_expiry(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    char id[ID_MAX];
    leased_t l1, l2;
    submit(port, "ex", ",\"timeout_ms\":300,\"max_attempts\":2,\"backoff_ms\":60000", id);
    lease_one(port, "ex", &l1);

    /* Not acked in time: leased again, attempt 2, straight from queued (no backoff). */
    lease_within(port, "ex", 5000, &l2);
    assert_string_equal(l2.id, id);
    assert_string_not_equal(l1.lease, l2.lease);
    spt_resp_t r = get_job(port, id);
    assert_int_equal(spt_jint(r.json, "attempts"), 2);
    /* The second lease is as short as the first and may be over already. */
    const char *st = spt_jstr(r.json, "state");
    assert_true(st && (strcmp(st, "running") == 0 || strcmp(st, "failed") == 0));
    if (!mentions_lease(spt_jstr(r.json, "last_error")))
        fail_msg("last_error does not mention the lease: %s", r.body);
    spt_resp_free(&r);
    assert_int_equal(spt_queue_num(port, "ex", "totals", "retried"), 1);

    /* The first lease is dead for every action. */
    job_action(port, id, "ack", l1.lease, ",\"result\":1", 409);
    job_action(port, id, "heartbeat", l1.lease, "", 409);
    job_action(port, id, "fail", l1.lease, "", 409);
    job_action(port, id, "release", l1.lease, "", 409);

    /* Expiry on the last attempt ends the job failed. */
    assert_int_equal(spt_wait_state(port, id, "failed", 5000), 0);
    r = get_job(port, id);
    if (!mentions_lease(spt_jstr(r.json, "last_error")))
        fail_msg("last_error does not mention the lease: %s", r.body);
    assert_true(spt_jint(r.json, "finished_at") > 0);
    spt_resp_free(&r);
    job_action(port, id, "ack", l2.lease, ",\"result\":1", 409);
    expect_state(port, id, "failed");
    assert_int_equal(spt_queue_num(port, "ex", "totals", "failed"), 1);
    assert_int_equal(spt_queue_num(port, "ex", "totals", "retried"), 1);

    /* A lease is never honoured after it expires, even before anyone else took the job. */
    submit(port, "ex2", ",\"timeout_ms\":300,\"max_attempts\":3", id);
    lease_one(port, "ex2", &l1);
    assert_int_equal(spt_wait_state(port, id, "queued", 5000), 0);
    job_action(port, id, "ack", l1.lease, ",\"result\":1", 409);
    job_action(port, id, "heartbeat", l1.lease, "", 409);
    expect_state(port, id, "queued");

    /* A heartbeat keeps a lease alive past its timeout. */
    submit(port, "ex3", ",\"timeout_ms\":1000", id);
    lease_one(port, "ex3", &l1);
    job_action(port, id, "heartbeat", l1.lease, ",\"extend_ms\":60000", 200);
    r = get_job(port, id);
    long long expires = spt_jint(r.json, "lease_expires_at");
    spt_resp_free(&r);
    /* The lease was taken before expires - 60000; waits until its first 1000 ms are
     * certainly over (a bounded wait: expires is about a minute from now). */
    long long until = expires - 60000 + 1000 + 300;
    assert_true(until < spt_wall_ms() + 5000);
    while (spt_wall_ms() < until) spt_sleep_ms(20);
    expect_state(port, id, "running");
    job_action(port, id, "ack", l1.lease, "", 200);
    expect_state(port, id, "succeeded");
    SPT_STOP(s);
}

static void test_release(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    char id[ID_MAX];
    leased_t l1, l2;
    submit(port, "rel", ",\"max_attempts\":1", id);
    lease_one(port, "rel", &l1);
    char body[256];
    snprintf(body, sizeof(body), "{\"lease\":\"%s\"}", l1.lease);
    spt_resp_t r = job_post(port, id, "release", body);
    assert_int_equal(r.status, 200);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "queued");
    assert_int_equal(spt_jint(r.json, "attempts"), 0);
    spt_resp_free(&r);
    r = get_job(port, id);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "queued");
    assert_int_equal(spt_jint(r.json, "attempts"), 0);
    SPT_ASSERT_JNULL(r.json, "lease_expires_at");
    spt_resp_free(&r);
    assert_int_equal(spt_queue_num(port, "rel", "totals", "retried"), 0);

    /* The attempt was not counted: with max_attempts 1 the job can still run. */
    r = spt_do(port, "POST", "/v1/lease", "{\"queues\":[\"rel\"]}", NULL);
    const cJSON *job = cJSON_GetArrayItem(jobs_of(&r), 0);
    assert_non_null(job);
    SPT_ASSERT_STR(spt_jstr(job, "id"), id);
    assert_int_equal(spt_jint(job, "attempts"), 1);
    snprintf(l2.lease, sizeof(l2.lease), "%s", spt_jstr(job, "lease"));
    spt_resp_free(&r);

    /* The released lease is stale. */
    job_action(port, id, "release", l1.lease, "", 409);
    job_action(port, id, "ack", l1.lease, "", 409);
    job_action(port, "999999999", "release", l1.lease, "", 404);
    job_action(port, id, "release", l2.lease, ",\"bogus\":1", 400);
    job_action(port, id, "ack", l2.lease, ",\"result\":null", 200);
    expect_state(port, id, "succeeded");
    job_action(port, id, "release", l2.lease, "", 409);
    SPT_STOP(s);
}

/* The status and id of slot i of a batch ack answer; checks an error object on non-200. */
static void expect_slot(const cJSON *acks, int i, const char *id, int status)
{
    const cJSON *slot = cJSON_GetArrayItem(acks, i);
    if (!slot) fail_msg("no slot %d in the batch ack answer", i);
    if (id) {
        SPT_ASSERT_STR(spt_jstr(slot, "id"), id);
    } else {
        SPT_ASSERT_JNULL(slot, "id");
    }
    if (spt_jint(slot, "status") != status)
        fail_msg("slot %d: expected status %d, got %lld", i, status, spt_jint(slot, "status"));
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(slot, "error");
    if (status == 200) {
        assert_true(err == NULL || cJSON_IsNull(err));
    } else {
        assert_non_null(spt_jstr(err, "code"));
        assert_non_null(spt_jstr(err, "message"));
    }
}

static void test_batch_ack(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    char a[ID_MAX], b[ID_MAX];
    leased_t la, lb;
    submit(port, "ba", "", a);
    submit(port, "ba", "", b);
    lease_one(port, "ba", &la);
    lease_one(port, "ba", &lb);
    assert_string_equal(la.id, a);
    assert_string_equal(lb.id, b);

    char body[2048], wrong[ID_MAX];
    wrong_lease(lb.lease, wrong, sizeof(wrong));
    snprintf(body, sizeof(body),
             "{\"acks\":[{\"id\":\"%s\",\"lease\":\"%s\",\"result\":12345678901234567890123},"
             "{\"id\":\"%s\",\"lease\":\"%s\",\"result\":1},"
             "{\"id\":\"999999999\",\"lease\":\"%s\"},"
             "5,"
             "{\"id\":\"%s\",\"lease\":\"%s\",\"result\":12345678901234567890123},"
             "{\"id\":\"%s\"}]}",
             a, la.lease, b, wrong, la.lease, a, la.lease, b);
    spt_resp_t r = spt_do(port, "POST", "/v1/ack", body, NULL);
    assert_int_equal(r.status, 200);
    const cJSON *acks = cJSON_GetObjectItemCaseSensitive(r.json, "acks");
    assert_true(cJSON_IsArray(acks));
    assert_int_equal(cJSON_GetArraySize(acks), 6);
    expect_slot(acks, 0, a, 200);
    expect_slot(acks, 1, b, 409);
    expect_slot(acks, 2, "999999999", 404);
    expect_slot(acks, 3, NULL, 400);
    expect_slot(acks, 4, a, 200);
    expect_slot(acks, 5, b, 400);
    spt_resp_free(&r);

    r = get_job(port, a);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "succeeded");
    assert_true(spt_json_same(r.body, r.body_len, "result", "12345678901234567890123"));
    spt_resp_free(&r);
    expect_state(port, b, "running");

    /* Shape errors fail the whole request. */
    static const char *const bad[] = {"{\"acks\":[]}",         "{}", "[]", "{\"acks\":{}}",
                                      "{\"acks\":[],\"x\":1}", ""};
    int failures = 0;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (spt_expect(port, "POST", "/v1/ack", bad[i], NULL, 400, NULL) != 0) failures++;
    assert_int_equal(failures, 0);

    size_t cap = 1001 * (32 + strlen(b) + strlen(lb.lease)) + 32;
    char *big = malloc(cap);
    assert_non_null(big);
    size_t len = (size_t)snprintf(big, cap, "{\"acks\":[");
    for (int i = 0; i < 1001; i++)
        len += (size_t)snprintf(big + len, cap - len, "%s{\"id\":\"%s\",\"lease\":\"%s\"}",
                                i ? "," : "", b, lb.lease);
    snprintf(big + len, cap - len, "]}");
    SPT_EXPECT(port, "POST", "/v1/ack", big, NULL, 413, NULL);
    expect_state(port, b, "running");

    /* 1000 is allowed: the first one acks b, the rest repeat the same ack. */
    char *last = strrchr(big, '{');
    snprintf(last - 1, cap - (size_t)(last - 1 - big), "]}");
    r = spt_do(port, "POST", "/v1/ack", big, NULL);
    assert_int_equal(r.status, 200);
    acks = cJSON_GetObjectItemCaseSensitive(r.json, "acks");
    assert_int_equal(cJSON_GetArraySize(acks), 1000);
    expect_slot(acks, 0, b, 200);
    expect_slot(acks, 999, b, 200);
    spt_resp_free(&r);
    free(big);
    expect_state(port, b, "succeeded");
    assert_int_equal(spt_queue_num(port, "ba", "totals", "succeeded"), 2);
    SPT_STOP(s);
}

static void test_paused_queue(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    char id[ID_MAX], other[ID_MAX];
    submit(port, "pq", "", id);
    submit(port, "pq-other", "", other);
    spt_resp_t r = spt_do(port, "POST", "/v1/queues/pq/pause", NULL, NULL);
    assert_int_equal(r.status, 200);
    SPT_ASSERT_STR(spt_jstr(r.json, "name"), "pq");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r.json, "paused")));
    spt_resp_free(&r);

    assert_int_equal(spt_lease_one(port, "pq", NULL, 0, NULL, 0), 0);
    /* Leasing from every queue skips the paused one. */
    r = spt_do(port, "POST", "/v1/lease", "{\"max\":10}", NULL);
    const cJSON *jobs = jobs_of(&r);
    assert_int_equal(cJSON_GetArraySize(jobs), 1);
    SPT_ASSERT_STR(spt_jstr(cJSON_GetArrayItem(jobs, 0), "id"), other);
    spt_resp_free(&r);
    /* Submissions are still accepted. */
    submit(port, "pq", "", NULL);
    assert_int_equal(spt_queue_num(port, "pq", "counts", "queued"), 2);

    r = spt_do(port, "POST", "/v1/queues/pq/resume", "{}", NULL);
    assert_int_equal(r.status, 200);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(r.json, "paused")));
    spt_resp_free(&r);
    leased_t l;
    lease_one(port, "pq", &l);
    assert_string_equal(l.id, id);

    /* A long poll on a paused queue waits; a resume hands it the job. */
    SPT_EXPECT(port, "POST", "/v1/queues/pq/pause", NULL, NULL, 200, NULL);
    int fd = spt_connect(port);
    assert_true(fd >= 0);
    const char *body = "{\"queues\":[\"pq\"],\"wait_ms\":5000}";
    char raw[512];
    int n = snprintf(raw, sizeof(raw),
                     "POST /v1/lease HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     "application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
    long long t0 = spt_now_ms();
    assert_int_equal(spt_send(fd, raw, (size_t)n), 0);
    spt_sleep_ms(200);
    SPT_EXPECT(port, "POST", "/v1/queues/pq/resume", NULL, NULL, 200, NULL);
    assert_int_equal(spt_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(cJSON_GetArraySize(jobs_of(&r)), 1);
    assert_true(spt_now_ms() - t0 < 3000);
    spt_resp_free(&r);
    spt_close(fd);
    SPT_STOP(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lease_queue_order),
        cmocka_unit_test(test_lease_priority_fifo_and_max),
        cmocka_unit_test(test_lease_record),
        cmocka_unit_test(test_lease_validation),
        cmocka_unit_test(test_long_poll),
        cmocka_unit_test(test_long_poll_client_gone),
        cmocka_unit_test(test_lease_client_gone_at_once),
        cmocka_unit_test(test_ack),
        cmocka_unit_test(test_fail_and_retry),
        cmocka_unit_test(test_heartbeat_and_cancel),
        cmocka_unit_test(test_lease_expiry),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_release),
        cmocka_unit_test(test_batch_ack),
        cmocka_unit_test(test_paused_queue),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
