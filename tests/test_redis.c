/*
 * test_redis.c - the Redis backend with real processes: two servers and two spool-workers on
 * one Redis doing each job exactly once, a long poll on one server woken by a submission to
 * the other, Redis restarted mid-load with AOF on (nothing accepted lost, 503 while down,
 * recovery without restarting Spool), the script reloaded after SCRIPT FLUSH, a Redis that
 * may evict keys refused at start, and a password in the URL.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/spt.h"

#define WAIT_MS 30000

static void redis_url(const spt_redis_t *r, char *url, size_t cap)
{
    snprintf(url, cap, "redis://127.0.0.1:%d", r->port);
}

/* One command on a new connection; the reply's type and text (or integer) for assertions. */
static redisReply *redis_do(int port, const char *cmd)
{
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    redisReply *r = redisCommand(c, cmd);
    redisFree(c);
    assert_non_null(r);
    return r;
}

static void server_start(spt_proc_t *p, const char *url)
{
    SPT_START(*p, "--backend", url, "--log-level", "warn");
}

/* Waits until the queue has `want` jobs in `state` (via server port), at most WAIT_MS. */
static void wait_count(int port, const char *queue, const char *state, long long want)
{
    long long deadline = spt_now_ms() + WAIT_MS;
    long long n = -1;
    while (spt_now_ms() < deadline) {
        n = spt_queue_num(port, queue, "counts", state);
        if (n == want) return;
        spt_sleep_ms(20);
    }
    fail_msg("queue %s: %lld jobs %s, expected %lld", queue, n, state, want);
}

static void test_refuses_evicting_redis(void **state)
{
    (void)state;
    spt_redis_t r;
    const char *extra[] = {"--maxmemory-policy", "allkeys-lru", NULL};
    assert_int_equal(spt_redis_start(&r, extra), 0);
    char url[64];
    redis_url(&r, url, sizeof url);
    const char *args[] = {"--listen", "127.0.0.1:0", "--backend", url, NULL};
    spt_proc_t p;
    assert_int_equal(spt_start(&p, "spool-server", args, NULL, false), 0);
    char *err = NULL;
    int code = spt_finish(&p, 20000, NULL, &err);
    assert_int_equal(code, 2);
    assert_non_null(err);
    if (!strstr(err, "maxmemory-policy") || !strstr(err, "evict"))
        fail_msg("the refusal does not say why: %s", err);
    free(err);

    /* A worker refuses it too. */
    const char *wargs[] = {"--backend", url, NULL};
    assert_int_equal(spt_start(&p, "spool-worker", wargs, NULL, false), 0);
    code = spt_finish(&p, 20000, NULL, &err);
    assert_int_equal(code, 2);
    assert_non_null(strstr(err, "maxmemory-policy"));
    free(err);

    /* With noeviction the same Redis is accepted. */
    freeReplyObject(redis_do(r.port, "CONFIG SET maxmemory-policy noeviction"));
    spt_proc_t s;
    server_start(&s, url);
    SPT_EXPECT(s.port, "GET", "/readyz", NULL, NULL, 200, NULL);
    SPT_STOP(s);
    assert_int_equal(spt_redis_stop(&r, false), 0);
}

static void test_two_servers_two_workers(void **state)
{
    (void)state;
    spt_redis_t r;
    assert_int_equal(spt_redis_start(&r, NULL), 0);
    char url[64];
    redis_url(&r, url, sizeof url);
    spt_proc_t s[2], w[2];
    server_start(&s[0], url);
    server_start(&s[1], url);
    for (int i = 0; i < 2; i++) {
        const char *args[] = {"--backend", url, "--concurrency", "8", "--log-level", "warn", NULL};
        assert_int_equal(spt_start(&w[i], "spool-worker", args, NULL, false), 0);
    }
    enum { N = 300 };
    char(*ids)[32] = calloc(N, 32);
    assert_non_null(ids);
    for (int i = 0; i < N; i++) {
        char extra[64];
        snprintf(extra, sizeof extra, ",\"payload\":{\"n\":%d}", i);
        assert_int_equal(spt_submit(s[i % 2].port, "shared", "echo", extra, ids[i], 32), 201);
    }
    wait_count(s[0].port, "shared", "succeeded", N);
    /* Both servers see the same queue, every job done once, by its one attempt. */
    assert_int_equal(spt_queue_num(s[1].port, "shared", "counts", "succeeded"), N);
    assert_int_equal(spt_queue_num(s[1].port, "shared", "totals", "enqueued"), N);
    assert_int_equal(spt_queue_num(s[1].port, "shared", "totals", "retried"), 0);
    for (int i = 0; i < N; i++) {
        char target[64];
        snprintf(target, sizeof target, "/v1/jobs/%s", ids[i]);
        spt_resp_t g = spt_do(s[(i + 1) % 2].port, "GET", target, NULL, NULL);
        assert_int_equal(g.status, 200);
        SPT_ASSERT_STR(spt_jstr(g.json, "state"), "succeeded");
        assert_int_equal(spt_jint(g.json, "attempts"), 1);
        char want[64];
        snprintf(want, sizeof want, "{\"n\":%d}", i);
        assert_true(spt_json_same(g.body, g.body_len, "result", want));
        spt_resp_free(&g);
    }
    free(ids);
    for (int i = 0; i < 2; i++) assert_int_equal(spt_stop(&w[i]), 0);

    /* A long poll on one server is woken by a submission to the other. */
    spt_resp_t sub = spt_do(s[1].port, "POST", "/v1/queues/wake/jobs", "{\"type\":\"t\"}", NULL);
    assert_int_equal(sub.status, 201);
    spt_resp_free(&sub);
    char id[32], lease[32];
    assert_int_equal(spt_lease_one(s[0].port, "wake", id, sizeof id, lease, sizeof lease), 1);
    int fd = spt_connect(s[0].port);
    assert_true(fd >= 0);
    const char *body = "{\"queues\":[\"wake\"],\"wait_ms\":20000}";
    char req[512];
    int len = snprintf(req, sizeof req,
                       "POST /v1/lease HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                       "Content-Length: %zu\r\n\r\n%s",
                       strlen(body), body);
    assert_int_equal(spt_send(fd, req, (size_t)len), 0);
    spt_sleep_ms(200); /* the poll is parked either way; this lets it reach the server first */
    char newid[32];
    assert_int_equal(spt_submit(s[1].port, "wake", "t", "", newid, sizeof newid), 201);
    spt_resp_t lr;
    assert_int_equal(spt_read_response(fd, &lr, false), 0);
    assert_int_equal(lr.status, 200);
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(lr.json, "jobs");
    assert_int_equal(cJSON_GetArraySize(jobs), 1);
    SPT_ASSERT_STR(spt_jstr(cJSON_GetArrayItem(jobs, 0), "id"), newid);
    spt_resp_free(&lr);
    spt_close(fd);

    /* A delayed job becomes queued with nobody submitting: the reaper's timer promotes it. */
    char did[32];
    assert_int_equal(spt_submit(s[0].port, "later", "t", ",\"delay_ms\":200", did, sizeof did),
                     201);
    assert_int_equal(spt_wait_state(s[1].port, did, "queued", WAIT_MS), 0);

    SPT_STOP(s[0]);
    SPT_STOP(s[1]);
    assert_int_equal(spt_redis_stop(&r, false), 0);
}

static void test_redis_restart(void **state)
{
    (void)state;
    spt_redis_t r;
    /* Every write synced: a Redis killed outright still has every job it acknowledged. */
    const char *extra[] = {"--appendfsync", "always", NULL};
    assert_int_equal(spt_redis_start(&r, extra), 0);
    char url[64];
    redis_url(&r, url, sizeof url);
    spt_proc_t s;
    server_start(&s, url);

    enum { MAX = 400 };
    char(*ids)[32] = calloc(MAX, 32);
    assert_non_null(ids);
    int accepted = 0;
    for (int i = 0; i < 100; i++)
        if (spt_submit(s.port, "load", "t", "", ids[accepted], 32) == 201) accepted++;
    assert_int_equal(accepted, 100);

    kill(r.pid, SIGKILL);
    assert_int_equal(spt_redis_stop(&r, true), 0);
    /* While Redis is down: 503 with Retry-After for submissions, /readyz 503. */
    for (int i = 0; i < 20; i++) {
        spt_resp_t a = spt_do(s.port, "POST", "/v1/queues/load/jobs", "{\"type\":\"t\"}", NULL);
        assert_int_equal(a.status, 503);
        assert_non_null(spt_header(&a, "Retry-After"));
        spt_resp_free(&a);
    }
    SPT_EXPECT(s.port, "GET", "/readyz", NULL, NULL, 503, NULL);

    assert_int_equal(spt_redis_restart(&r), 0);
    long long deadline = spt_now_ms() + WAIT_MS;
    int ready = 0;
    while (spt_now_ms() < deadline) {
        spt_resp_t a = spt_do(s.port, "GET", "/readyz", NULL, NULL);
        ready = a.status;
        spt_resp_free(&a);
        if (ready == 200) break;
        spt_sleep_ms(20);
    }
    assert_int_equal(ready, 200);
    for (int i = 0; i < 100; i++)
        if (spt_submit(s.port, "load", "t", "", ids[accepted], 32) == 201) accepted++;
    assert_int_equal(accepted, 200);
    /* Nothing accepted was lost. */
    for (int i = 0; i < accepted; i++) {
        char target[64];
        snprintf(target, sizeof target, "/v1/jobs/%s", ids[i]);
        SPT_EXPECT(s.port, "GET", target, NULL, NULL, 200, NULL);
    }
    assert_int_equal(spt_queue_num(s.port, "load", "counts", "queued"), accepted);
    free(ids);
    SPT_STOP(s);
    assert_int_equal(spt_redis_stop(&r, false), 0);
}

static void test_script_flush(void **state)
{
    (void)state;
    spt_redis_t r;
    assert_int_equal(spt_redis_start(&r, NULL), 0);
    char url[64];
    redis_url(&r, url, sizeof url);
    spt_proc_t s;
    server_start(&s, url);
    char id[32];
    assert_int_equal(spt_submit(s.port, "f", "t", "", id, sizeof id), 201);
    redisReply *rep = redis_do(r.port, "SCRIPT FLUSH");
    assert_int_equal(rep->type, REDIS_REPLY_STATUS);
    freeReplyObject(rep);
    /* The next operations find no script, load it again and go on. */
    char id2[32];
    assert_int_equal(spt_submit(s.port, "f", "t", "", id2, sizeof id2), 201);
    char lid[32], lease[32];
    assert_int_equal(spt_lease_one(s.port, "f", lid, sizeof lid, lease, sizeof lease), 1);
    SPT_ASSERT_STR(lid, id);
    assert_int_equal(spt_queue_num(s.port, "f", "counts", "running"), 1);
    assert_int_equal(spt_queue_num(s.port, "f", "counts", "queued"), 1);
    SPT_STOP(s);
    assert_int_equal(spt_redis_stop(&r, false), 0);
}

/* Exits with code 2 and stderr naming `why`: a start refused for its URL. */
static void expect_refused(const char *bin, const char *url, const char *why)
{
    const char *args[] = {"--listen", "127.0.0.1:0", "--backend", url, NULL};
    spt_proc_t p;
    bool server = strcmp(bin, "spool-server") == 0;
    assert_int_equal(spt_start(&p, bin, server ? args : args + 2, NULL, false), 0);
    char *err = NULL;
    assert_int_equal(spt_finish(&p, 20000, NULL, &err), 2);
    assert_non_null(err);
    if (!strstr(err, why)) fail_msg("%s did not say '%s': %s", bin, why, err);
    free(err);
}

static void test_password(void **state)
{
    (void)state;
    spt_redis_t r;
    assert_int_equal(spt_redis_start(&r, NULL), 0);
    freeReplyObject(redis_do(r.port, "CONFIG SET requirepass p@ss:w/rd%"));
    char url[160];

    /* Without the password, or with a wrong one, a server and a worker refuse to start. */
    redis_url(&r, url, sizeof url);
    expect_refused("spool-server", url, "requires a password");
    expect_refused("spool-worker", url, "requires a password");
    snprintf(url, sizeof url, "redis://:nope@127.0.0.1:%d", r.port);
    expect_refused("spool-server", url, "refused the URL's credentials");
    snprintf(url, sizeof url, "redis://default:p%%40ss:w/rd%%25@127.0.0.1:%d", r.port);
    expect_refused("spool-server", url, "bad port");

    /* Percent-encoded, with the default user named or not, and a database: it works, and the
     * password is not written to the log. */
    const char *forms[] = {"redis://:p%%40ss%%3Aw%%2Frd%%25@127.0.0.1:%d/2",
                           "redis://default:p%%40ss%%3Aw%%2Frd%%25@127.0.0.1:%d/2"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(url, sizeof url, forms[i], r.port);
        spt_proc_t s;
        SPT_START(s, "--backend", url, "--log-level", "info");
        SPT_EXPECT(s.port, "GET", "/readyz", NULL, NULL, 200, NULL);
        char id[32];
        assert_int_equal(spt_submit(s.port, "pw", "t", "", id, sizeof id), 201);
        char *log = spt_log(&s);
        assert_non_null(log);
        assert_non_null(strstr(log, "backend redis://127.0.0.1:"));
        assert_null(strstr(log, "p@ss"));
        assert_null(strstr(log, "%40"));
        free(log);
        SPT_STOP(s);
    }
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r.port, tv);
    assert_non_null(c);
    redisReply *rep = redisCommand(c, "AUTH %s", "p@ss:w/rd%");
    assert_int_equal(rep->type, REDIS_REPLY_STATUS);
    freeReplyObject(rep);
    rep = redisCommand(c, "SELECT 2");
    freeReplyObject(rep);
    rep = redisCommand(c, "HGET spool:{pw}:stats enq");
    assert_int_equal(rep->type, REDIS_REPLY_STRING);
    SPT_ASSERT_STR(rep->str, "2");
    freeReplyObject(rep);
    redisFree(c);
    assert_int_equal(spt_redis_stop(&r, false), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refuses_evicting_redis),
        cmocka_unit_test(test_two_servers_two_workers),
        cmocka_unit_test(test_redis_restart),
        cmocka_unit_test(test_script_flush),
        cmocka_unit_test(test_password),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
