/*
 * http.c - the HTTP/1.1 server (see http.h): accepting, framing with llhttp, limits, timeouts,
 * and formatting answers.
 *
 * A connection has at most one request in flight. Bytes that arrive while it is with the
 * handler wait unparsed in the connection's pending buffer; parsing resumes once the answer is
 * queued. That one rule gives pipelined answers in request order and bounds the memory a client
 * can make us hold. Answers produced while handling one read are gathered into one output buffer
 * and written with one system call when the socket takes it.
 */
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <llhttp.h>

#include "log.h"
#include "sp.h"

#define READ_BUF_SIZE 65536
/* Parsing of pipelined requests pauses while this much output waits for a client that does not
 * read, and resumes when half of it is written. */
#define OUT_HIGH ((size_t)1 << 20)
/* After the last answer and a half-close, how long a client gets to close its side. Closing
 * with unread input would make the kernel send a reset that can destroy the answer. */
#define LINGER_MS 2000
/* Buffers larger than this are given back when a connection goes idle. */
#define KEEP_BUF_MAX 16384
#define KEEP_HDRS_MAX 32
#define EMFILE_WARN_MS 10000

typedef enum {
    CONN_IDLE,      /* between requests: idle timeout */
    CONN_HEAD,      /* reading a request line and headers: header timeout */
    CONN_BODY,      /* reading a body: body timeout */
    CONN_HANDLING,  /* a complete request is with the handler, unanswered: no timeout */
    CONN_STREAMING, /* the handler streams its answer: no timeout */
    CONN_CLOSING,   /* the last answer is queued: drain, half-close, linger, close */
    CONN_CLOSED,    /* handles closing or closed */
} conn_state_t;

typedef enum { FRAME_LENGTH, FRAME_CHUNKED, FRAME_NONE } frame_t;

/* Header spans are kept as offsets while the request buffer may still move. */
typedef struct {
    size_t name_off, name_len, value_off, value_len;
} hspan_t;

typedef struct conn conn_t;

struct sp_http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_tcp_t spare; /* used to refuse a connection when no memory is left for it */
    sp_http_opts_t opts;
    llhttp_settings_t settings;
    char *rbuf; /* one read buffer shared by every connection: reads never interleave */
    size_t in_cap;
    conn_t *conns;
    size_t nconns; /* connections whose handles are not closed yet */
    uint64_t nrequests;
    bool listener_open, listener_closing, spare_busy, closing;
    void (*done)(void *ud);
    void *done_ud;
    uint64_t last_emfile_warn;
    time_t date_sec;
    char date[40];
};

struct conn {
    sp_http_req_t req;
    uv_tcp_t tcp;
    uv_timer_t timer;
    sp_http_server_t *srv;
    conn_t *prev, *next;
    llhttp_t parser;
    conn_state_t state;
    sp_buf_t in; /* read but not parsed yet; in_off bytes of it are consumed */
    size_t in_off;
    sp_buf_t rb; /* the current request: target, header names and values, then body */
    hspan_t *spans;
    size_t nspans, spans_cap;
    sp_http_header_t *hdrs;
    size_t hdrs_cap;
    sp_buf_t out;        /* answers not yet handed to the socket */
    size_t write_queued; /* handed to uv_write, not yet written */
    const char *chunk_base;
    uint64_t deadline;    /* loop time at which the current phase times out; 0: never */
    uint64_t armed_due;   /* loop time at which the armed timer fires */
    uint64_t fed;         /* bytes given to the parser so far */
    uint64_t head_origin; /* `fed` position of the current request's first byte */
    size_t url_len, body_off, body_len, trailer_bytes;
    int err_status; /* set by a parser callback that rejects the request */
    const char *err_code;
    const char *err_msg;
    sp_http_abort_fn abort_fn;
    void *abort_ud;
    int handles_open;
    int http_minor;
    bool busy;        /* inside conn_drive: answers are gathered, not flushed */
    bool timer_dirty; /* the state changed since the timer was armed */
    bool reading, stalled, kick, doomed, shut, eof, virt;
    bool keep_alive, is_head, req_live, origin_set, method_done, url_done, field_open;
};

static void conn_drive(conn_t *c, const char *p, size_t n);
static void conn_after(conn_t *c);
static void conn_close(conn_t *c);
static void on_timer(uv_timer_t *t);

/* ---- small helpers ------------------------------------------------------------------------ */

static bool span_is(const char *p, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n == l && strncasecmp(p, lit, l) == 0;
}

/* RFC 9110 5.6.2: a field name is a token. llhttp's loose mode lets some other bytes through,
 * and a name it accepts and a proxy reads differently is how requests get smuggled. */
static bool is_token(const char *p, size_t n)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || (ch != '\0' && strchr(extra, ch) != NULL);
        if (!ok) return false;
    }
    return true;
}

static bool bodyless_status(int status)
{
    return (status >= 100 && status < 200) || status == 204 || status == 304;
}

static void format_addr(const struct sockaddr *sa, char *out, size_t cap)
{
    char ip[64] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        uv_ip6_name(a, ip, sizeof ip);
        port = ntohs(a->sin6_port);
        snprintf(out, cap, "[%s]:%d", ip, port);
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        uv_ip4_name(a, ip, sizeof ip);
        port = ntohs(a->sin_port);
        snprintf(out, cap, "%s:%d", ip, port);
    }
}

static const char *server_date(sp_http_server_t *s)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    if (now != s->date_sec || s->date[0] == '\0') {
        struct tm tm;
        gmtime_r(&now, &tm);
        snprintf(s->date, sizeof s->date, "%s, %02d %s %04d %02d:%02d:%02d GMT",
                 days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900,
                 tm.tm_hour, tm.tm_min, tm.tm_sec);
        s->date_sec = now;
    }
    return s->date;
}

static sp_http_method_t method_of(uint8_t m)
{
    switch (m) {
    case HTTP_GET:
        return SP_HTTP_GET;
    case HTTP_HEAD:
        return SP_HTTP_HEAD;
    case HTTP_POST:
        return SP_HTTP_POST;
    case HTTP_PUT:
        return SP_HTTP_PUT;
    case HTTP_DELETE:
        return SP_HTTP_DELETE;
    case HTTP_PATCH:
        return SP_HTTP_PATCH;
    case HTTP_OPTIONS:
        return SP_HTTP_OPTIONS;
    default:
        return SP_HTTP_OTHER;
    }
}

const char *sp_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    }
    return "Unknown";
}

/* ---- connection state ------------------------------------------------------------------- */

static void conn_set_state(conn_t *c, conn_state_t s)
{
    c->state = s;
    c->timer_dirty = true;
}

static void conn_timer_start(conn_t *c, uint64_t ms)
{
    c->armed_due = uv_now(c->srv->loop) + ms;
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

/* Closing is deferred to the timer so that a write error found inside a caller's
 * sp_http_respond or sp_http_stream_write never runs its abort callback under its feet. */
static void conn_doom(conn_t *c)
{
    c->doomed = true;
    sp_buf_reset(&c->out);
    if (!c->virt && c->state != CONN_CLOSED) conn_timer_start(c, 0);
}

static void conn_kick(conn_t *c)
{
    c->kick = true;
    if (!c->virt && !c->doomed) conn_timer_start(c, 0);
}

/* Phases change on every request, so the timer is not moved each time: a timer that fires
 * before the current deadline is simply armed again for the rest. It is moved only when the
 * new deadline is earlier than the armed one. */
static void conn_arm_timer(conn_t *c)
{
    if (c->virt || c->doomed || c->kick) return;
    c->timer_dirty = false;
    const sp_http_opts_t *o = &c->srv->opts;
    uint64_t ms = 0;
    switch (c->state) {
    case CONN_IDLE:
        ms = o->idle_timeout_ms;
        break;
    case CONN_HEAD:
        ms = o->header_timeout_ms;
        break;
    case CONN_BODY:
        ms = o->body_timeout_ms;
        break;
    default:
        break;
    }
    if (!ms) {
        c->deadline = 0;
        return;
    }
    c->deadline = uv_now(c->srv->loop) + ms;
    if (uv_is_active((uv_handle_t *)&c->timer) && c->armed_due <= c->deadline) return;
    conn_timer_start(c, ms);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    conn_t *c = h->data;
    *buf = uv_buf_init(c->srv->rbuf, READ_BUF_SIZE);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);

/* Reading goes on while a request is with the handler, so that a client that leaves is noticed;
 * it stops only when the pending buffer is full, and resumes as it drains. */
static void conn_read_control(conn_t *c)
{
    if (c->virt || c->state == CONN_CLOSED || c->eof) return;
    size_t pending = c->in.len - c->in_off;
    bool want = pending <= c->srv->in_cap || c->state == CONN_CLOSING;
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

static void conn_free(conn_t *c)
{
    sp_buf_free(&c->in);
    sp_buf_free(&c->rb);
    sp_buf_free(&c->out);
    free(c->spans);
    free(c->hdrs);
    free(c);
}

static void server_maybe_done(sp_http_server_t *s)
{
    if (!s->closing || s->listener_open || s->nconns || s->spare_busy) return;
    void (*done)(void *) = s->done;
    void *ud = s->done_ud;
    free(s->rbuf);
    free(s);
    if (done) done(ud);
}

static void on_conn_handle_close(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (--c->handles_open > 0) return;
    sp_http_server_t *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->nconns--;
    c->srv = NULL;
    /* An unanswered request without an abort callback keeps its memory until the handler
     * answers it (sp_http_respond on it is then a no-op that frees it). */
    if (!c->req_live) conn_free(c);
    server_maybe_done(s);
}

/* Ends the connection now. An unanswered request is aborted first. */
static void conn_close(conn_t *c)
{
    if (c->state == CONN_CLOSED) return;
    c->state = CONN_CLOSED;
    c->kick = false;
    if (c->req_live && c->abort_fn) {
        sp_http_abort_fn fn = c->abort_fn;
        c->abort_fn = NULL;
        c->req_live = false;
        fn(c->abort_ud, &c->req);
    }
    if (c->virt) return;
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_close);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_close);
}

/* The request was answered after its connection closed: nothing to send, only memory to free. */
static void conn_orphan_done(conn_t *c)
{
    c->req_live = false;
    if (!c->virt && c->handles_open == 0) conn_free(c);
}

static void conn_trim(conn_t *c)
{
    if (c->rb.cap > KEEP_BUF_MAX) sp_buf_free(&c->rb);
    if (c->out.len == 0 && c->out.cap > KEEP_BUF_MAX) sp_buf_free(&c->out);
    if (c->in_off == c->in.len && c->in.cap > KEEP_BUF_MAX) {
        sp_buf_free(&c->in);
        c->in_off = 0;
    }
    if (c->spans_cap > KEEP_HDRS_MAX) {
        free(c->spans);
        c->spans = NULL;
        c->spans_cap = 0;
    }
    if (c->hdrs_cap > KEEP_HDRS_MAX) {
        free(c->hdrs);
        c->hdrs = NULL;
        c->hdrs_cap = 0;
    }
}

static void in_append(conn_t *c, const char *p, size_t n)
{
    if (c->in_off == c->in.len) {
        c->in_off = 0;
        c->in.len = 0;
    } else if (c->in_off > 0 && c->in_off >= c->in.len / 2) {
        memmove(c->in.data, c->in.data + c->in_off, c->in.len - c->in_off);
        c->in.len -= c->in_off;
        c->in_off = 0;
    }
    sp_buf_append(&c->in, p, n);
    if (c->in.oom) conn_doom(c);
}

/* ---- writing ------------------------------------------------------------------------------ */

typedef struct {
    uv_write_t req;
    conn_t *c;
    char *data;
    size_t len;
} wreq_t;

static void on_write(uv_write_t *req, int status)
{
    wreq_t *w = sp_container_of(req, wreq_t, req);
    conn_t *c = w->c;
    c->write_queued -= w->len;
    free(w->data);
    free(w);
    if (c->state == CONN_CLOSED) return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->stalled && c->write_queued <= OUT_HIGH / 2) {
        c->stalled = false;
        conn_drive(c, NULL, 0);
    }
}

static void conn_flush(conn_t *c)
{
    if (c->out.len == 0) return;
    if (c->out.oom) {
        conn_doom(c);
        return;
    }
    if (c->virt || c->doomed) {
        sp_buf_reset(&c->out);
        return;
    }
    size_t off = 0;
    if (c->write_queued == 0) {
        uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
        int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (r >= 0) {
            off = (size_t)r;
        } else if (r != UV_EAGAIN) {
            conn_doom(c);
            return;
        }
        if (off == c->out.len) {
            sp_buf_reset(&c->out);
            return;
        }
    }
    wreq_t *w = malloc(sizeof *w);
    if (!w) {
        conn_doom(c);
        return;
    }
    w->c = c;
    w->len = c->out.len - off;
    w->data = sp_buf_steal(&c->out, NULL);
    uv_buf_t b = uv_buf_init(w->data + off, (unsigned)w->len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        free(w->data);
        free(w);
        conn_doom(c);
        return;
    }
    c->write_queued += w->len;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    conn_t *c = req->data;
    free(req);
    if (c->state == CONN_CLOSED) return;
    if (status < 0 || c->eof) {
        conn_close(c);
        return;
    }
    if (!c->doomed) conn_timer_start(c, LINGER_MS);
}

/* The last answer is queued: send FIN once it is written (libuv orders the shutdown after the
 * writes) and keep reading, discarding, until the client closes or the linger time passes. */
static void conn_shutdown(conn_t *c)
{
    c->shut = true;
    if (c->virt) return;
    conn_read_control(c);
    uv_shutdown_t *req = malloc(sizeof *req);
    if (!req) {
        conn_close(c);
        return;
    }
    req->data = c;
    if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        free(req);
        conn_close(c);
        return;
    }
    /* Bounds the time a client that does not read can keep the answer (and us) waiting. */
    uint64_t ms = c->srv->opts.idle_timeout_ms ? c->srv->opts.idle_timeout_ms : 60000;
    if (!c->doomed) conn_timer_start(c, ms);
}

/* What follows any batch of work on a connection: write, then timers and read flow. */
static void conn_after(conn_t *c)
{
    if (c->state == CONN_CLOSED) return;
    conn_flush(c);
    if (c->doomed) return;
    if (c->state == CONN_CLOSING) {
        if (!c->shut) conn_shutdown(c);
        return;
    }
    if (c->timer_dirty) conn_arm_timer(c);
    conn_read_control(c);
    if (c->state == CONN_IDLE && c->in_off == c->in.len) conn_trim(c);
    /* All of a large batch of answers may have been written at once, with no write callback
     * to resume parsing. */
    if (c->stalled && c->write_queued + c->out.len <= OUT_HIGH / 2) {
        c->stalled = false;
        conn_kick(c);
    }
}

/* ---- answers ------------------------------------------------------------------------------ */

/* Finds a Connection line in the handler's extra headers, so that it is neither doubled nor
 * contradicted. */
static bool extra_has_connection(const char *extra, bool *says_close)
{
    const char *line = extra;
    while (*line) {
        const char *eol = strchr(line, '\n');
        size_t n = eol ? (size_t)(eol - line) : strlen(line);
        if (n >= 11 && strncasecmp(line, "connection:", 11) == 0) {
            *says_close = false;
            for (size_t i = 11; i + 5 <= n; i++) {
                if (strncasecmp(line + i, "close", 5) == 0) *says_close = true;
            }
            return true;
        }
        if (!eol) break;
        line = eol + 1;
    }
    return false;
}

static void put_head(conn_t *c, int status, const char *ctype, const char *extra, frame_t frame,
                     size_t len)
{
    sp_buf_t *o = &c->out;
    if (status < 100 || status > 999) status = 500;
    sp_buf_append(o, "HTTP/1.1 ", 9);
    sp_buf_u64(o, (uint64_t)status);
    sp_buf_putc(o, ' ');
    sp_buf_puts(o, sp_http_reason(status));
    sp_buf_append(o, "\r\nServer: spool\r\nDate: ", 23);
    sp_buf_puts(o, server_date(c->srv));
    sp_buf_append(o, "\r\n", 2);
    if (ctype) {
        sp_buf_append(o, "Content-Type: ", 14);
        sp_buf_puts(o, ctype);
        sp_buf_append(o, "\r\n", 2);
    }
    if (frame == FRAME_LENGTH && !bodyless_status(status)) {
        sp_buf_append(o, "Content-Length: ", 16);
        sp_buf_u64(o, len);
        sp_buf_append(o, "\r\n", 2);
    } else if (frame == FRAME_CHUNKED) {
        sp_buf_append(o, "Transfer-Encoding: chunked\r\n", 28);
    }
    bool says_close = false;
    if (extra && extra_has_connection(extra, &says_close)) {
        if (says_close) c->keep_alive = false;
    } else if (!c->keep_alive) {
        sp_buf_append(o, "Connection: close\r\n", 19);
    } else if (c->http_minor == 0) {
        sp_buf_append(o, "Connection: keep-alive\r\n", 24);
    }
    if (extra) sp_buf_puts(o, extra);
    sp_buf_append(o, "\r\n", 2);
}

static void error_body(sp_buf_t *b, const char *code, const char *message)
{
    sp_buf_append(b, "{\"error\":{\"code\":", 17);
    sp_buf_json_str(b, code, strlen(code));
    sp_buf_append(b, ",\"message\":", 11);
    sp_buf_json_str(b, message, strlen(message));
    sp_buf_append(b, "}}", 2);
}

static void observe(conn_t *c, int status)
{
    sp_http_server_t *s = c->srv;
    s->nrequests++;
    if (s->opts.observe) s->opts.observe(s->opts.ud, &c->req, status);
}

/* Gives the request the fields an observer may read when the HTTP layer answers a request that
 * never reached the handler. */
static void conn_fill_partial_req(conn_t *c)
{
    sp_http_req_t *r = &c->req;
    bool known = c->method_done;
    r->method = known ? method_of(c->parser.method) : SP_HTTP_OTHER;
    r->method_name = known ? llhttp_method_name((llhttp_method_t)c->parser.method) : "UNKNOWN";
    if (c->url_done && c->rb.data) {
        r->target = c->rb.data;
        r->target_len = c->url_len;
    } else {
        r->target = "";
        r->target_len = 0;
    }
    r->path = r->target;
    r->path_len = r->target_len;
    r->query = NULL;
    r->query_len = 0;
    r->headers = NULL;
    r->nheaders = 0;
    r->body = NULL;
    r->body_len = 0;
    r->data = NULL;
    if (!r->started_ns) r->started_ns = uv_hrtime();
}

/* An answer from this layer to a request it cannot take: always the last on the connection. */
static void conn_error_answer(conn_t *c, int status, const char *code, const char *message)
{
    conn_fill_partial_req(c);
    c->keep_alive = false;
    bool head = c->method_done && c->parser.method == HTTP_HEAD;
    sp_buf_t b = SP_BUF_INIT;
    error_body(&b, code, message);
    if (b.oom) c->out.oom = true;
    put_head(c, status, "application/json", NULL, FRAME_LENGTH, b.len);
    if (!head && b.len) sp_buf_append(&c->out, b.data, b.len);
    sp_buf_free(&b);
    observe(c, status);
    conn_set_state(c, CONN_CLOSING);
}

static void conn_answered(conn_t *c, int status)
{
    observe(c, status);
    c->req_live = false;
    c->abort_fn = NULL;
    conn_set_state(c, c->keep_alive ? CONN_IDLE : CONN_CLOSING);
    if (c->busy) return; /* the parse loop goes on with the next request */
    conn_after(c);
    /* Pipelined requests wait for the next loop turn rather than running the handler inside
     * the caller's sp_http_respond. */
    if (c->state == CONN_IDLE && c->in_off < c->in.len && !c->doomed) conn_kick(c);
}

void sp_http_respond(sp_http_req_t *req, int status, const char *content_type,
                     const char *extra_headers, const char *body, size_t body_len)
{
    conn_t *c = sp_container_of(req, conn_t, req);
    if (!c->req_live || c->state == CONN_STREAMING) return;
    if (c->state == CONN_CLOSED) {
        conn_orphan_done(c);
        return;
    }
    if (!body) body_len = 0;
    put_head(c, status, content_type, extra_headers, FRAME_LENGTH, body_len);
    if (!c->is_head && body_len && !bodyless_status(status)) sp_buf_append(&c->out, body, body_len);
    conn_answered(c, status);
}

void sp_http_respond_error(sp_http_req_t *req, int status, const char *code, const char *message,
                           const char *extra_headers)
{
    sp_buf_t b = SP_BUF_INIT;
    error_body(&b, code ? code : "error", message ? message : "");
    if (b.oom) {
        sp_http_respond(req, 500, "application/json", extra_headers, NULL, 0);
    } else {
        sp_http_respond(req, status, "application/json", extra_headers, b.data, b.len);
    }
    sp_buf_free(&b);
}

void sp_http_stream_start(sp_http_req_t *req, int status, const char *content_type,
                          const char *extra_headers)
{
    conn_t *c = sp_container_of(req, conn_t, req);
    if (!c->req_live || c->state != CONN_HANDLING) return;
    /* HTTP/1.0 has no chunked coding: the end of the stream is the end of the connection. */
    if (c->http_minor == 0) c->keep_alive = false;
    put_head(c, status, content_type, extra_headers,
             c->http_minor == 0 ? FRAME_NONE : FRAME_CHUNKED, 0);
    conn_set_state(c, CONN_STREAMING);
    observe(c, status);
    if (!c->busy) conn_after(c);
}

size_t sp_http_stream_write(sp_http_req_t *req, const char *data, size_t len)
{
    conn_t *c = sp_container_of(req, conn_t, req);
    if (!c->req_live || c->state != CONN_STREAMING) return 0;
    if (!c->is_head && data && len) {
        if (c->http_minor) {
            char hex[24];
            int n = snprintf(hex, sizeof hex, "%zx\r\n", len);
            sp_buf_append(&c->out, hex, (size_t)n);
            sp_buf_append(&c->out, data, len);
            sp_buf_append(&c->out, "\r\n", 2);
        } else {
            sp_buf_append(&c->out, data, len);
        }
    }
    if (!c->busy) conn_after(c);
    return c->write_queued + c->out.len;
}

void sp_http_stream_end(sp_http_req_t *req)
{
    conn_t *c = sp_container_of(req, conn_t, req);
    if (!c->req_live) return;
    if (c->state == CONN_CLOSED) {
        conn_orphan_done(c);
        return;
    }
    if (c->state != CONN_STREAMING) return;
    if (c->http_minor && !c->is_head) sp_buf_append(&c->out, "0\r\n\r\n", 5);
    /* A reader that let this much pile up is not worth keeping. */
    if (c->write_queued > OUT_HIGH) c->keep_alive = false;
    c->req_live = false;
    c->abort_fn = NULL;
    conn_set_state(c, c->keep_alive ? CONN_IDLE : CONN_CLOSING);
    if (c->busy) return;
    conn_after(c);
    if (c->state == CONN_IDLE && c->in_off < c->in.len && !c->doomed) conn_kick(c);
}

void sp_http_req_on_abort(sp_http_req_t *req, sp_http_abort_fn fn, void *ud)
{
    conn_t *c = sp_container_of(req, conn_t, req);
    if (!c->req_live) return;
    c->abort_fn = fn;
    c->abort_ud = ud;
}

/* ---- parser callbacks --------------------------------------------------------------------- */

static int reject(conn_t *c, int status, const char *code, const char *message)
{
    if (!c->err_status) {
        c->err_status = status;
        c->err_code = code;
        c->err_msg = message;
    }
    return -1;
}

static int reject_oom(conn_t *c)
{
    return reject(c, 503, "unavailable", "the server is out of memory");
}

/* The header section is measured in raw bytes from the request's first byte. */
static int head_check(conn_t *c, const char *at, size_t n)
{
    uint64_t pos = c->fed + (uint64_t)(at + n - c->chunk_base);
    if (pos - c->head_origin > c->srv->opts.max_headers)
        return reject(c, 431, "headers_too_large", "the request's header section is too large");
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    conn_t *c = p->data;
    sp_buf_reset(&c->rb);
    c->nspans = 0;
    c->url_len = c->body_off = c->body_len = c->trailer_bytes = 0;
    c->origin_set = c->method_done = c->url_done = c->field_open = false;
    c->is_head = false;
    c->keep_alive = true;
    c->http_minor = 1;
    c->err_status = 0;
    c->head_origin = c->fed;
    c->req.started_ns = uv_hrtime();
    conn_set_state(c, CONN_HEAD);
    return 0;
}

static int on_method(llhttp_t *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    (void)n;
    if (!c->origin_set) {
        c->origin_set = true;
        c->head_origin = c->fed + (uint64_t)(at - c->chunk_base);
    }
    return 0;
}

static int on_method_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    c->method_done = true;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    if (c->url_len + n > c->srv->opts.max_target)
        return reject(c, 414, "uri_too_long", "the request target is too long");
    if (head_check(c, at, n)) return -1;
    sp_buf_append(&c->rb, at, n);
    if (c->rb.oom) return reject_oom(c);
    c->url_len += n;
    return 0;
}

static int on_url_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    sp_buf_putc(&c->rb, '\0');
    if (c->rb.oom) return reject_oom(c);
    c->url_done = true;
    return 0;
}

static int on_version_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    if (p->http_major != 1 || p->http_minor > 1)
        return reject(c, 505, "http_version_not_supported",
                      "only HTTP/1.0 and HTTP/1.1 are supported");
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    if (c->state == CONN_BODY) {
        /* Trailers are read and dropped; still bounded. */
        c->trailer_bytes += n;
        if (c->trailer_bytes > c->srv->opts.max_headers)
            return reject(c, 431, "headers_too_large", "the request's trailers are too large");
        return 0;
    }
    if (head_check(c, at, n)) return -1;
    if (!c->field_open) {
        if (c->nspans >= c->srv->opts.max_header_count)
            return reject(c, 431, "headers_too_large", "the request has too many headers");
        if (c->nspans == c->spans_cap) {
            size_t cap = c->spans_cap ? c->spans_cap * 2 : 16;
            hspan_t *ns = realloc(c->spans, cap * sizeof *ns);
            if (!ns) return reject_oom(c);
            c->spans = ns;
            c->spans_cap = cap;
        }
        c->spans[c->nspans].name_off = c->rb.len;
        c->field_open = true;
    }
    sp_buf_append(&c->rb, at, n);
    return c->rb.oom ? reject_oom(c) : 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    if (c->state == CONN_BODY) return 0;
    hspan_t *h = &c->spans[c->nspans];
    h->name_len = c->rb.len - h->name_off;
    if (!is_token(c->rb.data + h->name_off, h->name_len))
        return reject(c, 400, "bad_request", "invalid character in a header name");
    sp_buf_putc(&c->rb, '\0');
    h->value_off = c->rb.len;
    h->value_len = 0;
    c->field_open = false;
    return c->rb.oom ? reject_oom(c) : 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    if (c->state == CONN_BODY) {
        c->trailer_bytes += n;
        if (c->trailer_bytes > c->srv->opts.max_headers)
            return reject(c, 431, "headers_too_large", "the request's trailers are too large");
        return 0;
    }
    if (head_check(c, at, n)) return -1;
    sp_buf_append(&c->rb, at, n);
    return c->rb.oom ? reject_oom(c) : 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    if (c->state == CONN_BODY) return 0;
    hspan_t *h = &c->spans[c->nspans];
    size_t off = h->value_off, end = c->rb.len;
    const char *d = c->rb.data;
    while (off < end && (d[off] == ' ' || d[off] == '\t')) off++;
    while (end > off && (d[end - 1] == ' ' || d[end - 1] == '\t')) end--;
    h->value_off = off;
    h->value_len = end - off;
    sp_buf_putc(&c->rb, '\0');
    if (c->rb.oom) return reject_oom(c);
    c->nspans++;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    const sp_http_opts_t *o = &c->srv->opts;
    size_t te_count = 0;
    const hspan_t *te = NULL, *expect = NULL;
    const char *d = c->rb.data;
    for (size_t i = 0; i < c->nspans; i++) {
        const hspan_t *h = &c->spans[i];
        if (span_is(d + h->name_off, h->name_len, "transfer-encoding")) {
            te_count++;
            te = h;
        } else if (span_is(d + h->name_off, h->name_len, "expect")) {
            expect = h;
        }
    }
    if (te_count && (te_count > 1 || !span_is(d + te->value_off, te->value_len, "chunked")))
        return reject(c, 501, "not_implemented",
                      "Transfer-Encoding other than chunked is not supported");
    bool chunked = (p->flags & F_CHUNKED) != 0;
    uint64_t clen = (p->flags & F_CONTENT_LENGTH) ? p->content_length : 0;
    if (clen > o->max_body)
        return reject(c, 413, "payload_too_large", "the request body is larger than the limit");
    if (expect) {
        if (!span_is(d + expect->value_off, expect->value_len, "100-continue"))
            return reject(c, 417, "expectation_failed", "only Expect: 100-continue is supported");
        if (p->http_minor == 1 && (chunked || clen > 0))
            sp_buf_append(&c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    }
    c->keep_alive = llhttp_should_keep_alive(p) && p->method != HTTP_CONNECT;
    c->is_head = p->method == HTTP_HEAD;
    c->http_minor = p->http_minor;
    c->body_off = c->rb.len;
    c->body_len = 0;
    if (clen && !sp_buf_reserve(&c->rb, (size_t)clen)) return reject_oom(c);
    if (chunked || clen) conn_set_state(c, CONN_BODY);
    return 0;
}

static int on_chunk_header(llhttp_t *p)
{
    conn_t *c = p->data;
    if (p->content_length > c->srv->opts.max_body - c->body_len)
        return reject(c, 413, "payload_too_large", "the request body is larger than the limit");
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    if (n > c->srv->opts.max_body - c->body_len)
        return reject(c, 413, "payload_too_large", "the request body is larger than the limit");
    sp_buf_append(&c->rb, at, n);
    if (c->rb.oom) return reject_oom(c);
    c->body_len += n;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    (void)p;
    /* One request at a time: the rest of the input waits until this one is answered. */
    return HPE_PAUSED;
}

static void settings_init(llhttp_settings_t *st)
{
    llhttp_settings_init(st);
    st->on_message_begin = on_message_begin;
    st->on_method = on_method;
    st->on_method_complete = on_method_complete;
    st->on_url = on_url;
    st->on_url_complete = on_url_complete;
    st->on_version_complete = on_version_complete;
    st->on_header_field = on_header_field;
    st->on_header_field_complete = on_header_field_complete;
    st->on_header_value = on_header_value;
    st->on_header_value_complete = on_header_value_complete;
    st->on_headers_complete = on_headers_complete;
    st->on_chunk_header = on_chunk_header;
    st->on_body = on_body;
    st->on_message_complete = on_message_complete;
}

/* ---- the request loop --------------------------------------------------------------------- */

static void split_target(sp_http_req_t *r)
{
    const char *t = r->target, *end = r->target + r->target_len;
    const char *start = t;
    /* absolute-form (RFC 9112 3.2.2): the path starts after the authority */
    size_t scheme = 0;
    if (r->target_len >= 7 && strncasecmp(t, "http://", 7) == 0) scheme = 7;
    if (r->target_len >= 8 && strncasecmp(t, "https://", 8) == 0) scheme = 8;
    if (scheme) {
        const char *slash = memchr(t + scheme, '/', r->target_len - scheme);
        start = slash ? slash : end;
    }
    const char *hash = memchr(start, '#', (size_t)(end - start));
    if (hash) end = hash;
    const char *q = memchr(start, '?', (size_t)(end - start));
    r->path = start;
    r->path_len = (size_t)((q ? q : end) - start);
    r->query = q ? q + 1 : NULL;
    r->query_len = q ? (size_t)(end - q - 1) : 0;
}

static void conn_dispatch(conn_t *c)
{
    sp_http_req_t *r = &c->req;
    if (c->nspans > c->hdrs_cap) {
        sp_http_header_t *nh = realloc(c->hdrs, c->nspans * sizeof *nh);
        if (!nh) {
            conn_error_answer(c, 503, "unavailable", "the server is out of memory");
            return;
        }
        c->hdrs = nh;
        c->hdrs_cap = c->nspans;
    }
    const char *d = c->rb.data ? c->rb.data : "";
    for (size_t i = 0; i < c->nspans; i++) {
        c->hdrs[i].name = d + c->spans[i].name_off;
        c->hdrs[i].name_len = c->spans[i].name_len;
        c->hdrs[i].value = d + c->spans[i].value_off;
        c->hdrs[i].value_len = c->spans[i].value_len;
    }
    r->method = method_of(c->parser.method);
    r->method_name = llhttp_method_name((llhttp_method_t)c->parser.method);
    r->target = d;
    r->target_len = c->url_len;
    split_target(r);
    r->headers = c->nspans ? c->hdrs : NULL;
    r->nheaders = c->nspans;
    r->body = c->body_len ? d + c->body_off : NULL;
    r->body_len = c->body_len;
    r->http_minor = c->http_minor;
    r->data = NULL;
    c->abort_fn = NULL;
    c->abort_ud = NULL;
    c->req_live = true;
    conn_set_state(c, CONN_HANDLING);
    c->srv->opts.handler(c->srv->opts.ud, r);
}

static void conn_parse_error(conn_t *c, llhttp_errno_t err)
{
    int status = 400;
    const char *code = "bad_request";
    const char *msg;
    char buf[160];
    if (c->err_status) {
        status = c->err_status;
        code = c->err_code;
        msg = c->err_msg;
    } else if (err == HPE_INVALID_VERSION || err == HPE_PAUSED_H2_UPGRADE) {
        status = 505;
        code = "http_version_not_supported";
        msg = "only HTTP/1.0 and HTTP/1.1 are supported";
    } else if (err == HPE_INVALID_TRANSFER_ENCODING) {
        status = 501;
        code = "not_implemented";
        msg = "Transfer-Encoding other than chunked is not supported";
    } else if (err == HPE_INVALID_CHUNK_SIZE) {
        msg = "invalid chunk size in the chunked request body";
    } else {
        const char *why = llhttp_get_error_reason(&c->parser);
        snprintf(buf, sizeof buf, "malformed request: %s", why ? why : llhttp_errno_name(err));
        msg = buf;
    }
    conn_error_answer(c, status, code, msg);
}

/* Feeds bytes to the parser; returns how many it took. A complete request is handed to the
 * handler before returning. */
static size_t conn_parse(conn_t *c, const char *p, size_t n)
{
    c->chunk_base = p;
    llhttp_errno_t err = llhttp_execute(&c->parser, p, n);
    size_t used = n;
    if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE)
        used = (size_t)(llhttp_get_error_pos(&c->parser) - p);
    c->fed += used;
    switch (err) {
    case HPE_OK:
        if (c->state == CONN_HEAD && c->origin_set &&
            c->fed - c->head_origin > c->srv->opts.max_headers)
            conn_error_answer(c, 431, "headers_too_large",
                              "the request's header section is too large");
        break;
    case HPE_PAUSED:
        llhttp_resume(&c->parser);
        conn_dispatch(c);
        break;
    case HPE_PAUSED_UPGRADE:
        /* Upgrade is ignored (RFC 9110 7.8): the next bytes are HTTP/1.1 again. CONNECT never
         * gets here, its connection closes after the answer. */
        llhttp_resume_after_upgrade(&c->parser);
        break;
    default:
        conn_parse_error(c, err);
        break;
    }
    return used;
}

/* Parses what is pending, then the new bytes p[0..n), handing complete requests to the handler
 * one at a time; whatever cannot be parsed yet is kept. */
static void conn_drive(conn_t *c, const char *p, size_t n)
{
    c->busy = true;
    while (c->state == CONN_IDLE || c->state == CONN_HEAD || c->state == CONN_BODY) {
        if (c->doomed) break;
        if (c->write_queued + c->out.len > OUT_HIGH) {
            c->stalled = true;
            break;
        }
        size_t used;
        if (c->in_off < c->in.len) {
            used = conn_parse(c, c->in.data + c->in_off, c->in.len - c->in_off);
            c->in_off += used;
            if (c->in_off == c->in.len) c->in_off = c->in.len = 0;
        } else if (n > 0) {
            used = conn_parse(c, p, n);
            p += used;
            n -= used;
        } else {
            break;
        }
        if (used == 0 && (c->state == CONN_HEAD || c->state == CONN_BODY)) break;
    }
    if (n > 0 && c->state != CONN_CLOSING && c->state != CONN_CLOSED) in_append(c, p, n);
    c->busy = false;
    conn_after(c);
}

/* ---- socket events ------------------------------------------------------------------------ */

static void conn_on_bytes(conn_t *c, const char *p, size_t n)
{
    switch (c->state) {
    case CONN_CLOSING:
    case CONN_CLOSED:
        return; /* the answer said close: the rest is dropped */
    case CONN_HANDLING:
    case CONN_STREAMING:
        in_append(c, p, n);
        conn_read_control(c);
        return;
    default:
        conn_drive(c, p, n);
        return;
    }
}

static void conn_on_eof(conn_t *c)
{
    if (c->state == CONN_CLOSED) return;
    if (c->req_live || c->write_queued == 0) {
        conn_close(c);
        return;
    }
    /* A half-closed client still gets the answers already on their way; the shutdown that
     * follows them closes the connection. */
    c->eof = true;
    if (c->reading && !c->virt) uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
    if (c->state != CONN_CLOSING) conn_set_state(c, CONN_CLOSING);
    conn_after(c);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    conn_t *c = st->data;
    if (n > 0)
        conn_on_bytes(c, buf->base, (size_t)n);
    else if (n < 0)
        conn_on_eof(c);
}

static void on_timer(uv_timer_t *t)
{
    conn_t *c = t->data;
    if (c->doomed) {
        conn_close(c);
        return;
    }
    if (c->kick) {
        c->kick = false;
        c->timer_dirty = true;
        conn_drive(c, NULL, 0);
        return;
    }
    if (c->state == CONN_CLOSING) {
        conn_close(c);
        return;
    }
    if (!c->virt) {               /* the fuzz driver calls this to mean "time is up" */
        if (!c->deadline) return; /* this phase has no timeout */
        uint64_t now = uv_now(c->srv->loop);
        if (now < c->deadline) {
            conn_timer_start(c, c->deadline - now);
            return;
        }
    }
    switch (c->state) {
    case CONN_HEAD:
    case CONN_BODY:
        conn_error_answer(c, 408, "request_timeout",
                          c->state == CONN_HEAD ? "the request headers took too long"
                                                : "the request body took too long");
        conn_after(c);
        break;
    case CONN_IDLE:
        conn_close(c);
        break;
    default:
        break;
    }
}

static void conn_setup(conn_t *c, sp_http_server_t *s)
{
    c->srv = s;
    llhttp_init(&c->parser, HTTP_REQUEST, &s->settings);
    c->parser.data = c;
    c->state = CONN_IDLE;
    c->tcp.data = c;
    c->timer.data = c;
    c->timer_dirty = true;
    c->keep_alive = true;
    c->http_minor = 1;
    sp_buf_init(&c->in);
    sp_buf_init(&c->rb);
    sp_buf_init(&c->out);
}

static void on_spare_close(uv_handle_t *h)
{
    sp_http_server_t *s = h->data;
    s->spare_busy = false;
    server_maybe_done(s);
}

/* Without memory for a connection it is still accepted and closed at once: libuv stops polling
 * the listener until a pending connection is taken. */
static void server_refuse(sp_http_server_t *s)
{
    if (s->spare_busy) return;
    uv_tcp_init(s->loop, &s->spare);
    s->spare.data = s;
    s->spare_busy = true;
    uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&s->spare);
    uv_close((uv_handle_t *)&s->spare, on_spare_close);
}

static void on_connection(uv_stream_t *ls, int status)
{
    sp_http_server_t *s = ls->data;
    if (status < 0) {
        uint64_t now = uv_now(s->loop);
        if (!s->last_emfile_warn || now - s->last_emfile_warn >= EMFILE_WARN_MS) {
            s->last_emfile_warn = now;
            sp_warn("http: accept failed: %s (%zu connections open)", uv_strerror(status),
                    s->nconns);
        }
        return;
    }
    conn_t *c = calloc(1, sizeof *c);
    if (!c) {
        server_refuse(s);
        return;
    }
    conn_setup(c, s);
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles_open = 2;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    if (s->opts.max_connections && s->nconns > s->opts.max_connections) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int len = (int)sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
        format_addr((struct sockaddr *)&ss, c->req.peer, sizeof c->req.peer);
    else
        snprintf(c->req.peer, sizeof c->req.peer, "unknown");
    conn_after(c);
}

/* ---- server ------------------------------------------------------------------------------- */

void sp_http_opts_default(sp_http_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->max_body = 1 << 20;
    o->max_target = 8 << 10;
    o->max_headers = 64 << 10;
    o->max_header_count = 100;
    o->header_timeout_ms = 10000;
    o->body_timeout_ms = 60000;
    o->idle_timeout_ms = 60000;
}

/* Sizes left at 0 take their defaults; timeouts left at 0 are off. */
static void server_init(sp_http_server_t *s, const sp_http_opts_t *opts)
{
    sp_http_opts_t d;
    sp_http_opts_default(&d);
    s->opts = *opts;
    if (!s->opts.max_body) s->opts.max_body = d.max_body;
    if (!s->opts.max_target) s->opts.max_target = d.max_target;
    if (!s->opts.max_headers) s->opts.max_headers = d.max_headers;
    if (!s->opts.max_header_count) s->opts.max_header_count = d.max_header_count;
    s->in_cap = s->opts.max_body + s->opts.max_headers + READ_BUF_SIZE;
    settings_init(&s->settings);
}

static int resolve(const char *host, int port, struct sockaddr_storage *ss)
{
    char name[256];
    if (!host || !*host || strcmp(host, "localhost") == 0) host = "127.0.0.1";
    size_t n = strlen(host);
    if (n >= sizeof name) return UV_EINVAL;
    memcpy(name, host, n + 1);
    if (n >= 2 && name[0] == '[' && name[n - 1] == ']') {
        memmove(name, name + 1, n - 2);
        name[n - 2] = '\0';
    }
    memset(ss, 0, sizeof *ss);
    if (uv_ip4_addr(name, port, (struct sockaddr_in *)ss) == 0) return 0;
    if (uv_ip6_addr(name, port, (struct sockaddr_in6 *)ss) == 0) return 0;
    return UV_EINVAL;
}

static void on_listener_close(uv_handle_t *h)
{
    sp_http_server_t *s = h->data;
    s->listener_open = false;
    server_maybe_done(s);
}

int sp_http_server_start(uv_loop_t *loop, const char *host, int port, const sp_http_opts_t *opts,
                         sp_http_server_t **out, char *bound, size_t bound_len)
{
    if (!loop || !opts || !opts->handler || !out || port < 0 || port > 65535) return UV_EINVAL;
    struct sockaddr_storage ss;
    int r = resolve(host, port, &ss);
    if (r) return r;
    sp_http_server_t *s = calloc(1, sizeof *s);
    if (!s) return UV_ENOMEM;
    s->rbuf = malloc(READ_BUF_SIZE);
    if (!s->rbuf) {
        free(s);
        return UV_ENOMEM;
    }
    s->loop = loop;
    server_init(s, opts);
    r = uv_tcp_init(loop, &s->listener);
    if (r) {
        free(s->rbuf);
        free(s);
        return r;
    }
    s->listener.data = s;
    s->listener_open = true;
    r = uv_tcp_bind(&s->listener, (struct sockaddr *)&ss, 0);
    if (!r) r = uv_listen((uv_stream_t *)&s->listener, 4096, on_connection);
    struct sockaddr_storage name;
    int len = (int)sizeof name;
    if (!r) r = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&name, &len);
    if (r) {
        /* The listener handle is freed by its close callback on the loop's next turn. */
        s->closing = true;
        s->listener_closing = true;
        uv_close((uv_handle_t *)&s->listener, on_listener_close);
        return r;
    }
    if (bound && bound_len) format_addr((struct sockaddr *)&name, bound, bound_len);
    *out = s;
    return 0;
}

void sp_http_server_stop_accepting(sp_http_server_t *s)
{
    if (!s || !s->listener_open || s->listener_closing) return;
    s->listener_closing = true;
    uv_close((uv_handle_t *)&s->listener, on_listener_close);
}

void sp_http_server_close(sp_http_server_t *s, void (*done)(void *ud), void *ud)
{
    if (!s || s->closing) return;
    s->closing = true;
    s->done = done;
    s->done_ud = ud;
    sp_http_server_stop_accepting(s);
    /* Connections leave the list only in their close callbacks, which run later, so the list
     * holds still while abort callbacks run. */
    for (conn_t *c = s->conns; c; c = c->next) conn_close(c);
    server_maybe_done(s);
}

size_t sp_http_server_connection_count(const sp_http_server_t *s)
{
    return s ? s->nconns : 0;
}

uint64_t sp_http_server_request_count(const sp_http_server_t *s)
{
    return s ? s->nrequests : 0;
}

/* ---- helpers ------------------------------------------------------------------------------ */

const sp_http_header_t *sp_http_req_header(const sp_http_req_t *req, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < req->nheaders; i++) {
        const sp_http_header_t *h = &req->headers[i];
        if (h->name_len == n && strncasecmp(h->name, name, n) == 0) return h;
    }
    return NULL;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

long sp_http_pct_decode(const char *in, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = in[i];
        if (ch == '%') {
            if (len - i < 3) return -1;
            int hi = hexval(in[i + 1]), lo = hexval(in[i + 2]);
            if (hi < 0 || lo < 0) return -1;
            ch = (char)(hi << 4 | lo);
            i += 2;
        }
        if (o >= cap) return -1;
        out[o++] = ch;
    }
    if (o < cap) out[o] = '\0';
    return (long)o;
}

bool sp_http_query_next(const char **q, const char *end, const char **name, size_t *name_len,
                        const char **value, size_t *value_len)
{
    const char *p = *q;
    if (!p || !end) return false;
    while (p < end && *p == '&') p++;
    if (p >= end) {
        *q = end;
        return false;
    }
    const char *amp = memchr(p, '&', (size_t)(end - p));
    const char *seg_end = amp ? amp : end;
    const char *eq = memchr(p, '=', (size_t)(seg_end - p));
    *name = p;
    *name_len = (size_t)((eq ? eq : seg_end) - p);
    *value = eq ? eq + 1 : seg_end;
    *value_len = eq ? (size_t)(seg_end - eq - 1) : 0;
    *q = amp ? amp + 1 : end;
    return true;
}

/* ---- fuzzing ------------------------------------------------------------------------------ */

typedef struct {
    sp_http_req_t *late; /* a request left unanswered until the next piece of input */
} fuzz_ctx_t;

static void fuzz_abort(void *ud, sp_http_req_t *req)
{
    fuzz_ctx_t *f = ud;
    if (f->late == req) f->late = NULL;
}

static void fuzz_answer_late(fuzz_ctx_t *f)
{
    sp_http_req_t *r = f->late;
    if (!r) return;
    f->late = NULL;
    sp_http_respond(r, 200, "text/plain", NULL, "late", 4);
}

static void fuzz_handler(void *ud, sp_http_req_t *req)
{
    fuzz_ctx_t *f = ud;
    char dec[256];
    long dl = sp_http_pct_decode(req->path, req->path_len, dec, sizeof dec);
    const char *q = req->query, *qend = req->query ? req->query + req->query_len : NULL;
    const char *n, *v;
    size_t nl, vl, params = 0;
    while (sp_http_query_next(&q, qend, &n, &nl, &v, &vl)) params++;
    const sp_http_header_t *h = sp_http_req_header(req, "x-fuzz");
    if (req->path_len >= 5 && memcmp(req->path, "/late", 5) == 0 && !f->late) {
        f->late = req;
        if (params) sp_http_req_on_abort(req, fuzz_abort, f);
        return;
    }
    if (req->path_len >= 7 && memcmp(req->path, "/stream", 7) == 0) {
        sp_http_stream_start(req, 200, "text/event-stream", "Cache-Control: no-cache\r\n");
        sp_http_stream_write(req, "data: 1\n\n", 9);
        if (req->body_len) sp_http_stream_write(req, req->body, req->body_len);
        sp_http_stream_end(req);
        return;
    }
    if (dl < 0 || h) {
        sp_http_respond_error(req, 400, "bad_request", h ? "x-fuzz" : "bad path",
                              "Retry-After: 1\r\n");
        return;
    }
    sp_http_respond(req, 200, "application/octet-stream", params ? "Connection: close\r\n" : NULL,
                    req->body, req->body_len);
}

int sp_http_fuzz_feed(const uint8_t *data, size_t len)
{
    fuzz_ctx_t f = {NULL};
    sp_http_opts_t o;
    sp_http_opts_default(&o);
    o.max_body = 4096;
    o.max_target = 256;
    o.max_headers = 2048;
    o.max_header_count = 16;
    o.handler = fuzz_handler;
    o.ud = &f;
    sp_http_server_t *s = calloc(1, sizeof *s);
    conn_t *c = calloc(1, sizeof *c);
    if (!s || !c) {
        free(s);
        free(c);
        return 0;
    }
    server_init(s, &o);
    conn_setup(c, s);
    c->virt = true;
    snprintf(c->req.peer, sizeof c->req.peer, "127.0.0.1:1");
    /* The first byte picks how the rest is cut into reads, as a network would. */
    size_t step = len;
    if (len > 0) {
        step = data[0] % 32 ? (size_t)(data[0] % 32) * 3 : len;
        data++;
        len--;
    }
    size_t off = 0;
    while (off < len && c->state != CONN_CLOSED) {
        size_t n = SP_MIN(step, len - off);
        conn_on_bytes(c, (const char *)data + off, n);
        off += n;
        fuzz_answer_late(&f);
        if (c->kick && c->state != CONN_CLOSED) {
            c->kick = false;
            conn_drive(c, NULL, 0);
        }
    }
    if (c->state == CONN_HEAD || c->state == CONN_BODY) on_timer(&c->timer);
    conn_on_eof(c);
    if (c->state != CONN_CLOSED) conn_close(c);
    fuzz_answer_late(&f);
    if (c->req_live) sp_http_stream_end(&c->req);
    conn_free(c);
    free(s);
    return 0;
}
