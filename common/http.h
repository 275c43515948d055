/*
 * http.h - an HTTP/1.1 server on libuv, parsing with llhttp.
 *
 * It owns connections, framing and the rules of RFC 9112 that clients rely on: keep-alive,
 * pipelining (answers in request order), chunked request bodies, Expect: 100-continue, HEAD
 * (headers only), HTTP/1.0, strict framing, limits on every size a client controls, timeouts on
 * every phase, and errors at the HTTP layer (400, 408, 413, 414, 431, 501, 505) as JSON error
 * objects. It knows nothing of routes: each complete request goes to one handler callback.
 *
 * A request is answered exactly once, now or later (long polls answer later). While a request
 * is unanswered the connection keeps reading, so that a client that goes away is noticed: the
 * request's abort callback then runs and the request must not be touched again.
 */
#ifndef SP_HTTP_H
#define SP_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"

typedef struct sp_http_server sp_http_server_t;
typedef struct sp_http_req sp_http_req_t;

typedef enum {
    SP_HTTP_GET,
    SP_HTTP_HEAD,
    SP_HTTP_POST,
    SP_HTTP_PUT,
    SP_HTTP_DELETE,
    SP_HTTP_PATCH,
    SP_HTTP_OPTIONS,
    SP_HTTP_OTHER,
} sp_http_method_t;

typedef struct {
    const char *name; /* as sent; compare case-insensitively */
    size_t name_len;
    const char *value; /* leading and trailing whitespace removed */
    size_t value_len;
} sp_http_header_t;

/* A complete request. Everything here is owned by the server and valid until the request is
 * answered or aborted. */
struct sp_http_req {
    sp_http_method_t method;
    const char *method_name; /* "GET", ... NUL-terminated */
    const char *target;      /* the raw request target, NUL-terminated */
    size_t target_len;
    const char *path; /* the target's path part, not decoded (points into target) */
    size_t path_len;
    const char *query; /* after '?', or NULL when there is none */
    size_t query_len;
    const sp_http_header_t *headers;
    size_t nheaders;
    const char *body; /* the whole body, de-chunked; NULL when empty */
    size_t body_len;
    int http_minor;      /* 0 or 1 */
    char peer[64];       /* "IP:PORT" of the client */
    uint64_t started_ns; /* uv_hrtime() when the request's first byte arrived */
    void *data;          /* free for the handler's use */
};

/* Called once per complete request. The handler answers with sp_http_respond (now or later). */
typedef void (*sp_http_handler_fn)(void *ud, sp_http_req_t *req);
/* Called when the client goes away before the request was answered. */
typedef void (*sp_http_abort_fn)(void *ud, sp_http_req_t *req);
/* Called after each answer is queued, for metrics and logs. */
typedef void (*sp_http_observe_fn)(void *ud, const sp_http_req_t *req, int status);

typedef struct {
    size_t max_body;            /* default 1 MiB; larger bodies get 413 */
    size_t max_target;          /* default 8 KiB; longer targets get 414 */
    size_t max_headers;         /* default 64 KiB for the whole header section; else 431 */
    size_t max_header_count;    /* default 100; else 431 */
    uint64_t header_timeout_ms; /* first byte to end of headers; default 10 s (408 and close) */
    uint64_t body_timeout_ms;   /* end of headers to end of body; default 60 s (408 and close) */
    uint64_t idle_timeout_ms;   /* between requests on a keep-alive connection; default 60 s */
    size_t max_connections;     /* 0 = no cap beyond file descriptors */
    sp_http_handler_fn handler;
    sp_http_observe_fn observe; /* may be NULL */
    void *ud;
} sp_http_opts_t;

void sp_http_opts_default(sp_http_opts_t *o);

/* Binds host:port (port 0 picks a free port) and starts accepting. On success returns 0, sets
 * *out, and writes the bound address ("127.0.0.1:40123", "[::1]:7700") into bound. On failure
 * returns a negative libuv error code (uv_strerror names it). */
int sp_http_server_start(uv_loop_t *loop, const char *host, int port, const sp_http_opts_t *opts,
                         sp_http_server_t **out, char *bound, size_t bound_len);

/* Stops accepting new connections (graceful shutdown); existing ones go on. */
void sp_http_server_stop_accepting(sp_http_server_t *s);

/* Closes every connection (unanswered requests are aborted first) and the listener; frees the
 * server once every handle is closed, then calls done (may be NULL). */
void sp_http_server_close(sp_http_server_t *s, void (*done)(void *ud), void *ud);

size_t sp_http_server_connection_count(const sp_http_server_t *s);
/* Answers queued since start, the HTTP layer's own error answers included. */
uint64_t sp_http_server_request_count(const sp_http_server_t *s);

/* ---- answering --------------------------------------------------------------------------- */

/* Registers the abort callback of a request that will be answered later. After the callback
 * has run the request is gone: neither sp_http_respond nor any other call may use it. A request
 * without an abort callback whose client leaves stays valid until it is answered; that answer
 * is then dropped and frees it. */
void sp_http_req_on_abort(sp_http_req_t *req, sp_http_abort_fn fn, void *ud);

/* Answers a request: status line, Content-Type (when not NULL), Content-Length, Date,
 * `extra_headers` verbatim (zero or more "Name: value\r\n" lines, or NULL), then the body (left
 * out for HEAD). Copies what it needs; the request is finished and must not be used again. */
void sp_http_respond(sp_http_req_t *req, int status, const char *content_type,
                     const char *extra_headers, const char *body, size_t body_len);

/* Answers with the standard error object {"error":{"code":..,"message":..}} as JSON. */
void sp_http_respond_error(sp_http_req_t *req, int status, const char *code, const char *message,
                           const char *extra_headers);

/* Streaming answers (Server-Sent Events): sends the status line and headers with
 * Transfer-Encoding: chunked, then chunks with sp_http_stream_write, until sp_http_stream_end.
 * The abort callback still tells when the client goes. sp_http_stream_write returns the number
 * of bytes queued but not yet written to the socket, so that a caller can drop a slow reader. */
void sp_http_stream_start(sp_http_req_t *req, int status, const char *content_type,
                          const char *extra_headers);
size_t sp_http_stream_write(sp_http_req_t *req, const char *data, size_t len);
void sp_http_stream_end(sp_http_req_t *req);

/* ---- helpers ----------------------------------------------------------------------------- */

/* The first header of that name (case-insensitive), or NULL. */
const sp_http_header_t *sp_http_req_header(const sp_http_req_t *req, const char *name);

/* The standard reason phrase ("Not Found"), or "Unknown". */
const char *sp_http_reason(int status);

/* Percent-decodes in[0..len) into out (cap bytes). Returns the decoded length, or -1 for a
 * malformed escape or when out is too small. '+' is left as is. */
long sp_http_pct_decode(const char *in, size_t len, char *out, size_t cap);

/* Iterates "a=1&b=2": returns true and sets name/value spans (not decoded), false at the end.
 * A parameter without '=' has an empty value. */
bool sp_http_query_next(const char **q, const char *end, const char **name, size_t *name_len,
                        const char **value, size_t *value_len);

/* For fuzzing and tests: runs the parsing, validation and answering of one connection over
 * data[0..len) without a socket (the first byte chooses how the rest is cut into reads; answers
 * are discarded). Returns 0. */
int sp_http_fuzz_feed(const uint8_t *data, size_t len);

#endif
