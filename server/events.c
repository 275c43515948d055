/*
 * events.c - the Server-Sent Events fan-out of GET /v1/events (see events.h).
 *
 * Clients sit on one list. A single repeating timer asks the backend for every queue's stats
 * once a second and writes each client its counts; job changes are written as they happen.
 * Every write goes through client_send, which ends a client whose unwritten bytes pass the
 * limit, so no path can let a slow reader's backlog grow.
 */
#include "events.h"

#include <stdlib.h>
#include <string.h>

#include "api_monitor.h"
#include "log.h"

#define TICK_MS 1000
#define PING_TICKS 15

typedef struct client {
    struct client *prev, *next;
    sp_events_t *ev;
    sp_http_req_t *req;
    bool filtered;
    bool fresh; /* has not had its first counts yet */
    size_t queue_len;
    char queue[SP_NAME_MAX + 1];
} client_t;

struct sp_events {
    uv_loop_t *loop;
    sp_backend_t *backend;
    uv_timer_t timer;
    client_t *clients;
    size_t nclients;
    uint64_t ticks;
    bool inflight;     /* a queues call has not answered yet */
    bool inflight_all; /* that call's counts go to every client, not only fresh ones */
    bool closing;      /* sp_events_close ran: free once the timer and any call are done */
    bool timer_closed;
    sp_buf_t all; /* the counts message for unfiltered clients, rebuilt each tick */
    sp_buf_t one; /* scratch for one message */
};

static const char dropped_msg[] =
    "event: dropped\ndata: {\"reason\":\"the reader fell behind; reconnect\"}\n\n";

/* ---- clients ----------------------------------------------------------------------------- */

static void client_unlink(client_t *c)
{
    sp_events_t *ev = c->ev;
    if (c->prev)
        c->prev->next = c->next;
    else
        ev->clients = c->next;
    if (c->next) c->next->prev = c->prev;
    ev->nclients--;
    if (ev->nclients == 0 && !ev->closing) uv_timer_stop(&ev->timer);
}

/* Ends the client's stream and forgets it. */
static void client_end(client_t *c)
{
    client_unlink(c);
    sp_http_stream_end(c->req);
    free(c);
}

/* Returns false when the client was dropped (and freed). The limit applies to what was already
 * waiting, so that one large counts message never drops a reader that keeps up. */
static bool client_send(client_t *c, const char *data, size_t len)
{
    if (sp_http_stream_write(c->req, data, len) <= SP_EVENTS_MAX_PENDING + len) return true;
    sp_info("events: dropping %s, a reader more than %zu bytes behind", c->req->peer,
            SP_EVENTS_MAX_PENDING);
    sp_http_stream_write(c->req, dropped_msg, sizeof dropped_msg - 1);
    client_end(c);
    return false;
}

static void client_abort(void *ud, sp_http_req_t *req)
{
    (void)req;
    client_t *c = ud;
    client_unlink(c);
    free(c);
}

static bool client_wants(const client_t *c, const char *queue, size_t len)
{
    return !c->filtered || (c->queue_len == len && memcmp(c->queue, queue, len) == 0);
}

/* ---- counts ------------------------------------------------------------------------------ */

static void counts_msg(sp_buf_t *b, const sp_queue_stats_t *qs, size_t n)
{
    sp_buf_reset(b);
    sp_buf_puts(b, "event: counts\ndata: {\"queues\":[");
    for (size_t i = 0; i < n; i++) {
        if (i) sp_buf_putc(b, ',');
        sp_api_write_queue(b, &qs[i]);
    }
    sp_buf_puts(b, "]}\n\n");
}

static void maybe_free(sp_events_t *ev)
{
    if (!ev->closing || !ev->timer_closed || ev->inflight) return;
    sp_buf_free(&ev->all);
    sp_buf_free(&ev->one);
    free(ev);
}

static void counts_cb(void *ud, int status, const char *why, const sp_queue_stats_t *qs, size_t n)
{
    sp_events_t *ev = ud;
    bool all = ev->inflight_all;
    ev->inflight = false;
    if (ev->closing) {
        maybe_free(ev);
        return;
    }
    if (status) {
        sp_warn("events: queue counts unavailable: %s", why ? why : sp_strerror(status));
        return;
    }
    bool built = false;
    client_t *next;
    for (client_t *c = ev->clients; c; c = next) {
        next = c->next; /* client_send may end c */
        if (!all && !c->fresh) continue;
        c->fresh = false;
        if (!c->filtered) {
            if (!built) counts_msg(&ev->all, qs, n);
            built = true;
            if (!ev->all.oom) client_send(c, ev->all.data, ev->all.len);
            continue;
        }
        size_t i = 0;
        while (i < n && !client_wants(c, qs[i].name, qs[i].name_len)) i++;
        if (i < n)
            counts_msg(&ev->one, &qs[i], 1);
        else
            counts_msg(&ev->one, NULL, 0);
        if (!ev->one.oom) client_send(c, ev->one.data, ev->one.len);
    }
    if (ev->all.oom || ev->one.oom) {
        sp_buf_free(&ev->all); /* also clears oom, for the next tick */
        sp_buf_free(&ev->one);
    }
}

static void request_counts(sp_events_t *ev, bool all)
{
    if (ev->inflight) return; /* a slow backend: the next tick catches up */
    ev->inflight = true;
    ev->inflight_all = all;
    ev->backend->ops->queues(ev->backend, NULL, 0, counts_cb, ev);
}

static void on_tick(uv_timer_t *t)
{
    sp_events_t *ev = t->data;
    if (++ev->ticks % PING_TICKS == 0) {
        client_t *next;
        for (client_t *c = ev->clients; c; c = next) {
            next = c->next;
            client_send(c, ": ping\n\n", 8);
        }
    }
    if (ev->clients) request_counts(ev, true);
}

/* ---- the interface ----------------------------------------------------------------------- */

sp_events_t *sp_events_new(uv_loop_t *loop, sp_backend_t *backend)
{
    sp_events_t *ev = calloc(1, sizeof *ev);
    if (!ev) return NULL;
    ev->loop = loop;
    ev->backend = backend;
    sp_buf_init(&ev->all);
    sp_buf_init(&ev->one);
    if (uv_timer_init(loop, &ev->timer) != 0) {
        free(ev);
        return NULL;
    }
    ev->timer.data = ev;
    return ev;
}

void sp_events_add(sp_events_t *ev, sp_http_req_t *req, const char *queue, size_t queue_len)
{
    if (queue && queue_len > SP_NAME_MAX) {
        sp_http_respond_error(req, 400, "invalid_request", "queue: not a valid queue name", NULL);
        return;
    }
    if (ev->closing) {
        sp_http_respond_error(req, 503, "shutting_down", "the server is shutting down",
                              "Retry-After: 1\r\n");
        return;
    }
    client_t *c = calloc(1, sizeof *c);
    if (!c) {
        sp_http_respond_error(req, 503, "out_of_memory", "the server is out of memory",
                              "Retry-After: 1\r\n");
        return;
    }
    c->ev = ev;
    c->req = req;
    c->fresh = true;
    if (queue) {
        c->filtered = true;
        memcpy(c->queue, queue, queue_len);
        c->queue_len = queue_len;
    }
    sp_http_stream_start(req, 200, "text/event-stream",
                         "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
    if (req->method == SP_HTTP_HEAD) {
        sp_http_stream_end(req);
        free(c);
        return;
    }
    sp_http_req_on_abort(req, client_abort, c);
    c->next = ev->clients;
    if (c->next) c->next->prev = c;
    ev->clients = c;
    if (ev->nclients++ == 0) uv_timer_start(&ev->timer, on_tick, TICK_MS, TICK_MS);
    /* Tells a browser how soon to come back, and gets bytes through any buffering proxy. */
    if (client_send(c, "retry: 2000\n\n", 13)) request_counts(ev, false);
}

void sp_events_job(sp_events_t *ev, const sp_jobrec_t *job, int from)
{
    (void)from;
    if (!ev || !ev->clients) return;
    sp_buf_t *b = &ev->one;
    sp_buf_reset(b);
    sp_buf_puts(b, "event: job\ndata: {\"id\":\"");
    sp_buf_u64(b, job->id);
    sp_buf_puts(b, "\",\"queue\":");
    sp_buf_json_str(b, job->queue, job->queue_len);
    sp_buf_puts(b, ",\"state\":\"");
    sp_buf_puts(b, sp_state_name(job->state));
    sp_buf_puts(b, "\",\"attempts\":");
    sp_buf_u64(b, job->attempts);
    sp_buf_puts(b, "}\n\n");
    if (b->oom) {
        sp_buf_free(b);
        return;
    }
    client_t *next;
    for (client_t *c = ev->clients; c; c = next) {
        next = c->next;
        if (client_wants(c, job->queue, job->queue_len)) client_send(c, b->data, b->len);
    }
}

size_t sp_events_client_count(const sp_events_t *ev)
{
    return ev ? ev->nclients : 0;
}

static void timer_closed(uv_handle_t *h)
{
    sp_events_t *ev = h->data;
    ev->timer_closed = true;
    maybe_free(ev);
}

void sp_events_close(sp_events_t *ev)
{
    if (!ev) return;
    ev->closing = true;
    while (ev->clients) client_end(ev->clients);
    uv_close((uv_handle_t *)&ev->timer, timer_closed);
}
