/*
 * pool.c - the worker pool (see pool.h): a fixed array of slots, the one lease request the pool
 * has out at a time, per-job heartbeats, and the graceful stop.
 *
 * How it runs:
 * - A slot is FREE, RESERVED (named in the pending lease request), RUNNING (its handler has the
 *   job), FINISHING (its ack, fail or release is out) or DONE (answered, but a heartbeat answer
 *   is still due). Slots are preallocated and each keeps its copy buffer between jobs, so a job
 *   that finishes inside its handler's start costs no allocation and no timer here.
 * - Leases are issued only from sp_pool_start, a uv_idle callback or the retry timer, never from
 *   inside a backend or handler callback: a backend that answers before the call returns and a
 *   handler that finishes inside start therefore never recurse into a new lease, and between
 *   two batches the loop gets a turn to serve its other handles. The idle handle is started only
 *   when a lease is wanted and none is out; a pool waiting in a long poll or with every slot
 *   busy keeps nothing active but that wait.
 * - The worker string of a lease is "NAME/N", N the slot reserved for the batch's first job (a
 *   lease request carries one worker string for the whole batch; the other jobs of the batch
 *   carry the same string). Slots are numbered from 1.
 * - A job whose handler is still running after start returns gets a repeating heartbeat every
 *   third of its timeout_ms. An answer with cancel_requested cancels the handler and then fails
 *   the job (the backend ends it canceled); a 409 or 404 (the lease is gone) cancels the handler
 *   and drops the job without an answer.
 * - An ack, fail or release that the backend refuses is logged and the slot freed: the lease
 *   then expires and the job runs again (delivery is at least once).
 * - A slot whose job succeeded is free again as its ack goes out (FINISHING is for fails and
 *   releases): the next lease then travels with the acks instead of waiting for their answer.
 *   The acks still out are counted, and the pool stops only once they are answered.
 */
#include "pool.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backoff.h"
#include "handler.h"
#include "log.h"
#include "sp.h"

#define LEASE_MAX 1000
#define WAIT_MS_DEFAULT 30000
#define WAIT_MS_MAX 60000
#define CONCURRENCY_MAX 1000000
/* Backoff between lease attempts while the backend answers with errors. */
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 5000
/* Pause before leasing again when a lease came back empty without waiting, so that a backend
 * that cannot long-poll is not asked in a tight loop. */
#define EMPTY_DELAY_MS 100
/* A slot keeps its copy buffer between jobs unless a big payload made it larger than this. */
#define SLOT_BUF_KEEP 65536
#define SLOT_BUF_MIN 256

typedef enum {
    SLOT_FREE,
    SLOT_RESERVED,
    SLOT_RUNNING,
    SLOT_FINISHING,
    SLOT_DONE,
} slot_state_t;

/* Why a running handler was asked to stop, which decides what happens to its job. */
typedef enum {
    INTR_NONE,
    INTR_CANCEL,  /* cancel requested: fail it, the backend ends it canceled */
    INTR_LOST,    /* the lease is gone: drop it without an answer */
    INTR_RELEASE, /* the pool is stopping: hand it back */
} intr_t;

typedef struct {
    sp_hjob_t job; /* handed to the handler; the slot is found again with container_of */
    sp_pool_t *pool;
    const sp_handler_t *handler;
    uint32_t num; /* 1-based */
    slot_state_t state;
    intr_t intr;
    bool hb_inflight;
    const char *op; /* the finishing operation, for logs */
    char *buf;      /* queue, type and payload of the current job */
    size_t cap;
    uv_timer_t hb;
} slot_t;

struct sp_pool {
    uv_loop_t *loop;
    sp_backend_t *b;
    const sp_handlers_t *handlers;

    slot_t *slots;
    size_t nslots;
    uint32_t *freev; /* stack of free slot indices */
    size_t nfree;
    size_t running;

    char **queues;
    size_t *queue_lens;
    size_t nqueues;
    char *name;
    size_t name_len;
    int64_t wait_ms;
    char worker[SP_WORKER_MAX + 1];

    bool started, stopping, closing;
    bool lease_pending;
    bool in_lease_call;
    sp_be_wait_t *wait;
    slot_t *lease_slot;   /* reserved for the first job of the pending lease */
    sp_backoff_t backoff; /* between failed lease requests */
    size_t orphans;       /* releases out for jobs that had no slot */
    size_t acks_out;      /* acks sent for slots already free again */
    uint64_t hb_failed;   /* heartbeats failed since the last warning about them */
    int64_t hb_warned_at; /* when that warning was logged (loop time, ms) */
    bool hb_failing;      /* heartbeats fail: warned about, not answered since */

    uv_idle_t idle;
    bool idle_active;
    uv_timer_t retry;
    uv_timer_t grace;
    size_t closes_left;
    void (*done)(void *ud);
    void *done_ud;
};

static void lease_issue(sp_pool_t *p);
static void maybe_finish(sp_pool_t *p);

/* ---- slots ------------------------------------------------------------------------------- */

static slot_t *slot_pop(sp_pool_t *p)
{
    return &p->slots[p->freev[--p->nfree]];
}

static void slot_push(sp_pool_t *p, slot_t *s)
{
    s->state = SLOT_FREE;
    p->freev[p->nfree++] = s->num - 1;
}

static void idle_fired(uv_idle_t *h)
{
    sp_pool_t *p = h->data;
    uv_idle_stop(h);
    p->idle_active = false;
    lease_issue(p);
}

/* Asks for a lease on the next loop turn when one can go out. */
static void want_lease(sp_pool_t *p)
{
    if (!p->started || p->stopping || p->lease_pending || p->nfree == 0 || p->idle_active ||
        uv_is_active((uv_handle_t *)&p->retry))
        return;
    p->idle_active = true;
    uv_idle_start(&p->idle, idle_fired);
}

/* Frees the slot once its job is answered and no heartbeat answer is still due. */
static void slot_settle(slot_t *s)
{
    if (s->state != SLOT_DONE || s->hb_inflight) return;
    sp_pool_t *p = s->pool;
    if (s->cap > SLOT_BUF_KEEP) {
        free(s->buf);
        s->buf = NULL;
        s->cap = 0;
    }
    slot_push(p, s);
    want_lease(p);
    maybe_finish(p);
}

static void slot_final(slot_t *s)
{
    s->pool->running--;
    s->state = SLOT_DONE;
    slot_settle(s);
}

static void final_answered(void *ud, int status, const char *why, const sp_jobrec_t *job)
{
    (void)job;
    slot_t *s = ud;
    if (status < 0) {
        sp_warn("worker %s/%" PRIu32 ": %s of job %" PRIu64 " refused: %s", s->pool->name, s->num,
                s->op, s->job.id, why ? why : sp_strerror(status));
    }
    slot_final(s);
}

/* An ack that outlives its slot: what its answer needs to be logged. */
typedef struct {
    sp_pool_t *pool;
    uint64_t id;
    uint32_t num;
} ack_out_t;

static void ack_answered(void *ud, int status, const char *why, const sp_jobrec_t *job)
{
    (void)job;
    ack_out_t *a = ud;
    sp_pool_t *p = a->pool;
    if (status < 0)
        sp_warn("worker %s/%" PRIu32 ": ack of job %" PRIu64 " refused: %s", p->name, a->num, a->id,
                why ? why : sp_strerror(status));
    free(a);
    p->acks_out--;
    maybe_finish(p);
}

static void slot_release(slot_t *s)
{
    sp_pool_t *p = s->pool;
    s->state = SLOT_FINISHING;
    s->op = "release";
    p->b->ops->release(p->b, s->job.id, s->job.lease, final_answered, s);
}

/* The done function handed to every handler. */
static void job_done(sp_hjob_t *job, bool ok, const char *text, size_t len, bool retry)
{
    slot_t *s = sp_container_of(job, slot_t, job);
    sp_pool_t *p = s->pool;
    if (s->state != SLOT_RUNNING) {
        sp_error("worker %s/%" PRIu32 ": handler finished job %" PRIu64 " twice", p->name, s->num,
                 job->id);
        return;
    }
    uv_timer_stop(&s->hb);
    s->state = SLOT_FINISHING;
    switch (s->intr) {
    case INTR_NONE:
        if (ok) {
            s->op = "ack";
            if (!text) {
                text = "null";
                len = 4;
            }
            /* The slot is free again as the ack goes out: the next lease can travel with it
             * instead of waiting for its answer. Shutdown still waits for every ack. */
            ack_out_t *a = malloc(sizeof *a);
            if (!a) {
                p->b->ops->ack(p->b, job->id, job->lease, text, len, false, final_answered, s);
                break;
            }
            a->pool = p;
            a->id = job->id;
            a->num = s->num;
            p->acks_out++;
            p->b->ops->ack(p->b, job->id, job->lease, text, len, false, ack_answered, a);
            slot_final(s);
        } else {
            s->op = "fail";
            p->b->ops->fail(p->b, job->id, job->lease, text, text ? len : 0, retry, -1,
                            final_answered, s);
        }
        break;
    case INTR_CANCEL: {
        static const char msg[] = "canceled";
        s->op = "fail";
        p->b->ops->fail(p->b, job->id, job->lease, msg, sizeof msg - 1, false, -1, final_answered,
                        s);
        break;
    }
    case INTR_RELEASE:
        slot_release(s);
        break;
    case INTR_LOST:
        slot_final(s);
        break;
    }
}

static void slot_interrupt(slot_t *s, intr_t why)
{
    if (s->state != SLOT_RUNNING || s->intr != INTR_NONE) return;
    s->intr = why;
    if (why == INTR_LOST) uv_timer_stop(&s->hb);
    /* A handler that is not started yet (handler NULL) is handed back by lease_answered. */
    if (s->handler && s->handler->cancel) s->handler->cancel(s->handler, &s->job);
}

#define HB_WARN_EVERY_MS 10000

/* Failed heartbeats are warned about once per HB_WARN_EVERY_MS for the whole pool, not once per
 * running job: with the backend unreachable, every slot's heartbeat fails at each interval. */
static void hb_failed(sp_pool_t *p, const slot_t *s, int status, const char *why)
{
    int64_t now = (int64_t)uv_now(p->loop);
    bool first = !p->hb_failing;
    p->hb_failing = true;
    p->hb_failed++;
    if (first) {
        sp_warn("worker %s: heartbeat of job %" PRIu64 " (slot %" PRIu32 ") failed: %s; its lease "
                "holds until it runs out and heartbeats go on (further failures: one warning "
                "every %d s)",
                p->name, s->job.id, s->num, why ? why : sp_strerror(status),
                HB_WARN_EVERY_MS / 1000);
    } else if (now - p->hb_warned_at >= HB_WARN_EVERY_MS) {
        sp_warn("worker %s: %" PRIu64 " more heartbeats failed in the last %" PRId64
                " s, the last of job %" PRIu64 ": %s",
                p->name, p->hb_failed - 1, (now - p->hb_warned_at) / 1000, s->job.id,
                why ? why : sp_strerror(status));
    } else {
        return;
    }
    p->hb_failed = 1;
    p->hb_warned_at = now;
}

static void hb_ok(sp_pool_t *p)
{
    if (!p->hb_failing) return;
    sp_info("worker %s: heartbeats answered again", p->name);
    p->hb_failing = false; /* the next failure is warned about at once, its count restarted */
}

static void hb_answered(void *ud, int status, const char *why, const sp_jobrec_t *job)
{
    slot_t *s = ud;
    s->hb_inflight = false;
    if (s->state == SLOT_RUNNING) {
        if (status == SP_ECONFLICT || status == SP_ENOTFOUND) {
            sp_warn("worker %s/%" PRIu32 ": lost the lease of job %" PRIu64 ": %s", s->pool->name,
                    s->num, s->job.id, why ? why : sp_strerror(status));
            slot_interrupt(s, INTR_LOST);
        } else if (status < 0) {
            /* Transient (the backend is unreachable): the next heartbeat tries again. */
            hb_failed(s->pool, s, status, why);
        } else {
            hb_ok(s->pool);
            if (job && job->cancel_requested) slot_interrupt(s, INTR_CANCEL);
        }
    }
    slot_settle(s);
}

static void hb_fired(uv_timer_t *t)
{
    slot_t *s = t->data;
    if (s->state != SLOT_RUNNING || s->hb_inflight || s->intr == INTR_LOST) return;
    sp_pool_t *p = s->pool;
    s->hb_inflight = true;
    p->b->ops->heartbeat(p->b, s->job.id, s->job.lease, -1, hb_answered, s);
}

/* Copies a leased record into the slot (records live only during the lease callback).
 * Returns false when the copy buffer cannot grow. */
static bool slot_take(sp_pool_t *p, slot_t *s, const sp_jobrec_t *r)
{
    const char *payload = r->payload ? r->payload : "null";
    size_t payload_len = r->payload ? r->payload_len : 4;
    size_t need = r->queue_len + r->type_len + payload_len + 3;
    s->state = SLOT_RUNNING;
    s->intr = INTR_NONE;
    s->handler = NULL;
    p->running++;
    sp_hjob_t *j = &s->job;
    j->loop = p->loop;
    j->id = r->id;
    j->lease = r->lease;
    j->attempts = r->attempts;
    j->max_attempts = r->max_attempts;
    j->timeout_ms = r->timeout_ms;
    j->hstate = NULL;
    if (need > s->cap) {
        size_t cap = SP_MAX(need, (size_t)SLOT_BUF_MIN);
        char *nb = malloc(cap);
        if (!nb) return false;
        free(s->buf);
        s->buf = nb;
        s->cap = cap;
    }
    char *w = s->buf;
    j->queue = w;
    j->queue_len = r->queue_len;
    memcpy(w, r->queue, r->queue_len);
    w += r->queue_len;
    *w++ = '\0';
    j->type = w;
    j->type_len = r->type_len;
    memcpy(w, r->type, r->type_len);
    w += r->type_len;
    *w++ = '\0';
    j->payload = w;
    j->payload_len = payload_len;
    memcpy(w, payload, payload_len);
    w[payload_len] = '\0';
    return true;
}

static void slot_start(sp_pool_t *p, slot_t *s)
{
    sp_hjob_t *j = &s->job;
    const sp_handler_t *h = sp_handlers_find(p->handlers, j->type, j->type_len);
    if (!h) {
        /* Retry: an operator may deploy a handler for this type before the next attempt. */
        char msg[64 + SP_NAME_MAX];
        int n =
            snprintf(msg, sizeof msg, "no handler knows type '%.*s'", (int)j->type_len, j->type);
        size_t len = n < 0 ? 0 : SP_MIN((size_t)n, sizeof msg - 1);
        job_done(j, false, msg, len, true);
        return;
    }
    s->handler = h;
    h->start(h, j, job_done);
    /* Only a job still running after start gets heartbeats: synchronous jobs cost no timer. The
     * slot cannot have been taken by another job meanwhile: slots are taken only in
     * lease_answered, and leases never go out from inside a handler. */
    if (s->state == SLOT_RUNNING && s->intr == INTR_NONE) {
        uint64_t iv = (j->timeout_ms ? j->timeout_ms : SP_DEFAULT_TIMEOUT_MS) / 3;
        if (iv == 0) iv = 1;
        uv_timer_start(&s->hb, hb_fired, iv, iv);
    }
}

/* ---- leasing ----------------------------------------------------------------------------- */

static void retry_fired(uv_timer_t *t)
{
    lease_issue(t->data);
}

static void orphan_released(void *ud, int status, const char *why, const sp_jobrec_t *job)
{
    (void)status;
    (void)why;
    (void)job;
    sp_pool_t *p = ud;
    p->orphans--;
    maybe_finish(p);
}

static void lease_answered(void *ud, int status, const char *why, const sp_jobrec_t *jobs, size_t n,
                           uint64_t next)
{
    (void)next;
    sp_pool_t *p = ud;
    bool sync = p->in_lease_call;
    slot_t *first = p->lease_slot;
    p->lease_pending = false;
    p->wait = NULL;
    p->lease_slot = NULL;

    if (status < 0 || n == 0) {
        slot_push(p, first);
        if (status < 0) {
            int64_t delay = sp_backoff_next(&p->backoff);
            sp_warn("worker %s: lease failed (%s); trying again in %" PRId64 " ms", p->name,
                    why ? why : sp_strerror(status), delay);
            if (!p->stopping) uv_timer_start(&p->retry, retry_fired, (uint64_t)delay, 0);
        } else if (sync && !p->stopping) {
            uv_timer_start(&p->retry, retry_fired, EMPTY_DELAY_MS, 0);
        } else {
            want_lease(p);
        }
        maybe_finish(p);
        return;
    }
    sp_backoff_reset(&p->backoff);

    /* Copy every record before any handler runs: a handler that finishes at once acks, and
     * the records must not change under the copies still to be made. */
    slot_t *taken[LEASE_MAX];
    size_t ntaken = 0;
    bool oom = false;
    for (size_t i = 0; i < n; i++) {
        slot_t *s = i == 0 ? first : (p->nfree > 0 && ntaken < LEASE_MAX ? slot_pop(p) : NULL);
        if (!s) {
            /* More jobs than were asked for: hand them back untouched. */
            p->orphans++;
            p->b->ops->release(p->b, jobs[i].id, jobs[i].lease, orphan_released, p);
            continue;
        }
        if (!slot_take(p, s, &jobs[i])) {
            oom = true;
            s->intr = INTR_RELEASE;
        }
        taken[ntaken++] = s;
    }
    if (oom) sp_error("worker %s: out of memory copying leased jobs; handing them back", p->name);

    for (size_t i = 0; i < ntaken; i++) {
        slot_t *s = taken[i];
        if (s->state != SLOT_RUNNING) continue;
        if (p->stopping || s->intr != INTR_NONE)
            slot_release(s);
        else
            slot_start(p, s);
    }
    want_lease(p);
}

static void lease_issue(sp_pool_t *p)
{
    if (!p->started || p->stopping || p->lease_pending || p->nfree == 0) return;
    size_t max = SP_MIN(p->nfree, (size_t)LEASE_MAX);
    slot_t *s = slot_pop(p);
    s->state = SLOT_RESERVED;
    p->lease_slot = s;
    int n =
        snprintf(p->worker, sizeof p->worker, "%.*s/%" PRIu32, (int)p->name_len, p->name, s->num);
    sp_lease_req_t req = {
        .queues = p->nqueues ? (const char *const *)p->queues : NULL,
        .queue_lens = p->nqueues ? p->queue_lens : NULL,
        .nqueues = p->nqueues,
        .max = max,
        .worker = p->worker,
        .worker_len = n < 0 ? 0 : SP_MIN((size_t)n, sizeof p->worker - 1),
    };
    p->lease_pending = true;
    p->in_lease_call = true;
    sp_be_wait_t *w = p->b->ops->lease(p->b, &req, p->wait_ms, lease_answered, p);
    p->in_lease_call = false;
    if (p->lease_pending) p->wait = w;
}

/* ---- life -------------------------------------------------------------------------------- */

static void pool_free(sp_pool_t *p)
{
    if (p->slots) {
        for (size_t i = 0; i < p->nslots; i++) free(p->slots[i].buf);
    }
    for (size_t i = 0; i < p->nqueues; i++) free(p->queues[i]);
    free(p->queues);
    free(p->queue_lens);
    free(p->slots);
    free(p->freev);
    free(p->name);
    free(p);
}

static void handle_closed(uv_handle_t *h)
{
    sp_pool_t *p = h->data;
    if (--p->closes_left > 0) return;
    void (*done)(void *) = p->done;
    void *ud = p->done_ud;
    pool_free(p);
    if (done) done(ud);
}

static void maybe_finish(sp_pool_t *p)
{
    if (!p->stopping || p->closing) return;
    if (p->nfree != p->nslots || p->lease_pending || p->orphans > 0 || p->acks_out > 0) return;
    p->closing = true;
    p->closes_left = 3 + p->nslots;
    uv_close((uv_handle_t *)&p->idle, handle_closed);
    uv_close((uv_handle_t *)&p->retry, handle_closed);
    uv_close((uv_handle_t *)&p->grace, handle_closed);
    for (size_t i = 0; i < p->nslots; i++) {
        p->slots[i].hb.data = p;
        uv_close((uv_handle_t *)&p->slots[i].hb, handle_closed);
    }
}

static void interrupt_all(sp_pool_t *p)
{
    for (size_t i = 0; i < p->nslots && !p->closing; i++) {
        slot_interrupt(&p->slots[i], INTR_RELEASE);
    }
}

static void grace_fired(uv_timer_t *t)
{
    interrupt_all(t->data);
}

static char *dup_bytes(const char *s, size_t len)
{
    char *d = malloc(len + 1);
    if (!d) return NULL;
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

/* HOST:PID, as spool-worker names itself by default. */
static char *default_name(size_t *len)
{
    char host[128];
    if (gethostname(host, sizeof host) != 0) host[0] = '\0';
    host[sizeof host - 1] = '\0';
    char buf[160];
    int n = snprintf(buf, sizeof buf, "%s:%ld", host[0] ? host : "localhost", (long)getpid());
    *len = n < 0 ? 0 : SP_MIN((size_t)n, sizeof buf - 1);
    return dup_bytes(buf, *len);
}

sp_pool_t *sp_pool_new(uv_loop_t *loop, sp_backend_t *backend, const sp_pool_opts_t *opts)
{
    sp_pool_t *p = calloc(1, sizeof *p);
    if (p) sp_backoff_init(&p->backoff, RETRY_MIN_MS, RETRY_MAX_MS, 25);
    if (!p) return NULL;
    p->loop = loop;
    p->b = backend;
    size_t conc = opts->concurrency ? opts->concurrency : 1;
    p->nslots = SP_MIN(conc, (size_t)CONCURRENCY_MAX);
    p->wait_ms = opts->lease_wait_ms > 0 ? SP_MIN(opts->lease_wait_ms, (int64_t)WAIT_MS_MAX)
                                         : WAIT_MS_DEFAULT;

    /* Room for "/" and a slot number in the worker string. */
    size_t name_max = SP_WORKER_MAX - 12;
    if (opts->name && opts->name[0]) {
        p->name_len = SP_MIN(strlen(opts->name), name_max);
        p->name = dup_bytes(opts->name, p->name_len);
    } else {
        p->name = default_name(&p->name_len);
        if (p->name_len > name_max) p->name_len = name_max;
    }
    if (!p->name) goto fail;

    if (opts->queues && opts->nqueues > 0) {
        p->queues = calloc(opts->nqueues, sizeof *p->queues);
        p->queue_lens = calloc(opts->nqueues, sizeof *p->queue_lens);
        if (!p->queues || !p->queue_lens) goto fail;
        p->nqueues = opts->nqueues;
        for (size_t i = 0; i < opts->nqueues; i++) {
            p->queue_lens[i] = strlen(opts->queues[i]);
            p->queues[i] = dup_bytes(opts->queues[i], p->queue_lens[i]);
            if (!p->queues[i]) goto fail;
        }
    }

    p->slots = calloc(p->nslots, sizeof *p->slots);
    p->freev = calloc(p->nslots, sizeof *p->freev);
    if (!p->slots || !p->freev) goto fail;
    /* Slot 1 on top of the stack, so that a lone job runs in slot 1. */
    for (size_t i = p->nslots; i-- > 0;) {
        slot_t *s = &p->slots[i];
        s->pool = p;
        s->num = (uint32_t)(i + 1);
        uv_timer_init(loop, &s->hb);
        s->hb.data = s;
        slot_push(p, s);
    }
    uv_idle_init(loop, &p->idle);
    p->idle.data = p;
    uv_timer_init(loop, &p->retry);
    p->retry.data = p;
    uv_timer_init(loop, &p->grace);
    p->grace.data = p;
    return p;

fail:
    /* No handle was initialised yet, so plain freeing is safe. */
    pool_free(p);
    return NULL;
}

void sp_pool_set_handlers(sp_pool_t *p, const sp_handlers_t *handlers)
{
    p->handlers = handlers;
}

int sp_pool_start(sp_pool_t *p)
{
    if (p->started || p->stopping) return p->stopping ? SP_EINVAL : 0;
    p->started = true;
    lease_issue(p);
    return 0;
}

void sp_pool_stop(sp_pool_t *p, int64_t grace_ms, void (*done)(void *ud), void *ud)
{
    if (p->stopping) return;
    p->stopping = true;
    p->done = done;
    p->done_ud = ud;
    if (p->idle_active) {
        uv_idle_stop(&p->idle);
        p->idle_active = false;
    }
    uv_timer_stop(&p->retry);
    if (p->lease_pending && p->wait) {
        p->b->ops->cancel_wait(p->b, p->wait);
        p->wait = NULL;
        p->lease_pending = false;
        slot_push(p, p->lease_slot);
        p->lease_slot = NULL;
    }
    if (grace_ms <= 0)
        interrupt_all(p);
    else
        uv_timer_start(&p->grace, grace_fired, (uint64_t)grace_ms, 0);
    maybe_finish(p);
}

size_t sp_pool_running(const sp_pool_t *p)
{
    return p->running;
}
