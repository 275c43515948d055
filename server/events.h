/*
 * events.h - GET /v1/events: Server-Sent Events fanned out to every connected client.
 *
 * It owns the event clients and the one timer they share. Each second every client gets
 * `event: counts` with `data: {"queues":[...]}` (the objects of GET /v1/queues); each job state
 * change reaches every client as `event: job` with `data: {"id","queue","state","attempts"}`;
 * a `: ping` comment every 15 s keeps proxies from closing a quiet stream. A client made with a
 * queue filter gets only that queue's counts and jobs.
 *
 * A reader that falls behind is not allowed to hold memory without bound: once more than
 * SP_EVENTS_MAX_PENDING bytes wait to be written to it, it gets a last `event: dropped` and its
 * stream ends.
 */
#ifndef SP_EVENTS_H
#define SP_EVENTS_H

#include <stddef.h>
#include <uv.h>

#include "backend.h"
#include "http.h"

#define SP_EVENTS_MAX_PENDING ((size_t)1 << 20)

typedef struct sp_events sp_events_t;

/* Creates the fan-out; the backend (not owned) answers the counts. NULL on allocation failure.
 * The timer runs only while there are clients. */
sp_events_t *sp_events_new(uv_loop_t *loop, sp_backend_t *backend);

/* Takes over a request whose query has been checked: starts the event stream on it and keeps
 * it until the client goes, falls behind, or sp_events_close. queue (queue_len bytes, copied)
 * narrows the stream to one queue; NULL for every queue. The first counts are sent at once. */
void sp_events_add(sp_events_t *ev, sp_http_req_t *req, const char *queue, size_t queue_len);

/* A job changed state (the backend's observer); `from` is -1 for a new job. */
void sp_events_job(sp_events_t *ev, const sp_jobrec_t *job, int from);

/* Connected clients. */
size_t sp_events_client_count(const sp_events_t *ev);

/* Ends every stream and stops the timer, for shutdown. The object is freed once its timer has
 * closed (a later loop turn); ev must not be used after this call. NULL is a no-op. */
void sp_events_close(sp_events_t *ev);

#endif
