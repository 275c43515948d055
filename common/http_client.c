/*
 * http_client.c - the non-blocking HTTP/1.1 client (see http_client.h): origins with their
 * keep-alive connection pools and waiting requests, connections parsing answers with llhttp,
 * and requests with their own timeout.
 *
 * How it runs:
 * - A call (one request) is QUEUED on its origin until a connection is free, then ACTIVE on one
 *   connection until its answer is complete, then DONE. Its timer bounds the whole life; a call
 *   that fails before it could be sent (a bad URL) gets its error from the same timer at 0 ms,
 *   so that callbacks never run inside sp_http_client_request.
 * - The bytes being written belong to the connection, not the call: a call canceled while its
 *   write is in flight can be freed at once.
 * - A connection counts against its origin's cap from its creation until it starts closing, so
 *   that the origin can open a replacement while the old handles are still closing.
 * - The client is freed when every handle (connections, call timers, its own timer) has closed
 *   and no name lookup is outstanding: `refs` counts them.
 */
#include "http_client.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "sp.h"

#define READ_BUF 65536
#define MAX_RESP_HEADERS 100
#define HOST_MAX 256

typedef struct conn conn_t;
typedef struct origin origin_t;

typedef enum { CALL_QUEUED, CALL_ACTIVE, CALL_FAILING, CALL_DONE } call_state_t;
typedef enum { CONN_CONNECTING, CONN_BUSY, CONN_IDLE, CONN_CLOSING } conn_state_t;

struct sp_http_call {
    sp_http_client_t *c;
    origin_t *o; /* NULL when the target did not parse */
    conn_t *conn;
    call_state_t state;
    char *req; /* the serialised request */
    size_t req_len;
    bool head;
    bool retried;
    sp_http_client_cb cb;
    void *ud;
    uv_timer_t timer;
    int fail_status; /* for CALL_FAILING */
    char why[256];
    sp_http_call_t *qnext, *qprev; /* the origin's waiting queue */
    sp_http_call_t *anext, *aprev; /* every unfinished call of the client */
};

typedef struct {
    size_t name_off, name_len, val_off, val_len;
} hdr_span_t;

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* connect timeout, then idle timeout */
    uv_connect_t connect_req;
    uv_write_t write_req;
    sp_http_client_t *c;
    origin_t *o;
    sp_http_call_t *call;
    conn_state_t state;
    bool reused;    /* the current call went out on a connection that had served one before */
    bool got_bytes; /* a byte of the current answer has arrived */
    bool writing;
    bool no_reuse; /* the current answer ends the connection */
    int closes_left;
    sp_buf_t wbuf;

    llhttp_t parser;
    bool complete;
    bool in_value;
    int perr; /* a cap exceeded while parsing: UV_E2BIG */
    sp_buf_t hdr;
    hdr_span_t spans[MAX_RESP_HEADERS];
    size_t nspans;
    sp_buf_t body;
    conn_t *next, *prev; /* the client's list of connections */
    conn_t *inext;       /* the origin's idle stack */
};

struct origin {
    sp_http_client_t *c;
    char host[HOST_MAX]; /* without brackets */
    int port;
    char hostport[HOST_MAX + 16]; /* for Host: and messages; [v6]:port */
    struct sockaddr_storage addr;
    bool resolved, resolving;
    int resolve_err;
    uv_getaddrinfo_t gai;
    size_t nconns; /* open (not closing) connections */
    conn_t *idle;  /* stack of idle connections */
    size_t nidle;
    sp_http_call_t *qhead, *qtail;
    origin_t *next;
};

struct sp_http_client {
    uv_loop_t *loop;
    sp_http_client_opts_t opts;
    origin_t *base; /* NULL without a base URL */
    origin_t *origins;
    conn_t *conns;
    sp_http_call_t *active;
    size_t pending;
    uint64_t connects;
    size_t refs;
    bool closing;
    uv_timer_t self;
    void (*done)(void *ud);
    void *done_ud;
    llhttp_settings_t settings;
    char rbuf[READ_BUF];
};

static void origin_pump(origin_t *o);
static void conn_close(conn_t *k);

static const sp_http_resp_t empty_resp = {0, NULL, 0, "", 0};

void sp_http_client_opts_default(sp_http_client_opts_t *o)
{
    o->connect_timeout_ms = 5000;
    o->request_timeout_ms = 30000;
    o->idle_timeout_ms = 20000;
    o->max_idle_conns = 8;
    o->max_conns = 256;
    o->max_response = 16u << 20;
    o->max_header_bytes = 64u << 10;
}

/* ---- freeing ----------------------------------------------------------------------------- */

static void client_free(sp_http_client_t *c)
{
    origin_t *o = c->origins;
    while (o) {
        origin_t *n = o->next;
        free(o);
        o = n;
    }
    void (*done)(void *) = c->done;
    void *ud = c->done_ud;
    free(c);
    if (done) done(ud);
}

static void unref(sp_http_client_t *c)
{
    if (--c->refs == 0 && c->closing) client_free(c);
}

/* ---- URLs -------------------------------------------------------------------------------- */

/* Splits "http://host[:port][/path...]". On success host/port are set and *path points at the
 * path ('/' ...) or at the end of the string. */
static int url_split(const char *url, char *host, size_t cap, int *port, const char **path,
                     char *err, size_t errlen)
{
    static const char scheme[] = "http://";
    if (strncasecmp(url, "https://", 8) == 0) {
        snprintf(err, errlen, "only http:// URLs are supported (no TLS): %s", url);
        return SP_EINVAL;
    }
    if (strncasecmp(url, scheme, sizeof scheme - 1) != 0) {
        snprintf(err, errlen, "not an http:// URL: '%s'", url);
        return SP_EINVAL;
    }
    const char *h = url + sizeof scheme - 1;
    const char *end = h + strcspn(h, "/?#");
    const char *hend, *colon = NULL;
    if (*h == '[') {
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (!rb) goto bad;
        hend = rb;
        h++;
        if (rb + 1 < end) {
            if (rb[1] != ':') goto bad;
            colon = rb + 1;
        }
    } else {
        colon = memchr(h, ':', (size_t)(end - h));
        hend = colon ? colon : end;
    }
    size_t hl = (size_t)(hend - h);
    if (hl == 0 || hl >= cap || memchr(h, '@', hl)) goto bad;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = 80;
    if (colon) {
        const char *ps = colon + 1;
        if (ps == end || end - ps > 5) goto bad;
        long p = 0;
        for (const char *q = ps; q < end; q++) {
            if (*q < '0' || *q > '9') goto bad;
            p = p * 10 + (*q - '0');
        }
        if (p < 1 || p > 65535) goto bad;
        *port = (int)p;
    }
    if (*end == '?' || *end == '#') goto bad;
    *path = end;
    return 0;
bad:
    snprintf(err, errlen, "invalid URL '%s': expected http://HOST:PORT/PATH", url);
    return SP_EINVAL;
}

static void gai_done(uv_getaddrinfo_t *req, int status, struct addrinfo *res);

static origin_t *origin_get(sp_http_client_t *c, const char *host, int port)
{
    for (origin_t *o = c->origins; o; o = o->next) {
        if (o->port == port && strcmp(o->host, host) == 0) return o;
    }
    origin_t *o = calloc(1, sizeof *o);
    if (!o) return NULL;
    o->c = c;
    o->port = port;
    snprintf(o->host, sizeof o->host, "%s", host);
    bool v6 = strchr(host, ':') != NULL;
    snprintf(o->hostport, sizeof o->hostport, v6 ? "[%s]:%d" : "%s:%d", host, port);
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    if (uv_ip4_addr(host, port, &a4) == 0) {
        memcpy(&o->addr, &a4, sizeof a4);
        o->resolved = true;
    } else if (uv_ip6_addr(host, port, &a6) == 0) {
        memcpy(&o->addr, &a6, sizeof a6);
        o->resolved = true;
    }
    o->gai.data = o;
    o->next = c->origins;
    c->origins = o;
    return o;
}

/* ---- calls ------------------------------------------------------------------------------- */

static void call_timer_closed(uv_handle_t *h)
{
    sp_http_call_t *call = h->data;
    sp_http_client_t *c = call->c;
    free(call->req);
    free(call);
    unref(c);
}

static void queue_remove(origin_t *o, sp_http_call_t *call)
{
    if (call->qprev)
        call->qprev->qnext = call->qnext;
    else
        o->qhead = call->qnext;
    if (call->qnext)
        call->qnext->qprev = call->qprev;
    else
        o->qtail = call->qprev;
    call->qnext = call->qprev = NULL;
}

static void queue_push(origin_t *o, sp_http_call_t *call, bool front)
{
    call->qnext = call->qprev = NULL;
    if (!o->qhead) {
        o->qhead = o->qtail = call;
    } else if (front) {
        call->qnext = o->qhead;
        o->qhead->qprev = call;
        o->qhead = call;
    } else {
        call->qprev = o->qtail;
        o->qtail->qnext = call;
        o->qtail = call;
    }
}

/* Takes the call out of every structure and schedules its memory to be freed. */
static void call_retire(sp_http_call_t *call)
{
    sp_http_client_t *c = call->c;
    if (call->state == CALL_QUEUED && call->o) queue_remove(call->o, call);
    if (call->conn) {
        call->conn->call = NULL;
        call->conn = NULL;
    }
    call->state = CALL_DONE;
    if (call->aprev)
        call->aprev->anext = call->anext;
    else
        c->active = call->anext;
    if (call->anext) call->anext->aprev = call->aprev;
    c->pending--;
    uv_close((uv_handle_t *)&call->timer, call_timer_closed);
}

static void call_finish(sp_http_call_t *call, int status, const char *why,
                        const sp_http_resp_t *resp)
{
    sp_http_client_cb cb = call->cb;
    void *ud = call->ud;
    call_retire(call);
    cb(ud, status, why, resp ? resp : &empty_resp);
}

static void call_fail(sp_http_call_t *call, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void call_fail(sp_http_call_t *call, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(call->why, sizeof call->why, fmt, ap);
    va_end(ap);
    call_finish(call, status, call->why, NULL);
}

static void call_timed_out(uv_timer_t *t)
{
    sp_http_call_t *call = t->data;
    if (call->state == CALL_FAILING) {
        call_finish(call, call->fail_status, call->why, NULL);
        return;
    }
    conn_t *k = call->conn;
    origin_t *o = call->o;
    if (k) {
        /* The answer can no longer be told apart from the next one: the connection goes. */
        k->call = NULL;
        call->conn = NULL;
        conn_close(k);
    }
    call_fail(call, UV_ETIMEDOUT, "request to %s timed out", o ? o->hostport : "?");
    if (o && !o->c->closing) origin_pump(o);
}

/* ---- connections ------------------------------------------------------------------------- */

static void conn_handle_closed(uv_handle_t *h)
{
    conn_t *k = h->data;
    if (--k->closes_left > 0) return;
    sp_http_client_t *c = k->c;
    sp_buf_free(&k->wbuf);
    sp_buf_free(&k->hdr);
    sp_buf_free(&k->body);
    free(k);
    unref(c);
}

static void idle_remove(origin_t *o, conn_t *k)
{
    for (conn_t **pp = &o->idle; *pp; pp = &(*pp)->inext) {
        if (*pp == k) {
            *pp = k->inext;
            k->inext = NULL;
            o->nidle--;
            return;
        }
    }
}

/* Starts closing; the call on it, if any, must have been detached or finished first. */
static void conn_close(conn_t *k)
{
    if (k->state == CONN_CLOSING) return;
    if (k->state == CONN_IDLE) idle_remove(k->o, k);
    k->state = CONN_CLOSING;
    k->o->nconns--;
    if (k->call) {
        k->call->conn = NULL;
        k->call = NULL;
    }
    sp_http_client_t *c = k->c;
    if (k->prev)
        k->prev->next = k->next;
    else
        c->conns = k->next;
    if (k->next) k->next->prev = k->prev;
    k->next = k->prev = NULL;
    uv_close((uv_handle_t *)&k->tcp, conn_handle_closed);
    uv_close((uv_handle_t *)&k->timer, conn_handle_closed);
}

static void parse_reset(conn_t *k)
{
    llhttp_init(&k->parser, HTTP_RESPONSE, &k->c->settings);
    k->parser.data = k;
    k->complete = false;
    k->in_value = false;
    k->perr = 0;
    k->nspans = 0;
    k->got_bytes = false;
    k->no_reuse = false;
    /* The buffers are emptied by on_message_begin: until the first byte of the next answer
     * they still hold the previous one, which its callback may be reading. */
}

/* The connection failed while a call was on it: the call is sent again once when it went out
 * on a reused connection and nothing came back (the server had closed it while idle). */
static void conn_fail(conn_t *k, int status, const char *what)
{
    sp_http_call_t *call = k->call;
    origin_t *o = k->o;
    conn_close(k);
    if (!call) return;
    if (k->reused && !k->got_bytes && !call->retried && !o->c->closing) {
        call->retried = true;
        call->state = CALL_QUEUED;
        queue_push(o, call, true);
        origin_pump(o);
        return;
    }
    call_fail(call, status, "%s %s: %s", what, o->hostport, uv_strerror(status));
    if (!o->c->closing) origin_pump(o);
}

static void conn_idle_fired(uv_timer_t *t)
{
    conn_close(t->data);
}

static void conn_make_idle(conn_t *k)
{
    origin_t *o = k->o;
    sp_http_client_t *c = k->c;
    k->call = NULL;
    /* A write still in flight owns wbuf: such a connection is not worth keeping. */
    if (c->closing || k->writing || o->nidle >= c->opts.max_idle_conns) {
        conn_close(k);
        return;
    }
    k->state = CONN_IDLE;
    /* An idle connection alone does not keep the loop running. */
    uv_unref((uv_handle_t *)&k->tcp);
    uv_unref((uv_handle_t *)&k->timer);
    k->inext = o->idle;
    o->idle = k;
    o->nidle++;
    uv_timer_start(&k->timer, conn_idle_fired, c->opts.idle_timeout_ms, 0);
}

/* Builds the answer's header array (pointers into k->hdr, which no longer grows). */
static void answer(conn_t *k)
{
    sp_http_call_t *call = k->call;
    origin_t *o = k->o;
    sp_http_header_t hs[MAX_RESP_HEADERS];
    for (size_t i = 0; i < k->nspans; i++) {
        const hdr_span_t *s = &k->spans[i];
        size_t vl = s->val_len;
        const char *v = k->hdr.data + s->val_off;
        while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) vl--;
        hs[i] = (sp_http_header_t){k->hdr.data + s->name_off, s->name_len, v, vl};
    }
    sp_http_resp_t resp = {
        .status = (int)k->parser.status_code,
        .headers = hs,
        .nheaders = k->nspans,
        .body = k->body.len ? k->body.data : "",
        .body_len = k->body.len,
    };
    bool keep = !k->no_reuse && llhttp_should_keep_alive(&k->parser) && !k->body.oom && !k->hdr.oom;
    /* The buffers stay untouched until the callback returns: the connection is made idle
     * first (so a request from the callback may reuse it) but parsed again only later. */
    k->call = NULL;
    call->conn = NULL;
    if (keep) {
        conn_make_idle(k);
    } else {
        conn_close(k);
    }
    if (k->body.oom || k->hdr.oom) {
        call_fail(call, UV_ENOMEM, "answer from %s: out of memory", o->hostport);
    } else {
        call_finish(call, resp.status, NULL, &resp);
    }
    /* Waiting calls get the connection (or the room it left) after the callback, which may
     * have closed the client. */
    if (!o->c->closing) origin_pump(o);
}

static void conn_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    conn_t *k = h->data;
    *buf = uv_buf_init(k->c->rbuf, READ_BUF);
}

static void conn_written(uv_write_t *w, int status)
{
    conn_t *k = w->data;
    k->writing = false;
    if (status < 0 && status != UV_ECANCELED && k->state != CONN_CLOSING)
        conn_fail(k, status, "sending to");
}

static void conn_send(conn_t *k, sp_http_call_t *call)
{
    k->call = call;
    call->conn = k;
    call->state = CALL_ACTIVE;
    k->state = CONN_BUSY;
    parse_reset(k);
    sp_buf_reset(&k->wbuf);
    sp_buf_append(&k->wbuf, call->req, call->req_len);
    if (k->wbuf.oom) {
        conn_close(k);
        call_fail(call, UV_ENOMEM, "request to %s: out of memory", k->o->hostport);
        return;
    }
    uv_buf_t b = uv_buf_init(k->wbuf.data, (unsigned)k->wbuf.len);
    k->write_req.data = k;
    int rc = uv_write(&k->write_req, (uv_stream_t *)&k->tcp, &b, 1, conn_written);
    if (rc < 0) {
        conn_fail(k, rc, "sending to");
        return;
    }
    k->writing = true;
}

static void conn_connected(uv_connect_t *req, int status)
{
    conn_t *k = req->data;
    if (status == UV_ECANCELED || k->state == CONN_CLOSING) return;
    uv_timer_stop(&k->timer);
    if (status < 0) {
        conn_fail(k, status, "connect to");
        return;
    }
    uv_tcp_nodelay(&k->tcp, 1);
    int rc = uv_read_start((uv_stream_t *)&k->tcp, conn_alloc, conn_on_read);
    if (rc < 0) {
        conn_fail(k, rc, "reading from");
        return;
    }
    sp_http_call_t *call = k->call;
    if (!call) {
        /* Its call was canceled while connecting: keep the connection for the next one. */
        conn_make_idle(k);
        if (!k->c->closing) origin_pump(k->o);
        return;
    }
    conn_send(k, call);
}

static void conn_connect_timeout(uv_timer_t *t)
{
    conn_t *k = t->data;
    sp_http_call_t *call = k->call;
    origin_t *o = k->o;
    conn_close(k);
    if (call) {
        call_fail(call, UV_ETIMEDOUT, "connect to %s: timed out", o->hostport);
        if (!o->c->closing) origin_pump(o);
    }
}

/* Opens a connection for call; on an immediate error the call fails. */
static void conn_open(origin_t *o, sp_http_call_t *call)
{
    sp_http_client_t *c = o->c;
    conn_t *k = calloc(1, sizeof *k);
    if (!k) {
        call_fail(call, UV_ENOMEM, "connect to %s: out of memory", o->hostport);
        return;
    }
    k->c = c;
    k->o = o;
    uv_tcp_init(c->loop, &k->tcp);
    uv_timer_init(c->loop, &k->timer);
    k->tcp.data = k->timer.data = k;
    k->closes_left = 2;
    c->refs++;
    k->state = CONN_CONNECTING;
    o->nconns++;
    k->next = c->conns;
    if (c->conns) c->conns->prev = k;
    c->conns = k;
    c->connects++;
    k->call = call;
    call->conn = k;
    call->state = CALL_ACTIVE;
    k->connect_req.data = k;
    int rc =
        uv_tcp_connect(&k->connect_req, &k->tcp, (const struct sockaddr *)&o->addr, conn_connected);
    if (rc < 0) {
        conn_close(k);
        call_fail(call, rc, "connect to %s: %s", o->hostport, uv_strerror(rc));
        return;
    }
    uv_timer_start(&k->timer, conn_connect_timeout, c->opts.connect_timeout_ms, 0);
}

/* ---- parsing answers --------------------------------------------------------------------- */

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    conn_t *k = p->data;
    if (k->in_value || k->nspans == 0) {
        if (k->nspans == MAX_RESP_HEADERS) {
            k->perr = UV_E2BIG;
            return HPE_USER;
        }
        hdr_span_t *s = &k->spans[k->nspans++];
        *s = (hdr_span_t){k->hdr.len, 0, k->hdr.len, 0};
        k->in_value = false;
    }
    if (k->hdr.len + n > k->c->opts.max_header_bytes) {
        k->perr = UV_E2BIG;
        return HPE_USER;
    }
    sp_buf_append(&k->hdr, at, n);
    k->spans[k->nspans - 1].name_len += n;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    conn_t *k = p->data;
    if (k->nspans == 0) return 0;
    hdr_span_t *s = &k->spans[k->nspans - 1];
    if (!k->in_value) {
        k->in_value = true;
        s->val_off = k->hdr.len;
        s->val_len = 0;
    }
    if (k->hdr.len + n > k->c->opts.max_header_bytes) {
        k->perr = UV_E2BIG;
        return HPE_USER;
    }
    sp_buf_append(&k->hdr, at, n);
    s->val_len += n;
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    conn_t *k = p->data;
    /* An empty value never calls on_header_value: mark the pair as done all the same. */
    if (k->nspans > 0 && !k->in_value) {
        k->in_value = true;
        k->spans[k->nspans - 1].val_off = k->hdr.len;
    }
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    conn_t *k = p->data;
    if (k->call && k->call->head) return 1;
    /* Refused before any of it arrives: nobody waits for 16 MiB only to drop them. */
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > k->c->opts.max_response) {
        k->perr = UV_E2BIG;
        return -1;
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    conn_t *k = p->data;
    if (k->body.len + n > k->c->opts.max_response) {
        k->perr = UV_E2BIG;
        return HPE_USER;
    }
    sp_buf_append(&k->body, at, n);
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    conn_t *k = p->data;
    /* A 1xx interim answer was discarded: start the real one afresh. */
    k->nspans = 0;
    k->in_value = false;
    sp_buf_reset(&k->hdr);
    sp_buf_reset(&k->body);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    conn_t *k = p->data;
    if (p->status_code >= 100 && p->status_code < 200) return 0;
    k->complete = true;
    return HPE_PAUSED;
}

static void parse_failed(conn_t *k, llhttp_errno_t err)
{
    sp_http_call_t *call = k->call;
    origin_t *o = k->o;
    conn_close(k);
    if (!call) return;
    if (k->perr == UV_E2BIG) {
        call_fail(call, UV_E2BIG, "answer from %s is over the size limit (%zu bytes of body)",
                  o->hostport, k->c->opts.max_response);
    } else {
        const char *why = llhttp_get_error_reason(&k->parser);
        call_fail(call, UV_EPROTO, "malformed answer from %s: %s", o->hostport,
                  why ? why : llhttp_errno_name(err));
    }
    if (!o->c->closing) origin_pump(o);
}

static void conn_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *k = s->data;
    if (k->state == CONN_CLOSING) return;
    if (nread == 0) return;
    if (k->state == CONN_IDLE) {
        /* The server closed it or sent something unasked: either way it cannot be reused. */
        conn_close(k);
        return;
    }
    if (!k->call) {
        conn_close(k);
        return;
    }
    if (nread < 0) {
        if (nread == UV_EOF && k->got_bytes) {
            llhttp_errno_t err = llhttp_finish(&k->parser);
            if (k->complete) {
                /* The answer ended with the connection: it cannot be kept. */
                k->no_reuse = true;
                answer(k);
                return;
            }
            if (err != HPE_OK) {
                parse_failed(k, err);
                return;
            }
        }
        conn_fail(k, (int)nread, nread == UV_EOF ? "connection closed by" : "reading from");
        return;
    }
    k->got_bytes = true;
    llhttp_errno_t err = llhttp_execute(&k->parser, buf->base, (size_t)nread);
    if (k->complete) {
        /* Bytes after a complete answer (nobody asked for them) make the connection unusable. */
        const char *pos = llhttp_get_error_pos(&k->parser);
        if (err != HPE_PAUSED || !pos || pos < buf->base + nread) k->no_reuse = true;
        answer(k);
        return;
    }
    if (err != HPE_OK) parse_failed(k, err);
}

/* ---- dispatch ---------------------------------------------------------------------------- */

static void gai_done(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    origin_t *o = req->data;
    sp_http_client_t *c = o->c;
    o->resolving = false;
    /* An IPv4 address first when there is one: "localhost" often lists ::1 first while
     * servers here listen on 127.0.0.1. */
    struct addrinfo *pick = res;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET) {
            pick = ai;
            break;
        }
    }
    if (status == 0 && pick && pick->ai_addrlen <= sizeof o->addr) {
        memcpy(&o->addr, pick->ai_addr, pick->ai_addrlen);
        if (o->addr.ss_family == AF_INET)
            ((struct sockaddr_in *)&o->addr)->sin_port = htons((uint16_t)o->port);
        else
            ((struct sockaddr_in6 *)&o->addr)->sin6_port = htons((uint16_t)o->port);
        o->resolved = true;
    }
    if (res) uv_freeaddrinfo(res);
    if (!c->closing) {
        if (!o->resolved) {
            /* Every call waiting for this name fails; a later call looks it up again. */
            int err = status < 0 ? status : UV_EAI_NONAME;
            while (o->qhead) {
                call_fail(o->qhead, err, "cannot resolve %s: %s", o->host, uv_strerror(err));
            }
        } else {
            origin_pump(o);
        }
    }
    unref(c);
}

static void origin_pump(origin_t *o)
{
    sp_http_client_t *c = o->c;
    while (o->qhead && !c->closing) {
        if (!o->resolved) {
            if (o->resolving) return;
            struct addrinfo hints = {0};
            hints.ai_family = AF_UNSPEC;
            hints.ai_socktype = SOCK_STREAM;
            o->gai.data = o;
            int rc = uv_getaddrinfo(c->loop, &o->gai, gai_done, o->host, NULL, &hints);
            if (rc < 0) {
                while (o->qhead) {
                    call_fail(o->qhead, rc, "cannot resolve %s: %s", o->host, uv_strerror(rc));
                }
                return;
            }
            o->resolving = true;
            c->refs++;
            return;
        }
        sp_http_call_t *call = o->qhead;
        if (o->idle) {
            conn_t *k = o->idle;
            o->idle = k->inext;
            k->inext = NULL;
            o->nidle--;
            uv_timer_stop(&k->timer);
            uv_ref((uv_handle_t *)&k->tcp);
            uv_ref((uv_handle_t *)&k->timer);
            queue_remove(o, call);
            k->reused = true;
            conn_send(k, call);
        } else if (o->nconns < c->opts.max_conns) {
            queue_remove(o, call);
            conn_open(o, call);
        } else {
            return;
        }
    }
}

/* ---- public ------------------------------------------------------------------------------ */

int sp_http_client_new(uv_loop_t *loop, const char *base_url, const sp_http_client_opts_t *opts,
                       sp_http_client_t **out, char *err, size_t errlen)
{
    sp_http_client_t *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return SP_ENOMEM;
    }
    c->loop = loop;
    if (opts)
        c->opts = *opts;
    else
        sp_http_client_opts_default(&c->opts);
    sp_http_client_opts_t d;
    sp_http_client_opts_default(&d);
    if (!c->opts.connect_timeout_ms) c->opts.connect_timeout_ms = d.connect_timeout_ms;
    if (!c->opts.request_timeout_ms) c->opts.request_timeout_ms = d.request_timeout_ms;
    if (!c->opts.idle_timeout_ms) c->opts.idle_timeout_ms = d.idle_timeout_ms;
    if (!c->opts.max_conns) c->opts.max_conns = d.max_conns;
    if (!c->opts.max_response) c->opts.max_response = d.max_response;
    if (!c->opts.max_header_bytes) c->opts.max_header_bytes = d.max_header_bytes;
    llhttp_settings_init(&c->settings);
    c->settings.on_message_begin = on_message_begin;
    c->settings.on_header_field = on_header_field;
    c->settings.on_header_value = on_header_value;
    c->settings.on_header_value_complete = on_header_value_complete;
    c->settings.on_headers_complete = on_headers_complete;
    c->settings.on_body = on_body;
    c->settings.on_message_complete = on_message_complete;
    if (base_url) {
        char host[HOST_MAX];
        int port;
        const char *path;
        int rc = url_split(base_url, host, sizeof host, &port, &path, err, errlen);
        if (rc == 0 && path[0] && strcmp(path, "/") != 0) {
            snprintf(err, errlen, "invalid URL '%s': expected http://HOST:PORT without a path",
                     base_url);
            rc = SP_EINVAL;
        }
        if (rc) {
            free(c);
            return rc;
        }
        c->base = origin_get(c, host, port);
        if (!c->base) {
            free(c);
            snprintf(err, errlen, "out of memory");
            return SP_ENOMEM;
        }
    }
    uv_timer_init(loop, &c->self);
    c->self.data = c;
    c->refs = 1;
    *out = c;
    return 0;
}

/* Serialises the request into call->req. */
static bool build_request(sp_http_call_t *call, const char *method, const char *path,
                          const char *headers, const char *body, size_t body_len)
{
    sp_buf_t b = SP_BUF_INIT;
    sp_buf_reserve(&b, 128 + strlen(path) + (headers ? strlen(headers) : 0) + body_len);
    sp_buf_puts(&b, method);
    sp_buf_putc(&b, ' ');
    sp_buf_puts(&b, path[0] ? path : "/");
    sp_buf_puts(&b, " HTTP/1.1\r\nHost: ");
    sp_buf_puts(&b, call->o->hostport);
    sp_buf_puts(&b, "\r\n");
    bool needs_len = body_len > 0 || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
                     strcmp(method, "PATCH") == 0;
    if (needs_len) {
        sp_buf_puts(&b, "Content-Length: ");
        sp_buf_u64(&b, body_len);
        sp_buf_puts(&b, "\r\n");
    }
    if (headers) sp_buf_puts(&b, headers);
    sp_buf_puts(&b, "\r\n");
    if (body_len) sp_buf_append(&b, body, body_len);
    if (b.oom) {
        sp_buf_free(&b);
        return false;
    }
    call->req = sp_buf_steal(&b, &call->req_len);
    return true;
}

sp_http_call_t *sp_http_client_request(sp_http_client_t *c, const char *method, const char *target,
                                       const char *headers, const char *body, size_t body_len,
                                       uint64_t timeout_ms, sp_http_client_cb cb, void *ud)
{
    if (c->closing) return NULL;
    sp_http_call_t *call = calloc(1, sizeof *call);
    if (!call) return NULL;
    call->c = c;
    call->cb = cb;
    call->ud = ud;
    call->head = strcmp(method, "HEAD") == 0;

    const char *path = target;
    int fail = 0;
    if (target[0] == '/') {
        call->o = c->base;
        if (!c->base) {
            fail = UV_EINVAL;
            snprintf(call->why, sizeof call->why, "'%s' is a path, but the client has no base URL",
                     target);
        }
    } else {
        char host[HOST_MAX];
        int port;
        if (url_split(target, host, sizeof host, &port, &path, call->why, sizeof call->why)) {
            fail = UV_EINVAL;
        } else {
            call->o = origin_get(c, host, port);
            if (!call->o) {
                free(call);
                return NULL;
            }
        }
    }
    if (!fail && !build_request(call, method, path, headers, body, body_len)) {
        free(call);
        return NULL;
    }
    uv_timer_init(c->loop, &call->timer);
    call->timer.data = call;
    c->refs++;
    c->pending++;
    call->anext = c->active;
    if (c->active) c->active->aprev = call;
    c->active = call;
    if (fail) {
        call->state = CALL_FAILING;
        call->fail_status = fail;
        uv_timer_start(&call->timer, call_timed_out, 0, 0);
        return call;
    }
    uv_timer_start(&call->timer, call_timed_out,
                   timeout_ms ? timeout_ms : c->opts.request_timeout_ms, 0);
    call->state = CALL_QUEUED;
    queue_push(call->o, call, false);
    origin_pump(call->o);
    return call;
}

void sp_http_client_cancel(sp_http_call_t *call)
{
    if (!call || call->state == CALL_DONE) return;
    conn_t *k = call->conn;
    if (k) {
        if (k->state == CONN_CONNECTING) {
            /* Connecting costs nothing to keep: the connection will serve the next call. */
            k->call = NULL;
            call->conn = NULL;
        } else {
            conn_close(k);
        }
    }
    origin_t *o = call->o;
    call_retire(call);
    if (o && !o->c->closing) origin_pump(o);
}

size_t sp_http_client_pending(const sp_http_client_t *c)
{
    return c->pending;
}

uint64_t sp_http_client_connects(const sp_http_client_t *c)
{
    return c->connects;
}

static void self_closed(uv_handle_t *h)
{
    unref(h->data);
}

void sp_http_client_close(sp_http_client_t *c, void (*done)(void *ud), void *ud)
{
    if (c->closing) return;
    c->closing = true;
    c->done = done;
    c->done_ud = ud;
    while (c->active) {
        sp_http_call_t *call = c->active;
        if (call->conn) conn_close(call->conn);
        call_fail(call, UV_ECANCELED, "the HTTP client is closing");
    }
    while (c->conns) conn_close(c->conns);
    for (origin_t *o = c->origins; o; o = o->next) {
        if (o->resolving) uv_cancel((uv_req_t *)&o->gai);
    }
    uv_close((uv_handle_t *)&c->self, self_closed);
}
