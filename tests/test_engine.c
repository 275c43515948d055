/*
 * test_engine.c - unit tests of the queue engine (common/engine.c), with the clock driven by
 * hand: ordering, delays, leases and fencing, retries and backoff, cancel, idempotency, depth
 * limits, retention, counts, paging, purge, callbacks, a randomized run checked against a
 * recount, and memory per job.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

#define T0 1700000000000LL

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* ---- fixtures ---------------------------------------------------------------------------- */

static struct {
    size_t ready_calls;
    sp_equeue_t *last_ready;
    size_t change_calls;
    uint64_t last_id;
    int last_from;
    sp_state_t last_to;
} cb;

static void on_ready(void *ud, sp_equeue_t *q)
{
    (void)ud;
    cb.ready_calls++;
    cb.last_ready = q;
}

static void on_change(void *ud, const sp_ejob_t *job, int from, sp_state_t to)
{
    (void)ud;
    assert_int_not_equal(from, (int)to);
    assert_int_equal(sp_ejob_state(job), to);
    cb.change_calls++;
    cb.last_id = sp_ejob_id(job);
    cb.last_from = from;
    cb.last_to = to;
}

static sp_engine_t *engine_with(int64_t retention_ms, int64_t idem_ttl_ms, uint64_t max_depth)
{
    sp_engine_opts_t o;
    sp_engine_opts_default(&o);
    if (retention_ms >= 0) o.retention_ms = retention_ms;
    if (idem_ttl_ms >= 0) o.idem_ttl_ms = idem_ttl_ms;
    o.max_depth = max_depth;
    o.seed = 42;
    o.on_ready = on_ready;
    o.on_change = on_change;
    memset(&cb, 0, sizeof(cb));
    sp_engine_t *e = sp_engine_new(&o);
    assert_non_null(e);
    return e;
}

static sp_engine_t *engine(void)
{
    return engine_with(-1, -1, 0);
}

static sp_job_spec_t spec_at(int64_t now, const char *type, int priority)
{
    sp_job_spec_t s;
    memset(&s, 0, sizeof(s));
    s.type_len = strlen(type);
    memcpy(s.type, type, s.type_len + 1);
    s.payload = "null";
    s.payload_len = 4;
    s.priority = priority;
    s.run_at = now;
    s.max_attempts = SP_DEFAULT_MAX_ATTEMPTS;
    s.timeout_ms = SP_DEFAULT_TIMEOUT_MS;
    s.backoff_ms = SP_DEFAULT_BACKOFF_MS;
    return s;
}

static void set_key(sp_job_spec_t *s, const char *key, size_t len)
{
    s->has_idem_key = true;
    memcpy(s->idem_key, key, len);
    s->idem_key_len = len;
}

static sp_ejob_t *submit_spec(sp_engine_t *e, int64_t now, const char *queue,
                              const sp_job_spec_t *s)
{
    sp_ejob_t *j = NULL;
    bool existed = true;
    assert_int_equal(sp_engine_submit(e, now, queue, strlen(queue), s, &j, &existed), 0);
    assert_non_null(j);
    assert_false(existed);
    return j;
}

static uint64_t submit(sp_engine_t *e, int64_t now, const char *queue, int priority)
{
    sp_job_spec_t s = spec_at(now, "t", priority);
    return sp_ejob_id(submit_spec(e, now, queue, &s));
}

static size_t lease_from(sp_engine_t *e, int64_t now, const char *const *queues, size_t nq,
                         size_t max, sp_ejob_t **out)
{
    size_t lens[8];
    for (size_t i = 0; i < nq; i++) lens[i] = strlen(queues[i]);
    sp_lease_req_t req = {queues, lens, nq, max, "host:1/0", 8};
    size_t n = 99;
    assert_int_equal(sp_engine_lease(e, now, &req, out, &n), 0);
    return n;
}

/* Leases one job from `queue`; returns its id (0 if none) and its lease token. */
static uint64_t lease1(sp_engine_t *e, int64_t now, const char *queue, uint64_t *token)
{
    const char *qs[1] = {queue};
    sp_ejob_t *j[1];
    if (lease_from(e, now, qs, 1, 1, j) == 0) return 0;
    sp_jobrec_t r;
    sp_engine_view(e, j[0], &r);
    assert_int_equal(r.state, SP_STATE_RUNNING);
    assert_int_not_equal(r.lease, 0);
    if (token) *token = r.lease;
    return r.id;
}

static sp_jobrec_t view(sp_engine_t *e, uint64_t id)
{
    sp_ejob_t *j = sp_engine_get(e, id);
    assert_non_null(j);
    sp_jobrec_t r;
    sp_engine_view(e, j, &r);
    return r;
}

static sp_state_t state_of(sp_engine_t *e, uint64_t id)
{
    return view(e, id).state;
}

static sp_queue_stats_t stats(sp_engine_t *e, const char *queue, int64_t now)
{
    sp_equeue_t *q = sp_engine_queue_find(e, queue, strlen(queue));
    assert_non_null(q);
    sp_queue_stats_t st;
    sp_engine_queue_stats(e, q, now, &st);
    return st;
}

static void expect_counts(sp_engine_t *e, const char *queue, uint64_t sched, uint64_t queued,
                          uint64_t running, uint64_t succ, uint64_t failed, uint64_t canceled)
{
    sp_queue_stats_t st = stats(e, queue, T0);
    assert_int_equal(st.counts[SP_STATE_SCHEDULED], sched);
    assert_int_equal(st.counts[SP_STATE_QUEUED], queued);
    assert_int_equal(st.counts[SP_STATE_RUNNING], running);
    assert_int_equal(st.counts[SP_STATE_SUCCEEDED], succ);
    assert_int_equal(st.counts[SP_STATE_FAILED], failed);
    assert_int_equal(st.counts[SP_STATE_CANCELED], canceled);
}

static bool has_error(const sp_jobrec_t *r, const char *needle)
{
    if (!r->last_error) return false;
    char buf[256];
    size_t n = SP_MIN(r->last_error_len, sizeof(buf) - 1);
    memcpy(buf, r->last_error, n);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

/* Recounts every queue's jobs by walking its list and checks them against the kept counts,
 * and that every listed job is found by id. */
static void check_recount(sp_engine_t *e)
{
    size_t total = 0;
    static sp_ejob_t *page[64];
    for (size_t i = 0; i < sp_engine_queue_count(e); i++) {
        sp_equeue_t *q = sp_engine_queue_at(e, i);
        uint64_t counts[SP_STATE_COUNT] = {0};
        uint64_t after = 0, last = 0;
        for (;;) {
            uint64_t next;
            size_t n = sp_engine_list(e, q, -1, after, SP_ARRAY_LEN(page), page, &next);
            for (size_t k = 0; k < n; k++) {
                assert_true(sp_ejob_id(page[k]) > last);
                last = sp_ejob_id(page[k]);
                assert_ptr_equal(sp_engine_get(e, last), page[k]);
                assert_ptr_equal(sp_ejob_queue(page[k]), q);
                counts[sp_ejob_state(page[k])]++;
                total++;
            }
            if (!next) break;
            after = next;
        }
        sp_queue_stats_t st;
        sp_engine_queue_stats(e, q, T0, &st);
        for (int s = 0; s < SP_STATE_COUNT; s++) assert_int_equal(st.counts[s], counts[s]);
        assert_int_equal(sp_equeue_has_ready(q), !st.paused && counts[SP_STATE_QUEUED] > 0);
    }
    assert_int_equal(total, sp_engine_job_count(e));
}

/* ---- ordering ---------------------------------------------------------------------------- */

static void test_priority_then_fifo(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    uint64_t a = submit(e, T0, "q", 5);
    uint64_t b = submit(e, T0, "q", 9);
    uint64_t c = submit(e, T0, "q", 5);
    uint64_t d = submit(e, T0, "q", 0);
    uint64_t f = submit(e, T0, "q", 9);
    assert_int_equal(a, 1);
    assert_int_equal(f, 5);
    uint64_t want[] = {b, f, a, c, d};
    for (size_t i = 0; i < SP_ARRAY_LEN(want); i++)
        assert_int_equal(lease1(e, T0, "q", NULL), want[i]);
    assert_int_equal(lease1(e, T0, "q", NULL), 0);
    sp_jobrec_t r = view(e, a);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(r.started_at, T0);
    assert_int_equal(r.lease_expires_at, T0 + SP_DEFAULT_TIMEOUT_MS);
    assert_int_equal(r.worker_len, 8);
    assert_memory_equal(r.worker, "host:1/0", 8);
    check_recount(e);
    sp_engine_free(e);
}

static void test_queues_in_given_order(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    uint64_t lo1 = submit(e, T0, "lo", 9);
    uint64_t hi1 = submit(e, T0, "hi", 0);
    uint64_t lo2 = submit(e, T0, "lo", 9);
    uint64_t hi2 = submit(e, T0, "hi", 1);
    const char *qs[] = {"hi", "missing", "lo"};
    sp_ejob_t *out[8];
    size_t n = lease_from(e, T0, qs, 3, 3, out);
    assert_int_equal(n, 3);
    assert_int_equal(sp_ejob_id(out[0]), hi2);
    assert_int_equal(sp_ejob_id(out[1]), hi1);
    assert_int_equal(sp_ejob_id(out[2]), lo1);
    /* Every queue, in the order first seen: "lo" then "hi". */
    submit(e, T0, "hi", 5);
    sp_lease_req_t all = {NULL, NULL, 0, 8, NULL, 0};
    assert_int_equal(sp_engine_lease(e, T0, &all, out, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(sp_ejob_id(out[0]), lo2);
    assert_string_equal(sp_equeue_name(sp_ejob_queue(out[1]), NULL), "hi");
    sp_jobrec_t r;
    sp_engine_view(e, out[0], &r);
    assert_null(r.worker);
    assert_int_equal(sp_engine_queue_count(e), 2);
    size_t len;
    assert_string_equal(sp_equeue_name(sp_engine_queue_at(e, 0), &len), "lo");
    assert_int_equal(len, 2);
    assert_null(sp_engine_queue_at(e, 2));
    sp_engine_free(e);
}

static void test_paused_queue_skipped(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    sp_equeue_t *q;
    assert_int_equal(sp_engine_pause(e, "p", 1, &q), 0);
    assert_true(stats(e, "p", T0).paused);
    uint64_t pj = submit(e, T0, "p", 5);
    uint64_t oj = submit(e, T0, "o", 5);
    assert_false(sp_equeue_has_ready(q));
    const char *qs[] = {"p", "o"};
    sp_ejob_t *out[4];
    assert_int_equal(lease_from(e, T0, qs, 2, 4, out), 1);
    assert_int_equal(sp_ejob_id(out[0]), oj);
    assert_int_equal(state_of(e, pj), SP_STATE_QUEUED);
    cb.ready_calls = 0;
    assert_int_equal(sp_engine_resume(e, "p", 1, &q), 0);
    assert_int_equal(cb.ready_calls, 1);
    assert_ptr_equal(cb.last_ready, q);
    assert_true(sp_equeue_has_ready(q));
    assert_int_equal(lease1(e, T0, "p", NULL), pj);
    /* Resume of a queue never seen creates it; with nothing waiting, no wake-up. */
    cb.ready_calls = 0;
    assert_int_equal(sp_engine_resume(e, "new", 3, NULL), 0);
    assert_int_equal(cb.ready_calls, 0);
    assert_non_null(sp_engine_queue_find(e, "new", 3));
    sp_engine_free(e);
}

/* ---- time -------------------------------------------------------------------------------- */

/* A delay counts from when the engine stores the job, a client's run_at is kept as given. */
static void test_delay_counts_from_submit(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    sp_job_spec_t s = spec_at(T0 + 300, "t", 5); /* parsed at T0 with delay_ms 300 */
    s.parsed_at = T0;
    uint64_t delayed = sp_ejob_id(submit_spec(e, T0 + 1, "q", &s));
    assert_int_equal(view(e, delayed).created_at, T0 + 1);
    assert_int_equal(view(e, delayed).run_at, T0 + 301);
    s.run_at_given = true; /* the client said run_at = T0 + 300 */
    uint64_t given = sp_ejob_id(submit_spec(e, T0 + 1, "q", &s));
    assert_int_equal(view(e, given).run_at, T0 + 300);
    sp_engine_free(e);
}

static void test_delayed_jobs(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    assert_int_equal(sp_engine_next_deadline(e), INT64_MAX);
    sp_job_spec_t s = spec_at(T0 + 1000, "t", 5);
    uint64_t late = sp_ejob_id(submit_spec(e, T0, "q", &s));
    s.run_at = T0 + 500;
    uint64_t soon = sp_ejob_id(submit_spec(e, T0, "q", &s));
    s.run_at = T0 - 5000; /* a past time means now */
    uint64_t now_job = sp_ejob_id(submit_spec(e, T0, "q", &s));
    assert_int_equal(state_of(e, late), SP_STATE_SCHEDULED);
    assert_int_equal(state_of(e, now_job), SP_STATE_QUEUED);
    assert_int_equal(view(e, now_job).run_at, T0);
    assert_int_equal(view(e, late).run_at, T0 + 1000);
    expect_counts(e, "q", 2, 1, 0, 0, 0, 0);
    assert_int_equal(sp_engine_next_deadline(e), T0 + 500);
    assert_int_equal(lease1(e, T0, "q", NULL), now_job);
    assert_int_equal(lease1(e, T0, "q", NULL), 0);

    cb.ready_calls = 0;
    assert_int_equal(sp_engine_tick(e, T0 + 499), T0 + 500);
    assert_int_equal(state_of(e, soon), SP_STATE_SCHEDULED);
    assert_int_equal(cb.ready_calls, 0);
    sp_engine_tick(e, T0 + 500);
    assert_int_equal(state_of(e, soon), SP_STATE_QUEUED);
    assert_int_equal(cb.ready_calls, 1);
    assert_int_equal(cb.last_id, soon);
    assert_int_equal(cb.last_from, SP_STATE_SCHEDULED);
    /* The running job's lease is now the earliest deadline but for the delayed one. */
    assert_int_equal(sp_engine_next_deadline(e), T0 + 1000);
    assert_int_equal(sp_engine_tick(e, T0 + 1000), T0 + SP_DEFAULT_TIMEOUT_MS + 1);
    assert_int_equal(state_of(e, late), SP_STATE_QUEUED);
    assert_int_equal(stats(e, "q", T0 + 1200).oldest_queued_age_ms, 700);
    check_recount(e);
    sp_engine_free(e);
}

static void test_many_delays_fire_in_order(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    srand(7);
    enum { N = 2000 };
    for (int i = 0; i < N; i++) {
        sp_job_spec_t s = spec_at(T0 + 1 + rand() % 100000, "t", rand() % 10);
        submit_spec(e, T0, "q", &s);
    }
    int64_t now = T0;
    size_t queued = 0;
    while (queued < N) {
        int64_t next = sp_engine_next_deadline(e);
        assert_true(next > now);
        now = next;
        sp_engine_tick(e, now);
        sp_queue_stats_t st = stats(e, "q", now);
        assert_true(st.counts[SP_STATE_QUEUED] > queued);
        queued = st.counts[SP_STATE_QUEUED];
        /* Nothing still scheduled was due. */
        uint64_t after = 0, nx;
        sp_ejob_t *page[256];
        do {
            size_t n = sp_engine_list(e, sp_engine_queue_find(e, "q", 1), SP_STATE_SCHEDULED, after,
                                      256, page, &nx);
            for (size_t k = 0; k < n; k++) {
                sp_jobrec_t r;
                sp_engine_view(e, page[k], &r);
                assert_true(r.run_at > now);
            }
            after = nx;
        } while (nx);
    }
    assert_int_equal(sp_engine_next_deadline(e), INT64_MAX);
    sp_engine_free(e);
}

static void test_lease_expiry_redelivers(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    sp_job_spec_t s = spec_at(T0, "t", 5);
    s.timeout_ms = 1000;
    uint64_t id = sp_ejob_id(submit_spec(e, T0, "q", &s));
    uint64_t tok;
    assert_int_equal(lease1(e, T0, "q", &tok), id);
    assert_int_equal(sp_engine_next_deadline(e), T0 + 1001);
    /* The lease is honoured up to lease_expires_at inclusive. */
    sp_engine_tick(e, T0 + 1000);
    assert_int_equal(state_of(e, id), SP_STATE_RUNNING);
    sp_engine_tick(e, T0 + 1001);
    sp_jobrec_t r = view(e, id);
    assert_int_equal(r.state, SP_STATE_QUEUED);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(r.run_at, T0 + 1001);
    assert_int_equal(r.lease, 0);
    assert_int_equal(r.lease_expires_at, -1);
    assert_true(has_error(&r, "lease expired"));
    assert_int_equal(stats(e, "q", T0).retried, 1);
    uint64_t tok2;
    assert_int_equal(lease1(e, T0 + 1002, "q", &tok2), id);
    assert_int_not_equal(tok2, tok);
    assert_int_equal(view(e, id).attempts, 2);
    sp_ejob_t *j;
    const char *why = NULL;
    assert_int_equal(sp_engine_ack(e, T0 + 1003, id, tok, NULL, 0, &j, &why), SP_ECONFLICT);
    assert_string_equal(why, "lease is not the job's current lease");
    assert_int_equal(sp_engine_ack(e, T0 + 1003, id, tok2, "7", 1, &j, &why), 0);
    r = view(e, id);
    assert_int_equal(r.state, SP_STATE_SUCCEEDED);
    assert_memory_equal(r.result, "7", 1);
    assert_int_equal(r.finished_at, T0 + 1003);
    sp_engine_free(e);
}

static void test_lease_expiry_last_attempt_fails(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    sp_job_spec_t s = spec_at(T0, "t", 5);
    s.timeout_ms = 100;
    s.max_attempts = 1;
    uint64_t id = sp_ejob_id(submit_spec(e, T0, "q", &s));
    assert_int_equal(lease1(e, T0, "q", NULL), id);
    sp_engine_tick(e, T0 + 101);
    sp_jobrec_t r = view(e, id);
    assert_int_equal(r.state, SP_STATE_FAILED);
    assert_int_equal(r.finished_at, T0 + 101);
    assert_true(has_error(&r, "lease expired"));
    sp_queue_stats_t st = stats(e, "q", T0);
    assert_int_equal(st.failed, 1);
    assert_int_equal(st.retried, 0);
    sp_engine_free(e);
}

/* ---- leases ------------------------------------------------------------------------------ */

static void test_fencing(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    sp_job_spec_t s = spec_at(T0, "t", 5);
    s.timeout_ms = 1000;
    uint64_t id = sp_ejob_id(submit_spec(e, T0, "q", &s));
    const char *why;
    sp_ejob_t *j;
    assert_int_equal(sp_engine_ack(e, T0, 999, 1, NULL, 0, &j, &why), SP_ENOTFOUND);
    why = NULL;
    assert_int_equal(sp_engine_ack(e, T0, id, 1, NULL, 0, &j, &why), SP_ECONFLICT);
    assert_string_equal(why, "job is queued, not running");
    uint64_t tok;
    assert_int_equal(lease1(e, T0, "q", &tok), id);
    uint64_t bad = tok + 1;
    assert_int_equal(sp_engine_ack(e, T0, id, bad, NULL, 0, &j, &why), SP_ECONFLICT);
    assert_int_equal(sp_engine_fail(e, T0, id, bad, NULL, 0, true, -1, &j, &why), SP_ECONFLICT);
    assert_int_equal(sp_engine_heartbeat(e, T0, id, bad, -1, &j, &why), SP_ECONFLICT);
    assert_int_equal(sp_engine_release(e, T0, id, bad, &j, NULL), SP_ECONFLICT);
    assert_string_equal(why, "lease is not the job's current lease");
    assert_int_equal(state_of(e, id), SP_STATE_RUNNING);
    /* Past lease_expires_at the right token is refused before any tick has run. */
    why = NULL;
    assert_int_equal(sp_engine_ack(e, T0 + 1001, id, tok, NULL, 0, &j, &why), SP_ECONFLICT);
    assert_string_equal(why, "lease expired");
    assert_int_equal(sp_engine_heartbeat(e, T0 + 1001, id, tok, -1, &j, &why), SP_ECONFLICT);
    assert_int_equal(sp_engine_fail(e, T0 + 1001, id, tok, NULL, 0, true, -1, &j, &why),
                     SP_ECONFLICT);
    assert_int_equal(sp_engine_release(e, T0 + 1001, id, tok, &j, &why), SP_ECONFLICT);
    assert_int_equal(state_of(e, id), SP_STATE_RUNNING);
    /* At lease_expires_at exactly it still holds. */
    assert_int_equal(sp_engine_heartbeat(e, T0 + 1000, id, tok, -1, &j, &why), 0);
    assert_int_equal(view(e, id).lease_expires_at, T0 + 2000);
    sp_engine_free(e);
}

static void test_repeated_ack(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    uint64_t id = submit(e, T0, "q", 5);
    uint64_t tok;
    assert_int_equal(lease1(e, T0, "q", &tok), id);
    sp_ejob_t *j = NULL;
    assert_int_equal(sp_engine_ack(e, T0 + 1, id, tok, "{\"a\":1}", 7, &j, NULL), 0);
    assert_int_equal(sp_ejob_id(j), id);
    cb.change_calls = 0;
    j = NULL;
    assert_int_equal(sp_engine_ack(e, T0 + 2, id, tok, "other", 5, &j, NULL), 0);
    assert_non_null(j);
    assert_int_equal(cb.change_calls, 0);
    sp_jobrec_t r = view(e, id);
    assert_int_equal(r.result_len, 7);
    assert_memory_equal(r.result, "{\"a\":1}", 7);
    assert_int_equal(r.finished_at, T0 + 1);
    assert_int_equal(r.lease, 0);
    assert_int_equal(stats(e, "q", T0).succeeded, 1);
    const char *why = NULL;
    assert_int_equal(sp_engine_ack(e, T0 + 2, id, tok + 1, NULL, 0, &j, &why), SP_ECONFLICT);
    assert_string_equal(why, "job is already succeeded");
    assert_int_equal(sp_engine_fail(e, T0 + 2, id, tok, NULL, 0, true, -1, &j, &why), SP_ECONFLICT);
    assert_string_equal(why, "job is already succeeded");
    /* NULL result means JSON null. */
    id = submit(e, T0, "q", 5);
    assert_int_equal(lease1(e, T0, "q", &tok), id);
    assert_int_equal(sp_engine_ack(e, T0, id, tok, NULL, 0, &j, NULL), 0);
    assert_null(view(e, id).result);
    sp_engine_free(e);
}

/* Leases job `id`, fails it with backoff and returns the delay until its new run_at. */
static int64_t fail_with_backoff(sp_engine_t *e, int64_t now, uint64_t id)
{
    uint64_t tok;
    assert_int_equal(lease1(e, now, "q", &tok), id);
    sp_ejob_t *j;
    assert_int_equal(sp_engine_fail(e, now, id, tok, "boom", 4, true, -1, &j, NULL), 0);
    sp_jobrec_t r = view(e, id);
    assert_int_equal(r.state, SP_STATE_SCHEDULED);
    assert_true(has_error(&r, "boom"));
    return r.run_at - now;
}

static void test_fail_backoff(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    sp_job_spec_t s = spec_at(T0, "t", 5);
    s.max_attempts = 4;
    s.backoff_ms = 1000;
    uint64_t id = sp_ejob_id(submit_spec(e, T0, "q", &s));
    int64_t now = T0;
    for (int attempt = 1; attempt <= 3; attempt++) {
        int64_t base = 1000LL << (attempt - 1);
        int64_t d = fail_with_backoff(e, now, id);
        assert_in_range(d, base, base + base / 10);
        assert_int_equal(sp_engine_next_deadline(e), now + d);
        sp_engine_tick(e, now + d - 1);
        assert_int_equal(state_of(e, id), SP_STATE_SCHEDULED);
        now += d;
        sp_engine_tick(e, now);
        assert_int_equal(state_of(e, id), SP_STATE_QUEUED);
    }
    assert_int_equal(stats(e, "q", now).retried, 3);
    /* The fourth attempt was the last: the job ends failed. */
    uint64_t tok;
    sp_ejob_t *j;
    assert_int_equal(lease1(e, now, "q", &tok), id);
    assert_int_equal(sp_engine_fail(e, now, id, tok, NULL, 0, true, -1, &j, NULL), 0);
    sp_jobrec_t r = view(e, id);
    assert_int_equal(r.state, SP_STATE_FAILED);
    assert_int_equal(r.attempts, 4);
    assert_true(has_error(&r, "failed"));
    sp_queue_stats_t st = stats(e, "q", now);
    assert_int_equal(st.failed, 1);
    assert_int_equal(st.retried, 3);

    /* Jitter stays within [base, base * 1.1] over many draws. */
    bool varied = false;
    int64_t first = -1;
    for (int i = 0; i < 300; i++) {
        uint64_t k = sp_ejob_id(submit_spec(e, now, "q", &s));
        int64_t d = fail_with_backoff(e, now, k);
        assert_in_range(d, 1000, 1100);
        if (first < 0) first = d;
        if (d != first) varied = true;
    }
    assert_true(varied);
    sp_engine_free(e);
}

static void test_fail_backoff_cap_and_zero(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    sp_job_spec_t s = spec_at(T0, "t", 5);
    s.max_attempts = 100;
    s.backoff_ms = SP_BACKOFF_MS_MAX;
    uint64_t id = sp_ejob_id(submit_spec(e, T0, "q", &s));
    int64_t d = fail_with_backoff(e, T0, id);
    assert_in_range(d, 3600000, 3960000);
    /* After many attempts the shift would overflow; the delay stays capped. */
    sp_engine_tick(e, T0 + d);
    for (int i = 0; i < 60; i++) {
        uint64_t tok;
        sp_ejob_t *j;
        assert_int_equal(lease1(e, T0, "q", &tok), id);
        assert_int_equal(sp_engine_fail(e, T0, id, tok, "x", 1, true, 0, &j, NULL), 0);
        assert_int_equal(state_of(e, id), SP_STATE_QUEUED);
    }
    assert_int_equal(view(e, id).attempts, 61);
    d = fail_with_backoff(e, T0, id);
    assert_in_range(d, 3600000, 3960000);

    /* backoff_ms 0: queued again at once. */
    s.backoff_ms = 0;
    uint64_t z = sp_ejob_id(submit_spec(e, T0, "z", &s));
    uint64_t tok;
    sp_ejob_t *j;
    assert_int_equal(lease1(e, T0, "z", &tok), z);
    assert_int_equal(sp_engine_fail(e, T0 + 5, z, tok, NULL, 0, true, -1, &j, NULL), 0);
    sp_jobrec_t r = view(e, z);
    assert_int_equal(r.state, SP_STATE_QUEUED);
    assert_int_equal(r.run_at, T0 + 5);
    sp_engine_free(e);
}

static void test_fail_retry_in_and_no_retry(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    uint64_t id = submit(e, T0, "q", 5);
    uint64_t tok;
    sp_ejob_t *j;
    assert_int_equal(lease1(e, T0, "q", &tok), id);
    assert_int_equal(sp_engine_fail(e, T0, id, tok, "e", 1, true, 500, &j, NULL), 0);
    sp_jobrec_t r = view(e, id);
    assert_int_equal(r.state, SP_STATE_SCHEDULED);
    assert_int_equal(r.run_at, T0 + 500);
    sp_engine_tick(e, T0 + 500);
    assert_int_equal(lease1(e, T0 + 500, "q", &tok), id);
    assert_int_equal(sp_engine_fail(e, T0 + 600, id, tok, "e", 1, true, 0, &j, NULL), 0);
    r = view(e, id);
    assert_int_equal(r.state, SP_STATE_QUEUED);
    assert_int_equal(r.run_at, T0 + 600);
    assert_int_equal(stats(e, "q", T0).retried, 2);
    /* retry=false ends it failed even with attempts left. */
    assert_int_equal(lease1(e, T0 + 600, "q", &tok), id);
    assert_int_equal(view(e, id).attempts, 3);
    uint64_t id2 = submit(e, T0, "q", 5);
    assert_int_equal(sp_engine_fail(e, T0 + 700, id, tok, "final", 5, true, 0, &j, NULL), 0);
    assert_int_equal(state_of(e, id), SP_STATE_FAILED);
    assert_int_equal(lease1(e, T0, "q", &tok), id2);
    assert_int_equal(sp_engine_fail(e, T0, id2, tok, "nope", 4, false, -1, &j, NULL), 0);
    r = view(e, id2);
    assert_int_equal(r.state, SP_STATE_FAILED);
    assert_int_equal(r.attempts, 1);
    assert_true(has_error(&r, "nope"));
    sp_queue_stats_t st = stats(e, "q", T0);
    assert_int_equal(st.failed, 2);
    assert_int_equal(st.retried, 2);
    assert_int_equal(st.leased, 4);
    sp_engine_free(e);
}

static void test_heartbeat(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    sp_job_spec_t s = spec_at(T0, "t", 5);
    s.timeout_ms = 1000;
    uint64_t id = sp_ejob_id(submit_spec(e, T0, "q", &s));
    uint64_t tok;
    sp_ejob_t *j;
    assert_int_equal(lease1(e, T0, "q", &tok), id);
    assert_int_equal(sp_engine_heartbeat(e, T0 + 900, id, tok, 5000, &j, NULL), 0);
    assert_int_equal(view(e, id).lease_expires_at, T0 + 5900);
    assert_int_equal(sp_engine_next_deadline(e), T0 + 5901);
    sp_engine_tick(e, T0 + 3000);
    assert_int_equal(state_of(e, id), SP_STATE_RUNNING);
    assert_int_equal(sp_engine_heartbeat(e, T0 + 5000, id, tok, -1, &j, NULL), 0);
    assert_int_equal(view(e, id).lease_expires_at, T0 + 6000);
    assert_int_equal(sp_engine_next_deadline(e), T0 + 6001);
    assert_int_equal(sp_engine_ack(e, T0 + 5999, id, tok, NULL, 0, &j, NULL), 0);
    assert_int_equal(sp_engine_next_deadline(e), T0 + 5999 + 86400000LL);
    sp_engine_free(e);
}

static void test_release(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    uint64_t a = submit(e, T0, "q", 5);
    uint64_t b = submit(e, T0, "q", 5);
    uint64_t tok;
    sp_ejob_t *j;
    assert_int_equal(lease1(e, T0, "q", &tok), a);
    cb.ready_calls = 0;
    assert_int_equal(sp_engine_release(e, T0 + 10, a, tok, &j, NULL), 0);
    assert_int_equal(cb.ready_calls, 1);
    sp_jobrec_t r = view(e, a);
    assert_int_equal(r.state, SP_STATE_QUEUED);
    assert_int_equal(r.attempts, 0);
    assert_int_equal(r.run_at, T0 + 10);
    assert_int_equal(r.lease, 0);
    expect_counts(e, "q", 0, 2, 0, 0, 0, 0);
    assert_int_equal(stats(e, "q", T0).retried, 0);
    /* The old token is dead; the job goes back behind b (FIFO by when it became ready). */
    assert_int_equal(sp_engine_ack(e, T0 + 11, a, tok, NULL, 0, &j, NULL), SP_ECONFLICT);
    assert_int_equal(lease1(e, T0 + 20, "q", NULL), b);
    assert_int_equal(lease1(e, T0 + 20, "q", NULL), a);
    assert_int_equal(view(e, a).attempts, 1);
    sp_engine_free(e);
}

/* ---- cancel and retry -------------------------------------------------------------------- */

static void test_cancel_each_state(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    sp_job_spec_t s = spec_at(T0 + 1000, "t", 5);
    uint64_t sched = sp_ejob_id(submit_spec(e, T0, "q", &s));
    uint64_t run = submit(e, T0, "q", 9);
    uint64_t queued = submit(e, T0, "q", 5);
    uint64_t tok;
    assert_int_equal(lease1(e, T0, "q", &tok), run);
    sp_ejob_t *j = NULL;
    const char *why = NULL;
    assert_int_equal(sp_engine_cancel(e, T0 + 1, sched, &j, &why), 0);
    assert_int_equal(sp_ejob_state(j), SP_STATE_CANCELED);
    assert_int_equal(view(e, sched).finished_at, T0 + 1);
    assert_int_equal(sp_engine_next_deadline(e), T0 + SP_DEFAULT_TIMEOUT_MS + 1);
    assert_int_equal(sp_engine_cancel(e, T0 + 2, queued, &j, &why), 0);
    assert_int_equal(state_of(e, queued), SP_STATE_CANCELED);
    assert_int_equal(cb.last_from, SP_STATE_QUEUED);
    assert_int_equal(cb.last_to, SP_STATE_CANCELED);
    cb.change_calls = 0;
    assert_int_equal(sp_engine_cancel(e, T0 + 3, run, &j, &why), 0);
    assert_int_equal(cb.change_calls, 0);
    sp_jobrec_t r = view(e, run);
    assert_int_equal(r.state, SP_STATE_RUNNING);
    assert_true(r.cancel_requested);
    assert_int_equal(sp_engine_heartbeat(e, T0 + 4, run, tok, -1, &j, &why), 0);
    assert_true(view(e, run).cancel_requested);
    expect_counts(e, "q", 0, 0, 1, 0, 0, 2);
    assert_int_equal(stats(e, "q", T0).canceled, 2);
    assert_int_equal(sp_engine_cancel(e, T0 + 5, queued, &j, &why), SP_ECONFLICT);
    assert_string_equal(why, "job is already canceled");
    assert_int_equal(sp_engine_cancel(e, T0, 12345, &j, &why), SP_ENOTFOUND);
    /* Failing with cancel requested ends it canceled, never retried. */
    assert_int_equal(sp_engine_fail(e, T0 + 6, run, tok, "stopped", 7, true, 0, &j, &why), 0);
    assert_int_equal(state_of(e, run), SP_STATE_CANCELED);
    sp_queue_stats_t st = stats(e, "q", T0);
    assert_int_equal(st.canceled, 3);
    assert_int_equal(st.retried, 0);
    assert_int_equal(sp_engine_cancel(e, T0, run, &j, &why), SP_ECONFLICT);
    check_recount(e);
    sp_engine_free(e);
}

static void test_cancel_requested_outcomes(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    sp_job_spec_t s = spec_at(T0, "t", 5);
    s.timeout_ms = 100;
    uint64_t exp = sp_ejob_id(submit_spec(e, T0, "q", &s));
    uint64_t rel = sp_ejob_id(submit_spec(e, T0, "q", &s));
    uint64_t ack = sp_ejob_id(submit_spec(e, T0, "q", &s));
    uint64_t t_exp, t_rel, t_ack;
    assert_int_equal(lease1(e, T0, "q", &t_exp), exp);
    assert_int_equal(lease1(e, T0, "q", &t_rel), rel);
    assert_int_equal(lease1(e, T0, "q", &t_ack), ack);
    sp_ejob_t *j;
    assert_int_equal(sp_engine_cancel(e, T0, exp, &j, NULL), 0);
    assert_int_equal(sp_engine_cancel(e, T0, rel, &j, NULL), 0);
    assert_int_equal(sp_engine_cancel(e, T0, ack, &j, NULL), 0);
    assert_int_equal(sp_engine_release(e, T0 + 10, rel, t_rel, &j, NULL), 0);
    assert_int_equal(state_of(e, rel), SP_STATE_CANCELED);
    assert_int_equal(sp_engine_ack(e, T0 + 10, ack, t_ack, "1", 1, &j, NULL), 0);
    assert_int_equal(state_of(e, ack), SP_STATE_SUCCEEDED);
    sp_engine_tick(e, T0 + 101);
    sp_jobrec_t r = view(e, exp);
    assert_int_equal(r.state, SP_STATE_CANCELED);
    assert_true(has_error(&r, "lease expired"));
    sp_queue_stats_t st = stats(e, "q", T0);
    assert_int_equal(st.canceled, 2);
    assert_int_equal(st.succeeded, 1);
    assert_int_equal(st.retried, 0);
    sp_engine_free(e);
}

static void test_retry(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    sp_job_spec_t s = spec_at(T0, "t", 5);
    s.max_attempts = 1;
    uint64_t f = sp_ejob_id(submit_spec(e, T0, "q", &s));
    uint64_t c = submit(e, T0, "q", 5);
    uint64_t tok;
    sp_ejob_t *j;
    const char *why = NULL;
    assert_int_equal(sp_engine_retry(e, T0, c, &j, &why), SP_ECONFLICT);
    assert_string_equal(why, "job is queued, not failed or canceled");
    assert_int_equal(lease1(e, T0, "q", &tok), f);
    assert_int_equal(sp_engine_retry(e, T0, f, &j, &why), SP_ECONFLICT);
    assert_int_equal(sp_engine_fail(e, T0 + 1, f, tok, "bad", 3, true, -1, &j, NULL), 0);
    assert_int_equal(state_of(e, f), SP_STATE_FAILED);
    assert_int_equal(sp_engine_cancel(e, T0 + 1, c, &j, NULL), 0);
    cb.ready_calls = 0;
    assert_int_equal(sp_engine_retry(e, T0 + 2, f, &j, &why), 0);
    assert_int_equal(cb.ready_calls, 1);
    sp_jobrec_t r = view(e, f);
    assert_int_equal(r.state, SP_STATE_QUEUED);
    assert_int_equal(r.attempts, 0);
    assert_int_equal(r.finished_at, -1);
    assert_int_equal(r.run_at, T0 + 2);
    assert_true(has_error(&r, "bad"));
    assert_int_equal(sp_engine_retry(e, T0 + 2, c, &j, &why), 0);
    assert_int_equal(state_of(e, c), SP_STATE_QUEUED);
    assert_int_equal(sp_engine_retry(e, T0, 999, &j, &why), SP_ENOTFOUND);
    expect_counts(e, "q", 0, 2, 0, 0, 0, 0);
    /* The retried failed job runs again and can succeed; then retry is a conflict. */
    assert_int_equal(lease1(e, T0 + 3, "q", &tok), f);
    assert_int_equal(sp_engine_ack(e, T0 + 3, f, tok, NULL, 0, &j, NULL), 0);
    assert_int_equal(sp_engine_retry(e, T0 + 4, f, &j, &why), SP_ECONFLICT);
    assert_string_equal(why, "job is succeeded, not failed or canceled");
    /* A retried job is not forgotten by the retention of its first finish. */
    sp_engine_tick(e, T0 + 1 + 86400000LL);
    assert_non_null(sp_engine_get(e, c));
    sp_engine_free(e);
}

/* ---- idempotency, depth, retention ------------------------------------------------------- */

static void test_idempotency(void **state)
{
    (void)state;
    sp_engine_t *e = engine_with(-1, 10000, 0);
    sp_job_spec_t s = spec_at(T0, "t", 5);
    const char key[] = {'k', 0, 'y'}; /* keys are bytes, NUL included */
    set_key(&s, key, sizeof(key));
    sp_ejob_t *j1, *j2, *j3;
    bool existed;
    assert_int_equal(sp_engine_submit(e, T0, "q", 1, &s, &j1, &existed), 0);
    assert_false(existed);
    sp_job_spec_t s2 = spec_at(T0, "other", 1);
    set_key(&s2, key, sizeof(key));
    assert_int_equal(sp_engine_submit(e, T0 + 5, "q", 1, &s2, &j2, &existed), 0);
    assert_true(existed);
    assert_ptr_equal(j1, j2);
    assert_int_equal(sp_engine_job_count(e), 1);
    assert_int_equal(stats(e, "q", T0).enqueued, 1);
    sp_jobrec_t r = view(e, sp_ejob_id(j1));
    assert_int_equal(r.idem_key_len, 3);
    assert_memory_equal(r.idem_key, key, 3);
    /* A key that differs by one byte, and the same key in another queue, are new jobs. */
    set_key(&s2, "k\0z", 3);
    assert_int_equal(sp_engine_submit(e, T0, "q", 1, &s2, &j3, &existed), 0);
    assert_false(existed);
    assert_int_equal(sp_engine_submit(e, T0, "other", 5, &s, &j3, &existed), 0);
    assert_false(existed);
    assert_ptr_not_equal(j3, j1);
    /* The key lives idem_ttl_ms from the first submission. */
    assert_int_equal(sp_engine_next_deadline(e), T0 + 10000);
    assert_int_equal(sp_engine_submit(e, T0 + 9999, "q", 1, &s, &j2, &existed), 0);
    assert_true(existed);
    sp_engine_tick(e, T0 + 10000);
    assert_int_equal(sp_engine_submit(e, T0 + 10000, "q", 1, &s, &j2, &existed), 0);
    assert_false(existed);
    assert_ptr_not_equal(j2, j1);
    /* The old job still shows its key; the new one answers for it now. */
    assert_int_equal(view(e, sp_ejob_id(j1)).idem_key_len, 3);
    /* Expiry holds even when no tick ran in between. */
    assert_int_equal(sp_engine_submit(e, T0 + 20000, "q", 1, &s, &j3, &existed), 0);
    assert_false(existed);
    assert_ptr_not_equal(j3, j2);
    /* A job without a key shows none. */
    uint64_t plain = submit(e, T0, "q", 5);
    assert_null(view(e, plain).idem_key);
    check_recount(e);
    sp_engine_free(e);
}

static void test_idempotency_forgotten_with_job(void **state)
{
    (void)state;
    sp_engine_t *e = engine_with(1000, -1, 0);
    sp_job_spec_t s = spec_at(T0, "t", 5);
    set_key(&s, "abc", 3);
    sp_ejob_t *j, *j2;
    bool existed;
    assert_int_equal(sp_engine_submit(e, T0, "q", 1, &s, &j, &existed), 0);
    uint64_t id = sp_ejob_id(j);
    /* Purged: the key goes with it. */
    uint64_t deleted;
    assert_int_equal(sp_engine_purge(e, T0, sp_ejob_queue(j), SP_STATE_QUEUED, &deleted), 0);
    assert_int_equal(deleted, 1);
    assert_null(sp_engine_get(e, id));
    assert_int_equal(sp_engine_submit(e, T0, "q", 1, &s, &j, &existed), 0);
    assert_false(existed);
    /* Forgotten after retention: the key goes with it. */
    id = sp_ejob_id(j);
    uint64_t tok;
    assert_int_equal(lease1(e, T0, "q", &tok), id);
    assert_int_equal(sp_engine_ack(e, T0, id, tok, NULL, 0, &j, NULL), 0);
    sp_engine_tick(e, T0 + 1000);
    assert_null(sp_engine_get(e, id));
    assert_int_equal(sp_engine_submit(e, T0 + 1000, "q", 1, &s, &j2, &existed), 0);
    assert_false(existed);
    assert_int_equal(sp_engine_job_count(e), 1);
    sp_engine_free(e);
}

static void test_batch(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    sp_job_spec_t specs[5];
    for (int i = 0; i < 5; i++) specs[i] = spec_at(T0, "t", i);
    set_key(&specs[0], "a", 1);
    set_key(&specs[2], "a", 1);
    set_key(&specs[3], "b", 1);
    specs[4].run_at = T0 + 100;
    sp_ejob_t *out[5];
    bool existed[5];
    cb.ready_calls = 0;
    cb.change_calls = 0;
    assert_int_equal(sp_engine_submit_batch(e, T0, "q", 1, specs, 5, out, existed), 0);
    assert_int_equal(cb.ready_calls, 1);
    assert_int_equal(cb.change_calls, 4);
    assert_int_equal(sp_engine_job_count(e), 4);
    assert_ptr_equal(out[0], out[2]);
    assert_false(existed[0]);
    assert_true(existed[2]);
    assert_false(existed[1]);
    assert_false(existed[3]);
    assert_int_equal(sp_ejob_state(out[4]), SP_STATE_SCHEDULED);
    /* Ids follow the order of the batch. */
    assert_int_equal(sp_ejob_id(out[0]), 1);
    assert_int_equal(sp_ejob_id(out[1]), 2);
    assert_int_equal(sp_ejob_id(out[3]), 3);
    assert_int_equal(sp_ejob_id(out[4]), 4);
    assert_int_equal(stats(e, "q", T0).enqueued, 4);
    /* Again: the keyed entries are repeats, the others new. */
    assert_int_equal(sp_engine_submit_batch(e, T0, "q", 1, specs, 5, out, existed), 0);
    assert_true(existed[0] && existed[2] && existed[3]);
    assert_false(existed[1] || existed[4]);
    assert_int_equal(sp_engine_job_count(e), 6);
    assert_int_equal(sp_engine_submit_batch(e, T0, "q", 1, specs, 0, out, existed), 0);
    check_recount(e);
    sp_engine_free(e);
}

static void test_max_depth(void **state)
{
    (void)state;
    sp_engine_t *e = engine_with(-1, -1, 3);
    sp_job_spec_t s = spec_at(T0, "t", 5);
    set_key(&s, "k", 1);
    sp_ejob_t *j, *keyed;
    bool existed;
    assert_int_equal(sp_engine_submit(e, T0, "q", 1, &s, &keyed, &existed), 0);
    sp_job_spec_t d = spec_at(T0 + 50, "t", 5);
    submit_spec(e, T0, "q", &d);
    uint64_t running = submit(e, T0, "q", 9);
    uint64_t tok;
    assert_int_equal(lease1(e, T0, "q", &tok), running);
    sp_job_spec_t p = spec_at(T0, "t", 5);
    assert_int_equal(sp_engine_submit(e, T0, "q", 1, &p, &j, &existed), SP_EFULL);
    assert_int_equal(sp_engine_job_count(e), 3);
    /* Other queues have their own limit. */
    submit(e, T0, "other", 5);
    /* An idempotent repeat stores nothing, so it passes at the limit. */
    assert_int_equal(sp_engine_submit(e, T0, "q", 1, &s, &j, &existed), 0);
    assert_true(existed);
    assert_ptr_equal(j, keyed);
    sp_job_spec_t batch[2] = {s, s};
    sp_ejob_t *out[2];
    bool ex[2];
    assert_int_equal(sp_engine_submit_batch(e, T0, "q", 1, batch, 2, out, ex), 0);
    assert_true(ex[0] && ex[1]);
    /* Finishing one makes room for exactly one: a batch of two is refused whole. */
    sp_ejob_t *jj;
    assert_int_equal(sp_engine_ack(e, T0, running, tok, NULL, 0, &jj, NULL), 0);
    batch[0] = p;
    batch[1] = p;
    size_t before = sp_engine_job_count(e);
    cb.change_calls = 0;
    assert_int_equal(sp_engine_submit_batch(e, T0, "q", 1, batch, 2, out, ex), SP_EFULL);
    assert_int_equal(sp_engine_job_count(e), before);
    assert_int_equal(cb.change_calls, 0);
    assert_int_equal(stats(e, "q", T0).enqueued, 3);
    batch[1] = s; /* one new, one repeat: fits */
    assert_int_equal(sp_engine_submit_batch(e, T0, "q", 1, batch, 2, out, ex), 0);
    assert_false(ex[0]);
    assert_true(ex[1]);
    assert_int_equal(sp_engine_submit(e, T0, "q", 1, &p, &j, &existed), SP_EFULL);
    check_recount(e);
    sp_engine_free(e);
}

static void test_retention(void **state)
{
    (void)state;
    sp_engine_t *e = engine_with(1000, -1, 0);
    uint64_t a = submit(e, T0, "q", 5);
    uint64_t b = submit(e, T0, "q", 5);
    uint64_t c = submit(e, T0, "q", 5);
    uint64_t tok;
    sp_ejob_t *j;
    assert_int_equal(lease1(e, T0, "q", &tok), a);
    assert_int_equal(sp_engine_ack(e, T0 + 10, a, tok, "{\"big\":true}", 12, &j, NULL), 0);
    assert_int_equal(sp_engine_cancel(e, T0 + 20, b, &j, NULL), 0);
    assert_int_equal(sp_engine_next_deadline(e), T0 + 1010);
    assert_int_equal(sp_engine_tick(e, T0 + 1009), T0 + 1010);
    assert_non_null(sp_engine_get(e, a));
    assert_int_equal(sp_engine_tick(e, T0 + 1010), T0 + 1020);
    assert_null(sp_engine_get(e, a));
    assert_non_null(sp_engine_get(e, b));
    assert_int_equal(sp_engine_tick(e, T0 + 5000), INT64_MAX);
    assert_null(sp_engine_get(e, b));
    assert_int_equal(sp_engine_job_count(e), 1);
    assert_int_equal(state_of(e, c), SP_STATE_QUEUED);
    /* Totals outlive the jobs; counts do not. */
    sp_queue_stats_t st = stats(e, "q", T0);
    assert_int_equal(st.succeeded, 1);
    assert_int_equal(st.canceled, 1);
    expect_counts(e, "q", 0, 1, 0, 0, 0, 0);
    check_recount(e);
    sp_engine_free(e);
}

/* ---- counts, paging, purge, callbacks ---------------------------------------------------- */

static void test_counts_and_totals(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    sp_job_spec_t s = spec_at(T0 + 100, "t", 5);
    s.max_attempts = 2;
    uint64_t d = sp_ejob_id(submit_spec(e, T0, "q", &s));
    expect_counts(e, "q", 1, 0, 0, 0, 0, 0);
    s.run_at = T0;
    uint64_t a = sp_ejob_id(submit_spec(e, T0, "q", &s));
    expect_counts(e, "q", 1, 1, 0, 0, 0, 0);
    uint64_t tok;
    sp_ejob_t *j;
    assert_int_equal(lease1(e, T0, "q", &tok), a);
    expect_counts(e, "q", 1, 0, 1, 0, 0, 0);
    assert_int_equal(sp_engine_fail(e, T0, a, tok, "x", 1, true, 50, &j, NULL), 0);
    expect_counts(e, "q", 2, 0, 0, 0, 0, 0);
    sp_engine_tick(e, T0 + 100);
    expect_counts(e, "q", 0, 2, 0, 0, 0, 0);
    assert_int_equal(lease1(e, T0 + 100, "q", &tok), a);
    assert_int_equal(sp_engine_fail(e, T0 + 100, a, tok, "x", 1, true, 50, &j, NULL), 0);
    expect_counts(e, "q", 0, 1, 0, 0, 1, 0);
    assert_int_equal(lease1(e, T0 + 100, "q", &tok), d);
    assert_int_equal(sp_engine_ack(e, T0 + 100, d, tok, NULL, 0, &j, NULL), 0);
    expect_counts(e, "q", 0, 0, 0, 1, 1, 0);
    assert_int_equal(sp_engine_retry(e, T0 + 100, a, &j, NULL), 0);
    assert_int_equal(sp_engine_cancel(e, T0 + 100, a, &j, NULL), 0);
    expect_counts(e, "q", 0, 0, 0, 1, 0, 1);
    sp_queue_stats_t st = stats(e, "q", T0);
    assert_int_equal(st.enqueued, 2);
    assert_int_equal(st.succeeded, 1);
    assert_int_equal(st.failed, 1);
    assert_int_equal(st.retried, 1);
    assert_int_equal(st.leased, 3);
    assert_int_equal(st.canceled, 1);
    assert_false(st.paused);
    assert_int_equal(st.name_len, 1);
    assert_memory_equal(st.name, "q", 1);
    sp_engine_free(e);
}

static void test_oldest_queued_age(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    uint64_t a = submit(e, T0, "q", 1);
    uint64_t b = submit(e, T0 + 300, "q", 9);
    assert_int_equal(stats(e, "q", T0 + 1000).oldest_queued_age_ms, 1000);
    assert_int_equal(lease1(e, T0 + 1000, "q", NULL), b);
    assert_int_equal(stats(e, "q", T0 + 1000).oldest_queued_age_ms, 1000);
    assert_int_equal(lease1(e, T0 + 1000, "q", NULL), a);
    assert_int_equal(stats(e, "q", T0 + 1000).oldest_queued_age_ms, 0);
    submit(e, T0 + 2000, "q", 5);
    assert_int_equal(stats(e, "q", T0 + 2500).oldest_queued_age_ms, 500);
    /* A clock that went backwards never gives a negative age. */
    assert_int_equal(stats(e, "q", T0).oldest_queued_age_ms, 0);
    sp_engine_free(e);
}

static void test_list_paging(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    uint64_t ids[10];
    for (int i = 0; i < 10; i++) ids[i] = submit(e, T0, i % 3 == 0 ? "other" : "q", 5);
    sp_equeue_t *q = sp_engine_queue_find(e, "q", 1);
    /* q holds ids 2,3,5,6,8,9 */
    sp_ejob_t *out[4];
    uint64_t next;
    size_t n = sp_engine_list(e, q, -1, 0, 4, out, &next);
    assert_int_equal(n, 4);
    assert_int_equal(sp_ejob_id(out[0]), ids[1]);
    assert_int_equal(sp_ejob_id(out[3]), ids[5]);
    assert_int_equal(next, ids[5]);
    n = sp_engine_list(e, q, -1, next, 4, out, &next);
    assert_int_equal(n, 2);
    assert_int_equal(sp_ejob_id(out[0]), ids[7]);
    assert_int_equal(next, 0);
    /* An exactly full last page says there is no more. */
    n = sp_engine_list(e, q, -1, ids[2], 4, out, &next);
    assert_int_equal(n, 4);
    assert_int_equal(next, 0);
    /* State filter: lease two, list the running ones and the queued ones. */
    uint64_t tok;
    assert_int_equal(lease1(e, T0, "q", &tok), ids[1]);
    assert_int_equal(lease1(e, T0, "q", &tok), ids[2]);
    n = sp_engine_list(e, q, SP_STATE_RUNNING, 0, 1, out, &next);
    assert_int_equal(n, 1);
    assert_int_equal(sp_ejob_id(out[0]), ids[1]);
    assert_int_equal(next, ids[1]);
    n = sp_engine_list(e, q, SP_STATE_RUNNING, next, 1, out, &next);
    assert_int_equal(sp_ejob_id(out[0]), ids[2]);
    assert_int_equal(next, 0);
    n = sp_engine_list(e, q, SP_STATE_QUEUED, 0, 4, out, &next);
    assert_int_equal(n, 4);
    assert_int_equal(sp_ejob_id(out[0]), ids[4]);
    n = sp_engine_list(e, q, SP_STATE_FAILED, 0, 4, out, &next);
    assert_int_equal(n, 0);
    assert_int_equal(next, 0);
    /* A cursor whose job is gone, or belongs to another queue, still pages on by id. */
    uint64_t deleted;
    assert_int_equal(sp_engine_cancel(e, T0, ids[4], NULL, NULL), 0);
    assert_int_equal(sp_engine_purge(e, T0, q, SP_STATE_CANCELED, &deleted), 0);
    n = sp_engine_list(e, q, -1, ids[4], 4, out, &next);
    assert_int_equal(n, 3);
    assert_int_equal(sp_ejob_id(out[0]), ids[5]);
    n = sp_engine_list(e, q, -1, ids[6], 4, out, &next);
    assert_int_equal(n, 2);
    assert_int_equal(sp_ejob_id(out[0]), ids[7]);
    n = sp_engine_list(e, q, -1, 1000, 4, out, &next);
    assert_int_equal(n, 0);
    assert_int_equal(sp_engine_list(e, NULL, -1, 0, 4, out, &next), 0);
    sp_engine_free(e);
}

static void test_purge(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    sp_job_spec_t s = spec_at(T0 + 100, "t", 5);
    uint64_t sched = sp_ejob_id(submit_spec(e, T0, "q", &s));
    s.run_at = T0;
    s.max_attempts = 1;
    uint64_t ids[6];
    for (int i = 0; i < 6; i++) ids[i] = sp_ejob_id(submit_spec(e, T0, "q", &s));
    uint64_t keep_other = submit(e, T0, "other", 5);
    uint64_t tok;
    sp_ejob_t *j;
    /* ids[0] succeeded, ids[1] failed, ids[2] canceled, ids[3] running, ids[4..5] queued */
    assert_int_equal(lease1(e, T0, "q", &tok), ids[0]);
    assert_int_equal(sp_engine_ack(e, T0, ids[0], tok, NULL, 0, &j, NULL), 0);
    assert_int_equal(lease1(e, T0, "q", &tok), ids[1]);
    assert_int_equal(sp_engine_fail(e, T0, ids[1], tok, NULL, 0, true, -1, &j, NULL), 0);
    assert_int_equal(sp_engine_cancel(e, T0, ids[2], &j, NULL), 0);
    assert_int_equal(lease1(e, T0, "q", &tok), ids[3]);
    expect_counts(e, "q", 1, 2, 1, 1, 1, 1);
    sp_equeue_t *q = sp_engine_queue_find(e, "q", 1);
    uint64_t deleted = 99;
    assert_int_equal(sp_engine_purge(e, T0, q, SP_STATE_RUNNING, &deleted), SP_EINVAL);
    assert_int_equal(deleted, 0);
    assert_int_equal(sp_engine_purge(e, T0, q, SP_STATE_QUEUED, &deleted), 0);
    assert_int_equal(deleted, 2);
    assert_null(sp_engine_get(e, ids[4]));
    assert_null(sp_engine_get(e, ids[5]));
    assert_int_equal(sp_engine_purge(e, T0, q, SP_STATE_SCHEDULED, &deleted), 0);
    assert_int_equal(deleted, 1);
    assert_null(sp_engine_get(e, sched));
    assert_int_equal(sp_engine_next_deadline(e), T0 + SP_DEFAULT_TIMEOUT_MS + 1);
    for (int st = SP_STATE_SUCCEEDED; st <= SP_STATE_CANCELED; st++) {
        assert_int_equal(sp_engine_purge(e, T0, q, (sp_state_t)st, &deleted), 0);
        assert_int_equal(deleted, 1);
        assert_null(sp_engine_get(e, ids[st - SP_STATE_SUCCEEDED]));
    }
    assert_int_equal(sp_engine_purge(e, T0, q, SP_STATE_FAILED, &deleted), 0);
    assert_int_equal(deleted, 0);
    expect_counts(e, "q", 0, 0, 1, 0, 0, 0);
    assert_non_null(sp_engine_get(e, keep_other));
    assert_int_equal(sp_engine_job_count(e), 2);
    /* Nothing is left due but the running lease. */
    assert_int_equal(sp_engine_tick(e, T0 + 200), T0 + SP_DEFAULT_TIMEOUT_MS + 1);
    check_recount(e);
    sp_engine_free(e);
}

static void test_callbacks(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    uint64_t id = submit(e, T0, "q", 5);
    assert_int_equal(cb.change_calls, 1);
    assert_int_equal(cb.last_from, -1);
    assert_int_equal(cb.last_to, SP_STATE_QUEUED);
    assert_int_equal(cb.ready_calls, 1);
    sp_equeue_t *q = sp_engine_queue_find(e, "q", 1);
    assert_ptr_equal(cb.last_ready, q);
    uint64_t tok;
    assert_int_equal(lease1(e, T0, "q", &tok), id);
    assert_int_equal(cb.change_calls, 2);
    assert_int_equal(cb.last_from, SP_STATE_QUEUED);
    assert_int_equal(cb.last_to, SP_STATE_RUNNING);
    assert_int_equal(cb.ready_calls, 1);
    sp_ejob_t *j;
    assert_int_equal(sp_engine_ack(e, T0, id, tok, NULL, 0, &j, NULL), 0);
    assert_int_equal(cb.change_calls, 3);
    assert_int_equal(cb.last_to, SP_STATE_SUCCEEDED);
    /* A delayed job reports scheduled, and becomes ready only when due. */
    sp_job_spec_t s = spec_at(T0 + 10, "t", 5);
    submit_spec(e, T0, "q", &s);
    assert_int_equal(cb.last_to, SP_STATE_SCHEDULED);
    assert_int_equal(cb.ready_calls, 1);
    sp_engine_tick(e, T0 + 10);
    assert_int_equal(cb.ready_calls, 2);
    assert_int_equal(cb.change_calls, 5);
    /* Forgetting a job is not a state change. */
    uint64_t deleted;
    assert_int_equal(sp_engine_purge(e, T0, q, SP_STATE_QUEUED, &deleted), 0);
    assert_int_equal(cb.change_calls, 5);
    /* Callbacks may be NULL. */
    sp_engine_opts_t o;
    sp_engine_opts_default(&o);
    sp_engine_t *e2 = sp_engine_new(&o);
    assert_non_null(e2);
    uint64_t i2 = submit(e2, T0, "q", 5);
    assert_int_equal(i2, 1);
    assert_int_equal(lease1(e2, T0, "q", &tok), i2);
    sp_engine_tick(e2, T0 + SP_DEFAULT_TIMEOUT_MS + 1);
    assert_int_equal(state_of(e2, i2), SP_STATE_QUEUED);
    sp_engine_free(e2);
    sp_engine_free(e);
}

static void test_first_id_and_view(void **state)
{
    (void)state;
    sp_engine_opts_t o;
    sp_engine_opts_default(&o);
    o.first_id = 1000;
    o.seed = 1;
    sp_engine_t *e = sp_engine_new(&o);
    assert_non_null(e);
    sp_job_spec_t s = spec_at(T0, "resize.image", 7);
    s.payload = "{\"a\":\"\\u0000\",\"n\":123456789012345678901234567890}";
    s.payload_len = strlen(s.payload);
    s.max_attempts = 9;
    s.timeout_ms = 1234;
    s.backoff_ms = 77;
    sp_ejob_t *j = submit_spec(e, T0, "imgs", &s);
    sp_jobrec_t r;
    sp_engine_view(e, j, &r);
    assert_int_equal(r.id, 1000);
    assert_int_equal(r.queue_len, 4);
    assert_memory_equal(r.queue, "imgs", 4);
    assert_int_equal(r.type_len, 12);
    assert_memory_equal(r.type, "resize.image", 12);
    assert_int_equal(r.payload_len, s.payload_len);
    assert_memory_equal(r.payload, s.payload, s.payload_len);
    assert_int_equal(r.state, SP_STATE_QUEUED);
    assert_int_equal(r.priority, 7);
    assert_int_equal(r.attempts, 0);
    assert_int_equal(r.max_attempts, 9);
    assert_int_equal(r.timeout_ms, 1234);
    assert_int_equal(r.backoff_ms, 77);
    assert_int_equal(r.created_at, T0);
    assert_int_equal(r.run_at, T0);
    assert_int_equal(r.started_at, -1);
    assert_int_equal(r.finished_at, -1);
    assert_int_equal(r.lease_expires_at, -1);
    assert_null(r.result);
    assert_null(r.last_error);
    assert_null(r.worker);
    assert_null(r.idem_key);
    assert_false(r.cancel_requested);
    assert_int_equal(r.lease, 0);
    /* Jobs with the same settings share their type text; others get their own. */
    sp_ejob_t *j2 = submit_spec(e, T0, "imgs", &s);
    sp_jobrec_t r2;
    sp_engine_view(e, j2, &r2);
    assert_int_equal(r2.id, 1001);
    assert_ptr_equal(r2.type, r.type);
    s.timeout_ms = 999;
    sp_engine_view(e, submit_spec(e, T0, "imgs", &s), &r2);
    assert_int_equal(r2.timeout_ms, 999);
    assert_int_equal(r2.max_attempts, 9);
    assert_null(sp_engine_get(e, 999));
    assert_null(sp_engine_get(e, 0));
    assert_null(sp_engine_queue_find(e, "img", 3));
    sp_engine_free(e);
}

static void test_lease_tokens_differ(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    enum { N = 500 };
    for (int i = 0; i < N; i++) submit(e, T0, "q", 5);
    static uint64_t toks[N];
    for (int i = 0; i < N; i++) {
        assert_int_not_equal(lease1(e, T0, "q", &toks[i]), 0);
        for (int k = 0; k < i; k++) assert_int_not_equal(toks[k], toks[i]);
    }
    /* max bounds a lease; seed 0 picks its own seed. */
    sp_engine_free(e);
    sp_engine_opts_t o;
    sp_engine_opts_default(&o);
    e = sp_engine_new(&o);
    assert_non_null(e);
    for (int i = 0; i < 5; i++) submit(e, T0, "q", 5);
    const char *qs[] = {"q"};
    sp_ejob_t *out[8];
    assert_int_equal(lease_from(e, T0, qs, 1, 3, out), 3);
    assert_int_equal(lease_from(e, T0, qs, 1, 8, out), 2);
    sp_engine_free(e);
}

static void test_tables_shrink(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    enum { N = 5000 };
    uint64_t keep[3];
    for (int i = 0; i < N; i++) {
        sp_job_spec_t s = spec_at(T0 + 10 + i % 7, "t", 5);
        char key[16];
        int klen = snprintf(key, sizeof(key), "key%d", i);
        set_key(&s, key, (size_t)klen);
        sp_ejob_t *j = submit_spec(e, T0, i % 2000 == 0 ? "keep" : "q", &s);
        if (i % 2000 == 0) keep[i / 2000] = sp_ejob_id(j);
    }
    sp_engine_tick(e, T0 + 100);
    uint64_t deleted;
    assert_int_equal(
        sp_engine_purge(e, T0 + 100, sp_engine_queue_find(e, "q", 1), SP_STATE_QUEUED, &deleted),
        0);
    assert_int_equal(deleted, N - 3);
    /* What is left is still found, by id and by key, after the tables shrank. */
    for (int i = 0; i < 3; i++) {
        assert_non_null(sp_engine_get(e, keep[i]));
        sp_job_spec_t s = spec_at(T0, "t", 5);
        char key[16];
        int klen = snprintf(key, sizeof(key), "key%d", i * 2000);
        set_key(&s, key, (size_t)klen);
        sp_ejob_t *j;
        bool existed;
        assert_int_equal(sp_engine_submit(e, T0 + 100, "keep", 4, &s, &j, &existed), 0);
        assert_true(existed);
        assert_int_equal(sp_ejob_id(j), keep[i]);
    }
    assert_int_equal(sp_engine_job_count(e), 3);
    for (int i = 0; i < 100; i++) submit(e, T0 + 100, "q", 5);
    check_recount(e);
    sp_engine_free(e);
}

/* ---- randomized -------------------------------------------------------------------------- */

static void test_randomized(void **state)
{
    (void)state;
    sp_engine_t *e = engine_with(5000, 3000, 400);
    srand(12345);
    static const char *const queues[] = {"a", "b", "c"};
    int64_t now = T0;
    enum { MAXLIVE = 4096 };
    static uint64_t ids[MAXLIVE];
    size_t nids = 0;
    for (int step = 0; step < 20000; step++) {
        now += rand() % 50;
        int op = rand() % 12;
        const char *qn = queues[rand() % 3];
        sp_ejob_t *j = NULL;
        uint64_t id = nids ? ids[rand() % nids] : 0;
        sp_ejob_t *job = id ? sp_engine_get(e, id) : NULL;
        sp_jobrec_t r;
        if (job) sp_engine_view(e, job, &r);
        switch (op) {
        case 0:
        case 1: {
            sp_job_spec_t s =
                spec_at(now + (rand() % 3 == 0 ? rand() % 2000 : 0), "t", rand() % 10);
            s.timeout_ms = 100 + rand() % 1000;
            s.max_attempts = 1 + rand() % 3;
            s.backoff_ms = rand() % 500;
            if (rand() % 4 == 0) {
                char key[8];
                int klen = snprintf(key, sizeof(key), "k%d", rand() % 50);
                set_key(&s, key, (size_t)klen);
            }
            bool existed;
            int rc = sp_engine_submit(e, now, qn, 1, &s, &j, &existed);
            assert_true(rc == 0 || rc == SP_EFULL);
            if (rc == 0 && !existed && nids < MAXLIVE) ids[nids++] = sp_ejob_id(j);
            break;
        }
        case 2: {
            sp_job_spec_t specs[4];
            sp_ejob_t *out[4];
            bool ex[4];
            size_t n = 1 + (size_t)(rand() % 4);
            for (size_t i = 0; i < n; i++) {
                specs[i] = spec_at(now, "b", rand() % 10);
                if (rand() % 2) set_key(&specs[i], rand() % 2 ? "x" : "y", 1);
            }
            int rc = sp_engine_submit_batch(e, now, qn, 1, specs, n, out, ex);
            assert_true(rc == 0 || rc == SP_EFULL);
            for (size_t i = 0; rc == 0 && i < n; i++)
                if (!ex[i] && nids < MAXLIVE) ids[nids++] = sp_ejob_id(out[i]);
            break;
        }
        case 3:
        case 4: {
            sp_ejob_t *out[4];
            size_t n;
            const char *qs[1] = {qn};
            size_t lens[1] = {1};
            sp_lease_req_t req = {rand() % 2 ? qs : NULL,   lens, 1,
                                  1 + (size_t)(rand() % 4), "w",  1};
            assert_int_equal(sp_engine_lease(e, now, &req, out, &n), 0);
            break;
        }
        case 5:
            if (job && r.state == SP_STATE_RUNNING) {
                int rc = sp_engine_ack(e, now, id, r.lease, "1", 1, &j, NULL);
                assert_int_equal(rc, now > r.lease_expires_at ? SP_ECONFLICT : 0);
            }
            break;
        case 6:
            if (job && r.state == SP_STATE_RUNNING) {
                int rc = sp_engine_fail(e, now, id, r.lease, "e", 1, rand() % 4 != 0,
                                        rand() % 3 ? -1 : rand() % 300, &j, NULL);
                assert_int_equal(rc, now > r.lease_expires_at ? SP_ECONFLICT : 0);
            }
            break;
        case 7:
            if (job && r.state == SP_STATE_RUNNING) {
                int rc = rand() % 2 ? sp_engine_heartbeat(e, now, id, r.lease,
                                                          rand() % 2 ? -1 : 100, &j, NULL)
                                    : sp_engine_release(e, now, id, r.lease, &j, NULL);
                assert_int_equal(rc, now > r.lease_expires_at ? SP_ECONFLICT : 0);
            }
            break;
        case 8:
            if (job) {
                int rc = sp_engine_cancel(e, now, id, &j, NULL);
                assert_int_equal(rc, sp_state_finished(r.state) ? SP_ECONFLICT : 0);
            }
            break;
        case 9:
            if (job) {
                int rc = sp_engine_retry(e, now, id, &j, NULL);
                bool ok = r.state == SP_STATE_FAILED || r.state == SP_STATE_CANCELED;
                assert_int_equal(rc, ok ? 0 : SP_ECONFLICT);
            }
            break;
        case 10:
            if (rand() % 20 == 0) {
                sp_equeue_t *q = sp_engine_queue_find(e, qn, 1);
                sp_state_t st = (sp_state_t)(rand() % SP_STATE_COUNT);
                uint64_t deleted;
                if (q) {
                    int rc = sp_engine_purge(e, now, q, st, &deleted);
                    assert_int_equal(rc, st == SP_STATE_RUNNING ? SP_EINVAL : 0);
                }
            } else if (rand() % 10 == 0) {
                if (rand() % 2)
                    sp_engine_pause(e, qn, 1, NULL);
                else
                    sp_engine_resume(e, qn, 1, NULL);
            }
            break;
        default: {
            int64_t next = sp_engine_tick(e, now);
            assert_true(next > now);
            assert_int_equal(next, sp_engine_next_deadline(e));
            break;
        }
        }
        /* Forget ids of jobs that are gone, so that picks hit live jobs. */
        if (step % 64 == 0) {
            size_t k = 0;
            for (size_t i = 0; i < nids; i++)
                if (sp_engine_get(e, ids[i])) ids[k++] = ids[i];
            nids = k;
        }
        if (step % 16 == 0) check_recount(e);
    }
    check_recount(e);
    /* Everything drains given time: leases expire, delays pass, retention forgets. */
    for (int i = 0; i < 3; i++) sp_engine_resume(e, queues[i], 1, NULL);
    for (int round = 0; round < 100000 && sp_engine_job_count(e) > 0; round++) {
        sp_ejob_t *out[16];
        size_t n;
        sp_lease_req_t req = {NULL, NULL, 0, 16, NULL, 0};
        assert_int_equal(sp_engine_lease(e, now, &req, out, &n), 0);
        for (size_t i = 0; i < n; i++) {
            sp_jobrec_t r;
            sp_engine_view(e, out[i], &r);
            assert_int_equal(sp_engine_ack(e, now, r.id, r.lease, NULL, 0, NULL, NULL), 0);
        }
        int64_t next = sp_engine_tick(e, now);
        if (n == 0) now = next;
    }
    assert_int_equal(sp_engine_job_count(e), 0);
    assert_int_equal(sp_engine_next_deadline(e), INT64_MAX);
    check_recount(e);
    sp_engine_free(e);
}

/* ---- memory ------------------------------------------------------------------------------ */

/* Bytes per job above its payload at many queued jobs; printed, and bounded generously. Under
 * AddressSanitizer the allocator's own layout makes the number meaningless, so only a smaller
 * run is made there. */
static void test_memory_per_job(void **state)
{
    (void)state;
    const size_t n = UNDER_ASAN ? 100000 : 1000000;
    char payload[100];
    memset(payload, 'x', sizeof(payload));
    payload[0] = '"';
    payload[99] = '"';
    struct mallinfo2 before = mallinfo2();
    sp_engine_t *e = engine();
    sp_job_spec_t s = spec_at(T0, "resize", 5);
    s.payload = payload;
    s.payload_len = sizeof(payload);
    for (size_t i = 0; i < n; i++) {
        sp_ejob_t *j;
        bool existed;
        assert_int_equal(sp_engine_submit(e, T0, "q", 1, &s, &j, &existed), 0);
    }
    struct mallinfo2 after = mallinfo2();
    assert_int_equal(sp_engine_job_count(e), n);
    if (!UNDER_ASAN) {
        double per =
            (double)(after.uordblks + after.hblkhd - before.uordblks - before.hblkhd) / (double)n -
            (double)sizeof(payload);
        printf("engine: %.1f bytes per queued job above a %zu-byte payload (%zu jobs)\n", per,
               sizeof(payload), n);
        assert_true(per < 200.0);
    }
    /* The jobs still come out in order. */
    assert_int_equal(lease1(e, T0, "q", NULL), 1);
    sp_engine_free(e);
}

/* ---- restoring ---------------------------------------------------------------------------- */

static bool bytes_eq(const char *a, size_t al, const char *b, size_t bl)
{
    if (!a || !b) return a == b;
    return al == bl && memcmp(a, b, al) == 0;
}

static void expect_same_rec(const sp_jobrec_t *a, const sp_jobrec_t *b)
{
    assert_int_equal(a->id, b->id);
    assert_true(bytes_eq(a->queue, a->queue_len, b->queue, b->queue_len));
    assert_true(bytes_eq(a->type, a->type_len, b->type, b->type_len));
    assert_true(bytes_eq(a->payload, a->payload_len, b->payload, b->payload_len));
    assert_int_equal(a->state, b->state);
    assert_int_equal(a->priority, b->priority);
    assert_int_equal(a->attempts, b->attempts);
    assert_int_equal(a->max_attempts, b->max_attempts);
    assert_int_equal(a->timeout_ms, b->timeout_ms);
    assert_int_equal(a->backoff_ms, b->backoff_ms);
    assert_int_equal(a->created_at, b->created_at);
    assert_int_equal(a->run_at, b->run_at);
    assert_int_equal(a->started_at, b->started_at);
    assert_int_equal(a->finished_at, b->finished_at);
    assert_int_equal(a->lease_expires_at, b->lease_expires_at);
    assert_true(bytes_eq(a->result, a->result_len, b->result, b->result_len));
    assert_true(bytes_eq(a->last_error, a->last_error_len, b->last_error, b->last_error_len));
    assert_true(bytes_eq(a->worker, a->worker_len, b->worker, b->worker_len));
    assert_true(bytes_eq(a->idem_key, a->idem_key_len, b->idem_key, b->idem_key_len));
    assert_int_equal(a->cancel_requested, b->cancel_requested);
    assert_int_equal(a->lease, b->lease);
}

/* Copies every job and queue of `from` into a new engine through the restore entry points, as
 * a journal's replay does. */
static sp_engine_t *restored_copy_with(sp_engine_t *from, int64_t now, int64_t retention_ms,
                                       int64_t idem_ttl_ms)
{
    sp_engine_opts_t o;
    sp_engine_opts_default(&o);
    o.seed = 7;
    if (retention_ms >= 0) o.retention_ms = retention_ms;
    if (idem_ttl_ms >= 0) o.idem_ttl_ms = idem_ttl_ms;
    sp_engine_t *to = sp_engine_new(&o);
    assert_non_null(to);
    static sp_ejob_t *page[64];
    /* Newest first, so that restoring out of id order is exercised too. */
    for (size_t i = sp_engine_queue_count(from); i-- > 0;) {
        sp_equeue_t *q = sp_engine_queue_at(from, i);
        uint64_t after = 0, next;
        do {
            size_t n = sp_engine_list(from, q, -1, after, 64, page, &next);
            for (size_t k = n; k-- > 0;) {
                sp_jobrec_t r;
                sp_engine_view_full(from, page[k], &r);
                assert_int_equal(sp_engine_restore(to, now, &r), 0);
            }
            after = next;
        } while (next);
        sp_queue_stats_t st;
        sp_engine_queue_stats(from, q, now, &st);
        assert_int_equal(sp_engine_queue_restore(to, &st), 0);
    }
    sp_engine_set_next_id(to, sp_engine_next_id(from));
    return to;
}

static sp_engine_t *restored_copy(sp_engine_t *from, int64_t now)
{
    return restored_copy_with(from, now, -1, -1);
}

static void expect_same_engine(sp_engine_t *a, sp_engine_t *b, int64_t now)
{
    assert_int_equal(sp_engine_job_count(a), sp_engine_job_count(b));
    assert_int_equal(sp_engine_next_id(a), sp_engine_next_id(b));
    static sp_ejob_t *page[64];
    for (size_t i = 0; i < sp_engine_queue_count(a); i++) {
        sp_equeue_t *q = sp_engine_queue_at(a, i);
        size_t len;
        const char *name = sp_equeue_name(q, &len);
        sp_equeue_t *q2 = sp_engine_queue_find(b, name, len);
        assert_non_null(q2);
        sp_queue_stats_t sa, sb;
        sp_engine_queue_stats(a, q, now, &sa);
        sp_engine_queue_stats(b, q2, now, &sb);
        assert_int_equal(sa.paused, sb.paused);
        assert_memory_equal(sa.counts, sb.counts, sizeof sa.counts);
        assert_int_equal(sa.enqueued, sb.enqueued);
        assert_int_equal(sa.succeeded, sb.succeeded);
        assert_int_equal(sa.failed, sb.failed);
        assert_int_equal(sa.retried, sb.retried);
        assert_int_equal(sa.leased, sb.leased);
        assert_int_equal(sa.canceled, sb.canceled);
        uint64_t after = 0, next;
        do {
            size_t n = sp_engine_list(a, q, -1, after, 64, page, &next);
            for (size_t k = 0; k < n; k++) {
                sp_jobrec_t ra, rb;
                sp_engine_view_full(a, page[k], &ra);
                sp_ejob_t *jb = sp_engine_get(b, ra.id);
                assert_non_null(jb);
                sp_engine_view_full(b, jb, &rb);
                expect_same_rec(&ra, &rb);
            }
            after = next;
        } while (next);
    }
    check_recount(b);
}

static void test_restore_every_state(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    int64_t now = T0;
    sp_job_spec_t s = spec_at(now, "t", 3);
    set_key(&s, "key-1", 5);
    submit_spec(e, now, "a", &s); /* queued, keyed */
    sp_job_spec_t d = spec_at(now, "d", 5);
    d.run_at = now + 60000;
    submit_spec(e, now, "a", &d); /* scheduled */
    uint64_t tok;
    uint64_t run = submit(e, now, "b", 9);
    assert_int_equal(lease1(e, now, "b", &tok), run); /* running */
    uint64_t ok = submit(e, now, "b", 9);
    uint64_t tok2;
    assert_int_equal(lease1(e, now, "b", &tok2), ok);
    assert_int_equal(sp_engine_ack(e, now + 5, ok, tok2, "{\"r\":1}", 7, NULL, NULL), 0);
    uint64_t bad = submit(e, now, "b", 1);
    uint64_t tok3;
    assert_int_equal(lease1(e, now, "b", &tok3), bad);
    assert_int_equal(sp_engine_fail(e, now + 6, bad, tok3, "boom", 4, true, 0, NULL, NULL), 0);
    uint64_t can = submit(e, now, "c", 5);
    assert_int_equal(sp_engine_cancel(e, now + 7, can, NULL, NULL), 0);
    uint64_t creq = submit(e, now, "c", 5);
    uint64_t tok4;
    assert_int_equal(lease1(e, now, "c", &tok4), creq);
    assert_int_equal(sp_engine_cancel(e, now + 8, creq, NULL, NULL), 0); /* cancel_requested */
    assert_int_equal(sp_engine_pause(e, "c", 1, NULL), 0);

    sp_engine_t *r = restored_copy(e, now + 10);
    expect_same_engine(e, r, now + 10);

    /* The restored lease is the same fence: the old token acks, and a finished job remembers
     * the lease that ended it. */
    assert_int_equal(sp_engine_ack(r, now + 11, run, tok, NULL, 0, NULL, NULL), 0);
    assert_int_equal(sp_engine_ack(r, now + 12, ok, tok2, NULL, 0, NULL, NULL), 0);
    /* The key is live again: a new submission with it finds the job. */
    sp_ejob_t *j = NULL;
    bool existed = false;
    assert_int_equal(sp_engine_submit(r, now + 13, "a", 1, &s, &j, &existed), 0);
    assert_true(existed);
    /* New ids continue after the old ones. */
    uint64_t fresh = submit(r, now + 14, "a", 5);
    assert_int_equal(fresh, sp_engine_next_id(e));
    /* The paused queue stays paused; the scheduled job comes due at its time. */
    assert_int_equal(lease1(r, now + 15, "c", NULL), 0);
    sp_engine_tick(r, now + 60000);
    expect_counts(r, "a", 0, 3, 0, 0, 0, 0);
    sp_engine_free(r);
    sp_engine_free(e);
}

static void test_restore_updates_in_place_and_forgets(void **state)
{
    (void)state;
    sp_engine_t *e = engine();
    int64_t now = T0;
    uint64_t id = submit(e, now, "q", 5);
    sp_jobrec_t queued;
    sp_engine_view_full(e, sp_engine_get(e, id), &queued);
    sp_engine_t *r = restored_copy(e, now);
    uint64_t tok;
    assert_int_equal(lease1(e, now + 1, "q", &tok), id);
    sp_jobrec_t running;
    sp_engine_view_full(e, sp_engine_get(e, id), &running);
    /* The same job again, further along: updated where it is, counts follow. */
    assert_int_equal(sp_engine_restore(r, now + 1, &running), 0);
    expect_counts(r, "q", 0, 0, 1, 0, 0, 0);
    assert_int_equal(sp_engine_job_count(r), 1);
    sp_queue_stats_t st = stats(e, "q", now);
    assert_int_equal(sp_engine_queue_restore(r, &st), 0);
    expect_same_engine(e, r, now + 1);
    /* An expired lease in a restored job runs out as it would have. */
    sp_engine_tick(r, running.lease_expires_at + 1);
    assert_int_equal(state_of(r, id), SP_STATE_QUEUED);
    /* Forgetting. */
    assert_int_equal(sp_engine_forget(r, id), 0);
    assert_null(sp_engine_get(r, id));
    assert_int_equal(sp_engine_forget(r, id), SP_ENOTFOUND);
    expect_counts(r, "q", 0, 0, 0, 0, 0, 0);
    /* Impossible records are refused. */
    sp_jobrec_t badrec = queued;
    badrec.state = (sp_state_t)9;
    assert_int_equal(sp_engine_restore(r, now, &badrec), SP_EINVAL);
    badrec = queued;
    badrec.priority = 10;
    assert_int_equal(sp_engine_restore(r, now, &badrec), SP_EINVAL);
    badrec = running;
    badrec.lease_expires_at = -1;
    assert_int_equal(sp_engine_restore(r, now, &badrec), SP_EINVAL);
    /* next id never goes back */
    sp_engine_set_next_id(r, 1);
    assert_true(sp_engine_next_id(r) > id);
    sp_engine_free(r);
    sp_engine_free(e);
}

static void test_restore_randomized(void **state)
{
    (void)state;
    sp_engine_t *e = engine_with(50000, 40000, 0);
    uint64_t rng = 12345;
    int64_t now = T0;
    uint64_t tokens[4096] = {0};
    for (int step = 0; step < 3000; step++) {
        rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
        unsigned r = (unsigned)(rng >> 33);
        const char *q = (r & 1) ? "x" : "y";
        now += r % 50;
        switch (r % 7) {
        case 0:
        case 1: {
            sp_job_spec_t s = spec_at(now, (r & 2) ? "a" : "b", (int)(r % 10));
            if (r & 4) s.run_at = now + (r % 1000);
            char key[16];
            if (r & 8) {
                snprintf(key, sizeof key, "k%u", r % 200);
                set_key(&s, key, strlen(key));
            }
            sp_ejob_t *j;
            bool ex;
            assert_int_equal(sp_engine_submit(e, now, q, 1, &s, &j, &ex), 0);
            break;
        }
        case 2: {
            sp_ejob_t *j[4];
            const char *qs[1] = {q};
            size_t n = lease_from(e, now, qs, 1, 4, j);
            for (size_t i = 0; i < n; i++) {
                sp_jobrec_t v;
                sp_engine_view(e, j[i], &v);
                if (v.id < 4096) tokens[v.id] = v.lease;
            }
            break;
        }
        default: {
            uint64_t id = 1 + r % (sp_engine_next_id(e));
            if (id >= 4096 || !tokens[id]) break;
            if (r % 7 == 3)
                sp_engine_ack(e, now, id, tokens[id], "1", 1, NULL, NULL);
            else if (r % 7 == 4)
                sp_engine_fail(e, now, id, tokens[id], "x", 1, true, -1, NULL, NULL);
            else if (r % 7 == 5)
                sp_engine_heartbeat(e, now, id, tokens[id], 5000, NULL, NULL);
            else
                sp_engine_cancel(e, now, id, NULL, NULL);
            break;
        }
        }
        if (step % 100 == 0) sp_engine_tick(e, now);
        if (step == 1500) {
            uint64_t del;
            sp_equeue_t *qq = sp_engine_queue_find(e, "x", 1);
            if (qq) assert_int_equal(sp_engine_purge(e, now, qq, SP_STATE_SUCCEEDED, &del), 0);
        }
    }
    sp_engine_t *r = restored_copy_with(e, now, 50000, 40000);
    expect_same_engine(e, r, now);
    /* Both go on the same way in time. */
    sp_engine_tick(e, now + 100000);
    sp_engine_tick(r, now + 100000);
    for (size_t i = 0; i < sp_engine_queue_count(e); i++) {
        size_t len;
        const char *name = sp_equeue_name(sp_engine_queue_at(e, i), &len);
        sp_queue_stats_t sa, sb;
        sp_engine_queue_stats(e, sp_engine_queue_at(e, i), now, &sa);
        sp_engine_queue_stats(r, sp_engine_queue_find(r, name, len), now, &sb);
        assert_memory_equal(sa.counts, sb.counts, sizeof sa.counts);
    }
    sp_engine_free(r);
    sp_engine_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_priority_then_fifo),
        cmocka_unit_test(test_queues_in_given_order),
        cmocka_unit_test(test_paused_queue_skipped),
        cmocka_unit_test(test_delayed_jobs),
        cmocka_unit_test(test_delay_counts_from_submit),
        cmocka_unit_test(test_many_delays_fire_in_order),
        cmocka_unit_test(test_lease_expiry_redelivers),
        cmocka_unit_test(test_lease_expiry_last_attempt_fails),
        cmocka_unit_test(test_fencing),
        cmocka_unit_test(test_repeated_ack),
        cmocka_unit_test(test_fail_backoff),
        cmocka_unit_test(test_fail_backoff_cap_and_zero),
        cmocka_unit_test(test_fail_retry_in_and_no_retry),
        cmocka_unit_test(test_heartbeat),
        cmocka_unit_test(test_release),
        cmocka_unit_test(test_cancel_each_state),
        cmocka_unit_test(test_cancel_requested_outcomes),
        cmocka_unit_test(test_retry),
        cmocka_unit_test(test_idempotency),
        cmocka_unit_test(test_idempotency_forgotten_with_job),
        cmocka_unit_test(test_batch),
        cmocka_unit_test(test_max_depth),
        cmocka_unit_test(test_retention),
        cmocka_unit_test(test_counts_and_totals),
        cmocka_unit_test(test_oldest_queued_age),
        cmocka_unit_test(test_list_paging),
        cmocka_unit_test(test_purge),
        cmocka_unit_test(test_callbacks),
        cmocka_unit_test(test_first_id_and_view),
        cmocka_unit_test(test_lease_tokens_differ),
        cmocka_unit_test(test_tables_shrink),
        cmocka_unit_test(test_randomized),
        cmocka_unit_test(test_restore_every_state),
        cmocka_unit_test(test_restore_updates_in_place_and_forgets),
        cmocka_unit_test(test_restore_randomized),
        cmocka_unit_test(test_memory_per_job),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
