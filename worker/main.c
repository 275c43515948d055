/*
 * main.c - spool-worker: flags, start-up, signals and graceful shutdown of a worker process.
 *
 * It runs the worker pool (pool.h) against the remote backend (backend_remote.h), which speaks
 * the HTTP worker protocol to one spool-server, or with --backend redis:// against the Redis
 * backend (backend_redis.h), leasing straight from the Redis that the servers share. On
 * SIGTERM/SIGINT the pool stops leasing, lets running jobs finish within --shutdown-grace and
 * releases the rest; then the backend closes and the process exits 0. A second signal exits at
 * once.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "backend_redis.h"
#include "backend_remote.h"
#include "config.h"
#include "handlers_file.h"
#include "log.h"
#include "pool.h"
#include "sp.h"

#define MAX_QUEUES 64

typedef struct {
    uv_loop_t *loop;
    sp_backend_t *backend;
    sp_pool_t *pool;
    uv_signal_t sigterm, sigint;
    int64_t grace_ms;
    int signals;
} worker_t;

static void closed_handle(uv_handle_t *h)
{
    (void)h;
}

static void backend_closed(void *ud)
{
    worker_t *w = ud;
    w->backend = NULL;
    uv_close((uv_handle_t *)&w->sigterm, closed_handle);
    uv_close((uv_handle_t *)&w->sigint, closed_handle);
}

static void pool_stopped(void *ud)
{
    worker_t *w = ud;
    w->pool = NULL;
    sp_info("workers stopped; closing");
    w->backend->ops->close(w->backend, backend_closed, w);
}

static void on_signal(uv_signal_t *h, int signum)
{
    worker_t *w = h->data;
    if (++w->signals > 1) {
        sp_warn("second signal (%s): exiting at once", strsignal(signum));
        _exit(1);
    }
    sp_info("%s: stopping (running jobs get %lld ms to finish; the rest are handed back)",
            strsignal(signum), (long long)w->grace_ms);
    sp_pool_stop(w->pool, w->grace_ms, pool_stopped, w);
}

/* Each running job may hold sockets or child pipes: raise the open-file limit to its maximum. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) sp_warn("cannot raise the open-file limit");
    }
}

/* Reads the token: the file's whole content, one trailing newline ignored. */
static int read_token(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "spool-worker: --token-file: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t n = fread(out, 1, cap, f);
    fclose(f);
    if (n == cap) {
        fprintf(stderr, "spool-worker: --token-file: %s is over %zu bytes\n", path, cap - 1);
        return -1;
    }
    if (n && out[n - 1] == '\n') n--;
    if (n && out[n - 1] == '\r') n--;
    out[n] = '\0';
    if (n == 0) {
        fprintf(stderr, "spool-worker: --token-file: %s is empty\n", path);
        return -1;
    }
    if (memchr(out, '\0', n) || strpbrk(out, "\r\n")) {
        fprintf(stderr, "spool-worker: --token-file: %s holds more than one line\n", path);
        return -1;
    }
    return 0;
}

/* Splits "a,b" in place into names; checks each. */
static int split_queues(char *list, char **names, size_t *n)
{
    *n = 0;
    char *save = NULL;
    for (char *q = strtok_r(list, ",", &save); q; q = strtok_r(NULL, ",", &save)) {
        while (*q == ' ') q++;
        size_t len = strlen(q);
        while (len && q[len - 1] == ' ') q[--len] = '\0';
        if (!sp_name_valid(q, len)) {
            fprintf(stderr,
                    "spool-worker: --queues: '%s' is not a queue name (1-128 characters of "
                    "A-Z a-z 0-9 . _ : -)\n",
                    q);
            return -1;
        }
        if (*n == MAX_QUEUES) {
            fprintf(stderr, "spool-worker: --queues: at most %d queues\n", MAX_QUEUES);
            return -1;
        }
        names[(*n)++] = q;
    }
    if (*n == 0) {
        fprintf(stderr, "spool-worker: --queues: expected a comma-separated list of queues\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *server = "http://127.0.0.1:7700";
    const char *backend = NULL;
    const char *queues = NULL;
    const char *handlers = NULL;
    const char *token_file = NULL;
    const char *name = NULL;
    const char *log_level = "info";
    int64_t concurrency = 10;
    int64_t grace = 10000;
    int64_t lease_wait = 30000;
    sp_flag_t flags[] = {
        {"server", SP_FLAG_STRING, &server, 0, 0, "URL",
         "the spool-server to take jobs from, http://HOST:PORT"},
        {"backend", SP_FLAG_STRING, &backend, 0, 0, "redis://[[USER]:PASSWORD@]HOST:PORT[/DB]",
         "take jobs from Redis directly instead of a server"},
        {"queues", SP_FLAG_STRING, &queues, 0, 0, "A,B",
         "queues to drain, in order of preference (default: every queue)"},
        {"concurrency", SP_FLAG_INT, &concurrency, 1, 1000000, "N", "jobs run at once"},
        {"handlers", SP_FLAG_STRING, &handlers, 0, 0, "FILE",
         "handlers file mapping job types to programs, URLs and libraries"},
        {"token-file", SP_FLAG_STRING, &token_file, 0, 0, "FILE",
         "send Authorization: Bearer <the file's content> with every request"},
        {"name", SP_FLAG_STRING, &name, 0, 0, "NAME",
         "this worker's name in job records (default HOST:PID)"},
        {"shutdown-grace", SP_FLAG_DURATION, &grace, 0, 3600000, "DURATION",
         "on SIGTERM, how long running jobs may take to finish before they are handed back"},
        {"lease-wait", SP_FLAG_DURATION, &lease_wait, 1000, 60000, "DURATION",
         "how long one lease request waits for a job (long poll)"},
        {"log-level", SP_FLAG_STRING, &log_level, 0, 0, "LEVEL", "debug, info, warn or error"},
    };
    bool want_help = false, want_version = false;
    char err[512];
    if (sp_config_parse(flags, SP_ARRAY_LEN(flags), argc, argv, &want_help, &want_version, err,
                        sizeof err)) {
        fprintf(stderr, "spool-worker: %s\n", err);
        return 2;
    }
    if (want_help) {
        sp_config_print_help("Usage: spool-worker [flags]\n\nA Spool worker process: leases jobs "
                             "from a spool-server over HTTP (or from Redis) and runs them.\n",
                             flags, SP_ARRAY_LEN(flags));
        return 0;
    }
    if (want_version) {
        printf("spool-worker %s\n", SP_VERSION);
        return 0;
    }
    sp_log_level_t level;
    if (sp_log_parse_level(log_level, &level)) {
        fprintf(stderr, "spool-worker: --log-level: must be debug, info, warn or error\n");
        return 2;
    }
    sp_log_set_level(level);
    if (backend && strncmp(backend, "redis://", 8) != 0) {
        fprintf(stderr, "spool-worker: --backend: expected redis://HOST:PORT[/DB], got '%s'\n",
                backend);
        return 2;
    }
    char *qnames[MAX_QUEUES];
    size_t nqueues = 0;
    char *qcopy = NULL;
    if (queues) {
        qcopy = strdup(queues);
        if (!qcopy) return 1;
        if (split_queues(qcopy, qnames, &nqueues)) {
            free(qcopy);
            return 2;
        }
    }
    char token[4097];
    if (token_file && read_token(token_file, token, sizeof token)) {
        free(qcopy);
        return 2;
    }
    char host[128] = "localhost";
    if (gethostname(host, sizeof host - 1) != 0) snprintf(host, sizeof host, "localhost");
    char defname[160];
    snprintf(defname, sizeof defname, "%s:%ld", host, (long)getpid());
    if (!name || !name[0]) name = defname;

    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    srand((unsigned)(time(NULL) ^ getpid()));

    worker_t w = {0};
    w.loop = uv_default_loop();
    w.grace_ms = grace;
    int rc;
    if (backend) {
        /* Retention is the servers' business: a worker's reaper keeps finished jobs. */
        sp_backend_redis_opts_t bo = {.url = backend, .retention_ms = -1};
        rc = sp_backend_redis_new(w.loop, &bo, &w.backend, err, sizeof err);
    } else {
        sp_backend_remote_opts_t ro = {.server_url = server, .token = token_file ? token : NULL};
        rc = sp_backend_remote_new(w.loop, &ro, &w.backend, err, sizeof err);
    }
    if (rc) {
        fprintf(stderr, "spool-worker: %s: %s\n", backend ? "--backend" : "--server", err);
        free(qcopy);
        return rc == SP_EINVAL ? 2 : 1;
    }
    sp_handlers_t *table = NULL;
    if (handlers) {
        rc = sp_handlers_load(handlers, w.loop, &table, err, sizeof err);
        if (rc) {
            fprintf(stderr, "spool-worker: --handlers: %s: %s\n", handlers, err);
            free(qcopy);
            return rc == SP_EINVAL ? 2 : 1;
        }
    }
    sp_pool_opts_t po = {
        .concurrency = (size_t)concurrency,
        .queues = nqueues ? (const char *const *)qnames : NULL,
        .nqueues = nqueues,
        .name = name,
        .lease_wait_ms = lease_wait,
    };
    w.pool = sp_pool_new(w.loop, w.backend, &po);
    if (!w.pool) {
        fprintf(stderr, "spool-worker: out of memory making %lld slots\n", (long long)concurrency);
        return 1;
    }
    if (table) sp_pool_set_handlers(w.pool, table);

    uv_signal_init(w.loop, &w.sigterm);
    uv_signal_init(w.loop, &w.sigint);
    w.sigterm.data = w.sigint.data = &w;
    uv_signal_start(&w.sigterm, on_signal, SIGTERM);
    uv_signal_start(&w.sigint, on_signal, SIGINT);

    char shown[300] = "";
    if (backend) sp_backend_redis_url_shown(backend, shown, sizeof shown);
    sp_info("spool-worker %s: %lld slots, %s %s, queues %s%s%s", name, (long long)concurrency,
            backend ? "backend" : "server", backend ? shown : server,
            queues ? queues : "(every queue)", handlers ? ", handlers " : "",
            handlers ? handlers : "");
    sp_pool_start(w.pool);

    uv_run(w.loop, UV_RUN_DEFAULT);
    /* The handlers' own handles (the http handler's client) close while the table is freed. */
    sp_handlers_free(table);
    free(qcopy);
    rc = uv_loop_close(w.loop);
    if (rc) sp_warn("event loop closed with handles open: %s", uv_strerror(rc));
    sp_info("stopped");
    return 0;
}
