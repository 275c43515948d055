/*
 * handler_exec.c - the exec handler: runs a program per job (uv_spawn, never a shell), the job
 * record on its standard input, its standard output the result.
 *
 * A run owns five handles (the process, three pipes, one timer) and reports its outcome only
 * once every one of them is closed, so that nothing of a finished run can still fire. The
 * child is spawned detached, in a process group of its own: a timeout or cancel signals the
 * whole group, so that a script's own children (`sleep` inside a shell script) stop with it
 * and do not hold its pipes open.
 */
#include "handlers_file.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "sp.h"

/* After the program exits, how long its pipes may stay open (a background process it left
 * holding them) before they are closed anyway and that process group is killed. */
#define DRAIN_MS 1000
#define READ_CHUNK 16384

typedef struct {
    char **argv; /* NULL-terminated */
    size_t argc;
    uint32_t timeout_ms;
    uint32_t kill_grace_ms;
} exec_conf_t;

/* Why the run was stopped early, if it was. */
typedef enum { STOP_NONE, STOP_TIMEOUT, STOP_CANCEL, STOP_OVERFLOW } stop_t;

typedef struct {
    const exec_conf_t *conf;
    sp_hjob_t *job;
    sp_handler_done_fn done;
    uv_process_t proc;
    uv_pipe_t pin, pout, perr;
    uv_timer_t timer;
    uv_write_t wreq;
    int open; /* handles not closed yet */
    int spawn_err;
    int pid;
    bool exited, term_sent, kill_sent;
    int64_t exit_status;
    int term_signal;
    stop_t stop;
    uint32_t timeout_ms;
    sp_buf_t input;
    sp_buf_t out;
    size_t tail_len;
    char tail[SP_EXEC_STDERR_TAIL];
} exec_run_t;

/* libuv calls a read callback right after the allocation it answers, so one buffer per loop
 * thread serves every pipe: thousands of children then cost no read buffers of their own. */
static _Thread_local char scratch[READ_CHUNK];

/* ---- ending a run ------------------------------------------------------------------------ */

static void put_tail(sp_buf_t *b, const exec_run_t *run)
{
    size_t mark = b->len;
    sp_buf_puts(b, ": ");
    size_t before = b->len;
    sp_handler_text(b, run->tail, run->tail_len);
    if (b->len == before && !b->oom) b->len = mark; /* nothing but whitespace */
}

static void run_finish(exec_run_t *run)
{
    sp_buf_t msg = SP_BUF_INIT;
    bool ok = false;
    const char *prog = run->conf->argv[0];
    if (run->spawn_err) {
        sp_buf_printf(&msg, "cannot start %s: %s", prog, uv_strerror(run->spawn_err));
    } else {
        switch (run->stop) {
        case STOP_CANCEL:
            sp_buf_puts(&msg, "canceled");
            break;
        case STOP_TIMEOUT:
            sp_buf_printf(&msg, "timed out after %" PRIu32 " ms", run->timeout_ms);
            if (run->kill_sent) sp_buf_puts(&msg, " (killed: it ignored SIGTERM)");
            break;
        case STOP_OVERFLOW:
            sp_buf_puts(&msg, "output over 1 MiB");
            break;
        case STOP_NONE:
            if (run->term_signal) {
                sp_buf_printf(&msg, "killed by signal %d", run->term_signal);
                put_tail(&msg, run);
            } else if (run->exit_status != 0) {
                sp_buf_printf(&msg, "exit status %" PRId64, run->exit_status);
                put_tail(&msg, run);
            } else {
                ok = true;
                sp_handler_result(&msg, run->out.data ? run->out.data : "", run->out.len);
            }
            break;
        }
    }
    sp_hjob_t *job = run->job;
    sp_handler_done_fn done = run->done;
    job->hstate = NULL;
    if (msg.oom) {
        static const char oom[] = "exec: out of memory";
        done(job, false, oom, sizeof oom - 1, true);
    } else {
        done(job, ok, msg.data ? msg.data : "", msg.len, true);
    }
    sp_buf_free(&msg);
    sp_buf_free(&run->input);
    sp_buf_free(&run->out);
    free(run);
}

static void handle_closed(uv_handle_t *h)
{
    exec_run_t *run = h->data;
    run->open--;
    /* The timer is the last to go: it bounds the wait for everything else. */
    if (run->open == 1 && !uv_is_closing((uv_handle_t *)&run->timer)) {
        uv_close((uv_handle_t *)&run->timer, handle_closed);
        return;
    }
    if (run->open == 0) run_finish(run);
}

static void close_handle(exec_run_t *run, uv_handle_t *h)
{
    (void)run;
    if (uv_is_closing(h)) return;
    if (h->type == UV_NAMED_PIPE) uv_read_stop((uv_stream_t *)h);
    uv_close(h, handle_closed);
}

static void close_pipes(exec_run_t *run)
{
    close_handle(run, (uv_handle_t *)&run->pin);
    close_handle(run, (uv_handle_t *)&run->pout);
    close_handle(run, (uv_handle_t *)&run->perr);
}

/* Signals the run's process group (the program and whatever it started). */
static void signal_group(exec_run_t *run, int sig)
{
    if (run->pid <= 0) return;
    if (uv_kill(-run->pid, sig) != 0 && !run->exited) uv_kill(run->pid, sig);
}

static void timer_fired(uv_timer_t *t);

/* SIGTERM now, SIGKILL after the grace unless the program is gone by then. */
static void terminate(exec_run_t *run, stop_t why)
{
    if (run->stop == STOP_NONE || why == STOP_CANCEL) run->stop = why;
    if (run->exited) {
        close_pipes(run);
        return;
    }
    if (run->term_sent) return;
    run->term_sent = true;
    signal_group(run, SIGTERM);
    uv_timer_start(&run->timer, timer_fired, run->conf->kill_grace_ms, 0);
}

static void timer_fired(uv_timer_t *t)
{
    exec_run_t *run = t->data;
    if (run->exited) {
        /* The drain window is over: something the program left behind holds its pipes. */
        signal_group(run, SIGKILL);
        close_pipes(run);
    } else if (!run->term_sent) {
        terminate(run, STOP_TIMEOUT);
    } else if (!run->kill_sent) {
        run->kill_sent = true;
        signal_group(run, SIGKILL);
    }
}

/* ---- the process and its pipes ----------------------------------------------------------- */

static void proc_exited(uv_process_t *p, int64_t exit_status, int term_signal)
{
    exec_run_t *run = p->data;
    run->exited = true;
    run->exit_status = exit_status;
    run->term_signal = term_signal;
    close_handle(run, (uv_handle_t *)p);
    /* stdin is of no use any more; an unread write would only wait. */
    close_handle(run, (uv_handle_t *)&run->pin);
    if (!uv_is_closing((uv_handle_t *)&run->pout) || !uv_is_closing((uv_handle_t *)&run->perr))
        uv_timer_start(&run->timer, timer_fired, DRAIN_MS, 0);
}

static void alloc_scratch(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    (void)h;
    *buf = uv_buf_init(scratch, sizeof scratch);
}

static void out_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    exec_run_t *run = s->data;
    if (nread < 0) {
        close_handle(run, (uv_handle_t *)s);
        return;
    }
    if (nread == 0) return;
    if (run->out.len + (size_t)nread > SP_EXEC_OUTPUT_MAX) {
        /* Closing stdout makes the program's next write fail (EPIPE or SIGPIPE), which
         * usually ends it before the signal does. */
        close_handle(run, (uv_handle_t *)s);
        terminate(run, STOP_OVERFLOW);
        return;
    }
    sp_buf_append(&run->out, buf->base, (size_t)nread);
    if (run->out.oom) {
        close_handle(run, (uv_handle_t *)s);
        terminate(run, STOP_OVERFLOW);
    }
}

static void err_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    exec_run_t *run = s->data;
    if (nread < 0) {
        close_handle(run, (uv_handle_t *)s);
        return;
    }
    size_t n = (size_t)nread;
    const char *p = buf->base;
    if (n >= sizeof run->tail) {
        memcpy(run->tail, p + n - sizeof run->tail, sizeof run->tail);
        run->tail_len = sizeof run->tail;
        return;
    }
    if (run->tail_len + n > sizeof run->tail) {
        size_t drop = run->tail_len + n - sizeof run->tail;
        memmove(run->tail, run->tail + drop, run->tail_len - drop);
        run->tail_len -= drop;
    }
    memcpy(run->tail + run->tail_len, p, n);
    run->tail_len += n;
}

static void input_written(uv_write_t *w, int status)
{
    (void)status; /* a program that does not read its input is its own business */
    exec_run_t *run = w->data;
    close_handle(run, (uv_handle_t *)&run->pin);
}

/* ---- start and cancel -------------------------------------------------------------------- */

static bool env_is_ours(const char *e)
{
    return strncmp(e, "SPOOL_JOB_ID=", 13) == 0 || strncmp(e, "SPOOL_QUEUE=", 12) == 0 ||
           strncmp(e, "SPOOL_ATTEMPT=", 14) == 0;
}

static int spawn(exec_run_t *run)
{
    sp_hjob_t *job = run->job;
    size_t n = 0;
    while (environ[n]) n++;
    char **env = malloc((n + 4) * sizeof *env);
    if (!env) return UV_ENOMEM;
    char idv[48], qv[32 + SP_NAME_MAX], av[32];
    snprintf(idv, sizeof idv, "SPOOL_JOB_ID=%" PRIu64, job->id);
    snprintf(qv, sizeof qv, "SPOOL_QUEUE=%.*s", (int)SP_MIN(job->queue_len, (size_t)SP_NAME_MAX),
             job->queue);
    snprintf(av, sizeof av, "SPOOL_ATTEMPT=%" PRIu32, job->attempts);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!env_is_ours(environ[i])) env[k++] = environ[i];
    }
    env[k++] = idv;
    env[k++] = qv;
    env[k++] = av;
    env[k] = NULL;

    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    stdio[0].data.stream = (uv_stream_t *)&run->pin;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&run->pout;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&run->perr;
    uv_process_options_t o;
    memset(&o, 0, sizeof o);
    o.exit_cb = proc_exited;
    o.file = run->conf->argv[0];
    o.args = run->conf->argv;
    o.env = env;
    o.flags = UV_PROCESS_DETACHED;
    o.stdio_count = 3;
    o.stdio = stdio;
    int rc = uv_spawn(job->loop, &run->proc, &o);
    free(env);
    return rc;
}

static void exec_start(const sp_handler_t *h, sp_hjob_t *job, sp_handler_done_fn done)
{
    const exec_conf_t *conf = h->ud;
    exec_run_t *run = calloc(1, sizeof *run);
    if (!run) {
        static const char oom[] = "exec: out of memory";
        done(job, false, oom, sizeof oom - 1, true);
        return;
    }
    run->conf = conf;
    run->job = job;
    run->done = done;
    run->timeout_ms = sp_handler_timeout(conf->timeout_ms, job);
    sp_handler_job_json(&run->input, job);
    if (run->input.oom) {
        sp_buf_free(&run->input);
        free(run);
        static const char oom[] = "exec: out of memory";
        done(job, false, oom, sizeof oom - 1, true);
        return;
    }
    job->hstate = run;

    uv_pipe_init(job->loop, &run->pin, 0);
    uv_pipe_init(job->loop, &run->pout, 0);
    uv_pipe_init(job->loop, &run->perr, 0);
    uv_timer_init(job->loop, &run->timer);
    run->pin.data = run->pout.data = run->perr.data = run->timer.data = run;
    run->proc.data = run;
    run->wreq.data = run;
    run->open = 5;

    int rc = spawn(run);
    if (rc != 0) {
        /* A failed uv_spawn still leaves its handle initialised, to be closed like the rest
         * (unless spawn() failed before calling it); the outcome is reported from the last
         * close callback, like any other. */
        run->spawn_err = rc;
        if (run->proc.type == UV_PROCESS)
            uv_close((uv_handle_t *)&run->proc, handle_closed);
        else
            run->open--;
        close_pipes(run);
        return;
    }
    run->pid = run->proc.pid;
    uv_read_start((uv_stream_t *)&run->pout, alloc_scratch, out_read);
    uv_read_start((uv_stream_t *)&run->perr, alloc_scratch, err_read);
    uv_buf_t b = uv_buf_init(run->input.data, (unsigned)run->input.len);
    if (uv_write(&run->wreq, (uv_stream_t *)&run->pin, &b, 1, input_written) != 0)
        close_handle(run, (uv_handle_t *)&run->pin);
    uv_timer_start(&run->timer, timer_fired, run->timeout_ms, 0);
}

static void exec_cancel(const sp_handler_t *h, sp_hjob_t *job)
{
    (void)h;
    exec_run_t *run = job->hstate;
    if (!run || run->spawn_err) return;
    terminate(run, STOP_CANCEL);
}

/* ---- configuration ----------------------------------------------------------------------- */

static void conf_free(exec_conf_t *c)
{
    if (!c) return;
    if (c->argv) {
        for (size_t i = 0; i < c->argc; i++) free(c->argv[i]);
        free(c->argv);
    }
    free(c);
}

static void exec_destroy(sp_handler_t *h)
{
    conf_free(h->ud);
    h->ud = NULL;
}

int sp_handler_exec_new(const char *const *argv, size_t argc, uint32_t timeout_ms,
                        uint32_t kill_grace_ms, sp_handler_t *out, char *err, size_t errlen)
{
    if (argc == 0 || !argv[0] || argv[0][0] != '/') {
        snprintf(err, errlen, "program path must be absolute: '%s'",
                 argc && argv[0] ? argv[0] : "");
        return SP_EINVAL;
    }
    /* A program that exits without reading its input must not kill the worker with SIGPIPE
     * when its stdin is written; children get default dispositions back from uv_spawn. */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);

    exec_conf_t *c = calloc(1, sizeof *c);
    if (!c) return SP_ENOMEM;
    c->argv = calloc(argc + 1, sizeof *c->argv);
    if (!c->argv) goto oom;
    for (size_t i = 0; i < argc; i++) {
        size_t len = strlen(argv[i]);
        c->argv[i] = malloc(len + 1);
        if (!c->argv[i]) goto oom;
        memcpy(c->argv[i], argv[i], len + 1);
        c->argc = i + 1;
    }
    c->timeout_ms = timeout_ms;
    c->kill_grace_ms = kill_grace_ms ? kill_grace_ms : SP_EXEC_KILL_GRACE_MS;
    memset(out, 0, sizeof *out);
    out->kind = "exec";
    out->start = exec_start;
    out->cancel = exec_cancel;
    out->destroy = exec_destroy;
    out->ud = c;
    return 0;
oom:
    conf_free(c);
    return SP_ENOMEM;
}
