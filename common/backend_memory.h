/*
 * backend_memory.h - the memory backend: the engine behind the backend interface, on a libuv
 * loop. It drives the engine's clock with one timer set to the next deadline (delayed jobs,
 * lease expiry, retention), wakes long-poll leases when a queue gains a ready job, and answers
 * every operation at once (callbacks run before the call returns).
 */
#ifndef SP_BACKEND_MEMORY_H
#define SP_BACKEND_MEMORY_H

#include <uv.h>

#include "backend.h"
#include "engine.h"

/* Creates a memory backend on `loop` with the engine options (copied; on_ready and on_change
 * are the backend's own and are overwritten). Returns NULL on allocation failure. */
sp_backend_t *sp_backend_memory_new(uv_loop_t *loop, const sp_engine_opts_t *opts);

/* The engine inside (for tests and metrics). */
sp_engine_t *sp_backend_memory_engine(sp_backend_t *b);

/* Observes every job state change (for events and metrics); one observer, may be NULL. */
void sp_backend_memory_observe(sp_backend_t *b,
                               void (*fn)(void *ud, const sp_jobrec_t *job, int from), void *ud);

#endif
