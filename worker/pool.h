/*
 * pool.h - the worker pool: N worker coroutines that lease jobs from a backend, run each
 * through the handler its type names, and ack or fail it.
 *
 * A "coroutine" is a slot: a small state machine driven by libuv callbacks. The pool leases in
 * batches sized to its free slots with a long poll, so an idle pool costs one waiting request,
 * heartbeats each running job at a third of its timeout, and on stop hands back what it could
 * not finish. Used by `spool-server --workers N` (backend = the server's own) and by
 * `spool-worker` (backend = the HTTP worker protocol or Redis).
 */
#ifndef SP_POOL_H
#define SP_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "backend.h"
#include "handler.h"

typedef struct sp_pool sp_pool_t;

typedef struct {
    size_t concurrency;        /* slots; >= 1 */
    const char *const *queues; /* NULL = every queue */
    size_t nqueues;
    const char *name;      /* worker name; each slot's `worker` string is "NAME/slot" */
    int64_t lease_wait_ms; /* long poll length; default 30000 */
} sp_pool_opts_t;

/* Creates a pool on `loop` that takes jobs from `backend` (not owned). Options are copied.
 * Returns NULL on allocation failure. */
sp_pool_t *sp_pool_new(uv_loop_t *loop, sp_backend_t *backend, const sp_pool_opts_t *opts);

/* Sets the table that maps job types beyond the built-ins to handlers (not owned; it must
 * outlive the pool and not change while the pool runs). Without one, only the built-in
 * handlers run and every other type fails its attempt with "no handler knows type 'X'". */
void sp_pool_set_handlers(sp_pool_t *p, const sp_handlers_t *handlers);

/* Starts leasing. */
int sp_pool_start(sp_pool_t *p);

/* Graceful stop: stops leasing at once, lets running jobs finish for up to grace_ms, then
 * interrupts the rest and hands their jobs back (release: the attempt is not counted). When
 * every slot is idle and every handle is closed, frees the pool and calls done(ud). */
void sp_pool_stop(sp_pool_t *p, int64_t grace_ms, void (*done)(void *ud), void *ud);

/* Jobs running now. */
size_t sp_pool_running(const sp_pool_t *p);

#endif
