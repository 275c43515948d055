/*
 * test_backend.c - one backend test suite run against both backends, the memory backend and the
 * Redis backend (on a redis-server of its own), through the backend interface alone: submit and
 * get, lease and fencing, ack repeated, fail with and without retry, retry and cancel, release,
 * heartbeat, an expired lease retried then failed, a long-poll lease woken by a submission, a
 * get waiting for its job to finish, pause, purge and the queue counts.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "backend_memory.h"
#include "backend_redis.h"
#include "support/spt.h"

#define WAIT_MS 10000

typedef struct {
    bool redis;
    spt_redis_t rs;
    uv_loop_t loop;
    sp_backend_t *b;
} fx_t;

/* What a callback saw, copied. */
typedef struct {
    bool done;
    int status;
    uint64_t id, lease;
    int state;
    uint32_t attempts;
    size_t n;
    uint64_t ids[8], leases[8];
    bool existed;
    char last_error[160];
    uint64_t count;
    sp_queue_stats_t stats;
} res_t;

static void copy_job(res_t *r, const sp_jobrec_t *j)
{
    r->id = j->id;
    r->lease = j->lease;
    r->state = (int)j->state;
    r->attempts = j->attempts;
    r->last_error[0] = '\0';
    if (j->last_error) {
        size_t n = SP_MIN(j->last_error_len, sizeof r->last_error - 1);
        memcpy(r->last_error, j->last_error, n);
        r->last_error[n] = '\0';
    }
}

static void job_cb(void *ud, int status, const char *why, const sp_jobrec_t *j)
{
    (void)why;
    res_t *r = ud;
    r->done = true;
    r->status = status;
    if (j) copy_job(r, j);
}

static void submit_cb(void *ud, int status, const char *why, const sp_jobrec_t *j, bool existed)
{
    res_t *r = ud;
    job_cb(ud, status, why, j);
    r->existed = existed;
}

static void jobs_cb(void *ud, int status, const char *why, const sp_jobrec_t *jobs, size_t n,
                    uint64_t next)
{
    (void)why;
    (void)next;
    res_t *r = ud;
    r->done = true;
    r->status = status;
    r->n = n;
    for (size_t i = 0; i < n && i < 8; i++) {
        r->ids[i] = jobs[i].id;
        r->leases[i] = jobs[i].lease;
    }
    if (n) copy_job(r, &jobs[0]);
}

static void queues_cb(void *ud, int status, const char *why, const sp_queue_stats_t *q, size_t n)
{
    (void)why;
    res_t *r = ud;
    r->done = true;
    r->status = status;
    r->n = n;
    if (n) {
        r->stats = q[0];
        r->stats.name = NULL;
    }
}

static void count_cb(void *ud, int status, const char *why, uint64_t n)
{
    (void)why;
    res_t *r = ud;
    r->done = true;
    r->status = status;
    r->count = n;
}

static void timer_fired(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

static void closed_cb(uv_handle_t *h)
{
    (void)h;
}

/* Runs the loop until *flag, at most ms (then fails). */
static void run_until(fx_t *f, const bool *flag, int ms)
{
    bool expired = false;
    uv_timer_t t;
    uv_timer_init(&f->loop, &t);
    t.data = &expired;
    uv_timer_start(&t, timer_fired, (uint64_t)ms, 0);
    while (!*flag && !expired) uv_run(&f->loop, UV_RUN_ONCE);
    uv_timer_stop(&t);
    uv_close((uv_handle_t *)&t, closed_cb);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    if (!*flag) fail_msg("no answer within %d ms", ms);
}

/* Lets the loop run for ms (for the clock of expiry tests, never to wait for an outcome). */
static void run_for(fx_t *f, int ms)
{
    bool expired = false;
    uv_timer_t t;
    uv_timer_init(&f->loop, &t);
    t.data = &expired;
    uv_timer_start(&t, timer_fired, (uint64_t)ms, 0);
    while (!expired) uv_run(&f->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, closed_cb);
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

static void spec_init(sp_job_spec_t *s, uint32_t max_attempts, uint32_t timeout_ms)
{
    memset(s, 0, sizeof *s);
    memcpy(s->type, "t", 2);
    s->type_len = 1;
    s->payload = "{\"k\":1}";
    s->payload_len = 7;
    s->priority = SP_DEFAULT_PRIORITY;
    s->parsed_at = sp_now_ms();
    s->run_at = s->parsed_at;
    s->max_attempts = max_attempts;
    s->timeout_ms = timeout_ms;
    s->backoff_ms = 0;
}

static uint64_t submit(fx_t *f, const char *q, uint32_t max_attempts, uint32_t timeout_ms)
{
    sp_job_spec_t s;
    spec_init(&s, max_attempts, timeout_ms);
    res_t r = {0};
    f->b->ops->submit(f->b, q, strlen(q), &s, submit_cb, &r);
    run_until(f, &r.done, WAIT_MS);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.state, SP_STATE_QUEUED);
    return r.id;
}

static res_t get(fx_t *f, uint64_t id)
{
    res_t r = {0};
    f->b->ops->get(f->b, id, 0, job_cb, &r);
    run_until(f, &r.done, WAIT_MS);
    return r;
}

static res_t lease(fx_t *f, const char *q, size_t max, int64_t wait_ms)
{
    const char *qs[1] = {q};
    size_t ql[1] = {strlen(q)};
    sp_lease_req_t req = {
        .queues = qs, .queue_lens = ql, .nqueues = 1, .max = max, .worker = "w1", .worker_len = 2};
    res_t r = {0};
    f->b->ops->lease(f->b, &req, wait_ms, jobs_cb, &r);
    run_until(f, &r.done, WAIT_MS + (int)wait_ms);
    return r;
}

static res_t queue_stats(fx_t *f, const char *q)
{
    res_t r = {0};
    f->b->ops->queues(f->b, q, strlen(q), queues_cb, &r);
    run_until(f, &r.done, WAIT_MS);
    return r;
}

/* Waits (polling every 20 ms, bounded) until the job is in `state`. */
static res_t wait_state(fx_t *f, uint64_t id, int state)
{
    long long deadline = spt_now_ms() + WAIT_MS;
    res_t r;
    do {
        r = get(f, id);
        if (r.status == 0 && r.state == state) return r;
        run_for(f, 20);
    } while (spt_now_ms() < deadline);
    fail_msg("job %llu is in state %d, expected %d", (unsigned long long)id, r.state, state);
    return r;
}

static int setup(void **state, bool redis)
{
    fx_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->redis = redis;
    assert_int_equal(uv_loop_init(&f->loop), 0);
    if (redis) {
        assert_int_equal(spt_redis_start(&f->rs, NULL), 0);
        char url[64], err[256];
        snprintf(url, sizeof url, "redis://127.0.0.1:%d", f->rs.port);
        sp_backend_redis_opts_t o = {.url = url};
        assert_int_equal(sp_backend_redis_new(&f->loop, &o, &f->b, err, sizeof err), 0);
        /* the connections open asynchronously: wait for them */
        long long deadline = spt_now_ms() + WAIT_MS;
        while (!sp_backend_redis_connected(f->b) && spt_now_ms() < deadline) run_for(f, 10);
        assert_true(sp_backend_redis_connected(f->b));
    } else {
        sp_engine_opts_t eo;
        sp_engine_opts_default(&eo);
        f->b = sp_backend_memory_new(&f->loop, &eo);
        assert_non_null(f->b);
    }
    *state = f;
    return 0;
}

static int setup_memory(void **state)
{
    return setup(state, false);
}

static int setup_redis(void **state)
{
    return setup(state, true);
}

static void backend_closed(void *ud)
{
    *(bool *)ud = true;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    bool closed = false;
    f->b->ops->close(f->b, backend_closed, &closed);
    run_until(f, &closed, WAIT_MS);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    if (f->redis) spt_redis_stop(&f->rs, false);
    free(f);
    return 0;
}

/* ---- the suite ---------------------------------------------------------------------------- */

static void test_lease_ack_fencing(void **state)
{
    fx_t *f = *state;
    uint64_t id = submit(f, "a", 3, 30000);
    res_t g = get(f, id);
    assert_int_equal(g.status, 0);
    assert_int_equal(g.state, SP_STATE_QUEUED);
    res_t l = lease(f, "a", 10, 0);
    assert_int_equal(l.status, 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.ids[0], id);
    assert_int_equal(l.attempts, 1);
    assert_true(l.leases[0] != 0);

    res_t a = {0};
    f->b->ops->ack(f->b, id, l.leases[0] + 1, "1", 1, true, job_cb, &a);
    run_until(f, &a.done, WAIT_MS);
    assert_int_equal(a.status, SP_ECONFLICT);
    memset(&a, 0, sizeof a);
    f->b->ops->ack(f->b, id, l.leases[0], "1", 1, true, job_cb, &a);
    run_until(f, &a.done, WAIT_MS);
    assert_int_equal(a.status, 0);
    assert_int_equal(a.state, SP_STATE_SUCCEEDED);
    /* the same ack again answers again */
    memset(&a, 0, sizeof a);
    f->b->ops->ack(f->b, id, l.leases[0], "1", 1, true, job_cb, &a);
    run_until(f, &a.done, WAIT_MS);
    assert_int_equal(a.status, 0);
    res_t q = queue_stats(f, "a");
    assert_int_equal(q.stats.counts[SP_STATE_SUCCEEDED], 1);
    assert_int_equal(q.stats.enqueued, 1);
    assert_int_equal(q.stats.succeeded, 1);
    res_t nf = get(f, 999999);
    assert_int_equal(nf.status, SP_ENOTFOUND);
}

static void test_fail_retry_cancel_release(void **state)
{
    fx_t *f = *state;
    uint64_t id = submit(f, "b", 2, 30000);
    res_t l = lease(f, "b", 1, 0);
    assert_int_equal(l.n, 1);
    res_t r = {0};
    (f->b->ops->fail)(f->b, id, l.leases[0], "boom", 4, true, 0, job_cb, &r);
    run_until(f, &r.done, WAIT_MS);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.state, SP_STATE_QUEUED);
    assert_string_equal(r.last_error, "boom");

    l = lease(f, "b", 1, 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.attempts, 2);
    memset(&r, 0, sizeof r);
    (f->b->ops->fail)(f->b, id, l.leases[0], NULL, 0, true, -1, job_cb, &r);
    run_until(f, &r.done, WAIT_MS);
    assert_int_equal(r.state, SP_STATE_FAILED); /* no attempts left */
    assert_string_equal(r.last_error, "failed");

    memset(&r, 0, sizeof r);
    f->b->ops->retry(f->b, id, job_cb, &r);
    run_until(f, &r.done, WAIT_MS);
    assert_int_equal(r.state, SP_STATE_QUEUED);
    assert_int_equal(r.attempts, 0);

    /* release: back to queued, the attempt not counted */
    l = lease(f, "b", 1, 0);
    memset(&r, 0, sizeof r);
    f->b->ops->release(f->b, id, l.leases[0], job_cb, &r);
    run_until(f, &r.done, WAIT_MS);
    assert_int_equal(r.state, SP_STATE_QUEUED);
    assert_int_equal(r.attempts, 0);

    /* cancel while running: requested, then the release ends it canceled */
    l = lease(f, "b", 1, 0);
    memset(&r, 0, sizeof r);
    f->b->ops->cancel(f->b, id, job_cb, &r);
    run_until(f, &r.done, WAIT_MS);
    assert_int_equal(r.state, SP_STATE_RUNNING);
    memset(&r, 0, sizeof r);
    f->b->ops->heartbeat(f->b, id, l.leases[0], 5000, job_cb, &r);
    run_until(f, &r.done, WAIT_MS);
    assert_int_equal(r.status, 0);
    memset(&r, 0, sizeof r);
    f->b->ops->release(f->b, id, l.leases[0], job_cb, &r);
    run_until(f, &r.done, WAIT_MS);
    assert_int_equal(r.state, SP_STATE_CANCELED);
    memset(&r, 0, sizeof r);
    f->b->ops->cancel(f->b, id, job_cb, &r);
    run_until(f, &r.done, WAIT_MS);
    assert_int_equal(r.status, SP_ECONFLICT);
}

static void test_expired_lease(void **state)
{
    fx_t *f = *state;
    uint64_t id = submit(f, "c", 2, 100);
    res_t l = lease(f, "c", 1, 0);
    assert_int_equal(l.n, 1);
    /* the first expiry retries the job, the second fails it */
    res_t g = wait_state(f, id, SP_STATE_QUEUED);
    assert_non_null(strstr(g.last_error, "lease expired"));
    res_t a = {0};
    f->b->ops->ack(f->b, id, l.leases[0], NULL, 0, true, job_cb, &a);
    run_until(f, &a.done, WAIT_MS);
    assert_int_equal(a.status, SP_ECONFLICT);
    l = lease(f, "c", 1, 0);
    assert_int_equal(l.n, 1);
    g = wait_state(f, id, SP_STATE_FAILED);
    assert_int_equal(g.attempts, 2);
}

static void test_waits(void **state)
{
    fx_t *f = *state;
    /* a long poll woken by a submission */
    const char *qs[1] = {"d"};
    size_t ql[1] = {1};
    sp_lease_req_t req = {.queues = qs, .queue_lens = ql, .nqueues = 1, .max = 5};
    res_t l = {0};
    f->b->ops->lease(f->b, &req, 20000, jobs_cb, &l);
    run_for(f, 50);
    assert_false(l.done);
    uint64_t id = submit(f, "d", 3, 30000);
    run_until(f, &l.done, WAIT_MS);
    assert_int_equal(l.status, 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.ids[0], id);

    /* a get waiting for its job to finish */
    res_t g = {0};
    f->b->ops->get(f->b, id, 20000, job_cb, &g);
    run_for(f, 50);
    assert_false(g.done);
    res_t a = {0};
    f->b->ops->ack(f->b, id, l.leases[0], NULL, 0, true, job_cb, &a);
    run_until(f, &a.done, WAIT_MS);
    run_until(f, &g.done, WAIT_MS);
    assert_int_equal(g.status, 0);
    assert_int_equal(g.state, SP_STATE_SUCCEEDED);

    /* a canceled wait never answers */
    res_t c = {0};
    sp_be_wait_t *w = f->b->ops->lease(f->b, &req, 20000, jobs_cb, &c);
    assert_non_null(w);
    f->b->ops->cancel_wait(f->b, w);
    submit(f, "d", 3, 30000);
    run_for(f, 100);
    assert_false(c.done);
    /* the job went to nobody: it is still there to lease */
    res_t l2 = lease(f, "d", 5, 0);
    assert_int_equal(l2.n, 1);
}

static void test_pause_purge_counts(void **state)
{
    fx_t *f = *state;
    for (int i = 0; i < 3; i++) submit(f, "e", 3, 30000);
    res_t p = {0};
    f->b->ops->pause(f->b, "e", 1, true, queues_cb, &p);
    run_until(f, &p.done, WAIT_MS);
    assert_true(p.stats.paused);
    res_t l = lease(f, "e", 5, 0);
    assert_int_equal(l.n, 0);
    memset(&p, 0, sizeof p);
    f->b->ops->pause(f->b, "e", 1, false, queues_cb, &p);
    run_until(f, &p.done, WAIT_MS);
    assert_false(p.stats.paused);
    assert_int_equal(p.stats.counts[SP_STATE_QUEUED], 3);
    l = lease(f, "e", 1, 0);
    assert_int_equal(l.n, 1);
    res_t c = {0};
    f->b->ops->purge(f->b, "e", 1, SP_STATE_QUEUED, count_cb, &c);
    run_until(f, &c.done, WAIT_MS);
    assert_int_equal(c.count, 2);
    memset(&c, 0, sizeof c);
    f->b->ops->purge(f->b, "e", 1, SP_STATE_RUNNING, count_cb, &c);
    run_until(f, &c.done, WAIT_MS);
    assert_int_equal(c.status, SP_EINVAL);
    res_t q = queue_stats(f, "e");
    assert_int_equal(q.stats.counts[SP_STATE_QUEUED], 0);
    assert_int_equal(q.stats.counts[SP_STATE_RUNNING], 1);
    assert_int_equal(q.stats.enqueued, 3);
    res_t nq = queue_stats(f, "never");
    assert_int_equal(nq.status, SP_ENOTFOUND);
}

/* Each test twice: on the memory backend, then on Redis. */
#define BOTH(t)                                                                                    \
    {"memory: " #t, t, setup_memory, teardown, NULL},                                              \
    {                                                                                              \
        "redis: " #t, t, setup_redis, teardown, NULL                                               \
    }

int main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH(test_lease_ack_fencing),  BOTH(test_fail_retry_cancel_release),
        BOTH(test_expired_lease),      BOTH(test_waits),
        BOTH(test_pause_purge_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
