/*
 * test_metrics.c - GET /metrics and common/metrics: the exposition text parsed by a small
 * Prometheus text parser, compared with GET /v1/queues; histograms cumulative with a matching
 * count; HTTP counters that grow; and the writers' escaping and bucket edges in-process.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "metrics.h"
#include "support/spt.h"

/* ---- a Prometheus text format parser ----------------------------------------------------- */

#define MAX_LABELS 4
#define MAX_SAMPLES 4096

typedef struct {
    char name[96];
    int nlabels;
    char key[MAX_LABELS][32];
    char val[MAX_LABELS][160];
    double value;
} sample_t;

typedef struct {
    sample_t *s;
    size_t n;
    char types[64][96]; /* metric families that had a TYPE line */
    char kinds[64][16];
    size_t ntypes;
} expo_t;

static bool name_char(char c, bool first)
{
    return isalpha((unsigned char)c) || c == '_' || c == ':' ||
           (!first && isdigit((unsigned char)c));
}

/* Reads a metric or label name at *p into out. */
static bool parse_name(const char **p, char *out, size_t cap)
{
    size_t n = 0;
    while (name_char(**p, n == 0)) {
        if (n + 1 >= cap) return false;
        out[n++] = *(*p)++;
    }
    out[n] = '\0';
    return n > 0;
}

/* A quoted label value with \\, \" and \n escapes; any other escape is an error. */
static bool parse_value(const char **p, char *out, size_t cap)
{
    if (**p != '"') return false;
    (*p)++;
    size_t n = 0;
    while (**p != '"') {
        char c = **p;
        if (c == '\0' || c == '\n') return false;
        if (c == '\\') {
            (*p)++;
            c = **p == 'n' ? '\n' : **p;
            if (c != '\\' && c != '"' && c != '\n') return false;
        }
        if (n + 1 >= cap) return false;
        out[n++] = c;
        (*p)++;
    }
    (*p)++;
    out[n] = '\0';
    return true;
}

/* One sample line `name{k="v",...} value`; false on any deviation from the format. */
static bool parse_sample(const char *line, sample_t *s)
{
    const char *p = line;
    memset(s, 0, sizeof *s);
    if (!parse_name(&p, s->name, sizeof s->name)) return false;
    if (*p == '{') {
        p++;
        while (*p != '}') {
            if (s->nlabels == MAX_LABELS) return false;
            if (!parse_name(&p, s->key[s->nlabels], sizeof s->key[0])) return false;
            if (*p++ != '=') return false;
            if (!parse_value(&p, s->val[s->nlabels], sizeof s->val[0])) return false;
            s->nlabels++;
            if (*p == ',')
                p++;
            else if (*p != '}')
                return false;
        }
        p++;
    }
    if (*p++ != ' ') return false;
    char *end;
    if (strcmp(p, "+Inf") == 0) {
        s->value = INFINITY;
        return true;
    }
    s->value = strtod(p, &end);
    return end != p && *end == '\0';
}

/* Parses the whole text; fails the test on a line that is neither a comment nor a sample, and
 * on a sample whose family has no TYPE line before it. */
static void parse_expo(const char *text, expo_t *e)
{
    memset(e, 0, sizeof *e);
    e->s = calloc(MAX_SAMPLES, sizeof *e->s);
    assert_non_null(e->s);
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        if (!nl) fail_msg("the exposition does not end with a newline: %s", p);
        char line[512];
        size_t len = (size_t)(nl - p);
        if (len >= sizeof line) fail_msg("line too long: %.*s", (int)len, p);
        memcpy(line, p, len);
        line[len] = '\0';
        p = nl + 1;
        if (line[0] == '#') {
            char fam[96], kind[16];
            if (sscanf(line, "# TYPE %95s %15s", fam, kind) == 2) {
                assert_true(e->ntypes < 64);
                snprintf(e->types[e->ntypes], sizeof e->types[0], "%s", fam);
                snprintf(e->kinds[e->ntypes], sizeof e->kinds[0], "%s", kind);
                e->ntypes++;
            } else if (strncmp(line, "# HELP ", 7) != 0) {
                fail_msg("a comment that is neither HELP nor TYPE: %s", line);
            }
            continue;
        }
        assert_true(e->n < MAX_SAMPLES);
        sample_t *s = &e->s[e->n];
        if (!parse_sample(line, s)) fail_msg("not a sample line: '%s'", line);
        bool typed = false;
        for (size_t i = 0; i < e->ntypes && !typed; i++) {
            size_t fl = strlen(e->types[i]);
            typed = strncmp(s->name, e->types[i], fl) == 0 &&
                    (s->name[fl] == '\0' ||
                     (strcmp(e->kinds[i], "histogram") == 0 &&
                      (!strcmp(s->name + fl, "_bucket") || !strcmp(s->name + fl, "_sum") ||
                       !strcmp(s->name + fl, "_count"))));
        }
        if (!typed) fail_msg("sample %s has no TYPE line before it", s->name);
        e->n++;
    }
}

static void expo_free(expo_t *e)
{
    free(e->s);
}

static const char *label(const sample_t *s, const char *key)
{
    for (int i = 0; i < s->nlabels; i++)
        if (strcmp(s->key[i], key) == 0) return s->val[i];
    return NULL;
}

/* The value of the sample `name` with exactly these labels (NULL-terminated key, value pairs);
 * NAN when absent. */
static double get(const expo_t *e, const char *name, ...)
{
    const char *k[MAX_LABELS], *v[MAX_LABELS];
    int n = 0;
    va_list ap;
    va_start(ap, name);
    for (const char *key; n < MAX_LABELS && (key = va_arg(ap, const char *)) != NULL; n++) {
        k[n] = key;
        v[n] = va_arg(ap, const char *);
    }
    va_end(ap);
    for (size_t i = 0; i < e->n; i++) {
        const sample_t *s = &e->s[i];
        if (strcmp(s->name, name) != 0 || s->nlabels != n) continue;
        bool all = true;
        for (int j = 0; j < n && all; j++) {
            const char *x = label(s, k[j]);
            all = x && strcmp(x, v[j]) == 0;
        }
        if (all) return s->value;
    }
    return NAN;
}

/* Checks every histogram of family `name` for queue `queue` (NULL: no queue label): buckets
 * cumulative, in increasing `le`, ending with +Inf equal to _count. Returns _count. */
static double check_hist(const expo_t *e, const char *name, const char *queue)
{
    char bucket[128];
    snprintf(bucket, sizeof bucket, "%s_bucket", name);
    double prev_le = -1, prev = 0;
    int nb = 0;
    bool inf = false;
    for (size_t i = 0; i < e->n; i++) {
        const sample_t *s = &e->s[i];
        if (strcmp(s->name, bucket) != 0) continue;
        const char *q = label(s, "queue");
        if (queue ? !q || strcmp(q, queue) != 0 : q != NULL) continue;
        const char *le = label(s, "le");
        assert_non_null(le);
        double lev = strcmp(le, "+Inf") == 0 ? INFINITY : strtod(le, NULL);
        if (!(lev > prev_le)) fail_msg("%s: le=%s after %g", name, le, prev_le);
        if (s->value < prev)
            fail_msg("%s: bucket le=%s = %g is below the one before", name, le, s->value);
        prev_le = lev;
        prev = s->value;
        inf = isinf(lev);
        nb++;
    }
    if (nb < 2 || !inf) fail_msg("%s{queue=%s}: no buckets ending with +Inf", name, queue);
    char count[128];
    snprintf(count, sizeof count, "%s_count", name);
    double c = queue ? get(e, count, "queue", queue, NULL) : get(e, count, NULL);
    if (c != prev) fail_msg("%s: +Inf bucket %g but _count %g", name, prev, c);
    return c;
}

/* ---- helpers against a live server ------------------------------------------------------- */

static void fetch_metrics(int port, expo_t *e)
{
    spt_resp_t r = spt_do(port, "GET", "/metrics", NULL, NULL);
    if (r.status != 200) fail_msg("GET /metrics: %d %s", r.status, r.body);
    const char *ct = spt_header(&r, "Content-Type");
    SPT_ASSERT_STR(ct, "text/plain; version=0.0.4; charset=utf-8");
    parse_expo(r.body, e);
    spt_resp_free(&r);
}

static void finish_job(int port, const char *queue, bool ok)
{
    char id[64], lease[64], target[128], body[256];
    assert_int_equal(spt_lease_one(port, queue, id, sizeof id, lease, sizeof lease), 1);
    if (ok) {
        snprintf(target, sizeof target, "/v1/jobs/%s/ack", id);
        snprintf(body, sizeof body, "{\"lease\":\"%s\",\"result\":null}", lease);
    } else {
        snprintf(target, sizeof target, "/v1/jobs/%s/fail", id);
        snprintf(body, sizeof body, "{\"lease\":\"%s\",\"error\":\"no\",\"retry\":false}", lease);
    }
    SPT_EXPECT(port, "POST", target, body, NULL, 200, NULL);
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_matches_queues(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    for (int i = 0; i < 4; i++) assert_int_equal(spt_submit(port, "ma", "noop", "", NULL, 0), 201);
    for (int i = 0; i < 2; i++) assert_int_equal(spt_submit(port, "mb", "noop", "", NULL, 0), 201);
    assert_int_equal(spt_submit(port, "mb", "noop", ",\"delay_ms\":600000", NULL, 0), 201);
    finish_job(port, "ma", true);
    finish_job(port, "ma", false);
    char id[64], lease[64];
    assert_int_equal(spt_lease_one(port, "ma", id, sizeof id, lease, sizeof lease), 1);

    spt_resp_t q = spt_do(port, "GET", "/v1/queues", NULL, NULL);
    assert_int_equal(q.status, 200);
    expo_t e;
    fetch_metrics(port, &e);
    static const char *const states[] = {"scheduled", "queued", "running",
                                         "succeeded", "failed", "canceled"};
    const cJSON *queues = cJSON_GetObjectItemCaseSensitive(q.json, "queues");
    assert_int_equal(cJSON_GetArraySize(queues), 2);
    const cJSON *qo;
    double running = 0;
    cJSON_ArrayForEach(qo, queues)
    {
        const char *name = spt_jstr(qo, "name");
        const cJSON *counts = cJSON_GetObjectItemCaseSensitive(qo, "counts");
        const cJSON *totals = cJSON_GetObjectItemCaseSensitive(qo, "totals");
        for (size_t i = 0; i < 6; i++) {
            double v = get(&e, "spool_queue_jobs", "queue", name, "state", states[i], NULL);
            if (v != (double)spt_jint(counts, states[i]))
                fail_msg("spool_queue_jobs{%s,%s} = %g, /v1/queues says %lld", name, states[i], v,
                         spt_jint(counts, states[i]));
        }
        running += (double)spt_jint(counts, "running");
        static const char *const events[] = {"enqueued", "succeeded", "failed", "retried"};
        for (size_t i = 0; i < 4; i++) {
            double v = get(&e, "spool_jobs_total", "queue", name, "event", events[i], NULL);
            if (v != (double)spt_jint(totals, events[i]))
                fail_msg("spool_jobs_total{%s,%s} = %g, /v1/queues says %lld", name, events[i], v,
                         spt_jint(totals, events[i]));
        }
        assert_false(isnan(get(&e, "spool_jobs_total", "queue", name, "event", "canceled", NULL)));
        check_hist(&e, "spool_job_wait_seconds", name);
        check_hist(&e, "spool_job_run_seconds", name);
    }
    /* Three leases in ma: three waits observed, two runs ended; nothing ran in mb. */
    assert_true(get(&e, "spool_jobs_total", "queue", "ma", "event", "leased", NULL) == 3);
    assert_true(check_hist(&e, "spool_job_wait_seconds", "ma") == 3);
    assert_true(check_hist(&e, "spool_job_run_seconds", "ma") == 2);
    assert_true(check_hist(&e, "spool_job_wait_seconds", "mb") == 0);
    assert_true(get(&e, "spool_leases_held", NULL) == running);
    assert_true(running == 1);
    assert_true(get(&e, "spool_queue_jobs", "queue", "mb", "state", "scheduled", NULL) == 1);
    assert_true(get(&e, "spool_build_info", "version", "0.1.0", NULL) == 1);
    assert_true(get(&e, "spool_http_connections", NULL) >= 1);
    expo_free(&e);
    spt_resp_free(&q);
    SPT_STOP(s);
}

static void test_http_counters_grow(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    expo_t e;
    fetch_metrics(port, &e);
    double ok0 = get(&e, "spool_http_requests_total", "method", "GET", "code", "200", NULL);
    double nf0 = get(&e, "spool_http_requests_total", "method", "GET", "code", "404", NULL);
    double n0 = check_hist(&e, "spool_http_request_duration_seconds", NULL);
    expo_free(&e);
    if (isnan(ok0)) ok0 = 0;
    if (isnan(nf0)) nf0 = 0;
    for (int i = 0; i < 3; i++) SPT_EXPECT(port, "GET", "/healthz", NULL, NULL, 200, NULL);
    SPT_EXPECT(port, "GET", "/v1/nope", NULL, NULL, 404, NULL);
    SPT_EXPECT(port, "POST", "/v1/queues/mc/jobs", "{\"type\":\"noop\"}", NULL, 201, NULL);
    fetch_metrics(port, &e);
    /* The first /metrics and three /healthz. */
    assert_true(get(&e, "spool_http_requests_total", "method", "GET", "code", "200", NULL) ==
                ok0 + 4);
    assert_true(get(&e, "spool_http_requests_total", "method", "GET", "code", "404", NULL) ==
                nf0 + 1);
    assert_true(get(&e, "spool_http_requests_total", "method", "POST", "code", "201", NULL) == 1);
    assert_true(check_hist(&e, "spool_http_request_duration_seconds", NULL) == n0 + 6);
    expo_free(&e);
    SPT_STOP(s);
}

/* Every backend call is timed by operation, except calls that waited for work. */
static void test_backend_calls(void **state)
{
    (void)state;
    spt_proc_t s;
    SPT_START(s, NULL);
    int port = s.port;
    for (int i = 0; i < 3; i++)
        SPT_EXPECT(port, "POST", "/v1/queues/bc/jobs", "{\"type\":\"noop\"}", NULL, 201, NULL);
    /* A job is ready: answered at once, so timed. */
    SPT_EXPECT(port, "POST", "/v1/lease", "{\"queues\":[\"bc\"],\"wait_ms\":1000}", NULL, 200,
               NULL);
    /* Nothing ready in this queue: a long poll, not timed. */
    SPT_EXPECT(port, "POST", "/v1/lease", "{\"queues\":[\"empty\"],\"wait_ms\":200}", NULL, 200,
               NULL);
    expo_t e;
    fetch_metrics(port, &e);
    double submits =
        get(&e, "spool_backend_call_seconds_count", "backend", "memory", "op", "submit", NULL);
    double leases =
        get(&e, "spool_backend_call_seconds_count", "backend", "memory", "op", "lease", NULL);
    if (submits != 3 || leases != 1)
        fail_msg("backend calls: %g submits (want 3), %g leases (want 1)", submits, leases);
    assert_true(isnan(
        get(&e, "spool_backend_call_seconds_count", "backend", "memory", "op", "purge", NULL)));
    expo_free(&e);
    SPT_STOP(s);
}

static void test_auth(void **state)
{
    (void)state;
    char path[] = "/tmp/spool-metrics-token-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "tok\n", 4), 4);
    close(fd);
    spt_proc_t s;
    SPT_START(s, "--token-file", path);
    SPT_EXPECT(s.port, "GET", "/metrics", NULL, NULL, 401, NULL);
    spt_resp_t r = spt_do(s.port, "GET", "/metrics", NULL, "Authorization: Bearer tok\r\n");
    assert_int_equal(r.status, 200);
    spt_resp_free(&r);
    SPT_STOP(s);
    unlink(path);
}

/* ---- the library in-process -------------------------------------------------------------- */

static void test_escape(void **state)
{
    (void)state;
    sp_buf_t b = SP_BUF_INIT;
    sp_label_t l[2] = {{"a", "x\"y\\z\nw", 7}, {"b", "plain", 5}};
    sp_metrics_write_u64(&b, "m_total", l, 2, 42);
    assert_string_equal(b.data, "m_total{a=\"x\\\"y\\\\z\\nw\",b=\"plain\"} 42\n");
    sample_t s;
    b.data[b.len - 1] = '\0'; /* the parser takes one line without its newline */
    assert_true(parse_sample(b.data, &s));
    assert_string_equal(label(&s, "a"), "x\"y\\z\nw");
    sp_buf_reset(&b);
    sp_metrics_write_u64(&b, "bare", NULL, 0, 7);
    assert_string_equal(b.data, "bare 7\n");
    sp_buf_free(&b);
}

static void test_histogram(void **state)
{
    (void)state;
    sp_hist_t h = {0};
    sp_hist_observe(&h, 0.001); /* on a bound: counted in that bucket (le is inclusive) */
    sp_hist_observe(&h, 0.0011);
    sp_hist_observe(&h, -1);
    sp_hist_observe(&h, 59);
    sp_hist_observe(&h, 3600);
    assert_int_equal(h.count, 5);
    assert_int_equal(h.bucket[0], 2);
    assert_int_equal(h.bucket[1], 1);
    assert_int_equal(h.bucket[SP_HIST_BUCKETS - 1], 1);
    sp_buf_t b = SP_BUF_INIT;
    sp_metrics_write_head(&b, "lat_seconds", "histogram", "Latency.");
    sp_label_t l = {"queue", "q", 1};
    sp_metrics_write_hist(&b, "lat_seconds", &l, 1, &h);
    expo_t e;
    parse_expo(b.data, &e);
    assert_true(check_hist(&e, "lat_seconds", "q") == 5);
    assert_true(get(&e, "lat_seconds_bucket", "queue", "q", "le", "0.001", NULL) == 2);
    assert_true(get(&e, "lat_seconds_bucket", "queue", "q", "le", "60", NULL) == 4);
    assert_true(fabs(get(&e, "lat_seconds_sum", "queue", "q", NULL) - 3659.0021) < 1e-6);
    expo_free(&e);
    sp_buf_free(&b);
}

static void test_registry(void **state)
{
    (void)state;
    sp_metrics_t *m = sp_metrics_new();
    assert_non_null(m);
    char names[40][16];
    sp_queue_stats_t qs[40];
    memset(qs, 0, sizeof qs);
    /* Enough queues to grow the map several times. */
    for (int i = 0; i < 40; i++) {
        int n = snprintf(names[i], sizeof names[i], "q%d", i);
        qs[i].name = names[i];
        qs[i].name_len = (size_t)n;
        qs[i].counts[SP_STATE_RUNNING] = 1;
        sp_jobrec_t j = {.queue = names[i],
                         .queue_len = (size_t)n,
                         .state = SP_STATE_RUNNING,
                         .run_at = 1000,
                         .started_at = 1000 + i,
                         .finished_at = -1};
        sp_metrics_observe_job(m, &j, SP_STATE_QUEUED);
        j.state = SP_STATE_SUCCEEDED;
        j.finished_at = 1000 + 2 * i;
        sp_metrics_observe_job(m, &j, SP_STATE_RUNNING);
    }
    sp_buf_t b = SP_BUF_INIT;
    sp_metrics_render(m, &b, qs, 40);
    assert_false(b.oom);
    expo_t e;
    parse_expo(b.data, &e);
    for (int i = 0; i < 40; i++) {
        assert_true(check_hist(&e, "spool_job_wait_seconds", names[i]) == 1);
        assert_true(check_hist(&e, "spool_job_run_seconds", names[i]) == 1);
    }
    assert_true(get(&e, "spool_job_wait_seconds_bucket", "queue", "q3", "le", "0.0025", NULL) == 0);
    assert_true(get(&e, "spool_job_wait_seconds_bucket", "queue", "q3", "le", "0.005", NULL) == 1);
    assert_true(get(&e, "spool_leases_held", NULL) == 40);
    /* No server given: no connection figure. */
    assert_true(isnan(get(&e, "spool_http_connections", NULL)));
    expo_free(&e);
    sp_buf_free(&b);
    sp_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_matches_queues),
        cmocka_unit_test(test_http_counters_grow),
        cmocka_unit_test(test_backend_calls),
        cmocka_unit_test(test_auth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
