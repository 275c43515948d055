/*
 * test_http_wire.c - black-box tests of spool-server's HTTP/1.1 layer over raw sockets:
 * keep-alive, pipelining, HTTP/1.0, Expect: 100-continue, chunked bodies, framing errors and
 * limits, slow and vanishing clients, many connections, HEAD, and the headers every answer has.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/spt.h"

/* How many connections the many-connections test opens, and the descriptor hard limit below
 * which it is skipped: the test process and the server each need one per connection. */
#ifndef WIRE_CONNS
#define WIRE_CONNS 10000
#endif
#ifndef WIRE_NOFILE_NEED
#define WIRE_NOFILE_NEED (WIRE_CONNS + 1000) /* per process: the server raises its own */
#endif

/* ---- server and socket bookkeeping ------------------------------------------------------- */

/* The server a test started and the sockets it opened, so that the teardown can clean up
 * after a failed assertion. */
static spt_proc_t g_srv;
static bool g_srv_live;
static int *g_fds;
static size_t g_nfds, g_capfds;

static int start(const char *const *args)
{
    if (spt_server_start(&g_srv, args) != 0)
        fail_msg("spool-server did not start (%s)", spt_bin("spool-server"));
    g_srv_live = true;
    return g_srv.port;
}

static void stop_ok(void)
{
    int rc = spt_stop(&g_srv);
    g_srv_live = false;
    assert_int_equal(rc, 0);
}

static void track(int fd)
{
    if (g_nfds == g_capfds) {
        size_t cap = g_capfds ? g_capfds * 2 : 64;
        int *n = realloc(g_fds, cap * sizeof(*n));
        assert_non_null(n);
        g_fds = n;
        g_capfds = cap;
    }
    g_fds[g_nfds++] = fd;
}

static int conn(int port)
{
    int fd = spt_connect(port);
    if (fd < 0) fail_msg("connect to 127.0.0.1:%d: %s", port, strerror(errno));
    track(fd);
    return fd;
}

static void conn_close(int fd)
{
    for (size_t i = g_nfds; i-- > 0;) {
        if (g_fds[i] != fd) continue;
        g_fds[i] = g_fds[--g_nfds];
        break;
    }
    spt_close(fd);
}

static void conn_close_all(void)
{
    for (size_t i = 0; i < g_nfds; i++) spt_close(g_fds[i]);
    g_nfds = 0;
}

static int teardown(void **state)
{
    (void)state;
    conn_close_all();
    free(g_fds);
    g_fds = NULL;
    g_capfds = 0;
    if (g_srv_live) (void)spt_stop(&g_srv);
    g_srv_live = false;
    return 0;
}

/* ---- requests and answers ---------------------------------------------------------------- */

static void send_all(int fd, const void *data, size_t len)
{
    if (spt_send(fd, data, len) != 0) fail_msg("send: %s", strerror(errno));
}

static void send_str(int fd, const char *s)
{
    send_all(fd, s, strlen(s));
}

/* Appends one request to buf (cap bytes at *len); body may be NULL. */
static void add_request(char *buf, size_t cap, size_t *len, const char *method, const char *target,
                        const char *body)
{
    int n;
    if (body)
        n = snprintf(buf + *len, cap - *len,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     method, target, strlen(body), body);
    else
        n = snprintf(buf + *len, cap - *len, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", method,
                     target);
    assert_true(n > 0 && (size_t)n < cap - *len);
    *len += (size_t)n;
}

/* Every answer says how long it is (Content-Length or chunked) and when it was made (Date). */
static void check_framing(const spt_resp_t *r, bool head)
{
    if (r->status < 200) return;
    const char *date = spt_header(r, "Date");
    if (!date) print_message("no Date in:\n%s\n", r->head);
    assert_non_null(date);
    assert_non_null(strstr(date, "GMT"));
    const char *te = spt_header(r, "Transfer-Encoding");
    bool chunked = te && strstr(te, "chunked");
    const char *cl = spt_header(r, "Content-Length");
    if (!cl && !chunked) print_message("no Content-Length in:\n%s\n", r->head);
    assert_true(cl || chunked);
    if (cl && !head) {
        char *end;
        unsigned long long n = strtoull(cl, &end, 10);
        assert_true(end != cl && *end == '\0');
        assert_int_equal(n, r->body_len);
    }
}

/* Sends one request on fd and reads its answer into r. */
static void exchange(int fd, const char *method, const char *target, const char *body,
                     spt_resp_t *r)
{
    char buf[4096];
    size_t len = 0;
    add_request(buf, sizeof(buf), &len, method, target, body);
    send_all(fd, buf, len);
    bool head = strcmp(method, "HEAD") == 0;
    if (spt_read_response(fd, r, head) != 0) fail_msg("no answer to %s %s", method, target);
    check_framing(r, head);
}

static void expect_status(int fd, const char *method, const char *target, const char *body,
                          int status)
{
    spt_resp_t r;
    exchange(fd, method, target, body, &r);
    if (r.status != status)
        print_message("%s %s: expected %d, got %d %s\n", method, target, status, r.status,
                      r.body ? r.body : "");
    assert_int_equal(r.status, status);
    spt_resp_free(&r);
}

/* Reads the answer to a request the server cannot take; it must say so and close. */
static void expect_refusal(int fd, int status)
{
    spt_resp_t r;
    if (spt_read_response(fd, &r, false) != 0) fail_msg("no answer; expected %d", status);
    if (r.status != status) print_message("expected %d, got:\n%s\n%s\n", status, r.head, r.body);
    assert_int_equal(r.status, status);
    check_framing(&r, false);
    /* An HTTP-layer error is still a JSON error object. */
    assert_true(strlen(spt_error_code(&r)) > 0);
    spt_resp_free(&r);
}

static void expect_closed(int fd)
{
    assert_true(spt_closed(fd, 5000));
}

/* The request on a fresh connection, answered with status, then the connection closed. */
static void expect_refused_raw(int port, const void *raw, size_t len, int status, bool closes)
{
    int fd = conn(port);
    /* A server that refuses early may close before reading everything; its answer stays
     * readable, so a failed send is not the end. */
    (void)spt_send(fd, raw, len);
    expect_refusal(fd, status);
    if (closes) expect_closed(fd);
    conn_close(fd);
}

/* ---- keep-alive and pipelining ----------------------------------------------------------- */

static void test_keep_alive_100_requests(void **state)
{
    (void)state;
    int port = start(NULL);
    int fd = conn(port);
    for (int i = 0; i < 100; i++) {
        spt_resp_t r;
        if (i % 10 == 9) {
            char body[128];
            snprintf(body, sizeof(body), "{\"type\":\"noop\",\"payload\":%d}", i);
            exchange(fd, "POST", "/v1/queues/ka/jobs", body, &r);
            assert_int_equal(r.status, 201);
        } else {
            exchange(fd, "GET", "/healthz", NULL, &r);
            assert_int_equal(r.status, 200);
            assert_string_equal(r.body, "ok");
        }
        spt_resp_free(&r);
    }
    /* The same connection still works: nothing closed it along the way. */
    expect_status(fd, "GET", "/v1/queues/ka", NULL, 200);
    conn_close(fd);
    stop_ok();
}

#define PIPE_N 10

static void test_pipelining_answers_in_order(void **state)
{
    (void)state;
    int port = start(NULL);
    int fd = conn(port);
    char buf[8192];
    size_t len = 0;

    /* Submissions with distinct payloads interleaved with GETs, all in one send. */
    for (int i = 0; i < PIPE_N; i++) {
        char body[128];
        snprintf(body, sizeof(body), "{\"type\":\"echo\",\"payload\":{\"n\":%d}}", i);
        add_request(buf, sizeof(buf), &len, "POST", "/v1/queues/pipe/jobs", body);
        add_request(buf, sizeof(buf), &len, "GET", "/healthz", NULL);
    }
    send_all(fd, buf, len);
    char ids[PIPE_N][128];
    for (int i = 0; i < PIPE_N; i++) {
        spt_resp_t r;
        assert_int_equal(spt_read_response(fd, &r, false), 0);
        check_framing(&r, false);
        assert_int_equal(r.status, 201);
        const char *id = spt_jstr(r.json, "id");
        assert_non_null(id);
        snprintf(ids[i], sizeof(ids[i]), "%s", id);
        spt_resp_free(&r);
        assert_int_equal(spt_read_response(fd, &r, false), 0);
        check_framing(&r, false);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "ok");
        spt_resp_free(&r);
    }

    /* Reading them back, forwards then backwards, in one send: each answer must be the job
     * asked for at that position, and that job must hold the payload of that submission. */
    len = 0;
    int order[2 * PIPE_N];
    for (int i = 0; i < 2 * PIPE_N; i++) {
        order[i] = i < PIPE_N ? i : 2 * PIPE_N - 1 - i;
        char target[256];
        snprintf(target, sizeof(target), "/v1/jobs/%s", ids[order[i]]);
        add_request(buf, sizeof(buf), &len, "GET", target, NULL);
    }
    send_all(fd, buf, len);
    for (int i = 0; i < 2 * PIPE_N; i++) {
        spt_resp_t r;
        assert_int_equal(spt_read_response(fd, &r, false), 0);
        check_framing(&r, false);
        assert_int_equal(r.status, 200);
        assert_string_equal(spt_jstr(r.json, "id"), ids[order[i]]);
        const cJSON *payload = cJSON_GetObjectItemCaseSensitive(r.json, "payload");
        assert_int_equal(spt_jint(payload, "n"), order[i]);
        spt_resp_free(&r);
    }
    conn_close(fd);
    stop_ok();
}

/* ---- HTTP/1.0 ----------------------------------------------------------------------------- */

static void test_http10_closes(void **state)
{
    (void)state;
    int port = start(NULL);
    int fd = conn(port);
    send_str(fd, "GET /healthz HTTP/1.0\r\n\r\n");
    spt_resp_t r;
    assert_int_equal(spt_read_response(fd, &r, false), 0);
    check_framing(&r, false);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok");
    spt_resp_free(&r);
    expect_closed(fd);
    conn_close(fd);
    stop_ok();
}

static void test_http10_keep_alive_stays_open(void **state)
{
    (void)state;
    int port = start(NULL);
    int fd = conn(port);
    static const char req[] = "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    for (int i = 0; i < 3; i++) {
        send_str(fd, req);
        spt_resp_t r;
        assert_int_equal(spt_read_response(fd, &r, false), 0);
        check_framing(&r, false);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "ok");
        /* An HTTP/1.0 client keeps the connection only when the answer says so. */
        const char *c = spt_header(&r, "Connection");
        if (!c || !strcasestr(c, "keep-alive")) print_message("answer:\n%s\n", r.head);
        assert_true(c && strcasestr(c, "keep-alive"));
        spt_resp_free(&r);
    }
    conn_close(fd);
    stop_ok();
}

/* ---- request bodies ---------------------------------------------------------------------- */

static void test_expect_100_continue(void **state)
{
    (void)state;
    int port = start(NULL);
    int fd = conn(port);
    static const char body[] = "{\"type\":\"echo\",\"payload\":\"continued\"}";
    char head[512];
    snprintf(head, sizeof(head),
             "POST /v1/queues/wire/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             "Content-Type: application/json\r\nContent-Length: %zu\r\n"
             "Expect: 100-continue\r\n\r\n",
             sizeof(body) - 1);
    send_str(fd, head);

    /* Nothing of the body is sent until the interim answer says to go on. */
    spt_resp_t r;
    assert_int_equal(spt_read_response(fd, &r, false), 0);
    if (r.status != 100) print_message("expected 100 Continue, got:\n%s\n", r.head);
    assert_int_equal(r.status, 100);
    assert_true(strncmp(r.head, "HTTP/1.1 100", 12) == 0);
    spt_resp_free(&r);

    send_str(fd, body);
    assert_int_equal(spt_read_response(fd, &r, false), 0);
    check_framing(&r, false);
    assert_int_equal(r.status, 201);
    char id[128];
    snprintf(id, sizeof(id), "%s", spt_jstr(r.json, "id"));
    spt_resp_free(&r);

    char target[256];
    snprintf(target, sizeof(target), "/v1/jobs/%s", id);
    exchange(fd, "GET", target, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(spt_jstr(r.json, "payload"), "continued");
    spt_resp_free(&r);
    conn_close(fd);
    stop_ok();
}

static void test_expect_over_max_body_gets_413(void **state)
{
    (void)state;
    const char *const args[] = {"--max-body", "1k", NULL};
    int port = start(args);
    int fd = conn(port);
    send_str(fd, "POST /v1/queues/wire/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Content-Type: application/json\r\nContent-Length: 5000\r\n"
                 "Expect: 100-continue\r\n\r\n");
    /* The first answer is the refusal: no 100 invites a body that would be refused. */
    spt_resp_t r;
    assert_int_equal(spt_read_response(fd, &r, false), 0);
    if (r.status != 413) print_message("expected 413, got:\n%s\n", r.head);
    assert_int_equal(r.status, 413);
    check_framing(&r, false);
    spt_resp_free(&r);
    conn_close(fd);

    /* The server is fine afterwards. */
    fd = conn(port);
    expect_status(fd, "GET", "/healthz", NULL, 200);
    conn_close(fd);
    stop_ok();
}

static void test_chunked_request_body(void **state)
{
    (void)state;
    int port = start(NULL);
    int fd = conn(port);
    /* {"type":"echo","payload":{"s":"hello, chunked world","n":[1,2,3]}} in four chunks, one
     * with an upper-case size and one with a chunk extension. */
    static const char req[] = "POST /v1/queues/wire/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              "Content-Type: application/json\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n"
                              "f\r\n{\"type\":\"echo\",\r\n"
                              "B\r\n\"payload\":{\r\n"
                              "1b;ext=1\r\n\"s\":\"hello, chunked world\",\r\n"
                              "d\r\n\"n\":[1,2,3]}}\r\n"
                              "0\r\n\r\n";
    send_str(fd, req);
    spt_resp_t r;
    assert_int_equal(spt_read_response(fd, &r, false), 0);
    check_framing(&r, false);
    if (r.status != 201) print_message("got %d %s\n", r.status, r.body);
    assert_int_equal(r.status, 201);
    char id[128];
    snprintf(id, sizeof(id), "%s", spt_jstr(r.json, "id"));
    spt_resp_free(&r);

    char target[256];
    snprintf(target, sizeof(target), "/v1/jobs/%s", id);
    exchange(fd, "GET", target, NULL, &r);
    assert_int_equal(r.status, 200);
    const cJSON *payload = cJSON_GetObjectItemCaseSensitive(r.json, "payload");
    assert_string_equal(spt_jstr(payload, "s"), "hello, chunked world");
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(payload, "n");
    assert_int_equal(cJSON_GetArraySize(n), 3);
    spt_resp_free(&r);

    /* The chunked request left the connection in step for the next one. */
    expect_status(fd, "GET", "/healthz", NULL, 200);
    conn_close(fd);
    stop_ok();
}

/* ---- framing errors and limits ----------------------------------------------------------- */

static void test_content_length_with_transfer_encoding(void **state)
{
    (void)state;
    int port = start(NULL);
    static const char req[] = "POST /v1/queues/wire/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              "Content-Type: application/json\r\nContent-Length: 5\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    int fd = conn(port);
    send_str(fd, req);
    spt_resp_t r;
    assert_int_equal(spt_read_response(fd, &r, false), 0);
    check_framing(&r, false);
    assert_int_equal(r.status, 400);
    const char *c = spt_header(&r, "Connection");
    assert_true(c && strcasestr(c, "close"));
    spt_resp_free(&r);
    expect_closed(fd);
    conn_close(fd);
    stop_ok();
}

static void test_transfer_encoding_gzip_501(void **state)
{
    (void)state;
    int port = start(NULL);
    static const char req[] = "POST /v1/queues/wire/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              "Content-Type: application/json\r\n"
                              "Transfer-Encoding: gzip\r\n\r\nxxxxxxxx";
    /* The body cannot be framed, so the connection cannot go on either. */
    expect_refused_raw(port, req, sizeof(req) - 1, 501, true);
    stop_ok();
}

static void test_http_version_505(void **state)
{
    (void)state;
    int port = start(NULL);
    static const char *const reqs[] = {
        "GET /healthz HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n",
        "GET /healthz HTTP/1.2\r\nHost: 127.0.0.1\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++)
        expect_refused_raw(port, reqs[i], strlen(reqs[i]), 505, false);
    stop_ok();
}

static void test_long_target_414(void **state)
{
    (void)state;
    int port = start(NULL);
    size_t pad = 10 * 1024;
    size_t cap = pad + 256;
    char *req = malloc(cap);
    assert_non_null(req);
    size_t len = (size_t)snprintf(req, cap, "GET /healthz?pad=");
    memset(req + len, 'a', pad);
    len += pad;
    len += (size_t)snprintf(req + len, cap - len, " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    expect_refused_raw(port, req, len, 414, false);
    free(req);

    /* A target just under the limit is fine (the health check ignores its query). */
    int fd = conn(port);
    char target[4200];
    memcpy(target, "/healthz?pad=", 13);
    memset(target + 13, 'b', 4000);
    target[4013] = '\0';
    expect_status(fd, "GET", target, NULL, 200);
    conn_close(fd);
    stop_ok();
}

static void test_huge_headers_431(void **state)
{
    (void)state;
    int port = start(NULL);
    size_t nheaders = 70, each = 1024;
    size_t cap = nheaders * (each + 32) + 256;
    char *req = malloc(cap);
    assert_non_null(req);
    size_t len = (size_t)snprintf(req, cap, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (size_t i = 0; i < nheaders; i++) {
        len += (size_t)snprintf(req + len, cap - len, "X-Pad-%02zu: ", i);
        memset(req + len, 'h', each);
        len += each;
        memcpy(req + len, "\r\n", 2);
        len += 2;
    }
    memcpy(req + len, "\r\n", 2);
    len += 2;
    expect_refused_raw(port, req, len, 431, false);
    free(req);
    stop_ok();
}

static void test_garbage_400_and_close(void **state)
{
    (void)state;
    int port = start(NULL);
    /* The first bytes of a TLS ClientHello, then junk: not HTTP at all. */
    static const char junk[] =
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\xff\xfe\r\n\r\n";
    expect_refused_raw(port, junk, sizeof(junk) - 1, 400, true);
    static const char junk2[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n";
    expect_refused_raw(port, junk2, sizeof(junk2) - 1, 400, true);
    static const char junk3[] = "POST /v1/queues/wire/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n";
    expect_refused_raw(port, junk3, sizeof(junk3) - 1, 400, true);

    int fd = conn(port);
    expect_status(fd, "GET", "/healthz", NULL, 200);
    conn_close(fd);
    stop_ok();
}

/* ---- slow, vanishing and many clients ---------------------------------------------------- */

static void test_slow_client_does_not_delay_others(void **state)
{
    (void)state;
    int port = start(NULL);
    int slow = conn(port);
    send_str(slow, "GET /heal");
    long long t_slow = spt_now_ms();

    int fd = conn(port);
    long long t0 = spt_now_ms();
    for (int i = 0; i < 50; i++) {
        spt_resp_t r;
        exchange(fd, "GET", "/healthz", NULL, &r);
        assert_int_equal(r.status, 200);
        spt_resp_free(&r);
    }
    long long took = spt_now_ms() - t0;
    print_message("50 requests beside a stalled client took %lld ms\n", took);
    /* The header timeout is 10 s: a server that waited on the slow client would take that. */
    assert_true(took < 8000);
    conn_close(fd);

    /* The stalled request is eventually ended: 408 and close, or just close (bounded 15 s by
     * the socket's read timeout). */
    spt_resp_t r;
    int rc = spt_read_response(slow, &r, false);
    if (rc == 0) {
        print_message("stalled client answered %d after %lld ms\n", r.status,
                      spt_now_ms() - t_slow);
        assert_int_equal(r.status, 408);
        check_framing(&r, false);
        spt_resp_free(&r);
    }
    assert_true(spt_closed(slow, 2000));
    print_message("stalled client closed after %lld ms\n", spt_now_ms() - t_slow);
    assert_true(spt_now_ms() - t_slow < 17000);
    conn_close(slow);
    stop_ok();
}

static void test_many_connections(void **state)
{
    (void)state;
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rlim_t need = (rlim_t)WIRE_NOFILE_NEED;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
        print_message("skipped: RLIMIT_NOFILE hard limit %llu is under %llu\n",
                      (unsigned long long)rl.rlim_max, (unsigned long long)need);
        skip();
    }
    /* Raised before the server starts, so that it inherits the same limit. */
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        rl.rlim_cur =
            rl.rlim_max == RLIM_INFINITY || rl.rlim_max > 4 * need ? 4 * need : rl.rlim_max;
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }

    int port = start(NULL);
    long long t0 = spt_now_ms();
    for (int i = 0; i < WIRE_CONNS; i++) {
        int fd = spt_connect(port);
        if (fd < 0) fail_msg("connection %d of %d: %s", i + 1, WIRE_CONNS, strerror(errno));
        track(fd);
    }
    print_message("%d connections open after %lld ms\n", WIRE_CONNS, spt_now_ms() - t0);

    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    for (size_t i = 0; i < g_nfds; i++) send_all(g_fds[i], req, sizeof(req) - 1);
    for (size_t i = 0; i < g_nfds; i++) {
        spt_resp_t r;
        if (spt_read_response(g_fds[i], &r, false) != 0)
            fail_msg("no answer on connection %zu of %d", i + 1, WIRE_CONNS);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "ok");
        spt_resp_free(&r);
    }
    print_message("%d answers after %lld ms\n", WIRE_CONNS, spt_now_ms() - t0);
    conn_close_all();

    /* Still serving once they are gone. */
    int fd = conn(port);
    expect_status(fd, "GET", "/healthz", NULL, 200);
    conn_close(fd);
    stop_ok();
}

static void abandon(int port, const char *raw, bool reset)
{
    int fd = conn(port);
    send_str(fd, raw);
    if (reset) {
        /* Closing with a zero linger sends a reset instead of a FIN. */
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    conn_close(fd);
}

static void test_client_gone_mid_body(void **state)
{
    (void)state;
    int port = start(NULL);
    static const char *const partial[] = {
        /* mid body */
        "POST /v1/queues/wire/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"type\":\"noop\",",
        /* mid chunk */
        "POST /v1/queues/wire/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n{\"ty",
        /* mid headers */
        "POST /v1/queues/wire/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le",
        /* a long poll left waiting */
        "POST /v1/lease HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 31\r\n\r\n{\"queues\":[\"x\"],\"wait_ms\":2000}",
    };
    for (int round = 0; round < 10; round++)
        for (size_t i = 0; i < sizeof(partial) / sizeof(partial[0]); i++)
            abandon(port, partial[i], round % 2 == 1);

    /* The server keeps answering, and nothing half-sent became a job. */
    int fd = conn(port);
    expect_status(fd, "GET", "/healthz", NULL, 200);
    expect_status(fd, "GET", "/v1/queues/wire", NULL, 404);
    expect_status(fd, "POST", "/v1/queues/wire/jobs", "{\"type\":\"noop\"}", 201);
    conn_close(fd);
    stop_ok();
}

/* ---- HEAD and the headers of every answer ------------------------------------------------ */

static void test_head_has_length_no_body(void **state)
{
    (void)state;
    int port = start(NULL);
    int fd = conn(port);
    static const char *const targets[] = {"/healthz", "/v1/queues"};
    for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
        spt_resp_t r;
        exchange(fd, "HEAD", targets[i], NULL, &r);
        assert_int_equal(r.status, 200);
        assert_non_null(spt_header(&r, "Content-Length"));
        assert_int_equal(r.body_len, 0);
        spt_resp_free(&r);
        /* Had a body followed the HEAD answer, it would now be read as this answer's start. */
        exchange(fd, "GET", "/healthz", NULL, &r);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "ok");
        spt_resp_free(&r);
    }
    /* HEAD /healthz says the length a GET would have. */
    spt_resp_t r;
    exchange(fd, "HEAD", "/healthz", NULL, &r);
    assert_non_null(spt_header(&r, "Content-Length"));
    assert_string_equal(spt_header(&r, "Content-Length"), "2");
    spt_resp_free(&r);
    assert_false(spt_closed(fd, 200));
    conn_close(fd);
    stop_ok();
}

static void test_every_answer_has_length_and_date(void **state)
{
    (void)state;
    int port = start(NULL);
    static const struct {
        const char *method, *target, *body;
        int status;
    } cases[] = {
        {"GET", "/healthz", NULL, 200},
        {"GET", "/readyz", NULL, 200},
        {"POST", "/v1/queues/hdr/jobs", "{\"type\":\"noop\"}", 201},
        {"GET", "/v1/queues", NULL, 200},
        {"GET", "/v1/queues/hdr", NULL, 200},
        {"GET", "/v1/queues/never-seen", NULL, 404},
        {"GET", "/v1/jobs/no-such-job", NULL, 404},
        {"GET", "/no/such/path", NULL, 404},
        {"PUT", "/v1/queues/hdr/jobs", "{}", 405},
        {"POST", "/v1/queues/hdr/jobs", "{not json", 400},
        {"POST", "/v1/queues/bad%20name/jobs", "{\"type\":\"noop\"}", 400},
    };
    int wrong = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        /* A fresh connection each, so that an error answer that closes does not matter. */
        int fd = conn(port);
        spt_resp_t r;
        exchange(fd, cases[i].method, cases[i].target, cases[i].body, &r);
        /* Every case is tried before failing, so that one report lists every wrong status. */
        if (r.status != cases[i].status) {
            print_message("%s %s: expected %d, got %d %s\n", cases[i].method, cases[i].target,
                          cases[i].status, r.status, r.body ? r.body : "");
            wrong++;
        }
        spt_resp_free(&r);
        conn_close(fd);
    }
    assert_int_equal(wrong, 0);
    /* 415 for a body that is not JSON. */
    int fd = conn(port);
    send_str(fd, "POST /v1/queues/hdr/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi");
    spt_resp_t r;
    assert_int_equal(spt_read_response(fd, &r, false), 0);
    check_framing(&r, false);
    assert_int_equal(r.status, 415);
    spt_resp_free(&r);
    conn_close(fd);
    stop_ok();
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_keep_alive_100_requests, teardown),
        cmocka_unit_test_teardown(test_pipelining_answers_in_order, teardown),
        cmocka_unit_test_teardown(test_http10_closes, teardown),
        cmocka_unit_test_teardown(test_http10_keep_alive_stays_open, teardown),
        cmocka_unit_test_teardown(test_expect_100_continue, teardown),
        cmocka_unit_test_teardown(test_expect_over_max_body_gets_413, teardown),
        cmocka_unit_test_teardown(test_chunked_request_body, teardown),
        cmocka_unit_test_teardown(test_content_length_with_transfer_encoding, teardown),
        cmocka_unit_test_teardown(test_transfer_encoding_gzip_501, teardown),
        cmocka_unit_test_teardown(test_http_version_505, teardown),
        cmocka_unit_test_teardown(test_long_target_414, teardown),
        cmocka_unit_test_teardown(test_huge_headers_431, teardown),
        cmocka_unit_test_teardown(test_garbage_400_and_close, teardown),
        cmocka_unit_test_teardown(test_slow_client_does_not_delay_others, teardown),
        cmocka_unit_test_teardown(test_many_connections, teardown),
        cmocka_unit_test_teardown(test_client_gone_mid_body, teardown),
        cmocka_unit_test_teardown(test_head_has_length_no_body, teardown),
        cmocka_unit_test_teardown(test_every_answer_has_length_and_date, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
