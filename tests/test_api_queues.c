/*
 * test_api_queues.c - black-box tests of the queue and monitoring endpoints of the HTTP API
 * (docs/API.md): queue listing and counts, pause and resume, paging through jobs, purging,
 * the embedded workers running the builtin handlers, health, metrics, events and the page.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/spt.h"

#define ID_MAX 64

static const char *const states[] = {"scheduled", "queued", "running",
                                     "succeeded", "failed", "canceled"};
static const char *const totals[] = {"enqueued", "succeeded", "failed", "retried"};

static void submit(int port, const char *queue, const char *extra, char *id)
{
    char got[ID_MAX];
    assert_int_equal(spt_submit(port, queue, "t", extra, got, sizeof(got)), 201);
    if (id) snprintf(id, ID_MAX, "%s", got);
}

static void cancel(int port, const char *id)
{
    char target[128];
    snprintf(target, sizeof(target), "/v1/jobs/%s", id);
    SPT_EXPECT(port, "DELETE", target, NULL, NULL, 200, NULL);
}

/* Asserts a queue object's shape: every field API.md lists, with integer counts. */
static void check_queue_shape(const cJSON *q, const char *name)
{
    SPT_ASSERT_STR(spt_jstr(q, "name"), name);
    assert_true(cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(q, "paused")));
    const cJSON *counts = cJSON_GetObjectItemCaseSensitive(q, "counts");
    assert_true(cJSON_IsObject(counts));
    for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
        if (spt_jint(counts, states[i]) < 0) fail_msg("counts.%s missing in %s", states[i], name);
    assert_true(spt_jint(q, "oldest_queued_age_ms") >= 0);
    const cJSON *tot = cJSON_GetObjectItemCaseSensitive(q, "totals");
    assert_true(cJSON_IsObject(tot));
    for (size_t i = 0; i < sizeof(totals) / sizeof(totals[0]); i++)
        if (spt_jint(tot, totals[i]) < 0) fail_msg("totals.%s missing in %s", totals[i], name);
}

/* Asserts the six counts of queue, in the order of states[]. */
static void expect_counts(int port, const char *queue, const long long want[6])
{
    char target[160];
    snprintf(target, sizeof(target), "/v1/queues/%s", queue);
    spt_resp_t r = spt_do(port, "GET", target, NULL, NULL);
    assert_int_equal(r.status, 200);
    const cJSON *counts = cJSON_GetObjectItemCaseSensitive(r.json, "counts");
    for (size_t i = 0; i < 6; i++)
        if (spt_jint(counts, states[i]) != want[i])
            fail_msg("%s counts.%s: expected %lld in %s", queue, states[i], want[i], r.body);
    spt_resp_free(&r);
}

static const cJSON *find_queue(const cJSON *list, const char *name)
{
    const cJSON *q;
    cJSON_ArrayForEach(q, list)
    {
        const char *n = spt_jstr(q, "name");
        if (n && strcmp(n, name) == 0) return q;
    }
    return NULL;
}

static void test_queue_list(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    spt_resp_t r = spt_do(port, "GET", "/v1/queues", NULL, NULL);
    assert_int_equal(r.status, 200);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(r.json, "queues");
    assert_true(cJSON_IsArray(list));
    assert_int_equal(cJSON_GetArraySize(list), 0);
    spt_resp_free(&r);

    submit(port, "qa", "", NULL);
    submit(port, "qb", ",\"delay_ms\":600000", NULL);
    SPT_EXPECT(port, "POST", "/v1/queues/qc/pause", NULL, NULL, 200, NULL);
    r = spt_do(port, "GET", "/v1/queues", NULL, NULL);
    assert_int_equal(r.status, 200);
    list = cJSON_GetObjectItemCaseSensitive(r.json, "queues");
    assert_int_equal(cJSON_GetArraySize(list), 3);
    const cJSON *qa = find_queue(list, "qa");
    const cJSON *qb = find_queue(list, "qb");
    const cJSON *qc = find_queue(list, "qc");
    assert_non_null(qa);
    assert_non_null(qb);
    assert_non_null(qc);
    check_queue_shape(qa, "qa");
    check_queue_shape(qb, "qb");
    check_queue_shape(qc, "qc");
    assert_int_equal(spt_jint(cJSON_GetObjectItemCaseSensitive(qa, "counts"), "queued"), 1);
    assert_int_equal(spt_jint(cJSON_GetObjectItemCaseSensitive(qb, "counts"), "scheduled"), 1);
    assert_int_equal(spt_jint(cJSON_GetObjectItemCaseSensitive(qa, "totals"), "enqueued"), 1);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(qc, "paused")));
    assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(qa, "paused")));
    /* Nothing queued: age 0. */
    assert_int_equal(spt_jint(qb, "oldest_queued_age_ms"), 0);
    assert_int_equal(spt_jint(qc, "oldest_queued_age_ms"), 0);
    spt_resp_free(&r);

    /* One queue: the same object. */
    r = spt_do(port, "GET", "/v1/queues/qa", NULL, NULL);
    assert_int_equal(r.status, 200);
    check_queue_shape(r.json, "qa");
    spt_resp_free(&r);
    SPT_STOP(s);
}

static void test_queue_reads_and_names(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    SPT_EXPECT(port, "GET", "/v1/queues/never", NULL, NULL, 404, NULL);
    SPT_EXPECT(port, "GET", "/v1/queues/never/jobs", NULL, NULL, 404, NULL);
    SPT_EXPECT(port, "GET", "/v1/queues/bad!name", NULL, NULL, 400, NULL);
    SPT_EXPECT(port, "GET", "/v1/queues/bad%20name", NULL, NULL, 400, NULL);
    SPT_EXPECT(port, "GET", "/v1/queues/bad!name/jobs", NULL, NULL, 400, NULL);
    SPT_EXPECT(port, "POST", "/v1/queues/bad!name/pause", NULL, NULL, 400, NULL);
    SPT_EXPECT(port, "POST", "/v1/queues/bad!name/resume", NULL, NULL, 400, NULL);
    SPT_EXPECT(port, "DELETE", "/v1/queues/bad!name/jobs?state=failed", NULL, NULL, 400, NULL);
    char name[200], target[256];
    memset(name, 'n', 129);
    name[129] = '\0';
    snprintf(target, sizeof(target), "/v1/queues/%s", name);
    SPT_EXPECT(port, "GET", target, NULL, NULL, 400, NULL);
    name[128] = '\0';
    snprintf(target, sizeof(target), "/v1/queues/%s", name);
    SPT_EXPECT(port, "GET", target, NULL, NULL, 404, NULL);

    /* Pausing a queue never seen creates it, paused, empty. */
    spt_resp_t r = spt_do(port, "POST", "/v1/queues/early/pause", NULL, NULL);
    assert_int_equal(r.status, 200);
    check_queue_shape(r.json, "early");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r.json, "paused")));
    spt_resp_free(&r);
    r = spt_do(port, "GET", "/v1/queues/early", NULL, NULL);
    assert_int_equal(r.status, 200);
    check_queue_shape(r.json, "early");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r.json, "paused")));
    spt_resp_free(&r);
    static const long long zero[6] = {0};
    expect_counts(port, "early", zero);
    SPT_EXPECT(port, "POST", "/v1/queues/early/pause", "{}", NULL, 200, NULL);
    SPT_EXPECT(port, "POST", "/v1/queues/early/pause", "", NULL, 200, NULL);
    SPT_EXPECT(port, "POST", "/v1/queues/early/pause", "[]", NULL, 400, NULL);
    SPT_EXPECT(port, "POST", "/v1/queues/early/pause", "{\"why\":1}", NULL, 400, "why");
    r = spt_do(port, "POST", "/v1/queues/early/resume", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(r.json, "paused")));
    spt_resp_free(&r);
    /* Resuming a queue never seen creates it too. */
    r = spt_do(port, "POST", "/v1/queues/late/resume", NULL, NULL);
    assert_int_equal(r.status, 200);
    check_queue_shape(r.json, "late");
    spt_resp_free(&r);
    SPT_EXPECT(port, "GET", "/v1/queues/late", NULL, NULL, 200, NULL);
    SPT_STOP(s);
}

/* Leases one job from queue into id and lease; with action, posts it with that lease. */
static void lease_and(int port, const char *queue, const char *action, const char *extra, char *id,
                      char *lease)
{
    char target[160], body[256];
    assert_int_equal(spt_lease_one(port, queue, id, ID_MAX, lease, ID_MAX), 1);
    if (!action) return;
    snprintf(target, sizeof(target), "/v1/jobs/%s/%s", id, action);
    snprintf(body, sizeof(body), "{\"lease\":\"%s\"%s}", lease, extra ? extra : "");
    SPT_EXPECT(port, "POST", target, body, NULL, 200, NULL);
}

static void test_counts_follow_transitions(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    char a[ID_MAX], b[ID_MAX], c[ID_MAX], d[ID_MAX], got[ID_MAX], lease_a[ID_MAX], lease[ID_MAX],
        target[160], body[256];
    /* Counts below are in the order scheduled, queued, running, succeeded, failed, canceled. */
    submit(port, "ct", "", a);
    submit(port, "ct", "", b);
    submit(port, "ct", ",\"max_attempts\":2,\"backoff_ms\":60000", c);
    submit(port, "ct", ",\"delay_ms\":600000", d);
    expect_counts(port, "ct", (const long long[6]){1, 3, 0, 0, 0, 0});

    /* The oldest queued job ages. */
    long long deadline = spt_now_ms() + 5000;
    while (spt_queue_num(port, "ct", NULL, "oldest_queued_age_ms") < 100) {
        assert_true(spt_now_ms() < deadline);
        spt_sleep_ms(20);
    }

    lease_and(port, "ct", NULL, NULL, got, lease_a);
    assert_string_equal(got, a);
    expect_counts(port, "ct", (const long long[6]){1, 2, 1, 0, 0, 0});
    cancel(port, b);
    expect_counts(port, "ct", (const long long[6]){1, 1, 1, 0, 0, 1});

    /* c fails once: back to scheduled for its backoff, counted as retried. */
    lease_and(port, "ct", "fail", ",\"error\":\"x\"", got, lease);
    assert_string_equal(got, c);
    expect_counts(port, "ct", (const long long[6]){2, 0, 1, 0, 0, 1});
    assert_int_equal(spt_queue_num(port, "ct", NULL, "oldest_queued_age_ms"), 0);
    assert_int_equal(spt_queue_num(port, "ct", "totals", "retried"), 1);

    snprintf(target, sizeof(target), "/v1/jobs/%s/ack", a);
    snprintf(body, sizeof(body), "{\"lease\":\"%s\",\"result\":true}", lease_a);
    SPT_EXPECT(port, "POST", target, body, NULL, 200, NULL);
    expect_counts(port, "ct", (const long long[6]){2, 0, 0, 1, 0, 1});

    /* c is canceled while it waits, then retried back to queued. */
    cancel(port, c);
    expect_counts(port, "ct", (const long long[6]){1, 0, 0, 1, 0, 2});
    snprintf(target, sizeof(target), "/v1/jobs/%s/retry", c);
    SPT_EXPECT(port, "POST", target, NULL, NULL, 200, NULL);
    expect_counts(port, "ct", (const long long[6]){1, 1, 0, 1, 0, 1});

    /* Now c fails for good. */
    lease_and(port, "ct", "fail", ",\"retry\":false", got, lease);
    assert_string_equal(got, c);
    expect_counts(port, "ct", (const long long[6]){1, 0, 0, 1, 1, 1});

    /* totals count events. */
    assert_int_equal(spt_queue_num(port, "ct", "totals", "enqueued"), 4);
    assert_int_equal(spt_queue_num(port, "ct", "totals", "succeeded"), 1);
    assert_int_equal(spt_queue_num(port, "ct", "totals", "failed"), 1);
    assert_int_equal(spt_queue_num(port, "ct", "totals", "retried"), 1);
    (void)d;
    SPT_STOP(s);
}

/* Pages through queue's jobs with limit, returning the ids in order (caller frees each and the
 * array) and the number of pages in *pages. */
static char **page_all(int port, const char *queue, const char *query, int limit, int *n,
                       int *pages)
{
    char **ids = NULL;
    *n = 0;
    *pages = 0;
    char after[ID_MAX] = "";
    for (;;) {
        char target[512];
        int len =
            snprintf(target, sizeof(target), "/v1/queues/%s/jobs?limit=%d%s", queue, limit, query);
        if (after[0]) snprintf(target + len, sizeof(target) - (size_t)len, "&after=%s", after);
        spt_resp_t r = spt_do(port, "GET", target, NULL, NULL);
        assert_int_equal(r.status, 200);
        (*pages)++;
        assert_true(*pages <= 100);
        const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(r.json, "jobs");
        assert_true(cJSON_IsArray(jobs));
        assert_true(cJSON_GetArraySize(jobs) <= limit);
        const cJSON *j;
        cJSON_ArrayForEach(j, jobs)
        {
            const char *id = spt_jstr(j, "id");
            assert_non_null(id);
            SPT_ASSERT_STR(spt_jstr(j, "queue"), queue);
            assert_non_null(spt_jstr(j, "state"));
            char **grown = realloc(ids, (size_t)(*n + 1) * sizeof(*ids));
            assert_non_null(grown);
            ids = grown;
            ids[*n] = strdup(id);
            assert_non_null(ids[*n]);
            (*n)++;
        }
        const cJSON *next = cJSON_GetObjectItemCaseSensitive(r.json, "next");
        if (cJSON_IsNull(next)) {
            spt_resp_free(&r);
            break;
        }
        assert_true(cJSON_IsString(next));
        snprintf(after, sizeof(after), "%s", next->valuestring);
        spt_resp_free(&r);
    }
    return ids;
}

static void free_ids(char **ids, int n)
{
    for (int i = 0; i < n; i++) free(ids[i]);
    free(ids);
}

static void test_paging(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    char ids[25][ID_MAX];
    for (int i = 0; i < 25; i++) submit(port, "pg", "", ids[i]);

    int n, pages;
    char **got = page_all(port, "pg", "", 10, &n, &pages);
    assert_int_equal(n, 25);
    assert_int_equal(pages, 3);
    for (int i = 0; i < 25; i++) assert_string_equal(got[i], ids[i]);
    free_ids(got, n);

    /* The first page of ten says there is more; a last page says null. */
    spt_resp_t r = spt_do(port, "GET", "/v1/queues/pg/jobs?limit=10", NULL, NULL);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "jobs")), 10);
    assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(r.json, "next")));
    spt_resp_free(&r);
    r = spt_do(port, "GET", "/v1/queues/pg/jobs", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "jobs")), 25);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(r.json, "next")));
    spt_resp_free(&r);

    /* The state filter; without it, every state is listed. */
    cancel(port, ids[3]);
    cancel(port, ids[10]);
    cancel(port, ids[24]);
    got = page_all(port, "pg", "&state=canceled", 2, &n, &pages);
    assert_int_equal(n, 3);
    assert_string_equal(got[0], ids[3]);
    assert_string_equal(got[1], ids[10]);
    assert_string_equal(got[2], ids[24]);
    free_ids(got, n);
    got = page_all(port, "pg", "&state=queued", 1000, &n, &pages);
    assert_int_equal(n, 22);
    assert_int_equal(pages, 1);
    free_ids(got, n);
    got = page_all(port, "pg", "", 7, &n, &pages);
    assert_int_equal(n, 25);
    free_ids(got, n);
    got = page_all(port, "pg", "&state=failed", 10, &n, &pages);
    assert_int_equal(n, 0);
    free_ids(got, n);

    static const char *const bad[] = {
        "limit=0",     "limit=1001", "limit=-1", "limit=abc",       "limit=1.5",
        "state=bogus", "state=",     "sort=asc", "limit=1&limit=2", "state=queued&state=failed",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char target[128];
        snprintf(target, sizeof(target), "/v1/queues/pg/jobs?%s", bad[i]);
        SPT_EXPECT(port, "GET", target, NULL, NULL, 400, NULL);
    }
    SPT_EXPECT(port, "GET", "/v1/queues/pg/jobs?limit=0", NULL, NULL, 400, "limit");
    SPT_EXPECT(port, "GET", "/v1/queues/pg/jobs?sort=asc", NULL, NULL, 400, "sort");
    SPT_EXPECT(port, "GET", "/v1/queues/pg/jobs?limit=1000", NULL, NULL, 200, NULL);
    SPT_EXPECT(port, "GET", "/v1/queues/pg/jobs?limit=1", NULL, NULL, 200, NULL);

    /* The default limit is 100. */
    size_t cap = 150 * 16 + 32;
    char *body = malloc(cap);
    assert_non_null(body);
    size_t len = (size_t)snprintf(body, cap, "{\"jobs\":[");
    for (int i = 0; i < 150; i++)
        len += (size_t)snprintf(body + len, cap - len, "%s{\"type\":\"a\"}", i ? "," : "");
    snprintf(body + len, cap - len, "]}");
    SPT_EXPECT(port, "POST", "/v1/queues/pg150/batch", body, NULL, 201, NULL);
    free(body);
    r = spt_do(port, "GET", "/v1/queues/pg150/jobs", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "jobs")), 100);
    assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(r.json, "next")));
    spt_resp_free(&r);
    got = page_all(port, "pg150", "", 1000, &n, &pages);
    assert_int_equal(n, 150);
    free_ids(got, n);
    SPT_STOP(s);
}

static long long purge(int port, const char *queue, const char *query, int status)
{
    char target[256];
    snprintf(target, sizeof(target), "/v1/queues/%s/jobs%s", queue, query);
    spt_resp_t r = spt_do(port, "DELETE", target, NULL, NULL);
    if (r.status != status)
        fail_msg("DELETE %s: expected %d, got %d %s", target, status, r.status,
                 r.body ? r.body : "");
    long long deleted = spt_jint(r.json, "deleted");
    if (status >= 400) assert_true(spt_error_code(&r)[0] != '\0');
    spt_resp_free(&r);
    return deleted;
}

static void test_purge(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    char ids[6][ID_MAX], running[ID_MAX], target[128];
    submit(port, "pu", ",\"idempotency_key\":\"pk\"", ids[0]);
    for (int i = 1; i < 5; i++) submit(port, "pu", "", ids[i]);
    submit(port, "pu", ",\"delay_ms\":600000", ids[5]);
    cancel(port, ids[0]);
    cancel(port, ids[1]);
    char lease[ID_MAX];
    assert_int_equal(spt_lease_one(port, "pu", running, sizeof(running), lease, sizeof(lease)), 1);
    assert_string_equal(running, ids[2]);
    expect_counts(port, "pu", (const long long[6]){1, 2, 1, 0, 0, 2});

    /* state is required; running jobs are not purged; nothing changes on refusal. */
    purge(port, "pu", "", 400);
    purge(port, "pu", "?state=running", 400);
    purge(port, "pu", "?state=bogus", 400);
    purge(port, "pu", "?state=failed&x=1", 400);
    expect_counts(port, "pu", (const long long[6]){1, 2, 1, 0, 0, 2});

    assert_int_equal(purge(port, "pu", "?state=canceled", 200), 2);
    expect_counts(port, "pu", (const long long[6]){1, 2, 1, 0, 0, 0});
    snprintf(target, sizeof(target), "/v1/jobs/%s", ids[0]);
    SPT_EXPECT(port, "GET", target, NULL, NULL, 404, NULL);
    snprintf(target, sizeof(target), "/v1/jobs/%s", ids[1]);
    SPT_EXPECT(port, "GET", target, NULL, NULL, 404, NULL);
    assert_int_equal(purge(port, "pu", "?state=canceled", 200), 0);
    assert_int_equal(purge(port, "pu", "?state=failed", 200), 0);

    /* A purged job's idempotency key is free again. */
    char again[ID_MAX];
    submit(port, "pu", ",\"idempotency_key\":\"pk\"", again);
    assert_string_not_equal(again, ids[0]);

    assert_int_equal(purge(port, "pu", "?state=queued", 200), 3);
    assert_int_equal(purge(port, "pu", "?state=scheduled", 200), 1);
    expect_counts(port, "pu", (const long long[6]){0, 0, 1, 0, 0, 0});
    assert_int_equal(spt_lease_one(port, "pu", NULL, 0, NULL, 0), 0);

    /* Succeeded jobs too; the running one was never touched. */
    snprintf(target, sizeof(target), "/v1/jobs/%s/ack", running);
    char body[128];
    snprintf(body, sizeof(body), "{\"lease\":\"%s\"}", lease);
    SPT_EXPECT(port, "POST", target, body, NULL, 200, NULL);
    assert_int_equal(purge(port, "pu", "?state=succeeded", 200), 1);
    static const long long zero[6] = {0};
    expect_counts(port, "pu", zero);
    /* Totals are events and stay. */
    assert_int_equal(spt_queue_num(port, "pu", "totals", "enqueued"), 7);
    assert_int_equal(spt_queue_num(port, "pu", "totals", "succeeded"), 1);
    SPT_STOP(s);
}

/* Polls the queue's counts.succeeded + counts.failed until they reach n, at most timeout_ms. */
static void wait_finished(int port, const char *queue, long long n, int timeout_ms)
{
    long long deadline = spt_now_ms() + timeout_ms;
    long long done = 0;
    for (;;) {
        long long ok = spt_queue_num(port, queue, "counts", "succeeded");
        long long bad = spt_queue_num(port, queue, "counts", "failed");
        done = ok + bad;
        if (done >= n) return;
        if (spt_now_ms() >= deadline) break;
        spt_sleep_ms(20);
    }
    fail_msg("queue %s: %lld of %lld jobs finished in time", queue, done, n);
}

static void test_embedded_workers(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, "--workers", "4");
    int port = s.port;
    enum { N = 200 };
    size_t cap = (size_t)N * 64 + 32;
    char *body = malloc(cap);
    assert_non_null(body);
    size_t len = (size_t)snprintf(body, cap, "{\"jobs\":[");
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(body + len, cap - len, "%s{\"type\":\"%s\",\"payload\":{\"i\":%d}}",
                                i ? "," : "", i % 2 ? "echo" : "noop", i);
    snprintf(body + len, cap - len, "]}");
    spt_resp_t r = spt_do(port, "POST", "/v1/queues/emb/batch", body, NULL);
    free(body);
    assert_int_equal(r.status, 201);
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(r.json, "jobs");
    assert_int_equal(cJSON_GetArraySize(jobs), N);
    char noop_id[ID_MAX], echo_id[ID_MAX];
    snprintf(noop_id, sizeof(noop_id), "%s", spt_jstr(cJSON_GetArrayItem(jobs, 10), "id"));
    snprintf(echo_id, sizeof(echo_id), "%s", spt_jstr(cJSON_GetArrayItem(jobs, 11), "id"));
    spt_resp_free(&r);

    /* A big payload through echo keeps every digit. */
    const char *payload = "{\"big\":12345678901234567890123,\"s\":\"\\u0000\\u00e9\","
                          "\"d\":0.1000000000000000000001}";
    char single[512], big_id[ID_MAX];
    snprintf(single, sizeof(single), "{\"type\":\"echo\",\"payload\":%s}", payload);
    r = spt_do(port, "POST", "/v1/queues/emb/jobs", single, NULL);
    assert_int_equal(r.status, 201);
    snprintf(big_id, sizeof(big_id), "%s", spt_jstr(r.json, "id"));
    spt_resp_free(&r);

    wait_finished(port, "emb", N + 1, 60000);
    expect_counts(port, "emb", (const long long[6]){0, 0, 0, N + 1, 0, 0});
    assert_int_equal(spt_queue_num(port, "emb", "totals", "succeeded"), N + 1);
    assert_int_equal(spt_queue_num(port, "emb", "totals", "enqueued"), N + 1);
    assert_int_equal(spt_queue_num(port, "emb", "totals", "failed"), 0);

    char target[128];
    snprintf(target, sizeof(target), "/v1/jobs/%s", noop_id);
    r = spt_do(port, "GET", target, NULL, NULL);
    SPT_ASSERT_STR(spt_jstr(r.json, "state"), "succeeded");
    SPT_ASSERT_JNULL(r.json, "result");
    assert_int_equal(spt_jint(r.json, "attempts"), 1);
    assert_true(spt_jint(r.json, "finished_at") >= spt_jint(r.json, "started_at"));
    assert_non_null(spt_jstr(r.json, "worker"));
    spt_resp_free(&r);
    snprintf(target, sizeof(target), "/v1/jobs/%s", echo_id);
    r = spt_do(port, "GET", target, NULL, NULL);
    assert_true(spt_json_same(r.body, r.body_len, "result", "{\"i\":11}"));
    spt_resp_free(&r);
    snprintf(target, sizeof(target), "/v1/jobs/%s", big_id);
    r = spt_do(port, "GET", target, NULL, NULL);
    assert_true(spt_json_same(r.body, r.body_len, "result", payload));
    spt_resp_free(&r);

    /* sleep runs without blocking the others. */
    char sleep_id[ID_MAX], quick_id[ID_MAX];
    r = spt_do(port, "POST", "/v1/queues/emb2/jobs",
               "{\"type\":\"sleep\",\"payload\":{\"ms\":300}}", NULL);
    assert_int_equal(r.status, 201);
    snprintf(sleep_id, sizeof(sleep_id), "%s", spt_jstr(r.json, "id"));
    spt_resp_free(&r);
    assert_int_equal(spt_submit(port, "emb2", "noop", "", quick_id, sizeof(quick_id)), 201);
    assert_int_equal(spt_wait_state(port, sleep_id, "succeeded", 10000), 0);
    assert_int_equal(spt_wait_state(port, quick_id, "succeeded", 10000), 0);
    SPT_STOP(s);
}

static void test_embedded_failures(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, "--workers", "2");
    int port = s.port;
    char retried[ID_MAX], final[ID_MAX], unknown[ID_MAX];
    assert_int_equal(spt_submit(port, "ef", "fail",
                                ",\"payload\":{\"message\":\"bad thing\",\"retry\":true},"
                                "\"max_attempts\":2,\"backoff_ms\":0",
                                retried, sizeof(retried)),
                     201);
    assert_int_equal(spt_submit(port, "ef", "fail",
                                ",\"payload\":{\"message\":\"no hope\",\"retry\":false},"
                                "\"max_attempts\":5",
                                final, sizeof(final)),
                     201);
    assert_int_equal(
        spt_submit(port, "ef", "no-such-handler", ",\"max_attempts\":1", unknown, sizeof(unknown)),
        201);
    assert_int_equal(spt_wait_state(port, retried, "failed", 20000), 0);
    assert_int_equal(spt_wait_state(port, final, "failed", 20000), 0);
    assert_int_equal(spt_wait_state(port, unknown, "failed", 20000), 0);

    char target[128];
    snprintf(target, sizeof(target), "/v1/jobs/%s", retried);
    spt_resp_t r = spt_do(port, "GET", target, NULL, NULL);
    assert_int_equal(spt_jint(r.json, "attempts"), 2);
    const char *err = spt_jstr(r.json, "last_error");
    if (!err || !strstr(err, "bad thing")) fail_msg("last_error: %s", r.body);
    spt_resp_free(&r);
    snprintf(target, sizeof(target), "/v1/jobs/%s", final);
    r = spt_do(port, "GET", target, NULL, NULL);
    assert_int_equal(spt_jint(r.json, "attempts"), 1);
    err = spt_jstr(r.json, "last_error");
    if (!err || !strstr(err, "no hope")) fail_msg("last_error: %s", r.body);
    spt_resp_free(&r);
    snprintf(target, sizeof(target), "/v1/jobs/%s", unknown);
    r = spt_do(port, "GET", target, NULL, NULL);
    err = spt_jstr(r.json, "last_error");
    if (!err || !*err) fail_msg("an unknown type fails with no error: %s", r.body);
    spt_resp_free(&r);

    assert_int_equal(spt_queue_num(port, "ef", "totals", "failed"), 3);
    assert_int_equal(spt_queue_num(port, "ef", "totals", "retried"), 1);
    assert_int_equal(spt_queue_num(port, "ef", "totals", "succeeded"), 0);
    expect_counts(port, "ef", (const long long[6]){0, 0, 0, 0, 3, 0});

    /* A failed job retried by hand runs again (and fails again). */
    snprintf(target, sizeof(target), "/v1/jobs/%s/retry", final);
    SPT_EXPECT(port, "POST", target, NULL, NULL, 200, NULL);
    snprintf(target, sizeof(target), "/v1/jobs/%s?wait_ms=10000", final);
    long long deadline = spt_now_ms() + 20000;
    for (;;) {
        r = spt_do(port, "GET", target, NULL, NULL);
        bool done = r.status == 200 && spt_jstr(r.json, "state") &&
                    strcmp(spt_jstr(r.json, "state"), "failed") == 0 &&
                    spt_jint(r.json, "attempts") == 1;
        spt_resp_free(&r);
        if (done) break;
        assert_true(spt_now_ms() < deadline);
    }
    assert_int_equal(spt_queue_num(port, "ef", "totals", "failed"), 4);
    SPT_STOP(s);
}

static void test_shutdown_with_running_job(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, "--workers", "1", "--shutdown-grace", "300ms");
    int port = s.port;
    char id[ID_MAX];
    assert_int_equal(spt_submit(port, "sd", "sleep", ",\"payload\":{\"ms\":60000}", id, sizeof(id)),
                     201);
    assert_int_equal(spt_wait_state(port, id, "running", 10000), 0);
    /* The job outlasts the grace period: it is handed back and the server still exits 0
     * (spt_stop gives up long before the job would end). */
    SPT_STOP(s);
}

/* Starts spool-server expecting it to exit at once; returns its code, its stdout and stderr. */
static int run_to_exit(const char *const *args, const char *const *env, char **out, char **err)
{
    spt_proc_t p;
    assert_int_equal(spt_start(&p, "spool-server", args, env, false), 0);
    return spt_finish(&p, 15000, out, err);
}

static void test_server_flags(void **state)
{
    (void)state;
    char *out, *err;
    const char *const help[] = {"--help", NULL};
    assert_int_equal(run_to_exit(help, NULL, &out, &err), 0);
    static const char *const flags[] = {"--listen",        "--workers",   "--token-file",
                                        "--retention",     "--max-depth", "--max-body",
                                        "--shutdown-grace"};
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
        if (!strstr(out, flags[i]) && !strstr(err, flags[i]))
            fail_msg("--help does not list %s:\n%s%s", flags[i], out, err);
    free(out);
    free(err);
    const char *const version[] = {"--version", NULL};
    assert_int_equal(run_to_exit(version, NULL, &out, &err), 0);
    assert_true(strpbrk(out, "0123456789") != NULL);
    free(out);
    free(err);

    /* A bad value stops the start with status 2 and names the flag or its variable. */
    struct {
        const char *args[3];
        const char *env;
        const char *names;
    } bad[] = {
        {{"--max-depth", "abc", NULL}, NULL, "--max-depth"},
        {{"--max-body", "5x", NULL}, NULL, "--max-body"},
        {{"--retention", "10q", NULL}, NULL, "--retention"},
        {{"--workers", "-1", NULL}, NULL, "--workers"},
        {{NULL}, "SPOOL_MAX_DEPTH=abc", "SPOOL_MAX_DEPTH"},
        {{NULL}, "SPOOL_SHUTDOWN_GRACE=soon", "SPOOL_SHUTDOWN_GRACE"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *const env[] = {bad[i].env, NULL};
        int code = run_to_exit(bad[i].args, bad[i].env ? env : NULL, &out, &err);
        if (code != 2 || !strstr(err, bad[i].names))
            fail_msg("bad %s: exit %d, stderr:\n%s", bad[i].names, code, err);
        free(out);
        free(err);
    }

    /* A variable sets what its flag would; the flag wins over it. */
    spt_proc_t s;
    const char *const depth_env[] = {"SPOOL_MAX_DEPTH=1", NULL};
    assert_int_equal(spt_start(&s, "spool-server", NULL, depth_env, true), 0);
    submit(s.port, "fl", "", NULL);
    SPT_EXPECT(s.port, "POST", "/v1/queues/fl/jobs", "{\"type\":\"t\"}", NULL, 429, NULL);
    SPT_STOP(s);
    const char *const depth_args[] = {"--max-depth", "2", NULL};
    assert_int_equal(spt_start(&s, "spool-server", depth_args, depth_env, true), 0);
    submit(s.port, "fl", "", NULL);
    submit(s.port, "fl", "", NULL);
    SPT_EXPECT(s.port, "POST", "/v1/queues/fl/jobs", "{\"type\":\"t\"}", NULL, 429, NULL);
    SPT_STOP(s);
}

static void test_health(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    spt_resp_t r = spt_do(port, "GET", "/healthz", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 2);
    assert_string_equal(r.body, "ok");
    const char *ct = spt_header(&r, "Content-Type");
    assert_non_null(ct);
    assert_true(strncmp(ct, "text/plain", 10) == 0);
    spt_resp_free(&r);
    r = spt_do(port, "GET", "/readyz", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok");
    spt_resp_free(&r);
    SPT_STOP(s);
}

static void test_metrics(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    submit(port, "mq", "", NULL);
    SPT_EXPECT(port, "GET", "/v1/queues", NULL, NULL, 200, NULL);
    spt_resp_t r = spt_do(port, "GET", "/metrics", NULL, NULL);
    if (r.status != 200) fail_msg("GET /metrics: expected 200, got %d %s", r.status, r.body);
    const char *ct = spt_header(&r, "Content-Type");
    assert_non_null(ct);
    assert_true(strncmp(ct, "text/plain", 10) == 0);
    static const char *const names[] = {
        "spool_queue_jobs{",
        "spool_jobs_total{",
        "spool_job_wait_seconds",
        "spool_job_run_seconds",
        "spool_http_requests_total{",
        "spool_http_request_duration_seconds",
        "queue=\"mq\"",
        "event=\"enqueued\"",
        "state=\"queued\"",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (!strstr(r.body, names[i])) fail_msg("/metrics lacks %s:\n%s", names[i], r.body);
    spt_resp_free(&r);
    SPT_STOP(s);
}

static void test_events(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    submit(port, "ev", "", NULL);
    int fd = spt_connect(port);
    assert_true(fd >= 0);
    const char *req = "GET /v1/events?queue=ev HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    assert_int_equal(spt_send(fd, req, strlen(req)), 0);
    if (!spt_recv_until(fd, "text/event-stream", 5000)) {
        spt_resp_t r;
        spt_close(fd);
        fd = -1;
        assert_int_equal(spt_request(port, "GET", "/v1/events?queue=ev", NULL, NULL, &r), 0);
        fail_msg("GET /v1/events is not an event stream: %d %s", r.status, r.body);
    }
    assert_true(spt_recv_until(fd, "event: counts", 5000));
    assert_true(spt_recv_until(fd, "\"ev\"", 5000));
    char id[ID_MAX];
    submit(port, "ev", "", id);
    assert_true(spt_recv_until(fd, "event: job", 5000));
    assert_true(spt_recv_until(fd, id, 5000));
    spt_close(fd);
    SPT_EXPECT(port, "GET", "/v1/events?bogus=1", NULL, NULL, 400, "bogus");
    SPT_STOP(s);
}

static void test_dashboard(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    spt_resp_t r = spt_do(s.port, "GET", "/", NULL, NULL);
    if (r.status != 200) fail_msg("GET /: expected 200, got %d %s", r.status, r.body);
    const char *ct = spt_header(&r, "Content-Type");
    assert_non_null(ct);
    assert_true(strncmp(ct, "text/html", 9) == 0);
    assert_true(r.body_len > 0);
    spt_resp_free(&r);
    SPT_STOP(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_queue_list),
        cmocka_unit_test(test_queue_reads_and_names),
        cmocka_unit_test(test_counts_follow_transitions),
        cmocka_unit_test(test_paging),
        cmocka_unit_test(test_purge),
        cmocka_unit_test(test_embedded_workers),
        cmocka_unit_test(test_embedded_failures),
        cmocka_unit_test(test_shutdown_with_running_job),
        cmocka_unit_test(test_server_flags),
        cmocka_unit_test(test_health),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_events),
        cmocka_unit_test(test_dashboard),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
