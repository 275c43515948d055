/*
 * test_server.c - black-box tests of the spool-server process as docs/API.md describes it:
 * flags and their SPOOL_* variables, start-up errors, the listening line, signals and graceful
 * shutdown, authentication from a token file, and many concurrent jobs on embedded workers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "support/spt.h"

/* ---- process bookkeeping ----------------------------------------------------------------- */

/* Processes a test started; the teardown stops whatever a failed assertion left running. */
#define MAX_PROCS 4
static spt_proc_t g_proc[MAX_PROCS];
static bool g_live[MAX_PROCS];

static spt_proc_t *proc_start(const char *const *args, const char *const *env, bool wait_listen)
{
    for (size_t i = 0; i < MAX_PROCS; i++) {
        if (g_live[i]) continue;
        memset(&g_proc[i], 0, sizeof(g_proc[i]));
        g_proc[i].stdout_fd = -1;
        int rc = spt_start(&g_proc[i], "spool-server", args, env, wait_listen);
        if (rc != 0) fail_msg("spool-server did not start (%s)", spt_bin("spool-server"));
        g_live[i] = true;
        return &g_proc[i];
    }
    fail_msg("too many processes in one test");
    return NULL;
}

static spt_proc_t *server_start(const char *const *args)
{
    return proc_start(args, NULL, true);
}

static void proc_forget(spt_proc_t *p)
{
    for (size_t i = 0; i < MAX_PROCS; i++)
        if (&g_proc[i] == p) g_live[i] = false;
}

/* SIGTERM and wait; the exit code (128+signal when it was killed). */
static int proc_stop(spt_proc_t *p)
{
    int rc = spt_stop(p);
    proc_forget(p);
    return rc;
}

/* Waits for a process that was told to exit (or exits on its own); returns the raw wait
 * status, or fails the test (the process is stopped by force) when it does not exit in time. */
static int proc_wait_exit(spt_proc_t *p, int timeout_ms)
{
    int status = 0;
    if (spt_wait(p, timeout_ms, &status) != 0) {
        char *log = spt_log(p);
        print_message("spool-server still running after %d ms; stderr:\n%s\n", timeout_ms,
                      log ? log : "");
        free(log);
        fail_msg("spool-server did not exit within %d ms", timeout_ms);
    }
    return status;
}

/* After a successful proc_wait_exit: spt_stop only collects the status already reaped and
 * releases the descriptors; the log of an expected non-zero exit is not worth keeping. */
static void proc_reaped(spt_proc_t *p)
{
    char dir[sizeof(p->log_path)];
    snprintf(dir, sizeof(dir), "%s", p->log_path);
    int code = proc_stop(p);
    if (code != 0 && dir[0]) {
        unlink(dir);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = '\0';
        rmdir(dir);
    }
}

static int exit_code(int status)
{
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < MAX_PROCS; i++) {
        if (!g_live[i]) continue;
        (void)spt_stop(&g_proc[i]);
        g_live[i] = false;
    }
    return 0;
}

/* ---- small helpers ----------------------------------------------------------------------- */

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static bool contains_ci(const char *hay, const char *needle)
{
    return hay && strcasestr(hay, needle) != NULL;
}

/* Everything readable on fd until EOF or timeout_ms, as a malloc'd string. */
static char *read_rest(int fd, int timeout_ms)
{
    size_t cap = 4096, len = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    long long deadline = spt_now_ms() + timeout_ms;
    while (fd >= 0) {
        long long left = deadline - spt_now_ms();
        if (left <= 0) break;
        struct pollfd pfd = {fd, POLLIN, 0};
        int n = poll(&pfd, 1, (int)left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        if (cap - len < 2048) {
            char *t = realloc(s, cap * 2);
            assert_non_null(t);
            s = t;
            cap *= 2;
        }
        ssize_t r = read(fd, s + len, cap - len - 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        len += (size_t)r;
    }
    s[len] = '\0';
    return s;
}

/* One line from fd (without its newline), read a byte at a time so that nothing after it is
 * consumed; false on EOF or timeout. */
static bool read_line(int fd, char *line, size_t cap, int timeout_ms)
{
    size_t len = 0;
    long long deadline = spt_now_ms() + timeout_ms;
    while (len + 1 < cap) {
        long long left = deadline - spt_now_ms();
        if (left <= 0) return false;
        struct pollfd pfd = {fd, POLLIN, 0};
        int n = poll(&pfd, 1, (int)left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        if (c == '\n') break;
        line[len++] = c;
    }
    line[len] = '\0';
    return true;
}

typedef struct {
    int status; /* raw wait status */
    char *out;  /* all of stdout */
    char *err;  /* all of stderr */
} run_t;

/* Runs spool-server to its exit (10 s at most) and collects what it wrote. */
static void run_to_exit(const char *const *args, const char *const *env, run_t *r)
{
    spt_proc_t *p = proc_start(args, env, false);
    r->status = proc_wait_exit(p, 10000);
    r->out = read_rest(p->stdout_fd, 2000);
    r->err = spt_log(p);
    if (!r->err) r->err = strdup("");
    assert_non_null(r->err);
    proc_reaped(p);
}

static void run_free(run_t *r)
{
    free(r->out);
    free(r->err);
}

static void expect_exit(const run_t *r, int code)
{
    if (exit_code(r->status) != code)
        print_message("stdout:\n%s\nstderr:\n%s\n", r->out ? r->out : "", r->err ? r->err : "");
    assert_int_equal(exit_code(r->status), code);
}

static void expect_stderr_names(const run_t *r, const char *name)
{
    if (!contains_ci(r->err, name)) print_message("stderr does not name %s:\n%s\n", name, r->err);
    assert_true(contains_ci(r->err, name));
}

/* GET /v1/jobs/{id}: the HTTP status, and the state copied into state when 200. */
static int job_state(int port, const char *id, char *state, size_t cap)
{
    char target[256];
    snprintf(target, sizeof(target), "/v1/jobs/%s", id);
    spt_resp_t r;
    if (spt_request(port, "GET", target, NULL, NULL, &r) != 0) return -1;
    int status = r.status;
    state[0] = '\0';
    const char *s = r.json ? spt_jstr(r.json, "state") : NULL;
    if (s) snprintf(state, cap, "%s", s);
    spt_resp_free(&r);
    return status;
}

/* Polls until the job is in state `want`; bounded by timeout_ms. */
static bool wait_job_state(int port, const char *id, const char *want, int timeout_ms)
{
    long long deadline = spt_now_ms() + timeout_ms;
    char state[32];
    do {
        if (job_state(port, id, state, sizeof(state)) == 200 && strcmp(state, want) == 0)
            return true;
        pause_ms(20);
    } while (spt_now_ms() < deadline);
    print_message("job %s: wanted state %s, last seen '%s'\n", id, want, state);
    return false;
}

static void submit_ok(int port, const char *queue, const char *type, const char *extra, char *id,
                      size_t cap)
{
    int status = spt_submit(port, queue, type, extra, id, cap);
    assert_int_equal(status, 201);
}

/* A job submission of exactly `len` bytes: {"type":"echo","payload":"xxx..."}. */
static char *body_of_size(size_t len)
{
    static const char head[] = "{\"type\":\"echo\",\"payload\":\"";
    static const char tail[] = "\"}";
    size_t fixed = sizeof(head) - 1 + sizeof(tail) - 1;
    assert_true(len > fixed);
    char *b = malloc(len + 1);
    assert_non_null(b);
    memcpy(b, head, sizeof(head) - 1);
    memset(b + sizeof(head) - 1, 'x', len - fixed);
    memcpy(b + len - (sizeof(tail) - 1), tail, sizeof(tail) - 1);
    b[len] = '\0';
    return b;
}

/* ---- --help, --version, flag values ------------------------------------------------------ */

static void test_help_lists_flags(void **state)
{
    (void)state;
    const char *const args[] = {"--help", NULL};
    run_t r;
    run_to_exit(args, NULL, &r);
    expect_exit(&r, 0);
    static const char *const flags[] = {
        "--listen",     "--backend",   "--data-dir",  "--workers",  "--handlers",
        "--token-file", "--retention", "--max-depth", "--max-body", "--shutdown-grace"};
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        if (!strstr(r.out, flags[i])) print_message("--help lacks %s:\n%s\n", flags[i], r.out);
        assert_non_null(strstr(r.out, flags[i]));
    }
    run_free(&r);
}

static void test_version(void **state)
{
    (void)state;
    const char *const args[] = {"--version", NULL};
    run_t r;
    run_to_exit(args, NULL, &r);
    expect_exit(&r, 0);
    /* A version is something like "spool-server 0.1.0": at least one digit and a dot. */
    assert_non_null(strpbrk(r.out, "0123456789"));
    assert_non_null(strchr(r.out, '.'));
    run_free(&r);
}

static void test_bad_flag_values_exit_2(void **state)
{
    (void)state;
    static const struct {
        const char *flag, *value;
    } cases[] = {
        {"--max-depth", "abc"},  {"--retention", "5x"},      {"--max-body", "-1"},
        {"--workers", "many"},   {"--shutdown-grace", "1y"}, {"--max-depth", ""},
        {"--retention", "10 s"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *const args[] = {cases[i].flag, cases[i].value, "--listen", "127.0.0.1:0", NULL};
        run_t r;
        run_to_exit(args, NULL, &r);
        expect_exit(&r, 2);
        expect_stderr_names(&r, cases[i].flag + 2);
        run_free(&r);
    }
    /* The --name=value spelling is checked the same way. */
    const char *const args[] = {"--max-depth=abc", "--listen", "127.0.0.1:0", NULL};
    run_t r;
    run_to_exit(args, NULL, &r);
    expect_exit(&r, 2);
    expect_stderr_names(&r, "max-depth");
    run_free(&r);
}

static void test_bad_env_value_names_variable(void **state)
{
    (void)state;
    static const char *const envs[][2] = {
        {"SPOOL_MAX_DEPTH=abc", "SPOOL_MAX_DEPTH"},
        {"SPOOL_RETENTION=5x", "SPOOL_RETENTION"},
        {"SPOOL_MAX_BODY=-1", "SPOOL_MAX_BODY"},
    };
    const char *const args[] = {"--listen", "127.0.0.1:0", NULL};
    for (size_t i = 0; i < sizeof(envs) / sizeof(envs[0]); i++) {
        const char *const env[] = {envs[i][0], NULL};
        run_t r;
        run_to_exit(args, env, &r);
        expect_exit(&r, 2);
        expect_stderr_names(&r, envs[i][1]);
        run_free(&r);
    }
}

/* Submits n noop jobs (nobody runs them, so they all count towards the depth) and then one
 * more, which must be refused with 429 and Retry-After. */
static void expect_depth_limit(int port, int n)
{
    char id[128];
    for (int i = 0; i < n; i++) {
        int status = spt_submit(port, "depth", "noop", "", id, sizeof(id));
        if (status != 201) print_message("submission %d of %d: %d\n", i + 1, n, status);
        assert_int_equal(status, 201);
    }
    spt_resp_t r;
    assert_int_equal(
        spt_request(port, "POST", "/v1/queues/depth/jobs", "{\"type\":\"noop\"}", NULL, &r), 0);
    assert_int_equal(r.status, 429);
    assert_non_null(spt_header(&r, "Retry-After"));
    spt_resp_free(&r);
}

static void test_flag_wins_over_variable(void **state)
{
    (void)state;
    const char *const env[] = {"SPOOL_MAX_DEPTH=1", NULL};
    const char *const with_flag[] = {"--max-depth", "5", NULL};
    spt_proc_t *p = proc_start(with_flag, env, true);
    expect_depth_limit(p->port, 5);
    assert_int_equal(proc_stop(p), 0);

    /* Without the flag the variable is what counts. */
    p = proc_start(NULL, env, true);
    expect_depth_limit(p->port, 1);
    assert_int_equal(proc_stop(p), 0);
}

static void test_unknown_flag_exits_2(void **state)
{
    (void)state;
    const char *const args[] = {"--no-such-flag", "--listen", "127.0.0.1:0", NULL};
    run_t r;
    run_to_exit(args, NULL, &r);
    expect_exit(&r, 2);
    expect_stderr_names(&r, "no-such-flag");
    run_free(&r);

    const char *const stray[] = {"--listen", "127.0.0.1:0", "stray-argument", NULL};
    run_to_exit(stray, NULL, &r);
    expect_exit(&r, 2);
    run_free(&r);
}

/* ---- start-up -------------------------------------------------------------------------- */

static void test_listening_line_is_first(void **state)
{
    (void)state;
    const char *const args[] = {"--listen", "127.0.0.1:0", NULL};
    spt_proc_t *p = proc_start(args, NULL, false);
    assert_true(p->stdout_fd >= 0);
    char line[256];
    assert_true(read_line(p->stdout_fd, line, sizeof(line), 10000));
    print_message("first stdout line: %s\n", line);
    int port = 0;
    char rest = 0;
    assert_int_equal(sscanf(line, "listening on 127.0.0.1:%d%c", &port, &rest), 1);
    assert_true(port > 0 && port < 65536);

    spt_resp_t r;
    assert_int_equal(spt_request(port, "GET", "/healthz", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok");
    spt_resp_free(&r);
    assert_int_equal(proc_stop(p), 0);
}

static void test_memory_backend_says_it_is_volatile(void **state)
{
    (void)state;
    spt_proc_t *p = server_start(NULL);
    static const char *const words[] = {"restart", "volatile", "persist", "durab", "lost"};
    bool said = false;
    long long deadline = spt_now_ms() + 3000;
    char *log = NULL;
    while (!said) {
        free(log);
        log = spt_log(p);
        for (size_t i = 0; i < sizeof(words) / sizeof(words[0]) && !said; i++)
            said = contains_ci(log, words[i]);
        if (said || spt_now_ms() > deadline) break;
        pause_ms(50);
    }
    if (!said) print_message("stderr at start:\n%s\n", log ? log : "");
    free(log);
    assert_true(said);
    assert_int_equal(proc_stop(p), 0);
}

static void test_port_in_use_is_an_error(void **state)
{
    (void)state;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(ls >= 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(ls, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(ls, 16), 0);
    socklen_t slen = sizeof(sa);
    assert_int_equal(getsockname(ls, (struct sockaddr *)&sa, &slen), 0);
    char listen_arg[64];
    snprintf(listen_arg, sizeof(listen_arg), "127.0.0.1:%d", ntohs(sa.sin_port));

    const char *const args[] = {"--listen", listen_arg, NULL};
    run_t r;
    run_to_exit(args, NULL, &r);
    close(ls);
    assert_true(WIFEXITED(r.status));
    assert_int_not_equal(WEXITSTATUS(r.status), 0);
    assert_true(contains_ci(r.err, "in use") || contains_ci(r.err, "EADDRINUSE"));
    run_free(&r);
}

/* ---- durations and sizes with units ------------------------------------------------------ */

static void test_retention_with_unit(void **state)
{
    (void)state;
    const char *const args[] = {"--workers", "1", "--retention", "500ms", NULL};
    spt_proc_t *p = server_start(args);
    char id[128];
    submit_ok(p->port, "ret", "noop", "", id, sizeof(id));

    char target[256];
    snprintf(target, sizeof(target), "/v1/jobs/%s?wait_ms=5000", id);
    spt_resp_t r;
    assert_int_equal(spt_request(p->port, "GET", target, NULL, NULL, &r), 0);
    /* 404 is possible only if the job finished and was forgotten before this answer. */
    if (r.status == 200)
        assert_string_equal(spt_jstr(r.json, "state"), "succeeded");
    else
        assert_int_equal(r.status, 404);
    spt_resp_free(&r);

    long long t0 = spt_now_ms();
    char st[32];
    int status = 0;
    while (spt_now_ms() - t0 < 6000) {
        status = job_state(p->port, id, st, sizeof(st));
        if (status == 404) break;
        pause_ms(50);
    }
    print_message("finished job gone after %lld ms\n", spt_now_ms() - t0);
    assert_int_equal(status, 404);
    assert_int_equal(proc_stop(p), 0);
}

static void test_max_body_with_unit(void **state)
{
    (void)state;
    const char *const args[] = {"--max-body", "1k", NULL};
    spt_proc_t *p = server_start(args);

    /* 1k is 1024 bytes: 1020 fits, 2000 does not. */
    char *small = body_of_size(1020);
    char *big = body_of_size(2000);
    spt_resp_t r;
    assert_int_equal(spt_request(p->port, "POST", "/v1/queues/mb/jobs", small, NULL, &r), 0);
    assert_int_equal(r.status, 201);
    spt_resp_free(&r);
    assert_int_equal(spt_request(p->port, "POST", "/v1/queues/mb/jobs", big, NULL, &r), 0);
    assert_int_equal(r.status, 413);
    spt_resp_free(&r);
    free(small);
    free(big);
    assert_int_equal(proc_stop(p), 0);
}

/* ---- signals and graceful shutdown ------------------------------------------------------- */

static void test_sigterm_idle_exits_0(void **state)
{
    (void)state;
    spt_proc_t *p = server_start(NULL);
    long long t0 = spt_now_ms();
    int rc = proc_stop(p);
    long long took = spt_now_ms() - t0;
    print_message("idle server exited %d after SIGTERM in %lld ms\n", rc, took);
    assert_int_equal(rc, 0);
    /* Well under the default 10 s grace: an idle server has nothing to wait for. */
    assert_true(took < 5000);
}

static void test_sigint_idle_exits_0(void **state)
{
    (void)state;
    spt_proc_t *p = server_start(NULL);
    long long t0 = spt_now_ms();
    assert_int_equal(spt_signal(p, SIGINT), 0);
    int status = proc_wait_exit(p, 10000);
    long long took = spt_now_ms() - t0;
    if (exit_code(status) != 0) {
        char *log = spt_log(p);
        print_message("stderr:\n%s\n", log ? log : "");
        free(log);
    }
    proc_reaped(p);
    print_message("idle server exited %d after SIGINT in %lld ms\n", exit_code(status), took);
    assert_int_equal(exit_code(status), 0);
    assert_true(took < 5000);
}

static void test_sigterm_with_idle_connection_exits_0(void **state)
{
    (void)state;
    spt_proc_t *p = server_start(NULL);
    int fd = spt_connect(p->port);
    assert_true(fd >= 0);
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    assert_int_equal(spt_send(fd, req, sizeof(req) - 1), 0);
    spt_resp_t r;
    assert_int_equal(spt_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 200);
    spt_resp_free(&r);

    /* An idle keep-alive connection holds no work, so it does not hold the shutdown either. */
    long long t0 = spt_now_ms();
    int rc = proc_stop(p);
    long long took = spt_now_ms() - t0;
    spt_close(fd);
    print_message("exited %d in %lld ms with an idle connection open\n", rc, took);
    assert_int_equal(rc, 0);
    assert_true(took < 5000);
}

static void test_graceful_waits_for_running_jobs(void **state)
{
    (void)state;
    const char *const args[] = {"--workers", "2", "--shutdown-grace", "5s", NULL};
    spt_proc_t *p = server_start(args);
    char a[128], b[128];
    long long t_submit = spt_now_ms();
    submit_ok(p->port, "grace", "sleep", ",\"payload\":{\"ms\":300}", a, sizeof(a));
    submit_ok(p->port, "grace", "sleep", ",\"payload\":{\"ms\":300}", b, sizeof(b));
    assert_true(wait_job_state(p->port, a, "running", 5000));
    assert_true(wait_job_state(p->port, b, "running", 5000));

    long long t_term = spt_now_ms();
    int rc = proc_stop(p);
    long long t_exit = spt_now_ms();
    print_message("exit %d: %lld ms after submission, %lld ms after SIGTERM\n", rc,
                  t_exit - t_submit, t_exit - t_term);
    assert_int_equal(rc, 0);
    /* Both jobs started after their submission and sleep 300 ms: an exit sooner than that did
     * not let them finish. Far less than the 5 s grace: the server did not wait it out. */
    assert_true(t_exit - t_submit >= 290);
    assert_true(t_exit - t_term < 5000);
}

static void test_graceful_grace_runs_out(void **state)
{
    (void)state;
    const char *const args[] = {"--workers", "1", "--shutdown-grace", "200ms", NULL};
    spt_proc_t *p = server_start(args);
    char id[128];
    submit_ok(p->port, "grace", "sleep", ",\"payload\":{\"ms\":10000}", id, sizeof(id));
    assert_true(wait_job_state(p->port, id, "running", 5000));

    long long t0 = spt_now_ms();
    int rc = proc_stop(p);
    long long took = spt_now_ms() - t0;
    print_message("exit %d in %lld ms with a 10 s job and a 200 ms grace\n", rc, took);
    assert_int_equal(rc, 0);
    /* The job would have needed 10 s; the grace is 200 ms, plus time to hand the job back. */
    assert_true(took < 4000);
}

/* What a request during the drain saw. */
typedef enum { SEEN_OK, SEEN_503, SEEN_503_NO_RETRY_AFTER, SEEN_REFUSED, SEEN_CLOSED } seen_t;

static seen_t probe(int fd)
{
    static const char req[] = "GET /v1/queues HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    if (spt_send(fd, req, sizeof(req) - 1) != 0) return SEEN_CLOSED;
    spt_resp_t r;
    if (spt_read_response(fd, &r, false) != 0) return SEEN_CLOSED;
    seen_t seen = SEEN_OK;
    if (r.status == 503)
        seen = spt_header(&r, "Retry-After") ? SEEN_503 : SEEN_503_NO_RETRY_AFTER;
    else if (r.status != 200)
        print_message("unexpected status %d during drain\n", r.status);
    spt_resp_free(&r);
    return seen;
}

static void test_drain_answers_503_or_refuses(void **state)
{
    (void)state;
    const char *const args[] = {"--workers", "1", "--shutdown-grace", "5s", NULL};
    spt_proc_t *p = server_start(args);
    char id[128];
    submit_ok(p->port, "drain", "sleep", ",\"payload\":{\"ms\":1500}", id, sizeof(id));
    assert_true(wait_job_state(p->port, id, "running", 5000));

    /* A keep-alive connection opened before the signal. */
    int old = spt_connect(p->port);
    assert_true(old >= 0);
    assert_int_equal(probe(old), SEEN_OK);

    long long t0 = spt_now_ms();
    assert_int_equal(spt_signal(p, SIGTERM), 0);
    /* The signal is handled on the server's own time: probe with new connections until the
     * drain shows, bounded well inside the 1.5 s the running job keeps the server alive. */
    seen_t seen = SEEN_OK;
    while (seen == SEEN_OK && spt_now_ms() - t0 < 5000) {
        int fd = spt_connect(p->port);
        if (fd < 0) {
            seen = SEEN_REFUSED;
            break;
        }
        seen = probe(fd);
        spt_close(fd);
        if (seen == SEEN_OK) pause_ms(5);
    }
    print_message("new connection during drain: %s after %lld ms\n",
                  seen == SEEN_503       ? "503 with Retry-After"
                  : seen == SEEN_REFUSED ? "refused"
                  : seen == SEEN_CLOSED  ? "closed without an answer"
                  : seen == SEEN_OK      ? "still 200"
                                         : "503 without Retry-After",
                  spt_now_ms() - t0);
    assert_true(seen == SEEN_503 || seen == SEEN_REFUSED || seen == SEEN_CLOSED);

    /* The connection from before: a 503 with Retry-After, or closed. */
    seen_t old_seen = probe(old);
    spt_close(old);
    print_message("old connection during drain: %d\n", (int)old_seen);
    assert_true(old_seen == SEEN_503 || old_seen == SEEN_CLOSED);

    int status = proc_wait_exit(p, 10000);
    long long took = spt_now_ms() - t0;
    if (exit_code(status) != 0) {
        char *log = spt_log(p);
        print_message("stderr:\n%s\n", log ? log : "");
        free(log);
    }
    proc_reaped(p);
    print_message("exit %d %lld ms after SIGTERM\n", exit_code(status), took);
    assert_int_equal(exit_code(status), 0);
}

/* ---- authentication ---------------------------------------------------------------------- */

static void test_token_file_trailing_newline(void **state)
{
    (void)state;
    char path[] = "/tmp/spool-token-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    static const char content[] = "s3cret-token\n";
    assert_int_equal(write(fd, content, sizeof(content) - 1), (ssize_t)(sizeof(content) - 1));
    close(fd);

    const char *const args[] = {"--token-file", path, NULL};
    spt_proc_t *p = server_start(args);
    spt_resp_t r;

    assert_int_equal(spt_request(p->port, "GET", "/v1/queues", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 401);
    spt_resp_free(&r);

    assert_int_equal(spt_request(p->port, "GET", "/v1/queues", NULL,
                                 "Authorization: Bearer s3cret-token\r\n", &r),
                     0);
    assert_int_equal(r.status, 200);
    spt_resp_free(&r);

    assert_int_equal(spt_request(p->port, "GET", "/v1/queues", NULL,
                                 "Authorization: Bearer s3cret-tokenX\r\n", &r),
                     0);
    assert_int_equal(r.status, 401);
    spt_resp_free(&r);

    assert_int_equal(spt_request(p->port, "POST", "/v1/queues/auth/jobs", "{\"type\":\"noop\"}",
                                 "Authorization: Bearer s3cret-token\r\n", &r),
                     0);
    assert_int_equal(r.status, 201);
    spt_resp_free(&r);

    /* The health check holds no data and needs no token. */
    assert_int_equal(spt_request(p->port, "GET", "/healthz", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    spt_resp_free(&r);

    assert_int_equal(proc_stop(p), 0);
    unlink(path);
}

static void test_token_file_missing(void **state)
{
    (void)state;
    const char *const args[] = {"--token-file", "/nonexistent-spool-dir/token", "--listen",
                                "127.0.0.1:0", NULL};
    run_t r;
    run_to_exit(args, NULL, &r);
    assert_true(WIFEXITED(r.status));
    assert_int_not_equal(WEXITSTATUS(r.status), 0);
    assert_true(contains_ci(r.err, "token"));
    run_free(&r);
}

/* ---- many concurrent jobs ---------------------------------------------------------------- */

#define MANY_JOBS 10000

static void test_many_concurrent_sleeps(void **state)
{
    (void)state;
    const char *const args[] = {"--workers", "10000", NULL};
    spt_proc_t *p = server_start(args);

    static const char item[] = "{\"type\":\"sleep\",\"payload\":{\"ms\":1000}}";
    size_t cap = 32 + (size_t)MANY_JOBS * sizeof(item);
    char *body = malloc(cap);
    assert_non_null(body);
    size_t len = 0;
    memcpy(body, "{\"jobs\":[", 9);
    len = 9;
    for (int i = 0; i < MANY_JOBS; i++) {
        if (i > 0) body[len++] = ',';
        memcpy(body + len, item, sizeof(item) - 1);
        len += sizeof(item) - 1;
    }
    memcpy(body + len, "]}", 3);

    long long t0 = spt_now_ms();
    spt_resp_t r;
    assert_int_equal(spt_request(p->port, "POST", "/v1/queues/many/batch", body, NULL, &r), 0);
    free(body);
    assert_int_equal(r.status, 201);
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(r.json, "jobs");
    assert_true(cJSON_IsArray(jobs));
    assert_int_equal(cJSON_GetArraySize(jobs), MANY_JOBS);
    spt_resp_free(&r);
    print_message("batch of %d accepted in %lld ms\n", MANY_JOBS, spt_now_ms() - t0);

    long long succeeded = -1, failed = -1;
    while (spt_now_ms() - t0 < 15000) {
        assert_int_equal(spt_request(p->port, "GET", "/v1/queues/many", NULL, NULL, &r), 0);
        assert_int_equal(r.status, 200);
        const cJSON *counts = cJSON_GetObjectItemCaseSensitive(r.json, "counts");
        succeeded = spt_jint(counts, "succeeded");
        failed = spt_jint(counts, "failed");
        spt_resp_free(&r);
        if (succeeded == MANY_JOBS || failed > 0) break;
        pause_ms(100);
    }
    print_message("%lld of %d one-second sleeps succeeded after %lld ms (%lld failed)\n", succeeded,
                  MANY_JOBS, spt_now_ms() - t0, failed);
    assert_int_equal(failed, 0);
    assert_int_equal(succeeded, MANY_JOBS);
    assert_int_equal(proc_stop(p), 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_help_lists_flags, teardown),
        cmocka_unit_test_teardown(test_version, teardown),
        cmocka_unit_test_teardown(test_bad_flag_values_exit_2, teardown),
        cmocka_unit_test_teardown(test_bad_env_value_names_variable, teardown),
        cmocka_unit_test_teardown(test_flag_wins_over_variable, teardown),
        cmocka_unit_test_teardown(test_unknown_flag_exits_2, teardown),
        cmocka_unit_test_teardown(test_listening_line_is_first, teardown),
        cmocka_unit_test_teardown(test_memory_backend_says_it_is_volatile, teardown),
        cmocka_unit_test_teardown(test_port_in_use_is_an_error, teardown),
        cmocka_unit_test_teardown(test_retention_with_unit, teardown),
        cmocka_unit_test_teardown(test_max_body_with_unit, teardown),
        cmocka_unit_test_teardown(test_sigterm_idle_exits_0, teardown),
        cmocka_unit_test_teardown(test_sigint_idle_exits_0, teardown),
        cmocka_unit_test_teardown(test_sigterm_with_idle_connection_exits_0, teardown),
        cmocka_unit_test_teardown(test_graceful_waits_for_running_jobs, teardown),
        cmocka_unit_test_teardown(test_graceful_grace_runs_out, teardown),
        cmocka_unit_test_teardown(test_drain_answers_503_or_refuses, teardown),
        cmocka_unit_test_teardown(test_token_file_trailing_newline, teardown),
        cmocka_unit_test_teardown(test_token_file_missing, teardown),
        cmocka_unit_test_teardown(test_many_concurrent_sleeps, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
