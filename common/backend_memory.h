/*
 * backend_memory.h - the memory backend: the engine behind the backend interface, on a libuv
 * loop. It drives the engine's clock with one timer set to the next deadline (delayed jobs,
 * lease expiry, retention), wakes long-poll leases when a queue gains a ready job, and answers
 * every operation at once (callbacks run before the call returns) - except, with a journal
 * (--data-dir, --fsync always), answers that report a change, which come once it is on disk.
 */
#ifndef SP_BACKEND_MEMORY_H
#define SP_BACKEND_MEMORY_H

#include <uv.h>

#include "backend.h"
#include "engine.h"
#include "journal.h"

/* Creates a memory backend on `loop` with the engine options (copied; on_ready and on_change
 * are the backend's own and are overwritten). Returns NULL on allocation failure. */
sp_backend_t *sp_backend_memory_new(uv_loop_t *loop, const sp_engine_opts_t *opts);

/* Like sp_backend_memory_new, with a journal when jo is not NULL (--data-dir): the directory is
 * locked and its state loaded before this returns; answers that report a change are then given
 * once the change is on disk (jo->fsync_always). Returns NULL with a message in err. */
sp_backend_t *sp_backend_memory_open(uv_loop_t *loop, const sp_engine_opts_t *opts,
                                     const sp_journal_opts_t *jo, char *err, size_t errlen);

/* The journal inside, or NULL without one (for tests). */
sp_journal_t *sp_backend_memory_journal(sp_backend_t *b);

/* The engine inside (for tests and metrics). */
sp_engine_t *sp_backend_memory_engine(sp_backend_t *b);

/* Observes every job state change (for events and metrics); one observer, may be NULL. */
void sp_backend_memory_observe(sp_backend_t *b,
                               void (*fn)(void *ud, const sp_jobrec_t *job, int from), void *ud);

#endif
