/*
 * test_http_client.c - the HTTP client (common/http_client.c) against a small raw HTTP server
 * that runs on the same libuv loop inside the test, so that every kind of answer (Content-Length,
 * chunked, until close, Connection: close, none at all, malformed, too big) can be produced on
 * purpose: keep-alive reuse, timeouts, refused connections, cancel, and close with nothing left
 * on the loop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "http_client.h"
#include "sp.h"

/* ---- the test server --------------------------------------------------------------------- */

typedef struct tsrv tsrv_t;

typedef struct tconn {
    uv_tcp_t tcp;
    tsrv_t *s;
    char buf[8192];
    size_t len;
    int served;
    bool closing;
    struct tconn *next;
} tconn_t;

struct tsrv {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int port;
    int accepted;
    int requests;
    bool drop_reused; /* a connection's second request is dropped unanswered */
    tconn_t *conns;
};

typedef struct {
    uv_write_t w;
    char *data;
} twrite_t;

static void tconn_closed(uv_handle_t *h)
{
    tconn_t *k = h->data;
    tsrv_t *s = k->s;
    for (tconn_t **pp = &s->conns; *pp; pp = &(*pp)->next) {
        if (*pp == k) {
            *pp = k->next;
            break;
        }
    }
    free(k);
}

static void tconn_close(tconn_t *k)
{
    if (k->closing) return;
    k->closing = true;
    uv_close((uv_handle_t *)&k->tcp, tconn_closed);
}

static void twritten(uv_write_t *w, int status)
{
    (void)status;
    twrite_t *tw = (twrite_t *)w;
    free(tw->data);
    free(tw);
}

static void tsend(tconn_t *k, const char *data, size_t len)
{
    twrite_t *tw = malloc(sizeof *tw);
    assert_non_null(tw);
    tw->data = malloc(len);
    assert_non_null(tw->data);
    memcpy(tw->data, data, len);
    uv_buf_t b = uv_buf_init(tw->data, (unsigned)len);
    assert_int_equal(uv_write(&tw->w, (uv_stream_t *)&k->tcp, &b, 1, twritten), 0);
}

static void tsends(tconn_t *k, const char *s)
{
    tsend(k, s, strlen(s));
}

/* Answers one request whose head is buf[0..head) and whose body follows. */
static void tserve(tconn_t *k, const char *path, const char *body, size_t body_len)
{
    tsrv_t *s = k->s;
    s->requests++;
    k->served++;
    if (s->drop_reused && k->served == 2) {
        tconn_close(k);
        return;
    }
    if (strcmp(path, "/cl") == 0) {
        tsends(k, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Test:  spaced  \r\n\r\nhello");
    } else if (strcmp(path, "/chunked") == 0) {
        /* In pieces, so that the client parses across reads. */
        tsends(k, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
        tsends(k, "lo\r\n6\r\n world\r\n0\r\n\r\n");
    } else if (strcmp(path, "/eof") == 0) {
        tsends(k, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close");
        tconn_close(k);
    } else if (strcmp(path, "/close") == 0) {
        /* The server says it closes but leaves the socket open: the client must not reuse it. */
        tsends(k, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
    } else if (strcmp(path, "/echo") == 0) {
        char head[128];
        snprintf(head, sizeof head, "HTTP/1.1 201 Created\r\nContent-Length: %zu\r\n\r\n",
                 body_len);
        tsends(k, head);
        if (body_len) tsend(k, body, body_len);
    } else if (strcmp(path, "/status404") == 0) {
        tsends(k, "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nnah");
    } else if (strcmp(path, "/big") == 0) {
        tsends(k, "HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\nxxxx");
    } else if (strcmp(path, "/bigchunk") == 0) {
        static char chunk[8192];
        memset(chunk, 'y', sizeof chunk);
        tsends(k, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        for (int i = 0; i < 4; i++) {
            tsends(k, "2000\r\n");
            tsend(k, chunk, sizeof chunk);
            tsends(k, "\r\n");
        }
        tsends(k, "0\r\n\r\n");
    } else if (strcmp(path, "/bad") == 0) {
        tsends(k, "HTTP/1.1 abc nonsense\r\n\r\n");
    } else if (strcmp(path, "/drop") == 0) {
        tconn_close(k);
    } else if (strcmp(path, "/never") == 0) {
        /* no answer */
    } else {
        tsends(k, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    }
}

static void talloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    (void)sz;
    tconn_t *k = h->data;
    *b = uv_buf_init(k->buf + k->len, (unsigned)(sizeof k->buf - k->len));
}

static void tread(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    tconn_t *k = st->data;
    if (n < 0) {
        tconn_close(k);
        return;
    }
    k->len += (size_t)n;
    for (;;) {
        if (k->closing) return;
        char *end = memmem(k->buf, k->len, "\r\n\r\n", 4);
        if (!end) return;
        size_t head = (size_t)(end - k->buf) + 4;
        size_t body_len = 0;
        char *cl = memmem(k->buf, head, "Content-Length: ", 16);
        if (cl) body_len = strtoul(cl + 16, NULL, 10);
        if (k->len < head + body_len) return;
        char path[128] = "";
        char *sp1 = memchr(k->buf, ' ', head);
        char *sp2 = sp1 ? memchr(sp1 + 1, ' ', head - (size_t)(sp1 + 1 - k->buf)) : NULL;
        if (sp1 && sp2 && (size_t)(sp2 - sp1 - 1) < sizeof path) {
            memcpy(path, sp1 + 1, (size_t)(sp2 - sp1 - 1));
            path[sp2 - sp1 - 1] = '\0';
        }
        /* Every request must name its host. */
        assert_non_null(memmem(k->buf, head, "\r\nHost: ", 8));
        tserve(k, path, k->buf + head, body_len);
        size_t used = head + body_len;
        memmove(k->buf, k->buf + used, k->len - used);
        k->len -= used;
    }
}

static void taccept(uv_stream_t *l, int status)
{
    assert_int_equal(status, 0);
    tsrv_t *s = l->data;
    tconn_t *k = calloc(1, sizeof *k);
    assert_non_null(k);
    k->s = s;
    uv_tcp_init(s->loop, &k->tcp);
    k->tcp.data = k;
    assert_int_equal(uv_accept(l, (uv_stream_t *)&k->tcp), 0);
    k->next = s->conns;
    s->conns = k;
    s->accepted++;
    uv_read_start((uv_stream_t *)&k->tcp, talloc, tread);
}

static void tsrv_start(tsrv_t *s, uv_loop_t *loop)
{
    memset(s, 0, sizeof *s);
    s->loop = loop;
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(uv_tcp_bind(&s->listener, (const struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->listener, 128, taccept), 0);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len);
    s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void tsrv_stop(tsrv_t *s)
{
    for (tconn_t *k = s->conns; k; k = k->next) tconn_close(k);
    uv_close((uv_handle_t *)&s->listener, NULL);
}

/* ---- fixture ----------------------------------------------------------------------------- */

typedef struct {
    uv_loop_t loop;
    tsrv_t srv;
    sp_http_client_t *c;
    char base[64];
    bool closed;
} fx_t;

typedef struct {
    bool done;
    int calls;
    int status;
    char why[256];
    char body[65536];
    size_t body_len;
    char xtest[64];
} res_t;

static void on_resp(void *ud, int status, const char *why, const sp_http_resp_t *resp)
{
    res_t *r = ud;
    r->calls++;
    r->done = true;
    r->status = status;
    assert_non_null(resp);
    assert_non_null(resp->body);
    if (status < 0) {
        assert_non_null(why);
        snprintf(r->why, sizeof r->why, "%s", why);
    } else {
        assert_null(why);
    }
    r->body_len = resp->body_len;
    memcpy(r->body, resp->body, SP_MIN(resp->body_len, sizeof r->body - 1));
    r->body[SP_MIN(resp->body_len, sizeof r->body - 1)] = '\0';
    for (size_t i = 0; i < resp->nheaders; i++) {
        const sp_http_header_t *h = &resp->headers[i];
        if (h->name_len == 6 && strncasecmp(h->name, "x-test", 6) == 0) {
            snprintf(r->xtest, sizeof r->xtest, "%.*s", (int)h->value_len, h->value);
        }
    }
}

static void watchdog_fired(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

/* Runs the loop until *flag is set, at most 10 s. */
static void run_until(uv_loop_t *loop, const bool *flag)
{
    bool expired = false;
    uv_timer_t wd;
    uv_timer_init(loop, &wd);
    wd.data = &expired;
    uv_timer_start(&wd, watchdog_fired, 10000, 0);
    while (!*flag && !expired) uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&wd, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    if (!*flag) fail_msg("timed out waiting for the loop");
}

static int setup_opts(void **state, const sp_http_client_opts_t *o)
{
    fx_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    tsrv_start(&f->srv, &f->loop);
    snprintf(f->base, sizeof f->base, "http://127.0.0.1:%d", f->srv.port);
    char err[256];
    assert_int_equal(sp_http_client_new(&f->loop, f->base, o, &f->c, err, sizeof err), 0);
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_opts(state, NULL);
}

static void client_done(void *ud)
{
    ((fx_t *)ud)->closed = true;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    if (f->c) {
        sp_http_client_close(f->c, client_done, f);
        run_until(&f->loop, &f->closed);
    }
    tsrv_stop(&f->srv);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    /* Nothing of the client may be left on the loop. */
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

static void get(fx_t *f, const char *target, uint64_t timeout_ms, res_t *r)
{
    memset(r, 0, sizeof *r);
    assert_non_null(
        sp_http_client_request(f->c, "GET", target, NULL, NULL, 0, timeout_ms, on_resp, r));
    run_until(&f->loop, &r->done);
    assert_int_equal(r->calls, 1);
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_keepalive_reuse(void **state)
{
    fx_t *f = *state;
    res_t r;
    for (int i = 0; i < 5; i++) {
        get(f, "/cl", 0, &r);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "hello");
        assert_string_equal(r.xtest, "spaced");
    }
    assert_int_equal(f->srv.accepted, 1);
    assert_int_equal(sp_http_client_connects(f->c), 1);
    assert_int_equal(sp_http_client_pending(f->c), 0);
}

static void test_chunked_and_until_close(void **state)
{
    fx_t *f = *state;
    res_t r;
    get(f, "/chunked", 0, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello world");
    get(f, "/bigchunk", 0, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 4 * 8192);
    get(f, "/eof", 0, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "until close");
    /* The chunked connection was kept; the until-close one could not be. */
    get(f, "/cl", 0, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(f->srv.accepted, 2);
}

static void test_connection_close_honoured(void **state)
{
    fx_t *f = *state;
    res_t r;
    get(f, "/close", 0, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok");
    get(f, "/close", 0, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(sp_http_client_connects(f->c), 2);
}

static void test_post_body_and_status(void **state)
{
    fx_t *f = *state;
    res_t r = {0};
    static const char body[] = "{\"a\":[1,2,3]}";
    assert_non_null(sp_http_client_request(f->c, "POST", "/echo",
                                           "Content-Type: application/json\r\n", body,
                                           sizeof body - 1, 0, on_resp, &r));
    run_until(&f->loop, &r.done);
    assert_int_equal(r.status, 201);
    assert_string_equal(r.body, body);
    /* An empty POST still says Content-Length: 0 (else the server would wait for a body). */
    memset(&r, 0, sizeof r);
    assert_non_null(sp_http_client_request(f->c, "POST", "/echo", NULL, NULL, 0, 0, on_resp, &r));
    run_until(&f->loop, &r.done);
    assert_int_equal(r.status, 201);
    assert_int_equal(r.body_len, 0);
    get(f, "/status404", 0, &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(r.body, "nah");
}

static void test_timeout(void **state)
{
    fx_t *f = *state;
    res_t r;
    get(f, "/never", 200, &r);
    assert_int_equal(r.status, UV_ETIMEDOUT);
    assert_non_null(strstr(r.why, "timed out"));
    /* The client carries on: a fresh connection serves the next request. */
    get(f, "/cl", 0, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(sp_http_client_connects(f->c), 2);
}

static void test_connection_refused(void **state)
{
    fx_t *f = *state;
    /* A port that nothing listens on: bind one, learn it, close it. */
    uv_tcp_t t;
    uv_tcp_init(&f->loop, &t);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(uv_tcp_bind(&t, (const struct sockaddr *)&a, 0), 0);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    uv_tcp_getsockname(&t, (struct sockaddr *)&ss, &len);
    int port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);

    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/x", port);
    res_t r;
    get(f, url, 2000, &r);
    assert_int_equal(r.status, UV_ECONNREFUSED);
    assert_non_null(strstr(r.why, "connect to 127.0.0.1:"));
}

static void test_cancel(void **state)
{
    fx_t *f = *state;
    res_t never = {0}, r;
    sp_http_call_t *call =
        sp_http_client_request(f->c, "GET", "/never", NULL, NULL, 0, 300, on_resp, &never);
    assert_non_null(call);
    /* Let it reach the server, then drop it. */
    res_t other;
    get(f, "/cl", 0, &other);
    assert_int_equal(other.status, 200);
    sp_http_client_cancel(call);
    assert_int_equal(sp_http_client_pending(f->c), 0);
    /* Well past its own timeout, its callback has still not run. */
    get(f, "/never", 600, &r);
    assert_int_equal(r.status, UV_ETIMEDOUT);
    assert_int_equal(never.calls, 0);

    /* A request canceled before it was sent. */
    memset(&never, 0, sizeof never);
    call = sp_http_client_request(f->c, "GET", "/cl", NULL, NULL, 0, 0, on_resp, &never);
    assert_non_null(call);
    sp_http_client_cancel(call);
    get(f, "/cl", 0, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(never.calls, 0);
}

static void test_stale_connection_retried(void **state)
{
    fx_t *f = *state;
    f->srv.drop_reused = true;
    res_t r;
    get(f, "/cl", 0, &r);
    assert_int_equal(r.status, 200);
    /* The kept connection is dropped by the server at the next request: sent again once. */
    get(f, "/cl", 0, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello");
    assert_int_equal(sp_http_client_connects(f->c), 2);
}

static void test_bad_answers(void **state)
{
    fx_t *f = *state;
    res_t r;
    get(f, "/bad", 0, &r);
    assert_int_equal(r.status, UV_EPROTO);
    assert_non_null(strstr(r.why, "malformed answer"));
    get(f, "/drop", 0, &r);
    assert_true(r.status < 0);
    get(f, "/cl", 0, &r);
    assert_int_equal(r.status, 200);
}

static int setup_small(void **state)
{
    sp_http_client_opts_t o;
    sp_http_client_opts_default(&o);
    o.max_response = 16384;
    o.max_conns = 3;
    return setup_opts(state, &o);
}

static void test_size_cap(void **state)
{
    fx_t *f = *state;
    res_t r;
    get(f, "/big", 0, &r);
    assert_int_equal(r.status, UV_E2BIG);
    get(f, "/bigchunk", 0, &r);
    assert_int_equal(r.status, UV_E2BIG);
    get(f, "/chunked", 0, &r);
    assert_int_equal(r.status, 200);
}

static void test_many_at_once_capped(void **state)
{
    fx_t *f = *state;
    enum { N = 40 };
    static res_t rs[N];
    memset(rs, 0, sizeof rs);
    assert_non_null(rs);
    for (int i = 0; i < N; i++) {
        assert_non_null(sp_http_client_request(f->c, "GET", i % 2 ? "/cl" : "/chunked", NULL, NULL,
                                               0, 0, on_resp, &rs[i]));
    }
    for (int i = 0; i < N; i++) {
        run_until(&f->loop, &rs[i].done);
        assert_int_equal(rs[i].status, 200);
        assert_string_equal(rs[i].body, i % 2 ? "hello" : "hello world");
    }
    /* At most max_conns (3) connections, each serving many requests. */
    assert_true(sp_http_client_connects(f->c) <= 3);
    assert_int_equal(f->srv.requests, N);
}

static void flag_set(void *ud)
{
    *(bool *)ud = true;
}

static void test_urls(void **state)
{
    fx_t *f = *state;
    char err[256];
    sp_http_client_t *c2 = NULL;
    assert_int_equal(
        sp_http_client_new(&f->loop, "https://127.0.0.1:1", NULL, &c2, err, sizeof err), SP_EINVAL);
    assert_non_null(strstr(err, "no TLS"));
    assert_int_equal(sp_http_client_new(&f->loop, "127.0.0.1:80", NULL, &c2, err, sizeof err),
                     SP_EINVAL);
    assert_int_equal(sp_http_client_new(&f->loop, "http://h:99999", NULL, &c2, err, sizeof err),
                     SP_EINVAL);

    /* A client without a base URL takes absolute URLs only. */
    assert_int_equal(sp_http_client_new(&f->loop, NULL, NULL, &c2, err, sizeof err), 0);
    res_t r = {0};
    char url[96];
    snprintf(url, sizeof url, "http://localhost:%d/cl", f->srv.port);
    assert_non_null(sp_http_client_request(c2, "GET", url, NULL, NULL, 0, 0, on_resp, &r));
    run_until(&f->loop, &r.done);
    /* A name is looked up (IPv4 preferred: the test server listens on 127.0.0.1). */
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello");
    memset(&r, 0, sizeof r);
    assert_non_null(sp_http_client_request(c2, "GET", "/cl", NULL, NULL, 0, 0, on_resp, &r));
    run_until(&f->loop, &r.done);
    assert_int_equal(r.status, UV_EINVAL);
    memset(&r, 0, sizeof r);
    assert_non_null(
        sp_http_client_request(c2, "GET", "https://127.0.0.1/x", NULL, NULL, 0, 0, on_resp, &r));
    run_until(&f->loop, &r.done);
    assert_int_equal(r.status, UV_EINVAL);
    assert_non_null(strstr(r.why, "no TLS"));
    memset(&r, 0, sizeof r);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/chunked", f->srv.port);
    assert_non_null(sp_http_client_request(c2, "GET", url, NULL, NULL, 0, 0, on_resp, &r));
    run_until(&f->loop, &r.done);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello world");
    bool closed = false;
    sp_http_client_close(c2, flag_set, &closed);
    run_until(&f->loop, &closed);
}

static void reenter_cb(void *ud, int status, const char *why, const sp_http_resp_t *resp)
{
    fx_t *f = ud;
    (void)why;
    (void)resp;
    assert_int_equal(status, UV_ECANCELED);
    /* A closing client takes no new request. */
    assert_null(sp_http_client_request(f->c, "GET", "/cl", NULL, NULL, 0, 0, on_resp, NULL));
}

static void test_close_with_pending(void **state)
{
    fx_t *f = *state;
    res_t a = {0}, b = {0};
    assert_non_null(sp_http_client_request(f->c, "GET", "/never", NULL, NULL, 0, 0, on_resp, &a));
    assert_non_null(sp_http_client_request(f->c, "GET", "/never", NULL, NULL, 0, 0, on_resp, &b));
    assert_non_null(sp_http_client_request(f->c, "GET", "/never", NULL, NULL, 0, 0, reenter_cb, f));
    /* Let them reach the server (its request count tells), with a bound. */
    for (int i = 0; i < 1000 && f->srv.requests < 3; i++) uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(f->srv.requests, 3);
    sp_http_client_close(f->c, client_done, f);
    assert_true(a.done && b.done);
    assert_int_equal(a.status, UV_ECANCELED);
    assert_int_equal(b.status, UV_ECANCELED);
    run_until(&f->loop, &f->closed);
    f->c = NULL; /* teardown checks the loop closes with nothing left */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_keepalive_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunked_and_until_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_close_honoured, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_body_and_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_connection_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_answers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_size_cap, setup_small, teardown),
        cmocka_unit_test_setup_teardown(test_many_at_once_capped, setup_small, teardown),
        cmocka_unit_test_setup_teardown(test_urls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_with_pending, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
