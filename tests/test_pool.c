/*
 * test_pool.c - the worker pool (worker/pool.c) and the built-in handlers
 * (worker/handler_builtin.c), run against the real memory backend on a real libuv loop.
 *
 * Every wait runs the loop until a condition holds, bounded by a deadline timer whose firing
 * fails the test. The backend's observer follows each job's state changes, which is how the
 * tests count leases, finishes and jobs running at once.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "backend_memory.h"
#include "engine.h"
#include "handler.h"
#include "pool.h"

#define MAX_JOBS 2048
#define QUEUE "work"

typedef struct {
    uv_loop_t loop;
    sp_backend_t *b;
    sp_pool_t *pool;
    size_t concurrency;
    uv_timer_t deadline;
    bool expired;

    /* From the observer, indexed by job id (ids start at 1). */
    sp_state_t state[MAX_JOBS];
    unsigned leases[MAX_JOBS];
    unsigned succeeded[MAX_JOBS];
    size_t nsucceeded, nfailed, ncanceled;
    size_t running_now, running_max;
    bool check_running; /* compare sp_pool_running with the observed count on every turn */
    bool running_mismatch;
} fx_t;

/* ---- fixture ----------------------------------------------------------------------------- */

static void observe(void *ud, const sp_jobrec_t *job, int from)
{
    fx_t *fx = ud;
    if (job->id >= MAX_JOBS) return;
    fx->state[job->id] = job->state;
    if (job->state == SP_STATE_RUNNING) {
        fx->leases[job->id]++;
        fx->running_now++;
        if (fx->running_now > fx->running_max) fx->running_max = fx->running_now;
    }
    if (from == (int)SP_STATE_RUNNING) fx->running_now--;
    switch (job->state) {
    case SP_STATE_SUCCEEDED:
        fx->succeeded[job->id]++;
        fx->nsucceeded++;
        break;
    case SP_STATE_FAILED:
        fx->nfailed++;
        break;
    case SP_STATE_CANCELED:
        fx->ncanceled++;
        break;
    default:
        break;
    }
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    if (!fx) return -1;
    if (uv_loop_init(&fx->loop) != 0) {
        free(fx);
        return -1;
    }
    sp_engine_opts_t eo;
    sp_engine_opts_default(&eo);
    fx->b = sp_backend_memory_new(&fx->loop, &eo);
    if (!fx->b) {
        uv_loop_close(&fx->loop);
        free(fx);
        return -1;
    }
    sp_backend_memory_observe(fx->b, observe, fx);
    uv_timer_init(&fx->loop, &fx->deadline);
    fx->deadline.data = fx;
    *state = fx;
    return 0;
}

static void flag_set(void *ud)
{
    *(bool *)ud = true;
}

static void deadline_fired(uv_timer_t *t)
{
    ((fx_t *)t->data)->expired = true;
}

static void check_turn(fx_t *fx)
{
    if (!fx->pool) return;
    size_t n = sp_pool_running(fx->pool);
    if (n > fx->concurrency) fx->running_mismatch = true;
    if (fx->check_running && n != fx->running_now) fx->running_mismatch = true;
}

/* Runs the loop until pred holds or timeout_ms pass; returns whether pred holds. */
static bool run_until(fx_t *fx, bool (*pred)(fx_t *, const void *), const void *arg,
                      uint64_t timeout_ms)
{
    fx->expired = false;
    uv_timer_start(&fx->deadline, deadline_fired, timeout_ms, 0);
    while (!pred(fx, arg) && !fx->expired) {
        uv_run(&fx->loop, UV_RUN_ONCE);
        check_turn(fx);
    }
    uv_timer_stop(&fx->deadline);
    return pred(fx, arg);
}

static bool pred_flag(fx_t *fx, const void *arg)
{
    (void)fx;
    return *(const bool *)arg;
}

static void pool_stop_and_wait(fx_t *fx, int64_t grace_ms, uint64_t timeout_ms)
{
    bool stopped = false;
    sp_pool_t *p = fx->pool;
    /* The pool frees itself before `stopped` is seen: nothing may look at it meanwhile. */
    fx->pool = NULL;
    sp_pool_stop(p, grace_ms, flag_set, &stopped);
    assert_true(run_until(fx, pred_flag, &stopped, timeout_ms));
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    if (fx->pool) pool_stop_and_wait(fx, 0, 10000);
    bool closed = false;
    fx->b->ops->close(fx->b, flag_set, &closed);
    bool ok = run_until(fx, pred_flag, &closed, 10000);
    uv_close((uv_handle_t *)&fx->deadline, NULL);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&fx->loop);
    free(fx);
    assert_true(ok);
    assert_int_equal(rc, 0);
    return 0;
}

static void pool_start(fx_t *fx, size_t concurrency, const char *name)
{
    static const char *const queues[] = {QUEUE};
    sp_pool_opts_t o = {
        .concurrency = concurrency,
        .queues = queues,
        .nqueues = 1,
        .name = name,
        .lease_wait_ms = 30000,
    };
    fx->concurrency = concurrency;
    fx->pool = sp_pool_new(&fx->loop, fx->b, &o);
    assert_non_null(fx->pool);
    assert_int_equal(sp_pool_start(fx->pool), 0);
}

/* ---- jobs -------------------------------------------------------------------------------- */

typedef struct {
    uint32_t max_attempts, timeout_ms, backoff_ms;
} job_opts_t;

typedef struct {
    bool answered;
    int status;
    uint64_t id;
} submit_res_t;

static void submitted(void *ud, int status, const char *why, const sp_jobrec_t *job, bool existed)
{
    (void)why;
    (void)existed;
    submit_res_t *r = ud;
    r->answered = true;
    r->status = status;
    if (job) r->id = job->id;
}

static bool pred_submitted(fx_t *fx, const void *arg)
{
    (void)fx;
    return ((const submit_res_t *)arg)->answered;
}

static uint64_t submit(fx_t *fx, const char *type, const char *payload, const job_opts_t *jo)
{
    sp_job_spec_t spec;
    memset(&spec, 0, sizeof spec);
    size_t tl = strlen(type);
    assert_true(tl <= SP_NAME_MAX);
    memcpy(spec.type, type, tl + 1);
    spec.type_len = tl;
    spec.payload = payload ? payload : "null";
    spec.payload_len = strlen(spec.payload);
    spec.priority = SP_DEFAULT_PRIORITY;
    spec.run_at = sp_now_ms();
    spec.delayed = false;
    spec.max_attempts = jo && jo->max_attempts ? jo->max_attempts : SP_DEFAULT_MAX_ATTEMPTS;
    spec.timeout_ms = jo && jo->timeout_ms ? jo->timeout_ms : SP_DEFAULT_TIMEOUT_MS;
    spec.backoff_ms = jo ? jo->backoff_ms : SP_DEFAULT_BACKOFF_MS;
    submit_res_t r = {0};
    fx->b->ops->submit(fx->b, QUEUE, strlen(QUEUE), &spec, submitted, &r);
    assert_true(run_until(fx, pred_submitted, &r, 5000));
    assert_int_equal(r.status, 0);
    assert_true(r.id > 0 && r.id < MAX_JOBS);
    return r.id;
}

/* A job record, copied out of the backend's callback. */
typedef struct {
    bool answered;
    int status;
    sp_state_t state;
    uint32_t attempts;
    bool has_error, has_result, has_worker;
    char last_error[512];
    char result[1024];
    size_t result_len;
    char worker[SP_WORKER_MAX + 1];
} snap_t;

static void copy_text(char *dst, size_t cap, const char *src, size_t len)
{
    size_t n = len < cap - 1 ? len : cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void got_job(void *ud, int status, const char *why, const sp_jobrec_t *job)
{
    (void)why;
    snap_t *s = ud;
    s->answered = true;
    s->status = status;
    if (status != 0 || !job) return;
    s->state = job->state;
    s->attempts = job->attempts;
    s->has_error = job->last_error != NULL;
    if (job->last_error)
        copy_text(s->last_error, sizeof s->last_error, job->last_error, job->last_error_len);
    s->has_result = job->result != NULL;
    if (job->result) {
        copy_text(s->result, sizeof s->result, job->result, job->result_len);
        s->result_len = job->result_len;
    }
    s->has_worker = job->worker != NULL;
    if (job->worker) copy_text(s->worker, sizeof s->worker, job->worker, job->worker_len);
}

static bool pred_got(fx_t *fx, const void *arg)
{
    (void)fx;
    return ((const snap_t *)arg)->answered;
}

static snap_t get_job(fx_t *fx, uint64_t id)
{
    snap_t s;
    memset(&s, 0, sizeof s);
    sp_be_wait_t *w = fx->b->ops->get(fx->b, id, 0, got_job, &s);
    (void)w;
    assert_true(run_until(fx, pred_got, &s, 5000));
    assert_int_equal(s.status, 0);
    return s;
}

typedef struct {
    uint64_t id;
    sp_state_t state;
} want_state_t;

static bool pred_state(fx_t *fx, const void *arg)
{
    const want_state_t *w = arg;
    return fx->state[w->id] == w->state;
}

static void wait_state(fx_t *fx, uint64_t id, sp_state_t st, uint64_t timeout_ms)
{
    want_state_t w = {id, st};
    assert_true(run_until(fx, pred_state, &w, timeout_ms));
}

static bool pred_finished(fx_t *fx, const void *arg)
{
    return fx->nsucceeded + fx->nfailed + fx->ncanceled >= *(const size_t *)arg;
}

static void wait_finished(fx_t *fx, size_t n, uint64_t timeout_ms)
{
    assert_true(run_until(fx, pred_finished, &n, timeout_ms));
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_noop_each_once(void **state)
{
    fx_t *fx = *state;
    job_opts_t jo = {3, 30000, 0};
    uint64_t ids[1000];
    /* Half wait before the pool starts (leased in batches), half arrive while it waits in its
     * long poll (each submission wakes it). */
    for (size_t i = 0; i < 500; i++) ids[i] = submit(fx, "noop", NULL, &jo);
    pool_start(fx, 100, "test");
    for (size_t i = 500; i < 1000; i++) ids[i] = submit(fx, "noop", NULL, &jo);
    wait_finished(fx, 1000, 30000);
    assert_int_equal(fx->nsucceeded, 1000);
    assert_int_equal(fx->nfailed + fx->ncanceled, 0);
    for (size_t i = 0; i < 1000; i++) {
        assert_int_equal(fx->leases[ids[i]], 1);
        assert_int_equal(fx->succeeded[ids[i]], 1);
    }
    snap_t s = get_job(fx, ids[999]);
    assert_int_equal(s.state, SP_STATE_SUCCEEDED);
    assert_int_equal(s.attempts, 1);
    assert_true(!s.has_result || strcmp(s.result, "null") == 0);
    assert_false(fx->running_mismatch);
    assert_int_equal(sp_pool_running(fx->pool), 0);
}

static void test_echo_returns_payload(void **state)
{
    fx_t *fx = *state;
    static const char payload[] =
        "{\"n\":123456789012345678901234567890,\"d\":0.10000000000000000000001,"
        "\"s\":\"caf\\u00e9 \\u0000 \\ud83d\\ude00\",\"a\":[1,[2,{\"b\":null}]]}";
    pool_start(fx, 4, "test");
    uint64_t id = submit(fx, "echo", payload, NULL);
    uint64_t id_null = submit(fx, "echo", NULL, NULL);
    wait_finished(fx, 2, 10000);
    snap_t s = get_job(fx, id);
    assert_int_equal(s.state, SP_STATE_SUCCEEDED);
    assert_true(s.has_result);
    assert_int_equal(s.result_len, strlen(payload));
    assert_string_equal(s.result, payload);
    s = get_job(fx, id_null);
    assert_int_equal(s.state, SP_STATE_SUCCEEDED);
    assert_true(!s.has_result || strcmp(s.result, "null") == 0);
}

static void test_sleep_concurrent(void **state)
{
    fx_t *fx = *state;
    for (int i = 0; i < 500; i++) submit(fx, "sleep", "{\"ms\": 200}", NULL);
    int64_t t0 = sp_now_ms();
    pool_start(fx, 500, "test");
    wait_finished(fx, 500, 20000);
    int64_t took = sp_now_ms() - t0;
    assert_int_equal(fx->nsucceeded, 500);
    /* One after another they would take 100 s; together a fraction of a second. */
    assert_true(took < 5000);
    assert_true(fx->running_max <= 500);
    assert_false(fx->running_mismatch);
}

static void test_sleep_payloads(void **state)
{
    fx_t *fx = *state;
    job_opts_t jo = {3, 30000, 0};
    pool_start(fx, 8, "test");
    uint64_t bad_str = submit(fx, "sleep", "{\"ms\": \"soon\"}", &jo);
    uint64_t bad_neg = submit(fx, "sleep", "{\"ms\": -5}", &jo);
    uint64_t bad_arr = submit(fx, "sleep", "[1]", &jo);
    uint64_t zero = submit(fx, "sleep", "{\"ms\": 0}", &jo);
    uint64_t none = submit(fx, "sleep", NULL, &jo);
    uint64_t empty = submit(fx, "sleep", "{}", &jo);
    wait_finished(fx, 6, 10000);

    uint64_t bad[] = {bad_str, bad_neg, bad_arr};
    for (size_t i = 0; i < 3; i++) {
        snap_t s = get_job(fx, bad[i]);
        assert_int_equal(s.state, SP_STATE_FAILED);
        assert_int_equal(s.attempts, 1);
        assert_true(s.has_error);
        assert_non_null(strstr(s.last_error, "sleep: "));
    }
    assert_non_null(strstr(get_job(fx, bad_str).last_error, "ms must be an integer"));
    uint64_t good[] = {zero, none, empty};
    for (size_t i = 0; i < 3; i++) assert_int_equal(get_job(fx, good[i]).state, SP_STATE_SUCCEEDED);
}

static void test_fail_retries_then_fails(void **state)
{
    fx_t *fx = *state;
    job_opts_t jo = {3, 30000, 0};
    pool_start(fx, 2, "test");
    uint64_t id = submit(fx, "fail", "{\"message\": \"disk \\\"full\\\"\", \"retry\": true}", &jo);
    uint64_t id_default = submit(fx, "fail", NULL, &jo);
    wait_state(fx, id, SP_STATE_FAILED, 10000);
    wait_state(fx, id_default, SP_STATE_FAILED, 10000);
    snap_t s = get_job(fx, id);
    assert_int_equal(s.attempts, 3);
    assert_int_equal(fx->leases[id], 3);
    assert_true(s.has_error);
    assert_string_equal(s.last_error, "disk \"full\"");
    s = get_job(fx, id_default);
    assert_int_equal(s.attempts, 3);
    assert_string_equal(s.last_error, "failed");
}

static void test_fail_no_retry(void **state)
{
    fx_t *fx = *state;
    job_opts_t jo = {5, 30000, 0};
    pool_start(fx, 2, "test");
    uint64_t id = submit(fx, "fail", "{\"message\": \"bad input\", \"retry\": false}", &jo);
    wait_state(fx, id, SP_STATE_FAILED, 10000);
    snap_t s = get_job(fx, id);
    assert_int_equal(s.attempts, 1);
    assert_int_equal(fx->leases[id], 1);
    assert_string_equal(s.last_error, "bad input");
}

static void test_unknown_type(void **state)
{
    fx_t *fx = *state;
    job_opts_t jo = {2, 30000, 0};
    pool_start(fx, 2, "test");
    uint64_t id = submit(fx, "resize.v2", "{\"w\": 10}", &jo);
    wait_state(fx, id, SP_STATE_FAILED, 10000);
    snap_t s = get_job(fx, id);
    /* Retried: an operator may deploy a handler between attempts. */
    assert_int_equal(s.attempts, 2);
    assert_string_equal(s.last_error, "no handler knows type 'resize.v2'");
}

static void test_slot_accounting(void **state)
{
    fx_t *fx = *state;
    fx->check_running = true;
    uint64_t ids[60];
    for (size_t i = 0; i < 40; i++) ids[i] = submit(fx, "sleep", "{\"ms\": 20}", NULL);
    pool_start(fx, 4, "host:99");
    for (size_t i = 40; i < 60; i++)
        ids[i] = submit(fx, i % 2 ? "noop" : "sleep", "{\"ms\": 5}", NULL);
    wait_finished(fx, 60, 20000);
    assert_int_equal(fx->nsucceeded, 60);
    assert_false(fx->running_mismatch);
    assert_true(fx->running_max <= 4);
    /* 40 jobs were waiting for 4 slots: every slot was busy at some point. */
    assert_int_equal(fx->running_max, 4);
    assert_int_equal(sp_pool_running(fx->pool), 0);
    for (size_t i = 0; i < 60; i++) {
        snap_t s = get_job(fx, ids[i]);
        assert_true(s.has_worker);
        assert_true(strncmp(s.worker, "host:99/", 8) == 0);
        char *end = NULL;
        long slot = strtol(s.worker + 8, &end, 10);
        assert_true(end && *end == '\0');
        assert_true(slot >= 1 && slot <= 4);
    }
}

static void test_heartbeat_keeps_lease(void **state)
{
    fx_t *fx = *state;
    /* Sleeps 2.5 times its lease: only heartbeats keep the lease from expiring. */
    job_opts_t jo = {3, 600, 0};
    pool_start(fx, 2, "test");
    uint64_t id = submit(fx, "sleep", "{\"ms\": 1500}", &jo);
    wait_state(fx, id, SP_STATE_SUCCEEDED, 20000);
    snap_t s = get_job(fx, id);
    assert_int_equal(s.attempts, 1);
    assert_int_equal(fx->leases[id], 1);
}

static void hb_unreachable(sp_backend_t *b, uint64_t id, uint64_t lease, int64_t extend_ms,
                           sp_be_job_cb cb, void *ud)
{
    (void)b;
    (void)id;
    (void)lease;
    (void)extend_ms;
    cb(ud, SP_EUNAVAIL, "backend unreachable", NULL);
}

static size_t count_lines_with(const char *text, const char *what)
{
    size_t n = 0;
    for (const char *p = text; (p = strstr(p, what)); p += strlen(what)) n++;
    return n;
}

static void test_failed_heartbeats_warned_once(void **state)
{
    fx_t *fx = *state;
    /* The pool's stderr goes to a file for the test to read. */
    char path[] = "/tmp/spool-test-pool-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    assert_int_equal(dup2(fd, 2), 2);
    /* Every heartbeat fails as with the backend unreachable (the leases themselves hold). */
    const sp_backend_ops_t *orig = fx->b->ops;
    static sp_backend_ops_t failing;
    failing = *orig;
    failing.heartbeat = hb_unreachable;
    fx->b->ops = &failing;
    job_opts_t jo = {3, 1500, 0}; /* a heartbeat every 500 ms */
    pool_start(fx, 8, "test");
    uint64_t ids[8];
    for (int i = 0; i < 8; i++) ids[i] = submit(fx, "sleep", "{\"ms\": 800}", &jo);
    for (int i = 0; i < 8; i++) wait_state(fx, ids[i], SP_STATE_SUCCEEDED, 20000);
    /* Heartbeats are answered again. */
    fx->b->ops = orig;
    uint64_t again = submit(fx, "sleep", "{\"ms\": 800}", &jo);
    wait_state(fx, again, SP_STATE_SUCCEEDED, 20000);
    fflush(stderr);
    assert_int_equal(dup2(saved, 2), 2);
    close(saved);
    char log[65536];
    ssize_t n = pread(fd, log, sizeof log - 1, 0);
    close(fd);
    unlink(path);
    assert_true(n > 0);
    log[n] = '\0';
    /* Eight heartbeats failed within 10 s: one warning, then one line when they work again. */
    assert_int_equal(count_lines_with(log, "heartbeat of job"), 1);
    assert_int_equal(count_lines_with(log, "more heartbeats failed"), 0);
    assert_int_equal(count_lines_with(log, "heartbeats answered again"), 1);
}

typedef struct {
    uint64_t id;
    sp_pool_t *pool;
} lost_t;

static bool pred_first_attempt_dropped(fx_t *fx, const void *arg)
{
    const lost_t *l = arg;
    return fx->leases[l->id] == 2 && sp_pool_running(l->pool) == 1;
}

static void test_lost_lease_dropped(void **state)
{
    fx_t *fx = *state;
    job_opts_t jo = {10, 600, 0};
    pool_start(fx, 2, "test");
    uint64_t id = submit(fx, "sleep", "{\"ms\": 3000}", &jo);
    wait_state(fx, id, SP_STATE_RUNNING, 5000);
    /* Move the engine's clock past the lease: the attempt expires and the job is leased again
     * (into the other slot). The first attempt's next heartbeat is refused, and the pool stops
     * that run and frees its slot without an answer, long before the second one ends. */
    sp_engine_t *e = sp_backend_memory_engine(fx->b);
    sp_engine_tick(e, sp_now_ms() + 60000);
    lost_t l = {id, fx->pool};
    assert_true(run_until(fx, pred_first_attempt_dropped, &l, 10000));
    assert_int_equal(fx->state[id], SP_STATE_RUNNING);
    wait_state(fx, id, SP_STATE_SUCCEEDED, 20000);
    snap_t s = get_job(fx, id);
    assert_int_equal(s.attempts, 2);
    assert_int_equal(fx->succeeded[id], 1);
    assert_int_equal(sp_pool_running(fx->pool), 0);
}

static void ticked(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

static void test_idle_pool_blocks(void **state)
{
    fx_t *fx = *state;
    pool_start(fx, 16, "test");
    /* With nothing to do the pool waits in its long poll: the loop sleeps until the timer
     * instead of turning (a busy pool would turn thousands of times in 200 ms). */
    bool fired = false;
    uv_timer_t t;
    uv_timer_init(&fx->loop, &t);
    t.data = &fired;
    uv_timer_start(&t, ticked, 200, 0);
    int turns = 0;
    while (!fired && turns < 1000) {
        uv_run(&fx->loop, UV_RUN_ONCE);
        turns++;
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    assert_true(fired);
    assert_true(turns < 20);
    assert_int_equal(sp_pool_running(fx->pool), 0);
}

static void cancel_answered(void *ud, int status, const char *why, const sp_jobrec_t *job)
{
    (void)why;
    snap_t *s = ud;
    s->answered = true;
    s->status = status;
    if (job) s->state = job->state;
}

static void test_cancel_running(void **state)
{
    fx_t *fx = *state;
    job_opts_t jo = {3, 300, 0};
    pool_start(fx, 2, "test");
    uint64_t id = submit(fx, "sleep", "{\"ms\": 60000}", &jo);
    wait_state(fx, id, SP_STATE_RUNNING, 5000);
    snap_t c;
    memset(&c, 0, sizeof c);
    fx->b->ops->cancel(fx->b, id, cancel_answered, &c);
    assert_true(run_until(fx, pred_got, &c, 5000));
    assert_int_equal(c.status, 0);
    assert_int_equal(c.state, SP_STATE_RUNNING);
    /* Far sooner than the sleep's minute: the next heartbeat learns of the cancel. */
    wait_state(fx, id, SP_STATE_CANCELED, 10000);
    snap_t s = get_job(fx, id);
    assert_int_equal(s.attempts, 1);
    assert_int_equal(fx->leases[id], 1);
    assert_int_equal(sp_pool_running(fx->pool), 0);
}

static bool pred_both_running(fx_t *fx, const void *arg)
{
    const uint64_t *ids = arg;
    return fx->state[ids[0]] == SP_STATE_RUNNING && fx->state[ids[1]] == SP_STATE_RUNNING;
}

static void test_stop_grace(void **state)
{
    fx_t *fx = *state;
    job_opts_t jo = {3, 30000, 0};
    pool_start(fx, 4, "test");
    uint64_t ids[2];
    ids[0] = submit(fx, "sleep", "{\"ms\": 100}", &jo);
    ids[1] = submit(fx, "sleep", "{\"ms\": 60000}", &jo);
    assert_true(run_until(fx, pred_both_running, ids, 5000));
    assert_int_equal(sp_pool_running(fx->pool), 2);
    /* The short job finishes within the grace and is acked; the long one is handed back. The
     * pool's long poll (30 s) is dropped at once, or this would outlast the deadline. */
    pool_stop_and_wait(fx, 3000, 15000);
    snap_t s = get_job(fx, ids[0]);
    assert_int_equal(s.state, SP_STATE_SUCCEEDED);
    assert_int_equal(s.attempts, 1);
    s = get_job(fx, ids[1]);
    assert_int_equal(s.state, SP_STATE_QUEUED);
    assert_int_equal(s.attempts, 0);
}

static void test_stop_idle_at_once(void **state)
{
    fx_t *fx = *state;
    pool_start(fx, 8, "test");
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    /* Nothing runs, so the 60 s grace is not waited for. */
    pool_stop_and_wait(fx, 60000, 10000);
}

static void test_stop_before_start(void **state)
{
    fx_t *fx = *state;
    sp_pool_opts_t o = {.concurrency = 3, .lease_wait_ms = 1000};
    fx->concurrency = 3;
    fx->pool = sp_pool_new(&fx->loop, fx->b, &o);
    assert_non_null(fx->pool);
    pool_stop_and_wait(fx, 0, 10000);
}

/* A handler from a table: finishes on a later loop turn through a uv_timer of its own. */
typedef struct {
    uv_timer_t t;
    sp_hjob_t *job;
    sp_handler_done_fn done;
} later_t;

static void later_closed(uv_handle_t *h)
{
    free(h->data);
}

static void later_fired(uv_timer_t *t)
{
    later_t *l = t->data;
    static const char result[] = "{\"custom\":true}";
    l->done(l->job, true, result, sizeof result - 1, false);
    uv_close((uv_handle_t *)t, later_closed);
}

static void later_start(const sp_handler_t *h, sp_hjob_t *job, sp_handler_done_fn done)
{
    (void)h;
    later_t *l = malloc(sizeof *l);
    if (!l) {
        done(job, false, "out of memory", 13, true);
        return;
    }
    l->job = job;
    l->done = done;
    uv_timer_init(job->loop, &l->t);
    l->t.data = l;
    uv_timer_start(&l->t, later_fired, 1, 0);
}

static void test_handler_table(void **state)
{
    fx_t *fx = *state;
    sp_handlers_t *hs = sp_handlers_new();
    assert_non_null(hs);
    sp_handler_t h = {"test", later_start, NULL, NULL, NULL};
    assert_int_equal(sp_handlers_add(hs, "later", 5, &h), 0);
    assert_int_equal(sp_handlers_add(hs, "later", 5, &h), SP_EINVAL);
    assert_int_equal(sp_handlers_add(hs, "echo", 4, &h), SP_EINVAL);
    assert_int_equal(sp_handlers_add(hs, "bad name", 8, &h), SP_EINVAL);
    assert_int_equal(sp_handlers_add(hs, "a.later", 7, &h), 0);
    assert_non_null(sp_handlers_find(hs, "later", 5));
    assert_non_null(sp_handlers_find(hs, "a.later", 7));
    assert_null(sp_handlers_find(hs, "late", 4));
    assert_null(sp_handlers_find(NULL, "later", 5));
    assert_non_null(sp_handlers_find(NULL, "noop", 4));

    static const char *const queues[] = {QUEUE};
    sp_pool_opts_t o = {.concurrency = 2, .queues = queues, .nqueues = 1, .name = "t"};
    fx->concurrency = 2;
    fx->pool = sp_pool_new(&fx->loop, fx->b, &o);
    assert_non_null(fx->pool);
    sp_pool_set_handlers(fx->pool, hs);
    assert_int_equal(sp_pool_start(fx->pool), 0);
    uint64_t id = submit(fx, "later", NULL, NULL);
    wait_state(fx, id, SP_STATE_SUCCEEDED, 10000);
    snap_t s = get_job(fx, id);
    assert_string_equal(s.result, "{\"custom\":true}");
    pool_stop_and_wait(fx, 0, 10000);
    sp_handlers_free(hs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_noop_each_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_echo_returns_payload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sleep_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sleep_payloads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fail_retries_then_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fail_no_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_type, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slot_accounting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heartbeat_keeps_lease, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_heartbeats_warned_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_lease_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_pool_blocks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_running, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_grace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_idle_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_before_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handler_table, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
