/*
 * test_cli.c - the `spool` command line as a process against a real spool-server on loopback:
 * every command's output and exit code (success, 4xx -> 1, usage -> 2, unreachable -> 3,
 * submit --wait on a failed job -> 4 and on a canceled one -> 5), --json answers that parse,
 * jobs --all across pages, bench with workers, and `spool top` driven in tmux.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/spt.h"

#define RUN_TIMEOUT_MS 30000
#define BENCH_TIMEOUT_MS 240000

/* ---- running a process ------------------------------------------------------------------- */

typedef struct {
    pid_t pid;
    int out_fd, err_fd, in_fd;
} child_t;

typedef struct {
    int code; /* exit code, 128+signal, or -1 when it had to be killed at the time bound */
    char *out;
    char *err;
} result_t;

/* Starts argv[0] (a path, or a name looked up in PATH) with pipes for its standard streams. */
static int spawn(child_t *c, char *const argv[])
{
    int in[2], out[2], err[2];
    if (pipe(in) != 0) return -1;
    if (pipe(out) != 0 || pipe(err) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        for (int fd = 3; fd < 256; fd++) close(fd);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    close(err[1]);
    c->pid = pid;
    c->in_fd = in[1];
    c->out_fd = out[0];
    c->err_fd = err[0];
    return 0;
}

static void append(char **s, size_t *len, const char *data, size_t n)
{
    char *p = realloc(*s, *len + n + 1);
    assert_non_null(p);
    memcpy(p + *len, data, n);
    *len += n;
    p[*len] = '\0';
    *s = p;
}

/* Reads both outputs to their end and reaps the child, all within timeout_ms (then kills it). */
static result_t finish(child_t *c, int timeout_ms)
{
    result_t r = {-1, calloc(1, 1), calloc(1, 1)};
    assert_non_null(r.out);
    assert_non_null(r.err);
    size_t out_len = 0, err_len = 0;
    if (c->in_fd >= 0) close(c->in_fd);
    c->in_fd = -1;
    long long deadline = spt_now_ms() + timeout_ms;
    struct pollfd fds[2] = {{c->out_fd, POLLIN, 0}, {c->err_fd, POLLIN, 0}};
    int open_fds = 2;
    bool killed = false;
    while (open_fds > 0) {
        long long left = deadline - spt_now_ms();
        if (left <= 0) {
            kill(c->pid, SIGKILL);
            killed = true;
            break;
        }
        int n = poll(fds, 2, (int)left);
        if (n < 0 && errno == EINTR) continue;
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char buf[8192];
            ssize_t k = read(fds[i].fd, buf, sizeof buf);
            if (k > 0) {
                if (i == 0)
                    append(&r.out, &out_len, buf, (size_t)k);
                else
                    append(&r.err, &err_len, buf, (size_t)k);
            } else if (k == 0 || errno != EINTR) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
            }
        }
    }
    for (int i = 0; i < 2; i++)
        if (fds[i].fd >= 0) close(fds[i].fd);
    int status = 0;
    /* The outputs are closed: the process is exiting; a bounded wait for it to be reaped. */
    while (waitpid(c->pid, &status, WNOHANG) == 0) {
        if (spt_now_ms() > deadline + 5000) {
            kill(c->pid, SIGKILL);
            killed = true;
            waitpid(c->pid, &status, 0);
            break;
        }
        poll(NULL, 0, 5);
    }
    if (killed)
        r.code = -1;
    else if (WIFEXITED(status))
        r.code = WEXITSTATUS(status);
    else if (WIFSIGNALED(status))
        r.code = 128 + WTERMSIG(status);
    if (r.code != -1 && strstr(r.err, "Sanitizer")) {
        fprintf(stderr, "sanitizer report:\n%s\n", r.err);
        fail_msg("a sanitizer reported an error");
    }
    return r;
}

static void result_free(result_t *r)
{
    free(r->out);
    free(r->err);
}

static const char *spool_path(void)
{
    static char path[PATH_MAX];
    if (!realpath(spt_bin("spool"), path)) snprintf(path, sizeof path, "%s", spt_bin("spool"));
    return path;
}

/* Starts `spool --server http://127.0.0.1:PORT args...` (port 0: no --server flag). */
static void spool_start(child_t *c, int port, const char *const *args)
{
    static char url[64];
    char *argv[40];
    size_t n = 0;
    argv[n++] = (char *)spool_path();
    if (port) {
        snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
        argv[n++] = "--server";
        argv[n++] = url;
    }
    for (size_t i = 0; args[i] && n < 39; i++) argv[n++] = (char *)args[i];
    argv[n] = NULL;
    assert_int_equal(spawn(c, argv), 0);
}

/* Runs spool with the args; stdin_text (may be NULL) is written to its standard input. */
static result_t spool_run_in(int port, const char *stdin_text, int timeout_ms,
                             const char *const *args)
{
    child_t c;
    spool_start(&c, port, args);
    if (stdin_text) {
        size_t len = strlen(stdin_text);
        assert_int_equal(write(c.in_fd, stdin_text, len), (ssize_t)len);
    }
    return finish(&c, timeout_ms);
}

#define SPOOL(port, ...)                                                                           \
    spool_run_in((port), NULL, RUN_TIMEOUT_MS, (const char *const[]){__VA_ARGS__, NULL})

/* Asserts the exit code, printing both outputs when it differs. */
static void expect_code(const result_t *r, int code)
{
    if (r->code != code) {
        fprintf(stderr, "exit code %d, expected %d\nstdout:\n%s\nstderr:\n%s\n", r->code, code,
                r->out, r->err);
        fail_msg("unexpected exit code");
    }
}

static void expect_in(const char *hay, const char *needle)
{
    if (!strstr(hay, needle)) fail_msg("\"%s\" not found in:\n%s", needle, hay);
}

/* Lines of text that start with prefix. */
static int count_lines(const char *text, const char *prefix)
{
    if (!prefix[0]) return 0;
    int n = 0;
    size_t plen = strlen(prefix);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, prefix, plen) == 0) n++;
        p = strchr(p, '\n');
        if (p) p++;
    }
    return n;
}

/* Table rows whose first cell is id. */
static int count_rows(const char *text, const char *id)
{
    char prefix[80];
    snprintf(prefix, sizeof prefix, "%.70s ", id);
    return count_lines(text, prefix);
}

/* A loopback port nobody listens on: bound, then closed. */
static int dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* ---- fixtures ---------------------------------------------------------------------------- */

static int setup_plain(void **state)
{
    spt_proc_t *p = calloc(1, sizeof *p);
    assert_non_null(p);
    SPT_START(*p, "--log-level", "warn");
    *state = p;
    return 0;
}

static int setup_workers(void **state)
{
    spt_proc_t *p = calloc(1, sizeof *p);
    assert_non_null(p);
    SPT_START(*p, "--log-level", "warn", "--workers", "4");
    *state = p;
    return 0;
}

static int teardown(void **state)
{
    spt_proc_t *p = *state;
    if (p && p->pid > 0) SPT_STOP(*p);
    free(p);
    return 0;
}

/* ---- usage ------------------------------------------------------------------------------- */

static void test_help_and_usage(void **state)
{
    (void)state;
    result_t r = SPOOL(0, "--help");
    expect_code(&r, 0);
    expect_in(r.out, "exit status");
    expect_in(r.out, "3  cannot reach the server");
    expect_in(r.out, "bench");
    result_free(&r);

    r = SPOOL(0, "--version");
    expect_code(&r, 0);
    expect_in(r.out, "spool ");
    result_free(&r);

    r = SPOOL(0, "submit", "--help");
    expect_code(&r, 0);
    expect_in(r.out, "--queue");
    expect_in(r.out, "--wait");
    result_free(&r);

    static const char *const cmds[] = {"job",   "jobs",  "queues", "retry", "cancel",
                                       "purge", "pause", "resume", "top",   "bench"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        r = SPOOL(0, cmds[i], "--help");
        expect_code(&r, 0);
        expect_in(r.out, "usage: spool ");
        result_free(&r);
    }

    /* Usage errors: exit 2 with a message, and nothing sent anywhere. */
    const char *const bad[][6] = {
        {"frobnicate", NULL},
        {"queues", "--bogus", NULL},
        {"--bogus", "queues", NULL},
        {"submit", "--queue", "q", NULL},
        {"submit", "--type", "noop", NULL},
        {"submit", "--queue", "q", "--type", "noop", "--priority=abc"},
        {"submit", "--queue", "q", "--type", "noop", "--priority=12"},
        {"submit", "--queue", "q", "--type", "noop", "--delay=soon"},
        {"submit", "--queue", "q", "--type", "noop", "--payload={bad"},
        {"submit", "--queue", "bad/name", "--type", "noop", NULL},
        {"job", NULL},
        {"job", "1", "2", NULL},
        {"purge", "q", NULL},
        {"jobs", "q", "--limit", "0", NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *args[8] = {NULL};
        for (size_t k = 0; k < 6 && bad[i][k]; k++) args[k] = bad[i][k];
        r = spool_run_in(dead_port(), NULL, RUN_TIMEOUT_MS, args);
        expect_code(&r, 2);
        if (r.err[0] == '\0') fail_msg("no message for bad usage #%zu", i);
        result_free(&r);
    }
    r = SPOOL(0, NULL);
    expect_code(&r, 2);
    result_free(&r);
}

static void test_server_down(void **state)
{
    (void)state;
    int port = dead_port();
    const char *const cmds[][8] = {
        {"queues", NULL},
        {"job", "1", NULL},
        {"submit", "--queue", "q", "--type", "noop", NULL},
        {"jobs", "q", NULL},
        {"pause", "q", NULL},
        {"bench", "--jobs", "10", NULL},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        result_t r = spool_run_in(port, NULL, RUN_TIMEOUT_MS, cmds[i]);
        expect_code(&r, 3);
        expect_in(r.err, "cannot reach the server");
        result_free(&r);
    }
    /* SPOOL_SERVER is the default for --server. */
    char env[64];
    snprintf(env, sizeof env, "http://127.0.0.1:%d", port);
    setenv("SPOOL_SERVER", env, 1);
    result_t r = SPOOL(0, "queues");
    unsetenv("SPOOL_SERVER");
    expect_code(&r, 3);
    expect_in(r.err, env + 7);
    result_free(&r);
}

/* ---- request/answer commands ------------------------------------------------------------- */

static void test_submit_and_job(void **state)
{
    spt_proc_t *s = *state;
    int port = s->port;
    result_t r = SPOOL(port, "submit", "--queue", "cq", "--type", "echo", "--payload",
                       "{\"n\":12345678901234567890}");
    expect_code(&r, 0);
    char id[64];
    snprintf(id, sizeof id, "%s", r.out);
    id[strcspn(id, "\n")] = '\0';
    assert_true(id[0] != '\0' && strspn(id, "0123456789") == strlen(id));
    result_free(&r);

    r = SPOOL(port, "job", id);
    expect_code(&r, 0);
    expect_in(r.out, "queued");
    expect_in(r.out, "12345678901234567890");
    result_free(&r);

    r = SPOOL(port, "--json", "job", id);
    expect_code(&r, 0);
    assert_true(spt_json_same(r.out, strlen(r.out), "payload", "{\"n\":12345678901234567890}"));
    char *st = spt_json_at(r.out, strlen(r.out), "state");
    assert_non_null(st);
    assert_string_equal(st, "\"queued\"");
    free(st);
    result_free(&r);

    /* Every submission flag reaches the job. */
    r = SPOOL(port, "submit", "--json", "--queue", "cq", "--type", "noop", "--priority", "9",
              "--delay", "1h", "--max-attempts", "2", "--timeout", "5s", "--key", "k-1");
    expect_code(&r, 0);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    char id2[64];
    snprintf(id2, sizeof id2, "%s", spt_jstr(j, "id"));
    SPT_ASSERT_STR(spt_jstr(j, "state"), "scheduled");
    cJSON_Delete(j);
    result_free(&r);
    char target[128];
    snprintf(target, sizeof target, "/v1/jobs/%s", id2);
    spt_resp_t resp = spt_do(port, "GET", target, NULL, NULL);
    assert_int_equal(resp.status, 200);
    assert_int_equal(spt_jint(resp.json, "priority"), 9);
    assert_int_equal(spt_jint(resp.json, "max_attempts"), 2);
    assert_int_equal(spt_jint(resp.json, "timeout_ms"), 5000);
    SPT_ASSERT_STR(spt_jstr(resp.json, "idempotency_key"), "k-1");
    assert_true(spt_jint(resp.json, "run_at") - spt_jint(resp.json, "created_at") >= 3599000);
    spt_resp_free(&resp);

    /* The same key gives the same job. */
    r = SPOOL(port, "submit", "--queue", "cq", "--type", "noop", "--key", "k-1");
    expect_code(&r, 0);
    assert_int_equal(strncmp(r.out, id2, strlen(id2)), 0);
    result_free(&r);

    /* Payload from standard input and from a file. */
    r = spool_run_in(port, "[1, \"two\", {\"three\": 3}]\n", RUN_TIMEOUT_MS,
                     (const char *const[]){"submit", "--json", "--queue", "cq", "--type", "echo",
                                           "--payload", "-", NULL});
    expect_code(&r, 0);
    j = cJSON_Parse(r.out);
    assert_non_null(j);
    snprintf(target, sizeof target, "/v1/jobs/%s", spt_jstr(j, "id"));
    cJSON_Delete(j);
    result_free(&r);
    resp = spt_do(port, "GET", target, NULL, NULL);
    assert_true(spt_json_same(resp.body, resp.body_len, "payload", "[1,\"two\",{\"three\":3}]"));
    spt_resp_free(&resp);

    char dir[] = "/tmp/test_cli.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char file[128], arg[140];
    snprintf(file, sizeof file, "%s/payload.json", dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("{\"from\": \"file\"}", f);
    fclose(f);
    snprintf(arg, sizeof arg, "@%s", file);
    r = SPOOL(port, "submit", "--queue", "cq", "--type", "echo", "--payload", arg);
    expect_code(&r, 0);
    r.out[strcspn(r.out, "\n")] = '\0';
    snprintf(target, sizeof target, "/v1/jobs/%s", r.out);
    result_free(&r);
    resp = spt_do(port, "GET", target, NULL, NULL);
    assert_true(spt_json_same(resp.body, resp.body_len, "payload", "{\"from\":\"file\"}"));
    spt_resp_free(&resp);
    unlink(file);
    rmdir(dir);

    /* A payload file that does not exist is a usage error. */
    r = SPOOL(port, "submit", "--queue", "cq", "--type", "echo", "--payload", "@/nonexistent/x");
    expect_code(&r, 2);
    result_free(&r);
}

static void test_refused(void **state)
{
    spt_proc_t *s = *state;
    int port = s->port;
    result_t r = SPOOL(port, "job", "987654");
    expect_code(&r, 1);
    expect_in(r.err, "404");
    result_free(&r);

    r = SPOOL(port, "job", "not-a-number");
    expect_code(&r, 1);
    result_free(&r);

    r = SPOOL(port, "cancel", "987654");
    expect_code(&r, 1);
    result_free(&r);

    r = SPOOL(port, "jobs", "never-seen");
    expect_code(&r, 1);
    result_free(&r);

    /* Retrying a queued job is a conflict: 409 -> 1 with the server's message. */
    char id[64];
    assert_int_equal(spt_submit(port, "rq", "noop", "", id, sizeof id), 201);
    r = SPOOL(port, "retry", id);
    expect_code(&r, 1);
    expect_in(r.err, "409");
    result_free(&r);

    /* Purging running jobs is refused by the server (400). */
    r = SPOOL(port, "purge", "rq", "--state", "running");
    expect_code(&r, 1);
    result_free(&r);
}

/* With auth on, --token-file (or SPOOL_TOKEN_FILE) sends the token; without it, 401 -> 1. */
static void test_token(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_cli_tok.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char file[128];
    snprintf(file, sizeof file, "%s/token", dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("s3cret-token\n", f);
    fclose(f);
    spt_proc_t srv;
    SPT_START(srv, "--log-level", "warn", "--token-file", file);

    result_t r = SPOOL(srv.port, "queues");
    expect_code(&r, 1);
    expect_in(r.err, "401");
    result_free(&r);

    r = SPOOL(srv.port, "--token-file", file, "submit", "--queue", "tq", "--type", "noop");
    expect_code(&r, 0);
    result_free(&r);

    setenv("SPOOL_TOKEN_FILE", file, 1);
    r = SPOOL(srv.port, "queues");
    unsetenv("SPOOL_TOKEN_FILE");
    expect_code(&r, 0);
    expect_in(r.out, "tq");
    result_free(&r);

    r = SPOOL(srv.port, "queues", "--token-file", "/nonexistent/token");
    expect_code(&r, 2);
    result_free(&r);

    SPT_STOP(srv);
    unlink(file);
    rmdir(dir);
}

static void test_queue_commands(void **state)
{
    spt_proc_t *s = *state;
    int port = s->port;
    char a[64], b[64];
    assert_int_equal(spt_submit(port, "qc", "noop", "", a, sizeof a), 201);
    assert_int_equal(spt_submit(port, "qc", "noop", "", b, sizeof b), 201);

    result_t r = SPOOL(port, "pause", "qc");
    expect_code(&r, 0);
    expect_in(r.out, "paused");
    result_free(&r);
    spt_resp_t resp = spt_do(port, "GET", "/v1/queues/qc", NULL, NULL);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(resp.json, "paused")));
    spt_resp_free(&resp);

    r = SPOOL(port, "queues");
    expect_code(&r, 0);
    expect_in(r.out, "QUEUE");
    expect_in(r.out, "OLDEST AGE");
    /* The queue's row: name, paused, scheduled, queued, ... */
    const char *row = strstr(r.out, "\nqc ");
    assert_non_null(row);
    char name[16], paused[8];
    long long sched = -1, queued = -1;
    assert_int_equal(sscanf(row + 1, "%15s %7s %lld %lld", name, paused, &sched, &queued), 4);
    assert_string_equal(paused, "yes");
    assert_int_equal(queued, 2);
    result_free(&r);

    r = SPOOL(port, "--json", "queues");
    expect_code(&r, 0);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    assert_true(cJSON_IsArray(cJSON_GetObjectItem(j, "queues")));
    cJSON_Delete(j);
    result_free(&r);

    r = SPOOL(port, "resume", "qc", "--json");
    expect_code(&r, 0);
    j = cJSON_Parse(r.out);
    assert_non_null(j);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(j, "paused")));
    cJSON_Delete(j);
    result_free(&r);

    r = SPOOL(port, "cancel", a);
    expect_code(&r, 0);
    expect_in(r.out, "canceled");
    result_free(&r);

    r = SPOOL(port, "retry", a);
    expect_code(&r, 0);
    expect_in(r.out, "queued");
    result_free(&r);
    assert_int_equal(spt_wait_state(port, a, "queued", 1000), 0);

    r = SPOOL(port, "cancel", "--json", b);
    expect_code(&r, 0);
    j = cJSON_Parse(r.out);
    assert_non_null(j);
    SPT_ASSERT_STR(spt_jstr(j, "state"), "canceled");
    cJSON_Delete(j);
    result_free(&r);

    r = SPOOL(port, "purge", "qc", "--state", "canceled");
    expect_code(&r, 0);
    expect_in(r.out, "deleted 1");
    result_free(&r);
    r = SPOOL(port, "job", b);
    expect_code(&r, 1);
    result_free(&r);
}

static void test_jobs_pages(void **state)
{
    spt_proc_t *s = *state;
    int port = s->port;
    char ids[7][64];
    for (int i = 0; i < 7; i++)
        assert_int_equal(spt_submit(port, "pg", "noop", "", ids[i], sizeof ids[i]), 201);
    char fail_extra[] = ",\"payload\":{\"message\":\"x\"}";
    char other[64];
    assert_int_equal(spt_submit(port, "pg", "fail", fail_extra, other, sizeof other), 201);
    char target[96];
    snprintf(target, sizeof target, "/v1/jobs/%s", other);
    SPT_EXPECT(port, "DELETE", target, NULL, NULL, 200, NULL);

    result_t r = SPOOL(port, "jobs", "pg", "--state", "queued", "--limit", "3");
    expect_code(&r, 0);
    assert_int_equal(count_lines(r.out, "ID "), 1);
    assert_int_equal(count_rows(r.out, ids[0]), 1);
    assert_int_equal(count_rows(r.out, ids[3]), 0);
    expect_in(r.err, "--all");
    result_free(&r);

    r = SPOOL(port, "jobs", "pg", "--state", "queued", "--limit", "3", "--all");
    expect_code(&r, 0);
    for (int i = 0; i < 7; i++) assert_int_equal(count_rows(r.out, ids[i]), 1);
    assert_int_equal(count_rows(r.out, other), 0);
    /* Header plus seven rows. */
    int lines = 0;
    for (const char *p = r.out; *p; p++) lines += *p == '\n';
    assert_int_equal(lines, 8);
    expect_in(r.out, "queued");
    expect_in(r.out, "noop");
    result_free(&r);

    r = SPOOL(port, "--json", "jobs", "pg", "--limit", "2", "--all");
    expect_code(&r, 0);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "jobs")), 8);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "next")));
    cJSON_Delete(j);
    result_free(&r);

    /* Without --state every state is listed; the canceled job shows its state. */
    r = SPOOL(port, "jobs", "pg");
    expect_code(&r, 0);
    expect_in(r.out, "canceled");
    result_free(&r);
}

/* ---- submit --wait ----------------------------------------------------------------------- */

static void test_wait_outcomes(void **state)
{
    spt_proc_t *s = *state;
    int port = s->port;
    result_t r = SPOOL(port, "submit", "--queue", "wq", "--type", "echo", "--payload",
                       "{\"hello\":\"world\"}", "--wait");
    expect_code(&r, 0);
    assert_true(spt_json_same(r.out, strlen(r.out), "", "{\"hello\":\"world\"}"));
    result_free(&r);

    r = SPOOL(port, "submit", "--json", "--queue", "wq", "--type", "echo", "--payload", "7",
              "--wait");
    expect_code(&r, 0);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    SPT_ASSERT_STR(spt_jstr(j, "state"), "succeeded");
    assert_int_equal(spt_jint(j, "result"), 7);
    cJSON_Delete(j);
    result_free(&r);

    r = SPOOL(port, "submit", "--queue", "wq", "--type", "fail", "--payload",
              "{\"message\":\"disk on fire\",\"retry\":false}", "--wait");
    expect_code(&r, 4);
    expect_in(r.err, "failed");
    expect_in(r.err, "disk on fire");
    result_free(&r);

    /* Failing on its last attempt after retries: still 4. */
    r = SPOOL(port, "submit", "--queue", "wq", "--type", "fail", "--max-attempts", "1", "--payload",
              "{\"message\":\"nope\"}", "--wait");
    expect_code(&r, 4);
    expect_in(r.err, "nope");
    result_free(&r);
}

static void test_wait_canceled(void **state)
{
    spt_proc_t *s = *state;
    int port = s->port;
    child_t c;
    spool_start(&c, port,
                (const char *const[]){"submit", "--queue", "cw", "--type", "noop", "--delay", "1h",
                                      "--wait", NULL});
    /* Find the job the CLI submitted, then cancel it while the CLI waits. */
    char id[64] = "";
    long long deadline = spt_now_ms() + 15000;
    while (!id[0] && spt_now_ms() < deadline) {
        spt_resp_t resp = spt_do(port, "GET", "/v1/queues/cw/jobs?state=scheduled", NULL, NULL);
        cJSON *jobs = resp.json ? cJSON_GetObjectItem(resp.json, "jobs") : NULL;
        cJSON *first = jobs ? cJSON_GetArrayItem(jobs, 0) : NULL;
        if (first && spt_jstr(first, "id")) snprintf(id, sizeof id, "%s", spt_jstr(first, "id"));
        spt_resp_free(&resp);
        if (!id[0]) spt_sleep_ms(20);
    }
    assert_true(id[0] != '\0');
    char target[96];
    snprintf(target, sizeof target, "/v1/jobs/%s", id);
    SPT_EXPECT(port, "DELETE", target, NULL, NULL, 200, NULL);
    result_t r = finish(&c, RUN_TIMEOUT_MS);
    expect_code(&r, 5);
    expect_in(r.err, "canceled");
    result_free(&r);
}

/* ---- bench ------------------------------------------------------------------------------- */

static void test_bench(void **state)
{
    spt_proc_t *s = *state;
    int port = s->port;
    result_t r =
        spool_run_in(port, NULL, BENCH_TIMEOUT_MS,
                     (const char *const[]){"bench", "--jobs", "2000", "--connections", "4", NULL});
    expect_code(&r, 0);
    expect_in(r.out, "submitted   2000 jobs");
    expect_in(r.out, "jobs/s");
    expect_in(r.out, "end to end");
    expect_in(r.out, "p50");
    expect_in(r.out, "p99");
    expect_in(r.out, "max");
    /* Not a terminal: no progress bar. */
    assert_null(strchr(r.out, '\r'));
    result_free(&r);
    assert_true(spt_queue_num(port, "bench", "totals", "succeeded") >= 2000);

    r = spool_run_in(port, NULL, BENCH_TIMEOUT_MS,
                     (const char *const[]){"--json", "bench", "--jobs", "2000", "--connections",
                                           "4", "--batch", "100", "--queue", "bench2",
                                           "--payload-bytes", "64", NULL});
    expect_code(&r, 0);
    cJSON *j = cJSON_Parse(r.out);
    if (!j) fail_msg("bench --json output is not JSON:\n%s", r.out);
    assert_int_equal(spt_jint(j, "jobs"), 2000);
    assert_int_equal(spt_jint(j, "batch"), 100);
    assert_int_equal(spt_jint(j, "requests"), 20);
    assert_true(cJSON_GetObjectItem(j, "submit_rate")->valuedouble > 0);
    assert_true(cJSON_GetObjectItem(j, "e2e_rate")->valuedouble > 0);
    cJSON *lat = cJSON_GetObjectItem(j, "latency_ms");
    assert_non_null(lat);
    double p50 = cJSON_GetObjectItem(lat, "p50")->valuedouble;
    double p99 = cJSON_GetObjectItem(lat, "p99")->valuedouble;
    double max = cJSON_GetObjectItem(lat, "max")->valuedouble;
    assert_true(p50 > 0 && p50 <= p99 && p99 <= max);
    cJSON_Delete(j);
    result_free(&r);
    assert_int_equal(spt_queue_num(port, "bench2", "totals", "enqueued"), 2000);
    assert_int_equal(spt_queue_num(port, "bench2", "totals", "succeeded"), 2000);
}

/* ---- top in tmux ------------------------------------------------------------------------- */

typedef struct {
    char sock[64];
    char session[32];
} tmux_t;

static result_t tmux(const tmux_t *t, const char *const *args)
{
    char *argv[24];
    size_t n = 0;
    argv[n++] = "tmux";
    argv[n++] = "-L";
    argv[n++] = (char *)t->sock;
    argv[n++] = "-f";
    argv[n++] = "/dev/null";
    for (size_t i = 0; args[i] && n < 23; i++) argv[n++] = (char *)args[i];
    argv[n] = NULL;
    child_t c;
    assert_int_equal(spawn(&c, argv), 0);
    return finish(&c, 10000);
}

static bool have_tmux(void)
{
    child_t c;
    char *argv[] = {"tmux", "-V", NULL};
    if (spawn(&c, argv) != 0) return false;
    result_t r = finish(&c, 10000);
    bool ok = r.code == 0;
    result_free(&r);
    return ok;
}

/* The QUEUED column of the queue's row on the screen, or -1 when the row is not there. */
static long long screen_queued(const tmux_t *t, const char *queue, char **screen)
{
    result_t r = tmux(t, (const char *const[]){"capture-pane", "-p", "-t", t->session, NULL});
    long long queued = -1;
    size_t qlen = strlen(queue);
    for (const char *p = r.out; p && *p;) {
        if (strncmp(p, queue, qlen) == 0 && p[qlen] == ' ') {
            char paused[8];
            long long sched;
            if (sscanf(p + qlen, " %7s %lld %lld", paused, &sched, &queued) != 3) queued = -1;
            break;
        }
        p = strchr(p, '\n');
        if (p) p++;
    }
    free(*screen);
    *screen = r.out;
    free(r.err);
    return queued;
}

static bool session_alive(const tmux_t *t)
{
    result_t r = tmux(t, (const char *const[]){"has-session", "-t", t->session, NULL});
    bool alive = r.code == 0;
    result_free(&r);
    return alive;
}

/* Polls the screen until the queue's QUEUED column shows want (15 s at most). */
static void await_queued(const tmux_t *t, const char *queue, long long want)
{
    char *screen = NULL;
    long long seen = -1;
    long long deadline = spt_now_ms() + 15000;
    while (spt_now_ms() < deadline) {
        seen = screen_queued(t, queue, &screen);
        if (seen == want) break;
        spt_sleep_ms(100);
    }
    if (seen != want)
        fail_msg("queue %s: queued %lld on screen, want %lld:\n%s", queue, seen, want,
                 screen ? screen : "");
    free(screen);
}

static void test_top_tmux(void **state)
{
    spt_proc_t *s = *state;
    int port = s->port;
    if (!have_tmux()) {
        fprintf(stderr, "SKIPPED: tmux is not installed, `spool top` is not tested "
                        "(apt-get install tmux)\n");
        skip();
    }
    tmux_t t;
    snprintf(t.sock, sizeof t.sock, "spool-test-%d", (int)getpid());
    snprintf(t.session, sizeof t.session, "top");
    char dir[] = "/tmp/test_cli_top.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cmd[PATH_MAX + 512];
    snprintf(cmd, sizeof cmd,
             "'%s' --server http://127.0.0.1:%d top 2>'%s/err'; echo $? >'%s/rc.tmp'; "
             "mv '%s/rc.tmp' '%s/rc'",
             spool_path(), port, dir, dir, dir, dir);
    result_t r = tmux(&t, (const char *const[]){"new-session", "-d", "-s", t.session, "-x", "120",
                                                "-y", "30", cmd, NULL});
    expect_code(&r, 0);
    result_free(&r);

    char id[64];
    for (int i = 0; i < 3; i++)
        assert_int_equal(spt_submit(port, "topq", "noop", "", id, sizeof id), 201);
    await_queued(&t, "topq", 3);
    for (int i = 0; i < 2; i++)
        assert_int_equal(spt_submit(port, "topq", "noop", "", id, sizeof id), 201);
    await_queued(&t, "topq", 5);

    char *screen = NULL;
    screen_queued(&t, "topq", &screen);
    expect_in(screen, "spool top");
    expect_in(screen, "QUEUED");
    expect_in(screen, "IN/s");
    free(screen);

    r = tmux(&t, (const char *const[]){"send-keys", "-t", t.session, "q", NULL});
    expect_code(&r, 0);
    result_free(&r);
    long long deadline = spt_now_ms() + 10000;
    while (session_alive(&t) && spt_now_ms() < deadline) spt_sleep_ms(50);
    bool alive = session_alive(&t);
    if (alive) {
        r = tmux(&t, (const char *const[]){"kill-server", NULL});
        result_free(&r);
    }
    assert_false(alive);

    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/rc", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int rc = -1;
    assert_int_equal(fscanf(f, "%d", &rc), 1);
    fclose(f);
    snprintf(path, sizeof path, "%s/err", dir);
    f = fopen(path, "r");
    char err[4096] = "";
    if (f) {
        size_t n = fread(err, 1, sizeof err - 1, f);
        err[n] = '\0';
        fclose(f);
    }
    if (rc != 0 || err[0]) fail_msg("spool top exited %d, stderr:\n%s", rc, err);
    unlink(path);
    snprintf(path, sizeof path, "%s/rc", dir);
    unlink(path);
    rmdir(dir);
}

/* `spool top` with no server: says so and keeps retrying; Ctrl-C still quits cleanly. */
static void test_top_unreachable(void **state)
{
    (void)state;
    if (!have_tmux()) skip();
    tmux_t t;
    snprintf(t.sock, sizeof t.sock, "spool-test-%d-down", (int)getpid());
    snprintf(t.session, sizeof t.session, "down");
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "'%s' --server http://127.0.0.1:%d top", spool_path(), dead_port());
    result_t r = tmux(&t, (const char *const[]){"new-session", "-d", "-s", t.session, "-x", "100",
                                                "-y", "20", cmd, NULL});
    expect_code(&r, 0);
    result_free(&r);
    char *screen = NULL;
    long long deadline = spt_now_ms() + 15000;
    bool seen = false;
    while (!seen && spt_now_ms() < deadline) {
        screen_queued(&t, "none", &screen);
        seen = strstr(screen, "server unreachable, retrying") != NULL;
        if (!seen) spt_sleep_ms(100);
    }
    if (!seen) fail_msg("no 'unreachable' status on screen:\n%s", screen ? screen : "");
    free(screen);
    r = tmux(&t, (const char *const[]){"send-keys", "-t", t.session, "C-c", NULL});
    result_free(&r);
    deadline = spt_now_ms() + 10000;
    while (session_alive(&t) && spt_now_ms() < deadline) spt_sleep_ms(50);
    bool alive = session_alive(&t);
    if (alive) {
        r = tmux(&t, (const char *const[]){"kill-server", NULL});
        result_free(&r);
    }
    assert_false(alive);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help_and_usage),
        cmocka_unit_test(test_server_down),
        cmocka_unit_test_setup_teardown(test_submit_and_job, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(test_refused, setup_plain, teardown),
        cmocka_unit_test(test_token),
        cmocka_unit_test_setup_teardown(test_queue_commands, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(test_jobs_pages, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(test_wait_outcomes, setup_workers, teardown),
        cmocka_unit_test_setup_teardown(test_wait_canceled, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(test_bench, setup_workers, teardown),
        cmocka_unit_test_setup_teardown(test_top_tmux, setup_plain, teardown),
        cmocka_unit_test(test_top_unreachable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
