/*
 * handler_builtin.c - the four built-in handlers (noop, echo, sleep, fail) and the table that
 * maps other job types to configured handlers (see handler.h).
 *
 * Built-ins exist so that a fresh install can be tried and benchmarked with no code of one's
 * own; noop and echo finish inside start so that they cost nothing but the queue's own work.
 */
#include "handler.h"

#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "sp.h"

/* Longest sleep a payload may ask for: the longest lease a job may have. */
#define SLEEP_MS_MAX 86400000LL

/* ---- noop and echo ----------------------------------------------------------------------- */

static void noop_start(const sp_handler_t *h, sp_hjob_t *job, sp_handler_done_fn done)
{
    (void)h;
    done(job, true, NULL, 0, false);
}

static void echo_start(const sp_handler_t *h, sp_hjob_t *job, sp_handler_done_fn done)
{
    (void)h;
    done(job, true, job->payload, job->payload_len, false);
}

/* ---- sleep ------------------------------------------------------------------------------- */

typedef struct {
    uv_timer_t timer;
    sp_hjob_t *job;
    sp_handler_done_fn done;
} sleep_run_t;

static void sleep_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Detaches the run from its job first: once done is called the job may be reused at once,
 * while the timer's memory lives on until its close callback. */
static void sleep_finish(sleep_run_t *run, bool ok, const char *text, size_t len)
{
    sp_hjob_t *job = run->job;
    sp_handler_done_fn done = run->done;
    job->hstate = NULL;
    uv_close((uv_handle_t *)&run->timer, sleep_closed);
    done(job, ok, text, len, false);
}

static void sleep_fired(uv_timer_t *t)
{
    sleep_finish(t->data, true, NULL, 0);
}

/* Reads {"ms": N}; a null payload, an object without ms and ms null all mean 0. Returns 0, or
 * -1 with a message in err. */
static int sleep_parse_ms(const sp_hjob_t *job, int64_t *ms, const char **err)
{
    sp_json_val_t v, msv;
    char perr[128];
    *ms = 0;
    if (sp_json_parse(job->payload, job->payload_len, SP_JSON_MAX_DEPTH, &v, perr, sizeof perr) !=
        0) {
        *err = "sleep: payload is not valid JSON";
        return -1;
    }
    if (v.type == SP_JSON_NULL) return 0;
    if (v.type != SP_JSON_OBJECT) {
        *err = "sleep: payload must be an object like {\"ms\": 500}";
        return -1;
    }
    if (!sp_json_obj_get(v, "ms", &msv) || msv.type == SP_JSON_NULL) return 0;
    if (msv.type != SP_JSON_NUMBER || sp_json_int(msv, ms) != 0 || *ms < 0 || *ms > SLEEP_MS_MAX) {
        *err = "sleep: ms must be an integer from 0 to 86400000";
        return -1;
    }
    return 0;
}

static void sleep_start(const sp_handler_t *h, sp_hjob_t *job, sp_handler_done_fn done)
{
    (void)h;
    int64_t ms;
    const char *err = NULL;
    /* A bad payload stays bad on every attempt, so retrying it only delays the verdict. */
    if (sleep_parse_ms(job, &ms, &err) != 0) {
        done(job, false, err, strlen(err), false);
        return;
    }
    if (ms == 0) {
        done(job, true, NULL, 0, false);
        return;
    }
    sleep_run_t *run = malloc(sizeof *run);
    if (!run) {
        static const char oom[] = "sleep: out of memory";
        done(job, false, oom, sizeof oom - 1, true);
        return;
    }
    run->job = job;
    run->done = done;
    uv_timer_init(job->loop, &run->timer);
    run->timer.data = run;
    job->hstate = run;
    uv_timer_start(&run->timer, sleep_fired, (uint64_t)ms, 0);
}

static void sleep_cancel(const sp_handler_t *h, sp_hjob_t *job)
{
    (void)h;
    sleep_run_t *run = job->hstate;
    if (!run) return;
    uv_timer_stop(&run->timer);
    static const char msg[] = "sleep: interrupted";
    /* sleep_finish passes retry false; the outcome of a canceled run is ignored anyway. */
    sleep_finish(run, false, msg, sizeof msg - 1);
}

/* ---- fail -------------------------------------------------------------------------------- */

/* Messages up to this size are decoded on the stack; longer ones take one allocation. */
#define FAIL_MSG_STACK 512

static void fail_start(const sp_handler_t *h, sp_hjob_t *job, sp_handler_done_fn done)
{
    (void)h;
    static const char def[] = "failed";
    sp_json_val_t v, mv, rv;
    char perr[128];
    bool retry = true;
    bool has_msg = false;

    if (sp_json_parse(job->payload, job->payload_len, SP_JSON_MAX_DEPTH, &v, perr, sizeof perr) !=
        0) {
        static const char bad[] = "fail: payload is not valid JSON";
        done(job, false, bad, sizeof bad - 1, false);
        return;
    }
    if (v.type == SP_JSON_OBJECT) {
        if (sp_json_obj_get(v, "retry", &rv)) {
            if (rv.type == SP_JSON_FALSE) {
                retry = false;
            } else if (rv.type != SP_JSON_TRUE && rv.type != SP_JSON_NULL) {
                static const char bad[] = "fail: retry must be true or false";
                done(job, false, bad, sizeof bad - 1, false);
                return;
            }
        }
        if (sp_json_obj_get(v, "message", &mv) && mv.type != SP_JSON_NULL) {
            if (mv.type != SP_JSON_STRING) {
                static const char bad[] = "fail: message must be a string";
                done(job, false, bad, sizeof bad - 1, false);
                return;
            }
            has_msg = true;
        }
    } else if (v.type != SP_JSON_NULL) {
        static const char bad[] =
            "fail: payload must be an object like {\"message\": \"text\", \"retry\": true}";
        done(job, false, bad, sizeof bad - 1, false);
        return;
    }
    if (!has_msg) {
        done(job, false, def, sizeof def - 1, retry);
        return;
    }

    char stack[FAIL_MSG_STACK];
    size_t len = sp_json_str_len(mv);
    char *msg = stack;
    if (len > sizeof stack) {
        msg = malloc(len);
        if (!msg) {
            static const char oom[] = "fail: out of memory";
            done(job, false, oom, sizeof oom - 1, true);
            return;
        }
    }
    size_t got = 0;
    sp_json_str_decode(mv, msg, len > sizeof stack ? len : sizeof stack, &got);
    done(job, false, msg, got, retry);
    if (msg != stack) free(msg);
}

/* ---- the built-in table ------------------------------------------------------------------ */

static const sp_handler_t builtin_noop = {"builtin", noop_start, NULL, NULL, NULL};
static const sp_handler_t builtin_echo = {"builtin", echo_start, NULL, NULL, NULL};
static const sp_handler_t builtin_sleep = {"builtin", sleep_start, sleep_cancel, NULL, NULL};
static const sp_handler_t builtin_fail = {"builtin", fail_start, NULL, NULL, NULL};

const sp_handler_t *sp_handler_builtin(const char *type, size_t len)
{
    switch (len) {
    case 4:
        if (memcmp(type, "noop", 4) == 0) return &builtin_noop;
        if (memcmp(type, "echo", 4) == 0) return &builtin_echo;
        if (memcmp(type, "fail", 4) == 0) return &builtin_fail;
        return NULL;
    case 5:
        if (memcmp(type, "sleep", 5) == 0) return &builtin_sleep;
        return NULL;
    default:
        return NULL;
    }
}

/* ---- configured handlers ----------------------------------------------------------------- */

/* A handlers file maps a few dozen types at most, so a sorted array searched by bisection is
 * as fast as a hash here and simpler. */
typedef struct {
    char type[SP_NAME_MAX];
    size_t type_len;
    sp_handler_t h;
} entry_t;

struct sp_handlers {
    entry_t *v;
    size_t n, cap;
};

sp_handlers_t *sp_handlers_new(void)
{
    return calloc(1, sizeof(sp_handlers_t));
}

void sp_handlers_free(sp_handlers_t *hs)
{
    if (!hs) return;
    for (size_t i = 0; i < hs->n; i++) {
        if (hs->v[i].h.destroy) hs->v[i].h.destroy(&hs->v[i].h);
    }
    free(hs->v);
    free(hs);
}

static int entry_cmp(const entry_t *e, const char *type, size_t len)
{
    size_t n = SP_MIN(e->type_len, len);
    int c = memcmp(e->type, type, n);
    if (c != 0) return c;
    return e->type_len < len ? -1 : e->type_len > len ? 1 : 0;
}

/* The index of the first entry not less than type. */
static size_t entry_lower(const sp_handlers_t *hs, const char *type, size_t len)
{
    size_t lo = 0, hi = hs->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (entry_cmp(&hs->v[mid], type, len) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int sp_handlers_add(sp_handlers_t *hs, const char *type, size_t len, const sp_handler_t *h)
{
    if (!sp_name_valid(type, len) || sp_handler_builtin(type, len)) return SP_EINVAL;
    size_t i = entry_lower(hs, type, len);
    if (i < hs->n && entry_cmp(&hs->v[i], type, len) == 0) return SP_EINVAL;
    if (hs->n == hs->cap) {
        size_t cap = hs->cap ? hs->cap * 2 : 8;
        entry_t *v = realloc(hs->v, cap * sizeof *v);
        if (!v) return SP_ENOMEM;
        hs->v = v;
        hs->cap = cap;
    }
    memmove(&hs->v[i + 1], &hs->v[i], (hs->n - i) * sizeof *hs->v);
    memcpy(hs->v[i].type, type, len);
    hs->v[i].type_len = len;
    hs->v[i].h = *h;
    hs->n++;
    return 0;
}

const sp_handler_t *sp_handlers_find(const sp_handlers_t *hs, const char *type, size_t len)
{
    const sp_handler_t *h = sp_handler_builtin(type, len);
    if (h || !hs) return h;
    size_t i = entry_lower(hs, type, len);
    if (i < hs->n && entry_cmp(&hs->v[i], type, len) == 0) return &hs->v[i].h;
    return NULL;
}
