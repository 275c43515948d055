/*
 * test_events.c - GET /v1/events read with a raw socket and a small chunked + SSE parser:
 * counts at once and every second, job events on submission, lease and ack, the ?queue=
 * filter, bad parameters, and a reader that never reads being dropped while the server stays
 * responsive.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "support/spt.h"

#define WAIT_MS 10000

/* ---- a Server-Sent Events client --------------------------------------------------------- */

typedef struct {
    int fd;
    char *raw; /* bytes received, not yet de-chunked */
    size_t raw_len, raw_cap;
    char *body; /* de-chunked bytes, not yet split into events */
    size_t body_len, body_cap;
    size_t total; /* de-chunked bytes so far */
    bool ended;   /* the last chunk or the end of the connection was seen */
    int status;
} sse_t;

typedef struct {
    char name[32];
    char *data; /* the data lines joined; malloc'd */
    bool comment;
} sse_event_t;

static void grow(char **p, size_t *cap, size_t need)
{
    if (need <= *cap) return;
    size_t n = *cap ? *cap : 4096;
    while (n < need) n *= 2;
    *p = realloc(*p, n);
    assert_non_null(*p);
    *cap = n;
}

/* Reads more bytes, waiting at most until the deadline; false on timeout, EOF or error. */
static bool sse_fill(sse_t *s, long long deadline)
{
    long long left = deadline - spt_now_ms();
    if (left <= 0) return false;
    struct pollfd p = {.fd = s->fd, .events = POLLIN};
    int r = poll(&p, 1, (int)left);
    if (r <= 0) return false;
    grow(&s->raw, &s->raw_cap, s->raw_len + 65536);
    ssize_t n = recv(s->fd, s->raw + s->raw_len, 65536, 0);
    if (n <= 0) {
        s->ended = true;
        return false;
    }
    s->raw_len += (size_t)n;
    return true;
}

static void raw_consume(sse_t *s, size_t n)
{
    memmove(s->raw, s->raw + n, s->raw_len - n);
    s->raw_len -= n;
}

/* Moves whole chunks from raw to body. */
static void sse_dechunk(sse_t *s)
{
    for (;;) {
        char *crlf = s->raw_len ? memmem(s->raw, s->raw_len, "\r\n", 2) : NULL;
        if (!crlf) return;
        char *end;
        unsigned long size = strtoul(s->raw, &end, 16);
        if (end != crlf) fail_msg("bad chunk size line: %.*s", (int)(crlf - s->raw), s->raw);
        size_t head = (size_t)(crlf - s->raw) + 2;
        if (size == 0) {
            s->ended = true;
            raw_consume(s, head);
            return;
        }
        if (s->raw_len < head + size + 2) return;
        grow(&s->body, &s->body_cap, s->body_len + size + 1);
        memcpy(s->body + s->body_len, s->raw + head, size);
        s->body_len += size;
        s->total += size;
        s->body[s->body_len] = '\0';
        raw_consume(s, head + size + 2);
    }
}

/* Connects (with a receive buffer of rcvbuf bytes when > 0, set before connecting so that the
 * TCP window stays small) and sends GET target; reads the status line and headers. */
static void sse_open(sse_t *s, int port, const char *target, int rcvbuf)
{
    memset(s, 0, sizeof *s);
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->fd >= 0);
    if (rcvbuf > 0) setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(s->fd, (struct sockaddr *)&a, sizeof a), 0);
    char req[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", target);
    assert_int_equal(send(s->fd, req, (size_t)n, MSG_NOSIGNAL), n);
    long long deadline = spt_now_ms() + WAIT_MS;
    char *eoh;
    while (!(eoh = s->raw_len ? memmem(s->raw, s->raw_len, "\r\n\r\n", 4) : NULL))
        if (!sse_fill(s, deadline)) fail_msg("no answer head for GET %s", target);
    *eoh = '\0';
    assert_true(sscanf(s->raw, "HTTP/1.1 %d", &s->status) == 1);
    if (s->status == 200) {
        if (!strstr(s->raw, "text/event-stream")) fail_msg("not an event stream:\n%s", s->raw);
        if (!strstr(s->raw, "chunked")) fail_msg("not chunked:\n%s", s->raw);
    }
    raw_consume(s, (size_t)(eoh - s->raw) + 4);
}

static void sse_close(sse_t *s)
{
    close(s->fd);
    free(s->raw);
    free(s->body);
}

/* The next event or comment block; false when none came before the deadline or the stream
 * ended. */
static bool sse_next(sse_t *s, sse_event_t *ev, long long deadline)
{
    memset(ev, 0, sizeof *ev);
    for (;;) {
        sse_dechunk(s);
        char *end = s->body_len ? memmem(s->body, s->body_len, "\n\n", 2) : NULL;
        if (end) {
            size_t blen = (size_t)(end - s->body);
            char *block = strndup(s->body, blen);
            assert_non_null(block);
            memmove(s->body, end + 2, s->body_len - blen - 2);
            s->body_len -= blen + 2;
            sp_buf_t data = SP_BUF_INIT;
            char *save = NULL;
            for (char *line = strtok_r(block, "\n", &save); line;
                 line = strtok_r(NULL, "\n", &save)) {
                if (line[0] == ':')
                    ev->comment = true;
                else if (strncmp(line, "event: ", 7) == 0)
                    snprintf(ev->name, sizeof ev->name, "%s", line + 7);
                else if (strncmp(line, "data: ", 6) == 0) {
                    if (data.len) sp_buf_putc(&data, '\n');
                    sp_buf_puts(&data, line + 6);
                }
            }
            free(block);
            ev->data = data.len ? sp_buf_steal(&data, NULL) : strdup("");
            sp_buf_free(&data);
            return true;
        }
        if (s->ended || !sse_fill(s, deadline)) return false;
    }
}

/* Skips events until one named `name` whose data contains `part` (NULL: any); its data is
 * returned parsed (caller frees), or the test fails after WAIT_MS. Every event seen on the way
 * is checked against `never` (NULL: nothing), a text that must not appear. */
static cJSON *sse_expect(sse_t *s, const char *name, const char *part, const char *never)
{
    long long deadline = spt_now_ms() + WAIT_MS;
    sse_event_t ev;
    while (sse_next(s, &ev, deadline)) {
        if (never && strstr(ev.data, never)) fail_msg("unexpected %s in event %s", never, ev.data);
        if (strcmp(ev.name, name) == 0 && (!part || strstr(ev.data, part))) {
            cJSON *j = cJSON_Parse(ev.data);
            if (!j) fail_msg("event %s data is not JSON: %s", name, ev.data);
            free(ev.data);
            return j;
        }
        free(ev.data);
    }
    fail_msg("no event %s with %s within %d ms", name, part ? part : "anything", WAIT_MS);
    return NULL;
}

/* The job event of job `id` in state `state`. */
static void expect_job(sse_t *s, const char *id, const char *queue, const char *state, int attempts,
                       const char *never)
{
    char part[128];
    snprintf(part, sizeof part, "\"id\":\"%s\",", id);
    for (;;) {
        cJSON *j = sse_expect(s, "job", part, never);
        SPT_ASSERT_STR(spt_jstr(j, "queue"), queue);
        bool match = strcmp(spt_jstr(j, "state"), state) == 0;
        if (match) assert_int_equal(spt_jint(j, "attempts"), attempts);
        cJSON_Delete(j);
        if (match) return;
    }
}

/* A queue object in a counts event, or NULL. */
static const cJSON *counts_queue(const cJSON *counts, const char *name)
{
    const cJSON *q;
    cJSON_ArrayForEach(q, cJSON_GetObjectItemCaseSensitive(counts, "queues"))
    {
        if (strcmp(spt_jstr(q, "name"), name) == 0) return q;
    }
    return NULL;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_counts(void **state)
{
    (void)state;
    spt_proc_t p;
    SPT_START(p, NULL);
    assert_int_equal(spt_submit(p.port, "ca", "noop", "", NULL, 0), 201);
    assert_int_equal(spt_submit(p.port, "ca", "noop", "", NULL, 0), 201);
    sse_t s;
    sse_open(&s, p.port, "/v1/events", 0);
    assert_int_equal(s.status, 200);
    /* The first counts come at once, then one a second: three in a row prove the timer. */
    for (int i = 0; i < 3; i++) {
        cJSON *c = sse_expect(&s, "counts", NULL, NULL);
        const cJSON *q = counts_queue(c, "ca");
        assert_non_null(q);
        const cJSON *counts = cJSON_GetObjectItemCaseSensitive(q, "counts");
        assert_int_equal(spt_jint(counts, "queued"), 2);
        assert_non_null(cJSON_GetObjectItemCaseSensitive(q, "totals"));
        assert_non_null(cJSON_GetObjectItemCaseSensitive(q, "oldest_queued_age_ms"));
        cJSON_Delete(c);
    }
    /* Counts follow the queue. */
    assert_int_equal(spt_submit(p.port, "ca", "noop", "", NULL, 0), 201);
    for (;;) {
        cJSON *c = sse_expect(&s, "counts", NULL, NULL);
        const cJSON *counts = cJSON_GetObjectItemCaseSensitive(counts_queue(c, "ca"), "counts");
        long long queued = spt_jint(counts, "queued");
        cJSON_Delete(c);
        if (queued == 3) break;
        assert_int_equal(queued, 2);
    }
    sse_close(&s);
    SPT_STOP(p);
}

static void test_job_events(void **state)
{
    (void)state;
    spt_proc_t p;
    SPT_START(p, NULL);
    sse_t s;
    sse_open(&s, p.port, "/v1/events", 0);
    cJSON_Delete(sse_expect(&s, "counts", NULL, NULL));
    char id[64], lease[64], target[128], body[256];
    assert_int_equal(spt_submit(p.port, "ja", "noop", "", id, sizeof id), 201);
    expect_job(&s, id, "ja", "queued", 0, NULL);
    char lid[64];
    assert_int_equal(spt_lease_one(p.port, "ja", lid, sizeof lid, lease, sizeof lease), 1);
    assert_string_equal(lid, id);
    expect_job(&s, id, "ja", "running", 1, NULL);
    snprintf(target, sizeof target, "/v1/jobs/%s/ack", id);
    snprintf(body, sizeof body, "{\"lease\":\"%s\",\"result\":null}", lease);
    SPT_EXPECT(p.port, "POST", target, body, NULL, 200, NULL);
    expect_job(&s, id, "ja", "succeeded", 1, NULL);
    /* A delayed job, then its cancel. */
    assert_int_equal(spt_submit(p.port, "ja", "noop", ",\"delay_ms\":600000", id, sizeof id), 201);
    expect_job(&s, id, "ja", "scheduled", 0, NULL);
    snprintf(target, sizeof target, "/v1/jobs/%s", id);
    SPT_EXPECT(p.port, "DELETE", target, NULL, NULL, 200, NULL);
    expect_job(&s, id, "ja", "canceled", 0, NULL);
    sse_close(&s);
    SPT_STOP(p);
}

static void test_filter(void **state)
{
    (void)state;
    spt_proc_t p;
    SPT_START(p, NULL);
    assert_int_equal(spt_submit(p.port, "fb", "noop", "", NULL, 0), 201);
    sse_t s;
    sse_open(&s, p.port, "/v1/events?queue=fa", 0);
    /* A queue not seen yet: counts of nothing. */
    cJSON *c = sse_expect(&s, "counts", NULL, "\"fb\"");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(c, "queues")), 0);
    cJSON_Delete(c);
    char id[64];
    assert_int_equal(spt_submit(p.port, "fb", "noop", "", NULL, 0), 201);
    assert_int_equal(spt_submit(p.port, "fa", "noop", "", id, sizeof id), 201);
    /* fb's event was produced first: a stream that does not filter would show it first. */
    expect_job(&s, id, "fa", "queued", 0, "\"fb\"");
    c = sse_expect(&s, "counts", "\"fa\"", "\"fb\"");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(c, "queues")), 1);
    cJSON_Delete(c);
    sse_close(&s);

    /* The same stream unfiltered shows both. */
    sse_open(&s, p.port, "/v1/events", 0);
    c = sse_expect(&s, "counts", NULL, NULL);
    assert_non_null(counts_queue(c, "fa"));
    assert_non_null(counts_queue(c, "fb"));
    cJSON_Delete(c);
    sse_close(&s);
    SPT_STOP(p);
}

static void test_bad_requests(void **state)
{
    (void)state;
    spt_proc_t p;
    SPT_START(p, NULL);
    SPT_EXPECT(p.port, "GET", "/v1/events?bogus=1", NULL, NULL, 400, "bogus");
    SPT_EXPECT(p.port, "GET", "/v1/events?queue=a&queue=b", NULL, NULL, 400, "queue");
    SPT_EXPECT(p.port, "GET", "/v1/events?queue=no%20spaces", NULL, NULL, 400, "queue");
    SPT_EXPECT(p.port, "GET", "/v1/events?queue=", NULL, NULL, 400, "queue");
    SPT_EXPECT(p.port, "POST", "/v1/events", "{}", NULL, 405, NULL);
    /* A queue name of the longest valid length is a valid filter. */
    char target[256] = "/v1/events?queue=";
    size_t n = strlen(target);
    memset(target + n, 'q', 128);
    target[n + 128] = '\0';
    sse_t s;
    sse_open(&s, p.port, target, 0);
    assert_int_equal(s.status, 200);
    cJSON_Delete(sse_expect(&s, "counts", NULL, NULL));
    sse_close(&s);
    /* HEAD answers the head of the stream and ends. */
    const char head[] = "HEAD /v1/events HTTP/1.1\r\nHost: x\r\n\r\n";
    spt_resp_t r;
    assert_int_equal(spt_exchange(p.port, head, sizeof head - 1, true, &r), 0);
    assert_int_equal(r.status, 200);
    spt_resp_free(&r);
    SPT_STOP(p);
}

static void test_auth(void **state)
{
    (void)state;
    char path[] = "/tmp/spool-events-token-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "tok", 3), 3);
    close(fd);
    spt_proc_t p;
    SPT_START(p, "--token-file", path);
    SPT_EXPECT(p.port, "GET", "/v1/events", NULL, NULL, 401, NULL);
    int c = spt_connect(p.port);
    assert_true(c >= 0);
    const char req[] = "GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\n\r\n";
    assert_int_equal(spt_send(c, req, sizeof req - 1), 0);
    assert_true(spt_recv_until(c, "event: counts", WAIT_MS));
    spt_close(c);
    SPT_STOP(p);
    unlink(path);
}

/* A reader that never reads while far more events than the limit are produced: it is dropped
 * with a last `dropped` event, having been sent far less than was produced, and the server
 * answers other requests all along. */
static void test_slow_reader_dropped(void **state)
{
    (void)state;
    spt_proc_t p;
    SPT_START(p, NULL);
    char queue[129];
    memset(queue, 's', 128); /* long names make big events */
    queue[128] = '\0';
    char target[256];
    snprintf(target, sizeof target, "/v1/events?queue=%s", queue);
    sse_t s;
    sse_open(&s, p.port, target, 4096);
    assert_int_equal(s.status, 200);
    cJSON_Delete(sse_expect(&s, "counts", NULL, NULL));

    /* 12 batches of 10 000 jobs: one `queued` event of about 200 bytes each, 24 MB in all,
     * far past what the kernel's buffers and the 1 MiB limit hold. */
    enum { BATCHES = 12, PER_BATCH = 10000 };
    static const char job[] = "{\"type\":\"noop\"}";
    size_t cap = 16 + PER_BATCH * sizeof job;
    char *body = malloc(cap);
    assert_non_null(body);
    size_t len = (size_t)snprintf(body, cap, "{\"jobs\":[");
    for (int i = 0; i < PER_BATCH; i++) {
        memcpy(body + len, job, sizeof job - 1);
        len += sizeof job - 1;
        body[len++] = i + 1 < PER_BATCH ? ',' : ']';
    }
    body[len++] = '}';
    body[len] = '\0';
    char batch[256];
    snprintf(batch, sizeof batch, "/v1/queues/%s/batch", queue);
    for (int i = 0; i < BATCHES; i++) {
        spt_resp_t r = spt_do(p.port, "POST", batch, body, NULL);
        assert_int_equal(r.status, 201);
        spt_resp_free(&r);
        SPT_EXPECT(p.port, "GET", "/healthz", NULL, NULL, 200, NULL);
    }
    free(body);
    size_t produced = (size_t)BATCHES * PER_BATCH * 190;

    /* Now read: the stream holds what was sent before the drop, then `dropped`, then its end. */
    long long deadline = spt_now_ms() + 60000;
    sse_event_t ev;
    bool dropped = false;
    while (!dropped && sse_next(&s, &ev, deadline)) {
        dropped = strcmp(ev.name, "dropped") == 0;
        free(ev.data);
    }
    if (!dropped) fail_msg("no dropped event after %zu bytes", s.total);
    if (s.total > produced / 2)
        fail_msg("%zu bytes reached a reader that never read, of %zu produced", s.total, produced);
    print_message("a reader that never read got %zu bytes of about %zu produced\n", s.total,
                  produced);
    while (!s.ended && sse_fill(&s, deadline)) sse_dechunk(&s);
    assert_true(s.ended);
    sse_close(&s);

    /* Still serving, streams included. */
    SPT_EXPECT(p.port, "GET", "/healthz", NULL, NULL, 200, NULL);
    sse_open(&s, p.port, target, 0);
    cJSON *c = sse_expect(&s, "counts", NULL, NULL);
    const cJSON *q = counts_queue(c, queue);
    assert_non_null(q);
    assert_int_equal(spt_jint(cJSON_GetObjectItemCaseSensitive(q, "counts"), "queued"),
                     BATCHES * PER_BATCH);
    cJSON_Delete(c);
    sse_close(&s);
    SPT_STOP(p);
}

/* Shutdown ends every stream, so the server exits 0 with clients connected. */
static void test_shutdown_ends_streams(void **state)
{
    (void)state;
    spt_proc_t p;
    SPT_START(p, NULL);
    sse_t a, b;
    sse_open(&a, p.port, "/v1/events", 0);
    sse_open(&b, p.port, "/v1/events?queue=x", 0);
    cJSON_Delete(sse_expect(&a, "counts", NULL, NULL));
    cJSON_Delete(sse_expect(&b, "counts", NULL, NULL));
    assert_int_equal(spt_signal(&p, SIGTERM), 0);
    long long deadline = spt_now_ms() + WAIT_MS;
    sse_event_t ev;
    while (sse_next(&a, &ev, deadline)) free(ev.data);
    assert_true(a.ended);
    while (sse_next(&b, &ev, deadline)) free(ev.data);
    assert_true(b.ended);
    int status;
    assert_int_equal(spt_wait(&p, WAIT_MS, &status), 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    sse_close(&a);
    sse_close(&b);
    SPT_STOP(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts),
        cmocka_unit_test(test_job_events),
        cmocka_unit_test(test_filter),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_slow_reader_dropped),
        cmocka_unit_test(test_shutdown_ends_streams),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
