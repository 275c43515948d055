/*
 * backend.h - the interface between the job store and everything that uses it: the HTTP API
 * and the worker pool. A table of asynchronous operations, each completing through a callback.
 *
 * A callback may run before the call returns (the memory backend answers at once) or on a later
 * loop turn (a backend across a network); callers are written for both. Records and strings
 * handed to a callback are valid only during it: copy what you keep.
 *
 * Every callback gets `status` (0 or a negative SP_E* code) and `why`, a short text saying what
 * went wrong when status < 0 (may be NULL).
 *
 * Operations that may wait (a long-poll lease, a get that waits for a job to finish) return a
 * handle while they wait, or NULL when they have already answered. cancel_wait(handle) drops a
 * wait without calling its callback.
 */
#ifndef SP_BACKEND_H
#define SP_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "job.h"
#include "sp.h"

typedef struct sp_backend sp_backend_t;
typedef struct sp_be_wait sp_be_wait_t;

typedef void (*sp_be_job_cb)(void *ud, int status, const char *why, const sp_jobrec_t *job);
typedef void (*sp_be_submit_cb)(void *ud, int status, const char *why, const sp_jobrec_t *job,
                                bool existed);
/* jobs[i], existed[i] for each spec, in order. */
typedef void (*sp_be_batch_cb)(void *ud, int status, const char *why, const sp_jobrec_t *jobs,
                               const bool *existed, size_t n);
/* Leased or listed jobs; `next` is the paging cursor for list (0 = end), 0 for lease. */
typedef void (*sp_be_jobs_cb)(void *ud, int status, const char *why, const sp_jobrec_t *jobs,
                              size_t n, uint64_t next);
typedef void (*sp_be_queues_cb)(void *ud, int status, const char *why,
                                const sp_queue_stats_t *queues, size_t n);
typedef void (*sp_be_count_cb)(void *ud, int status, const char *why, uint64_t n);
typedef void (*sp_be_status_cb)(void *ud, int status, const char *why);

typedef struct {
    const char *name; /* "memory", "redis" */

    void (*submit)(sp_backend_t *b, const char *queue, size_t queue_len, const sp_job_spec_t *spec,
                   sp_be_submit_cb cb, void *ud);
    /* All or nothing. */
    void (*submit_batch)(sp_backend_t *b, const char *queue, size_t queue_len,
                         const sp_job_spec_t *specs, size_t n, sp_be_batch_cb cb, void *ud);
    /* Reads a job; with wait_ms > 0 and the job unfinished, answers when it finishes or when
     * wait_ms have passed, whichever is first (with the job as it is then). */
    sp_be_wait_t *(*get)(sp_backend_t *b, uint64_t id, int64_t wait_ms, sp_be_job_cb cb, void *ud);
    void (*cancel)(sp_backend_t *b, uint64_t id, sp_be_job_cb cb, void *ud);
    void (*retry)(sp_backend_t *b, uint64_t id, sp_be_job_cb cb, void *ud);

    /* Leases up to req->max jobs; with none ready waits up to wait_ms for one (long poll) and
     * then answers with n == 0. Leased records carry their lease token and deadline. */
    sp_be_wait_t *(*lease)(sp_backend_t *b, const sp_lease_req_t *req, int64_t wait_ms,
                           sp_be_jobs_cb cb, void *ud);
    /* want_job false: a caller that needs only the status; a successful ack may then be
     * answered with job NULL. */
    void (*ack)(sp_backend_t *b, uint64_t id, uint64_t lease, const char *result, size_t result_len,
                bool want_job, sp_be_job_cb cb, void *ud);
    /* retry_in_ms < 0: the job's backoff decides. error NULL: "failed". */
    void (*fail)(sp_backend_t *b, uint64_t id, uint64_t lease, const char *error, size_t error_len,
                 bool retry, int64_t retry_in_ms, sp_be_job_cb cb, void *ud);
    /* extend_ms < 0: the job's timeout_ms. */
    void (*heartbeat)(sp_backend_t *b, uint64_t id, uint64_t lease, int64_t extend_ms,
                      sp_be_job_cb cb, void *ud);
    void (*release)(sp_backend_t *b, uint64_t id, uint64_t lease, sp_be_job_cb cb, void *ud);

    /* One queue (name != NULL; SP_ENOTFOUND when never seen) or all queues (name == NULL). */
    void (*queues)(sp_backend_t *b, const char *name, size_t name_len, sp_be_queues_cb cb,
                   void *ud);
    /* state -1 = every state. */
    void (*list)(sp_backend_t *b, const char *queue, size_t queue_len, int state, uint64_t after,
                 size_t limit, sp_be_jobs_cb cb, void *ud);
    /* Pauses (pause=true) or resumes a queue, creating it if needed; answers its stats. */
    void (*pause)(sp_backend_t *b, const char *queue, size_t queue_len, bool pause,
                  sp_be_queues_cb cb, void *ud);
    void (*purge)(sp_backend_t *b, const char *queue, size_t queue_len, sp_state_t state,
                  sp_be_count_cb cb, void *ud);
    /* Whether the backend answers (for /readyz). */
    void (*ready)(sp_backend_t *b, sp_be_status_cb cb, void *ud);

    void (*cancel_wait)(sp_backend_t *b, sp_be_wait_t *w);
    /* Ends every wait (answering each as if its time had run out), stops timers, closes
     * handles, then frees the backend and calls done (may be NULL) on a later loop turn. */
    void (*close)(sp_backend_t *b, void (*done)(void *ud), void *ud);
} sp_backend_ops_t;

struct sp_backend {
    const sp_backend_ops_t *ops;
};

#endif
