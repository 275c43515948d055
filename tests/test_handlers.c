/*
 * test_handlers.c - the handlers file loader (worker/handlers_file.c) and the exec, http and
 * lib handlers (worker/handler_exec.c, handler_http.c, handler_lib.c), run through the handler
 * interface on a real libuv loop with real child processes (scripts in tests/fixtures/), a
 * real HTTP server in the test process and real shared libraries (build/lib/); and one
 * end-to-end run of spool-server --workers 2 --handlers FILE.
 *
 * Every wait runs the loop until the handler has reported, bounded by a deadline timer; every
 * test ends by closing the loop with nothing left open.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "handler.h"
#include "handlers_file.h"
#include "http.h"
#include "sp.h"
#include "support/spt.h"

#define WAIT_MS 20000
#define MANY 100

typedef struct {
    sp_hjob_t job;
    int calls;
    bool ok;
    bool retry;
    char *text;
    size_t len;
} tjob_t;

typedef struct {
    uv_loop_t loop;
    uv_timer_t deadline;
    bool expired;
    char dir[PATH_MAX]; /* a temporary directory for files the test writes */
    sp_http_server_t *srv;
    int port;
    sp_http_req_t *hung; /* the /hang request, unanswered */
    bool srv_closed;
} fx_t;

/* ---- paths ------------------------------------------------------------------------------- */

static const char *source_dir(void)
{
    static char cwd[PATH_MAX];
    const char *d = getenv("SPOOL_SOURCE_DIR");
    if (d && d[0]) return d;
    if (!getcwd(cwd, sizeof cwd)) return ".";
    return cwd;
}

/* An absolute path under the source tree ("tests/fixtures/text.sh"). */
static const char *src_path(const char *rel)
{
    static char buf[4][2 * PATH_MAX];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, 2 * PATH_MAX, "%s/%s", source_dir(), rel);
    return b;
}

static const char *fixture(const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, "tests/fixtures/%s", name);
    return src_path(rel);
}

static const char *example_lib(void)
{
    return src_path("build/lib/libspool_example.so");
}

static const char *test_lib(void)
{
    return src_path("build/lib/libspool_testlib.so");
}

/* ---- fixture ----------------------------------------------------------------------------- */

static void deadline_fired(uv_timer_t *t)
{
    fx_t *fx = t->data;
    fx->expired = true;
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    if (!fx) return -1;
    if (uv_loop_init(&fx->loop) != 0) {
        free(fx);
        return -1;
    }
    uv_timer_init(&fx->loop, &fx->deadline);
    fx->deadline.data = fx;
    /* The deadline must not keep the loop alive by itself. */
    uv_unref((uv_handle_t *)&fx->deadline);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/spool-test-handlers-XXXXXX");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

/* Runs the loop until *count >= want, at most ms; false when the deadline came first. */
static bool run_until(fx_t *fx, const int *count, int want, int ms)
{
    fx->expired = false;
    uv_timer_start(&fx->deadline, deadline_fired, (uint64_t)ms, 0);
    while (*count < want && !fx->expired) {
        if (!uv_loop_alive(&fx->loop)) break;
        uv_run(&fx->loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&fx->deadline);
    return *count >= want;
}

static void drain(fx_t *fx)
{
    fx->expired = false;
    uv_timer_start(&fx->deadline, deadline_fired, WAIT_MS, 0);
    while (uv_loop_alive(&fx->loop) && !fx->expired) uv_run(&fx->loop, UV_RUN_ONCE);
    uv_timer_stop(&fx->deadline);
}

static void srv_closed(void *ud)
{
    ((fx_t *)ud)->srv_closed = true;
}

static void remove_dir(const char *dir)
{
    uv_fs_t req;
    uv_dirent_t ent;
    if (uv_fs_scandir(NULL, &req, dir, 0, NULL) >= 0) {
        while (uv_fs_scandir_next(&req, &ent) != UV_EOF) {
            char p[PATH_MAX];
            snprintf(p, sizeof p, "%s/%s", dir, ent.name);
            unlink(p);
        }
    }
    uv_fs_req_cleanup(&req);
    rmdir(dir);
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    if (fx->srv) {
        sp_http_server_close(fx->srv, srv_closed, fx);
        fx->srv = NULL;
    }
    drain(fx);
    uv_close((uv_handle_t *)&fx->deadline, NULL);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    int rc = uv_loop_close(&fx->loop);
    remove_dir(fx->dir);
    free(fx);
    assert_int_equal(rc, 0);
    return 0;
}

/* ---- running one job through a handler --------------------------------------------------- */

static void on_done(sp_hjob_t *job, bool ok, const char *text, size_t len, bool retry)
{
    tjob_t *t = sp_container_of(job, tjob_t, job);
    t->calls++;
    t->ok = ok;
    t->retry = retry;
    free(t->text);
    t->text = malloc(len + 1);
    if (t->text) {
        if (len) memcpy(t->text, text, len);
        t->text[len] = '\0';
    }
    t->len = len;
}

static void job_init(fx_t *fx, tjob_t *t, uint64_t id, const char *payload, uint32_t timeout_ms)
{
    memset(t, 0, sizeof *t);
    t->job.loop = &fx->loop;
    t->job.id = id;
    t->job.lease = 99;
    t->job.queue = "q1";
    t->job.queue_len = 2;
    t->job.type = "t";
    t->job.type_len = 1;
    t->job.payload = payload;
    t->job.payload_len = strlen(payload);
    t->job.attempts = 2;
    t->job.max_attempts = 3;
    t->job.timeout_ms = timeout_ms;
}

static void job_clear(tjob_t *t)
{
    free(t->text);
    t->text = NULL;
}

/* Starts the job and waits for its outcome (exactly one report). */
static void run_job(fx_t *fx, const sp_handler_t *h, tjob_t *t)
{
    h->start(h, &t->job, on_done);
    assert_true(run_until(fx, &t->calls, 1, WAIT_MS));
    assert_int_equal(t->calls, 1);
    assert_non_null(t->text);
}

typedef struct {
    uv_timer_t timer;
    const sp_handler_t *h;
    tjob_t *t;
} canceler_t;

static void cancel_fired(uv_timer_t *timer)
{
    canceler_t *c = timer->data;
    if (c->t->calls == 0) c->h->cancel(c->h, &c->t->job);
    uv_close((uv_handle_t *)timer, NULL);
}

/* Starts the job, cancels it after ms, and waits for its one report. */
static void run_job_cancel(fx_t *fx, const sp_handler_t *h, tjob_t *t, canceler_t *c, int ms)
{
    c->h = h;
    c->t = t;
    uv_timer_init(&fx->loop, &c->timer);
    c->timer.data = c;
    uv_timer_start(&c->timer, cancel_fired, (uint64_t)ms, 0);
    run_job(fx, h, t);
}

static void exec_make(sp_handler_t *h, const char *script, uint32_t timeout_ms, uint32_t grace)
{
    const char *argv[] = {fixture(script)};
    char err[256] = "";
    int rc = sp_handler_exec_new(argv, 1, timeout_ms, grace, h, err, sizeof err);
    if (rc) fail_msg("sp_handler_exec_new: %s", err);
}

/* The result text parsed as JSON (the caller deletes it). */
static cJSON *result_json(const tjob_t *t)
{
    cJSON *j = cJSON_Parse(t->text);
    if (!j) fail_msg("result is not JSON: %s", t->text);
    return j;
}

/* ---- exec -------------------------------------------------------------------------------- */

static void test_exec_stdin_has_job(void **state)
{
    fx_t *fx = *state;
    sp_handler_t h;
    tjob_t t;
    exec_make(&h, "echo_stdin.sh", 0, 0);
    job_init(fx, &t, 7, "{\"a\": [1, 2.50, \"x\"]}", 30000);
    run_job(fx, &h, &t);
    assert_true(t.ok);
    cJSON *j = result_json(&t);
    SPT_ASSERT_STR(spt_jstr(j, "id"), "7");
    SPT_ASSERT_STR(spt_jstr(j, "queue"), "q1");
    SPT_ASSERT_STR(spt_jstr(j, "type"), "t");
    assert_int_equal(spt_jint(j, "attempts"), 2);
    assert_int_equal(spt_jint(j, "max_attempts"), 3);
    assert_int_equal(spt_jint(j, "timeout_ms"), 30000);
    cJSON_Delete(j);
    /* The payload is handed over as the same JSON text, digits and all. */
    assert_true(spt_json_same(t.text, t.len, "payload", "{\"a\": [1, 2.50, \"x\"]}"));
    job_clear(&t);
    h.destroy(&h);
}

static void test_exec_json_output(void **state)
{
    fx_t *fx = *state;
    sp_handler_t h;
    tjob_t t;
    exec_make(&h, "json.sh", 0, 0);
    job_init(fx, &t, 1, "null", 30000);
    run_job(fx, &h, &t);
    assert_true(t.ok);
    assert_string_equal(t.text, "{\"ok\": true, \"n\": 42}");
    job_clear(&t);
    h.destroy(&h);
}

static void test_exec_text_output(void **state)
{
    fx_t *fx = *state;
    sp_handler_t h;
    tjob_t t;
    exec_make(&h, "text.sh", 0, 0);
    job_init(fx, &t, 1, "{}", 30000);
    run_job(fx, &h, &t);
    assert_true(t.ok);
    assert_string_equal(t.text, "\"hello from exec\"");
    job_clear(&t);
    h.destroy(&h);
}

static void test_exec_env(void **state)
{
    fx_t *fx = *state;
    sp_handler_t h;
    tjob_t t;
    setenv("SPOOL_TEST_INHERITED", "yes", 1);
    setenv("SPOOL_JOB_ID", "stale", 1); /* the job's own value wins */
    exec_make(&h, "env.sh", 0, 0);
    job_init(fx, &t, 12345, "{}", 30000);
    run_job(fx, &h, &t);
    unsetenv("SPOOL_JOB_ID");
    unsetenv("SPOOL_TEST_INHERITED");
    assert_true(t.ok);
    cJSON *j = result_json(&t);
    SPT_ASSERT_STR(spt_jstr(j, "id"), "12345");
    SPT_ASSERT_STR(spt_jstr(j, "queue"), "q1");
    SPT_ASSERT_STR(spt_jstr(j, "attempt"), "2");
    SPT_ASSERT_STR(spt_jstr(j, "inherited"), "yes");
    cJSON_Delete(j);
    job_clear(&t);
    h.destroy(&h);
}

static void test_exec_nonzero_exit(void **state)
{
    fx_t *fx = *state;
    sp_handler_t h;
    tjob_t t;
    exec_make(&h, "fail.sh", 0, 0);
    job_init(fx, &t, 1, "{}", 30000);
    run_job(fx, &h, &t);
    assert_false(t.ok);
    assert_true(t.retry);
    assert_true(strncmp(t.text, "exit status 3: ", 15) == 0);
    /* The tail of stderr: its last line is there, its first is not. */
    assert_true(t.len > 10 && strcmp(t.text + t.len - 10, "last words") == 0);
    assert_null(strstr(t.text, "noise line 0:"));
    assert_true(t.len <= 15 + SP_EXEC_STDERR_TAIL);
    job_clear(&t);
    h.destroy(&h);
}

static void test_exec_signal(void **state)
{
    fx_t *fx = *state;
    sp_handler_t h;
    tjob_t t;
    exec_make(&h, "selfkill.sh", 0, 0);
    job_init(fx, &t, 1, "{}", 30000);
    run_job(fx, &h, &t);
    assert_false(t.ok);
    assert_string_equal(t.text, "killed by signal 9");
    job_clear(&t);
    h.destroy(&h);
}

static void test_exec_huge_output(void **state)
{
    fx_t *fx = *state;
    sp_handler_t h;
    tjob_t t;
    exec_make(&h, "huge.sh", 0, 0);
    job_init(fx, &t, 1, "{}", 30000);
    run_job(fx, &h, &t);
    assert_false(t.ok);
    assert_string_equal(t.text, "output over 1 MiB");
    job_clear(&t);
    h.destroy(&h);
}

static void test_exec_timeout(void **state)
{
    fx_t *fx = *state;
    sp_handler_t h;
    tjob_t t;
    /* The handler's own timeout wins over the job's. */
    exec_make(&h, "slow.sh", 300, 0);
    job_init(fx, &t, 1, "{}", 60000);
    run_job(fx, &h, &t);
    assert_false(t.ok);
    assert_string_equal(t.text, "timed out after 300 ms");
    job_clear(&t);
    h.destroy(&h);
}

static void test_exec_job_timeout(void **state)
{
    fx_t *fx = *state;
    sp_handler_t h;
    tjob_t t;
    exec_make(&h, "slow.sh", 0, 0);
    job_init(fx, &t, 1, "{}", 250);
    run_job(fx, &h, &t);
    assert_false(t.ok);
    assert_string_equal(t.text, "timed out after 250 ms");
    job_clear(&t);
    h.destroy(&h);
}

static void test_exec_ignores_sigterm(void **state)
{
    fx_t *fx = *state;
    sp_handler_t h;
    tjob_t t;
    /* A timeout long enough for the script to have set its trap even on a loaded machine. */
    exec_make(&h, "stubborn.sh", 1000, 300);
    job_init(fx, &t, 1, "{}", 60000);
    run_job(fx, &h, &t);
    assert_false(t.ok);
    assert_string_equal(t.text, "timed out after 1000 ms (killed: it ignored SIGTERM)");
    job_clear(&t);
    h.destroy(&h);
}

static void test_exec_cancel(void **state)
{
    fx_t *fx = *state;
    sp_handler_t h;
    tjob_t t;
    canceler_t c;
    exec_make(&h, "slow.sh", 0, 0);
    job_init(fx, &t, 1, "{}", 60000);
    run_job_cancel(fx, &h, &t, &c, 100);
    assert_false(t.ok);
    assert_string_equal(t.text, "canceled");
    job_clear(&t);
    h.destroy(&h);
}

/* A background process the program left holding its pipes does not keep the job running: its
 * process group is killed a moment after the program exits, and the output stands. */
static void test_exec_background_child(void **state)
{
    fx_t *fx = *state;
    sp_handler_t h;
    tjob_t t;
    exec_make(&h, "background.sh", 0, 0);
    job_init(fx, &t, 1, "{}", 60000);
    run_job(fx, &h, &t);
    assert_true(t.ok);
    assert_string_equal(t.text, "\"started\"");
    job_clear(&t);
    h.destroy(&h);
}

static void test_exec_spawn_errors(void **state)
{
    fx_t *fx = *state;
    sp_handler_t h;
    tjob_t t;
    char err[256];

    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/not-executable", fx->dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("#!/bin/sh\necho hi\n", f);
    fclose(f);
    const char *argv1[] = {path};
    assert_int_equal(sp_handler_exec_new(argv1, 1, 0, 0, &h, err, sizeof err), 0);
    job_init(fx, &t, 1, "{}", 30000);
    run_job(fx, &h, &t);
    assert_false(t.ok);
    char want[PATH_MAX + 64];
    snprintf(want, sizeof want, "cannot start %s: permission denied", path);
    assert_string_equal(t.text, want);
    job_clear(&t);
    h.destroy(&h);

    snprintf(path, sizeof path, "%s/missing", fx->dir);
    const char *argv2[] = {path};
    assert_int_equal(sp_handler_exec_new(argv2, 1, 0, 0, &h, err, sizeof err), 0);
    job_init(fx, &t, 1, "{}", 30000);
    run_job(fx, &h, &t);
    assert_false(t.ok);
    snprintf(want, sizeof want, "cannot start %s: no such file or directory", path);
    assert_string_equal(t.text, want);
    job_clear(&t);
    h.destroy(&h);

    const char *argv3[] = {"relative.sh"};
    assert_int_equal(sp_handler_exec_new(argv3, 1, 0, 0, &h, err, sizeof err), SP_EINVAL);
    assert_non_null(strstr(err, "must be absolute"));
}

/* Many children at once with few file descriptors left: every job reports exactly once,
 * either its result or a clear error about descriptors; nothing crashes. */
static void test_exec_many_few_fds(void **state)
{
    fx_t *fx = *state;
    sp_handler_t h;
    static tjob_t t[MANY];
    exec_make(&h, "json.sh", 0, 0);

    struct rlimit old, low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    /* Room for the descriptors open now plus a few dozen: some spawns must fail. */
    int open_now = 0;
    for (int fd = 0; fd < 4096; fd++) {
        if (fcntl(fd, F_GETFD) != -1) open_now = fd + 1;
    }
    low = old;
    low.rlim_cur = (rlim_t)open_now + 60;
    if (low.rlim_cur > old.rlim_cur) low.rlim_cur = old.rlim_cur;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);

    int finished = 0;
    for (int i = 0; i < MANY; i++) {
        job_init(fx, &t[i], (uint64_t)i + 1, "{}", 30000);
        h.start(&h, &t[i].job, on_done);
    }
    fx->expired = false;
    uv_timer_start(&fx->deadline, deadline_fired, 60000, 0);
    for (;;) {
        finished = 0;
        for (int i = 0; i < MANY; i++) finished += t[i].calls > 0;
        if (finished == MANY || fx->expired || !uv_loop_alive(&fx->loop)) break;
        uv_run(&fx->loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&fx->deadline);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    assert_int_equal(finished, MANY);

    int ok = 0, fdfail = 0;
    for (int i = 0; i < MANY; i++) {
        assert_int_equal(t[i].calls, 1);
        if (t[i].ok) {
            assert_string_equal(t[i].text, "{\"ok\": true, \"n\": 42}");
            ok++;
        } else {
            if (strstr(t[i].text, "cannot start ") != t[i].text)
                fail_msg("unexpected error: %s", t[i].text);
            fdfail += strstr(t[i].text, "too many open files") != NULL;
        }
        job_clear(&t[i]);
    }
    assert_true(ok > 0);
    assert_true(fdfail > 0);
    h.destroy(&h);
}

/* ---- lib --------------------------------------------------------------------------------- */

static void lib_make(sp_handler_t *h, const char *lib, const char *sym, uint32_t timeout_ms)
{
    char err[512] = "";
    int rc = sp_handler_lib_new(lib, sym, timeout_ms, h, err, sizeof err);
    if (rc) fail_msg("sp_handler_lib_new: %s (build it with make)", err);
}

static void test_lib_example(void **state)
{
    fx_t *fx = *state;
    sp_handler_t h;
    tjob_t t;
    lib_make(&h, example_lib(), "spool_sha256", 0);

    job_init(fx, &t, 1, "\"hello\"", 30000);
    run_job(fx, &h, &t);
    assert_true(t.ok);
    assert_string_equal(t.text, "{\"sha256\":\"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e"
                                "73043362938b9824\",\"bytes\":5}");
    job_clear(&t);

    /* Escapes are decoded before hashing: "\u00e9" is the two bytes of é. */
    job_init(fx, &t, 2, "\"caf\\u00e9\\n\"", 30000);
    run_job(fx, &h, &t);
    assert_true(t.ok);
    cJSON *j = result_json(&t);
    assert_int_equal(spt_jint(j, "bytes"), 6);
    cJSON_Delete(j);
    job_clear(&t);

    job_init(fx, &t, 3, "{\"x\": 1}", 30000);
    run_job(fx, &h, &t);
    assert_false(t.ok);
    assert_non_null(strstr(t.text, "payload must be a JSON string"));
    job_clear(&t);
    h.destroy(&h);
}

static void test_lib_results(void **state)
{
    fx_t *fx = *state;
    sp_handler_t h;
    tjob_t t;

    lib_make(&h, test_lib(), "t_text", 0);
    job_init(fx, &t, 1, "{}", 30000);
    run_job(fx, &h, &t);
    assert_true(t.ok);
    assert_string_equal(t.text, "\"plain words\"");
    job_clear(&t);
    h.destroy(&h);

    lib_make(&h, test_lib(), "t_null", 0);
    job_init(fx, &t, 1, "{}", 30000);
    run_job(fx, &h, &t);
    assert_true(t.ok);
    assert_string_equal(t.text, "null");
    job_clear(&t);
    h.destroy(&h);

    /* Fails with no message and a result set: both are freed (the leak checker watches). */
    lib_make(&h, test_lib(), "t_fail_silent", 0);
    job_init(fx, &t, 1, "{}", 30000);
    run_job(fx, &h, &t);
    assert_false(t.ok);
    assert_string_equal(t.text, "failed (returned 5)");
    job_clear(&t);
    h.destroy(&h);

    lib_make(&h, test_lib(), "t_echo", 0);
    job_init(fx, &t, 77, "[1,2,3]", 30000);
    run_job(fx, &h, &t);
    assert_true(t.ok);
    cJSON *j = result_json(&t);
    SPT_ASSERT_STR(spt_jstr(j, "id"), "77");
    cJSON_Delete(j);
    assert_true(spt_json_same(t.text, t.len, "payload", "[1,2,3]"));
    job_clear(&t);
    h.destroy(&h);
}

static void test_lib_cancel_waits(void **state)
{
    fx_t *fx = *state;
    sp_handler_t h;
    tjob_t t;
    canceler_t c;
    lib_make(&h, test_lib(), "t_slow", 0);
    job_init(fx, &t, 1, "{}", 30000);
    run_job_cancel(fx, &h, &t, &c, 50);
    assert_false(t.ok);
    assert_string_equal(t.text, "canceled");
    job_clear(&t);
    drain(fx);
    h.destroy(&h);
}

static void test_lib_timeout(void **state)
{
    fx_t *fx = *state;
    sp_handler_t h;
    tjob_t t;
    lib_make(&h, test_lib(), "t_slow", 100);
    job_init(fx, &t, 1, "{}", 30000);
    run_job(fx, &h, &t);
    assert_false(t.ok);
    assert_non_null(strstr(t.text, "timed out after 100 ms"));
    job_clear(&t);
    /* The call goes on until it returns; the loop then has nothing left. */
    drain(fx);
    h.destroy(&h);
}

/* ---- http -------------------------------------------------------------------------------- */

static bool path_is(const sp_http_req_t *req, const char *p)
{
    return req->path_len == strlen(p) && memcmp(req->path, p, req->path_len) == 0;
}

static void hung_aborted(void *ud, sp_http_req_t *req)
{
    (void)req;
    ((fx_t *)ud)->hung = NULL;
}

static void srv_handle(void *ud, sp_http_req_t *req)
{
    fx_t *fx = ud;
    if (path_is(req, "/ok")) {
        sp_http_respond(req, 200, "application/json", NULL, req->body ? req->body : "",
                        req->body_len);
    } else if (path_is(req, "/text")) {
        sp_http_respond(req, 201, "text/plain", NULL, "plain", 5);
    } else if (path_is(req, "/err")) {
        sp_http_respond(req, 500, "text/plain", NULL, "boom\n", 5);
    } else if (path_is(req, "/hang")) {
        fx->hung = req;
        sp_http_req_on_abort(req, hung_aborted, fx);
    } else {
        sp_http_respond(req, 404, "text/plain", NULL, "no", 2);
    }
}

static void srv_start(fx_t *fx)
{
    sp_http_opts_t o;
    sp_http_opts_default(&o);
    o.handler = srv_handle;
    o.ud = fx;
    char bound[128];
    assert_int_equal(
        sp_http_server_start(&fx->loop, "127.0.0.1", 0, &o, &fx->srv, bound, sizeof bound), 0);
    const char *colon = strrchr(bound, ':');
    assert_non_null(colon);
    fx->port = (int)strtol(colon + 1, NULL, 10);
}

static void http_make(fx_t *fx, sp_handler_t *h, int port, const char *path, uint32_t timeout_ms)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    char err[512] = "";
    int rc = sp_handler_http_new(&fx->loop, url, timeout_ms, h, err, sizeof err);
    if (rc) fail_msg("sp_handler_http_new: %s", err);
}

/* The http handler's client closes by running the loop: close the server first, so that the
 * loop has nothing else to wait on. */
static void http_done(fx_t *fx, sp_handler_t *h)
{
    if (fx->srv) {
        sp_http_server_close(fx->srv, srv_closed, fx);
        fx->srv = NULL;
    }
    h->destroy(h);
    drain(fx);
}

static void test_http_ok(void **state)
{
    fx_t *fx = *state;
    sp_handler_t h;
    tjob_t t;
    srv_start(fx);
    http_make(fx, &h, fx->port, "/ok", 0);
    job_init(fx, &t, 5, "{\"k\": \"v\"}", 30000);
    run_job(fx, &h, &t);
    assert_true(t.ok);
    cJSON *j = result_json(&t);
    SPT_ASSERT_STR(spt_jstr(j, "id"), "5");
    SPT_ASSERT_STR(spt_jstr(j, "queue"), "q1");
    cJSON_Delete(j);
    assert_true(spt_json_same(t.text, t.len, "payload", "{\"k\": \"v\"}"));
    job_clear(&t);

    /* A second job reuses the handler (and its kept-alive connection). */
    job_init(fx, &t, 6, "1", 30000);
    run_job(fx, &h, &t);
    assert_true(t.ok);
    job_clear(&t);
    http_done(fx, &h);
}

static void test_http_text(void **state)
{
    fx_t *fx = *state;
    sp_handler_t h;
    tjob_t t;
    srv_start(fx);
    http_make(fx, &h, fx->port, "/text", 0);
    job_init(fx, &t, 1, "{}", 30000);
    run_job(fx, &h, &t);
    assert_true(t.ok);
    assert_string_equal(t.text, "\"plain\"");
    job_clear(&t);
    http_done(fx, &h);
}

static void test_http_500(void **state)
{
    fx_t *fx = *state;
    sp_handler_t h;
    tjob_t t;
    srv_start(fx);
    http_make(fx, &h, fx->port, "/err", 0);
    job_init(fx, &t, 1, "{}", 30000);
    run_job(fx, &h, &t);
    assert_false(t.ok);
    assert_string_equal(t.text, "HTTP 500: boom");
    job_clear(&t);
    http_done(fx, &h);
}

/* A port nothing listens on: bound, then closed. */
static int dead_port(fx_t *fx)
{
    uv_tcp_t tcp;
    struct sockaddr_in a;
    struct sockaddr_storage got;
    int len = sizeof got;
    uv_tcp_init(&fx->loop, &tcp);
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(uv_tcp_bind(&tcp, (const struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_tcp_getsockname(&tcp, (struct sockaddr *)&got, &len), 0);
    int port = ntohs(((struct sockaddr_in *)&got)->sin_port);
    uv_close((uv_handle_t *)&tcp, NULL);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    return port;
}

static void test_http_refused(void **state)
{
    fx_t *fx = *state;
    sp_handler_t h;
    tjob_t t;
    http_make(fx, &h, dead_port(fx), "/ok", 0);
    job_init(fx, &t, 1, "{}", 30000);
    run_job(fx, &h, &t);
    assert_false(t.ok);
    assert_true(t.retry);
    if (!strstr(t.text, "refused")) fail_msg("expected a refused connection: %s", t.text);
    job_clear(&t);
    http_done(fx, &h);
}

static void test_http_timeout(void **state)
{
    fx_t *fx = *state;
    sp_handler_t h;
    tjob_t t;
    srv_start(fx);
    http_make(fx, &h, fx->port, "/hang", 200);
    job_init(fx, &t, 1, "{}", 30000);
    run_job(fx, &h, &t);
    assert_false(t.ok);
    if (strncmp(t.text, "timed out after 200 ms", 22) != 0)
        fail_msg("expected a timeout: %s", t.text);
    job_clear(&t);
    http_done(fx, &h);
}

static void test_http_cancel(void **state)
{
    fx_t *fx = *state;
    sp_handler_t h;
    tjob_t t;
    canceler_t c;
    srv_start(fx);
    http_make(fx, &h, fx->port, "/hang", 0);
    job_init(fx, &t, 1, "{}", 30000);
    run_job_cancel(fx, &h, &t, &c, 100);
    assert_false(t.ok);
    assert_string_equal(t.text, "canceled");
    job_clear(&t);
    http_done(fx, &h);
}

/* ---- the loader -------------------------------------------------------------------------- */

static const char *write_file(fx_t *fx, const char *name, const char *text)
{
    static char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", fx->dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_load_ok(void **state)
{
    fx_t *fx = *state;
    char text[4096];
    snprintf(
        text, sizeof text,
        "{\"handlers\": {\n"
        "  \"thumb\": {\"exec\": [\"%s\", \"--size\", \"256\"], \"timeout_ms\": 60000},\n"
        "  \"notify\": {\"http\": \"http://127.0.0.1:9/hooks/notify\", \"timeout_ms\": null},\n"
        "  \"hash\": {\"lib\": \"%s\", \"symbol\": \"spool_sha256\"},\n"
        "  \"slow\": {\"exec\": [\"%s\"], \"kill_grace_ms\": 100}\n"
        "}}\n",
        fixture("text.sh"), example_lib(), fixture("slow.sh"));
    const char *path = write_file(fx, "ok.json", text);
    sp_handlers_t *hs = NULL;
    char err[512] = "";
    int rc = sp_handlers_load(path, &fx->loop, &hs, err, sizeof err);
    if (rc) fail_msg("load: %s", err);
    const sp_handler_t *h = sp_handlers_find(hs, "thumb", 5);
    assert_non_null(h);
    assert_string_equal(h->kind, "exec");
    h = sp_handlers_find(hs, "notify", 6);
    assert_non_null(h);
    assert_string_equal(h->kind, "http");
    h = sp_handlers_find(hs, "hash", 4);
    assert_non_null(h);
    assert_string_equal(h->kind, "lib");
    assert_null(sp_handlers_find(hs, "other", 5));
    /* Built-ins are still found first. */
    h = sp_handlers_find(hs, "echo", 4);
    assert_non_null(h);
    assert_string_equal(h->kind, "builtin");

    /* A handler from the file runs a job. */
    tjob_t t;
    h = sp_handlers_find(hs, "hash", 4);
    job_init(fx, &t, 1, "\"\"", 30000);
    run_job(fx, h, &t);
    assert_true(t.ok);
    assert_non_null(
        strstr(t.text, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    job_clear(&t);
    sp_handlers_free(hs);
}

typedef struct {
    const char *text; /* @S: a fixture script; @L: the example library */
    const char *want[3];
} bad_case_t;

/* Copies tmpl into out with @S replaced by a fixture script and @L by the example library. */
static void expand(char *out, size_t cap, const char *tmpl)
{
    size_t n = 0;
    for (const char *p = tmpl; *p && n + 1 < cap; p++) {
        const char *sub = NULL;
        if (p[0] == '@' && p[1] == 'S') sub = fixture("text.sh");
        if (p[0] == '@' && p[1] == 'L') sub = example_lib();
        if (!sub) {
            out[n++] = *p;
            continue;
        }
        size_t len = strlen(sub);
        if (n + len + 1 > cap) break;
        memcpy(out + n, sub, len);
        n += len;
        p++;
    }
    out[n] = '\0';
}

static void test_load_errors(void **state)
{
    fx_t *fx = *state;
    static const bad_case_t cases[] = {
        {"{\"handlers\": {\"thumbnail\": {\"exec\": [\"make-thumb\"]}}}",
         {"handlers.thumbnail.exec: program path must be absolute: 'make-thumb'"}},
        {"{\"handlers\": {\"t\": {\"exec\": [\"/nonexistent/prog\"]}}}",
         {"handlers.t.exec: cannot run '/nonexistent/prog'", "No such file"}},
        {"{\"handlers\": {\"t\": {\"exec\": []}}}", {"handlers.t.exec: must be a non-empty"}},
        {"{\"handlers\": {\"t\": {\"exec\": [\"@S\", 5]}}}",
         {"handlers.t.exec: argument 1 must be a string"}},
        {"{\"handlers\": {\"t\": {\"python\": \"x.py\"}}}",
         {"handlers.t: unknown handler kind or field 'python'"}},
        {"{\"handlers\": {\"t\": {}}}", {"handlers.t: no handler kind"}},
        {"{\"handlers\": {\"t\": {\"exec\": [\"@S\"], \"http\": \"http://a:1/\"}}}",
         {"handlers.t: give exactly one of exec, http, lib"}},
        {"{\"handlers\": {\"bad name\": {\"exec\": [\"@S\"]}}}",
         {"handlers.bad name: bad type name"}},
        {"{\"handlers\": {\"echo\": {\"exec\": [\"@S\"]}}}",
         {"handlers.echo: 'echo' is a built-in type"}},
        {"{\"handlers\": {\"t\": {\"exec\": [\"@S\"], \"timeout_ms\": 50}}}",
         {"handlers.t: timeout_ms must be an integer from 100 to 86400000"}},
        {"{\"handlers\": {\"t\": {\"exec\": [\"@S\"], \"timeout_ms\": 86400001}}}",
         {"handlers.t: timeout_ms must be"}},
        {"{\"handlers\": {\"t\": {\"exec\": [\"@S\"], \"symbol\": \"f\"}}}",
         {"handlers.t: symbol belongs to lib handlers only"}},
        {"{\"handlers\": {\"t\": {\"http\": \"https://example.com/x\"}}}",
         {"handlers.t.http: only http:// URLs are supported"}},
        {"{\"handlers\": {\"t\": {\"http\": 5}}}", {"handlers.t.http: must be a URL string"}},
        {"{\"handlers\": {\"t\": {\"lib\": \"/nonexistent/libx.so\", \"symbol\": \"fn\"}}}",
         {"handlers.t.lib: cannot load library '/nonexistent/libx.so'", "symbol 'fn'"}},
        {"{\"handlers\": {\"t\": {\"lib\": \"@L\", \"symbol\": \"nope\"}}}",
         {"handlers.t.lib: library '", "libspool_example.so' has no symbol 'nope'"}},
        {"{\"handlers\": {\"t\": {\"lib\": \"@L\"}}}", {"handlers.t.lib: needs \"symbol\""}},
        {"{\"handlers\": {\"t\": {\"lib\": \"libx.so\", \"symbol\": \"f\"}}}",
         {"handlers.t.lib: library path must be absolute: 'libx.so'"}},
        {"{\"handlers\": {\"t\": {\"exec\": [\"@S\"]}, \"t\": {\"exec\": [\"@S\"]}}}",
         {"handlers: duplicate key 't'"}},
        {"{\"handlers\": {\"t\": {\"exec\": [\"@S\"]}", {"invalid JSON at byte"}},
        {"{\"handlers\": [], \"x\": 1}", {"unknown field 'x'"}},
        {"{\"handlers\": []}", {"handlers: must be an object"}},
        {"[]", {"must be an object like {\"handlers\""}},
        {"{}", {"no \"handlers\" object"}},
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(cases); i++) {
        char text[2048];
        expand(text, sizeof text, cases[i].text);
        const char *path = write_file(fx, "bad.json", text);
        sp_handlers_t *hs = (sp_handlers_t *)&text; /* must be reset to NULL */
        char err[1024] = "";
        int rc = sp_handlers_load(path, &fx->loop, &hs, err, sizeof err);
        if (rc != SP_EINVAL) fail_msg("case %zu (%s): loaded (rc %d)", i, text, rc);
        assert_null(hs);
        for (size_t k = 0; k < 3 && cases[i].want[k]; k++) {
            if (!strstr(err, cases[i].want[k]))
                fail_msg("case %zu: error \"%s\" lacks \"%s\"", i, err, cases[i].want[k]);
        }
    }

    /* A missing handlers file. */
    sp_handlers_t *hs = NULL;
    char err[1024] = "";
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/absent.json", fx->dir);
    assert_int_equal(sp_handlers_load(path, &fx->loop, &hs, err, sizeof err), SP_EINVAL);
    assert_non_null(strstr(err, "cannot open"));
    assert_non_null(strstr(err, "absent.json"));
}

/* ---- end to end -------------------------------------------------------------------------- */

static void test_server_runs_exec_handler(void **state)
{
    fx_t *fx = *state;
    char text[2048];
    snprintf(text, sizeof text,
             "{\"handlers\": {\"script\": {\"exec\": [\"%s\"]}, \"who\": {\"exec\": [\"%s\"]}, "
             "\"slow\": {\"exec\": [\"%s\"]}}}",
             fixture("json.sh"), fixture("env.sh"), fixture("slow.sh"));
    char hpath[PATH_MAX + 64];
    snprintf(hpath, sizeof hpath, "%s", write_file(fx, "handlers.json", text));

    spt_proc_t p;
    SPT_START(p, "--workers", "2", "--handlers", hpath);
    char id[64];
    assert_int_equal(spt_submit(p.port, "e2e", "script", "", id, sizeof id), 201);
    assert_int_equal(spt_wait_state(p.port, id, "succeeded", 20000), 0);
    char target[128];
    snprintf(target, sizeof target, "/v1/jobs/%s", id);
    spt_resp_t r = spt_do(p.port, "GET", target, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_true(spt_json_same(r.body, r.body_len, "result", "{\"ok\": true, \"n\": 42}"));
    spt_resp_free(&r);

    char id2[64];
    assert_int_equal(spt_submit(p.port, "e2e", "who", "", id2, sizeof id2), 201);
    assert_int_equal(spt_wait_state(p.port, id2, "succeeded", 20000), 0);
    snprintf(target, sizeof target, "/v1/jobs/%s", id2);
    r = spt_do(p.port, "GET", target, NULL, NULL);
    assert_int_equal(r.status, 200);
    char want[128];
    snprintf(want, sizeof want, "\"%s\"", id2);
    assert_true(spt_json_same(r.body, r.body_len, "result.id", want));
    assert_true(spt_json_same(r.body, r.body_len, "result.queue", "\"e2e\""));
    assert_true(spt_json_same(r.body, r.body_len, "result.attempt", "\"1\""));
    spt_resp_free(&r);

    /* Cancel of a running program: seen at the next heartbeat (a third of the job's timeout),
     * the program is terminated and the job ends canceled. */
    char id3[64];
    assert_int_equal(spt_submit(p.port, "e2e", "slow", ",\"timeout_ms\":1500", id3, sizeof id3),
                     201);
    assert_int_equal(spt_wait_state(p.port, id3, "running", 20000), 0);
    snprintf(target, sizeof target, "/v1/jobs/%s", id3);
    r = spt_do(p.port, "DELETE", target, NULL, NULL);
    assert_int_equal(r.status, 200);
    spt_resp_free(&r);
    assert_int_equal(spt_wait_state(p.port, id3, "canceled", 20000), 0);
    SPT_STOP(p);
}

static void test_server_rejects_bad_handlers(void **state)
{
    fx_t *fx = *state;
    char hpath[PATH_MAX + 64];
    snprintf(hpath, sizeof hpath, "%s",
             write_file(fx, "bad.json", "{\"handlers\": {\"x\": {\"exec\": [\"make-thumb\"]}}}"));
    spt_proc_t p;
    const char *const args[] = {"--workers", "1", "--handlers", hpath, NULL};
    assert_int_equal(spt_start(&p, "spool-server", args, NULL, false), 0);
    char *err = NULL;
    int code = spt_finish(&p, 10000, NULL, &err);
    assert_int_equal(code, 2);
    assert_non_null(err);
    if (!strstr(err, "handlers.x.exec: program path must be absolute: 'make-thumb'"))
        fail_msg("stderr lacks the entry's error: %s", err);
    free(err);
}

int main(void)
{
    /* Writing a job to a child that has exited must not kill the test. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_exec_stdin_has_job, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_json_output, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_text_output, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_nonzero_exit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_signal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_huge_output, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_job_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_ignores_sigterm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_background_child, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_spawn_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_many_few_fds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lib_example, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lib_results, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lib_cancel_waits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lib_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_500, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_runs_exec_handler, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_rejects_bad_handlers, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
