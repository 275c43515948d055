/*
 * backend_memory.c - the engine behind the backend interface (see backend_memory.h).
 *
 * Owns the engine, the timer that drives the engine's clock, and the waits: long-poll leases
 * and gets that wait for a job to finish. Waking is deferred to a uv_idle callback, never done
 * inside an engine call, so that no callback runs while the engine is half-way through a change
 * and a burst of submissions costs one wake pass.
 */
#include "backend_memory.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journal.h"
#include "list.h"
#include "log.h"

typedef enum { WAIT_LEASE, WAIT_GET } wait_kind_t;

struct sp_be_wait {
    sp_list_t link;
    wait_kind_t kind;
    struct mem_backend *mb;
    uv_timer_t timer;
    bool done;     /* answered or canceled; only the timer's close is pending */
    bool finished; /* WAIT_GET: the job finished (or went away) */
    /* A lease answered with jobs whose answer waits for the journal: the wait stays alive (and
     * cancelable) until that answer is delivered, so a client that leaves meanwhile still takes
     * no job. */
    struct answer *held;
    bool canceled;     /* canceled while held: the jobs go back to their queue */
    bool timer_closed; /* the timer's close has run; freed when the answer is done too */
    bool timerless;    /* a lease answered at once, held only for the journal: no timer */
    bool creating;     /* its answer is being handed to the journal, which may run it at once */
    void *ud;
    union {
        sp_be_jobs_cb lease;
        sp_be_job_cb get;
    } cb;
    /* WAIT_LEASE: the request, copied */
    size_t max;
    size_t nqueues;
    char **queues;
    size_t *queue_lens;
    char *worker;
    size_t worker_len;
    /* WAIT_GET */
    uint64_t job_id;
};

typedef struct mem_backend {
    sp_backend_t base;
    uv_loop_t *loop;
    sp_engine_t *engine;
    uv_timer_t tick;
    int64_t tick_due; /* wall-clock ms the tick timer is set for, INT64_MAX when stopped */
    uv_idle_t wake;
    bool wake_active;
    sp_list_t lease_waits;
    sp_list_t get_waits;
    size_t nget_waits;
    int open_handles;
    bool closing;
    void (*closed)(void *ud);
    void *closed_ud;
    void (*observe)(void *ud, const sp_jobrec_t *job, int from);
    void *observe_ud;
    sp_journal_t *journal; /* NULL without --data-dir */
} mem_backend_t;

static mem_backend_t *mb_of(sp_backend_t *b)
{
    return (mem_backend_t *)b;
}

/* ---- answers that wait for the journal ------------------------------------------------- */

/* With --fsync always, an answer that reports a change is held until the journal has the change
 * on disk. It then needs its own copy of what it reports: the job may change again, or be
 * forgotten, before the write completes. One allocation holds the answer, its records and their
 * strings. */
typedef enum { ANS_JOB, ANS_SUBMIT, ANS_BATCH, ANS_JOBS, ANS_QUEUES, ANS_COUNT } ans_kind_t;

typedef struct answer {
    ans_kind_t kind;
    struct sp_be_wait *wait; /* ANS_JOBS of a long poll: the wait it answers */
    union {
        sp_be_job_cb job;
        sp_be_submit_cb submit;
        sp_be_batch_cb batch;
        sp_be_jobs_cb jobs;
        sp_be_queues_cb queues;
        sp_be_count_cb count;
    } cb;
    void *ud;
    size_t n;
    sp_jobrec_t *recs;
    bool *existed;
    sp_queue_stats_t st;
    uint64_t count;
} answer_t;

static size_t rec_strings(const sp_jobrec_t *r)
{
    return r->queue_len + r->type_len + r->payload_len + (r->result ? r->result_len : 0) +
           (r->last_error ? r->last_error_len : 0) + (r->worker ? r->worker_len : 0) +
           (r->idem_key ? r->idem_key_len : 0);
}

static const char *copy_str(char **pool, const char *s, size_t n)
{
    if (!s) return NULL;
    char *d = *pool;
    if (n) memcpy(d, s, n);
    *pool += n;
    return d;
}

static answer_t *ans_new(ans_kind_t kind, size_t n, const sp_jobrec_t *recs, const bool *existed,
                         const sp_queue_stats_t *st)
{
    size_t strs = st ? st->name_len : 0;
    for (size_t i = 0; i < n; i++) strs += rec_strings(&recs[i]);
    size_t size = sizeof(answer_t) + n * sizeof(sp_jobrec_t) + n * sizeof(bool) + strs + 1;
    answer_t *a = malloc(size);
    if (!a) return NULL;
    memset(a, 0, sizeof *a);
    a->kind = kind;
    a->n = n;
    a->recs = (sp_jobrec_t *)(a + 1);
    a->existed = (bool *)(a->recs + n);
    char *pool = (char *)(a->existed + n);
    for (size_t i = 0; i < n; i++) {
        sp_jobrec_t *d = &a->recs[i];
        *d = recs[i];
        d->queue = copy_str(&pool, recs[i].queue, recs[i].queue_len);
        d->type = copy_str(&pool, recs[i].type, recs[i].type_len);
        d->payload = copy_str(&pool, recs[i].payload, recs[i].payload_len);
        d->result = copy_str(&pool, recs[i].result, recs[i].result_len);
        d->last_error = copy_str(&pool, recs[i].last_error, recs[i].last_error_len);
        d->worker = copy_str(&pool, recs[i].worker, recs[i].worker_len);
        d->idem_key = copy_str(&pool, recs[i].idem_key, recs[i].idem_key_len);
        a->existed[i] = existed ? existed[i] : false;
    }
    if (st) {
        a->st = *st;
        a->st.name = copy_str(&pool, st->name, st->name_len);
    }
    return a;
}

static void wait_free(sp_be_wait_t *w);
static void release_handle(struct mem_backend *mb);

/* The held answer of a long poll is done: hands its jobs back when the client left meanwhile
 * (the lease was never seen, so the attempt does not count), and frees the wait if its timer
 * has closed. Returns whether the answer is still wanted. */
static bool held_wait_done(answer_t *a)
{
    sp_be_wait_t *w = a->wait;
    bool wanted = !w->canceled;
    if (!wanted) {
        for (size_t i = 0; i < a->n; i++) {
            sp_ejob_t *job;
            sp_engine_release(w->mb->engine, sp_now_ms(), a->recs[i].id, a->recs[i].lease, &job,
                              NULL);
        }
    }
    w->held = NULL;
    if (w->timer_closed && !w->creating) {
        struct mem_backend *mb = w->mb;
        bool counted = !w->timerless; /* only a timer counts among the backend's handles */
        wait_free(w);
        if (counted) release_handle(mb);
    }
    return wanted;
}

/* Delivers a held answer: what it reports once the journal has it, or the journal's error. */
static void ans_run(void *arg, int status, const char *why)
{
    answer_t *a = arg;
    if (a->wait && !held_wait_done(a)) {
        free(a);
        return;
    }
    switch (a->kind) {
    case ANS_JOB:
        if (status)
            a->cb.job(a->ud, status, why, NULL);
        else
            a->cb.job(a->ud, 0, NULL, &a->recs[0]);
        break;
    case ANS_SUBMIT:
        if (status)
            a->cb.submit(a->ud, status, why, NULL, false);
        else
            a->cb.submit(a->ud, 0, NULL, &a->recs[0], a->existed[0]);
        break;
    case ANS_BATCH:
        if (status)
            a->cb.batch(a->ud, status, why, NULL, NULL, 0);
        else
            a->cb.batch(a->ud, 0, NULL, a->recs, a->existed, a->n);
        break;
    case ANS_JOBS:
        if (status)
            a->cb.jobs(a->ud, status, why, NULL, 0, 0);
        else
            a->cb.jobs(a->ud, 0, NULL, a->recs, a->n, 0);
        break;
    case ANS_QUEUES:
        if (status)
            a->cb.queues(a->ud, status, why, NULL, 0);
        else
            a->cb.queues(a->ud, 0, NULL, &a->st, 1);
        break;
    case ANS_COUNT:
        if (status)
            a->cb.count(a->ud, status, why, 0);
        else
            a->cb.count(a->ud, 0, NULL, a->count);
        break;
    }
    free(a);
}

/* Whether answers to changes wait for the disk. */
static bool holding(const mem_backend_t *mb)
{
    return mb->journal && sp_journal_waits(mb->journal);
}

/* Hands a held answer to the journal; short of memory, says so at once. */
static void ans_hold(mem_backend_t *mb, answer_t *a)
{
    if (a) sp_journal_after(mb->journal, ans_run, a);
}

/* A change is refused while the journal cannot be written: accepting it could not be kept. */
static bool journal_down(mem_backend_t *mb, const char **why)
{
    return mb->journal && sp_journal_status(mb->journal, why) != 0;
}

/* ---- the clock ------------------------------------------------------------------------- */

static void tick_cb(uv_timer_t *t);

/* Sets the tick timer to the engine's next deadline. O(1); called after every operation. */
static void arm(mem_backend_t *mb)
{
    if (mb->closing) return;
    int64_t due = sp_engine_next_deadline(mb->engine);
    if (due == mb->tick_due) return;
    mb->tick_due = due;
    if (due == INT64_MAX) {
        uv_timer_stop(&mb->tick);
        return;
    }
    int64_t delay = due - sp_now_ms();
    uv_timer_start(&mb->tick, tick_cb, delay > 0 ? (uint64_t)delay : 0, 0);
}

static void tick_cb(uv_timer_t *t)
{
    mem_backend_t *mb = sp_container_of(t, mem_backend_t, tick);
    mb->tick_due = INT64_MAX;
    sp_engine_tick(mb->engine, sp_now_ms());
    arm(mb);
}

/* ---- waits ------------------------------------------------------------------------------ */

static void wake_cb(uv_idle_t *h);

static void schedule_wake(mem_backend_t *mb)
{
    if (mb->wake_active || mb->closing) return;
    mb->wake_active = true;
    uv_idle_start(&mb->wake, wake_cb);
}

static void wait_free(sp_be_wait_t *w)
{
    for (size_t i = 0; i < w->nqueues; i++) free(w->queues[i]);
    free(w->queues);
    free(w->queue_lens);
    free(w->worker);
    free(w);
}

static void wait_closed(uv_handle_t *h)
{
    sp_be_wait_t *w = h->data;
    if (w->held) { /* the held answer frees it */
        w->timer_closed = true;
        return;
    }
    mem_backend_t *mb = w->mb;
    wait_free(w);
    release_handle(mb);
}

/* Takes a wait off its list and closes its timer; the callback is not called here. */
static void wait_end(sp_be_wait_t *w)
{
    if (w->done) return;
    w->done = true;
    sp_list_unlink(&w->link);
    if (w->kind == WAIT_GET) w->mb->nget_waits--;
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, wait_closed);
}

static sp_be_wait_t *timerless_wait(mem_backend_t *mb);

/* Answers a lease with its jobs, now or (journal) once they are on disk. A long poll's wait `w`
 * is tied to a held answer so that it can still be canceled; with w NULL and `want_handle`, a
 * held answer gets a timerless wait of its own, returned as the caller's handle. Returns that
 * handle, or NULL when the lease is answered already (or no handle was wanted). */
static sp_be_wait_t *answer_lease(mem_backend_t *mb, sp_be_jobs_cb cb, void *ud, sp_ejob_t **jobs,
                                  size_t n, sp_be_wait_t *w, bool want_handle)
{
    if (n == 0) {
        cb(ud, 0, NULL, NULL, 0, 0);
        return NULL;
    }
    if (holding(mb)) {
        sp_jobrec_t *recs = malloc(n * sizeof *recs);
        answer_t *a = NULL;
        if (recs) {
            for (size_t i = 0; i < n; i++) sp_engine_view(mb->engine, jobs[i], &recs[i]);
            a = ans_new(ANS_JOBS, n, recs, NULL, NULL);
            free(recs);
        }
        if (!a) {
            cb(ud, SP_ENOMEM, "out of memory", NULL, 0, 0);
            return NULL;
        }
        a->cb.jobs = cb;
        a->ud = ud;
        sp_be_wait_t *own = !w && want_handle ? timerless_wait(mb) : NULL;
        if (own) w = own;
        if (w) {
            a->wait = w;
            w->held = a;
        }
        if (own) own->creating = true;
        ans_hold(mb, a); /* may deliver at once */
        if (!own) return NULL;
        own->creating = false;
        if (own->held) return own;
        wait_free(own); /* delivered already: no handle */
        return NULL;
    }
    sp_jobrec_t stack[16];
    sp_jobrec_t *recs = n <= 16 ? stack : malloc(n * sizeof *recs);
    if (!recs) {
        /* The jobs are leased already; their leases expire and they are handed out again. */
        cb(ud, SP_ENOMEM, "out of memory", NULL, 0, 0);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) sp_engine_view(mb->engine, jobs[i], &recs[i]);
    cb(ud, 0, NULL, recs, n, 0);
    if (recs != stack) free(recs);
    return NULL;
}

/* Tries to lease for a request; returns the number leased (jobs in out). */
static size_t try_lease(mem_backend_t *mb, const sp_lease_req_t *req, sp_ejob_t **out, int *err)
{
    size_t n = 0;
    *err = sp_engine_lease(mb->engine, sp_now_ms(), req, out, &n);
    return *err ? 0 : n;
}

static void wait_req(const sp_be_wait_t *w, sp_lease_req_t *req)
{
    req->queues = (const char *const *)w->queues;
    req->queue_lens = w->queue_lens;
    req->nqueues = w->nqueues;
    req->max = w->max;
    req->worker = w->worker;
    req->worker_len = w->worker_len;
}

static void answer_get(mem_backend_t *mb, uint64_t id, sp_be_job_cb cb, void *ud)
{
    sp_ejob_t *job = sp_engine_get(mb->engine, id);
    if (!job) {
        cb(ud, SP_ENOTFOUND, "no job with this id", NULL);
        return;
    }
    sp_jobrec_t rec;
    sp_engine_view(mb->engine, job, &rec);
    cb(ud, 0, NULL, &rec);
}

/* One wake pass: serve lease waits in order while jobs are ready, and answer gets whose job
 * finished. Waits are moved to a local list first, so that callbacks may add or cancel waits
 * (cancel unlinks from whichever list the wait is on). */
static void wake_cb(uv_idle_t *h)
{
    mem_backend_t *mb = sp_container_of(h, mem_backend_t, wake);
    uv_idle_stop(h);
    mb->wake_active = false;

    if (!sp_list_empty(&mb->get_waits)) {
        sp_list_t pending;
        sp_list_init(&pending);
        sp_list_t *l = mb->get_waits.next;
        while (l != &mb->get_waits) {
            sp_list_t *next = l->next;
            sp_be_wait_t *w = sp_container_of(l, sp_be_wait_t, link);
            if (w->finished) {
                sp_list_unlink(l);
                sp_list_push(&pending, l);
            }
            l = next;
        }
        while (!sp_list_empty(&pending)) {
            sp_be_wait_t *w = sp_container_of(pending.next, sp_be_wait_t, link);
            sp_be_job_cb cb = w->cb.get;
            void *ud = w->ud;
            uint64_t id = w->job_id;
            wait_end(w);
            answer_get(mb, id, cb, ud);
        }
    }

    const char *down;
    if (sp_list_empty(&mb->lease_waits) || journal_down(mb, &down)) {
        arm(mb);
        return;
    }
    sp_list_t pending;
    sp_list_init(&pending);
    while (!sp_list_empty(&mb->lease_waits)) {
        sp_list_t *l = mb->lease_waits.next;
        sp_list_unlink(l);
        sp_list_push(&pending, l);
    }
    sp_ejob_t *jobs[1000];
    while (!sp_list_empty(&pending)) {
        sp_be_wait_t *w = sp_container_of(pending.next, sp_be_wait_t, link);
        sp_lease_req_t req;
        wait_req(w, &req);
        int err;
        size_t n = try_lease(mb, &req, jobs, &err);
        if (n == 0 && !err) {
            sp_list_unlink(&w->link);
            sp_list_push(&mb->lease_waits, &w->link);
            continue;
        }
        sp_be_jobs_cb cb = w->cb.lease;
        void *ud = w->ud;
        wait_end(w);
        if (err)
            cb(ud, err, "out of memory", NULL, 0, 0);
        else
            answer_lease(mb, cb, ud, jobs, n, w, false);
    }
    arm(mb);
}

static void wait_timeout(uv_timer_t *t)
{
    sp_be_wait_t *w = t->data;
    mem_backend_t *mb = w->mb;
    if (w->kind == WAIT_LEASE) {
        sp_be_jobs_cb cb = w->cb.lease;
        void *ud = w->ud;
        wait_end(w);
        cb(ud, 0, NULL, NULL, 0, 0);
    } else {
        sp_be_job_cb cb = w->cb.get;
        void *ud = w->ud;
        uint64_t id = w->job_id;
        wait_end(w);
        answer_get(mb, id, cb, ud);
    }
}

static sp_be_wait_t *wait_new(mem_backend_t *mb, wait_kind_t kind, int64_t wait_ms, void *ud)
{
    sp_be_wait_t *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->kind = kind;
    w->mb = mb;
    w->ud = ud;
    uv_timer_init(mb->loop, &w->timer);
    w->timer.data = w;
    mb->open_handles++;
    uv_timer_start(&w->timer, wait_timeout, (uint64_t)wait_ms, 0);
    if (kind == WAIT_LEASE) {
        sp_list_push(&mb->lease_waits, &w->link);
    } else {
        sp_list_push(&mb->get_waits, &w->link);
        mb->nget_waits++;
    }
    return w;
}

/* Copies a lease request into a wait; returns false on allocation failure. */
static bool wait_copy_req(sp_be_wait_t *w, const sp_lease_req_t *req)
{
    w->max = req->max;
    if (req->worker) {
        w->worker = malloc(req->worker_len + 1);
        if (!w->worker) return false;
        memcpy(w->worker, req->worker, req->worker_len);
        w->worker[req->worker_len] = '\0';
        w->worker_len = req->worker_len;
    }
    if (!req->queues) return true;
    w->queues = calloc(req->nqueues ? req->nqueues : 1, sizeof *w->queues);
    w->queue_lens = calloc(req->nqueues ? req->nqueues : 1, sizeof *w->queue_lens);
    if (!w->queues || !w->queue_lens) return false;
    for (size_t i = 0; i < req->nqueues; i++) {
        w->queues[i] = malloc(req->queue_lens[i] + 1);
        if (!w->queues[i]) return false;
        memcpy(w->queues[i], req->queues[i], req->queue_lens[i]);
        w->queues[i][req->queue_lens[i]] = '\0';
        w->queue_lens[i] = req->queue_lens[i];
        w->nqueues = i + 1;
    }
    return true;
}

/* ---- engine hooks ----------------------------------------------------------------------- */

static void on_ready(void *ud, sp_equeue_t *q)
{
    (void)q;
    mem_backend_t *mb = ud;
    if (!sp_list_empty(&mb->lease_waits)) schedule_wake(mb);
}

static void on_change(void *ud, const sp_ejob_t *job, int from, sp_state_t to)
{
    mem_backend_t *mb = ud;
    if (mb->journal) {
        sp_journal_job(mb->journal, sp_ejob_id(job));
        sp_journal_queue(mb->journal, sp_ejob_queue(job));
    }
    if (mb->observe) {
        sp_jobrec_t rec;
        sp_engine_view(mb->engine, job, &rec);
        mb->observe(mb->observe_ud, &rec, from);
    }
    if (mb->nget_waits && sp_state_finished(to)) {
        uint64_t id = sp_ejob_id(job);
        for (sp_list_t *l = mb->get_waits.next; l != &mb->get_waits; l = l->next) {
            sp_be_wait_t *w = sp_container_of(l, sp_be_wait_t, link);
            if (w->job_id == id) {
                w->finished = true;
                schedule_wake(mb);
            }
        }
    }
}

/* ---- operations ------------------------------------------------------------------------- */

static const char *err_text(int err, const char *why)
{
    if (why) return why;
    switch (err) {
    case SP_ENOTFOUND:
        return "no job with this id";
    case SP_EFULL:
        return "the queue is at its maximum depth";
    case SP_ENOMEM:
        return "out of memory";
    default:
        return sp_strerror(err);
    }
}

static void answer_job(mem_backend_t *mb, int err, const char *why, sp_ejob_t *job, sp_be_job_cb cb,
                       void *ud)
{
    if (err) {
        cb(ud, err, err_text(err, why), NULL);
    } else {
        sp_jobrec_t rec;
        sp_engine_view(mb->engine, job, &rec);
        if (mb->journal) {
            /* A heartbeat or a cancel request changes a job without changing its state. */
            sp_journal_job(mb->journal, rec.id);
        }
        if (holding(mb)) {
            answer_t *a = ans_new(ANS_JOB, 1, &rec, NULL, NULL);
            if (a) {
                a->cb.job = cb;
                a->ud = ud;
                ans_hold(mb, a);
            } else {
                cb(ud, SP_ENOMEM, "out of memory", NULL);
            }
        } else {
            cb(ud, 0, NULL, &rec);
        }
    }
    arm(mb);
}

static void op_submit(sp_backend_t *b, const char *queue, size_t queue_len,
                      const sp_job_spec_t *spec, sp_be_submit_cb cb, void *ud)
{
    mem_backend_t *mb = mb_of(b);
    sp_ejob_t *job = NULL;
    bool existed = false;
    const char *down;
    if (journal_down(mb, &down)) {
        cb(ud, SP_EUNAVAIL, down, NULL, false);
        return;
    }
    int err = sp_engine_submit(mb->engine, sp_now_ms(), queue, queue_len, spec, &job, &existed);
    if (err) {
        cb(ud, err, err_text(err, NULL), NULL, false);
        return;
    }
    sp_jobrec_t rec;
    sp_engine_view(mb->engine, job, &rec);
    if (holding(mb)) {
        answer_t *a = ans_new(ANS_SUBMIT, 1, &rec, &existed, NULL);
        if (a) {
            a->cb.submit = cb;
            a->ud = ud;
            ans_hold(mb, a);
        } else {
            cb(ud, SP_ENOMEM, "out of memory", NULL, false);
        }
    } else {
        cb(ud, 0, NULL, &rec, existed);
    }
    arm(mb);
}

static void op_submit_batch(sp_backend_t *b, const char *queue, size_t queue_len,
                            const sp_job_spec_t *specs, size_t n, sp_be_batch_cb cb, void *ud)
{
    mem_backend_t *mb = mb_of(b);
    const char *down;
    if (journal_down(mb, &down)) {
        cb(ud, SP_EUNAVAIL, down, NULL, NULL, 0);
        return;
    }
    sp_ejob_t **jobs = malloc((n ? n : 1) * sizeof *jobs);
    bool *existed = malloc(n ? n : 1);
    sp_jobrec_t *recs = malloc((n ? n : 1) * sizeof *recs);
    if (!jobs || !existed || !recs) {
        free(jobs);
        free(existed);
        free(recs);
        cb(ud, SP_ENOMEM, "out of memory", NULL, NULL, 0);
        return;
    }
    int err =
        sp_engine_submit_batch(mb->engine, sp_now_ms(), queue, queue_len, specs, n, jobs, existed);
    if (err) {
        cb(ud, err, err_text(err, NULL), NULL, NULL, 0);
    } else {
        for (size_t i = 0; i < n; i++) sp_engine_view(mb->engine, jobs[i], &recs[i]);
        if (holding(mb)) {
            answer_t *a = ans_new(ANS_BATCH, n, recs, existed, NULL);
            if (a) {
                a->cb.batch = cb;
                a->ud = ud;
                ans_hold(mb, a);
            } else {
                cb(ud, SP_ENOMEM, "out of memory", NULL, NULL, 0);
            }
        } else {
            cb(ud, 0, NULL, recs, existed, n);
        }
    }
    free(jobs);
    free(existed);
    free(recs);
    arm(mb);
}

static sp_be_wait_t *op_get(sp_backend_t *b, uint64_t id, int64_t wait_ms, sp_be_job_cb cb,
                            void *ud)
{
    mem_backend_t *mb = mb_of(b);
    sp_ejob_t *job = sp_engine_get(mb->engine, id);
    if (!job || wait_ms <= 0 || sp_state_finished(sp_ejob_state(job)) || mb->closing) {
        answer_get(mb, id, cb, ud);
        return NULL;
    }
    sp_be_wait_t *w = wait_new(mb, WAIT_GET, wait_ms, ud);
    if (!w) {
        answer_get(mb, id, cb, ud);
        return NULL;
    }
    w->cb.get = cb;
    w->job_id = id;
    return w;
}

static void op_cancel(sp_backend_t *b, uint64_t id, sp_be_job_cb cb, void *ud)
{
    mem_backend_t *mb = mb_of(b);
    const char *down;
    if (journal_down(mb, &down)) {
        cb(ud, SP_EUNAVAIL, down, NULL);
        return;
    }
    sp_ejob_t *job = NULL;
    const char *why = NULL;
    int err = sp_engine_cancel(mb->engine, sp_now_ms(), id, &job, &why);
    answer_job(mb, err, why, job, cb, ud);
}

static void op_retry(sp_backend_t *b, uint64_t id, sp_be_job_cb cb, void *ud)
{
    mem_backend_t *mb = mb_of(b);
    const char *down;
    if (journal_down(mb, &down)) {
        cb(ud, SP_EUNAVAIL, down, NULL);
        return;
    }
    sp_ejob_t *job = NULL;
    const char *why = NULL;
    int err = sp_engine_retry(mb->engine, sp_now_ms(), id, &job, &why);
    answer_job(mb, err, why, job, cb, ud);
}

/* A lease answered at once but held for the journal is not answered yet: its caller gets a
 * handle, so that a client that leaves before the disk has the lease takes no job. Short of
 * memory, no handle: the lease then simply expires if its client is gone. */
static sp_be_wait_t *timerless_wait(mem_backend_t *mb)
{
    sp_be_wait_t *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->kind = WAIT_LEASE;
    w->mb = mb;
    w->done = w->timer_closed = w->timerless = true;
    sp_list_init(&w->link);
    return w;
}

static sp_be_wait_t *op_lease(sp_backend_t *b, const sp_lease_req_t *req, int64_t wait_ms,
                              sp_be_jobs_cb cb, void *ud)
{
    mem_backend_t *mb = mb_of(b);
    const char *down;
    if (journal_down(mb, &down)) {
        cb(ud, SP_EUNAVAIL, down, NULL, 0, 0);
        return NULL;
    }
    sp_ejob_t *stack[64];
    sp_ejob_t **jobs = req->max <= 64 ? stack : malloc(req->max * sizeof *jobs);
    if (!jobs) {
        cb(ud, SP_ENOMEM, "out of memory", NULL, 0, 0);
        return NULL;
    }
    int err;
    size_t n = try_lease(mb, req, jobs, &err);
    if (n > 0 || err || wait_ms <= 0 || mb->closing) {
        sp_be_wait_t *handle = NULL;
        if (err)
            cb(ud, err, "out of memory", NULL, 0, 0);
        else
            handle = answer_lease(mb, cb, ud, jobs, n, NULL, true);
        if (jobs != stack) free(jobs);
        arm(mb);
        return handle;
    }
    if (jobs != stack) free(jobs);
    sp_be_wait_t *w = wait_new(mb, WAIT_LEASE, wait_ms, ud);
    if (!w || !wait_copy_req(w, req)) {
        if (w) {
            w->cb.lease = cb;
            wait_end(w);
        }
        cb(ud, SP_ENOMEM, "out of memory", NULL, 0, 0);
        return NULL;
    }
    w->cb.lease = cb;
    return w;
}

static void op_ack(sp_backend_t *b, uint64_t id, uint64_t lease, const char *result,
                   size_t result_len, bool want_job, sp_be_job_cb cb, void *ud)
{
    (void)want_job;
    mem_backend_t *mb = mb_of(b);
    const char *down;
    if (journal_down(mb, &down)) {
        cb(ud, SP_EUNAVAIL, down, NULL);
        return;
    }
    sp_ejob_t *job = NULL;
    const char *why = NULL;
    int err = sp_engine_ack(mb->engine, sp_now_ms(), id, lease, result, result_len, &job, &why);
    answer_job(mb, err, why, job, cb, ud);
}

static void op_fail(sp_backend_t *b, uint64_t id, uint64_t lease, const char *error,
                    size_t error_len, bool retry, int64_t retry_in_ms, sp_be_job_cb cb, void *ud)
{
    mem_backend_t *mb = mb_of(b);
    const char *down;
    if (journal_down(mb, &down)) {
        cb(ud, SP_EUNAVAIL, down, NULL);
        return;
    }
    sp_ejob_t *job = NULL;
    const char *why = NULL;
    int err = sp_engine_fail(mb->engine, sp_now_ms(), id, lease, error, error_len, retry,
                             retry_in_ms, &job, &why);
    answer_job(mb, err, why, job, cb, ud);
}

static void op_heartbeat(sp_backend_t *b, uint64_t id, uint64_t lease, int64_t extend_ms,
                         sp_be_job_cb cb, void *ud)
{
    mem_backend_t *mb = mb_of(b);
    const char *down;
    if (journal_down(mb, &down)) {
        cb(ud, SP_EUNAVAIL, down, NULL);
        return;
    }
    sp_ejob_t *job = NULL;
    const char *why = NULL;
    int err = sp_engine_heartbeat(mb->engine, sp_now_ms(), id, lease, extend_ms, &job, &why);
    answer_job(mb, err, why, job, cb, ud);
}

static void op_release(sp_backend_t *b, uint64_t id, uint64_t lease, sp_be_job_cb cb, void *ud)
{
    mem_backend_t *mb = mb_of(b);
    const char *down;
    if (journal_down(mb, &down)) {
        cb(ud, SP_EUNAVAIL, down, NULL);
        return;
    }
    sp_ejob_t *job = NULL;
    const char *why = NULL;
    int err = sp_engine_release(mb->engine, sp_now_ms(), id, lease, &job, &why);
    answer_job(mb, err, why, job, cb, ud);
}

static void op_queues(sp_backend_t *b, const char *name, size_t name_len, sp_be_queues_cb cb,
                      void *ud)
{
    mem_backend_t *mb = mb_of(b);
    int64_t now = sp_now_ms();
    if (name) {
        sp_equeue_t *q = sp_engine_queue_find(mb->engine, name, name_len);
        if (!q) {
            cb(ud, SP_ENOTFOUND, "no queue with this name", NULL, 0);
            return;
        }
        sp_queue_stats_t st;
        sp_engine_queue_stats(mb->engine, q, now, &st);
        cb(ud, 0, NULL, &st, 1);
        return;
    }
    size_t n = sp_engine_queue_count(mb->engine);
    sp_queue_stats_t *all = malloc((n ? n : 1) * sizeof *all);
    if (!all) {
        cb(ud, SP_ENOMEM, "out of memory", NULL, 0);
        return;
    }
    for (size_t i = 0; i < n; i++)
        sp_engine_queue_stats(mb->engine, sp_engine_queue_at(mb->engine, i), now, &all[i]);
    cb(ud, 0, NULL, all, n);
    free(all);
}

static void op_list(sp_backend_t *b, const char *queue, size_t queue_len, int state, uint64_t after,
                    size_t limit, sp_be_jobs_cb cb, void *ud)
{
    mem_backend_t *mb = mb_of(b);
    sp_equeue_t *q = sp_engine_queue_find(mb->engine, queue, queue_len);
    if (!q) {
        cb(ud, SP_ENOTFOUND, "no queue with this name", NULL, 0, 0);
        return;
    }
    sp_ejob_t **jobs = malloc((limit ? limit : 1) * sizeof *jobs);
    sp_jobrec_t *recs = malloc((limit ? limit : 1) * sizeof *recs);
    if (!jobs || !recs) {
        free(jobs);
        free(recs);
        cb(ud, SP_ENOMEM, "out of memory", NULL, 0, 0);
        return;
    }
    uint64_t next = 0;
    size_t n = sp_engine_list(mb->engine, q, state, after, limit, jobs, &next);
    for (size_t i = 0; i < n; i++) sp_engine_view(mb->engine, jobs[i], &recs[i]);
    cb(ud, 0, NULL, recs, n, next);
    free(jobs);
    free(recs);
}

static void op_pause(sp_backend_t *b, const char *queue, size_t queue_len, bool pause,
                     sp_be_queues_cb cb, void *ud)
{
    mem_backend_t *mb = mb_of(b);
    sp_equeue_t *q = NULL;
    const char *down;
    if (journal_down(mb, &down)) {
        cb(ud, SP_EUNAVAIL, down, NULL, 0);
        return;
    }
    int err = pause ? sp_engine_pause(mb->engine, queue, queue_len, &q)
                    : sp_engine_resume(mb->engine, queue, queue_len, &q);
    if (err) {
        cb(ud, err, err_text(err, NULL), NULL, 0);
        return;
    }
    sp_queue_stats_t st;
    sp_engine_queue_stats(mb->engine, q, sp_now_ms(), &st);
    if (mb->journal) sp_journal_queue(mb->journal, q);
    if (holding(mb)) {
        answer_t *a = ans_new(ANS_QUEUES, 0, NULL, NULL, &st);
        if (a) {
            a->cb.queues = cb;
            a->ud = ud;
            ans_hold(mb, a);
        } else {
            cb(ud, SP_ENOMEM, "out of memory", NULL, 0);
        }
        return;
    }
    cb(ud, 0, NULL, &st, 1);
}

static void op_purge(sp_backend_t *b, const char *queue, size_t queue_len, sp_state_t state,
                     sp_be_count_cb cb, void *ud)
{
    mem_backend_t *mb = mb_of(b);
    sp_equeue_t *q = sp_engine_queue_find(mb->engine, queue, queue_len);
    if (!q) {
        cb(ud, SP_ENOTFOUND, "no queue with this name", 0);
        return;
    }
    const char *down;
    if (journal_down(mb, &down)) {
        cb(ud, SP_EUNAVAIL, down, 0);
        return;
    }
    if (mb->journal && state != SP_STATE_RUNNING && (unsigned)state < SP_STATE_COUNT) {
        /* Purged jobs are noted first: the journal writes a forget for each one gone. */
        sp_ejob_t *page[256];
        uint64_t after = 0, next;
        do {
            size_t k = sp_engine_list(mb->engine, q, (int)state, after, 256, page, &next);
            for (size_t i = 0; i < k; i++) sp_journal_job(mb->journal, sp_ejob_id(page[i]));
            after = next;
        } while (next);
    }
    uint64_t deleted = 0;
    int err = sp_engine_purge(mb->engine, sp_now_ms(), q, state, &deleted);
    if (err) {
        cb(ud, err, err == SP_EINVAL ? "running jobs cannot be purged" : err_text(err, NULL), 0);
    } else if (holding(mb)) {
        sp_journal_queue(mb->journal, q);
        answer_t *a = ans_new(ANS_COUNT, 0, NULL, NULL, NULL);
        if (a) {
            a->cb.count = cb;
            a->ud = ud;
            a->count = deleted;
            ans_hold(mb, a);
        } else {
            cb(ud, SP_ENOMEM, "out of memory", 0);
        }
    } else {
        if (mb->journal) sp_journal_queue(mb->journal, q);
        cb(ud, 0, NULL, deleted);
    }
    arm(mb);
}

static void op_ready(sp_backend_t *b, sp_be_status_cb cb, void *ud)
{
    mem_backend_t *mb = mb_of(b);
    const char *down;
    if (mb->closing)
        cb(ud, SP_EUNAVAIL, "the backend is closing");
    else if (journal_down(mb, &down))
        cb(ud, SP_EUNAVAIL, down);
    else
        cb(ud, 0, NULL);
}

static void op_cancel_wait(sp_backend_t *b, sp_be_wait_t *w)
{
    (void)b;
    if (w && w->held)
        w->canceled = true;
    else if (w)
        wait_end(w);
}

/* The backend's own two handles count until close, so the count reaches zero only after
 * op_close, once every handle (each wait's timer included) has closed. */
static void release_handle(mem_backend_t *mb)
{
    if (--mb->open_handles > 0) return;
    void (*done)(void *) = mb->closed;
    void *ud = mb->closed_ud;
    sp_engine_free(mb->engine);
    free(mb);
    if (done) done(ud);
}

static void handle_closed(uv_handle_t *h)
{
    release_handle(h->data);
}

static void journal_closed(void *ud)
{
    mem_backend_t *mb = ud;
    mb->journal = NULL;
    release_handle(mb);
}

/* Waits are answered first (as if their time ran out), then the backend's handles closed;
 * the backend is freed once the last handle, including every wait's timer, has closed. */
static void op_close(sp_backend_t *b, void (*done)(void *ud), void *ud)
{
    mem_backend_t *mb = mb_of(b);
    mb->closing = true;
    mb->closed = done;
    mb->closed_ud = ud;
    while (!sp_list_empty(&mb->lease_waits)) {
        sp_be_wait_t *w = sp_container_of(mb->lease_waits.next, sp_be_wait_t, link);
        sp_be_jobs_cb cb = w->cb.lease;
        void *wud = w->ud;
        wait_end(w);
        cb(wud, 0, NULL, NULL, 0, 0);
    }
    while (!sp_list_empty(&mb->get_waits)) {
        sp_be_wait_t *w = sp_container_of(mb->get_waits.next, sp_be_wait_t, link);
        sp_be_job_cb cb = w->cb.get;
        void *wud = w->ud;
        uint64_t id = w->job_id;
        wait_end(w);
        answer_get(mb, id, cb, wud);
    }
    uv_close((uv_handle_t *)&mb->tick, handle_closed);
    uv_close((uv_handle_t *)&mb->wake, handle_closed);
    if (mb->journal) {
        /* The engine lives until the journal has written its last group. */
        mb->open_handles++;
        sp_journal_close(mb->journal, journal_closed, mb);
    }
}

static const sp_backend_ops_t memory_ops = {
    .name = "memory",
    .submit = op_submit,
    .submit_batch = op_submit_batch,
    .get = op_get,
    .cancel = op_cancel,
    .retry = op_retry,
    .lease = op_lease,
    .ack = op_ack,
    .fail = op_fail,
    .heartbeat = op_heartbeat,
    .release = op_release,
    .queues = op_queues,
    .list = op_list,
    .pause = op_pause,
    .purge = op_purge,
    .ready = op_ready,
    .cancel_wait = op_cancel_wait,
    .close = op_close,
};

sp_backend_t *sp_backend_memory_new(uv_loop_t *loop, const sp_engine_opts_t *opts)
{
    return sp_backend_memory_open(loop, opts, NULL, NULL, 0);
}

/* Lease waits are left waiting while the journal cannot be written (a lease then could not be
 * kept); once it can, they are served. */
static void journal_writable(void *ud)
{
    mem_backend_t *mb = ud;
    if (!sp_list_empty(&mb->lease_waits)) schedule_wake(mb);
}

sp_backend_t *sp_backend_memory_open(uv_loop_t *loop, const sp_engine_opts_t *opts,
                                     const sp_journal_opts_t *jo, char *err, size_t errlen)
{
    mem_backend_t *mb = calloc(1, sizeof *mb);
    if (!mb) {
        if (err) snprintf(err, errlen, "out of memory");
        return NULL;
    }
    sp_engine_opts_t o = *opts;
    o.on_ready = on_ready;
    o.on_change = on_change;
    o.ud = mb;
    mb->engine = sp_engine_new(&o);
    if (!mb->engine) {
        free(mb);
        if (err) snprintf(err, errlen, "out of memory");
        return NULL;
    }
    sp_journal_opts_t jopts;
    if (jo) {
        jopts = *jo;
        jopts.on_writable = journal_writable;
        jopts.ud = mb;
    }
    if (jo && sp_journal_open(loop, &jopts, mb->engine, &mb->journal, err, errlen) != 0) {
        sp_engine_free(mb->engine);
        free(mb);
        return NULL;
    }
    mb->base.ops = &memory_ops;
    mb->loop = loop;
    mb->tick_due = INT64_MAX;
    sp_list_init(&mb->lease_waits);
    sp_list_init(&mb->get_waits);
    uv_timer_init(loop, &mb->tick);
    uv_idle_init(loop, &mb->wake);
    mb->tick.data = mb;
    mb->wake.data = mb;
    mb->open_handles = 2;
    arm(mb); /* restored jobs may be due: delayed jobs, leases that ran out while stopped */
    return &mb->base;
}

sp_journal_t *sp_backend_memory_journal(sp_backend_t *b)
{
    return mb_of(b)->journal;
}

sp_engine_t *sp_backend_memory_engine(sp_backend_t *b)
{
    return mb_of(b)->engine;
}

void sp_backend_memory_observe(sp_backend_t *b,
                               void (*fn)(void *ud, const sp_jobrec_t *job, int from), void *ud)
{
    mem_backend_t *mb = mb_of(b);
    mb->observe = fn;
    mb->observe_ud = ud;
}
