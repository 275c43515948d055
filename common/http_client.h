/*
 * http_client.h - a small non-blocking HTTP/1.1 client on libuv, parsing answers with llhttp.
 *
 * It owns outgoing connections: a pool of keep-alive connections per origin (host:port), one
 * request at a time on each, requests beyond the per-origin connection cap waiting in order,
 * a timeout per request, and a cap on the size of an answer. Answers are framed by
 * Content-Length, chunked encoding, or the end of the connection. Only http:// is spoken: an
 * https:// URL fails with an error that says so.
 *
 * One client serves any number of origins. A request names its target either as a path
 * ("/v1/lease", resolved against the client's base URL) or as an absolute URL
 * ("http://127.0.0.1:9000/hooks/notify"), so the remote backend keeps one client for its server
 * and the http handler one client for every URL of the handlers file.
 *
 * A request's callback always runs on a later loop turn than the call that made it, exactly
 * once, unless the request was canceled first. Idle keep-alive connections do not keep the
 * loop running (their handles are unreferenced), so uv_run returns once nothing else is left.
 */
#ifndef SP_HTTP_CLIENT_H
#define SP_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "http.h"

typedef struct sp_http_client sp_http_client_t;
typedef struct sp_http_call sp_http_call_t;

typedef struct {
    uint64_t connect_timeout_ms; /* TCP connect (and name lookup); default 5 s */
    uint64_t request_timeout_ms; /* whole request when the call gives 0; default 30 s */
    uint64_t idle_timeout_ms;    /* an unused keep-alive connection is closed after; default 20 s */
    size_t max_idle_conns;       /* idle connections kept per origin; default 8 */
    size_t max_conns;            /* open connections per origin; more requests wait; default 256 */
    size_t max_response;         /* bytes of an answer's body; default 16 MiB */
    size_t max_header_bytes;     /* bytes of an answer's header section; default 64 KiB */
} sp_http_client_opts_t;

void sp_http_client_opts_default(sp_http_client_opts_t *o);

/* An answer. Everything is owned by the client and valid only during the callback. */
typedef struct {
    int status; /* HTTP status, 0 when the request failed */
    const sp_http_header_t *headers;
    size_t nheaders;
    const char *body; /* de-chunked; never NULL (""), NUL-terminated (not counted in body_len) */
    size_t body_len;
} sp_http_resp_t;

/* status: the HTTP status (>= 100), or a negative libuv error code when no answer came:
 * UV_ECONNREFUSED and the other socket errors, UV_ETIMEDOUT (the request's time ran out),
 * UV_ECANCELED (the client is closing), UV_EPROTO (an answer that does not parse),
 * UV_E2BIG (an answer over the caps), UV_EINVAL (a bad URL, https:// included), UV_ENOMEM.
 * why: NULL when status >= 100, else a short text naming what failed and where
 * ("connect to 127.0.0.1:7700: connection refused"). resp is never NULL. */
typedef void (*sp_http_client_cb)(void *ud, int status, const char *why,
                                  const sp_http_resp_t *resp);

/* Makes a client. base_url is "http://HOST:PORT" (a trailing '/' allowed, no path), or NULL for
 * a client that only takes absolute URLs; HOST is a name, an IPv4 address or [IPv6]; the port
 * defaults to 80. opts may be NULL for the defaults. Returns 0 and sets *out, or SP_EINVAL
 * (with a message in err: "only http:// URLs are supported (no TLS): https://...") or
 * SP_ENOMEM. */
int sp_http_client_new(uv_loop_t *loop, const char *base_url, const sp_http_client_opts_t *opts,
                       sp_http_client_t **out, char *err, size_t errlen);

/* Starts a request. method is "GET", "POST", ...; target is a path starting with '/' (against
 * the base URL) or an absolute "http://host:port/path" URL. headers is NULL or zero or more
 * "Name: value\r\n" lines sent verbatim; the client adds Host, Content-Length (when there is a
 * body or the method is POST/PUT/PATCH) and nothing else (so pass Content-Type yourself).
 * body[0..body_len) is copied. timeout_ms bounds the whole request, waiting for a connection
 * included (0 = opts.request_timeout_ms).
 *
 * A request sent on a reused keep-alive connection that the server had closed meanwhile (no byte
 * of an answer received) is sent again once on a fresh connection.
 *
 * Returns a handle, valid until the callback runs or sp_http_client_cancel is called; or NULL
 * when out of memory or when the client is closing, and then cb is never called. */
sp_http_call_t *sp_http_client_request(sp_http_client_t *c, const char *method, const char *target,
                                       const char *headers, const char *body, size_t body_len,
                                       uint64_t timeout_ms, sp_http_client_cb cb, void *ud);

/* Drops a request: its callback is not called afterwards. A request already on the wire
 * closes its connection (an answer can no longer be told apart). The handle is invalid after. */
void sp_http_client_cancel(sp_http_call_t *call);

/* Requests not yet answered (waiting, connecting or in flight). */
size_t sp_http_client_pending(const sp_http_client_t *c);
/* TCP connections opened since the client was made (for tests of keep-alive reuse). */
uint64_t sp_http_client_connects(const sp_http_client_t *c);

/* Closes the client: every unanswered request's callback runs now with UV_ECANCELED (a request
 * made from such a callback returns NULL), every connection and timer is closed, and once all
 * handles are closed the client is freed and done (may be NULL) is called on a later loop turn.
 * The client must not be used after this call. */
void sp_http_client_close(sp_http_client_t *c, void (*done)(void *ud), void *ud);

#endif
