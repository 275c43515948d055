/*
 * backend_remote.h - the backend interface's worker operations over the HTTP worker protocol
 * (API.md, "Worker protocol"), for spool-worker: lease (a long poll), ack, fail, heartbeat,
 * release, ready (GET /readyz), cancel_wait and close. Every other operation answers SP_EINVAL
 * "not available on a remote worker".
 *
 * Answers map to codes as the server's own backend would give them: 200 -> 0 with the record
 * parsed from the JSON answer, 404 -> SP_ENOTFOUND, 409 -> SP_ECONFLICT, other 4xx ->
 * SP_EINVAL (429 -> SP_EFULL), a connection error, a timeout or a 5xx -> SP_EUNAVAIL.
 *
 * While the server is unreachable (or answers 5xx):
 * - a lease keeps trying with capped exponential backoff and jitter until it gets an answer,
 *   the wait is canceled or the backend closes, so the pool above simply sees a long wait;
 * - ack, fail and release are retried a few times with backoff before they answer
 *   SP_EUNAVAIL (the lease then expires and the job runs again: delivery is at least once);
 * - heartbeats are not retried: the next one is the retry.
 * The outage is logged once when it starts ("server unreachable: ...") and once when it ends
 * ("server reachable again").
 *
 * Acks that arrive in the same loop turn are sent together as one POST /v1/ack (up to 1000);
 * a lone ack goes as POST /v1/jobs/{id}/ack.
 */
#ifndef SP_BACKEND_REMOTE_H
#define SP_BACKEND_REMOTE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "backend.h"

typedef struct {
    const char *server_url;      /* "http://HOST:PORT"; copied */
    const char *token;           /* bearer token, or NULL; copied; must hold no CR, LF or NUL */
    uint64_t connect_timeout_ms; /* 0 = 5 s */
    uint64_t request_timeout_ms; /* every request but the long poll; 0 = 30 s */
    int64_t retry_max_ms;        /* backoff cap while the server is unreachable; 0 = 2 s */
} sp_backend_remote_opts_t;

/* Makes a remote backend on `loop`. Returns 0 and sets *out, or SP_EINVAL (a bad URL; the
 * message in err says why, "only http:// URLs are supported (no TLS)" for https) or
 * SP_ENOMEM. Nothing is sent before the first operation. */
int sp_backend_remote_new(uv_loop_t *loop, const sp_backend_remote_opts_t *opts, sp_backend_t **out,
                          char *err, size_t errlen);

/* Whether the last request found the server unreachable (for tests and logs). */
bool sp_backend_remote_down(const sp_backend_t *b);

#endif
