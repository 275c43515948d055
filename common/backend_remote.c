/*
 * backend_remote.c - the remote backend (see backend_remote.h): each worker operation becomes
 * an HTTP request on one keep-alive client, answers are parsed with the JSON scanner into
 * sp_jobrec_t views, and acks of one loop turn are batched.
 *
 * How it runs:
 * - Every operation in flight is an op_t on the backend's list, so that close can answer them
 *   all. An op owns the request body it sends and, once it has had to wait for a retry, a
 *   timer; an op whose timer was started is freed in the timer's close callback.
 * - An ack is first parked on the pending list; a uv_idle handle (which also keeps the loop
 *   from blocking in poll) flushes the list on the next idle phase, as one batch op whose
 *   members are the parked acks, or as a single ack when it is alone.
 * - `refs` counts the backend's own idle handle, op timers being closed and the HTTP client, so
 *   that the backend is freed only after the last of them.
 */
#include "backend_remote.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "buf.h"
#include "http_client.h"
#include "json.h"
#include "log.h"
#include "sp.h"

#define ACK_BATCH_MAX 1000
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS_DEFAULT 2000
#define FINISH_TRIES 5          /* ack, fail and release while the server is unreachable */
#define FINISH_RETRY_MIN_MS 200 /* their first pause; doubling */
#define LEASE_SLACK_MS 10000    /* the long poll's request timeout beyond wait_ms */
#define HB_TIMEOUT_MS 10000
#define READY_TIMEOUT_MS 5000
#define JSON_DEPTH (SP_JSON_MAX_DEPTH + 4)

typedef struct remote remote_t;
typedef struct op op_t;

typedef enum { OP_LEASE, OP_ACK, OP_ACKS, OP_FAIL, OP_HB, OP_RELEASE, OP_READY } op_kind_t;

struct op {
    remote_t *r;
    op_kind_t kind;
    uint64_t id;
    union {
        sp_be_jobs_cb jobs;
        sp_be_job_cb job;
        sp_be_status_cb status;
    } cb;
    void *ud;
    const char *method;
    char path[96];
    char *body;
    size_t body_len;
    uint64_t timeout_ms;
    int tries;            /* attempts made */
    int max_tries;        /* 0 = until answered */
    sp_backoff_t backoff; /* between tries, set up at the first failure */
    sp_http_call_t *call;
    bool timer_on;
    uv_timer_t timer;
    /* OP_ACK: what goes into a batch. */
    uint64_t lease;
    char *result;
    size_t result_len;
    /* OP_ACKS: the parked acks it carries (each off the op list while carried). */
    op_t **members;
    size_t nmembers;
    op_t *next, *prev;
};

struct remote {
    sp_backend_t base;
    uv_loop_t *loop;
    sp_http_client_t *http;
    char *headers; /* Content-Type and Authorization lines */
    char url[300];
    int64_t retry_max_ms;
    bool down;
    bool auth_refused; /* logged once until a request succeeds */
    bool closing;
    op_t *ops;
    op_t **parked; /* acks waiting for the next flush */
    size_t nparked, cap_parked;
    uv_idle_t flush;
    size_t refs;
    void (*done)(void *ud);
    void *done_ud;
};

static void op_send(op_t *op);

/* ---- life of ops ------------------------------------------------------------------------- */

static void remote_unref(remote_t *r)
{
    if (--r->refs > 0) return;
    void (*done)(void *) = r->done;
    void *ud = r->done_ud;
    free(r->parked);
    free(r->headers);
    free(r);
    if (done) done(ud);
}

static op_t *op_new(remote_t *r, op_kind_t kind, uint64_t id, void *ud)
{
    op_t *op = calloc(1, sizeof *op);
    if (!op) return NULL;
    op->r = r;
    op->kind = kind;
    op->id = id;
    op->ud = ud;
    op->method = "POST";
    op->timeout_ms = 0;
    return op;
}

static void op_link(op_t *op)
{
    remote_t *r = op->r;
    op->prev = NULL;
    op->next = r->ops;
    if (r->ops) r->ops->prev = op;
    r->ops = op;
}

static void op_unlink(op_t *op)
{
    remote_t *r = op->r;
    if (op->prev)
        op->prev->next = op->next;
    else if (r->ops == op)
        r->ops = op->next;
    if (op->next) op->next->prev = op->prev;
    op->next = op->prev = NULL;
}

static void op_memfree(op_t *op)
{
    free(op->body);
    free(op->result);
    free(op->members);
    free(op);
}

static void op_timer_closed(uv_handle_t *h)
{
    op_t *op = h->data;
    remote_t *r = op->r;
    op_memfree(op);
    remote_unref(r);
}

/* Frees an op that is off every list and answered (or never to be answered). */
static void op_free(op_t *op)
{
    if (op->call) {
        sp_http_client_cancel(op->call);
        op->call = NULL;
    }
    if (op->timer_on) {
        op->r->refs++;
        uv_close((uv_handle_t *)&op->timer, op_timer_closed);
    } else {
        op_memfree(op);
    }
}

/* ---- outage state ------------------------------------------------------------------------ */

static void note_down(remote_t *r, const char *why)
{
    if (r->down) return;
    r->down = true;
    sp_warn("server unreachable: %s; retrying with backoff", why);
}

static void note_up(remote_t *r)
{
    if (!r->down) return;
    r->down = false;
    sp_info("server reachable again: %s", r->url);
}

/* ---- JSON answers ------------------------------------------------------------------------ */

/* Decodes a string into the arena (a decoded string is never longer than its JSON text). */
static const char *arena_str(sp_json_val_t v, char **arena, size_t *len)
{
    size_t n = 0;
    sp_json_str_decode(v, *arena, v.len, &n);
    const char *s = *arena;
    (*arena)[n] = '\0';
    *arena += n + 1;
    *len = n;
    return s;
}

static uint32_t json_u32(sp_json_val_t v)
{
    int64_t x = 0;
    if (v.type != SP_JSON_NUMBER || sp_json_int(v, &x) || x < 0 || x > UINT32_MAX) return 0;
    return (uint32_t)x;
}

static int64_t json_time(sp_json_val_t v)
{
    int64_t x = -1;
    if (v.type != SP_JSON_NUMBER || sp_json_int(v, &x)) return -1;
    return x;
}

/* Fills rec from a job record, a leased job or a heartbeat answer: whatever fields are there.
 * Strings go to the arena, which needs as many bytes as the object's text, plus one per
 * string. */
static void rec_parse(sp_json_val_t obj, char **arena, sp_jobrec_t *rec)
{
    memset(rec, 0, sizeof *rec);
    rec->state = SP_STATE_RUNNING;
    rec->created_at = rec->run_at = rec->started_at = rec->finished_at = -1;
    rec->lease_expires_at = -1;
    sp_json_iter_t it;
    sp_json_val_t k, v;
    sp_json_iter_init(&it, obj);
    while (sp_json_obj_next(&it, &k, &v)) {
        bool str = v.type == SP_JSON_STRING;
        if (sp_json_str_eq(k, "id")) {
            sp_job_parse_id_json(v, &rec->id);
        } else if (sp_json_str_eq(k, "lease")) {
            sp_job_parse_id_json(v, &rec->lease);
        } else if (sp_json_str_eq(k, "queue") && str) {
            rec->queue = arena_str(v, arena, &rec->queue_len);
        } else if (sp_json_str_eq(k, "type") && str) {
            rec->type = arena_str(v, arena, &rec->type_len);
        } else if (sp_json_str_eq(k, "payload")) {
            rec->payload = v.start;
            rec->payload_len = v.len;
        } else if (sp_json_str_eq(k, "result") && v.type != SP_JSON_NULL) {
            rec->result = v.start;
            rec->result_len = v.len;
        } else if (sp_json_str_eq(k, "state") && str) {
            size_t n;
            const char *s = arena_str(v, arena, &n);
            sp_state_t st;
            if (sp_state_parse(s, n, &st) == 0) rec->state = st;
        } else if (sp_json_str_eq(k, "last_error") && str) {
            rec->last_error = arena_str(v, arena, &rec->last_error_len);
        } else if (sp_json_str_eq(k, "worker") && str) {
            rec->worker = arena_str(v, arena, &rec->worker_len);
        } else if (sp_json_str_eq(k, "attempts")) {
            rec->attempts = json_u32(v);
        } else if (sp_json_str_eq(k, "max_attempts")) {
            rec->max_attempts = json_u32(v);
        } else if (sp_json_str_eq(k, "timeout_ms")) {
            rec->timeout_ms = json_u32(v);
        } else if (sp_json_str_eq(k, "backoff_ms")) {
            rec->backoff_ms = json_u32(v);
        } else if (sp_json_str_eq(k, "priority")) {
            rec->priority = (int)json_u32(v);
        } else if (sp_json_str_eq(k, "lease_expires_at")) {
            rec->lease_expires_at = json_time(v);
        } else if (sp_json_str_eq(k, "created_at")) {
            rec->created_at = json_time(v);
        } else if (sp_json_str_eq(k, "run_at")) {
            rec->run_at = json_time(v);
        } else if (sp_json_str_eq(k, "started_at")) {
            rec->started_at = json_time(v);
        } else if (sp_json_str_eq(k, "finished_at")) {
            rec->finished_at = json_time(v);
        } else if (sp_json_str_eq(k, "cancel_requested")) {
            rec->cancel_requested = v.type == SP_JSON_TRUE;
        }
    }
}

/* The message of an error answer {"error":{"message":..}}, else a generic text. */
static void error_text(const sp_http_resp_t *resp, char *out, size_t cap)
{
    sp_json_val_t root, e, m;
    char err[8];
    if (resp->body_len &&
        sp_json_parse(resp->body, resp->body_len, JSON_DEPTH, &root, err, sizeof err) == 0 &&
        root.type == SP_JSON_OBJECT && sp_json_obj_get(root, "error", &e) &&
        e.type == SP_JSON_OBJECT && sp_json_obj_get(e, "message", &m) && m.type == SP_JSON_STRING) {
        char msg[256];
        sp_json_str_preview(m, msg, sizeof msg);
        snprintf(out, cap, "server answered %d: %s", resp->status, msg);
        return;
    }
    snprintf(out, cap, "server answered %d", resp->status);
}

static int map_status(int http)
{
    if (http >= 200 && http < 300) return 0;
    switch (http) {
    case 404:
        return SP_ENOTFOUND;
    case 409:
        return SP_ECONFLICT;
    case 413:
        return SP_ETOOBIG;
    case 429:
        return SP_EFULL;
    default:
        return http >= 500 ? SP_EUNAVAIL : SP_EINVAL;
    }
}

/* ---- answering --------------------------------------------------------------------------- */

/* Answers an op with a status and no record; the op is off the list and is freed. */
static void op_answer_err(op_t *op, int status, const char *why)
{
    switch (op->kind) {
    case OP_LEASE:
        op->cb.jobs(op->ud, status, why, NULL, 0, 0);
        break;
    case OP_READY:
        op->cb.status(op->ud, status, why);
        break;
    case OP_ACKS:
        for (size_t i = 0; i < op->nmembers; i++) op_answer_err(op->members[i], status, why);
        op->nmembers = 0;
        break;
    default: {
        /* The pool reads nothing of the record on errors; a minimal record with the id is given. */
        sp_jobrec_t rec = {.id = op->id, .lease_expires_at = -1};
        op->cb.job(op->ud, status, why, status == 0 ? &rec : NULL);
        break;
    }
    }
    op_free(op);
}

static void answer_lease(op_t *op, const sp_http_resp_t *resp)
{
    char err[160];
    sp_json_val_t root, jobs, j;
    if (sp_json_parse(resp->body, resp->body_len, JSON_DEPTH, &root, err, sizeof err) ||
        root.type != SP_JSON_OBJECT || !sp_json_obj_get(root, "jobs", &jobs) ||
        jobs.type != SP_JSON_ARRAY) {
        op_answer_err(op, SP_EIO, "lease: the server's answer is not {\"jobs\": [...]}");
        return;
    }
    size_t n = sp_json_arr_len(jobs);
    sp_jobrec_t *recs = n ? calloc(n, sizeof *recs) : NULL;
    char *arena = n ? malloc(resp->body_len + 16 * n + 1) : NULL;
    if (n && (!recs || !arena)) {
        free(recs);
        free(arena);
        /* The leases expire and the jobs run again. */
        op_answer_err(op, SP_ENOMEM, "lease: out of memory");
        return;
    }
    char *a = arena;
    sp_json_iter_t it;
    sp_json_iter_init(&it, jobs);
    size_t i = 0;
    while (sp_json_arr_next(&it, &j) && i < n) {
        if (j.type != SP_JSON_OBJECT) continue;
        rec_parse(j, &a, &recs[i]);
        if (!recs[i].queue) recs[i].queue = "";
        if (!recs[i].type) recs[i].type = "";
        i++;
    }
    op->cb.jobs(op->ud, 0, NULL, recs, i, 0);
    free(recs);
    free(arena);
    op_free(op);
}

/* A job record, a heartbeat answer, or (for an answer that is not JSON) a minimal record. */
static void answer_job(op_t *op, const sp_http_resp_t *resp)
{
    char err[8];
    sp_json_val_t root;
    sp_jobrec_t rec;
    char *arena = NULL;
    if (resp->body_len &&
        sp_json_parse(resp->body, resp->body_len, JSON_DEPTH, &root, err, sizeof err) == 0 &&
        root.type == SP_JSON_OBJECT && (arena = malloc(resp->body_len + 16)) != NULL) {
        char *a = arena;
        rec_parse(root, &a, &rec);
    } else {
        memset(&rec, 0, sizeof rec);
        rec.lease_expires_at = -1;
    }
    if (!rec.id) rec.id = op->id;
    op->cb.job(op->ud, 0, NULL, &rec);
    free(arena);
    op_free(op);
}

/* {"acks":[{"id","status"},...]}: each member gets the status of its slot. */
static void answer_acks(op_t *op, const sp_http_resp_t *resp)
{
    char err[8];
    sp_json_val_t root, arr, e, st;
    if (sp_json_parse(resp->body, resp->body_len, JSON_DEPTH, &root, err, sizeof err) ||
        root.type != SP_JSON_OBJECT || !sp_json_obj_get(root, "acks", &arr) ||
        arr.type != SP_JSON_ARRAY) {
        op_answer_err(op, SP_EIO, "ack: the server's answer is not {\"acks\": [...]}");
        return;
    }
    sp_json_iter_t it;
    sp_json_iter_init(&it, arr);
    size_t i = 0;
    for (; i < op->nmembers && sp_json_arr_next(&it, &e); i++) {
        op_t *m = op->members[i];
        int64_t code = 0;
        if (e.type != SP_JSON_OBJECT || !sp_json_obj_get(e, "status", &st) ||
            sp_json_int(st, &code)) {
            op_answer_err(m, SP_EIO, "ack: a slot of the server's answer has no status");
            continue;
        }
        int s = map_status((int)code);
        if (s == 0) {
            sp_jobrec_t rec = {.id = m->id, .state = SP_STATE_SUCCEEDED, .lease_expires_at = -1};
            m->cb.job(m->ud, 0, NULL, &rec);
            op_free(m);
        } else {
            char why[64];
            snprintf(why, sizeof why, "ack answered %d", (int)code);
            op_answer_err(m, s, why);
        }
    }
    for (; i < op->nmembers; i++) op_answer_err(op->members[i], SP_EIO, "ack: no answer slot");
    op->nmembers = 0;
    op_free(op);
}

static void retry_fired(uv_timer_t *t)
{
    op_t *op = t->data;
    op_send(op);
}

/* A failure that may pass (no connection, a timeout, a 5xx): tries again later, or gives up. */
static void op_transient(op_t *op, const char *why)
{
    remote_t *r = op->r;
    note_down(r, why);
    if (op->max_tries && op->tries >= op->max_tries) {
        op_unlink(op);
        op_answer_err(op, SP_EUNAVAIL, why);
        return;
    }
    if (op->backoff.min_ms == 0) { /* the first failure: ops start zeroed */
        bool lease = op->kind == OP_LEASE;
        sp_backoff_init(&op->backoff, lease ? RETRY_MIN_MS : FINISH_RETRY_MIN_MS,
                        lease ? r->retry_max_ms : r->retry_max_ms * 2, 25);
    }
    int64_t delay = sp_backoff_next(&op->backoff);
    if (!op->timer_on) {
        uv_timer_init(r->loop, &op->timer);
        op->timer.data = op;
        op->timer_on = true;
    }
    uv_timer_start(&op->timer, retry_fired, (uint64_t)delay, 0);
}

static void op_answered(void *ud, int status, const char *why, const sp_http_resp_t *resp)
{
    op_t *op = ud;
    remote_t *r = op->r;
    op->call = NULL;
    if (status < 0 || status >= 500) {
        char text[300];
        if (status < 0)
            snprintf(text, sizeof text, "%s", why ? why : uv_strerror(status));
        else
            error_text(resp, text, sizeof text);
        if (r->closing) return; /* close answers it */
        op_transient(op, text);
        return;
    }
    note_up(r);
    op_unlink(op);
    int s = map_status(status);
    if (s == 0) r->auth_refused = false;
    if (s) {
        char text[300];
        error_text(resp, text, sizeof text);
        if (status == 401 && !r->auth_refused) {
            r->auth_refused = true;
            sp_error("the server refused this worker's token (401): check --token-file");
        }
        op_answer_err(op, s, text);
        return;
    }
    switch (op->kind) {
    case OP_LEASE:
        answer_lease(op, resp);
        break;
    case OP_ACKS:
        answer_acks(op, resp);
        break;
    case OP_READY:
        op->cb.status(op->ud, 0, NULL);
        op_free(op);
        break;
    default:
        answer_job(op, resp);
        break;
    }
}

static void op_send(op_t *op)
{
    remote_t *r = op->r;
    op->tries++;
    op->call = sp_http_client_request(r->http, op->method, op->path, r->headers, op->body,
                                      op->body_len, op->timeout_ms, op_answered, op);
    if (!op->call) op_transient(op, "out of memory making a request");
}

/* ---- operations -------------------------------------------------------------------------- */

static sp_backend_t *as_base(remote_t *r)
{
    return &r->base;
}

static remote_t *as_remote(sp_backend_t *b)
{
    return sp_container_of(b, remote_t, base);
}

/* Takes the body and starts the op; on failure to build, answers at once and returns false
 * (the op is gone). */
static bool op_start(op_t *op, sp_buf_t *body)
{
    if (body->oom) {
        sp_buf_free(body);
        op_answer_err(op, SP_ENOMEM, "out of memory");
        return false;
    }
    op->body = sp_buf_steal(body, &op->body_len);
    op_link(op);
    op_send(op);
    return true;
}

static void put_lease(sp_buf_t *b, uint64_t lease)
{
    sp_buf_puts(b, "{\"lease\":\"");
    sp_buf_u64(b, lease);
    sp_buf_putc(b, '"');
}

static void job_path(op_t *op, const char *what)
{
    snprintf(op->path, sizeof op->path, "/v1/jobs/%" PRIu64 "/%s", op->id, what);
}

static sp_be_wait_t *remote_lease(sp_backend_t *b, const sp_lease_req_t *req, int64_t wait_ms,
                                  sp_be_jobs_cb cb, void *ud)
{
    remote_t *r = as_remote(b);
    op_t *op = r->closing ? NULL : op_new(r, OP_LEASE, 0, ud);
    if (!op) {
        cb(ud, r->closing ? 0 : SP_ENOMEM, r->closing ? NULL : "out of memory", NULL, 0, 0);
        return NULL;
    }
    op->cb.jobs = cb;
    if (wait_ms < 0) wait_ms = 0;
    if (wait_ms > 60000) wait_ms = 60000;
    op->timeout_ms = (uint64_t)wait_ms + LEASE_SLACK_MS;
    snprintf(op->path, sizeof op->path, "/v1/lease");
    sp_buf_t body = SP_BUF_INIT;
    sp_buf_puts(&body, "{\"max\":");
    sp_buf_u64(&body, SP_MAX(SP_MIN(req->max, (size_t)ACK_BATCH_MAX), (size_t)1));
    sp_buf_puts(&body, ",\"wait_ms\":");
    sp_buf_i64(&body, wait_ms);
    if (req->worker && req->worker_len) {
        sp_buf_puts(&body, ",\"worker\":");
        sp_buf_json_str(&body, req->worker, req->worker_len);
    }
    if (req->queues && req->nqueues) {
        sp_buf_puts(&body, ",\"queues\":[");
        for (size_t i = 0; i < req->nqueues; i++) {
            if (i) sp_buf_putc(&body, ',');
            sp_buf_json_str(&body, req->queues[i], req->queue_lens[i]);
        }
        sp_buf_putc(&body, ']');
    }
    sp_buf_putc(&body, '}');
    return op_start(op, &body) ? (sp_be_wait_t *)op : NULL;
}

static void flush_fired(uv_idle_t *h);

static void remote_ack(sp_backend_t *b, uint64_t id, uint64_t lease, const char *result,
                       size_t result_len, bool want_job, sp_be_job_cb cb, void *ud)
{
    (void)want_job;
    remote_t *r = as_remote(b);
    if (r->closing) {
        cb(ud, SP_EUNAVAIL, "the worker is shutting down", NULL);
        return;
    }
    op_t *op = op_new(r, OP_ACK, id, ud);
    if (!result || !result_len) {
        result = "null";
        result_len = 4;
    }
    char *res = op ? malloc(result_len) : NULL;
    if (!res || (r->nparked == r->cap_parked && r->cap_parked >= 1u << 24)) {
        free(res);
        free(op);
        cb(ud, SP_ENOMEM, "out of memory", NULL);
        return;
    }
    if (r->nparked == r->cap_parked) {
        size_t cap = r->cap_parked ? r->cap_parked * 2 : 64;
        op_t **np = realloc(r->parked, cap * sizeof *np);
        if (!np) {
            free(res);
            free(op);
            cb(ud, SP_ENOMEM, "out of memory", NULL);
            return;
        }
        r->parked = np;
        r->cap_parked = cap;
    }
    memcpy(res, result, result_len);
    op->cb.job = cb;
    op->lease = lease;
    op->result = res;
    op->result_len = result_len;
    r->parked[r->nparked++] = op;
    if (r->nparked == 1) uv_idle_start(&r->flush, flush_fired);
}

/* Sends parked[from, from+n) as one request. */
static void flush_some(remote_t *r, size_t from, size_t n)
{
    if (n == 1) {
        op_t *op = r->parked[from];
        job_path(op, "ack");
        sp_buf_t body = SP_BUF_INIT;
        put_lease(&body, op->lease);
        sp_buf_puts(&body, ",\"result\":");
        sp_buf_append(&body, op->result, op->result_len);
        sp_buf_putc(&body, '}');
        op_start(op, &body);
        return;
    }
    op_t *batch = op_new(r, OP_ACKS, 0, NULL);
    op_t **members = batch ? malloc(n * sizeof *members) : NULL;
    if (!members) {
        free(batch);
        for (size_t i = 0; i < n; i++)
            op_answer_err(r->parked[from + i], SP_ENOMEM, "out of memory");
        return;
    }
    memcpy(members, &r->parked[from], n * sizeof *members);
    batch->members = members;
    batch->nmembers = n;
    snprintf(batch->path, sizeof batch->path, "/v1/ack");
    sp_buf_t body = SP_BUF_INIT;
    size_t need = 16;
    for (size_t i = 0; i < n; i++) need += members[i]->result_len + 64;
    sp_buf_reserve(&body, need);
    sp_buf_puts(&body, "{\"acks\":[");
    for (size_t i = 0; i < n; i++) {
        op_t *m = members[i];
        if (i) sp_buf_putc(&body, ',');
        sp_buf_puts(&body, "{\"id\":\"");
        sp_buf_u64(&body, m->id);
        sp_buf_puts(&body, "\",\"lease\":\"");
        sp_buf_u64(&body, m->lease);
        sp_buf_puts(&body, "\",\"result\":");
        sp_buf_append(&body, m->result, m->result_len);
        sp_buf_putc(&body, '}');
    }
    sp_buf_puts(&body, "]}");
    op_start(batch, &body);
}

static void flush_fired(uv_idle_t *h)
{
    remote_t *r = h->data;
    uv_idle_stop(h);
    size_t n = r->nparked;
    r->nparked = 0;
    for (size_t from = 0; from < n; from += ACK_BATCH_MAX) {
        flush_some(r, from, SP_MIN(n - from, (size_t)ACK_BATCH_MAX));
    }
}

static void remote_fail(sp_backend_t *b, uint64_t id, uint64_t lease, const char *error,
                        size_t error_len, bool retry, int64_t retry_in_ms, sp_be_job_cb cb,
                        void *ud)
{
    remote_t *r = as_remote(b);
    op_t *op = r->closing ? NULL : op_new(r, OP_FAIL, id, ud);
    if (!op) {
        cb(ud, r->closing ? SP_EUNAVAIL : SP_ENOMEM,
           r->closing ? "the worker is shutting down" : "out of memory", NULL);
        return;
    }
    op->cb.job = cb;
    op->max_tries = FINISH_TRIES;
    job_path(op, "fail");
    sp_buf_t body = SP_BUF_INIT;
    put_lease(&body, lease);
    sp_buf_puts(&body, ",\"error\":");
    if (!error) {
        error = "failed";
        error_len = 6;
    }
    /* The error text is plain bytes from a handler: keep only its valid UTF-8 prefix. */
    sp_buf_json_str(&body, error, sp_json_utf8_span(error, error_len));
    sp_buf_puts(&body, retry ? ",\"retry\":true" : ",\"retry\":false");
    if (retry_in_ms >= 0) {
        sp_buf_puts(&body, ",\"retry_in_ms\":");
        sp_buf_i64(&body, SP_MIN(retry_in_ms, (int64_t)86400000));
    }
    sp_buf_putc(&body, '}');
    op_start(op, &body);
}

static void remote_heartbeat(sp_backend_t *b, uint64_t id, uint64_t lease, int64_t extend_ms,
                             sp_be_job_cb cb, void *ud)
{
    remote_t *r = as_remote(b);
    op_t *op = r->closing ? NULL : op_new(r, OP_HB, id, ud);
    if (!op) {
        cb(ud, r->closing ? SP_EUNAVAIL : SP_ENOMEM,
           r->closing ? "the worker is shutting down" : "out of memory", NULL);
        return;
    }
    op->cb.job = cb;
    op->max_tries = 1;
    op->timeout_ms = HB_TIMEOUT_MS;
    job_path(op, "heartbeat");
    sp_buf_t body = SP_BUF_INIT;
    put_lease(&body, lease);
    if (extend_ms >= 0) {
        sp_buf_puts(&body, ",\"extend_ms\":");
        sp_buf_i64(&body, extend_ms);
    }
    sp_buf_putc(&body, '}');
    op_start(op, &body);
}

static void remote_release(sp_backend_t *b, uint64_t id, uint64_t lease, sp_be_job_cb cb, void *ud)
{
    remote_t *r = as_remote(b);
    op_t *op = r->closing ? NULL : op_new(r, OP_RELEASE, id, ud);
    if (!op) {
        cb(ud, r->closing ? SP_EUNAVAIL : SP_ENOMEM,
           r->closing ? "the worker is shutting down" : "out of memory", NULL);
        return;
    }
    op->cb.job = cb;
    op->max_tries = FINISH_TRIES;
    job_path(op, "release");
    sp_buf_t body = SP_BUF_INIT;
    put_lease(&body, lease);
    sp_buf_putc(&body, '}');
    op_start(op, &body);
}

static void remote_ready(sp_backend_t *b, sp_be_status_cb cb, void *ud)
{
    remote_t *r = as_remote(b);
    op_t *op = r->closing ? NULL : op_new(r, OP_READY, 0, ud);
    if (!op) {
        cb(ud, SP_EUNAVAIL, r->closing ? "the worker is shutting down" : "out of memory");
        return;
    }
    op->cb.status = cb;
    op->max_tries = 1;
    op->method = "GET";
    op->timeout_ms = READY_TIMEOUT_MS;
    snprintf(op->path, sizeof op->path, "/readyz");
    op_link(op);
    op_send(op);
}

static void remote_cancel_wait(sp_backend_t *b, sp_be_wait_t *w)
{
    (void)b;
    op_t *op = (op_t *)w;
    if (!op) return;
    op_unlink(op);
    op_free(op);
}

static void http_closed(void *ud)
{
    remote_unref(ud);
}

static void flush_closed(uv_handle_t *h)
{
    remote_unref(h->data);
}

static void remote_close(sp_backend_t *b, void (*done)(void *ud), void *ud)
{
    remote_t *r = as_remote(b);
    if (r->closing) return;
    r->closing = true;
    r->done = done;
    r->done_ud = ud;
    uv_idle_stop(&r->flush);
    size_t n = r->nparked;
    r->nparked = 0;
    for (size_t i = 0; i < n; i++) {
        op_answer_err(r->parked[i], SP_EUNAVAIL, "the worker is shutting down");
    }
    while (r->ops) {
        op_t *op = r->ops;
        op_unlink(op);
        if (op->call) {
            sp_http_client_cancel(op->call);
            op->call = NULL;
        }
        /* A long poll ends as if its time had run out; the rest could not be sent. */
        if (op->kind == OP_LEASE) {
            op->cb.jobs(op->ud, 0, NULL, NULL, 0, 0);
            op_free(op);
        } else {
            op_answer_err(op, SP_EUNAVAIL, "the worker is shutting down");
        }
    }
    sp_http_client_close(r->http, http_closed, r);
    uv_close((uv_handle_t *)&r->flush, flush_closed);
}

/* ---- what a remote worker cannot do ------------------------------------------------------ */

static const char not_here[] = "not available on a remote worker";

static void na_submit(sp_backend_t *b, const char *queue, size_t queue_len,
                      const sp_job_spec_t *spec, sp_be_submit_cb cb, void *ud)
{
    (void)b, (void)queue, (void)queue_len, (void)spec;
    cb(ud, SP_EINVAL, not_here, NULL, false);
}

static void na_submit_batch(sp_backend_t *b, const char *queue, size_t queue_len,
                            const sp_job_spec_t *specs, size_t n, sp_be_batch_cb cb, void *ud)
{
    (void)b, (void)queue, (void)queue_len, (void)specs, (void)n;
    cb(ud, SP_EINVAL, not_here, NULL, NULL, 0);
}

static sp_be_wait_t *na_get(sp_backend_t *b, uint64_t id, int64_t wait_ms, sp_be_job_cb cb,
                            void *ud)
{
    (void)b, (void)id, (void)wait_ms;
    cb(ud, SP_EINVAL, not_here, NULL);
    return NULL;
}

static void na_job(sp_backend_t *b, uint64_t id, sp_be_job_cb cb, void *ud)
{
    (void)b, (void)id;
    cb(ud, SP_EINVAL, not_here, NULL);
}

static void na_queues(sp_backend_t *b, const char *name, size_t name_len, sp_be_queues_cb cb,
                      void *ud)
{
    (void)b, (void)name, (void)name_len;
    cb(ud, SP_EINVAL, not_here, NULL, 0);
}

static void na_list(sp_backend_t *b, const char *queue, size_t queue_len, int state, uint64_t after,
                    size_t limit, sp_be_jobs_cb cb, void *ud)
{
    (void)b, (void)queue, (void)queue_len, (void)state, (void)after, (void)limit;
    cb(ud, SP_EINVAL, not_here, NULL, 0, 0);
}

static void na_pause(sp_backend_t *b, const char *queue, size_t queue_len, bool pause,
                     sp_be_queues_cb cb, void *ud)
{
    (void)b, (void)queue, (void)queue_len, (void)pause;
    cb(ud, SP_EINVAL, not_here, NULL, 0);
}

static void na_purge(sp_backend_t *b, const char *queue, size_t queue_len, sp_state_t state,
                     sp_be_count_cb cb, void *ud)
{
    (void)b, (void)queue, (void)queue_len, (void)state;
    cb(ud, SP_EINVAL, not_here, 0);
}

static const sp_backend_ops_t remote_ops = {
    .name = "remote",
    .submit = na_submit,
    .submit_batch = na_submit_batch,
    .get = na_get,
    .cancel = na_job,
    .retry = na_job,
    .lease = remote_lease,
    .ack = remote_ack,
    .fail = remote_fail,
    .heartbeat = remote_heartbeat,
    .release = remote_release,
    .queues = na_queues,
    .list = na_list,
    .pause = na_pause,
    .purge = na_purge,
    .ready = remote_ready,
    .cancel_wait = remote_cancel_wait,
    .close = remote_close,
};

/* ---- making one -------------------------------------------------------------------------- */

int sp_backend_remote_new(uv_loop_t *loop, const sp_backend_remote_opts_t *opts, sp_backend_t **out,
                          char *err, size_t errlen)
{
    if (opts->token && strpbrk(opts->token, "\r\n")) {
        snprintf(err, errlen, "the token must not contain a line break");
        return SP_EINVAL;
    }
    remote_t *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return SP_ENOMEM;
    }
    r->base.ops = &remote_ops;
    r->loop = loop;
    r->retry_max_ms = opts->retry_max_ms > 0 ? opts->retry_max_ms : RETRY_MAX_MS_DEFAULT;
    snprintf(r->url, sizeof r->url, "%s", opts->server_url);
    sp_buf_t h = SP_BUF_INIT;
    sp_buf_puts(&h, "Content-Type: application/json\r\n");
    if (opts->token) {
        sp_buf_puts(&h, "Authorization: Bearer ");
        sp_buf_puts(&h, opts->token);
        sp_buf_puts(&h, "\r\n");
    }
    if (h.oom) {
        sp_buf_free(&h);
        free(r);
        snprintf(err, errlen, "out of memory");
        return SP_ENOMEM;
    }
    size_t hl;
    r->headers = sp_buf_steal(&h, &hl);
    sp_http_client_opts_t co;
    sp_http_client_opts_default(&co);
    if (opts->connect_timeout_ms) co.connect_timeout_ms = opts->connect_timeout_ms;
    if (opts->request_timeout_ms) co.request_timeout_ms = opts->request_timeout_ms;
    /* A busy worker has a long poll, a few ack batches and heartbeats out at once. */
    co.max_idle_conns = 16;
    int rc = sp_http_client_new(loop, opts->server_url, &co, &r->http, err, errlen);
    if (rc) {
        free(r->headers);
        free(r);
        return rc;
    }
    uv_idle_init(loop, &r->flush);
    r->flush.data = r;
    r->refs = 2; /* the idle handle and the HTTP client */
    *out = as_base(r);
    return 0;
}

bool sp_backend_remote_down(const sp_backend_t *b)
{
    return sp_container_of(b, remote_t, base)->down;
}
