/*
 * handler_http.c - the http handler: POSTs the job record as JSON to a URL, through the
 * project's non-blocking HTTP client (common/http_client.h).
 *
 * Each handler owns one client, made at load on the loop its jobs run on, so that the
 * connections to its service are kept alive between jobs. A cancel drops the request (the
 * client closes a connection that had it on the wire) and reports at once.
 */
#include "handlers_file.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_client.h"
#include "sp.h"

/* The start of an error answer's body kept in the error message. */
#define ERROR_BODY_MAX 512
/* Loop turns allowed for the client to close when the table is freed. */
#define CLOSE_TURNS_MAX 1000

typedef struct {
    char *url;
    uint32_t timeout_ms;
    uv_loop_t *loop;
    sp_http_client_t *client;
} http_conf_t;

typedef struct {
    sp_hjob_t *job;
    sp_handler_done_fn done;
    sp_http_call_t *call;
    uint32_t timeout_ms;
} http_run_t;

static void report(http_run_t *run, bool ok, const char *text, size_t len)
{
    sp_hjob_t *job = run->job;
    sp_handler_done_fn done = run->done;
    job->hstate = NULL;
    free(run);
    done(job, ok, text, len, true);
}

static void answered(void *ud, int status, const char *why, const sp_http_resp_t *resp)
{
    http_run_t *run = ud;
    run->call = NULL;
    sp_buf_t msg = SP_BUF_INIT;
    bool ok = false;
    if (status == UV_ETIMEDOUT) {
        sp_buf_printf(&msg, "timed out after %" PRIu32 " ms", run->timeout_ms);
        if (why) sp_buf_printf(&msg, " (%s)", why);
    } else if (status < 100) {
        sp_buf_puts(&msg, why ? why : uv_strerror(status));
    } else if (status >= 200 && status <= 299) {
        ok = true;
        sp_handler_result(&msg, resp->body, resp->body_len);
    } else {
        sp_buf_printf(&msg, "HTTP %d", status);
        size_t n = SP_MIN(resp->body_len, (size_t)ERROR_BODY_MAX);
        if (n > 0) {
            sp_buf_puts(&msg, ": ");
            size_t before = msg.len;
            sp_handler_text(&msg, resp->body, n);
            if (msg.len == before) msg.len -= 2;
            if (resp->body_len > n) sp_buf_puts(&msg, "...");
        }
    }
    if (msg.oom) {
        static const char oom[] = "http: out of memory";
        report(run, false, oom, sizeof oom - 1);
    } else {
        report(run, ok, msg.data ? msg.data : "", msg.len);
    }
    sp_buf_free(&msg);
}

static void http_start(const sp_handler_t *h, sp_hjob_t *job, sp_handler_done_fn done)
{
    http_conf_t *conf = h->ud;
    if (job->loop != conf->loop) {
        static const char bad[] = "http: the handler was loaded for another event loop";
        done(job, false, bad, sizeof bad - 1, false);
        return;
    }
    http_run_t *run = calloc(1, sizeof *run);
    sp_buf_t body = SP_BUF_INIT;
    if (run) sp_handler_job_json(&body, job);
    if (!run || body.oom) {
        free(run);
        sp_buf_free(&body);
        static const char oom[] = "http: out of memory";
        done(job, false, oom, sizeof oom - 1, true);
        return;
    }
    run->job = job;
    run->done = done;
    run->timeout_ms = sp_handler_timeout(conf->timeout_ms, job);
    job->hstate = run;
    run->call = sp_http_client_request(conf->client, "POST", conf->url,
                                       "Content-Type: application/json\r\n", body.data, body.len,
                                       run->timeout_ms, answered, run);
    sp_buf_free(&body);
    if (!run->call) {
        static const char oom[] = "http: cannot start the request (out of memory)";
        report(run, false, oom, sizeof oom - 1);
    }
}

static void http_cancel(const sp_handler_t *h, sp_hjob_t *job)
{
    (void)h;
    http_run_t *run = job->hstate;
    if (!run) return;
    if (run->call) sp_http_client_cancel(run->call);
    run->call = NULL;
    static const char msg[] = "canceled";
    report(run, false, msg, sizeof msg - 1);
}

static void client_closed(void *ud)
{
    *(bool *)ud = true;
}

static void http_destroy(sp_handler_t *h)
{
    http_conf_t *c = h->ud;
    if (!c) return;
    if (c->client) {
        /* The table is freed after the loop has stopped: run it just long enough for the
         * client's connections and timers to close, so that uv_loop_close succeeds. */
        bool closed = false;
        sp_http_client_close(c->client, client_closed, &closed);
        for (int i = 0; i < CLOSE_TURNS_MAX && !closed; i++) uv_run(c->loop, UV_RUN_ONCE);
    }
    free(c->url);
    free(c);
    h->ud = NULL;
}

int sp_handler_http_new(uv_loop_t *loop, const char *url, uint32_t timeout_ms, sp_handler_t *out,
                        char *err, size_t errlen)
{
    if (strncmp(url, "http://", 7) != 0) {
        snprintf(err, errlen, "only http:// URLs are supported: '%s'", url);
        return SP_EINVAL;
    }
    const char *host = url + 7;
    size_t hl = strcspn(host, "/?#");
    if (hl == 0) {
        snprintf(err, errlen, "the URL has no host: '%s'", url);
        return SP_EINVAL;
    }
    /* The client is made now, for the URL's origin, so that a URL it cannot use is an error
     * at start-up rather than on every job. */
    char origin[512];
    if (7 + hl >= sizeof origin) {
        snprintf(err, errlen, "the URL's host is too long");
        return SP_EINVAL;
    }
    memcpy(origin, url, 7 + hl);
    origin[7 + hl] = '\0';
    http_conf_t *c = calloc(1, sizeof *c);
    if (!c) return SP_ENOMEM;
    size_t len = strlen(url);
    c->url = malloc(len + 1);
    if (!c->url) {
        free(c);
        return SP_ENOMEM;
    }
    memcpy(c->url, url, len + 1);
    c->timeout_ms = timeout_ms;
    c->loop = loop;
    char cerr[256];
    sp_http_client_opts_t o;
    sp_http_client_opts_default(&o);
    /* A result is stored with its job: the same cap as an exec handler's output. */
    o.max_response = SP_EXEC_OUTPUT_MAX;
    int rc = sp_http_client_new(loop, origin, &o, &c->client, cerr, sizeof cerr);
    if (rc) {
        if (rc == SP_EINVAL) snprintf(err, errlen, "bad URL '%s': %s", url, cerr);
        free(c->url);
        free(c);
        return rc;
    }
    memset(out, 0, sizeof *out);
    out->kind = "http";
    out->start = http_start;
    out->cancel = http_cancel;
    out->destroy = http_destroy;
    out->ud = c;
    return 0;
}
