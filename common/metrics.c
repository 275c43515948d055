/*
 * metrics.c - histograms, the Prometheus text writers and Spool's own registry (see metrics.h).
 */
#include "metrics.h"

#include <stdlib.h>
#include <string.h>

const double sp_hist_bounds[SP_HIST_BUCKETS] = {.001, .0025, .005, .01, .025, .05, .1, .25,
                                                .5,   1,     2.5,  5,   10,   30,  60};

/* The bounds as written in `le`, so that every scrape spells them alike. */
static const char *const bound_text[SP_HIST_BUCKETS] = {"0.001", "0.0025", "0.005", "0.01", "0.025",
                                                        "0.05",  "0.1",    "0.25",  "0.5",  "1",
                                                        "2.5",   "5",      "10",    "30",   "60"};

#define HTTP_METHODS (SP_HTTP_OTHER + 1)
#define CODE_MIN 100
#define CODE_MAX 599

static const char *const method_label[HTTP_METHODS] = {"GET",    "HEAD",  "POST",    "PUT",
                                                       "DELETE", "PATCH", "OPTIONS", "OTHER"};

/* Latency per queue, found by name. Queues are never forgotten by a backend either, so the
 * map only grows, by one small entry per queue. */
typedef struct qentry {
    struct qentry *next;
    sp_hist_t wait, run;
    size_t len;
    char name[]; /* len bytes, NUL-terminated */
} qentry_t;

struct sp_metrics {
    const sp_http_server_t *http;
    qentry_t **slots;
    size_t nslots, nqueues;
    sp_hist_t http_latency;
    uint64_t http_count[HTTP_METHODS][CODE_MAX - CODE_MIN + 1];
    const char *backend_name;
    sp_hist_t backend_calls[SP_BOP_COUNT];
};

static const char *const backend_op_label[SP_BOP_COUNT] = {
    "submit", "submit_batch", "get",     "cancel", "retry", "lease", "ack",   "ack_batch",
    "fail",   "heartbeat",    "release", "queues", "list",  "pause", "purge", "ready",
};

void sp_metrics_set_backend(sp_metrics_t *m, const char *name)
{
    m->backend_name = name;
}

void sp_metrics_observe_backend(sp_metrics_t *m, sp_backend_op_t op, double seconds)
{
    if ((unsigned)op < SP_BOP_COUNT) sp_hist_observe(&m->backend_calls[op], seconds);
}

/* Only operations that were called, so that an idle server's exposition stays short. */
static void render_backend(const sp_metrics_t *m, sp_buf_t *b)
{
    const char *name = m->backend_name ? m->backend_name : "memory";
    sp_metrics_write_head(b, "spool_backend_call_seconds", "histogram",
                          "Time a backend call took to answer (a journal's group commit, a Redis "
                          "round trip); calls that waited for work are left out.");
    for (int op = 0; op < SP_BOP_COUNT; op++) {
        if (!m->backend_calls[op].count) continue;
        sp_label_t l[2] = {{"backend", name, strlen(name)},
                           {"op", backend_op_label[op], strlen(backend_op_label[op])}};
        sp_metrics_write_hist(b, "spool_backend_call_seconds", l, 2, &m->backend_calls[op]);
    }
}

/* ---- histograms and writers -------------------------------------------------------------- */

void sp_hist_observe(sp_hist_t *h, double seconds)
{
    if (!(seconds > 0)) seconds = 0; /* also maps NaN to 0 */
    size_t i = 0;
    while (i < SP_HIST_BUCKETS && seconds > sp_hist_bounds[i]) i++;
    if (i < SP_HIST_BUCKETS) h->bucket[i]++;
    h->count++;
    h->sum += seconds;
}

void sp_metrics_escape(sp_buf_t *b, const char *s, size_t n)
{
    size_t run = 0; /* bytes copied in one append rather than one by one */
    for (size_t i = 0; i < n; i++) {
        const char *esc = s[i] == '\\' ? "\\\\" : s[i] == '"' ? "\\\"" : s[i] == '\n' ? "\\n" : 0;
        if (!esc) continue;
        sp_buf_append(b, s + run, i - run);
        sp_buf_puts(b, esc);
        run = i + 1;
    }
    sp_buf_append(b, s + run, n - run);
}

void sp_metrics_write_head(sp_buf_t *b, const char *name, const char *type, const char *help)
{
    sp_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name, then the labels and an optional `le` in braces, then a space. */
static void write_series(sp_buf_t *b, const char *name, const char *suffix,
                         const sp_label_t *labels, size_t n, const char *le)
{
    sp_buf_puts(b, name);
    sp_buf_puts(b, suffix);
    if (n || le) {
        sp_buf_putc(b, '{');
        for (size_t i = 0; i < n; i++) {
            if (i) sp_buf_putc(b, ',');
            sp_buf_puts(b, labels[i].name);
            sp_buf_puts(b, "=\"");
            sp_metrics_escape(b, labels[i].value, labels[i].value_len);
            sp_buf_putc(b, '"');
        }
        if (le) {
            if (n) sp_buf_putc(b, ',');
            sp_buf_puts(b, "le=\"");
            sp_buf_puts(b, le);
            sp_buf_putc(b, '"');
        }
        sp_buf_putc(b, '}');
    }
    sp_buf_putc(b, ' ');
}

void sp_metrics_write_u64(sp_buf_t *b, const char *name, const sp_label_t *labels, size_t n,
                          uint64_t value)
{
    write_series(b, name, "", labels, n, NULL);
    sp_buf_u64(b, value);
    sp_buf_putc(b, '\n');
}

void sp_metrics_write_double(sp_buf_t *b, const char *name, const sp_label_t *labels, size_t n,
                             double value)
{
    write_series(b, name, "", labels, n, NULL);
    sp_buf_printf(b, "%.9g\n", value);
}

void sp_metrics_write_hist(sp_buf_t *b, const char *name, const sp_label_t *labels, size_t n,
                           const sp_hist_t *h)
{
    uint64_t cum = 0;
    for (size_t i = 0; i < SP_HIST_BUCKETS; i++) {
        cum += h->bucket[i];
        write_series(b, name, "_bucket", labels, n, bound_text[i]);
        sp_buf_u64(b, cum);
        sp_buf_putc(b, '\n');
    }
    write_series(b, name, "_bucket", labels, n, "+Inf");
    sp_buf_u64(b, h->count);
    sp_buf_putc(b, '\n');
    write_series(b, name, "_sum", labels, n, NULL);
    sp_buf_printf(b, "%.9g\n", h->sum);
    write_series(b, name, "_count", labels, n, NULL);
    sp_buf_u64(b, h->count);
    sp_buf_putc(b, '\n');
}

/* ---- the queue map ----------------------------------------------------------------------- */

static uint64_t hash_name(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static qentry_t *queue_find(const sp_metrics_t *m, const char *name, size_t len)
{
    if (!m->nslots) return NULL;
    qentry_t *e = m->slots[hash_name(name, len) & (m->nslots - 1)];
    while (e && (e->len != len || memcmp(e->name, name, len) != 0)) e = e->next;
    return e;
}

static int queue_grow(sp_metrics_t *m)
{
    size_t n = m->nslots ? m->nslots * 2 : 16;
    qentry_t **slots = calloc(n, sizeof *slots);
    if (!slots) return SP_ENOMEM;
    for (size_t i = 0; i < m->nslots; i++) {
        qentry_t *e = m->slots[i];
        while (e) {
            qentry_t *next = e->next;
            size_t k = hash_name(e->name, e->len) & (n - 1);
            e->next = slots[k];
            slots[k] = e;
            e = next;
        }
    }
    free(m->slots);
    m->slots = slots;
    m->nslots = n;
    return 0;
}

/* The queue's entry, created on first use; NULL when out of memory. */
static qentry_t *queue_get(sp_metrics_t *m, const char *name, size_t len)
{
    qentry_t *e = queue_find(m, name, len);
    if (e) return e;
    if (m->nqueues >= m->nslots && queue_grow(m)) return NULL;
    e = calloc(1, sizeof *e + len + 1);
    if (!e) return NULL;
    memcpy(e->name, name, len);
    e->len = len;
    size_t k = hash_name(name, len) & (m->nslots - 1);
    e->next = m->slots[k];
    m->slots[k] = e;
    m->nqueues++;
    return e;
}

/* ---- the registry ------------------------------------------------------------------------ */

sp_metrics_t *sp_metrics_new(void)
{
    return calloc(1, sizeof(sp_metrics_t));
}

void sp_metrics_free(sp_metrics_t *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->nslots; i++) {
        qentry_t *e = m->slots[i];
        while (e) {
            qentry_t *next = e->next;
            free(e);
            e = next;
        }
    }
    free(m->slots);
    free(m);
}

void sp_metrics_set_http(sp_metrics_t *m, const sp_http_server_t *http)
{
    m->http = http;
}

static double ms_between(int64_t from, int64_t to)
{
    return to > from ? (double)(to - from) / 1000.0 : 0.0;
}

void sp_metrics_observe_job(sp_metrics_t *m, const sp_jobrec_t *job, int from)
{
    bool starts = job->state == SP_STATE_RUNNING && job->started_at >= 0;
    bool stops = from == SP_STATE_RUNNING && job->started_at >= 0;
    if (!starts && !stops) return;
    qentry_t *e = queue_get(m, job->queue, job->queue_len);
    if (!e) return;
    if (starts) sp_hist_observe(&e->wait, ms_between(job->run_at, job->started_at));
    if (stops) {
        /* A retried or released attempt has no finished_at: it ended now. */
        int64_t end = job->finished_at >= job->started_at ? job->finished_at : sp_now_ms();
        sp_hist_observe(&e->run, ms_between(job->started_at, end));
    }
}

void sp_metrics_observe_http(sp_metrics_t *m, const sp_http_req_t *req, int status)
{
    int method = (int)req->method;
    if (method < 0 || method >= HTTP_METHODS) method = SP_HTTP_OTHER;
    if (status >= CODE_MIN && status <= CODE_MAX) m->http_count[method][status - CODE_MIN]++;
    uint64_t now = uv_hrtime();
    double secs = now > req->started_ns ? (double)(now - req->started_ns) / 1e9 : 0.0;
    sp_hist_observe(&m->http_latency, secs);
}

static void render_queues(const sp_metrics_t *m, sp_buf_t *b, const sp_queue_stats_t *qs, size_t n)
{
    sp_metrics_write_head(b, "spool_queue_jobs", "gauge", "Jobs in each queue by state.");
    for (size_t i = 0; i < n; i++) {
        for (int s = 0; s < SP_STATE_COUNT; s++) {
            const char *st = sp_state_name((sp_state_t)s);
            sp_label_t l[2] = {{"queue", qs[i].name, qs[i].name_len}, {"state", st, strlen(st)}};
            sp_metrics_write_u64(b, "spool_queue_jobs", l, 2, qs[i].counts[s]);
        }
    }
    sp_metrics_write_head(b, "spool_queue_paused", "gauge",
                          "1 when leasing from the queue is paused.");
    for (size_t i = 0; i < n; i++) {
        sp_label_t l = {"queue", qs[i].name, qs[i].name_len};
        sp_metrics_write_u64(b, "spool_queue_paused", &l, 1, qs[i].paused ? 1 : 0);
    }
    sp_metrics_write_head(b, "spool_queue_oldest_queued_age_seconds", "gauge",
                          "Age of the oldest queued job (0 when none is queued).");
    for (size_t i = 0; i < n; i++) {
        sp_label_t l = {"queue", qs[i].name, qs[i].name_len};
        sp_metrics_write_double(b, "spool_queue_oldest_queued_age_seconds", &l, 1,
                                (double)qs[i].oldest_queued_age_ms / 1000.0);
    }
    sp_metrics_write_head(b, "spool_jobs_total", "counter",
                          "Job events per queue since the queue was first seen.");
    for (size_t i = 0; i < n; i++) {
        const sp_queue_stats_t *q = &qs[i];
        struct {
            const char *event;
            uint64_t v;
        } ev[] = {{"enqueued", q->enqueued}, {"leased", q->leased},   {"succeeded", q->succeeded},
                  {"failed", q->failed},     {"retried", q->retried}, {"canceled", q->canceled}};
        for (size_t k = 0; k < SP_ARRAY_LEN(ev); k++) {
            sp_label_t l[2] = {{"queue", q->name, q->name_len},
                               {"event", ev[k].event, strlen(ev[k].event)}};
            sp_metrics_write_u64(b, "spool_jobs_total", l, 2, ev[k].v);
        }
    }
    static const sp_hist_t zero;
    sp_metrics_write_head(b, "spool_job_wait_seconds", "histogram",
                          "Time from a job's run_at (eligible) to the start of its attempt.");
    for (size_t i = 0; i < n; i++) {
        const qentry_t *e = queue_find(m, qs[i].name, qs[i].name_len);
        sp_label_t l = {"queue", qs[i].name, qs[i].name_len};
        sp_metrics_write_hist(b, "spool_job_wait_seconds", &l, 1, e ? &e->wait : &zero);
    }
    sp_metrics_write_head(b, "spool_job_run_seconds", "histogram",
                          "Time from the start of an attempt to its end.");
    for (size_t i = 0; i < n; i++) {
        const qentry_t *e = queue_find(m, qs[i].name, qs[i].name_len);
        sp_label_t l = {"queue", qs[i].name, qs[i].name_len};
        sp_metrics_write_hist(b, "spool_job_run_seconds", &l, 1, e ? &e->run : &zero);
    }
    uint64_t leases = 0;
    for (size_t i = 0; i < n; i++) leases += qs[i].counts[SP_STATE_RUNNING];
    sp_metrics_write_head(b, "spool_leases_held", "gauge", "Jobs running under a lease.");
    sp_metrics_write_u64(b, "spool_leases_held", NULL, 0, leases);
}

static void render_http(const sp_metrics_t *m, sp_buf_t *b)
{
    sp_metrics_write_head(b, "spool_http_requests_total", "counter",
                          "HTTP answers by request method and status code.");
    for (int k = 0; k < HTTP_METHODS; k++) {
        for (int c = 0; c <= CODE_MAX - CODE_MIN; c++) {
            if (!m->http_count[k][c]) continue;
            char code[8];
            int len = snprintf(code, sizeof code, "%d", c + CODE_MIN);
            sp_label_t l[2] = {{"method", method_label[k], strlen(method_label[k])},
                               {"code", code, (size_t)len}};
            sp_metrics_write_u64(b, "spool_http_requests_total", l, 2, m->http_count[k][c]);
        }
    }
    sp_metrics_write_head(b, "spool_http_request_duration_seconds", "histogram",
                          "Time from a request's first byte to its answer being queued.");
    sp_metrics_write_hist(b, "spool_http_request_duration_seconds", NULL, 0, &m->http_latency);
    if (m->http) {
        sp_metrics_write_head(b, "spool_http_connections", "gauge", "Open HTTP connections.");
        sp_metrics_write_u64(b, "spool_http_connections", NULL, 0,
                             sp_http_server_connection_count(m->http));
    }
}

void sp_metrics_render(const sp_metrics_t *m, sp_buf_t *b, const sp_queue_stats_t *qs, size_t n)
{
    sp_metrics_write_head(b, "spool_build_info", "gauge", "Always 1; the labels name the build.");
    sp_label_t v = {"version", SP_VERSION, strlen(SP_VERSION)};
    sp_metrics_write_u64(b, "spool_build_info", &v, 1, 1);
    render_queues(m, b, qs, n);
    render_http(m, b);
    render_backend(m, b);
}
