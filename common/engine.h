/*
 * engine.h - the in-memory queue engine: a pure data structure, no I/O, no libuv.
 *
 * It owns queues, jobs and their life: per queue a priority+FIFO ready structure, one timer
 * heap for delayed jobs and lease deadlines, leases with fencing tokens, retries with backoff,
 * retention of finished jobs, the idempotency index, counts and totals kept incrementally (O(1)
 * depth), pause. The clock is passed in by the caller (`now`, ms since the epoch), so tests
 * drive time by hand. A job's state changes only here, through one function that switches on
 * the state enum.
 *
 * Every job is one allocation (record, type and payload together) while it waits; what only a
 * leased or finished job needs (worker, result, error, idempotency key) lives in a second,
 * optional block. At 1 000 000 queued jobs a job costs about 120 bytes above its payload.
 *
 * Pointers to jobs (sp_ejob_t *) returned by the engine stay valid until the next call that may
 * free jobs (sp_engine_tick, sp_engine_purge, sp_engine_free); copy what you need first.
 */
#ifndef SP_ENGINE_H
#define SP_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "job.h"
#include "sp.h"

typedef struct sp_engine sp_engine_t;
typedef struct sp_ejob sp_ejob_t;
typedef struct sp_equeue sp_equeue_t;

typedef struct {
    int64_t retention_ms; /* how long finished jobs are kept; default 24 h */
    int64_t idem_ttl_ms;  /* how long an idempotency key lives; default 24 h */
    uint64_t max_depth;   /* per queue unfinished jobs (scheduled+queued+running); 0 = none */
    uint64_t seed;        /* seeds lease tokens and backoff jitter; 0 picks a random seed */
    uint64_t first_id;    /* the first job id handed out; 0 means 1 */
    /* Called whenever a queue gains a ready (queued) job: submit, promotion of a delayed job,
     * retry, expired lease, release, resume. Used to wake long polls. May be NULL. */
    void (*on_ready)(void *ud, sp_equeue_t *q);
    /* Called after every state change of a job (old == new never happens); for events and
     * metrics. `from` is -1 for a new job. May be NULL. */
    void (*on_change)(void *ud, const sp_ejob_t *job, int from, sp_state_t to);
    void *ud;
} sp_engine_opts_t;

/* Fills *o with the defaults. */
void sp_engine_opts_default(sp_engine_opts_t *o);

/* Returns NULL on allocation failure. The options are copied. */
sp_engine_t *sp_engine_new(const sp_engine_opts_t *opts);
void sp_engine_free(sp_engine_t *e);

/* ---- submission -------------------------------------------------------------------------- */

/* Stores one job in queue `queue` (created on first use). The spec's payload is copied.
 * On success returns 0, sets *out to the job and *existed to true when the spec's idempotency
 * key matched a live job in that queue (then *out is that job and nothing is stored).
 * Errors: SP_EFULL (max_depth reached; nothing stored), SP_ENOMEM. */
int sp_engine_submit(sp_engine_t *e, int64_t now, const char *queue, size_t queue_len,
                     const sp_job_spec_t *spec, sp_ejob_t **out, bool *existed);

/* Stores n jobs in one queue, all or nothing. out[i] and existed[i] as for one submit; two
 * specs with the same idempotency key make one job. Fails with SP_EFULL if the new jobs would
 * pass max_depth, SP_ENOMEM; then nothing is stored. */
int sp_engine_submit_batch(sp_engine_t *e, int64_t now, const char *queue, size_t queue_len,
                           const sp_job_spec_t *specs, size_t n, sp_ejob_t **out, bool *existed);

/* ---- reading ----------------------------------------------------------------------------- */

/* The job with this id, or NULL. */
sp_ejob_t *sp_engine_get(sp_engine_t *e, uint64_t id);
/* Fills a record view of the job; its pointers live as long as the job does unchanged. */
void sp_engine_view(const sp_engine_t *e, const sp_ejob_t *job, sp_jobrec_t *out);
uint64_t sp_ejob_id(const sp_ejob_t *job);
sp_state_t sp_ejob_state(const sp_ejob_t *job);
sp_equeue_t *sp_ejob_queue(const sp_ejob_t *job);

/* ---- changing a job ---------------------------------------------------------------------- */
/* Each returns 0 and sets *out to the job, or SP_ENOTFOUND (no such job), SP_ECONFLICT (its
 * state or the lease forbids it; `why` then says why, e.g. "job is already succeeded").
 * `why` may be NULL; otherwise it points to a static string. */

/* Cancels: a scheduled or queued job becomes canceled; a running job gets cancel_requested
 * (it stays running until its worker fails, releases or its lease expires). Finished: conflict. */
int sp_engine_cancel(sp_engine_t *e, int64_t now, uint64_t id, sp_ejob_t **out, const char **why);

/* Re-queues a failed or canceled job with attempts reset to 0. Else conflict. */
int sp_engine_retry(sp_engine_t *e, int64_t now, uint64_t id, sp_ejob_t **out, const char **why);

/* Leases up to req->max ready jobs: queues tried strictly in the given order, paused queues
 * skipped, within a queue highest priority first then FIFO. Each leased job becomes running,
 * attempts += 1, gets a fresh lease token and lease_expires_at = now + its timeout_ms.
 * Writes the jobs to out[0..*n). Returns 0 (with *n == 0 when nothing is ready) or SP_ENOMEM. */
int sp_engine_lease(sp_engine_t *e, int64_t now, const sp_lease_req_t *req, sp_ejob_t **out,
                    size_t *n);

/* Acks a running job whose current lease is `lease` and whose lease has not expired: it
 * becomes succeeded with `result` (raw JSON text, copied; NULL means null). An ack repeated
 * with the lease that already finished the job succeeded returns 0 again. An ack on a job
 * with cancel_requested still ends it succeeded. */
int sp_engine_ack(sp_engine_t *e, int64_t now, uint64_t id, uint64_t lease, const char *result,
                  size_t result_len, sp_ejob_t **out, const char **why);

/* Fails the current attempt: with retry and attempts left, the job is scheduled at now + delay
 * (delay = retry_in_ms when >= 0, else min(backoff_ms * 2^(attempts-1), 1 h) plus up to 10 %
 * jitter), or queued at once when the delay is 0; else it ends failed. With cancel_requested
 * it ends canceled. `error` is plain text (copied; NULL means "failed"). */
int sp_engine_fail(sp_engine_t *e, int64_t now, uint64_t id, uint64_t lease, const char *error,
                   size_t error_len, bool retry, int64_t retry_in_ms, sp_ejob_t **out,
                   const char **why);

/* Extends the lease to now + extend_ms (or now + timeout_ms when extend_ms < 0). */
int sp_engine_heartbeat(sp_engine_t *e, int64_t now, uint64_t id, uint64_t lease, int64_t extend_ms,
                        sp_ejob_t **out, const char **why);

/* Hands the job back: queued again at once, attempts -= 1 (this attempt not counted). With
 * cancel_requested it ends canceled instead. */
int sp_engine_release(sp_engine_t *e, int64_t now, uint64_t id, uint64_t lease, sp_ejob_t **out,
                      const char **why);

/* ---- queues ------------------------------------------------------------------------------ */

sp_equeue_t *sp_engine_queue_find(sp_engine_t *e, const char *name, size_t len);
/* Finds or creates (SP_ENOMEM on failure). */
int sp_engine_queue_get(sp_engine_t *e, const char *name, size_t len, sp_equeue_t **out);
void sp_engine_queue_stats(const sp_engine_t *e, const sp_equeue_t *q, int64_t now,
                           sp_queue_stats_t *out);
/* Queues in the order they were first seen. */
size_t sp_engine_queue_count(const sp_engine_t *e);
sp_equeue_t *sp_engine_queue_at(const sp_engine_t *e, size_t i);
const char *sp_equeue_name(const sp_equeue_t *q, size_t *len);
/* Pause and resume; both create the queue if needed. Resume fires on_ready if jobs wait. */
int sp_engine_pause(sp_engine_t *e, const char *name, size_t len, sp_equeue_t **out);
int sp_engine_resume(sp_engine_t *e, const char *name, size_t len, sp_equeue_t **out);
bool sp_equeue_has_ready(const sp_equeue_t *q);

/* Pages through a queue's jobs, oldest (lowest id) first: jobs with id > after (0 = from the
 * start), in state `state` (-1 = every state), at most `limit`. Writes them to out and sets
 * *next to the id to pass as `after` for the next page, or 0 when there is no more. */
size_t sp_engine_list(sp_engine_t *e, const sp_equeue_t *q, int state, uint64_t after, size_t limit,
                      sp_ejob_t **out, uint64_t *next);

/* Drops every job of the queue in `state` (not running: SP_EINVAL). Sets *deleted. Purged jobs
 * are forgotten (their idempotency keys too). */
int sp_engine_purge(sp_engine_t *e, int64_t now, sp_equeue_t *q, sp_state_t state,
                    uint64_t *deleted);

/* ---- time -------------------------------------------------------------------------------- */

/* Acts on everything due at `now`: delayed jobs become queued, expired leases are retried (or
 * end failed on the last attempt, or canceled if cancel was requested) with last_error saying
 * the lease expired, finished jobs past retention and expired idempotency keys are forgotten.
 * Returns the next time something is due (ms), or INT64_MAX when nothing is. */
int64_t sp_engine_tick(sp_engine_t *e, int64_t now);

/* The next time something is due, or INT64_MAX; cheap (O(1)). */
int64_t sp_engine_next_deadline(const sp_engine_t *e);

/* Number of jobs held in memory (every state). */
size_t sp_engine_job_count(const sp_engine_t *e);

/* ---- restoring (the journal) ------------------------------------------------------------- */
/* A journal keeps each job's resulting state after every change and puts it back on start.
 * None of these call on_change or on_ready. */

/* Like sp_engine_view, but the lease token and lease_expires_at are kept whatever the state (a
 * finished job remembers the lease that ended it, so that a repeated ack still succeeds). */
void sp_engine_view_full(const sp_engine_t *e, const sp_ejob_t *job, sp_jobrec_t *out);

/* Inserts job rec->id exactly as the record says (state, attempts, lease token and deadline,
 * times, strings), or updates it in place when it exists. The queue is created if needed; its
 * counts follow, its totals do not (sp_engine_queue_restore). An idempotency key is live again
 * when created_at + idem_ttl is after now. The next id handed out is raised past rec->id.
 * Returns 0, SP_EINVAL (an impossible record) or SP_ENOMEM (nothing changed). */
int sp_engine_restore(sp_engine_t *e, int64_t now, const sp_jobrec_t *rec);
/* Forgets a job as a purge would. SP_ENOTFOUND when there is none. */
int sp_engine_forget(sp_engine_t *e, uint64_t id);
/* Sets a queue's pause flag and totals (enqueued, succeeded, failed, retried, leased, canceled)
 * from st, creating the queue; its counts are left as the jobs make them. */
int sp_engine_queue_restore(sp_engine_t *e, const sp_queue_stats_t *st);
/* The id the next new job gets; raising it (never lowering) keeps ids unique across restarts. */
uint64_t sp_engine_next_id(const sp_engine_t *e);
void sp_engine_set_next_id(sp_engine_t *e, uint64_t id);

#endif
