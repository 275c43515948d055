/*
 * bench.c - `spool bench`: a load generator. It submits N jobs over C keep-alive connections
 * (one request in flight per connection; batches of B jobs per request when B > 1), then waits
 * until the queue's finished totals have grown by N, and reports the submit rate, the end-to-end
 * rate and the latency percentiles of the submit requests.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "sp.h"

#define POLL_MS 100
#define QUIET_WARN_MS 10000
#define BAR_EVERY_MS 100

typedef struct {
    sp_cli_t *cli;
    sp_http_client_t *client; /* its own, sized to the connections */
    int64_t jobs, conns, batch, payload_bytes;
    const char *type, *queue;
    sp_buf_t job;        /* one job's JSON */
    sp_buf_t full_batch; /* a batch of `batch` jobs */
    sp_buf_t path;
    int64_t issued, submitted;
    int64_t inflight;
    double *lat_ms;
    size_t nlat, cap_lat;
    int rc;
    bool tty;
    int64_t last_bar;
} bench_t;

typedef struct {
    bench_t *b;
    uint64_t start_ns;
    int64_t n;
} shot_t;

static void progress(bench_t *b, const char *what, int64_t done, bool force)
{
    if (!b->tty) return;
    int64_t now = sp_cli_mono_ms();
    if (!force && now - b->last_bar < BAR_EVERY_MS) return;
    b->last_bar = now;
    enum { BAR = 40 };
    char bar[BAR + 1];
    int64_t fill = b->jobs ? SP_MIN(done, b->jobs) * BAR / b->jobs : BAR;
    for (int i = 0; i < BAR; i++) bar[i] = i < fill ? '#' : '.';
    bar[BAR] = '\0';
    printf("\r%-10s [%s] %lld/%lld\x1b[K", what, bar, (long long)done, (long long)b->jobs);
    fflush(stdout);
}

static void pump(bench_t *b);

static void on_submitted(void *ud, int status, const char *why, const sp_http_resp_t *resp)
{
    shot_t *s = ud;
    bench_t *b = s->b;
    b->inflight--;
    if (status >= 200 && status < 300) {
        if (b->nlat < b->cap_lat) b->lat_ms[b->nlat++] = (double)(uv_hrtime() - s->start_ns) / 1e6;
        b->submitted += s->n;
        progress(b, "submitting", b->submitted, false);
    } else if (b->rc == 0) {
        sp_cli_resp_t r = {status, (char *)resp->body, resp->body_len, ""};
        if (why) snprintf(r.why, sizeof r.why, "%s", why);
        if (b->tty) printf("\n");
        b->rc = sp_cli_check(&r, "bench");
        if (b->rc == 0) b->rc = SP_CLI_EXIT_UNREACHABLE;
    }
    free(s);
    pump(b);
}

/* Keeps one request in flight per connection until every job is issued. */
static void pump(bench_t *b)
{
    while (b->rc == 0 && b->inflight < b->conns && b->issued < b->jobs) {
        int64_t n = b->batch > 1 ? SP_MIN(b->batch, b->jobs - b->issued) : 1;
        sp_buf_t part = SP_BUF_INIT;
        const sp_buf_t *body = &b->job;
        if (b->batch > 1 && n == b->batch) {
            body = &b->full_batch;
        } else if (b->batch > 1) {
            sp_buf_puts(&part, "{\"jobs\":[");
            for (int64_t i = 0; i < n; i++) {
                if (i) sp_buf_putc(&part, ',');
                sp_buf_append(&part, b->job.data, b->job.len);
            }
            sp_buf_puts(&part, "]}");
            body = &part;
        }
        shot_t *s = malloc(sizeof *s);
        if (!s || body->oom) {
            free(s);
            sp_buf_free(&part);
            fprintf(stderr, "spool bench: out of memory\n");
            b->rc = SP_CLI_EXIT_UNREACHABLE;
            return;
        }
        s->b = b;
        s->n = n;
        s->start_ns = uv_hrtime();
        sp_http_call_t *call =
            sp_http_client_request(b->client, "POST", b->path.data, b->cli->headers_json,
                                   body->data, body->len, 0, on_submitted, s);
        sp_buf_free(&part);
        if (!call) {
            free(s);
            fprintf(stderr, "spool bench: out of memory\n");
            b->rc = SP_CLI_EXIT_UNREACHABLE;
            return;
        }
        b->inflight++;
        b->issued += n;
    }
}

/* The queue's finished totals (succeeded, failed); a queue not seen yet has none. */
static int finished_totals(bench_t *b, int64_t *succeeded, int64_t *failed)
{
    sp_buf_t path = SP_BUF_INIT;
    sp_buf_puts(&path, "/v1/queues/");
    sp_cli_path_segment(&path, b->queue);
    sp_cli_resp_t r;
    int rc = path.oom ? SP_ENOMEM : sp_cli_call(b->cli, "GET", path.data, NULL, 0, 0, &r);
    sp_buf_free(&path);
    if (rc != 0) {
        fprintf(stderr, "spool bench: out of memory\n");
        return SP_CLI_EXIT_UNREACHABLE;
    }
    *succeeded = *failed = 0;
    if (r.status != 404) {
        rc = sp_cli_check(&r, "bench");
        sp_json_val_t q;
        if (rc == 0 && sp_json_parse(r.body, r.len, SP_JSON_MAX_DEPTH, &q, NULL, 0) == 0) {
            *succeeded = sp_cli_jint2(q, "totals", "succeeded", 0);
            *failed = sp_cli_jint2(q, "totals", "failed", 0);
        }
    }
    sp_cli_resp_free(&r);
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile(const double *sorted, size_t n, double p)
{
    if (n == 0) return 0;
    size_t k = (size_t)ceil(p * (double)n);
    if (k < 1) k = 1;
    return sorted[SP_MIN(k, n) - 1];
}

/* Polls the queue until N more jobs have finished; returns when they have, or an exit code. */
static int await_finished(bench_t *b, int64_t base, int64_t *failed_out)
{
    int64_t last = -1, last_change = sp_cli_mono_ms();
    bool warned = false;
    for (;;) {
        int64_t succ, failed;
        int rc = finished_totals(b, &succ, &failed);
        if (rc != 0) return rc;
        int64_t done = succ + failed - base;
        progress(b, "running", done, false);
        if (done >= b->jobs) {
            *failed_out = failed;
            return 0;
        }
        int64_t now = sp_cli_mono_ms();
        if (done != last) {
            last = done;
            last_change = now;
        } else if (!warned && now - last_change >= QUIET_WARN_MS) {
            warned = true;
            if (b->tty) printf("\n");
            fprintf(stderr,
                    "spool bench: no job of queue '%s' finished in the last 10 s: is a worker "
                    "running? (spool-server --workers N, or spool-worker); still waiting\n",
                    b->queue);
        }
        struct timespec ts = {0, POLL_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static int report(bench_t *b, double submit_s, double e2e_s, int64_t failed)
{
    qsort(b->lat_ms, b->nlat, sizeof *b->lat_ms, cmp_double);
    double p50 = percentile(b->lat_ms, b->nlat, 0.50), p90 = percentile(b->lat_ms, b->nlat, 0.90),
           p99 = percentile(b->lat_ms, b->nlat, 0.99), max = b->nlat ? b->lat_ms[b->nlat - 1] : 0;
    double submit_rate = submit_s > 0 ? (double)b->jobs / submit_s : 0;
    double e2e_rate = e2e_s > 0 ? (double)b->jobs / e2e_s : 0;
    if (b->tty) printf("\r\x1b[K");
    if (b->cli->json) {
        printf("{\"jobs\":%lld,\"connections\":%lld,\"batch\":%lld,\"queue\":", (long long)b->jobs,
               (long long)b->conns, (long long)b->batch);
        sp_buf_t q = SP_BUF_INIT;
        sp_buf_json_str(&q, b->queue, strlen(b->queue));
        printf("%s,\"submit_seconds\":%.3f,\"submit_rate\":%.1f,\"e2e_seconds\":%.3f,"
               "\"e2e_rate\":%.1f,\"failed\":%lld,\"requests\":%zu,"
               "\"latency_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f}}\n",
               q.data ? q.data : "\"\"", submit_s, submit_rate, e2e_s, e2e_rate, (long long)failed,
               b->nlat, p50, p90, p99, max);
        sp_buf_free(&q);
        return 0;
    }
    printf("submitted   %lld jobs in %.2f s over %lld connections (%s): %.0f jobs/s\n",
           (long long)b->jobs, submit_s, (long long)b->conns,
           b->batch > 1 ? "batches" : "single submits", submit_rate);
    if (b->batch > 1) printf("            batches of %lld jobs\n", (long long)b->batch);
    printf("end to end  %lld jobs finished in %.2f s: %.0f jobs/s", (long long)b->jobs, e2e_s,
           e2e_rate);
    if (failed) printf(" (%lld failed)", (long long)failed);
    printf(
        "\nlatency     %zu submit requests: p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms\n",
        b->nlat, p50, p90, p99, max);
    return 0;
}

static int run(bench_t *b)
{
    int64_t succ0, failed0;
    int rc = finished_totals(b, &succ0, &failed0);
    if (rc != 0) return rc;
    sp_http_client_opts_t o;
    sp_http_client_opts_default(&o);
    o.max_conns = (size_t)b->conns;
    o.max_idle_conns = (size_t)b->conns;
    char err[256] = "";
    if (sp_http_client_new(&b->cli->loop, b->cli->server, &o, &b->client, err, sizeof err) != 0) {
        fprintf(stderr, "spool bench: %s\n", err[0] ? err : "cannot make a client");
        return SP_CLI_EXIT_USAGE;
    }
    uint64_t t0 = uv_hrtime();
    pump(b);
    uv_run(&b->cli->loop, UV_RUN_DEFAULT);
    uint64_t t1 = uv_hrtime();
    sp_http_client_close(b->client, NULL, NULL);
    uv_run(&b->cli->loop, UV_RUN_DEFAULT);
    if (b->rc != 0) return b->rc;
    progress(b, "submitting", b->submitted, true);
    int64_t failed = 0;
    rc = await_finished(b, succ0 + failed0, &failed);
    if (rc != 0) return rc;
    uint64_t t2 = uv_hrtime();
    return report(b, (double)(t1 - t0) / 1e9, (double)(t2 - t0) / 1e9, failed - failed0);
}

int sp_cli_cmd_bench(sp_cli_globals_t *g, int argc, char **argv)
{
    bench_t b;
    memset(&b, 0, sizeof b);
    b.jobs = 10000;
    b.conns = 8;
    b.batch = 1;
    b.type = "noop";
    b.queue = "bench";
    sp_flag_t flags[] = {
        {"jobs", SP_FLAG_INT, &b.jobs, 1, 100000000, "N", "jobs to submit (default 10000)"},
        {"connections", SP_FLAG_INT, &b.conns, 1, 1024, "C",
         "keep-alive connections, one request in flight on each (default 8)"},
        {"batch", SP_FLAG_INT, &b.batch, 1, 10000, "B",
         "jobs per request: batches when over 1 (default 1, single submits)"},
        {"type", SP_FLAG_STRING, &b.type, 0, 0, "T", "the jobs' type (default noop)"},
        {"queue", SP_FLAG_STRING, &b.queue, 0, 0, "Q", "the queue (default bench)"},
        {"payload-bytes", SP_FLAG_INT, &b.payload_bytes, 0, 1 << 20, "N",
         "a string payload of N bytes (default none)"},
    };
    const char *pos[1];
    size_t npos = 0;
    int rc = sp_cli_parse("bench", flags, SP_ARRAY_LEN(flags), argc, argv, g, pos, 0, &npos);
    if (rc == 1) {
        sp_cli_help("spool bench [--jobs N] [--connections C] [--batch B] [--type noop] "
                    "[--queue bench] [--payload-bytes N]",
                    "Submits N jobs, waits until they have finished (workers must be running), "
                    "and prints\nthe submit rate, the end-to-end rate and the submit latency "
                    "percentiles (JSON with --json).",
                    flags, SP_ARRAY_LEN(flags));
        return 0;
    }
    if (rc < 0) return SP_CLI_EXIT_USAGE;
    if (!sp_name_valid(b.queue, strlen(b.queue)))
        return sp_cli_usage_error("bench", "'%s' is not a valid queue name", b.queue);
    if (!sp_name_valid(b.type, strlen(b.type)))
        return sp_cli_usage_error("bench", "'%s' is not a valid type", b.type);

    sp_cli_t cli;
    if ((rc = sp_cli_open(&cli, g->server, g->token_file, g->json)) != 0) return rc;
    b.cli = &cli;
    b.tty = isatty(STDOUT_FILENO) && !cli.json;
    b.cap_lat = (size_t)((b.jobs + b.batch - 1) / b.batch);
    b.lat_ms = malloc(b.cap_lat * sizeof *b.lat_ms);
    sp_buf_puts(&b.job, "{\"type\":");
    sp_buf_json_str(&b.job, b.type, strlen(b.type));
    if (b.payload_bytes > 0) {
        sp_buf_puts(&b.job, ",\"payload\":\"");
        if (sp_buf_reserve(&b.job, (size_t)b.payload_bytes)) {
            memset(b.job.data + b.job.len, 'x', (size_t)b.payload_bytes);
            b.job.len += (size_t)b.payload_bytes;
        }
        sp_buf_putc(&b.job, '"');
    }
    sp_buf_putc(&b.job, '}');
    if (b.batch > 1) {
        sp_buf_puts(&b.full_batch, "{\"jobs\":[");
        for (int64_t i = 0; i < b.batch; i++) {
            if (i) sp_buf_putc(&b.full_batch, ',');
            sp_buf_append(&b.full_batch, b.job.data, b.job.len);
        }
        sp_buf_puts(&b.full_batch, "]}");
    }
    sp_buf_puts(&b.path, "/v1/queues/");
    sp_cli_path_segment(&b.path, b.queue);
    sp_buf_puts(&b.path, b.batch > 1 ? "/batch" : "/jobs");
    if (!b.lat_ms || b.job.oom || b.full_batch.oom || b.path.oom) {
        fprintf(stderr, "spool bench: out of memory\n");
        rc = SP_CLI_EXIT_UNREACHABLE;
    } else {
        rc = run(&b);
    }
    free(b.lat_ms);
    sp_buf_free(&b.job);
    sp_buf_free(&b.full_batch);
    sp_buf_free(&b.path);
    sp_cli_close(&cli);
    return rc;
}
