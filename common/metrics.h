/*
 * metrics.h - counters and fixed-bucket histograms, and Spool's metrics in the Prometheus text
 * exposition format 0.0.4 (GET /metrics).
 *
 * Two layers. The first is generic: a histogram with the latency buckets below and writers for
 * HELP/TYPE lines, samples with escaped label values, and whole histograms. The second is the
 * registry of what Spool measures itself: HTTP requests by method and code with their latency,
 * and per queue how long jobs waited to start and how long they ran. Everything that a backend
 * already counts (depth by state, totals) is not kept here again: the renderer takes the
 * backend's queue stats, so rendering costs O(queues) and never scans jobs.
 *
 * Everything runs on the loop thread; nothing here locks.
 */
#ifndef SP_METRICS_H
#define SP_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "http.h"
#include "job.h"

/* Upper bounds, in seconds, of the latency buckets: 1 ms to 1 min. +Inf is implied. */
#define SP_HIST_BUCKETS 15
extern const double sp_hist_bounds[SP_HIST_BUCKETS];

typedef struct {
    uint64_t bucket[SP_HIST_BUCKETS]; /* observations in (bound[i-1], bound[i]], not cumulative */
    uint64_t count;                   /* every observation, the +Inf bucket */
    double sum;
} sp_hist_t;

/* Adds one observation (seconds; a negative value counts as 0). */
void sp_hist_observe(sp_hist_t *h, double seconds);

/* One label: a name and a value of value_len bytes (escaped when written). */
typedef struct {
    const char *name;
    const char *value;
    size_t value_len;
} sp_label_t;

/* "# HELP name help\n# TYPE name type\n"; type is "counter", "gauge" or "histogram". */
void sp_metrics_write_head(sp_buf_t *b, const char *name, const char *type, const char *help);
/* "name{l1="v1",...} value\n" (no braces without labels). */
void sp_metrics_write_u64(sp_buf_t *b, const char *name, const sp_label_t *labels, size_t n,
                          uint64_t value);
void sp_metrics_write_double(sp_buf_t *b, const char *name, const sp_label_t *labels, size_t n,
                             double value);
/* name_bucket{...,le="..."} lines (cumulative), name_sum and name_count. */
void sp_metrics_write_hist(sp_buf_t *b, const char *name, const sp_label_t *labels, size_t n,
                           const sp_hist_t *h);
/* Appends a label value with \\, \" and \n escaped, as the exposition format requires. */
void sp_metrics_escape(sp_buf_t *b, const char *s, size_t n);

/* ---- Spool's registry -------------------------------------------------------------------- */

typedef struct sp_metrics sp_metrics_t;

/* Returns NULL on allocation failure. */
sp_metrics_t *sp_metrics_new(void);
void sp_metrics_free(sp_metrics_t *m);

/* The server whose open connections are shown as spool_http_connections (not owned; NULL to
 * leave the figure out, e.g. once the server is closed). */
void sp_metrics_set_http(sp_metrics_t *m, const sp_http_server_t *http);

/* A job changed state (the backend's observer): a job that starts running adds its wait
 * (run_at to started_at) to spool_job_wait_seconds; a job that stops running, finished or
 * put back, adds its run time (started_at to finished_at, or to now) to spool_job_run_seconds.
 * Allocation failure only loses the observation. */
void sp_metrics_observe_job(sp_metrics_t *m, const sp_jobrec_t *job, int from);

/* An HTTP answer (the server's observe hook): counts it by method and status and adds its
 * latency from req->started_ns. */
void sp_metrics_observe_http(sp_metrics_t *m, const sp_http_req_t *req, int status);

/* Calls on the backend interface, by operation, for spool_backend_call_seconds{backend,op}. */
typedef enum {
    SP_BOP_SUBMIT,
    SP_BOP_BATCH,
    SP_BOP_GET,
    SP_BOP_CANCEL,
    SP_BOP_RETRY,
    SP_BOP_LEASE,
    SP_BOP_ACK,
    SP_BOP_ACK_BATCH,
    SP_BOP_FAIL,
    SP_BOP_HEARTBEAT,
    SP_BOP_RELEASE,
    SP_BOP_QUEUES,
    SP_BOP_LIST,
    SP_BOP_PAUSE,
    SP_BOP_PURGE,
    SP_BOP_READY,
    SP_BOP_COUNT,
} sp_backend_op_t;

/* Names the backend in the backend call metrics ("memory", "redis"); a static string. */
void sp_metrics_set_backend(sp_metrics_t *m, const char *name);
/* A backend call answered after `seconds`: the journal's group commit or a Redis round trip
 * shows here. Callers leave out calls that waited for work (long polls, get with wait_ms). */
void sp_metrics_observe_backend(sp_metrics_t *m, sp_backend_op_t op, double seconds);

/* Writes the whole exposition: the queues' depth, totals and latency histograms (qs[0..n), as
 * the backend's queues operation hands them out), HTTP figures, leases held and build info. */
void sp_metrics_render(const sp_metrics_t *m, sp_buf_t *b, const sp_queue_stats_t *qs, size_t n);

/* The Content-Type of the exposition. */
#define SP_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
