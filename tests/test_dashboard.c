/*
 * test_dashboard.c - the dashboard page (GET /) in a real browser: Debian's headless Chromium,
 * driven over the DevTools protocol on a pipe (--remote-debugging-pipe: NUL-separated JSON on
 * the browser's fds 3 and 4, so no WebSocket client is needed). One page session watches the
 * queue table and the charts appear and then follow submissions, acks and failures; the failed
 * jobs list and its retry button; and, with --token-file, the token prompt before any data.
 *
 * Without Chromium (`make deps` installs it) every test is skipped with a message saying so.
 * With SPOOL_DASHBOARD_SCREENSHOT=FILE.png set, one more test runs a busy server for a while
 * and writes a full-page screenshot of the dashboard to FILE.png (the README's picture).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/spt.h"

#define WAIT_MS 30000 /* how long the page may take to show an expected state */
#define CALL_MS 30000 /* bound on one DevTools call */
#define TOKEN "dashboard-test-token"
#define AUTH "Authorization: Bearer " TOKEN "\r\n"

/* ---- finding and starting Chromium ------------------------------------------------------- */

static char chromium[4096];

/* $SPOOL_CHROMIUM, else chromium or chromium-browser on $PATH. */
static const char *chromium_path(void)
{
    const char *env = getenv("SPOOL_CHROMIUM");
    if (env && *env) return access(env, X_OK) == 0 ? env : NULL;
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/local/bin:/usr/bin:/bin";
    static const char *const names[] = {"chromium", "chromium-browser"};
    for (size_t n = 0; n < sizeof names / sizeof names[0]; n++) {
        const char *p = path;
        while (*p) {
            const char *end = strchr(p, ':');
            size_t len = end ? (size_t)(end - p) : strlen(p);
            int w = snprintf(chromium, sizeof chromium, "%.*s/%s", (int)len, p, names[n]);
            if (len && w > 0 && (size_t)w < sizeof chromium && access(chromium, X_OK) == 0)
                return chromium;
            p += len;
            if (*p == ':') p++;
        }
    }
    return NULL;
}

/* Skips the calling test when the browser is missing: a machine without it cannot run them,
 * and `make deps` is what installs it. */
#define NEED_CHROMIUM()                                                                            \
    do {                                                                                           \
        if (!chromium_path()) {                                                                    \
            print_message("chromium not found (apt-get install chromium, or make deps): "          \
                          "dashboard test skipped\n");                                             \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

typedef struct {
    pid_t pid; /* the browser's, also its process group's */
    int to;    /* commands: the browser's fd 3 */
    int from;  /* answers and events: the browser's fd 4 */
    char *buf; /* bytes read and not yet split at a NUL */
    size_t len, cap;
    int next_id;
    char session[128]; /* the page's session, for flattened per-page commands */
    char dir[64];      /* its --user-data-dir, removed on close */
    int exceptions;    /* uncaught exceptions the page threw */
    int errors;        /* console errors and failed loads the page reported */
    bool quiet;        /* errors are expected (refused requests): count them, print none */
} cdp_t;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

/* Starts the browser with the DevTools protocol on fds 3 and 4; 0 or -1. */
static int browser_start(cdp_t *c, int width, int height)
{
    memset(c, 0, sizeof *c);
    c->pid = -1;
    c->to = c->from = -1;
    c->next_id = 1;
    snprintf(c->dir, sizeof c->dir, "/tmp/spool-chromium-XXXXXX");
    if (!mkdtemp(c->dir)) return -1;
    int cmd[2], ev[2];
    if (pipe2(cmd, O_CLOEXEC)) return -1;
    if (pipe2(ev, O_CLOEXEC)) {
        close(cmd[0]), close(cmd[1]);
        return -1;
    }
    char profile[128], size[64], log[128];
    snprintf(profile, sizeof profile, "--user-data-dir=%s", c->dir);
    snprintf(size, sizeof size, "--window-size=%d,%d", width, height);
    snprintf(log, sizeof log, "%s/chromium.log", c->dir);
    /* The background-networking flags keep it from calling out: this machine has no network. */
    char *const argv[] = {chromium,
                          "--headless",
                          "--no-sandbox",
                          "--disable-gpu",
                          "--disable-quic",
                          "--no-first-run",
                          "--disable-background-networking",
                          "--disable-component-update",
                          "--disable-sync",
                          "--disable-extensions",
                          "--hide-scrollbars",
                          "--mute-audio",
                          "--remote-debugging-pipe",
                          profile,
                          size,
                          "about:blank",
                          NULL};
    pid_t pid = fork();
    if (pid < 0) {
        close(cmd[0]), close(cmd[1]), close(ev[0]), close(ev[1]);
        return -1;
    }
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int in = open("/dev/null", O_RDONLY);
        int out = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (in < 0 || out < 0) _exit(127);
        /* Out of the way of 3 and 4 first, whatever numbers the pipes got. */
        int a = fcntl(cmd[0], F_DUPFD_CLOEXEC, 10);
        int b = fcntl(ev[1], F_DUPFD_CLOEXEC, 10);
        if (a < 0 || b < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0 ||
            dup2(a, 3) < 0 || dup2(b, 4) < 0)
            _exit(127);
        execv(chromium, argv);
        _exit(127);
    }
    close(cmd[0]);
    close(ev[1]);
    c->pid = pid;
    c->to = cmd[1];
    c->from = ev[0];
    return 0;
}

/* Prints the end of the browser's own log, for a failure that may be its fault. */
static void browser_log_tail(const cdp_t *c)
{
    char path[128];
    snprintf(path, sizeof path, "%s/chromium.log", c->dir);
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[1024];
    fprintf(stderr, "---- chromium log (errors) ----\n");
    while (fgets(line, sizeof line, f))
        if (!strstr(line, "dbus") && !strstr(line, "unexpected operator")) fputs(line, stderr);
    fclose(f);
}

/* ---- the DevTools protocol --------------------------------------------------------------- */

static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w, n -= (size_t)w;
    }
    return 0;
}

/* Events are messages without an id: the page's exceptions and errors are counted (and shown),
 * the rest ignored. */
static void on_event(cdp_t *c, const cJSON *msg)
{
    const char *method = spt_jstr(msg, "method");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(msg, "params");
    if (!method) return;
    if (strcmp(method, "Runtime.exceptionThrown") == 0) {
        c->exceptions++;
        char *s = cJSON_PrintUnformatted(params);
        fprintf(stderr, "page exception: %s\n", s ? s : "?");
        free(s);
    } else if (strcmp(method, "Log.entryAdded") == 0 ||
               strcmp(method, "Runtime.consoleAPICalled") == 0) {
        const cJSON *entry = cJSON_GetObjectItemCaseSensitive(params, "entry");
        const char *level = spt_jstr(entry ? entry : params, entry ? "level" : "type");
        if (!level || strcmp(level, "error") != 0) return;
        c->errors++;
        if (c->quiet) return;
        char *s = cJSON_PrintUnformatted(params);
        fprintf(stderr, "page error: %s\n", s ? s : "?");
        free(s);
    }
}

/* The next message from the browser, waiting at most until deadline; NULL on timeout or EOF. */
static cJSON *cdp_next(cdp_t *c, long long deadline)
{
    for (;;) {
        char *nul = c->len ? memchr(c->buf, '\0', c->len) : NULL;
        if (nul) {
            size_t n = (size_t)(nul - c->buf);
            cJSON *msg = cJSON_ParseWithLength(c->buf, n);
            memmove(c->buf, nul + 1, c->len - n - 1);
            c->len -= n + 1;
            if (msg) return msg;
            continue;
        }
        long long left = deadline - spt_now_ms();
        if (left <= 0) return NULL;
        struct pollfd pfd = {.fd = c->from, .events = POLLIN};
        int r = poll(&pfd, 1, (int)left);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return NULL;
        if (c->cap - c->len < 65536) {
            size_t cap = c->cap ? c->cap * 2 : 262144;
            char *p = realloc(c->buf, cap);
            if (!p) return NULL;
            c->buf = p, c->cap = cap;
        }
        ssize_t got = read(c->from, c->buf + c->len, c->cap - c->len);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return NULL;
        c->len += (size_t)got;
    }
}

/* Sends method with params (a JSON object's text, or NULL), to the page's session when
 * on_page, and returns its "result" (caller deletes), or NULL after printing why. */
static cJSON *cdp_call(cdp_t *c, bool on_page, const char *method, const char *params)
{
    int id = c->next_id++;
    size_t cap = strlen(method) + (params ? strlen(params) : 2) + sizeof c->session + 96;
    char *req = malloc(cap);
    if (!req) return NULL;
    int n = snprintf(req, cap, "{\"id\":%d,%s%s%s\"method\":\"%s\",\"params\":%s}", id,
                     on_page ? "\"sessionId\":\"" : "", on_page ? c->session : "",
                     on_page ? "\"," : "", method, params ? params : "{}");
    int sent = n > 0 && (size_t)n < cap ? send_all(c->to, req, (size_t)n + 1) : -1;
    free(req);
    if (sent) {
        fprintf(stderr, "devtools: cannot send %s\n", method);
        return NULL;
    }
    long long deadline = spt_now_ms() + CALL_MS;
    for (;;) {
        cJSON *msg = cdp_next(c, deadline);
        if (!msg) {
            fprintf(stderr, "devtools: no answer to %s\n", method);
            return NULL;
        }
        if (spt_jint(msg, "id") != id) {
            on_event(c, msg);
            cJSON_Delete(msg);
            continue;
        }
        cJSON *result = cJSON_DetachItemFromObjectCaseSensitive(msg, "result");
        if (!result) {
            char *s = cJSON_PrintUnformatted(msg);
            fprintf(stderr, "devtools: %s failed: %s\n", method, s ? s : "?");
            free(s);
        }
        cJSON_Delete(msg);
        return result;
    }
}

/* Like cdp_call, for calls whose answer only matters as success. */
static int cdp_do(cdp_t *c, bool on_page, const char *method, const char *params)
{
    cJSON *r = cdp_call(c, on_page, method, params);
    cJSON_Delete(r);
    return r ? 0 : -1;
}

/* A JSON string literal of s, malloc'd. */
static char *json_str(const char *s)
{
    cJSON *j = cJSON_CreateString(s);
    char *text = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    return text;
}

/* Evaluates expr in the page (awaiting a promise) and returns its value when it is a string,
 * malloc'd; NULL when it is not, or when the page threw. */
static char *page_eval(cdp_t *c, const char *expr)
{
    char *lit = json_str(expr);
    if (!lit) return NULL;
    size_t cap = strlen(lit) + 128;
    char *params = malloc(cap);
    if (!params) {
        free(lit);
        return NULL;
    }
    snprintf(params, cap, "{\"expression\":%s,\"awaitPromise\":true,\"returnByValue\":true}", lit);
    free(lit);
    cJSON *r = cdp_call(c, true, "Runtime.evaluate", params);
    free(params);
    char *out = NULL;
    const cJSON *exc = cJSON_GetObjectItemCaseSensitive(r, "exceptionDetails");
    const cJSON *val =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(r, "result"), "value");
    if (exc) {
        char *s = cJSON_PrintUnformatted(exc);
        fprintf(stderr, "evaluation threw: %s\n", s ? s : "?");
        free(s);
    } else if (cJSON_IsString(val)) {
        out = strdup(val->valuestring);
    }
    cJSON_Delete(r);
    return out;
}

/* Helpers the tests' expressions use, installed in each page they look at. */
static const char page_helpers[] =
    "window.__t = {"
    "  row(q) {"
    "    const tr = [...document.querySelectorAll('#queues tbody tr')]"
    "      .find((r) => r.cells[0].textContent === q);"
    "    return tr ? [...tr.cells].slice(1, 7).map((td) => td.textContent).join(' ') : null;"
    "  },"
    "  rows() { return document.querySelectorAll('#queues tbody tr').length; },"
    "  status() { return document.getElementById('status').textContent; },"
    /* The series of a chart: labels after the x series, and each one's last value. */
    "  series(which) {"
    "    const ch = typeof charts === 'undefined' ? null : charts[which];"
    "    if (!ch) return null;"
    "    return ch.series.slice(1).map((s, i) => s.label + '=' + ch.data[i + 1].at(-1)).join(' ');"
    "  },"
    "  samples() { return charts.depth ? charts.depth.data[0].length : 0; },"
    /* Pixels of a chart's canvas close to a colour ("#rrggbb"): a series' line was drawn. */
    "  painted(id, hex) {"
    "    const cv = document.querySelector('#' + id + ' canvas');"
    "    if (!cv || !cv.width || !cv.height) return 0;"
    "    const want = [1, 3, 5].map((k) => parseInt(hex.slice(k, k + 2), 16));"
    "    const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;"
    "    let n = 0;"
    "    for (let i = 0; i < d.length; i += 4)"
    "      if (d[i + 3] > 200 && want.every((v, k) => Math.abs(d[i + k] - v) < 40)) n++;"
    "    return n;"
    "  },"
    "  text() { return document.querySelector('main').innerText.slice(0, 1500); },"
    "};"
    "'ok'";

/* Waits until the JS expression cond is truthy in the page, at most WAIT_MS; returns 0, or -1
 * after printing cond and what the page shows. The page polls itself, so that one call waits. */
static int page_wait(cdp_t *c, const char *cond)
{
    size_t cap = strlen(cond) + 512;
    char *expr = malloc(cap);
    if (!expr) return -1;
    snprintf(expr, cap,
             "new Promise((resolve) => {"
             "  const end = Date.now() + %d;"
             "  const poll = () => {"
             "    let v = false;"
             "    try { v = (%s); } catch (e) { v = false; }"
             "    if (v) resolve('yes');"
             "    else if (Date.now() > end) resolve('no');"
             "    else setTimeout(poll, 50);"
             "  };"
             "  poll();"
             "})",
             WAIT_MS, cond);
    char *got = page_eval(c, expr);
    free(expr);
    int rc = got && strcmp(got, "yes") == 0 ? 0 : -1;
    free(got);
    if (rc) {
        char *text = page_eval(c, "window.__t ? __t.text() : document.body.innerText");
        fprintf(stderr, "the page never showed: %s\nit shows:\n%s\n", cond, text ? text : "?");
        free(text);
    }
    return rc;
}

#define PAGE_WAIT(c, ...)                                                                          \
    do {                                                                                           \
        char cond_[1024];                                                                          \
        snprintf(cond_, sizeof cond_, __VA_ARGS__);                                                \
        assert_int_equal(page_wait((c), cond_), 0);                                                \
    } while (0)

/* Starts the browser, opens one page on the server's dashboard and installs the helpers. */
static int page_open(cdp_t *c, int port, int width, int height)
{
    if (browser_start(c, width, height)) return -1;
    char params[256];
    /* The page's size is the browser's --window-size. */
    cJSON *t = cdp_call(c, false, "Target.createTarget", "{\"url\":\"about:blank\"}");
    const char *target = spt_jstr(t, "targetId");
    if (!target) {
        cJSON_Delete(t);
        browser_log_tail(c);
        return -1;
    }
    snprintf(params, sizeof params, "{\"targetId\":\"%s\",\"flatten\":true}", target);
    cJSON_Delete(t);
    cJSON *a = cdp_call(c, false, "Target.attachToTarget", params);
    const char *session = spt_jstr(a, "sessionId");
    if (!session || strlen(session) >= sizeof c->session) {
        cJSON_Delete(a);
        return -1;
    }
    snprintf(c->session, sizeof c->session, "%s", session);
    cJSON_Delete(a);
    if (cdp_do(c, true, "Runtime.enable", NULL) || cdp_do(c, true, "Log.enable", NULL) ||
        cdp_do(c, true, "Page.enable", NULL))
        return -1;
    snprintf(params, sizeof params, "{\"url\":\"http://127.0.0.1:%d/\"}", port);
    cJSON *nav = cdp_call(c, true, "Page.navigate", params);
    bool ok = nav && !spt_jstr(nav, "errorText");
    cJSON_Delete(nav);
    if (!ok) return -1;
    /* The helpers need the page's document, and the dashboard's script defines `charts`. */
    if (page_wait(c, "document.readyState === 'complete' && typeof charts !== 'undefined'"))
        return -1;
    char *r = page_eval(c, page_helpers);
    ok = r && strcmp(r, "ok") == 0;
    free(r);
    return ok ? 0 : -1;
}

/* Closes the browser and everything it started, and removes its profile. */
static void browser_stop(cdp_t *c)
{
    if (c->pid > 0) {
        if (c->to >= 0) {
            static const char bye[] = "{\"id\":0,\"method\":\"Browser.close\",\"params\":{}}";
            send_all(c->to, bye, sizeof bye); /* with its NUL */
        }
        int status;
        long long deadline = spt_now_ms() + 10000;
        pid_t r;
        while ((r = waitpid(c->pid, &status, WNOHANG)) == 0 && spt_now_ms() < deadline) {
            struct pollfd pfd = {.fd = c->from, .events = POLLIN};
            if (poll(&pfd, 1, 50) > 0) {
                char sink[4096];
                if (read(c->from, sink, sizeof sink) <= 0) spt_sleep_ms(20);
            }
        }
        /* Renderers and helpers share its process group: none may outlive the test. */
        kill(-c->pid, SIGKILL);
        if (r == 0) waitpid(c->pid, &status, 0);
    }
    if (c->to >= 0) close(c->to);
    if (c->from >= 0) close(c->from);
    free(c->buf);
    if (c->dir[0]) nftw(c->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    memset(c, 0, sizeof *c);
    c->pid = -1;
    c->to = c->from = -1;
}

/* ---- test helpers on the server side ----------------------------------------------------- */

/* Submits n jobs of type to queue, with extra members (",\"delay_ms\":600000"). */
static void submit_n(int port, const char *queue, const char *type, const char *extra, int n,
                     const char *headers)
{
    char target[256], body[512];
    snprintf(target, sizeof target, "/v1/queues/%s/jobs", queue);
    snprintf(body, sizeof body, "{\"type\":\"%s\"%s}", type, extra);
    for (int i = 0; i < n; i++) SPT_EXPECT(port, "POST", target, body, headers, 201, NULL);
}

/* Leases one job of queue, then acks it (error NULL) or fails it for good with error. */
static void finish_one(int port, const char *queue, const char *error, char *id, size_t cap)
{
    char lease[128], target[256], body[512];
    assert_int_equal(spt_lease_one(port, queue, id, cap, lease, sizeof lease), 1);
    if (error) {
        snprintf(target, sizeof target, "/v1/jobs/%s/fail", id);
        snprintf(body, sizeof body, "{\"lease\":\"%s\",\"error\":\"%s\",\"retry\":false}", lease,
                 error);
    } else {
        snprintf(target, sizeof target, "/v1/jobs/%s/ack", id);
        snprintf(body, sizeof body, "{\"lease\":\"%s\",\"result\":null}", lease);
    }
    SPT_EXPECT(port, "POST", target, body, NULL, 200, NULL);
}

/* ---- tests ------------------------------------------------------------------------------- */

/* The server and browser of the running test, stopped by teardown when an assertion ended it
 * early. */
static spt_proc_t srv = {.pid = -1};
static cdp_t page = {.pid = -1, .to = -1, .from = -1};
static char token_path[64]; /* the --token-file of the running test, or "" */

static void srv_stop(void)
{
    int code = spt_stop(&srv);
    srv.pid = -1;
    assert_int_equal(code, 0);
}

static int teardown(void **state)
{
    (void)state;
    if (page.pid > 0) browser_stop(&page);
    if (srv.pid > 0) {
        spt_stop(&srv);
        srv.pid = -1;
    }
    if (token_path[0]) unlink(token_path);
    token_path[0] = '\0';
    return 0;
}

/* The table and both charts appear with the queues that exist, then follow submissions, a new
 * queue, an ack and a failure in the same page session; the failed job is listed with its
 * error and the retry button queues it again. No worker runs: every change is the test's. */
static void test_table_and_chart_follow_the_queues(void **state)
{
    (void)state;
    NEED_CHROMIUM();
    SPT_START(srv, "--workers", "0");
    submit_n(srv.port, "emails", "noop", "", 3, NULL);
    submit_n(srv.port, "emails", "noop", ",\"delay_ms\":600000", 1, NULL);

    assert_int_equal(page_open(&page, srv.port, 1280, 900), 0);
    /* scheduled queued running succeeded failed canceled */
    PAGE_WAIT(&page, "__t.row('emails') === '1 3 0 0 0 0' && __t.status() === 'live'");
    PAGE_WAIT(&page, "__t.rows() === 1 && document.getElementById('no-queues').hidden");
    PAGE_WAIT(&page, "__t.series('depth') === 'emails=4' && __t.series('rate') === 'emails=0'");
    /* The first queue's colour on both canvases: its lines were drawn, not only the axes. */
    PAGE_WAIT(&page, "__t.painted('chart-depth', PALETTE[0]) > 20 && "
                     "__t.painted('chart-rate', PALETTE[0]) > 20");
    char *before = page_eval(&page, "String(__t.samples())");
    assert_non_null(before);

    /* More jobs, and a second queue: the row, the depth line and the legend follow. */
    submit_n(srv.port, "emails", "noop", "", 2, NULL);
    submit_n(srv.port, "reports", "noop", "", 1, NULL);
    PAGE_WAIT(&page, "__t.row('emails') === '1 5 0 0 0 0' && __t.row('reports') === '0 1 0 0 0 0'");
    PAGE_WAIT(&page, "__t.series('depth') === 'emails=6 reports=1' && __t.samples() > %s", before);
    free(before);
    PAGE_WAIT(&page, "[...document.querySelectorAll('#chart-depth .u-legend .u-label')]"
                     ".map((l) => l.textContent).join(',') === 'emails,reports'");

    /* A worker's ack and a failure, through the worker protocol. */
    char done[64], failed[64];
    finish_one(srv.port, "emails", NULL, done, sizeof done);
    finish_one(srv.port, "emails", "disk full", failed, sizeof failed);
    PAGE_WAIT(&page, "__t.row('emails') === '1 3 0 1 1 0' && __t.series('depth') === 'emails=4 "
                     "reports=1'");
    PAGE_WAIT(&page, "document.querySelector('#queues tbody tr td.num-failed.nonzero')");
    PAGE_WAIT(&page,
              "[...document.querySelectorAll('#events li')].some((li) => "
              "li.textContent.includes('#%s  emails  failed'))",
              failed);

    /* The failed list shows the job and its error; Retry puts it back in the queue. */
    PAGE_WAIT(&page, "document.getElementById('failed-queue').value === 'emails'");
    PAGE_WAIT(&page,
              "[...document.querySelectorAll('#failed tbody tr')].some((tr) => "
              "tr.cells[0].textContent === '%s' && tr.cells[4].textContent === 'disk full')",
              failed);
    char click[512];
    snprintf(click, sizeof click,
             "[...document.querySelectorAll('#failed tbody tr')]"
             ".find((tr) => tr.cells[0].textContent === '%s').querySelector('button').click(),"
             "'ok'",
             failed);
    char *r = page_eval(&page, click);
    SPT_ASSERT_STR(r, "ok");
    free(r);
    assert_int_equal(spt_wait_state(srv.port, failed, "queued", WAIT_MS), 0);
    PAGE_WAIT(&page, "__t.row('emails') === '1 4 0 1 0 0' && "
                     "document.querySelectorAll('#failed tbody tr').length === 0");

    assert_int_equal(page.exceptions, 0);
    assert_int_equal(page.errors, 0);
    browser_stop(&page);
    srv_stop();
}

/* With --token-file the page holds no data until it is given the token: it shows the prompt,
 * says so when the server refuses a token, and shows the queues once the right one is given. */
static void test_token_prompt(void **state)
{
    (void)state;
    NEED_CHROMIUM();
    snprintf(token_path, sizeof token_path, "/tmp/spool-dash-token-XXXXXX");
    int fd = mkstemp(token_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, TOKEN "\n", sizeof TOKEN), (ssize_t)sizeof TOKEN);
    close(fd);
    SPT_START(srv, "--token-file", token_path);
    submit_n(srv.port, "secret", "noop", "", 2, AUTH);

    assert_int_equal(page_open(&page, srv.port, 1280, 900), 0);
    page.quiet = true; /* each refused request is a console error */
    PAGE_WAIT(&page, "!document.getElementById('token-panel').hidden");
    PAGE_WAIT(&page, "__t.rows() === 0 && !document.getElementById('no-queues').hidden && "
                     "__t.status() !== 'live' && document.getElementById('token-error').hidden");

    static const char give[] = "(() => {"
                               "  document.getElementById('token-input').value = '%s';"
                               "  document.getElementById('token-form').requestSubmit();"
                               "  return 'ok';"
                               "})()";
    char expr[512];
    snprintf(expr, sizeof expr, give, "not-the-token");
    char *r = page_eval(&page, expr);
    SPT_ASSERT_STR(r, "ok");
    free(r);
    PAGE_WAIT(&page, "!document.getElementById('token-error').hidden && "
                     "!document.getElementById('token-panel').hidden && __t.rows() === 0");

    snprintf(expr, sizeof expr, give, TOKEN);
    r = page_eval(&page, expr);
    SPT_ASSERT_STR(r, "ok");
    free(r);
    PAGE_WAIT(&page, "__t.row('secret') === '0 2 0 0 0 0' && __t.status() === 'live' && "
                     "document.getElementById('token-panel').hidden && "
                     "!document.getElementById('forget-token').hidden");
    submit_n(srv.port, "secret", "noop", "", 1, AUTH);
    PAGE_WAIT(&page, "__t.row('secret') === '0 3 0 0 0 0'");

    assert_int_equal(page.exceptions, 0);
    browser_stop(&page);
    srv_stop();
}

/* ---- the README's screenshot ------------------------------------------------------------- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Decodes base64 text into a malloc'd buffer; NULL on bad input. */
static unsigned char *b64_decode(const char *s, size_t *out_len)
{
    size_t n = strlen(s);
    unsigned char *out = malloc(n / 4 * 3 + 3);
    if (!out) return NULL;
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n && s[i] != '='; i++) {
        const char *p = strchr(b64, s[i]);
        if (!p || !s[i]) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (unsigned)(p - b64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    *out_len = o;
    return out;
}

/* Writes a full-page PNG of the page to path. */
static int page_screenshot(cdp_t *c, const char *path, int width)
{
    char *h = page_eval(c, "String(Math.ceil(document.documentElement.scrollHeight))");
    long long height = h ? strtoll(h, NULL, 10) : 0;
    free(h);
    if (height <= 0 || height > 10000) return -1;
    char params[256];
    snprintf(params, sizeof params,
             "{\"width\":%d,\"height\":%lld,\"deviceScaleFactor\":1,\"mobile\":false}", width,
             height);
    if (cdp_do(c, true, "Emulation.setDeviceMetricsOverride", params)) return -1;
    cJSON *shot = cdp_call(c, true, "Page.captureScreenshot", "{\"format\":\"png\"}");
    const char *data = spt_jstr(shot, "data");
    size_t len = 0;
    unsigned char *png = data ? b64_decode(data, &len) : NULL;
    cJSON_Delete(shot);
    if (!png) return -1;
    FILE *f = fopen(path, "wb");
    int rc = f && fwrite(png, 1, len, f) == len ? 0 : -1;
    if (f && fclose(f)) rc = -1;
    free(png);
    return rc;
}

/* A server with four workers and a mix of work in several queues, watched for a while so that
 * the charts have history; then the picture. Runs only when SPOOL_DASHBOARD_SCREENSHOT names
 * the file to write. */
static void test_screenshot(void **state)
{
    (void)state;
    const char *out = getenv("SPOOL_DASHBOARD_SCREENSHOT");
    if (!out || !*out) skip();
    NEED_CHROMIUM();
    SPT_START(srv, "--workers", "4");
    assert_int_equal(page_open(&page, srv.port, 1280, 900), 0);
    /* queue, type, more members, and one job of this kind per that many of a burst */
    static const struct {
        const char *queue, *type, *extra;
        int every;
    } mix[] = {
        {"emails", "sleep", ",\"payload\":{\"ms\":300}", 1},
        {"emails", "noop", "", 1},
        {"thumbnails", "sleep", ",\"payload\":{\"ms\":800}", 2},
        {"webhooks", "echo", ",\"payload\":{\"url\":\"https://example.com/hook\"}", 1},
        {"webhooks", "fail",
         ",\"payload\":{\"message\":\"endpoint answered 503\",\"retry\":true},"
         "\"max_attempts\":2,\"backoff_ms\":500",
         4},
        {"reports", "noop", ",\"delay_ms\":15000", 3},
    };
    /* Bursts that grow and shrink, one a second, so that depth and throughput move. */
    static const int burst[] = {2, 4, 6, 8, 10, 12, 10, 8, 6, 4, 3, 2, 2,
                                1, 1, 0, 0, 1,  2,  3,  4, 6, 8, 6, 4, 2};
    for (size_t s = 0; s < sizeof burst / sizeof burst[0]; s++) {
        for (int i = 0; i < burst[s]; i++)
            for (size_t m = 0; m < sizeof mix / sizeof mix[0]; m++)
                if (i % mix[m].every == 0)
                    submit_n(srv.port, mix[m].queue, mix[m].type, mix[m].extra, 1, NULL);
        spt_sleep_ms(1000); /* a picture's pacing, not a wait for an outcome */
    }
    PAGE_WAIT(&page, "__t.rows() === 4 && /^\\d+ \\d+ \\d+ \\d+ [1-9]/.test(__t.row('webhooks'))");
    char *r = page_eval(&page, "document.getElementById('failed-queue').value = 'webhooks',"
                               "document.getElementById('failed-form').requestSubmit(), 'ok'");
    free(r);
    PAGE_WAIT(&page, "document.querySelectorAll('#failed tbody tr').length > 0");
    r = page_eval(&page, "document.getElementById('job-id').value = '3',"
                         "document.getElementById('job-form').requestSubmit(), 'ok'");
    free(r);
    PAGE_WAIT(&page, "!document.getElementById('job-result').hidden && "
                     "document.getElementById('job-result').textContent.includes('\"id\"')");
    assert_int_equal(page_screenshot(&page, out, 1280), 0);
    print_message("dashboard screenshot written to %s\n", out);
    browser_stop(&page);
    srv_stop();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_table_and_chart_follow_the_queues, teardown),
        cmocka_unit_test_teardown(test_token_prompt, teardown),
        cmocka_unit_test_teardown(test_screenshot, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
