/*
 * main.c - spool-server: flags, start-up, signals and graceful shutdown.
 *
 * Start: parse flags (with SPOOL_* fallbacks), open the backend, start the HTTP server and, with
 * --workers N, the embedded worker pool; print "listening on ADDR" as the first line of stdout.
 * Shutdown on SIGTERM/SIGINT: stop accepting, answer new requests 503, let running jobs finish
 * within --shutdown-grace, hand the rest back to their queue, close everything, exit 0.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "api.h"
#include "api_monitor.h"
#include "backend_memory.h"
#include "backend_redis.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "handlers_file.h"
#include "pool.h"

typedef struct {
    uv_loop_t *loop;
    sp_backend_t *backend;
    sp_api_t *api;
    sp_http_server_t *http;
    sp_pool_t *pool;
    sp_events_t *events;
    sp_metrics_t *metrics;
    uv_signal_t sigterm, sigint;
    int64_t grace_ms;
    int signals;
} server_t;

static void closed_handle(uv_handle_t *h)
{
    (void)h;
}

static void http_closed(void *ud)
{
    server_t *s = ud;
    s->http = NULL;
    sp_metrics_set_http(s->metrics, NULL);
    uv_close((uv_handle_t *)&s->sigterm, closed_handle);
    uv_close((uv_handle_t *)&s->sigint, closed_handle);
}

static void backend_closed(void *ud)
{
    server_t *s = ud;
    s->backend = NULL;
    sp_http_server_close(s->http, http_closed, s);
}

static void pool_stopped(void *ud)
{
    server_t *s = ud;
    s->pool = NULL;
    sp_info("workers stopped; closing");
    s->backend->ops->close(s->backend, backend_closed, s);
}

static void on_signal(uv_signal_t *h, int signum)
{
    server_t *s = h->data;
    if (++s->signals > 1) {
        sp_warn("second signal (%s): exiting at once", strsignal(signum));
        _exit(1);
    }
    sp_info("%s: shutting down (grace %lld ms)", strsignal(signum), (long long)s->grace_ms);
    sp_http_server_stop_accepting(s->http);
    sp_api_set_draining(s->api, true);
    /* Event streams never end on their own: end them so that their connections can close. */
    sp_events_close(s->events);
    s->events = NULL;
    if (s->pool)
        sp_pool_stop(s->pool, s->grace_ms, pool_stopped, s);
    else
        pool_stopped(s);
}

/* Every job state change feeds the metrics and the event streams. */
static void on_job_change(void *ud, const sp_jobrec_t *job, int from)
{
    server_t *s = ud;
    sp_metrics_observe_job(s->metrics, job, from);
    sp_events_job(s->events, job, from);
}

static void on_request(void *ud, sp_http_req_t *req)
{
    server_t *s = ud;
    sp_api_handle(s->api, req);
}

static void on_answer(void *ud, const sp_http_req_t *req, int status)
{
    server_t *s = ud;
    sp_metrics_observe_http(s->metrics, req, status);
}

/* Raises the open-file limit to its hard maximum: each connection is a descriptor. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) sp_warn("cannot raise the open-file limit");
    }
}

/* Reads the token: the file's whole content, one trailing newline ignored. */
static int read_token(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "spool-server: --token-file: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    char buf[4097];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    if (n == sizeof buf) {
        fprintf(stderr, "spool-server: --token-file: %s is over 4096 bytes\n", path);
        return -1;
    }
    if (n && buf[n - 1] == '\n') n--;
    if (n && buf[n - 1] == '\r') n--;
    if (n == 0) {
        fprintf(stderr, "spool-server: --token-file: %s is empty\n", path);
        return -1;
    }
    *out = malloc(n + 1);
    if (!*out) return -1;
    memcpy(*out, buf, n);
    (*out)[n] = '\0';
    *len = n;
    return 0;
}

/* Splits "HOST:PORT" or "[V6]:PORT". */
static int split_listen(const char *listen, char *host, size_t cap, int *port)
{
    const char *colon = strrchr(listen, ':');
    if (!colon) return -1;
    const char *h = listen;
    size_t hl = (size_t)(colon - listen);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= cap) return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || p < 0 || p > 65535) return -1;
    *port = (int)p;
    return 0;
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:7700";
    const char *backend = "memory";
    const char *data_dir = NULL;
    const char *fsync_mode = "always";
    const char *truncate_at = NULL;
    const char *handlers = NULL;
    const char *token_file = NULL;
    const char *log_level = "info";
    int64_t workers = 0;
    int64_t retention = 24LL * 3600 * 1000;
    int64_t max_depth = 0;
    int64_t max_body = 1 << 20;
    int64_t grace = 10000;
    sp_flag_t flags[] = {
        {"listen", SP_FLAG_STRING, &listen, 0, 0, "HOST:PORT",
         "address to listen on; port 0 picks a free port"},
        {"backend", SP_FLAG_STRING, &backend, 0, 0, "memory",
         "job store: memory, or redis://[[USER]:PASSWORD@]HOST:PORT[/DB] (shared by many servers "
         "and workers)"},
        {"data-dir", SP_FLAG_STRING, &data_dir, 0, 0, "DIR",
         "keep jobs across restarts: the memory backend's journal and snapshots live here"},
        {"fsync", SP_FLAG_STRING, &fsync_mode, 0, 0, "always|interval",
         "with --data-dir: 'always' answers a change once it is on disk; 'interval' answers at "
         "once and syncs every 10 ms (a crash can lose the last 10 ms)"},
        {"journal-truncate-at", SP_FLAG_STRING, &truncate_at, 0, 0, "FILE:OFFSET",
         "with --data-dir: drop a corrupt journal record and everything after it (the start-up "
         "error names FILE:OFFSET)"},
        {"workers", SP_FLAG_INT, &workers, 0, 100000, "N",
         "worker coroutines run inside the server, draining every queue"},
        {"handlers", SP_FLAG_STRING, &handlers, 0, 0, "FILE",
         "handlers file mapping job types to exec, http and lib handlers"},
        {"token-file", SP_FLAG_STRING, &token_file, 0, 0, "FILE",
         "require Authorization: Bearer <the file's content> on every request"},
        {"retention", SP_FLAG_DURATION, &retention, 1, INT64_MAX / 4, "DURATION",
         "how long finished jobs are kept"},
        {"max-depth", SP_FLAG_INT, &max_depth, 0, INT64_MAX, "N",
         "per-queue limit of unfinished jobs (0: none); past it submissions get 429"},
        {"max-body", SP_FLAG_SIZE, &max_body, 1024, 1LL << 30, "SIZE",
         "largest request body accepted"},
        {"shutdown-grace", SP_FLAG_DURATION, &grace, 0, 3600000, "DURATION",
         "on SIGTERM, how long running jobs may take to finish"},
        {"log-level", SP_FLAG_STRING, &log_level, 0, 0, "LEVEL", "debug, info, warn or error"},
    };
    bool want_help = false, want_version = false;
    char err[512];
    if (sp_config_parse(flags, SP_ARRAY_LEN(flags), argc, argv, &want_help, &want_version, err,
                        sizeof err)) {
        fprintf(stderr, "spool-server: %s\n", err);
        return 2;
    }
    if (want_help) {
        sp_config_print_help("Usage: spool-server [flags]\n\nThe Spool job queue server: HTTP API "
                             "v1, an in-memory or Redis job store and optional embedded workers.\n",
                             flags, SP_ARRAY_LEN(flags));
        return 0;
    }
    if (want_version) {
        printf("spool-server %s\n", SP_VERSION);
        return 0;
    }
    sp_log_level_t level;
    if (sp_log_parse_level(log_level, &level)) {
        fprintf(stderr, "spool-server: --log-level: must be debug, info, warn or error\n");
        return 2;
    }
    sp_log_set_level(level);
    char host[256];
    int port;
    if (split_listen(listen, host, sizeof host, &port)) {
        fprintf(stderr, "spool-server: --listen: expected HOST:PORT, got '%s'\n", listen);
        return 2;
    }
    bool use_redis = strncmp(backend, "redis://", 8) == 0;
    if (strcmp(backend, "memory") != 0 && !use_redis) {
        fprintf(stderr,
                "spool-server: --backend: expected memory or redis://HOST:PORT[/DB], got "
                "'%s'\n",
                backend);
        return 2;
    }
    bool fsync_always = strcmp(fsync_mode, "always") == 0;
    if (!fsync_always && strcmp(fsync_mode, "interval") != 0) {
        fprintf(stderr, "spool-server: --fsync: must be always or interval, got '%s'\n",
                fsync_mode);
        return 2;
    }
    if (data_dir && !*data_dir) {
        fprintf(stderr, "spool-server: --data-dir: must not be empty\n");
        return 2;
    }
    if (use_redis && data_dir) {
        fprintf(stderr, "spool-server: --data-dir is for the memory backend; with Redis, jobs "
                        "are kept by Redis (turn on its AOF)\n");
        return 2;
    }
    if (truncate_at && !data_dir) {
        fprintf(stderr, "spool-server: --journal-truncate-at needs --data-dir\n");
        return 2;
    }
    /* Loaded before anything starts: a bad handlers file is a start-up error. */
    sp_handlers_t *htable = NULL;
    if (handlers) {
        char herr[1024];
        if (sp_handlers_load(handlers, uv_default_loop(), &htable, herr, sizeof herr)) {
            fprintf(stderr, "spool-server: --handlers %s: %s\n", handlers, herr);
            return 2;
        }
    }
    char *token = NULL;
    size_t token_len = 0;
    if (token_file && read_token(token_file, &token, &token_len)) return 2;

    signal(SIGPIPE, SIG_IGN);
    /* Past a file-size limit a write must fail with EFBIG (and be retried), not kill us. */
    signal(SIGXFSZ, SIG_IGN);
    raise_nofile();

    server_t s = {0};
    int rc;
    s.loop = uv_default_loop();
    s.grace_ms = grace;
    sp_engine_opts_t eo;
    sp_engine_opts_default(&eo);
    eo.retention_ms = retention;
    eo.max_depth = (uint64_t)max_depth;
    if (use_redis) {
        sp_backend_redis_opts_t ro = {
            .url = backend, .retention_ms = retention, .max_depth = (uint64_t)max_depth};
        char berr[512];
        rc = sp_backend_redis_new(s.loop, &ro, &s.backend, berr, sizeof berr);
        if (rc) {
            fprintf(stderr, "spool-server: --backend: %s\n", berr);
            return rc == SP_EINVAL ? 2 : 1;
        }
    } else if (data_dir) {
        sp_journal_opts_t jo;
        sp_journal_opts_default(&jo);
        jo.dir = data_dir;
        jo.fsync_always = fsync_always;
        jo.truncate_at = truncate_at;
        char jerr[1024];
        s.backend = sp_backend_memory_open(s.loop, &eo, &jo, jerr, sizeof jerr);
        if (!s.backend) {
            fprintf(stderr, "spool-server: --data-dir %s: %s\n", data_dir, jerr);
            return 1;
        }
    } else {
        s.backend = sp_backend_memory_new(s.loop, &eo);
    }
    sp_api_opts_t ao = {.backend = s.backend, .token = token, .token_len = token_len};
    s.api = s.backend ? sp_api_new(&ao) : NULL;
    free(token);
    s.metrics = sp_metrics_new();
    s.events = s.api ? sp_events_new(s.loop, s.backend) : NULL;
    if (s.api && s.metrics && s.events) {
        if (use_redis)
            sp_backend_redis_observe(s.backend, on_job_change, &s);
        else
            sp_backend_memory_observe(s.backend, on_job_change, &s);
        sp_api_set_monitor(s.api, s.events, s.metrics);
        sp_metrics_set_backend(s.metrics, s.backend->ops->name);
    }
    if (!s.api || !s.metrics || !s.events) {
        fprintf(stderr, "spool-server: out of memory\n");
        return 1;
    }
    sp_http_opts_t ho;
    sp_http_opts_default(&ho);
    ho.max_body = (size_t)max_body;
    ho.handler = on_request;
    ho.observe = on_answer;
    ho.ud = &s;
    char bound[128];
    rc = sp_http_server_start(s.loop, host, port, &ho, &s.http, bound, sizeof bound);
    if (rc == UV_EINVAL) {
        fprintf(stderr, "spool-server: --listen: '%s': HOST must be an IP address or localhost\n",
                listen);
        return 2;
    }
    if (rc) {
        fprintf(stderr, "spool-server: cannot listen on %s: %s\n", listen, uv_strerror(rc));
        return 1;
    }
    sp_metrics_set_http(s.metrics, s.http);
    /* Signals are caught before anyone can learn the address: a SIGTERM right after the
     * listening line must still shut down gracefully. */
    uv_signal_init(s.loop, &s.sigterm);
    uv_signal_init(s.loop, &s.sigint);
    s.sigterm.data = s.sigint.data = &s;
    uv_signal_start(&s.sigterm, on_signal, SIGTERM);
    uv_signal_start(&s.sigint, on_signal, SIGINT);

    printf("listening on %s\n", bound);
    fflush(stdout);
    if (!use_redis && !data_dir)
        sp_warn("memory backend without --data-dir: jobs live in memory only and are lost when "
                "the server stops");

    if (workers > 0) {
        char name[300];
        char hostname[256] = "localhost";
        gethostname(hostname, sizeof hostname - 1);
        snprintf(name, sizeof name, "%s:%d", hostname, (int)getpid());
        sp_pool_opts_t po = {.concurrency = (size_t)workers, .name = name, .lease_wait_ms = 30000};
        s.pool = sp_pool_new(s.loop, s.backend, &po);
        if (s.pool) sp_pool_set_handlers(s.pool, htable);
        if (!s.pool || sp_pool_start(s.pool)) {
            fprintf(stderr, "spool-server: cannot start %lld workers\n", (long long)workers);
            return 1;
        }
    }
    if (use_redis) {
        char shown[300];
        sp_backend_redis_url_shown(backend, shown, sizeof shown);
        sp_info("spool-server %s on %s: backend %s, %lld workers", SP_VERSION, bound, shown,
                (long long)workers);
    } else {
        sp_info("spool-server %s on %s: backend memory (%s%s%s), %lld workers", SP_VERSION, bound,
                data_dir ? "journal in " : "volatile", data_dir ? data_dir : "",
                data_dir ? (fsync_always ? ", fsync always" : ", fsync every 10 ms") : "",
                (long long)workers);
    }

    uv_run(s.loop, UV_RUN_DEFAULT);
    sp_handlers_free(htable);
    sp_api_free(s.api);
    sp_metrics_free(s.metrics);
    rc = uv_loop_close(s.loop);
    if (rc) sp_warn("event loop closed with handles open: %s", uv_strerror(rc));
    sp_info("stopped");
    return 0;
}
