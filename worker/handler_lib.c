/*
 * handler_lib.c - the lib handler: calls a C function from a shared library (dlopen'ed once, at
 * load) on libuv's thread pool, with a private copy of the job record.
 *
 * A call cannot be interrupted. On cancel the run waits for the call to return and then
 * discards its result. On timeout the attempt fails at once and the run lets go of the job; the
 * call keeps its thread until it returns, and its result is then freed unseen.
 */
#include "handlers_file.h"

#include <dlfcn.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sp.h"

typedef struct {
    void *dl;
    sp_lib_fn fn;
    uint32_t timeout_ms;
} lib_conf_t;

typedef struct {
    const lib_conf_t *conf;
    sp_hjob_t *job; /* NULL once the run has let go of the job */
    sp_handler_done_fn done;
    uv_work_t work;
    uv_timer_t timer;
    int refs; /* the work and the timer */
    bool canceled;
    uint32_t timeout_ms;
    sp_buf_t input;
    int rc;
    char *result;
    char *error;
} lib_run_t;

static void run_unref(lib_run_t *run)
{
    if (--run->refs > 0) return;
    free(run->result);
    free(run->error);
    sp_buf_free(&run->input);
    free(run);
}

static void timer_closed(uv_handle_t *h)
{
    run_unref(h->data);
}

/* Hands the outcome to the pool and lets go of the job. */
static void run_report(lib_run_t *run, bool ok, const char *text, size_t len)
{
    sp_hjob_t *job = run->job;
    sp_handler_done_fn done = run->done;
    run->job = NULL;
    job->hstate = NULL;
    uv_timer_stop(&run->timer);
    if (!uv_is_closing((uv_handle_t *)&run->timer))
        uv_close((uv_handle_t *)&run->timer, timer_closed);
    done(job, ok, text, len, true);
}

/* On a pool thread: touches nothing but the run's own copy and the library. */
static void work_run(uv_work_t *w)
{
    lib_run_t *run = w->data;
    run->rc = run->conf->fn(run->input.data, run->input.len, &run->result, &run->error);
}

static void work_done(uv_work_t *w, int status)
{
    lib_run_t *run = w->data;
    if (run->job) {
        sp_buf_t msg = SP_BUF_INIT;
        bool ok = false;
        if (status == UV_ECANCELED || run->canceled) {
            sp_buf_puts(&msg, "canceled");
        } else if (run->rc == 0) {
            ok = true;
            sp_handler_result(&msg, run->result ? run->result : "",
                              run->result ? strlen(run->result) : 0);
        } else if (run->error && run->error[0]) {
            sp_handler_text(&msg, run->error, strlen(run->error));
        } else {
            sp_buf_printf(&msg, "failed (returned %d)", run->rc);
        }
        if (msg.oom) {
            static const char oom[] = "lib: out of memory";
            run_report(run, false, oom, sizeof oom - 1);
        } else {
            run_report(run, ok, msg.data ? msg.data : "", msg.len);
        }
        sp_buf_free(&msg);
    }
    run_unref(run);
}

static void timer_fired(uv_timer_t *t)
{
    lib_run_t *run = t->data;
    if (!run->job) return;
    char msg[96];
    int n = snprintf(msg, sizeof msg,
                     "timed out after %" PRIu32 " ms (the call goes on until it returns)",
                     run->timeout_ms);
    run_report(run, false, msg, n < 0 ? 0 : SP_MIN((size_t)n, sizeof msg - 1));
}

static void lib_start(const sp_handler_t *h, sp_hjob_t *job, sp_handler_done_fn done)
{
    const lib_conf_t *conf = h->ud;
    lib_run_t *run = calloc(1, sizeof *run);
    if (run) sp_handler_job_json(&run->input, job);
    if (!run || run->input.oom) {
        if (run) sp_buf_free(&run->input);
        free(run);
        static const char oom[] = "lib: out of memory";
        done(job, false, oom, sizeof oom - 1, true);
        return;
    }
    run->conf = conf;
    run->job = job;
    run->done = done;
    run->timeout_ms = sp_handler_timeout(conf->timeout_ms, job);
    run->work.data = run;
    int rc = uv_queue_work(job->loop, &run->work, work_run, work_done);
    if (rc != 0) {
        char msg[96];
        int n = snprintf(msg, sizeof msg, "lib: cannot queue the call: %s", uv_strerror(rc));
        sp_buf_free(&run->input);
        free(run);
        done(job, false, msg, n < 0 ? 0 : SP_MIN((size_t)n, sizeof msg - 1), true);
        return;
    }
    run->refs = 2;
    job->hstate = run;
    uv_timer_init(job->loop, &run->timer);
    run->timer.data = run;
    uv_timer_start(&run->timer, timer_fired, run->timeout_ms, 0);
}

static void lib_cancel(const sp_handler_t *h, sp_hjob_t *job)
{
    (void)h;
    lib_run_t *run = job->hstate;
    if (!run) return;
    run->canceled = true;
    /* Succeeds only while the call waits for a thread; else work_done comes when it returns. */
    uv_cancel((uv_req_t *)&run->work);
}

static void lib_destroy(sp_handler_t *h)
{
    lib_conf_t *c = h->ud;
    if (!c) return;
    dlclose(c->dl);
    free(c);
    h->ud = NULL;
}

int sp_handler_lib_new(const char *path, const char *symbol, uint32_t timeout_ms, sp_handler_t *out,
                       char *err, size_t errlen)
{
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        const char *why = dlerror();
        snprintf(err, errlen, "cannot load library '%s' (for symbol '%s'): %s", path, symbol,
                 why ? why : "unknown error");
        return SP_EINVAL;
    }
    dlerror();
    void *sym = dlsym(dl, symbol);
    const char *why = dlerror();
    if (!sym || why) {
        snprintf(err, errlen, "library '%s' has no symbol '%s'%s%s", path, symbol, why ? ": " : "",
                 why ? why : "");
        dlclose(dl);
        return SP_EINVAL;
    }
    lib_conf_t *c = calloc(1, sizeof *c);
    if (!c) {
        dlclose(dl);
        return SP_ENOMEM;
    }
    c->dl = dl;
    /* POSIX guarantees that a data pointer from dlsym converts to a function pointer. */
    memcpy(&c->fn, &sym, sizeof c->fn);
    c->timeout_ms = timeout_ms;
    memset(out, 0, sizeof *out);
    out->kind = "lib";
    out->start = lib_start;
    out->cancel = lib_cancel;
    out->destroy = lib_destroy;
    out->ud = c;
    return 0;
}
