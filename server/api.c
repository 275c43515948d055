/*
 * api.c - HTTP API v1: routing, request validation and JSON answers (see api.h).
 *
 * Each route reads its path parameters, query and body, checks every rule of docs/API.md, and
 * makes one call on the backend; the backend's callback writes the answer. Callbacks may run
 * before the call returns or later, so a route never touches the request after its call.
 * Waiting calls (long-poll lease, get with wait_ms) register an abort callback that drops the
 * wait when the client goes away, so a gone client never takes a job.
 */
#include "api.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api_monitor.h"
#include "buf.h"
#include "dashboard.h"
#include "job.h"
#include "json.h"
#include "log.h"
#include "metrics.h"

#define MAX_WAIT_MS 60000
#define MAX_BATCH 10000
#define MAX_ACKS 1000
#define MAX_LEASE 1000
#define MAX_LEASE_QUEUES 1000
#define MAX_LIST 1000
#define DEFAULT_LIST 100
#define MAX_SEGMENTS 6

struct sp_api {
    sp_backend_t *backend;
    char *token;
    size_t token_len;
    bool draining;
    sp_buf_t out; /* reused for every answer: the loop is single-threaded */

    /* What GET /v1/events and GET /metrics answer from; not owned, NULL until set. */
    sp_events_t *events;
    sp_metrics_t *metrics;
};

/* A decoded path segment. Names are at most 128 bytes; longer segments are never valid. */
typedef struct {
    char s[SP_NAME_MAX + 2];
    size_t len;
    bool too_long;
} seg_t;

/* What a route needs from the request. */
typedef struct {
    sp_api_t *api;
    sp_http_req_t *req;
    seg_t *seg;
    size_t nseg;
    sp_json_val_t body; /* an OBJECT ("{}" when the body was empty and that is allowed) */
    bool has_body;
} ctx_t;

static const sp_json_val_t empty_object = {SP_JSON_OBJECT, "{}", 2};

/* ---- answers ---------------------------------------------------------------------------- */

static void respond_json(sp_api_t *api, sp_http_req_t *req, int status, const char *extra)
{
    if (api->out.oom) {
        sp_http_respond_error(req, 503, "out_of_memory", "the server is out of memory",
                              "Retry-After: 1\r\n");
        return;
    }
    sp_http_respond(req, status, "application/json", extra, api->out.data, api->out.len);
}

static void respond_err(sp_http_req_t *req, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void respond_err(sp_http_req_t *req, int status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *extra = NULL;
    if (status == 429 || status == 503) extra = "Retry-After: 1\r\n";
    if (status == 401) extra = "WWW-Authenticate: Bearer realm=\"spool\"\r\n";
    sp_http_respond_error(req, status, code, msg, extra);
}

/* Maps a backend status to an HTTP answer. */
static void respond_backend_err(sp_http_req_t *req, int err, const char *why)
{
    if (!why) why = sp_strerror(err);
    switch (err) {
    case SP_ENOTFOUND:
        respond_err(req, 404, "not_found", "%s", why);
        return;
    case SP_ECONFLICT:
        respond_err(req, 409, "conflict", "%s", why);
        return;
    case SP_EFULL:
        respond_err(req, 429, "queue_full", "%s; retry later or raise --max-depth", why);
        return;
    case SP_EINVAL:
        respond_err(req, 400, "invalid_request", "%s", why);
        return;
    case SP_ETOOBIG:
        respond_err(req, 413, "payload_too_large", "%s", why);
        return;
    case SP_ENOMEM:
        respond_err(req, 503, "out_of_memory", "%s", why);
        return;
    default:
        respond_err(req, 503, "unavailable", "%s", why);
        return;
    }
}

static void write_queue(sp_buf_t *b, const sp_queue_stats_t *q)
{
    sp_buf_puts(b, "{\"name\":");
    sp_buf_json_str(b, q->name, q->name_len);
    sp_buf_puts(b, q->paused ? ",\"paused\":true,\"counts\":{" : ",\"paused\":false,\"counts\":{");
    for (int s = 0; s < SP_STATE_COUNT; s++) {
        if (s) sp_buf_putc(b, ',');
        sp_buf_putc(b, '"');
        sp_buf_puts(b, sp_state_name((sp_state_t)s));
        sp_buf_puts(b, "\":");
        sp_buf_u64(b, q->counts[s]);
    }
    sp_buf_puts(b, "},\"oldest_queued_age_ms\":");
    sp_buf_i64(b, q->oldest_queued_age_ms);
    sp_buf_puts(b, ",\"totals\":{\"enqueued\":");
    sp_buf_u64(b, q->enqueued);
    sp_buf_puts(b, ",\"succeeded\":");
    sp_buf_u64(b, q->succeeded);
    sp_buf_puts(b, ",\"failed\":");
    sp_buf_u64(b, q->failed);
    sp_buf_puts(b, ",\"retried\":");
    sp_buf_u64(b, q->retried);
    sp_buf_puts(b, "}}");
}

void sp_api_write_queue(sp_buf_t *b, const sp_queue_stats_t *q)
{
    write_queue(b, q);
}

static void write_id(sp_buf_t *b, uint64_t id)
{
    sp_buf_putc(b, '"');
    sp_buf_u64(b, id);
    sp_buf_putc(b, '"');
}

/* ---- request helpers -------------------------------------------------------------------- */

static bool ct_is_json(const sp_http_req_t *req)
{
    const sp_http_header_t *h = sp_http_req_header(req, "content-type");
    if (!h) return true;
    size_t n = 0;
    while (n < h->value_len && h->value[n] != ';' && h->value[n] != ' ' && h->value[n] != '\t') n++;
    return n == 16 && strncasecmp(h->value, "application/json", 16) == 0;
}

/* Reads the body into c->body. `optional`: every field is optional, so an empty body is {}.
 * Answers and returns false on a bad body. */
static bool read_body(ctx_t *c, bool optional)
{
    sp_http_req_t *req = c->req;
    char err[256];
    if (req->body_len == 0) {
        if (!optional) {
            respond_err(req, 400, "invalid_request",
                        "the request needs a JSON object body; see docs/API.md");
            return false;
        }
        c->body = empty_object;
        return true;
    }
    if (!ct_is_json(req)) {
        respond_err(req, 415, "unsupported_media_type",
                    "the body must be JSON: send Content-Type: application/json");
        return false;
    }
    if (sp_json_parse(req->body, req->body_len, SP_JSON_MAX_DEPTH, &c->body, err, sizeof err)) {
        respond_err(req, 400, "invalid_json", "%s", err);
        return false;
    }
    if (c->body.type != SP_JSON_OBJECT) {
        respond_err(req, 400, "invalid_request", "the body must be a JSON object");
        return false;
    }
    if (sp_json_check_unique_keys(c->body, err, sizeof err)) {
        respond_err(req, 400, "invalid_request", "%s", err);
        return false;
    }
    c->has_body = true;
    return true;
}

/* Checks the query string against the names a route accepts (NULL-terminated list), stores
 * decoded values into vals[i] (NULL when absent). Answers and returns false on an unknown or
 * repeated parameter or a bad escape. */
typedef struct {
    char v[64];
    size_t len;
    bool set;
} qval_t;

static bool read_query(ctx_t *c, const char *const *names, qval_t *vals)
{
    sp_http_req_t *req = c->req;
    size_t nnames = 0;
    while (names && names[nnames]) vals[nnames++].set = false;
    if (!req->query) return true;
    const char *q = req->query, *end = req->query + req->query_len;
    const char *name, *value;
    size_t name_len, value_len;
    while (sp_http_query_next(&q, end, &name, &name_len, &value, &value_len)) {
        char dname[64];
        long dn = sp_http_pct_decode(name, name_len, dname, sizeof dname - 1);
        if (dn < 0) {
            respond_err(req, 400, "invalid_query",
                        "a query parameter name is malformed or too long");
            return false;
        }
        dname[dn] = '\0';
        if (dn == 0 && value_len == 0) continue; /* "a=1&&b=2" */
        size_t i = 0;
        while (i < nnames &&
               (strlen(names[i]) != (size_t)dn || memcmp(names[i], dname, (size_t)dn)))
            i++;
        if (i == nnames) {
            respond_err(req, 400, "invalid_query", "unknown query parameter '%s'", dname);
            return false;
        }
        if (vals[i].set) {
            respond_err(req, 400, "invalid_query", "query parameter '%s' is repeated; give it once",
                        dname);
            return false;
        }
        long dv = sp_http_pct_decode(value, value_len, vals[i].v, sizeof vals[i].v - 1);
        if (dv < 0) {
            respond_err(req, 400, "invalid_query", "query parameter '%s' is malformed or too long",
                        dname);
            return false;
        }
        vals[i].v[dv] = '\0';
        vals[i].len = (size_t)dv;
        vals[i].set = true;
    }
    return true;
}

/* Parses a query integer in [min, max]; answers 400 and returns false otherwise. */
static bool query_int(sp_http_req_t *req, const char *name, const qval_t *v, int64_t min,
                      int64_t max, int64_t *out)
{
    int64_t x = 0;
    bool ok = v->len > 0 && v->len <= 18;
    for (size_t i = 0; ok && i < v->len; i++) {
        if (v->v[i] < '0' || v->v[i] > '9')
            ok = false;
        else
            x = x * 10 + (v->v[i] - '0');
    }
    if (!ok || x < min || x > max) {
        respond_err(req, 400, "invalid_query", "%s: must be an integer from %lld to %lld", name,
                    (long long)min, (long long)max);
        return false;
    }
    *out = x;
    return true;
}

/* Checks that every member of the body is one of the names (NULL-terminated). */
static bool only_fields(ctx_t *c, const char *const *names)
{
    sp_json_iter_t it;
    sp_json_val_t k, v;
    sp_json_iter_init(&it, c->body);
    while (sp_json_obj_next(&it, &k, &v)) {
        bool known = false;
        for (size_t i = 0; names[i] && !known; i++) known = sp_json_str_eq(k, names[i]);
        if (!known) {
            char name[64];
            size_t len;
            sp_json_str_decode(k, name, sizeof name - 1, &len);
            name[SP_MIN(len, sizeof name - 1)] = '\0';
            respond_err(c->req, 400, "invalid_request", "unknown field '%s'", name);
            return false;
        }
    }
    return true;
}

/* A field's value, or false when absent or null. */
static bool field(const ctx_t *c, const char *name, sp_json_val_t *v)
{
    return sp_json_obj_get(c->body, name, v) && v->type != SP_JSON_NULL;
}

static bool field_int(ctx_t *c, const char *name, int64_t min, int64_t max, int64_t *out)
{
    sp_json_val_t v;
    if (!field(c, name, &v)) return true;
    int64_t x;
    if (v.type != SP_JSON_NUMBER || sp_json_int(v, &x) || x < min || x > max) {
        respond_err(c->req, 400, "invalid_request", "%s: must be an integer from %lld to %lld",
                    name, (long long)min, (long long)max);
        return false;
    }
    *out = x;
    return true;
}

/* The "lease" field: required. */
static bool field_lease(ctx_t *c, uint64_t *lease)
{
    sp_json_val_t v;
    if (!field(c, "lease", &v)) {
        respond_err(c->req, 400, "invalid_request",
                    "lease: required; send the lease token you got from POST /v1/lease");
        return false;
    }
    if (sp_job_parse_id_json(v, lease)) {
        respond_err(c->req, 400, "invalid_request",
                    "lease: must be the lease token string from POST /v1/lease");
        return false;
    }
    return true;
}

/* One backend call on behalf of a request. It outlives the request when the client goes away
 * first: the backend's answer then finds `aborted` set and only frees the call. */
typedef struct {
    sp_api_t *api;
    sp_http_req_t *req;
    sp_be_wait_t *wait; /* set while a waiting call waits */
    bool aborted;
    bool waited;        /* it waited for work: its time says nothing of the backend */
    sp_backend_op_t op; /* for the backend call metrics */
    uint64_t started_ns;
} call_t;

static void call_abort(void *ud, sp_http_req_t *req)
{
    (void)req;
    call_t *k = ud;
    if (k->wait) {
        k->api->backend->ops->cancel_wait(k->api->backend, k->wait);
        free(k);
    } else {
        k->aborted = true;
    }
}

/* A call for this request, or NULL after answering 503. */
static call_t *call_new(ctx_t *c, sp_backend_op_t op)
{
    call_t *k = calloc(1, sizeof *k);
    if (!k) {
        respond_err(c->req, 503, "out_of_memory", "the server is out of memory");
        return NULL;
    }
    k->api = c->api;
    k->req = c->req;
    k->op = op;
    k->started_ns = uv_hrtime();
    sp_http_req_on_abort(c->req, call_abort, k);
    return k;
}

/* Ends a call in its backend callback: frees it and says whether there is still a client to
 * answer (then *api and *req are set). */
static bool call_end(void *ud, sp_api_t **api, sp_http_req_t **req)
{
    call_t *k = ud;
    bool live = !k->aborted;
    *api = k->api;
    *req = k->req;
    if (!k->waited && k->api->metrics)
        sp_metrics_observe_backend(k->api->metrics, k->op,
                                   (double)(uv_hrtime() - k->started_ns) / 1e9);
    free(k);
    return live;
}

/* Ends a call in its backend callback and starts the answer: answers the backend's error, or
 * returns the reset output buffer for the success answer (with *api and *req set). NULL when
 * the answer is done already or the client has gone. */
static sp_buf_t *call_answer(void *ud, int status, const char *why, sp_api_t **api,
                             sp_http_req_t **req)
{
    if (!call_end(ud, api, req)) return NULL;
    if (status) {
        respond_backend_err(*req, status, why);
        return NULL;
    }
    sp_buf_reset(&(*api)->out);
    return &(*api)->out;
}

/* Records the wait handle of a call that did not answer at once. */
static void call_wait(call_t *k, sp_be_wait_t *handle)
{
    if (handle) {
        k->wait = handle;
        k->waited = true;
    }
}

/* ---- routes: health --------------------------------------------------------------------- */

static void route_healthz(ctx_t *c)
{
    sp_http_respond(c->req, 200, "text/plain; charset=utf-8", NULL, "ok", 2);
}

static void ready_cb(void *ud, int status, const char *why)
{
    sp_api_t *api;
    sp_http_req_t *req;
    if (!call_end(ud, &api, &req)) return;
    (void)api;
    if (status == 0)
        sp_http_respond(req, 200, "text/plain; charset=utf-8", NULL, "ok", 2);
    else
        respond_err(req, 503, "unavailable", "backend not ready: %s", why ? why : "unknown");
}

static void route_readyz(ctx_t *c)
{
    if (c->api->draining) {
        respond_err(c->req, 503, "shutting_down", "the server is shutting down");
        return;
    }
    call_t *k = call_new(c, SP_BOP_READY);
    if (!k) return;
    c->api->backend->ops->ready(c->api->backend, ready_cb, k);
}

/* ---- routes: jobs ----------------------------------------------------------------------- */

static void write_submitted(sp_buf_t *b, const sp_jobrec_t *job)
{
    sp_buf_puts(b, "{\"id\":");
    write_id(b, job->id);
    sp_buf_puts(b, ",\"queue\":");
    sp_buf_json_str(b, job->queue, job->queue_len);
    sp_buf_puts(b, ",\"state\":\"");
    sp_buf_puts(b, sp_state_name(job->state));
    sp_buf_puts(b, "\",\"created_at\":");
    sp_buf_i64(b, job->created_at);
    sp_buf_puts(b, ",\"run_at\":");
    sp_buf_i64(b, job->run_at);
    sp_buf_putc(b, '}');
}

static void submit_cb(void *ud, int status, const char *why, const sp_jobrec_t *job, bool existed)
{
    sp_api_t *api;
    sp_http_req_t *req;
    sp_buf_t *b = call_answer(ud, status, why, &api, &req);
    if (!b) return;
    write_submitted(b, job);
    char loc[64];
    snprintf(loc, sizeof loc, "Location: /v1/jobs/%llu\r\n", (unsigned long long)job->id);
    respond_json(api, req, existed ? 200 : 201, loc);
}

static bool queue_name_ok(ctx_t *c, const seg_t *s)
{
    if (s->too_long || !sp_name_valid(s->s, s->len)) {
        respond_err(c->req, 400, "invalid_queue_name",
                    "queue names are 1-128 characters of A-Z a-z 0-9 . _ : -");
        return false;
    }
    return true;
}

static void route_submit(ctx_t *c, const seg_t *queue)
{
    if (!read_query(c, NULL, NULL) || !read_body(c, false)) return;
    sp_job_spec_t spec;
    char err[512];
    if (sp_job_spec_parse(c->body, sp_now_ms(), "", &spec, err, sizeof err)) {
        respond_err(c->req, 400, "invalid_request", "%s", err);
        return;
    }
    const sp_http_header_t *key = sp_http_req_header(c->req, "idempotency-key");
    if (key && sp_job_spec_set_header_key(&spec, key->value, key->value_len, err, sizeof err)) {
        respond_err(c->req, 400, "invalid_request", "%s", err);
        return;
    }
    call_t *k = call_new(c, SP_BOP_SUBMIT);
    if (!k) return;
    c->api->backend->ops->submit(c->api->backend, queue->s, queue->len, &spec, submit_cb, k);
}

static void batch_cb(void *ud, int status, const char *why, const sp_jobrec_t *jobs,
                     const bool *existed, size_t n)
{
    sp_api_t *api;
    sp_http_req_t *req;
    sp_buf_t *b = call_answer(ud, status, why, &api, &req);
    if (!b) return;
    sp_buf_reserve(b, n * 40 + 16);
    bool any_new = false;
    sp_buf_puts(b, "{\"jobs\":[");
    for (size_t i = 0; i < n; i++) {
        if (i) sp_buf_putc(b, ',');
        sp_buf_puts(b, "{\"id\":");
        write_id(b, jobs[i].id);
        sp_buf_puts(b, ",\"state\":\"");
        sp_buf_puts(b, sp_state_name(jobs[i].state));
        sp_buf_puts(b, "\"}");
        if (!existed[i]) any_new = true;
    }
    sp_buf_puts(b, "]}");
    respond_json(api, req, any_new ? 201 : 200, NULL);
}

static void route_batch(ctx_t *c, const seg_t *queue)
{
    if (!read_query(c, NULL, NULL) || !read_body(c, false)) return;
    static const char *const fields[] = {"jobs", NULL};
    if (!only_fields(c, fields)) return;
    if (sp_http_req_header(c->req, "idempotency-key")) {
        respond_err(c->req, 400, "invalid_request",
                    "Idempotency-Key header is not accepted on a batch; give each job its own "
                    "idempotency_key");
        return;
    }
    sp_json_val_t arr;
    if (!field(c, "jobs", &arr) || arr.type != SP_JSON_ARRAY) {
        respond_err(c->req, 400, "invalid_request", "jobs: required, an array of job objects");
        return;
    }
    size_t n = sp_json_arr_len(arr);
    if (n == 0) {
        respond_err(c->req, 400, "invalid_request", "jobs: must hold at least one job");
        return;
    }
    if (n > MAX_BATCH) {
        respond_err(c->req, 413, "payload_too_large",
                    "jobs: at most %d jobs in one batch; split it", MAX_BATCH);
        return;
    }
    sp_job_spec_t *specs = malloc(n * sizeof *specs);
    if (!specs) {
        respond_err(c->req, 503, "out_of_memory", "the server is out of memory");
        return;
    }
    sp_json_iter_t it;
    sp_json_val_t v;
    sp_json_iter_init(&it, arr);
    int64_t now = sp_now_ms();
    char err[512];
    for (size_t i = 0; sp_json_arr_next(&it, &v); i++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "jobs[%zu].", i);
        if (sp_job_spec_parse(v, now, prefix, &specs[i], err, sizeof err)) {
            respond_err(c->req, 400, "invalid_request", "%s", err);
            free(specs);
            return;
        }
    }
    call_t *k = call_new(c, SP_BOP_BATCH);
    if (k)
        c->api->backend->ops->submit_batch(c->api->backend, queue->s, queue->len, specs, n,
                                           batch_cb, k);
    free(specs);
}

static void job_cb(void *ud, int status, const char *why, const sp_jobrec_t *job)
{
    sp_api_t *api;
    sp_http_req_t *req;
    sp_buf_t *b = call_answer(ud, status, why, &api, &req);
    if (!b) return;
    sp_job_write_json(b, job);
    respond_json(api, req, 200, NULL);
}

static bool job_id(ctx_t *c, const seg_t *s, uint64_t *id)
{
    if (s->too_long || sp_job_parse_id(s->s, s->len, id)) {
        respond_err(c->req, 404, "not_found", "no job with id '%.*s'", (int)SP_MIN(s->len, 64),
                    s->s);
        return false;
    }
    return true;
}

static void route_job_get(ctx_t *c, const seg_t *sid)
{
    static const char *const names[] = {"wait_ms", NULL};
    qval_t q[1];
    uint64_t id;
    int64_t wait_ms = 0;
    if (!read_query(c, names, q)) return;
    if (q[0].set && !query_int(c->req, "wait_ms", &q[0], 0, MAX_WAIT_MS, &wait_ms)) return;
    if (!job_id(c, sid, &id)) return;
    call_t *k = call_new(c, SP_BOP_GET);
    if (!k) return;
    sp_backend_t *be = c->api->backend;
    call_wait(k, be->ops->get(be, id, wait_ms, job_cb, k));
}

static void route_job_cancel(ctx_t *c, const seg_t *sid)
{
    static const char *const none[] = {NULL};
    uint64_t id;
    if (!read_query(c, NULL, NULL) || !read_body(c, true) || !only_fields(c, none)) return;
    if (!job_id(c, sid, &id)) return;
    call_t *k = call_new(c, SP_BOP_CANCEL);
    if (!k) return;
    c->api->backend->ops->cancel(c->api->backend, id, job_cb, k);
}

static void route_job_retry(ctx_t *c, const seg_t *sid)
{
    static const char *const none[] = {NULL};
    uint64_t id;
    if (!read_query(c, NULL, NULL) || !read_body(c, true) || !only_fields(c, none)) return;
    if (!job_id(c, sid, &id)) return;
    call_t *k = call_new(c, SP_BOP_RETRY);
    if (!k) return;
    c->api->backend->ops->retry(c->api->backend, id, job_cb, k);
}

/* ---- routes: worker protocol ------------------------------------------------------------ */

static void released_cb(void *ud, int status, const char *why, const sp_jobrec_t *job)
{
    (void)job;
    uint64_t id = (uint64_t)(uintptr_t)ud;
    if (status && status != SP_ECONFLICT && status != SP_ENOTFOUND)
        sp_warn("job %" PRIu64 ": could not hand back a lease its client left before getting "
                "(it goes back when the lease runs out): %s",
                id, why ? why : sp_strerror(status));
}

static void lease_cb(void *ud, int status, const char *why, const sp_jobrec_t *jobs, size_t n,
                     uint64_t next)
{
    (void)next;
    const call_t *k = ud;
    if (k->aborted && status == 0) {
        /* The client left before its answer (a backend that answers later, such as Redis):
         * what it would have been given goes back at once, its attempt not counted, instead of
         * waiting out its lease. */
        sp_backend_t *be = k->api->backend;
        for (size_t i = 0; i < n; i++)
            be->ops->release(be, jobs[i].id, jobs[i].lease, released_cb,
                             (void *)(uintptr_t)jobs[i].id);
    }
    sp_api_t *api;
    sp_http_req_t *req;
    sp_buf_t *b = call_answer(ud, status, why, &api, &req);
    if (!b) return;
    sp_buf_puts(b, "{\"jobs\":[");
    for (size_t i = 0; i < n; i++) {
        if (i) sp_buf_putc(b, ',');
        sp_job_write_lease_json(b, &jobs[i]);
    }
    sp_buf_puts(b, "]}");
    respond_json(api, req, 200, NULL);
}

static void route_lease(ctx_t *c)
{
    static const char *const fields[] = {"queues", "max", "wait_ms", "worker", NULL};
    if (!read_query(c, NULL, NULL) || !read_body(c, true) || !only_fields(c, fields)) return;
    int64_t max = 1, wait_ms = 0;
    if (!field_int(c, "max", 1, MAX_LEASE, &max)) return;
    if (!field_int(c, "wait_ms", 0, MAX_WAIT_MS, &wait_ms)) return;

    sp_lease_req_t lr = {0};
    lr.max = (size_t)max;
    char worker[SP_WORKER_MAX];
    sp_json_val_t v;
    if (field(c, "worker", &v)) {
        size_t len = 0;
        if (v.type != SP_JSON_STRING || sp_json_str_decode(v, worker, sizeof worker, &len) ||
            len == 0) {
            respond_err(c->req, 400, "invalid_request",
                        "worker: must be a string of 1-%d bytes naming the worker", SP_WORKER_MAX);
            return;
        }
        lr.worker = worker;
        lr.worker_len = len;
    } else {
        lr.worker = c->req->peer;
        lr.worker_len = strlen(c->req->peer);
    }

    /* Queue names are decoded into one block: names[i] point into it. */
    char *block = NULL;
    const char **names = NULL;
    size_t *lens = NULL;
    if (field(c, "queues", &v)) {
        size_t n = v.type == SP_JSON_ARRAY ? sp_json_arr_len(v) : 0;
        if (v.type != SP_JSON_ARRAY || n == 0 || n > MAX_LEASE_QUEUES) {
            respond_err(c->req, 400, "invalid_request",
                        "queues: must be a non-empty array of queue names (omit it for every "
                        "queue)");
            return;
        }
        block = malloc(n * (SP_NAME_MAX + 1));
        names = malloc(n * sizeof *names);
        lens = malloc(n * sizeof *lens);
        if (!block || !names || !lens) {
            respond_err(c->req, 503, "out_of_memory", "the server is out of memory");
            goto done;
        }
        sp_json_iter_t it;
        sp_json_val_t q;
        sp_json_iter_init(&it, v);
        for (size_t i = 0; sp_json_arr_next(&it, &q); i++) {
            char *dst = block + i * (SP_NAME_MAX + 1);
            size_t len = 0;
            if (q.type != SP_JSON_STRING || sp_json_str_decode(q, dst, SP_NAME_MAX, &len) ||
                !sp_name_valid(dst, len)) {
                respond_err(c->req, 400, "invalid_request",
                            "queues[%zu]: must be a queue name, 1-128 characters of A-Z a-z 0-9 "
                            ". _ : -",
                            i);
                goto done;
            }
            names[i] = dst;
            lens[i] = len;
        }
        lr.queues = names;
        lr.queue_lens = lens;
        lr.nqueues = n;
    }

    call_t *k = call_new(c, SP_BOP_LEASE);
    if (k) {
        sp_backend_t *be = c->api->backend;
        call_wait(k, be->ops->lease(be, &lr, wait_ms, lease_cb, k));
    }
done:
    free(block);
    free(names);
    free(lens);
}

static void route_ack(ctx_t *c, const seg_t *sid)
{
    static const char *const fields[] = {"lease", "result", NULL};
    uint64_t id, lease;
    if (!read_query(c, NULL, NULL) || !read_body(c, false) || !only_fields(c, fields)) return;
    if (!field_lease(c, &lease) || !job_id(c, sid, &id)) return;
    sp_json_val_t v;
    const char *result = NULL;
    size_t result_len = 0;
    if (field(c, "result", &v)) {
        result = v.start;
        result_len = v.len;
    }
    call_t *k = call_new(c, SP_BOP_ACK);
    if (!k) return;
    c->api->backend->ops->ack(c->api->backend, id, lease, result, result_len, true, job_cb, k);
}

static void route_fail(ctx_t *c, const seg_t *sid)
{
    static const char *const fields[] = {"lease", "error", "retry", "retry_in_ms", NULL};
    uint64_t id, lease;
    if (!read_query(c, NULL, NULL) || !read_body(c, false) || !only_fields(c, fields)) return;
    if (!field_lease(c, &lease) || !job_id(c, sid, &id)) return;
    char error[4096];
    size_t error_len = 0;
    const char *errp = NULL;
    sp_json_val_t v;
    if (field(c, "error", &v)) {
        if (v.type != SP_JSON_STRING) {
            respond_err(c->req, 400, "invalid_request", "error: must be a string");
            return;
        }
        sp_json_str_decode(v, error, sizeof error, &error_len);
        error_len = SP_MIN(error_len, sizeof error); /* long errors are cut, not refused */
        errp = error;
    }
    bool retry = true;
    if (field(c, "retry", &v)) {
        if (v.type != SP_JSON_TRUE && v.type != SP_JSON_FALSE) {
            respond_err(c->req, 400, "invalid_request", "retry: must be true or false");
            return;
        }
        retry = v.type == SP_JSON_TRUE;
    }
    int64_t retry_in_ms = -1;
    if (!field_int(c, "retry_in_ms", 0, 86400000, &retry_in_ms)) return;
    call_t *k = call_new(c, SP_BOP_FAIL);
    if (!k) return;
    c->api->backend->ops->fail(c->api->backend, id, lease, errp, error_len, retry, retry_in_ms,
                               job_cb, k);
}

static void heartbeat_cb(void *ud, int status, const char *why, const sp_jobrec_t *job)
{
    sp_api_t *api;
    sp_http_req_t *req;
    sp_buf_t *b = call_answer(ud, status, why, &api, &req);
    if (!b) return;
    sp_buf_puts(b, "{\"lease_expires_at\":");
    sp_buf_i64(b, job->lease_expires_at);
    sp_buf_puts(b, job->cancel_requested ? ",\"cancel_requested\":true}"
                                         : ",\"cancel_requested\":false}");
    respond_json(api, req, 200, NULL);
}

static void route_heartbeat(ctx_t *c, const seg_t *sid)
{
    static const char *const fields[] = {"lease", "extend_ms", NULL};
    uint64_t id, lease;
    if (!read_query(c, NULL, NULL) || !read_body(c, false) || !only_fields(c, fields)) return;
    if (!field_lease(c, &lease)) return;
    int64_t extend_ms = -1;
    if (!field_int(c, "extend_ms", SP_TIMEOUT_MS_MIN, SP_TIMEOUT_MS_MAX, &extend_ms)) return;
    if (!job_id(c, sid, &id)) return;
    call_t *k = call_new(c, SP_BOP_HEARTBEAT);
    if (!k) return;
    c->api->backend->ops->heartbeat(c->api->backend, id, lease, extend_ms, heartbeat_cb, k);
}

static void route_release(ctx_t *c, const seg_t *sid)
{
    static const char *const fields[] = {"lease", NULL};
    uint64_t id, lease;
    if (!read_query(c, NULL, NULL) || !read_body(c, false) || !only_fields(c, fields)) return;
    if (!field_lease(c, &lease) || !job_id(c, sid, &id)) return;
    call_t *k = call_new(c, SP_BOP_RELEASE);
    if (!k) return;
    c->api->backend->ops->release(c->api->backend, id, lease, job_cb, k);
}

/* POST /v1/ack: each entry answers in its slot as the single ack would. */
typedef struct ackbatch ackbatch_t;

typedef struct {
    ackbatch_t *batch;
    int status;
    uint64_t id;
    bool has_id;
    char code[24];
    char message[160];
} ackslot_t;

struct ackbatch {
    call_t *call;
    ackslot_t *slots;
    size_t n;
    size_t remaining; /* answers still to come, plus one while entries are being sent */
};

static void slot_err(ackslot_t *s, int status, const char *code, const char *msg)
{
    s->status = status;
    snprintf(s->code, sizeof s->code, "%s", code);
    snprintf(s->message, sizeof s->message, "%s", msg);
}

static void ackbatch_done(ackbatch_t *ab)
{
    if (--ab->remaining > 0) return;
    sp_api_t *api;
    sp_http_req_t *req;
    if (call_end(ab->call, &api, &req)) {
        sp_buf_t *b = &api->out;
        sp_buf_reset(b);
        sp_buf_puts(b, "{\"acks\":[");
        for (size_t i = 0; i < ab->n; i++) {
            ackslot_t *s = &ab->slots[i];
            if (i) sp_buf_putc(b, ',');
            sp_buf_puts(b, "{\"id\":");
            if (s->has_id)
                write_id(b, s->id);
            else
                sp_buf_puts(b, "null");
            sp_buf_puts(b, ",\"status\":");
            sp_buf_i64(b, s->status);
            if (s->status != 200) {
                sp_buf_puts(b, ",\"error\":{\"code\":");
                sp_buf_json_str(b, s->code, strlen(s->code));
                sp_buf_puts(b, ",\"message\":");
                sp_buf_json_str(b, s->message, strlen(s->message));
                sp_buf_putc(b, '}');
            }
            sp_buf_putc(b, '}');
        }
        sp_buf_puts(b, "]}");
        respond_json(api, req, 200, NULL);
    }
    free(ab->slots);
    free(ab);
}

static void ack_one_cb(void *ud, int status, const char *why, const sp_jobrec_t *job)
{
    (void)job;
    ackslot_t *s = ud;
    if (status == 0)
        s->status = 200;
    else if (status == SP_ENOTFOUND)
        slot_err(s, 404, "not_found", why ? why : "no such job");
    else if (status == SP_ECONFLICT)
        slot_err(s, 409, "conflict", why ? why : "conflict");
    else
        slot_err(s, 503, "unavailable", why ? why : sp_strerror(status));
    ackbatch_done(s->batch);
}

/* Checks one entry of an ack batch; returns true with its lease and result when it can be
 * sent, else fills its slot with the 400 the single ack would have answered. */
static bool ack_entry(sp_json_val_t e, ackslot_t *s, uint64_t *lease, sp_json_val_t *result)
{
    char err[160];
    sp_json_val_t v, k;
    if (e.type != SP_JSON_OBJECT) {
        slot_err(s, 400, "invalid_request", "each ack must be an object {id, lease, result}");
        return false;
    }
    if (sp_json_obj_get(e, "id", &v) && sp_job_parse_id_json(v, &s->id) == 0) s->has_id = true;
    if (sp_json_check_unique_keys(e, err, sizeof err)) {
        slot_err(s, 400, "invalid_request", err);
        return false;
    }
    sp_json_iter_t it;
    sp_json_iter_init(&it, e);
    while (sp_json_obj_next(&it, &k, &v)) {
        if (!sp_json_str_eq(k, "id") && !sp_json_str_eq(k, "lease") &&
            !sp_json_str_eq(k, "result")) {
            slot_err(s, 400, "invalid_request", "unknown field; an ack has id, lease and result");
            return false;
        }
    }
    if (!s->has_id) {
        slot_err(s, 400, "invalid_request", "id: required, the job's id");
        return false;
    }
    if (!sp_json_obj_get(e, "lease", &v) || sp_job_parse_id_json(v, lease)) {
        slot_err(s, 400, "invalid_request", "lease: required, the lease token");
        return false;
    }
    result->type = SP_JSON_NULL;
    result->start = NULL;
    result->len = 0;
    if (sp_json_obj_get(e, "result", &v) && v.type != SP_JSON_NULL) *result = v;
    return true;
}

static void route_ack_batch(ctx_t *c)
{
    static const char *const fields[] = {"acks", NULL};
    if (!read_query(c, NULL, NULL) || !read_body(c, false) || !only_fields(c, fields)) return;
    sp_json_val_t arr;
    if (!field(c, "acks", &arr) || arr.type != SP_JSON_ARRAY) {
        respond_err(c->req, 400, "invalid_request",
                    "acks: required, an array of {\"id\", \"lease\", \"result\"} objects");
        return;
    }
    size_t n = sp_json_arr_len(arr);
    if (n == 0) {
        respond_err(c->req, 400, "invalid_request", "acks: must hold at least one ack");
        return;
    }
    if (n > MAX_ACKS) {
        respond_err(c->req, 413, "payload_too_large", "acks: at most %d in one request", MAX_ACKS);
        return;
    }
    ackbatch_t *ab = calloc(1, sizeof *ab);
    ackslot_t *slots = calloc(n, sizeof *slots);
    call_t *k = ab && slots ? call_new(c, SP_BOP_ACK_BATCH) : NULL;
    if (!k) {
        free(ab);
        free(slots);
        if (!ab || !slots) respond_err(c->req, 503, "out_of_memory", "the server is out of memory");
        return;
    }
    ab->call = k;
    ab->slots = slots;
    ab->n = n;
    ab->remaining = n + 1;
    sp_backend_t *be = c->api->backend;
    sp_json_iter_t it;
    sp_json_val_t e;
    sp_json_iter_init(&it, arr);
    for (size_t i = 0; sp_json_arr_next(&it, &e); i++) {
        ackslot_t *s = &slots[i];
        s->batch = ab;
        uint64_t lease;
        sp_json_val_t result;
        if (ack_entry(e, s, &lease, &result))
            be->ops->ack(be, s->id, lease, result.start, result.len, false, ack_one_cb, s);
        else
            ackbatch_done(ab);
    }
    ackbatch_done(ab);
}

/* ---- routes: queues --------------------------------------------------------------------- */

static void queues_cb(void *ud, int status, const char *why, const sp_queue_stats_t *qs, size_t n)
{
    sp_api_t *api;
    sp_http_req_t *req;
    sp_buf_t *b = call_answer(ud, status, why, &api, &req);
    if (!b) return;
    sp_buf_puts(b, "{\"queues\":[");
    for (size_t i = 0; i < n; i++) {
        if (i) sp_buf_putc(b, ',');
        write_queue(b, &qs[i]);
    }
    sp_buf_puts(b, "]}");
    respond_json(api, req, 200, NULL);
}

static void queue_cb(void *ud, int status, const char *why, const sp_queue_stats_t *qs, size_t n)
{
    sp_api_t *api;
    sp_http_req_t *req;
    /* A backend answers one queue or an error; anything else is treated as not found. */
    sp_buf_t *b = call_answer(ud, status == 0 && n != 1 ? SP_ENOTFOUND : status, why, &api, &req);
    if (!b) return;
    write_queue(b, qs);
    respond_json(api, req, 200, NULL);
}

static void route_queues(ctx_t *c)
{
    if (!read_query(c, NULL, NULL)) return;
    call_t *k = call_new(c, SP_BOP_QUEUES);
    if (!k) return;
    c->api->backend->ops->queues(c->api->backend, NULL, 0, queues_cb, k);
}

static void route_queue_get(ctx_t *c, const seg_t *q)
{
    if (!read_query(c, NULL, NULL)) return;
    call_t *k = call_new(c, SP_BOP_QUEUES);
    if (!k) return;
    c->api->backend->ops->queues(c->api->backend, q->s, q->len, queue_cb, k);
}

static void route_pause(ctx_t *c, const seg_t *q, bool pause)
{
    static const char *const none[] = {NULL};
    if (!read_query(c, NULL, NULL) || !read_body(c, true) || !only_fields(c, none)) return;
    call_t *k = call_new(c, SP_BOP_PAUSE);
    if (!k) return;
    c->api->backend->ops->pause(c->api->backend, q->s, q->len, pause, queue_cb, k);
}

static void list_cb(void *ud, int status, const char *why, const sp_jobrec_t *jobs, size_t n,
                    uint64_t next)
{
    sp_api_t *api;
    sp_http_req_t *req;
    sp_buf_t *b = call_answer(ud, status, why, &api, &req);
    if (!b) return;
    sp_buf_puts(b, "{\"jobs\":[");
    for (size_t i = 0; i < n; i++) {
        if (i) sp_buf_putc(b, ',');
        sp_job_write_json(b, &jobs[i]);
    }
    sp_buf_puts(b, "],\"next\":");
    if (next)
        write_id(b, next);
    else
        sp_buf_puts(b, "null");
    sp_buf_putc(b, '}');
    respond_json(api, req, 200, NULL);
}

static bool query_state(sp_http_req_t *req, const qval_t *v, sp_state_t *out)
{
    if (sp_state_parse(v->v, v->len, out)) {
        respond_err(req, 400, "invalid_query",
                    "state: must be one of scheduled, queued, running, succeeded, failed, "
                    "canceled");
        return false;
    }
    return true;
}

static void route_list(ctx_t *c, const seg_t *queue)
{
    static const char *const names[] = {"state", "limit", "after", NULL};
    qval_t q[3];
    if (!read_query(c, names, q)) return;
    int state = -1;
    int64_t limit = DEFAULT_LIST;
    uint64_t after = 0;
    if (q[0].set) {
        sp_state_t s;
        if (!query_state(c->req, &q[0], &s)) return;
        state = (int)s;
    }
    if (q[1].set && !query_int(c->req, "limit", &q[1], 1, MAX_LIST, &limit)) return;
    if (q[2].set && sp_job_parse_id(q[2].v, q[2].len, &after)) {
        respond_err(c->req, 400, "invalid_query", "after: must be a job id (the `next` value)");
        return;
    }
    call_t *k = call_new(c, SP_BOP_LIST);
    if (!k) return;
    c->api->backend->ops->list(c->api->backend, queue->s, queue->len, state, after, (size_t)limit,
                               list_cb, k);
}

static void purge_cb(void *ud, int status, const char *why, uint64_t n)
{
    sp_api_t *api;
    sp_http_req_t *req;
    sp_buf_t *b = call_answer(ud, status, why, &api, &req);
    if (!b) return;
    sp_buf_puts(b, "{\"deleted\":");
    sp_buf_u64(b, n);
    sp_buf_putc(b, '}');
    respond_json(api, req, 200, NULL);
}

static void route_purge(ctx_t *c, const seg_t *queue)
{
    static const char *const names[] = {"state", NULL};
    qval_t q[1];
    if (!read_query(c, names, q)) return;
    if (!q[0].set) {
        respond_err(c->req, 400, "invalid_query",
                    "state: required; purge one state at a time, e.g. ?state=failed");
        return;
    }
    sp_state_t s;
    if (!query_state(c->req, &q[0], &s)) return;
    if (s == SP_STATE_RUNNING) {
        respond_err(c->req, 400, "invalid_query",
                    "state: running jobs cannot be purged; cancel them instead");
        return;
    }
    call_t *k = call_new(c, SP_BOP_PURGE);
    if (!k) return;
    c->api->backend->ops->purge(c->api->backend, queue->s, queue->len, s, purge_cb, k);
}

/* ---- routes: monitoring ----------------------------------------------------------------- */

static void metrics_cb(void *ud, int status, const char *why, const sp_queue_stats_t *qs, size_t n)
{
    sp_api_t *api;
    sp_http_req_t *req;
    sp_buf_t *b = call_answer(ud, status, why, &api, &req);
    if (!b) return;
    sp_metrics_render(api->metrics, b, qs, n);
    if (api->out.oom) {
        sp_buf_free(b); /* clears oom for the next answer */
        respond_err(req, 503, "out_of_memory", "the server is out of memory");
        return;
    }
    sp_http_respond(req, 200, SP_METRICS_CONTENT_TYPE, NULL, api->out.data, api->out.len);
}

static void route_metrics(ctx_t *c)
{
    if (!c->api->metrics) {
        respond_err(c->req, 503, "unavailable", "metrics are not enabled in this process");
        return;
    }
    call_t *k = call_new(c, SP_BOP_QUEUES);
    if (!k) return;
    c->api->backend->ops->queues(c->api->backend, NULL, 0, metrics_cb, k);
}

/* The only parameter is `queue`, up to a whole queue name long (longer than read_query's
 * values), so the query is read here. */
static void route_events(ctx_t *c)
{
    sp_http_req_t *req = c->req;
    char queue[SP_NAME_MAX + 1];
    long queue_len = -1;
    const char *q = req->query, *end = q ? q + req->query_len : NULL;
    const char *name, *value;
    size_t name_len, value_len;
    while (q && sp_http_query_next(&q, end, &name, &name_len, &value, &value_len)) {
        char dname[64];
        long dn = sp_http_pct_decode(name, name_len, dname, sizeof dname - 1);
        if (dn < 0) {
            respond_err(req, 400, "invalid_query",
                        "a query parameter name is malformed or too long");
            return;
        }
        dname[dn] = '\0';
        if (dn == 0 && value_len == 0) continue;
        if (strcmp(dname, "queue") != 0) {
            respond_err(req, 400, "invalid_query", "unknown query parameter '%s'", dname);
            return;
        }
        if (queue_len >= 0) {
            respond_err(req, 400, "invalid_query",
                        "query parameter 'queue' is repeated; give it once");
            return;
        }
        queue_len = sp_http_pct_decode(value, value_len, queue, sizeof queue);
        if (queue_len < 0 || !sp_name_valid(queue, (size_t)queue_len)) {
            respond_err(req, 400, "invalid_query",
                        "queue: must be a queue name, 1-128 bytes of [A-Za-z0-9._:-]");
            return;
        }
    }
    if (!c->api->events) {
        respond_err(req, 503, "unavailable", "the event stream is not enabled in this process");
        return;
    }
    sp_events_add(c->api->events, req, queue_len >= 0 ? queue : NULL,
                  queue_len >= 0 ? (size_t)queue_len : 0);
}

/* ---- routing ---------------------------------------------------------------------------- */

enum { M_GET = 1, M_POST = 2, M_DELETE = 4 };

static void method_not_allowed(sp_http_req_t *req, int allowed)
{
    char allow[96] = "Allow: ";
    if (allowed & M_GET) strncat(allow, "GET, HEAD, ", sizeof allow - strlen(allow) - 1);
    if (allowed & M_POST) strncat(allow, "POST, ", sizeof allow - strlen(allow) - 1);
    if (allowed & M_DELETE) strncat(allow, "DELETE, ", sizeof allow - strlen(allow) - 1);
    size_t n = strlen(allow);
    allow[n - 2] = '\r';
    allow[n - 1] = '\n';
    sp_http_respond_error(req, 405, "method_not_allowed",
                          "this path does not answer that method; see the Allow header", allow);
}

static bool split_path(ctx_t *c, seg_t *segs)
{
    const char *p = c->req->path, *end = c->req->path + c->req->path_len;
    c->nseg = 0;
    if (p == end || *p != '/') return false;
    p++;
    if (p == end) return true; /* "/" */
    while (p <= end) {
        const char *s = p;
        while (p < end && *p != '/') p++;
        if (c->nseg == MAX_SEGMENTS) return false;
        seg_t *seg = &segs[c->nseg++];
        long n = sp_http_pct_decode(s, (size_t)(p - s), seg->s, SP_NAME_MAX + 1);
        seg->too_long = n < 0 || n > SP_NAME_MAX;
        seg->len = n < 0 ? 0 : (size_t)n;
        if (n < 0 && (size_t)(p - s) <= SP_NAME_MAX) return false; /* a malformed escape */
        p++;
    }
    return true;
}

static bool seg_is(const seg_t *s, const char *lit)
{
    return !s->too_long && s->len == strlen(lit) && memcmp(s->s, lit, s->len) == 0;
}

static bool auth_ok(const sp_api_t *api, const sp_http_req_t *req)
{
    const sp_http_header_t *h = sp_http_req_header(req, "authorization");
    if (!h || h->value_len < 7 || strncasecmp(h->value, "Bearer ", 7) != 0) return false;
    const char *t = h->value + 7;
    size_t n = h->value_len - 7;
    while (n && *t == ' ') t++, n--;
    if (n != api->token_len) return false;
    unsigned char diff = 0; /* compare in constant time */
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)(t[i] ^ api->token[i]);
    return diff == 0;
}

/* Dispatches on the method mask; answers 405 when the method is not among `allowed`. */
#define ON(mask) if (m == (mask))

static void route(ctx_t *c)
{
    sp_http_req_t *req = c->req;
    seg_t *s = c->seg;
    int m = req->method == SP_HTTP_GET || req->method == SP_HTTP_HEAD ? M_GET
            : req->method == SP_HTTP_POST                             ? M_POST
            : req->method == SP_HTTP_DELETE                           ? M_DELETE
                                                                      : 0;
    size_t n = c->nseg;
    int allowed = 0;

    if (sp_dashboard_path(req->path, req->path_len)) {
        allowed = M_GET;
        ON(M_GET) return sp_dashboard_serve(req);
    } else if (n == 1 && seg_is(&s[0], "metrics")) {
        allowed = M_GET;
        ON(M_GET) return route_metrics(c);
    } else if (n == 1 && seg_is(&s[0], "healthz")) {
        allowed = M_GET;
        ON(M_GET) return route_healthz(c);
    } else if (n == 1 && seg_is(&s[0], "readyz")) {
        allowed = M_GET;
        ON(M_GET) return route_readyz(c);
    } else if (n >= 2 && seg_is(&s[0], "v1")) {
        if (n == 2 && seg_is(&s[1], "queues")) {
            allowed = M_GET;
            ON(M_GET) return route_queues(c);
        } else if (n == 2 && seg_is(&s[1], "events")) {
            allowed = M_GET;
            ON(M_GET) return route_events(c);
        } else if (n == 2 && seg_is(&s[1], "lease")) {
            allowed = M_POST;
            ON(M_POST) return route_lease(c);
        } else if (n == 2 && seg_is(&s[1], "ack")) {
            allowed = M_POST;
            ON(M_POST) return route_ack_batch(c);
        } else if (n >= 3 && seg_is(&s[1], "queues")) {
            if (n == 3) {
                allowed = M_GET;
                if (m == M_GET && queue_name_ok(c, &s[2])) return route_queue_get(c, &s[2]);
                if (m == M_GET) return;
            } else if (n == 4 && seg_is(&s[3], "jobs")) {
                allowed = M_GET | M_POST | M_DELETE;
                if (m && !queue_name_ok(c, &s[2])) return;
                ON(M_POST) return route_submit(c, &s[2]);
                ON(M_GET) return route_list(c, &s[2]);
                ON(M_DELETE) return route_purge(c, &s[2]);
            } else if (n == 4 && seg_is(&s[3], "batch")) {
                allowed = M_POST;
                if (m == M_POST && queue_name_ok(c, &s[2])) return route_batch(c, &s[2]);
                if (m == M_POST) return;
            } else if (n == 4 && (seg_is(&s[3], "pause") || seg_is(&s[3], "resume"))) {
                allowed = M_POST;
                if (m == M_POST && queue_name_ok(c, &s[2]))
                    return route_pause(c, &s[2], seg_is(&s[3], "pause"));
                if (m == M_POST) return;
            }
        } else if (n >= 3 && seg_is(&s[1], "jobs")) {
            if (n == 3) {
                allowed = M_GET | M_DELETE;
                ON(M_GET) return route_job_get(c, &s[2]);
                ON(M_DELETE) return route_job_cancel(c, &s[2]);
            } else if (n == 4) {
                allowed = M_POST;
                if (m == M_POST) {
                    if (seg_is(&s[3], "retry")) return route_job_retry(c, &s[2]);
                    if (seg_is(&s[3], "ack")) return route_ack(c, &s[2]);
                    if (seg_is(&s[3], "fail")) return route_fail(c, &s[2]);
                    if (seg_is(&s[3], "heartbeat")) return route_heartbeat(c, &s[2]);
                    if (seg_is(&s[3], "release")) return route_release(c, &s[2]);
                }
                if (!seg_is(&s[3], "retry") && !seg_is(&s[3], "ack") && !seg_is(&s[3], "fail") &&
                    !seg_is(&s[3], "heartbeat") && !seg_is(&s[3], "release"))
                    allowed = 0;
            }
        }
    }
    if (allowed)
        method_not_allowed(req, allowed);
    else
        respond_err(req, 404, "not_found", "no such path: %.*s; see docs/API.md",
                    (int)SP_MIN(req->path_len, 200), req->path);
}

void sp_api_handle(void *ud, sp_http_req_t *req)
{
    sp_api_t *api = ud;
    /* The context lives on this stack frame: every backend answer that uses it arrives before
     * the backend call returns (memory backend); waiting calls carry their own context. */
    seg_t segs[MAX_SEGMENTS];
    ctx_t c = {.api = api, .req = req, .seg = segs};
    if (!split_path(&c, segs)) {
        respond_err(req, 400, "invalid_path", "the request path is malformed");
        return;
    }
    bool open_path = (c.nseg == 1 && (seg_is(&segs[0], "healthz") || seg_is(&segs[0], "readyz"))) ||
                     c.nseg == 0 || sp_dashboard_path(req->path, req->path_len);
    if (api->draining && !(c.nseg == 1 && seg_is(&segs[0], "healthz"))) {
        respond_err(req, 503, "shutting_down", "the server is shutting down; retry shortly");
        return;
    }
    if (api->token && !open_path && !auth_ok(api, req)) {
        respond_err(req, 401, "unauthorized",
                    "send the server's token as Authorization: Bearer <token>");
        return;
    }
    route(&c);
}

sp_api_t *sp_api_new(const sp_api_opts_t *opts)
{
    sp_api_t *api = calloc(1, sizeof *api);
    if (!api) return NULL;
    api->backend = opts->backend;
    if (opts->token) {
        api->token = malloc(opts->token_len + 1);
        if (!api->token) {
            free(api);
            return NULL;
        }
        memcpy(api->token, opts->token, opts->token_len);
        api->token[opts->token_len] = '\0';
        api->token_len = opts->token_len;
    }
    sp_buf_init(&api->out);
    return api;
}

void sp_api_free(sp_api_t *api)
{
    if (!api) return;
    free(api->token);
    sp_buf_free(&api->out);
    free(api);
}

void sp_api_set_draining(sp_api_t *api, bool draining)
{
    api->draining = draining;
}

void sp_api_set_monitor(sp_api_t *api, sp_events_t *events, sp_metrics_t *metrics)
{
    api->events = events;
    api->metrics = metrics;
}
