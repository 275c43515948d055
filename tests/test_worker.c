/*
 * test_worker.c - spool-worker as a process against a real spool-server on loopback: jobs done
 * exactly once over two workers, a worker killed with jobs leased, a worker stopped mid-job, the
 * server restarted under a running worker, ten thousand concurrent sleep jobs on one worker,
 * and the command line's exit codes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "support/spt.h"

/* ---- helpers ----------------------------------------------------------------------------- */

typedef struct {
    spt_proc_t server;
    spt_proc_t w[2];
    char url[64];
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    SPT_START(f->server, "--log-level", "warn");
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%d", f->server.port);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    for (int i = 0; i < 2; i++) {
        if (f->w[i].pid > 0) assert_int_equal(spt_stop(&f->w[i]), 0);
    }
    if (f->server.pid > 0) SPT_STOP(f->server);
    free(f);
    return 0;
}

/* Starts spool-worker with --server and the given extra arguments (at most 8). */
static void worker_start(fx_t *f, int i, const char *const *extra)
{
    const char *args[16] = {"--server", f->url};
    size_t n = 2;
    for (size_t k = 0; extra && extra[k] && n < 15; k++) args[n++] = extra[k];
    args[n] = NULL;
    assert_int_equal(spt_start(&f->w[i], "spool-worker", args, NULL, false), 0);
}

/* Submits n jobs in one batch; job_fmt is a printf format of one job with an %d for its index. */
static void submit_batch(int port, const char *queue, int n, const char *job_fmt)
{
    size_t cap = (size_t)n * (strlen(job_fmt) + 24) + 32;
    char *body = malloc(cap);
    assert_non_null(body);
    size_t len = (size_t)snprintf(body, cap, "{\"jobs\":[");
    for (int i = 0; i < n; i++) {
        if (i) body[len++] = ',';
        len += (size_t)snprintf(body + len, cap - len, job_fmt, i);
    }
    snprintf(body + len, cap - len, "]}");
    char target[256];
    snprintf(target, sizeof target, "/v1/queues/%s/batch", queue);
    spt_resp_t r = spt_do(port, "POST", target, body, NULL);
    free(body);
    assert_int_equal(r.status, 201);
    spt_resp_free(&r);
}

/* Waits until the queue has `want` jobs in `state`, at most timeout_ms. */
static void wait_count(int port, const char *queue, const char *state, long long want,
                       int timeout_ms)
{
    long long deadline = spt_now_ms() + timeout_ms;
    long long seen = -1;
    while (spt_now_ms() < deadline) {
        seen = spt_queue_num(port, queue, "counts", state);
        if (seen == want) return;
        spt_sleep_ms(20);
    }
    fail_msg("queue %s: %lld jobs %s after %d ms, expected %lld", queue, seen, state, timeout_ms,
             want);
}

/* Waits until the process's log holds needle, at most timeout_ms. */
static void wait_log(const spt_proc_t *p, const char *needle, int timeout_ms)
{
    long long deadline = spt_now_ms() + timeout_ms;
    for (;;) {
        char *log = spt_log(p);
        bool found = log && strstr(log, needle);
        if (!found && spt_now_ms() >= deadline) {
            fprintf(stderr, "log so far:\n%s\n", log ? log : "(none)");
            free(log);
            fail_msg("'%s' not logged within %d ms", needle, timeout_ms);
        }
        free(log);
        if (found) return;
        spt_sleep_ms(20);
    }
}

/* Every job of queue in `state` (paging through), as one cJSON array; caller frees. */
static cJSON *list_jobs(int port, const char *queue, const char *state)
{
    cJSON *all = cJSON_CreateArray();
    char after[32] = "";
    for (int page = 0; page < 100; page++) {
        char target[256];
        snprintf(target, sizeof target, "/v1/queues/%s/jobs?state=%s&limit=1000%s%s", queue, state,
                 after[0] ? "&after=" : "", after);
        spt_resp_t r = spt_do(port, "GET", target, NULL, NULL);
        assert_int_equal(r.status, 200);
        cJSON *jobs = cJSON_GetObjectItemCaseSensitive(r.json, "jobs");
        assert_true(cJSON_IsArray(jobs));
        cJSON *j;
        cJSON_ArrayForEach(j, jobs) cJSON_AddItemToArray(all, cJSON_Duplicate(j, true));
        const char *next = spt_jstr(r.json, "next");
        bool more = next != NULL;
        if (more) snprintf(after, sizeof after, "%s", next);
        spt_resp_free(&r);
        if (!more) return all;
    }
    fail_msg("too many pages");
    return all;
}

static cJSON *get_job(int port, const char *id)
{
    char target[64];
    snprintf(target, sizeof target, "/v1/jobs/%s", id);
    spt_resp_t r = spt_do(port, "GET", target, NULL, NULL);
    assert_int_equal(r.status, 200);
    cJSON *j = r.json;
    r.json = NULL;
    spt_resp_free(&r);
    return j;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_echo_1000_over_two_workers(void **state)
{
    fx_t *f = *state;
    const char *const extra[] = {"--queues", "echoq", "--concurrency", "50", NULL};
    worker_start(f, 0, extra);
    worker_start(f, 1, extra);
    submit_batch(f->server.port, "echoq", 1000,
                 "{\"type\":\"echo\",\"payload\":{\"n\":%d,\"s\":\"\\u00e9\\ud83d\\ude00\"}}");
    wait_count(f->server.port, "echoq", "succeeded", 1000, 60000);
    cJSON *jobs = list_jobs(f->server.port, "echoq", "succeeded");
    assert_int_equal(cJSON_GetArraySize(jobs), 1000);
    bool seen[1000] = {false};
    cJSON *j;
    cJSON_ArrayForEach(j, jobs)
    {
        assert_int_equal(spt_jint(j, "attempts"), 1);
        cJSON *payload = cJSON_GetObjectItemCaseSensitive(j, "payload");
        cJSON *result = cJSON_GetObjectItemCaseSensitive(j, "result");
        assert_true(cJSON_Compare(payload, result, true));
        long long n = spt_jint(payload, "n");
        SPT_ASSERT_BETWEEN(n, 0, 999);
        assert_false(seen[n]);
        seen[n] = true;
        const char *worker = spt_jstr(j, "worker");
        assert_non_null(worker);
        assert_non_null(strchr(worker, '/'));
    }
    cJSON_Delete(jobs);
    /* Nothing else is left in any state, and every job was done once. */
    assert_int_equal(spt_queue_num(f->server.port, "echoq", "counts", "queued"), 0);
    assert_int_equal(spt_queue_num(f->server.port, "echoq", "counts", "running"), 0);
    assert_int_equal(spt_queue_num(f->server.port, "echoq", "totals", "retried"), 0);
    assert_int_equal(spt_queue_num(f->server.port, "echoq", "totals", "succeeded"), 1000);
}

static void test_kill9_jobs_redelivered(void **state)
{
    fx_t *f = *state;
    const char *const extra[] = {"--queues", "killq", "--concurrency", "10", NULL};
    worker_start(f, 0, extra);
    /* Long enough that the first worker is still running them when it dies; short leases so
     * that they come back quickly. */
    submit_batch(f->server.port, "killq", 3,
                 "{\"type\":\"sleep\",\"payload\":{\"ms\":3000,\"i\":%d},\"timeout_ms\":2000}");
    wait_count(f->server.port, "killq", "running", 3, 15000);
    assert_int_equal(spt_signal(&f->w[0], SIGKILL), 0);
    int st;
    assert_int_equal(spt_wait(&f->w[0], 10000, &st), 0);
    assert_true(WIFSIGNALED(st));
    spt_finish(&f->w[0], 1000, NULL, NULL);
    f->w[0].pid = 0;
    worker_start(f, 1, extra);
    wait_count(f->server.port, "killq", "succeeded", 3, 30000);
    cJSON *jobs = list_jobs(f->server.port, "killq", "succeeded");
    assert_int_equal(cJSON_GetArraySize(jobs), 3);
    cJSON *j;
    cJSON_ArrayForEach(j, jobs) assert_int_equal(spt_jint(j, "attempts"), 2);
    cJSON_Delete(jobs);
}

static void test_sigterm_releases_running_job(void **state)
{
    fx_t *f = *state;
    const char *const extra[] = {"--queues", "termq", "--shutdown-grace", "200ms", NULL};
    worker_start(f, 0, extra);
    char id[32];
    assert_int_equal(spt_submit(f->server.port, "termq", "sleep",
                                ",\"payload\":{\"ms\":3000},\"max_attempts\":1", id, sizeof id),
                     201);
    assert_int_equal(spt_wait_state(f->server.port, id, "running", 15000), 0);
    assert_int_equal(spt_signal(&f->w[0], SIGTERM), 0);
    int st;
    assert_int_equal(spt_wait(&f->w[0], 15000, &st), 0);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_int_equal(spt_stop(&f->w[0]), 0);
    /* Handed back at once, the attempt not counted (max_attempts 1 would otherwise fail it). */
    cJSON *j = get_job(f->server.port, id);
    SPT_ASSERT_STR(spt_jstr(j, "state"), "queued");
    assert_int_equal(spt_jint(j, "attempts"), 0);
    cJSON_Delete(j);
    const char *const extra2[] = {"--queues", "termq", NULL};
    worker_start(f, 1, extra2);
    assert_int_equal(spt_wait_state(f->server.port, id, "succeeded", 20000), 0);
    j = get_job(f->server.port, id);
    assert_int_equal(spt_jint(j, "attempts"), 1);
    cJSON_Delete(j);
}

static void test_server_restart_under_worker(void **state)
{
    fx_t *f = *state;
    const char *const extra[] = {"--queues", "rq", "--lease-wait", "2s", NULL};
    worker_start(f, 0, extra);
    char id[32];
    assert_int_equal(spt_submit(f->server.port, "rq", "echo", ",\"payload\":1", id, sizeof id),
                     201);
    assert_int_equal(spt_wait_state(f->server.port, id, "succeeded", 15000), 0);

    int port = f->server.port;
    SPT_STOP(f->server);
    wait_log(&f->w[0], "server unreachable", 15000);
    /* Still running, still retrying. */
    int st;
    assert_int_equal(spt_wait(&f->w[0], 0, &st), -1);

    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    SPT_START(f->server, "--listen", listen, "--log-level", "warn");
    assert_int_equal(spt_submit(f->server.port, "rq", "echo", ",\"payload\":2", id, sizeof id),
                     201);
    assert_int_equal(spt_wait_state(f->server.port, id, "succeeded", 20000), 0);
    wait_log(&f->w[0], "server reachable again", 5000);
    /* Logged once per change, not once per retry. */
    char *log = spt_log(&f->w[0]);
    assert_non_null(log);
    const char *first = strstr(log, "server unreachable");
    assert_non_null(first);
    assert_null(strstr(first + 1, "server unreachable"));
    free(log);
}

static void test_concurrency_10000_sleep_jobs(void **state)
{
    fx_t *f = *state;
    const char *const extra[] = {"--queues", "bigq", "--concurrency", "10000", NULL};
    worker_start(f, 0, extra);
    long long t0 = spt_now_ms();
    submit_batch(f->server.port, "bigq", 10000, "{\"type\":\"sleep\",\"payload\":{\"ms\":1000}}");
    /* Bounded generously for sanitizer builds on a busy machine; the time is printed. */
    wait_count(f->server.port, "bigq", "succeeded", 10000, 90000);
    long long took = spt_now_ms() - t0;
    printf("10000 one-second sleep jobs on one worker (--concurrency 10000): %lld ms from "
           "submission to the last success\n",
           took);
    assert_int_equal(spt_queue_num(f->server.port, "bigq", "totals", "retried"), 0);
}

static int finish(const char *const *args, char **out, char **err)
{
    spt_proc_t p;
    assert_int_equal(spt_start(&p, "spool-worker", args, NULL, false), 0);
    return spt_finish(&p, 15000, out, err);
}

static void test_command_line(void **state)
{
    (void)state;
    char *out, *err;
    const char *const help[] = {"--help", NULL};
    assert_int_equal(finish(help, &out, &err), 0);
    assert_non_null(strstr(out, "--concurrency"));
    assert_non_null(strstr(out, "--shutdown-grace"));
    assert_non_null(strstr(out, "SPOOL_SERVER"));
    free(out);
    free(err);

    const char *const version[] = {"--version", NULL};
    assert_int_equal(finish(version, &out, &err), 0);
    assert_non_null(strstr(out, "spool-worker "));
    free(out);
    free(err);

    static const struct {
        const char *args[4];
        const char *says;
    } bad[] = {
        {{"--concurrency", "abc", NULL}, "--concurrency"},
        {{"--concurrency", "0", NULL}, "--concurrency"},
        {{"--shutdown-grace", "soon", NULL}, "--shutdown-grace"},
        {{"--bogus", NULL}, "--bogus"},
        {{"--backend", "memcached://127.0.0.1:11211", NULL}, "--backend"},
        {{"--server", "https://127.0.0.1:7700", NULL}, "TLS"},
        {{"--server", "127.0.0.1:7700", NULL}, "--server"},
        {{"--queues", "a,b c!", NULL}, "--queues"},
        {{"--token-file", "/nonexistent/token", NULL}, "--token-file"},
        {{"--log-level", "loud", NULL}, "--log-level"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int code = finish(bad[i].args, &out, &err);
        if (code != 2 || !err || !strstr(err, bad[i].says))
            fail_msg("spool-worker %s %s: exit %d, stderr: %s", bad[i].args[0],
                     bad[i].args[1] ? bad[i].args[1] : "", code, err ? err : "(none)");
        free(out);
        free(err);
    }

    /* A bad value from the environment names the variable. */
    spt_proc_t p;
    const char *const env[] = {"SPOOL_CONCURRENCY=lots", NULL};
    assert_int_equal(spt_start(&p, "spool-worker", NULL, env, false), 0);
    assert_int_equal(spt_finish(&p, 15000, &out, &err), 2);
    assert_non_null(strstr(err, "SPOOL_CONCURRENCY"));
    free(out);
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_command_line),
        cmocka_unit_test_setup_teardown(test_echo_1000_over_two_workers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill9_jobs_redelivered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_releases_running_job, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_restart_under_worker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrency_10000_sleep_jobs, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
