/*
 * backend_redis.c - the Redis backend (see backend_redis.h and docs/REDIS.md).
 *
 * Owns the two hiredis connections (commands; events subscription), the loading of the Lua
 * library that makes every state change atomic (common/redis.lua) and the arguments of each of
 * its calls, the reaper timer, the waits (long-poll leases, gets waiting for a job to finish)
 * and the decoding of script replies into records that point into the reply
 * (hiredis frees a reply once its callback returns, which is what backend.h promises).
 */
#include "backend_redis.h"

#include <errno.h>
#include <inttypes.h>
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "list.h"
#include "log.h"

#define TICK_MS 50
#define RECONNECT_MIN_MS 50
#define RECONNECT_MAX_MS 1000
#define DAY_MS 86400000LL
#define NFIELDS 17
#define NSTATS 15
#define LAYOUT "2" /* the key layout (spool:layout; also in the script), docs/REDIS.md */

/* The Lua library, common/redis.lua, embedded by the build (build/gen/redis_lua.c). */
extern const char sp_redis_lua[];
extern const size_t sp_redis_lua_len;

typedef enum {
    OP_GET,
    OP_JOB,
    OP_LEASE,
    OP_QUEUES,
    OP_PAUSE,
    OP_LIST,
    OP_PURGE,
    OP_REAP,
    OP_RELEASE_BACK,
    OP_READY,
    OP_ACKS,
    OP_SUBMITS
} op_t;

typedef struct redis_backend redis_backend_t;

typedef enum { WAIT_LEASE, WAIT_GET } wait_kind_t;

struct sp_be_wait {
    sp_list_t link;
    wait_kind_t kind;
    redis_backend_t *rb;
    uv_timer_t timer;
    int refs;      /* the timer until closed, plus a command in flight */
    bool done;     /* answered or canceled */
    bool inflight; /* a lease or get for this wait is outstanding */
    bool wake;     /* something changed while in flight: try again on the answer */
    bool timed_out;
    void *ud;
    union {
        sp_be_jobs_cb lease;
        sp_be_job_cb get;
    } cb;
    size_t max;
    size_t nqueues;
    char **queues;
    size_t *queue_lens;
    char *worker;
    size_t worker_len;
    bool has_worker;
    uint64_t job_id;
};

/* One command sent on the command connection. */
typedef struct cmd {
    sp_list_t link; /* on the outstanding list, oldest first */
    redis_backend_t *rb;
    op_t op;
    void *cb;
    void *ud;
    sp_be_wait_t *wait;
    char *fmt; /* the formatted EVALSHA, kept to send again after NOSCRIPT */
    int fmt_len;
    int64_t sent_at;
    bool resent;
    size_t n; /* batch size */
} cmd_t;

/* An ack waiting for the end of the loop turn: acks that arrive together go as one call. */
typedef struct {
    uint64_t id, lease;
    bool want_job;
    char *result; /* a copy, or NULL for null */
    size_t result_len;
    sp_be_job_cb cb;
    void *ud;
} pending_ack_t;

typedef struct {
    size_t n;
    pending_ack_t a[];
} ack_batch_t;

#define ACK_BATCH_MAX 1000

/* Jobs for one "submit" call to one queue: the single submissions of one loop turn (answered
 * one by one), or one batch (answered as a whole). Specs are copied, payloads included: the
 * answer is made from them and the ids and times the script gives back. */
typedef struct subgroup {
    struct subgroup *next;
    char *queue;
    size_t queue_len;
    size_t n, cap;
    sp_job_spec_t *specs;
    sp_be_submit_cb *cbs; /* single submissions: one each */
    void **uds;
    sp_be_batch_cb batch_cb; /* a batch: one callback for all */
    void *batch_ud;
} subgroup_t;

#define SUBMIT_GROUP_MAX 1000

typedef enum { CONN_DOWN, CONN_CONNECTING, CONN_UP } conn_state_t;

typedef struct {
    redisAsyncContext *ac;
    conn_state_t state;
    int64_t since; /* when the connect began */
    int64_t retry_at;
    int64_t backoff_ms;
    bool ready; /* commands: script loaded; events: subscribed */
} conn_t;

struct redis_backend {
    sp_backend_t base;
    uv_loop_t *loop;
    char host[256];
    int port, db;
    char user[128], password[256];
    bool has_password;
    bool auth_refused; /* the last AUTH was refused (logged once until one succeeds) */
    int64_t retention_ms, idem_ttl_ms;
    uint64_t max_depth;
    int64_t connect_timeout_ms, command_timeout_ms;
    conn_t cmd, ev;
    char sha[41];
    char channel[32]; /* the events channel: one per database, as channels span databases */
    sp_list_t outstanding;
    sp_list_t lease_waits;
    sp_list_t get_waits;
    uv_timer_t tick;
    uv_idle_t wake;
    bool wake_active;
    uv_idle_t ackflush; /* sends what waited for the end of the loop turn: acks, submissions */
    ack_batch_t *acks;  /* pending, ACK_BATCH_MAX slots; NULL when none */
    subgroup_t *subs;   /* pending single submissions, one group per queue */
    bool reaping;
    bool was_up; /* for logging the outage once */
    bool closing;
    int open_handles;
    uint64_t rng;
    void (*closed)(void *ud);
    void *closed_ud;
    void (*observe)(void *ud, const sp_jobrec_t *job, int from);
    void *observe_ud;
};

static redis_backend_t *rb_of(sp_backend_t *b)
{
    return (redis_backend_t *)b;
}

static uint64_t rng_next(redis_backend_t *rb)
{
    uint64_t z = (rb->rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* ---- URL and the start-up check --------------------------------------------------------- */

/* Percent-decodes a URL's user or password into out (cap bytes, NUL-terminated); false when
 * malformed, too long, or holding a NUL. */
static bool url_decode(const char *src, size_t n, char *out, size_t cap)
{
    long k = sp_http_pct_decode(src, n, out, cap - 1);
    if (k < 0 || memchr(out, '\0', (size_t)k)) return false;
    out[k] = '\0';
    return true;
}

int sp_backend_redis_parse_url(const char *url, sp_redis_url_t *u, char *err, size_t errlen)
{
    static const char scheme[] = "redis://";
    memset(u, 0, sizeof *u);
    if (strncmp(url, scheme, sizeof scheme - 1) != 0) {
        snprintf(err, errlen, "expected redis://[[USER]:PASSWORD@]HOST:PORT[/DB], got '%s'", url);
        return SP_EINVAL;
    }
    const char *h = url + sizeof scheme - 1;
    const char *slash = strchr(h, '/');
    const char *end = slash ? slash : h + strlen(h);
    /* Credentials end at the last '@' before the path (a password may hold '@' encoded). */
    const char *at = NULL;
    for (const char *p = h; p < end; p++)
        if (*p == '@') at = p;
    if (at) {
        const char *colon = memchr(h, ':', (size_t)(at - h));
        bool ok;
        if (colon) {
            ok = url_decode(h, (size_t)(colon - h), u->user, sizeof u->user) &&
                 url_decode(colon + 1, (size_t)(at - colon - 1), u->password, sizeof u->password);
        } else {
            ok = url_decode(h, (size_t)(at - h), u->password, sizeof u->password);
        }
        if (!ok || u->password[0] == '\0') {
            snprintf(err, errlen,
                     "bad credentials in the Redis URL: expected [USER]:PASSWORD@ with "
                     "special characters percent-encoded");
            return SP_EINVAL;
        }
        u->has_password = true;
        h = at + 1;
    }
    const char *colon = NULL;
    for (const char *p = h; p < end; p++)
        if (*p == ':') colon = p;
    if (h[0] == '[') {
        size_t span = end > h ? (size_t)(end - h) : 0;
        const char *rb = span ? memchr(h, ']', span) : NULL;
        if (!rb || (colon && colon < rb)) colon = NULL;
        if (rb && colon) h++;
        if (!rb) {
            snprintf(err, errlen, "unterminated [ in the Redis URL's host");
            return SP_EINVAL;
        }
    }
    const char *hend = colon ? colon : end;
    if (hend > h && hend[-1] == ']') hend--;
    size_t hl = (size_t)(hend - h);
    if (hl == 0 || hl >= sizeof u->host) {
        snprintf(err, errlen, "missing or too long host in the Redis URL");
        return SP_EINVAL;
    }
    memcpy(u->host, h, hl);
    u->host[hl] = '\0';
    u->port = 6379;
    if (colon) {
        char *e;
        errno = 0;
        long p = strtol(colon + 1, &e, 10);
        if (errno || e != end || e == colon + 1 || p < 1 || p > 65535) {
            snprintf(err, errlen, "bad port in the Redis URL (1-65535)");
            return SP_EINVAL;
        }
        u->port = (int)p;
    }
    if (slash && slash[1]) {
        char *e;
        errno = 0;
        long d = strtol(slash + 1, &e, 10);
        if (errno || *e || d < 0 || d > 65535) {
            snprintf(err, errlen, "bad database number in the Redis URL");
            return SP_EINVAL;
        }
        u->db = (int)d;
    }
    return 0;
}

void sp_backend_redis_url_shown(const char *url, char *out, size_t cap)
{
    sp_redis_url_t u;
    char err[16];
    if (sp_backend_redis_parse_url(url, &u, err, sizeof err) != 0) {
        snprintf(out, cap, "redis");
        return;
    }
    bool v6 = strchr(u.host, ':') != NULL;
    snprintf(out, cap, "redis://%s%s%s:%d/%d", v6 ? "[" : "", u.host, v6 ? "]" : "", u.port, u.db);
    memset(&u, 0, sizeof u);
}

/* The value of `field` in an INFO text, copied into out; false when absent. */
static bool info_field(const char *info, const char *field, char *out, size_t cap)
{
    size_t fl = strlen(field);
    for (const char *p = info; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, field, fl) == 0 && p[fl] == ':') {
            const char *v = p + fl + 1;
            size_t n = strcspn(v, "\r\n");
            if (n >= cap) n = cap - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return true;
        }
    }
    return false;
}

/* AUTH with the URL's credentials: "AUTH PASSWORD" or "AUTH USER PASSWORD". */
static int auth_argv(const redis_backend_t *rb, const char **av, size_t *al)
{
    int n = 0;
    av[n] = "AUTH";
    al[n++] = 4;
    if (rb->user[0]) {
        av[n] = rb->user;
        al[n++] = strlen(rb->user);
    }
    av[n] = rb->password;
    al[n++] = strlen(rb->password);
    return n;
}

/* The reply to a connection's set-up command (AUTH, SELECT): 0 when accepted; else the
 * connection is freed, err says what was refused (or that Redis did not answer), and the
 * status is SP_EINVAL (refused) or SP_EUNAVAIL (no answer). */
static int setup_reply(redisContext *c, redisReply *r, const redis_backend_t *rb, const char *what,
                       char *err, size_t errlen)
{
    if (r && r->type != REDIS_REPLY_ERROR) {
        freeReplyObject(r);
        return 0;
    }
    snprintf(err, errlen, "Redis at %s:%d refused %s: %s", rb->host, rb->port, what,
             r ? r->str : c->errstr);
    int rc = r ? SP_EINVAL : SP_EUNAVAIL;
    if (r) freeReplyObject(r);
    redisFree(c);
    return rc;
}

static int start_check(const redis_backend_t *rb, char *err, size_t errlen)
{
    const char *host = rb->host;
    int port = rb->port;
    int64_t timeout_ms = rb->connect_timeout_ms;
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    if (!c || c->err) {
        snprintf(err, errlen, "cannot connect to Redis at %s:%d: %s", host, port,
                 c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        return SP_EUNAVAIL;
    }
    redisSetTimeout(c, tv);
    int rc = 0;
    redisReply *r;
    if (rb->has_password) {
        const char *av[3];
        size_t al[3];
        int n = auth_argv(rb, av, al);
        rc = setup_reply(c, redisCommandArgv(c, n, av, al), rb, "the URL's credentials", err,
                         errlen);
        if (rc) return rc;
    }
    if (rb->db) {
        char what[32];
        snprintf(what, sizeof what, "database %d", rb->db);
        rc = setup_reply(c, redisCommand(c, "SELECT %d", rb->db), rb, what, err, errlen);
        if (rc) return rc;
    }
    r = redisCommand(c, "CONFIG GET maxmemory-policy");
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOAUTH", 6) == 0) {
        snprintf(err, errlen,
                 "Redis at %s:%d requires a password: give it in the URL, "
                 "redis://[USER]:PASSWORD@HOST:PORT",
                 host, port);
        freeReplyObject(r);
        redisFree(c);
        return SP_EINVAL;
    }
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_STRING) {
        const char *pol = r->element[1]->str;
        if (strncmp(pol, "allkeys-", 8) == 0 || strncmp(pol, "volatile-", 9) == 0) {
            snprintf(err, errlen,
                     "Redis at %s:%d has maxmemory-policy %s: it may evict keys when memory is "
                     "full and so silently drop jobs; set maxmemory-policy noeviction",
                     host, port, pol);
            rc = SP_EINVAL;
        }
    } else if (!r) {
        snprintf(err, errlen, "Redis at %s:%d does not answer: %s", host, port, c->errstr);
        rc = SP_EUNAVAIL;
    } else {
        sp_warn("cannot read maxmemory-policy of Redis at %s:%d (CONFIG GET refused); make sure "
                "it is noeviction, or jobs may be silently dropped",
                host, port);
    }
    if (r) freeReplyObject(r);
    if (rc) {
        redisFree(c);
        return rc;
    }
    /* The key layout this build reads and writes: a database written in another one is refused
     * rather than misread. */
    r = redisCommand(c, "GET spool:layout");
    if (r && r->type == REDIS_REPLY_NIL) {
        freeReplyObject(r);
        r = redisCommand(c, "EXISTS spool:ids");
        bool old = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
        if (r) freeReplyObject(r);
        if (old) {
            snprintf(err, errlen,
                     "Redis at %s:%d holds jobs in an older Spool key layout; drain them with the "
                     "Spool that wrote them, or FLUSHDB, and start again",
                     host, port);
            redisFree(c);
            return SP_EINVAL;
        }
        r = redisCommand(c, "SET spool:layout %s NX", LAYOUT);
    } else if (r && r->type == REDIS_REPLY_STRING && strcmp(r->str, LAYOUT) != 0) {
        snprintf(err, errlen,
                 "Redis at %s:%d holds jobs in Spool key layout %s, and this Spool reads layout "
                 "%s",
                 host, port, r->str, LAYOUT);
        freeReplyObject(r);
        redisFree(c);
        return SP_EINVAL;
    }
    if (r) freeReplyObject(r);
    r = redisCommand(c, "INFO persistence");
    if (r && r->type == REDIS_REPLY_STRING) {
        char aof[16] = "", saves[32] = "";
        info_field(r->str, "aof_enabled", aof, sizeof aof);
        freeReplyObject(r);
        r = redisCommand(c, "CONFIG GET save");
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            r->element[1]->type == REDIS_REPLY_STRING) {
            snprintf(saves, sizeof saves, "%s", r->element[1]->str);
            if (strcmp(aof, "1") != 0 && saves[0] == '\0')
                sp_warn("Redis at %s:%d has neither AOF nor RDB persistence on: every job is "
                        "lost when it restarts (appendonly yes is recommended)",
                        host, port);
        }
    }
    if (r) freeReplyObject(r);
    redisFree(c);
    return 0;
}

/* ---- decoding replies ------------------------------------------------------------------- */

static int64_t rnum(const redisReply *r, int64_t dflt)
{
    if (!r) return dflt;
    if (r->type == REDIS_REPLY_INTEGER) return r->integer;
    if (r->type != REDIS_REPLY_STRING) return dflt;
    char tmp[32];
    size_t n = r->len < sizeof tmp - 1 ? r->len : sizeof tmp - 1;
    memcpy(tmp, r->str, n);
    tmp[n] = '\0';
    char *e;
    errno = 0;
    long long v = strtoll(tmp, &e, 10);
    if (e == tmp) return dflt;
    if (*e == '.' || *e == 'e' || *e == 'E') return (int64_t)strtod(tmp, NULL);
    return v;
}

static uint64_t runum(const redisReply *r)
{
    if (!r) return 0;
    if (r->type == REDIS_REPLY_INTEGER) return (uint64_t)r->integer;
    if (r->type != REDIS_REPLY_STRING) return 0;
    char tmp[32];
    size_t n = r->len < sizeof tmp - 1 ? r->len : sizeof tmp - 1;
    memcpy(tmp, r->str, n);
    tmp[n] = '\0';
    return strtoull(tmp, NULL, 10);
}

static void rstr(const redisReply *r, const char **s, size_t *len)
{
    if (r && r->type == REDIS_REPLY_STRING) {
        *s = r->str;
        *len = r->len;
    } else {
        *s = NULL;
        *len = 0;
    }
}

/* The fields 'd' ("LEN:" type payload) and 'o' ("PRIORITY MAX_ATTEMPTS TIMEOUT_MS BACKOFF_MS")
 * of a job hash, as spec_args writes them. */
static void decode_d(const redisReply *r, sp_jobrec_t *o)
{
    o->type = "";
    o->type_len = 0;
    o->payload = "null";
    o->payload_len = 4;
    if (!r || r->type != REDIS_REPLY_STRING) return;
    const char *colon = memchr(r->str, ':', r->len < 8 ? r->len : 8);
    if (!colon) return;
    size_t tl = 0;
    for (const char *p = r->str; p < colon; p++) tl = tl * 10 + (size_t)(*p - '0');
    size_t rest = r->len - (size_t)(colon + 1 - r->str);
    if (tl > rest) return;
    o->type = colon + 1;
    o->type_len = tl;
    if (rest > tl) {
        o->payload = colon + 1 + tl;
        o->payload_len = rest - tl;
    }
}

static void decode_o(const redisReply *r, sp_jobrec_t *o)
{
    long long v[4] = {SP_DEFAULT_PRIORITY, SP_DEFAULT_MAX_ATTEMPTS, SP_DEFAULT_TIMEOUT_MS,
                      SP_DEFAULT_BACKOFF_MS};
    if (r && r->type == REDIS_REPLY_STRING) {
        char tmp[64];
        size_t n = r->len < sizeof tmp - 1 ? r->len : sizeof tmp - 1;
        memcpy(tmp, r->str, n);
        tmp[n] = '\0';
        long long w[4];
        char *p = tmp, *e;
        int k = 0;
        for (; k < 4; k++, p = e) {
            errno = 0;
            w[k] = strtoll(p, &e, 10);
            if (errno || e == p || w[k] < 0 || (*e != ' ' && *e != '\0')) break;
        }
        if (k == 4) memcpy(v, w, sizeof v);
    }
    o->priority = (int)v[0];
    o->max_attempts = (uint32_t)v[1];
    o->timeout_ms = (uint32_t)v[2];
    o->backoff_ms = (uint32_t)v[3];
}

/* A job view, the script's HMGET of the fields in V and then the id; false when it is not one. */
static bool decode_job(const redisReply *r, sp_jobrec_t *o)
{
    memset(o, 0, sizeof *o);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != NFIELDS) return false;
    redisReply **e = r->element;
    if (e[16]->type != REDIS_REPLY_STRING && e[16]->type != REDIS_REPLY_INTEGER) return false;
    o->id = runum(e[16]);
    rstr(e[0], &o->queue, &o->queue_len);
    decode_d(e[1], o);
    decode_o(e[2], o);
    int64_t s = rnum(e[3], 0);
    o->state = s >= 0 && s < SP_STATE_COUNT ? (sp_state_t)s : SP_STATE_QUEUED;
    o->attempts = (uint32_t)rnum(e[4], 0);
    o->created_at = rnum(e[5], 0);
    o->run_at = rnum(e[6], o->created_at);
    o->started_at = rnum(e[7], -1);
    o->finished_at = rnum(e[8], -1);
    bool running = o->state == SP_STATE_RUNNING;
    o->lease_expires_at = running ? rnum(e[9], -1) : -1;
    rstr(e[10], &o->result, &o->result_len);
    rstr(e[11], &o->last_error, &o->last_error_len);
    rstr(e[12], &o->worker, &o->worker_len);
    rstr(e[13], &o->idem_key, &o->idem_key_len);
    o->cancel_requested = rnum(e[14], 0) == 1;
    o->lease = running ? runum(e[15]) : 0;
    return true;
}

static bool decode_stats(const redisReply *r, sp_queue_stats_t *o)
{
    memset(o, 0, sizeof *o);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != NSTATS) return false;
    redisReply **e = r->element;
    rstr(e[0], &o->name, &o->name_len);
    o->paused = rnum(e[1], 0) == 1;
    for (int i = 0; i < SP_STATE_COUNT; i++) o->counts[i] = (uint64_t)rnum(e[2 + i], 0);
    o->oldest_queued_age_ms = rnum(e[8], 0);
    o->enqueued = (uint64_t)rnum(e[9], 0);
    o->succeeded = (uint64_t)rnum(e[10], 0);
    o->failed = (uint64_t)rnum(e[11], 0);
    o->retried = (uint64_t)rnum(e[12], 0);
    o->leased = (uint64_t)rnum(e[13], 0);
    o->canceled = (uint64_t)rnum(e[14], 0);
    return true;
}

/* The status of a script reply (element 0) and its text (element 1), or SP_EUNAVAIL for a
 * lost connection and SP_EIO for anything unexpected. */
static int reply_status(const redisReply *r, const char **why)
{
    *why = NULL;
    if (!r) {
        *why = "Redis connection lost";
        return SP_EUNAVAIL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        *why = r->str;
        /* A Redis loading its data, or out of memory, is a passing condition. */
        if (strncmp(r->str, "LOADING", 7) == 0 || strncmp(r->str, "BUSY", 4) == 0 ||
            strncmp(r->str, "OOM", 3) == 0 || strncmp(r->str, "MASTERDOWN", 10) == 0 ||
            strncmp(r->str, "READONLY", 8) == 0)
            return SP_EUNAVAIL;
        return SP_EIO;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_INTEGER) {
        *why = "unexpected reply from Redis";
        return SP_EIO;
    }
    int st = (int)r->element[0]->integer;
    if (st < 0 && r->elements > 1 && r->element[1]->type == REDIS_REPLY_STRING)
        *why = r->element[1]->str;
    if (st < 0 && !*why) {
        switch (st) {
        case SP_ENOTFOUND:
            *why = "no job with this id";
            break;
        case SP_EFULL:
            *why = "the queue is at its maximum depth";
            break;
        default:
            *why = sp_strerror(st);
        }
    }
    return st;
}

/* ---- connections ------------------------------------------------------------------------ */

/* Whether commands can be sent: the command connection is up or being opened (commands queue
 * behind the connect and fail with it). */
static bool usable(const redis_backend_t *rb)
{
    return !rb->closing && rb->cmd.ac && rb->cmd.state != CONN_DOWN;
}

static bool is_ready(const redis_backend_t *rb)
{
    return !rb->closing && rb->cmd.state == CONN_UP && rb->cmd.ready && rb->ev.state == CONN_UP &&
           rb->ev.ready;
}

bool sp_backend_redis_connected(const sp_backend_t *b)
{
    return is_ready((const redis_backend_t *)b);
}

static void schedule_wake(redis_backend_t *rb);
static void wake_all(redis_backend_t *rb);
static void conn_start(redis_backend_t *rb, conn_t *c);

static void note_state(redis_backend_t *rb)
{
    bool up = is_ready(rb);
    if (up && !rb->was_up) {
        sp_info("Redis at %s:%d reachable", rb->host, rb->port);
        wake_all(rb);
    } else if (!up && rb->was_up && !rb->closing) {
        sp_warn("Redis at %s:%d unreachable: answering 503 until it is back", rb->host, rb->port);
    }
    rb->was_up = up;
}

static void conn_lost(redis_backend_t *rb, conn_t *c)
{
    c->ac = NULL;
    c->state = CONN_DOWN;
    c->ready = false;
    c->backoff_ms = c->backoff_ms ? SP_MIN(c->backoff_ms * 2, RECONNECT_MAX_MS) : RECONNECT_MIN_MS;
    c->retry_at = sp_now_ms() + c->backoff_ms;
    note_state(rb);
}

static conn_t *conn_of(redis_backend_t *rb, const redisAsyncContext *ac)
{
    if (rb->cmd.ac == ac) return &rb->cmd;
    if (rb->ev.ac == ac) return &rb->ev;
    return NULL;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    redis_backend_t *rb = ac->data;
    conn_t *c = conn_of(rb, ac);
    if (!c) return;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback */
        conn_lost(rb, c);
        return;
    }
    c->state = CONN_UP;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    redis_backend_t *rb = ac->data;
    conn_t *c = conn_of(rb, ac);
    if (c) conn_lost(rb, c);
}

static void script_loaded(redisAsyncContext *ac, void *reply, void *priv)
{
    redis_backend_t *rb = priv;
    redisReply *r = reply;
    if (!r || rb->cmd.ac != ac) return;
    if (r->type == REDIS_REPLY_STRING && r->len == 40) {
        memcpy(rb->sha, r->str, 40);
        rb->sha[40] = '\0';
        rb->cmd.ready = true;
        rb->cmd.backoff_ms = 0;
        note_state(rb);
    } else {
        sp_error("Redis refused the Spool script: %s",
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    }
}

static void ignore_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    (void)reply;
    (void)priv;
}

static void on_event(redisAsyncContext *ac, void *reply, void *priv);

/* A refused AUTH leaves the connection unready; it is dropped and tried again like one that
 * does not answer. Said once per outage. */
static void auth_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    redis_backend_t *rb = priv;
    redisReply *r = reply;
    if (!r) return;
    bool refused = r->type == REDIS_REPLY_ERROR;
    if (refused && !rb->auth_refused)
        sp_error("Redis at %s:%d refused the URL's credentials: %s", rb->host, rb->port, r->str);
    rb->auth_refused = refused;
}

static void conn_start(redis_backend_t *rb, conn_t *c)
{
    redisAsyncContext *ac = redisAsyncConnect(rb->host, rb->port);
    if (!ac || ac->err) {
        if (ac) redisAsyncFree(ac);
        conn_lost(rb, c);
        return;
    }
    ac->data = rb;
    if (redisLibuvAttach(ac, rb->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        conn_lost(rb, c);
        return;
    }
    c->ac = ac;
    c->state = CONN_CONNECTING;
    c->since = sp_now_ms();
    c->ready = false;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* Pipelined behind the connect: they run once it is up. */
    if (rb->has_password) {
        const char *av[3];
        size_t al[3];
        int n = auth_argv(rb, av, al);
        redisAsyncCommandArgv(ac, auth_reply, rb, n, av, al);
    }
    if (rb->db) redisAsyncCommand(ac, ignore_reply, NULL, "SELECT %d", rb->db);
    if (c == &rb->cmd)
        redisAsyncCommand(ac, script_loaded, rb, "SCRIPT LOAD %b", sp_redis_lua, sp_redis_lua_len);
    else
        redisAsyncCommand(ac, on_event, rb, "SUBSCRIBE %s", rb->channel);
}

/* Drops a connection that hangs (connect or command past its time); hiredis answers every
 * outstanding command with no reply, which callers see as SP_EUNAVAIL. */
static void conn_drop(redis_backend_t *rb, conn_t *c, const char *why)
{
    redisAsyncContext *ac = c->ac;
    if (!ac) return;
    sp_warn("Redis at %s:%d: %s; reconnecting", rb->host, rb->port, why);
    conn_lost(rb, c);
    redisAsyncFree(ac);
}

/* ---- commands --------------------------------------------------------------------------- */

static void cmd_free(cmd_t *k)
{
    free(k->fmt);
    free(k);
}

static void cmd_reply(redisAsyncContext *ac, void *reply, void *priv);

/* Sends EVALSHA SHA 1 CHANNEL argv[0..argc): the one key is the events channel the script
 * publishes on. Returns false when it could not be sent (k is then the caller's). */
static bool cmd_send(redis_backend_t *rb, cmd_t *k, int argc, const char **argv, const size_t *lens)
{
    const char **av = malloc((size_t)(argc + 4) * sizeof *av);
    size_t *al = malloc((size_t)(argc + 4) * sizeof *al);
    if (!av || !al) {
        free(av);
        free(al);
        return false;
    }
    /* Until SCRIPT LOAD has answered (right after a connect) the source itself goes along. */
    if (rb->cmd.ready) {
        av[0] = "EVALSHA";
        al[0] = 7;
        av[1] = rb->sha;
        al[1] = 40;
    } else {
        av[0] = "EVAL";
        al[0] = 4;
        av[1] = sp_redis_lua;
        al[1] = sp_redis_lua_len;
    }
    av[2] = "1";
    al[2] = 1;
    av[3] = rb->channel;
    al[3] = strlen(rb->channel);
    memcpy(av + 4, argv, (size_t)argc * sizeof *av);
    memcpy(al + 4, lens, (size_t)argc * sizeof *al);
    char *fmt = NULL;
    int len = redisFormatCommandArgv(&fmt, argc + 4, av, al);
    free(av);
    free(al);
    if (len < 0 || !fmt) return false;
    k->fmt = fmt;
    k->fmt_len = len;
    k->rb = rb;
    k->sent_at = sp_now_ms();
    if (redisAsyncFormattedCommand(rb->cmd.ac, cmd_reply, k, fmt, (size_t)len) != REDIS_OK)
        return false;
    sp_list_push(&rb->outstanding, &k->link);
    return true;
}

/* ---- argument building ------------------------------------------------------------------ */

/* Arguments for one script call; numbers are written into a side store that never moves, and
 * texts made for the call (a job's 'd' field) are owned until it is sent. */
#define NUM_CAP 48
typedef struct {
    const char **v;
    size_t *l;
    char (*num)[NUM_CAP];
    int n, cap, nnum, numcap;
    char **owned;
    int nowned;
    bool over; /* an argument did not fit: a bug, answered as SP_ENOMEM */
} args_t;

static bool args_init(args_t *a, int cap, int numcap)
{
    a->v = malloc((size_t)cap * sizeof *a->v);
    a->l = malloc((size_t)cap * sizeof *a->l);
    a->num = malloc((size_t)(numcap ? numcap : 1) * sizeof *a->num);
    a->n = a->nnum = 0;
    a->owned = NULL;
    a->nowned = 0;
    a->over = false;
    a->cap = cap;
    a->numcap = numcap;
    if (a->v && a->l && a->num) return true;
    free(a->v);
    free(a->l);
    free(a->num);
    return false;
}

static void args_free(args_t *a)
{
    for (int i = 0; i < a->nowned; i++) free(a->owned[i]);
    free(a->owned);
    free(a->v);
    free(a->l);
    free(a->num);
}

static void arg_bin(args_t *a, const char *s, size_t len)
{
    if (a->n >= a->cap) {
        a->over = true;
        return;
    }
    a->v[a->n] = s ? s : "";
    a->l[a->n++] = s ? len : 0;
}

static void arg_str(args_t *a, const char *s)
{
    arg_bin(a, s, strlen(s));
}

static void arg_i64(args_t *a, int64_t v)
{
    if (a->nnum >= a->numcap) {
        a->over = true;
        return;
    }
    char *b = a->num[a->nnum++];
    int n = snprintf(b, NUM_CAP, "%lld", (long long)v);
    arg_bin(a, b, (size_t)n);
}

static void arg_u64(args_t *a, uint64_t v)
{
    if (a->nnum >= a->numcap) {
        a->over = true;
        return;
    }
    char *b = a->num[a->nnum++];
    int n = snprintf(b, NUM_CAP, "%llu", (unsigned long long)v);
    arg_bin(a, b, (size_t)n);
}

/* Makes a command and sends it, or answers at once with SP_EUNAVAIL / SP_ENOMEM. */
static cmd_t *cmd_new(op_t op, void *cb, void *ud)
{
    cmd_t *k = calloc(1, sizeof *k);
    if (!k) return NULL;
    sp_list_init(&k->link);
    k->op = op;
    k->cb = cb;
    k->ud = ud;
    return k;
}

static void answer_error(op_t op, void *cb, void *ud, int st, const char *why);
static void wait_end(sp_be_wait_t *w);

static void run(redis_backend_t *rb, op_t op, void *cb, void *ud, sp_be_wait_t *w, size_t n,
                args_t *a)
{
    if (!usable(rb)) {
        args_free(a);
        if (w) wait_end(w);
        answer_error(op, cb, ud, SP_EUNAVAIL,
                     rb->closing ? "the backend is closing" : "Redis is unreachable");
        return;
    }
    cmd_t *k = cmd_new(op, cb, ud);
    if (!k || a->over) {
        free(k);
        args_free(a);
        if (w) wait_end(w);
        answer_error(op, cb, ud, SP_ENOMEM, "out of memory");
        return;
    }
    k->wait = w;
    k->n = n;
    if (w) {
        w->refs++;
        w->inflight = true;
    }
    bool ok = cmd_send(rb, k, a->n, a->v, a->l);
    args_free(a);
    if (!ok) {
        if (w) {
            w->refs--;
            w->inflight = false;
        }
        cmd_free(k);
        if (w) wait_end(w);
        answer_error(op, cb, ud, SP_ENOMEM, "cannot send to Redis");
    }
}

/* ---- waits ------------------------------------------------------------------------------ */

static void release_handle(redis_backend_t *rb);

static void wait_free(sp_be_wait_t *w)
{
    for (size_t i = 0; i < w->nqueues; i++) free(w->queues[i]);
    free(w->queues);
    free(w->queue_lens);
    free(w->worker);
    free(w);
}

static void wait_put(sp_be_wait_t *w)
{
    if (--w->refs > 0) return;
    redis_backend_t *rb = w->rb;
    wait_free(w);
    release_handle(rb);
}

static void wait_closed(uv_handle_t *h)
{
    wait_put(h->data);
}

/* Takes a wait off its list and closes its timer; the callback is not called here. */
static void wait_end(sp_be_wait_t *w)
{
    if (w->done) return;
    w->done = true;
    sp_list_unlink(&w->link);
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, wait_closed);
}

static void wait_timeout(uv_timer_t *t);

static sp_be_wait_t *wait_new(redis_backend_t *rb, wait_kind_t kind, int64_t wait_ms, void *ud)
{
    sp_be_wait_t *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->kind = kind;
    w->rb = rb;
    w->ud = ud;
    w->refs = 1;
    uv_timer_init(rb->loop, &w->timer);
    w->timer.data = w;
    rb->open_handles++;
    uv_timer_start(&w->timer, wait_timeout, (uint64_t)wait_ms, 0);
    sp_list_push(kind == WAIT_LEASE ? &rb->lease_waits : &rb->get_waits, &w->link);
    return w;
}

static bool wait_copy_req(sp_be_wait_t *w, const sp_lease_req_t *req)
{
    w->max = req->max;
    if (req->worker) {
        w->worker = malloc(req->worker_len + 1);
        if (!w->worker) return false;
        memcpy(w->worker, req->worker, req->worker_len);
        w->worker[req->worker_len] = '\0';
        w->worker_len = req->worker_len;
        w->has_worker = true;
    }
    if (!req->queues) return true;
    w->queues = calloc(req->nqueues ? req->nqueues : 1, sizeof *w->queues);
    w->queue_lens = calloc(req->nqueues ? req->nqueues : 1, sizeof *w->queue_lens);
    if (!w->queues || !w->queue_lens) return false;
    for (size_t i = 0; i < req->nqueues; i++) {
        w->queues[i] = malloc(req->queue_lens[i] + 1);
        if (!w->queues[i]) return false;
        memcpy(w->queues[i], req->queues[i], req->queue_lens[i]);
        w->queues[i][req->queue_lens[i]] = '\0';
        w->queue_lens[i] = req->queue_lens[i];
        w->nqueues = i + 1;
    }
    return true;
}

static void lease_args_send(redis_backend_t *rb, const sp_lease_req_t *req, sp_be_jobs_cb cb,
                            void *ud, sp_be_wait_t *w);
static void get_send(redis_backend_t *rb, uint64_t id, sp_be_job_cb cb, void *ud, sp_be_wait_t *w);

static void wait_try(sp_be_wait_t *w)
{
    if (w->done || w->inflight) {
        w->wake = true;
        return;
    }
    w->wake = false;
    if (w->kind == WAIT_LEASE) {
        sp_lease_req_t req = {.queues = w->queues ? (const char *const *)w->queues : NULL,
                              .queue_lens = w->queue_lens,
                              .nqueues = w->nqueues,
                              .max = w->max,
                              .worker = w->has_worker ? w->worker : NULL,
                              .worker_len = w->worker_len};
        lease_args_send(w->rb, &req, w->cb.lease, w->ud, w);
    } else {
        get_send(w->rb, w->job_id, w->cb.get, w->ud, w);
    }
}

static void wait_timeout(uv_timer_t *t)
{
    sp_be_wait_t *w = t->data;
    if (w->kind == WAIT_LEASE) {
        sp_be_jobs_cb cb = w->cb.lease;
        void *ud = w->ud;
        wait_end(w);
        cb(ud, 0, NULL, NULL, 0, 0);
        return;
    }
    /* A get answers with the job as it is now: one more read. */
    w->timed_out = true;
    if (!usable(w->rb)) {
        sp_be_job_cb cb = w->cb.get;
        void *ud = w->ud;
        wait_end(w);
        cb(ud, SP_EUNAVAIL, "Redis is unreachable", NULL);
        return;
    }
    if (!w->inflight) wait_try(w);
}

/* Tries every wait again: after a reconnect, messages may have been missed. */
static void wake_all(redis_backend_t *rb)
{
    for (sp_list_t *l = rb->lease_waits.next; l != &rb->lease_waits; l = l->next)
        sp_container_of(l, sp_be_wait_t, link)->wake = true;
    for (sp_list_t *l = rb->get_waits.next; l != &rb->get_waits; l = l->next)
        sp_container_of(l, sp_be_wait_t, link)->wake = true;
    schedule_wake(rb);
}

static void wake_cb(uv_idle_t *h)
{
    redis_backend_t *rb = sp_container_of(h, redis_backend_t, wake);
    uv_idle_stop(h);
    rb->wake_active = false;
    if (!is_ready(rb)) return;
    /* The waits to try move to a local list first: trying one may answer (and end) it, and
     * its callback may add or cancel waits. */
    sp_list_t *lists[2] = {&rb->lease_waits, &rb->get_waits};
    for (int i = 0; i < 2; i++) {
        sp_list_t pending;
        sp_list_init(&pending);
        sp_list_t *l = lists[i]->next;
        while (l != lists[i]) {
            sp_list_t *next = l->next;
            sp_be_wait_t *w = sp_container_of(l, sp_be_wait_t, link);
            if (w->wake && !w->inflight) {
                sp_list_unlink(l);
                sp_list_push(&pending, l);
            }
            l = next;
        }
        while (!sp_list_empty(&pending)) {
            sp_be_wait_t *w = sp_container_of(pending.next, sp_be_wait_t, link);
            sp_list_unlink(&w->link);
            sp_list_push(lists[i], &w->link);
            wait_try(w);
        }
    }
}

static void schedule_wake(redis_backend_t *rb)
{
    if (rb->wake_active || rb->closing) return;
    rb->wake_active = true;
    uv_idle_start(&rb->wake, wake_cb);
}

static bool wait_wants_queue(const sp_be_wait_t *w, const char *q, size_t ql)
{
    if (!w->queues) return true;
    for (size_t i = 0; i < w->nqueues; i++)
        if (w->queue_lens[i] == ql && memcmp(w->queues[i], q, ql) == 0) return true;
    return false;
}

/* Reads `n` space-separated integers from the start of m[0..len); returns where the rest
 * begins, or 0 when the line is malformed. */
static size_t event_nums(const char *m, size_t len, long long *f, int n)
{
    char num[32];
    size_t pos = 0;
    for (int i = 0; i < n; i++) {
        size_t k = 0;
        while (pos < len && m[pos] != ' ' && k < sizeof num - 1) num[k++] = m[pos++];
        num[k] = '\0';
        if (k == 0 || pos >= len || m[pos] != ' ') return 0;
        pos++;
        char *e;
        f[i] = strtoll(num, &e, 10);
        if (*e) return 0;
    }
    return pos;
}

/* Wakes the waits a state change in queue q concerns: long polls on it when a job became
 * queued, gets waiting for job `id` when it finished. */
static void event_wake(redis_backend_t *rb, uint64_t id, int to, const char *q, size_t ql)
{
    if (to == SP_STATE_QUEUED) {
        bool any = false;
        for (sp_list_t *l = rb->lease_waits.next; l != &rb->lease_waits; l = l->next) {
            sp_be_wait_t *w = sp_container_of(l, sp_be_wait_t, link);
            if (wait_wants_queue(w, q, ql)) {
                w->wake = true;
                any = true;
            }
        }
        if (any) schedule_wake(rb);
    } else if (to >= SP_STATE_SUCCEEDED && to < SP_STATE_COUNT) {
        for (sp_list_t *l = rb->get_waits.next; l != &rb->get_waits; l = l->next) {
            sp_be_wait_t *w = sp_container_of(l, sp_be_wait_t, link);
            if (w->job_id == id) {
                w->wake = true;
                schedule_wake(rb);
            }
        }
    }
}

static void event_observe(redis_backend_t *rb, const long long *f, const char *q, size_t ql)
{
    int to = (int)f[2];
    if (!rb->observe || f[0] <= 0 || to < 0 || to >= SP_STATE_COUNT) return;
    sp_jobrec_t rec;
    memset(&rec, 0, sizeof rec);
    rec.id = (uint64_t)f[0];
    rec.queue = q;
    rec.queue_len = ql;
    rec.type = "";
    rec.payload = "null";
    rec.payload_len = 4;
    rec.state = (sp_state_t)to;
    rec.attempts = (uint32_t)f[3];
    rec.run_at = f[4];
    rec.started_at = f[5];
    rec.finished_at = f[6];
    rec.lease_expires_at = -1;
    rb->observe(rb->observe_ud, &rec, (int)f[1]);
}

/* "L NOW COUNT (ID ATTEMPTS RUN_AT)... QUEUE": COUNT jobs leased at NOW; "A NOW COUNT (ID
 * ATTEMPTS RUN_AT STARTED)... QUEUE": COUNT jobs acked at NOW. */
static void event_group(redis_backend_t *rb, char kind, const char *m, size_t len)
{
    long long h[2], f[4];
    int per = kind == 'L' ? 3 : 4;
    size_t pos = event_nums(m, len, h, 2);
    if (!pos || h[1] < 0 || h[1] > 100000) return;
    size_t body = pos;
    for (long long i = 0; i < h[1]; i++) {
        size_t used = event_nums(m + pos, len - pos, f, per);
        if (!used) return;
        pos += used;
    }
    const char *q = m + pos;
    size_t ql = len - pos;
    pos = body;
    for (long long i = 0; i < h[1]; i++) {
        pos += event_nums(m + pos, len - pos, f, per);
        long long g[7];
        if (kind == 'L') {
            long long ev[7] = {f[0], SP_STATE_QUEUED, SP_STATE_RUNNING, f[1], f[2], h[0], -1};
            memcpy(g, ev, sizeof g);
        } else {
            long long ev[7] = {f[0], SP_STATE_RUNNING, SP_STATE_SUCCEEDED, f[1], f[2], f[3], h[0]};
            memcpy(g, ev, sizeof g);
        }
        event_wake(rb, (uint64_t)g[0], (int)g[2], q, ql);
        event_observe(rb, g, q, ql);
    }
}

/* One line of an events message: a job event "ID FROM TO ATTEMPTS RUN_AT STARTED FINISHED
 * QUEUE"; "R FIRST N NOW QUEUE" for N new jobs queued at NOW with ids FIRST.. in order; or a
 * group of leases or acks (event_group). */
static void event_line(redis_backend_t *rb, const char *m, size_t len)
{
    long long f[7];
    if (len > 2 && (m[0] == 'L' || m[0] == 'A') && m[1] == ' ') {
        event_group(rb, m[0], m + 2, len - 2);
        return;
    }
    if (len > 2 && m[0] == 'R' && m[1] == ' ') {
        long long r[3];
        size_t pos = event_nums(m + 2, len - 2, r, 3);
        if (!pos || r[0] <= 0 || r[1] <= 0) return;
        const char *q = m + 2 + pos;
        size_t ql = len - 2 - pos;
        event_wake(rb, 0, SP_STATE_QUEUED, q, ql);
        for (long long i = 0; rb->observe && i < r[1]; i++) {
            long long g[7] = {r[0] + i, -1, SP_STATE_QUEUED, 0, r[2], -1, -1};
            event_observe(rb, g, q, ql);
        }
        return;
    }
    size_t pos = event_nums(m, len, f, 7);
    if (!pos) return;
    event_wake(rb, (uint64_t)f[0], (int)f[2], m + pos, len - pos);
    event_observe(rb, f, m + pos, len - pos);
}

/* A message on the events channel: the job events of one script call, one per line. */
static void on_event(redisAsyncContext *ac, void *reply, void *priv)
{
    redis_backend_t *rb = priv;
    redisReply *r = reply;
    if (!r || rb->ev.ac != ac || r->type != REDIS_REPLY_ARRAY || r->elements < 3) return;
    const redisReply *kind = r->element[0];
    if (kind->type != REDIS_REPLY_STRING) return;
    if (strcmp(kind->str, "subscribe") == 0) {
        rb->ev.ready = true;
        rb->ev.backoff_ms = 0;
        note_state(rb);
        return;
    }
    if (strcmp(kind->str, "message") != 0 || r->element[2]->type != REDIS_REPLY_STRING) return;
    const char *m = r->element[2]->str;
    const char *end = m + r->element[2]->len;
    while (m < end) {
        const char *nl = memchr(m, '\n', (size_t)(end - m));
        const char *line_end = nl ? nl : end;
        event_line(rb, m, (size_t)(line_end - m));
        m = line_end + 1;
    }
}

/* ---- answering -------------------------------------------------------------------------- */

static void ack_batch_free(ack_batch_t *ab)
{
    for (size_t i = 0; i < ab->n; i++) free(ab->a[i].result);
    free(ab);
}

static void subgroup_free(subgroup_t *g)
{
    for (size_t i = 0; i < g->n; i++) free((char *)g->specs[i].payload);
    free(g->specs);
    free(g->cbs);
    free(g->uds);
    free(g->queue);
    free(g);
}

static void answer_error(op_t op, void *cb, void *ud, int st, const char *why)
{
    switch (op) {
    case OP_GET:
    case OP_JOB:
        ((sp_be_job_cb)cb)(ud, st, why, NULL);
        break;
    case OP_LEASE:
    case OP_LIST:
        ((sp_be_jobs_cb)cb)(ud, st, why, NULL, 0, 0);
        break;
    case OP_QUEUES:
    case OP_PAUSE:
        ((sp_be_queues_cb)cb)(ud, st, why, NULL, 0);
        break;
    case OP_PURGE:
        ((sp_be_count_cb)cb)(ud, st, why, 0);
        break;
    case OP_REAP:
        ((redis_backend_t *)ud)->reaping = false;
        break;
    case OP_READY:
        ((sp_be_status_cb)cb)(ud, st, why);
        break;
    case OP_ACKS: {
        ack_batch_t *ab = ud;
        for (size_t i = 0; i < ab->n; i++) ab->a[i].cb(ab->a[i].ud, st, why, NULL);
        ack_batch_free(ab);
        break;
    }
    case OP_SUBMITS: {
        subgroup_t *g = ud;
        if (g->batch_cb)
            g->batch_cb(g->batch_ud, st, why, NULL, NULL, 0);
        else
            for (size_t i = 0; i < g->n; i++) g->cbs[i](g->uds[i], st, why, NULL, false);
        subgroup_free(g);
        break;
    }
    case OP_RELEASE_BACK:
        break;
    }
}

/* Jobs leased for a wait that ended meanwhile go back at once, their attempt not counted. */
static void release_back(redis_backend_t *rb, const redisReply *r)
{
    for (size_t i = 1; i < r->elements; i++) {
        sp_jobrec_t rec;
        if (!decode_job(r->element[i], &rec)) continue;
        args_t a;
        if (!args_init(&a, 4, 2)) continue;
        arg_str(&a, "release");
        arg_u64(&a, rec.id);
        arg_u64(&a, rec.lease);
        run(rb, OP_RELEASE_BACK, NULL, NULL, NULL, 0, &a);
    }
}

static void answer_lease(redis_backend_t *rb, cmd_t *k, const redisReply *r, int st,
                         const char *why)
{
    sp_be_wait_t *w = k->wait;
    sp_be_jobs_cb cb = k->cb;
    size_t n = st == 0 ? r->elements - 1 : 0;
    if (w) {
        w->inflight = false;
        if (w->done) {
            if (n) release_back(rb, r);
            return;
        }
        if (st == 0 && n == 0) {
            if (w->wake) schedule_wake(rb);
            return; /* keep waiting */
        }
        wait_end(w);
    }
    if (st) {
        cb(k->ud, st, why, NULL, 0, 0);
        return;
    }
    if (n == 0) {
        cb(k->ud, 0, NULL, NULL, 0, 0);
        return;
    }
    sp_jobrec_t stack[16];
    sp_jobrec_t *recs = n <= 16 ? stack : malloc(n * sizeof *recs);
    if (!recs) {
        cb(k->ud, SP_ENOMEM, "out of memory", NULL, 0, 0);
        return;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (decode_job(r->element[i + 1], &recs[m])) m++;
    cb(k->ud, 0, NULL, recs, m, 0);
    if (recs != stack) free(recs);
}

static void answer_get(redis_backend_t *rb, cmd_t *k, const redisReply *r, int st, const char *why)
{
    (void)rb;
    sp_be_wait_t *w = k->wait;
    sp_be_job_cb cb = k->cb;
    sp_jobrec_t rec;
    bool have = st == 0 && r->elements >= 2 && decode_job(r->element[1], &rec);
    if (w) {
        w->inflight = false;
        if (w->done) return;
        bool finished = !have || sp_state_finished(rec.state);
        if (st == 0 && !finished && !w->timed_out) {
            if (w->wake) schedule_wake(rb);
            return;
        }
        wait_end(w);
    }
    if (st)
        cb(k->ud, st, why, NULL);
    else if (!have)
        cb(k->ud, SP_EIO, "unexpected reply from Redis", NULL);
    else
        cb(k->ud, 0, NULL, &rec);
}

/* A new job's record, from its spec and what the script gave back. */
static void rec_from_spec(sp_jobrec_t *o, const subgroup_t *g, const sp_job_spec_t *s, uint64_t id,
                          int64_t now, int64_t run_at)
{
    memset(o, 0, sizeof *o);
    o->id = id;
    o->queue = g->queue;
    o->queue_len = g->queue_len;
    o->type = s->type;
    o->type_len = s->type_len;
    o->payload = s->payload ? s->payload : "null";
    o->payload_len = s->payload ? s->payload_len : 4;
    o->state = run_at > now ? SP_STATE_SCHEDULED : SP_STATE_QUEUED;
    o->priority = s->priority;
    o->max_attempts = s->max_attempts;
    o->timeout_ms = s->timeout_ms;
    o->backoff_ms = s->backoff_ms;
    o->created_at = now;
    o->run_at = run_at;
    o->started_at = o->finished_at = o->lease_expires_at = -1;
    if (s->has_idem_key) {
        o->idem_key = s->idem_key;
        o->idem_key_len = s->idem_key_len;
    }
}

/* Answers a "submit" call: 0, NOW, then per job a pair: (id, run_at) for a new job, (0, view)
 * for the job an idempotency key already named, (-i, 0) for a repeat of entry i's key. */
static void subgroup_answer(subgroup_t *g, const redisReply *r, int st, const char *why)
{
    size_t n = g->n;
    if (st == 0 && r->elements != 2 + 2 * n) {
        st = SP_EIO;
        why = "unexpected reply from Redis";
    }
    sp_jobrec_t *recs = NULL;
    bool *ex = NULL;
    if (st == 0) {
        recs = malloc(n * sizeof *recs);
        ex = malloc(n);
        if (!recs || !ex) {
            st = SP_ENOMEM;
            why = "out of memory";
        }
    }
    if (st) {
        free(recs);
        free(ex);
        answer_error(OP_SUBMITS, NULL, g, st, why);
        return;
    }
    int64_t now = rnum(r->element[1], 0);
    bool bad = false;
    for (size_t i = 0; i < n && !bad; i++) {
        const redisReply *x = r->element[2 + 2 * i], *y = r->element[3 + 2 * i];
        int64_t v = rnum(x, 0);
        ex[i] = true;
        if (y->type == REDIS_REPLY_ARRAY) {
            bad = !decode_job(y, &recs[i]);
        } else if (v > 0) {
            rec_from_spec(&recs[i], g, &g->specs[i], (uint64_t)v, now, rnum(y, now));
            ex[i] = false;
        } else if (v < 0 && (uint64_t)-v <= i) {
            recs[i] = recs[-v - 1];
        } else {
            bad = true;
        }
    }
    if (bad) {
        free(recs);
        free(ex);
        answer_error(OP_SUBMITS, NULL, g, SP_EIO, "unexpected reply from Redis");
        return;
    }
    if (g->batch_cb)
        g->batch_cb(g->batch_ud, 0, NULL, recs, ex, n);
    else
        for (size_t i = 0; i < n; i++) g->cbs[i](g->uds[i], 0, NULL, &recs[i], ex[i]);
    free(recs);
    free(ex);
    subgroup_free(g);
}

static void cmd_answer(redis_backend_t *rb, cmd_t *k, const redisReply *r)
{
    if (k->op == OP_READY) {
        bool ok = r && r->type == REDIS_REPLY_STATUS;
        ((sp_be_status_cb)k->cb)(
            k->ud, ok ? 0 : SP_EUNAVAIL,
            ok ? NULL : (r && r->type == REDIS_REPLY_ERROR ? r->str : "Redis is unreachable"));
        return;
    }
    const char *why;
    int st = reply_status(r, &why);
    switch (k->op) {
    case OP_GET:
        answer_get(rb, k, r, st, why);
        break;
    case OP_JOB: {
        sp_jobrec_t rec;
        if (st == 0 && (r->elements < 2 || !decode_job(r->element[1], &rec))) {
            st = SP_EIO;
            why = "unexpected reply from Redis";
        }
        if (st)
            ((sp_be_job_cb)k->cb)(k->ud, st, why, NULL);
        else
            ((sp_be_job_cb)k->cb)(k->ud, 0, NULL, &rec);
        break;
    }
    case OP_LEASE:
        answer_lease(rb, k, r, st, why);
        break;
    case OP_LIST: {
        sp_be_jobs_cb cb = k->cb;
        if (st) {
            cb(k->ud, st, why, NULL, 0, 0);
            break;
        }
        size_t n = r->elements >= 2 ? r->elements - 2 : 0;
        sp_jobrec_t *recs = malloc((n ? n : 1) * sizeof *recs);
        if (!recs) {
            cb(k->ud, SP_ENOMEM, "out of memory", NULL, 0, 0);
            break;
        }
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (decode_job(r->element[2 + i], &recs[m])) m++;
        cb(k->ud, 0, NULL, recs, m, r->elements >= 2 ? runum(r->element[1]) : 0);
        free(recs);
        break;
    }
    case OP_QUEUES:
    case OP_PAUSE: {
        sp_be_queues_cb cb = k->cb;
        if (st) {
            cb(k->ud, st, why, NULL, 0);
            break;
        }
        size_t n = r->elements - 1;
        sp_queue_stats_t *qs = malloc((n ? n : 1) * sizeof *qs);
        if (!qs) {
            cb(k->ud, SP_ENOMEM, "out of memory", NULL, 0);
            break;
        }
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (decode_stats(r->element[1 + i], &qs[m])) m++;
        cb(k->ud, 0, NULL, qs, m);
        free(qs);
        break;
    }
    case OP_PURGE:
        if (st)
            ((sp_be_count_cb)k->cb)(k->ud, st, why, 0);
        else
            ((sp_be_count_cb)k->cb)(k->ud, 0, NULL, r->elements > 1 ? runum(r->element[1]) : 0);
        break;
    case OP_ACKS: {
        ack_batch_t *ab = k->ud;
        if (st == 0 && r->elements != 1 + ab->n) {
            st = SP_EIO;
            why = "unexpected reply from Redis";
        }
        for (size_t i = 0; i < ab->n; i++) {
            pending_ack_t *p = &ab->a[i];
            if (st) {
                p->cb(p->ud, st, why, NULL);
                continue;
            }
            const redisReply *e = r->element[1 + i];
            const char *w2;
            int s2 = reply_status(e, &w2);
            sp_jobrec_t rec;
            bool have = s2 == 0 && e->elements >= 2;
            if (s2 == 0 && ((p->want_job && !have) || (have && !decode_job(e->element[1], &rec)))) {
                s2 = SP_EIO;
                w2 = "unexpected reply from Redis";
            }
            if (s2)
                p->cb(p->ud, s2, w2, NULL);
            else
                p->cb(p->ud, 0, NULL, have ? &rec : NULL);
        }
        ack_batch_free(ab);
        break;
    }
    case OP_SUBMITS:
        subgroup_answer(k->ud, r, st, why);
        break;
    case OP_READY:
        break;
    case OP_REAP:
        rb->reaping = false;
        if (st && r) sp_warn("Redis reaper: %s", why ? why : sp_strerror(st));
        break;
    case OP_RELEASE_BACK:
        break;
    }
}

static void cmd_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    cmd_t *k = priv;
    redis_backend_t *rb = k->rb;
    redisReply *r = reply;
    sp_list_unlink(&k->link);
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0 && !k->resent &&
        ac == rb->cmd.ac) {
        /* Redis lost its script cache (SCRIPT FLUSH, a restart): load it and send again. Both
         * travel on the same connection, so the load runs first. */
        k->resent = true;
        redisAsyncCommand(ac, ignore_reply, NULL, "SCRIPT LOAD %b", sp_redis_lua, sp_redis_lua_len);
        if (redisAsyncFormattedCommand(ac, cmd_reply, k, k->fmt, (size_t)k->fmt_len) == REDIS_OK) {
            k->sent_at = sp_now_ms();
            sp_list_push(&rb->outstanding, &k->link);
            return;
        }
    }
    sp_be_wait_t *w = k->wait;
    cmd_answer(rb, k, r);
    if (w) wait_put(w);
    cmd_free(k);
}

/* ---- the tick: reconnects, timeouts, reaper --------------------------------------------- */

static void conn_check(redis_backend_t *rb, conn_t *c, int64_t now)
{
    if (c->state == CONN_DOWN && now >= c->retry_at) {
        conn_start(rb, c);
    } else if (c->state == CONN_CONNECTING && now - c->since > rb->connect_timeout_ms) {
        conn_drop(rb, c, "connect timed out");
    } else if (c->state == CONN_UP && !c->ready &&
               now - c->since > rb->connect_timeout_ms + rb->command_timeout_ms) {
        conn_drop(rb, c, "no answer after connecting");
    }
}

static void tick_cb(uv_timer_t *t)
{
    redis_backend_t *rb = t->data;
    int64_t now = sp_now_ms();
    if (!sp_list_empty(&rb->outstanding) && rb->cmd.state == CONN_UP) {
        cmd_t *oldest = sp_container_of(rb->outstanding.next, cmd_t, link);
        if (now - oldest->sent_at > rb->command_timeout_ms)
            conn_drop(rb, &rb->cmd, "a command timed out");
    }
    conn_check(rb, &rb->cmd, now);
    conn_check(rb, &rb->ev, now);
    if (is_ready(rb) && !rb->reaping) {
        args_t a;
        if (!args_init(&a, 2, 1)) return;
        arg_str(&a, "reap");
        arg_i64(&a, rb->retention_ms);
        rb->reaping = true;
        run(rb, OP_REAP, NULL, rb, NULL, 0, &a);
    }
}

/* ---- operations ------------------------------------------------------------------------- */

/* A job's 'd' field, "LEN:" type payload, owned by the arguments; false when out of memory. */
static bool arg_d(args_t *a, const sp_job_spec_t *s, size_t n)
{
    if (a->nowned == 0) {
        a->owned = malloc(n * sizeof *a->owned);
        if (!a->owned) return false;
    }
    const char *payload = s->payload ? s->payload : "null";
    size_t pl = s->payload ? s->payload_len : 4;
    char *d = malloc(24 + s->type_len + pl);
    if (!d) return false;
    a->owned[a->nowned++] = d;
    int hl = snprintf(d, 24, "%zu:", s->type_len);
    memcpy(d + hl, s->type, s->type_len);
    memcpy(d + (size_t)hl + s->type_len, payload, pl);
    arg_bin(a, d, (size_t)hl + s->type_len + pl);
    return true;
}

/* One job of a "submit" call: d, o, delay_ms or @run_at, idempotency key ('' for none). `n` is
 * the number of jobs in the call. */
static void spec_args(args_t *a, const sp_job_spec_t *s, size_t n)
{
    if (a->nnum + 2 > a->numcap || !arg_d(a, s, n)) {
        a->over = true;
        return;
    }
    char *o = a->num[a->nnum++];
    int ol = snprintf(o, NUM_CAP, "%d %" PRIu32 " %" PRIu32 " %" PRIu32, s->priority,
                      s->max_attempts, s->timeout_ms, s->backoff_ms);
    arg_bin(a, o, (size_t)ol);
    /* A time given by the client is kept as given; a delay is added to Redis's clock, which
     * decides when the job is due, so that run_at - created_at is the delay asked for. */
    char *t = a->num[a->nnum++];
    int tl;
    if (s->delayed && s->run_at_given) {
        tl = snprintf(t, NUM_CAP, "@%lld", (long long)s->run_at);
    } else {
        int64_t delay = s->delayed ? s->run_at - (s->parsed_at ? s->parsed_at : sp_now_ms()) : 0;
        tl = snprintf(t, NUM_CAP, "%lld", (long long)(delay > 0 ? delay : 0));
    }
    arg_bin(a, t, (size_t)tl);
    arg_bin(a, s->has_idem_key ? s->idem_key : "", s->has_idem_key ? s->idem_key_len : 0);
}

static void submit_args(redis_backend_t *rb, args_t *a, const char *queue, size_t queue_len,
                        size_t n)
{
    arg_str(a, "submit");
    arg_i64(a, rb->idem_ttl_ms > 0 ? rb->idem_ttl_ms : 1);
    arg_u64(a, rb->max_depth);
    arg_bin(a, queue, queue_len);
    arg_u64(a, n);
}

static void flush_start(redis_backend_t *rb);

static void subgroup_send(redis_backend_t *rb, subgroup_t *g)
{
    args_t a;
    if (!args_init(&a, (int)(6 + 4 * g->n), (int)(4 + 2 * g->n))) {
        answer_error(OP_SUBMITS, NULL, g, SP_ENOMEM, "out of memory");
        return;
    }
    submit_args(rb, &a, g->queue, g->queue_len, g->n);
    for (size_t i = 0; i < g->n; i++) spec_args(&a, &g->specs[i], g->n);
    run(rb, OP_SUBMITS, NULL, g, NULL, g->n, &a);
}

static void subs_send(redis_backend_t *rb)
{
    subgroup_t *g = rb->subs;
    rb->subs = NULL;
    while (g) {
        subgroup_t *next = g->next;
        subgroup_send(rb, g);
        g = next;
    }
}

static subgroup_t *subgroup_new(const char *queue, size_t queue_len)
{
    subgroup_t *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->queue = malloc(queue_len ? queue_len : 1);
    if (!g->queue) {
        free(g);
        return NULL;
    }
    memcpy(g->queue, queue, queue_len);
    g->queue_len = queue_len;
    return g;
}

/* Adds a copy of spec (and, for a single submission, its callback); false when out of memory. */
static bool subgroup_push(subgroup_t *g, const sp_job_spec_t *spec, sp_be_submit_cb cb, void *ud)
{
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 16;
        sp_job_spec_t *s = realloc(g->specs, cap * sizeof *s);
        if (!s) return false;
        g->specs = s;
        if (cb) {
            sp_be_submit_cb *c = realloc(g->cbs, cap * sizeof *c);
            if (c) g->cbs = c;
            void **u = realloc(g->uds, cap * sizeof *u);
            if (u) g->uds = u;
            if (!c || !u) return false;
        }
        g->cap = cap;
    }
    char *payload = NULL;
    if (spec->payload) {
        payload = malloc(spec->payload_len ? spec->payload_len : 1);
        if (!payload) return false;
        memcpy(payload, spec->payload, spec->payload_len);
    }
    g->specs[g->n] = *spec;
    g->specs[g->n].payload = payload;
    if (cb) {
        g->cbs[g->n] = cb;
        g->uds[g->n] = ud;
    }
    g->n++;
    return true;
}

/* Submissions wait for the end of the loop turn: those of one turn to one queue go as one
 * script call. Not with max_depth, where a call is refused as a whole. */
static void op_submit(sp_backend_t *b, const char *queue, size_t queue_len,
                      const sp_job_spec_t *spec, sp_be_submit_cb cb, void *ud)
{
    redis_backend_t *rb = rb_of(b);
    if (!usable(rb)) {
        cb(ud, SP_EUNAVAIL, rb->closing ? "the backend is closing" : "Redis is unreachable", NULL,
           false);
        return;
    }
    subgroup_t **gp = &rb->subs;
    while (*gp && !((*gp)->queue_len == queue_len && memcmp((*gp)->queue, queue, queue_len) == 0))
        gp = &(*gp)->next;
    subgroup_t *g = rb->max_depth ? NULL : *gp;
    bool fresh = !g;
    if (fresh && !(g = subgroup_new(queue, queue_len))) {
        cb(ud, SP_ENOMEM, "out of memory", NULL, false);
        return;
    }
    if (!subgroup_push(g, spec, cb, ud)) {
        if (fresh) subgroup_free(g);
        cb(ud, SP_ENOMEM, "out of memory", NULL, false);
        return;
    }
    if (rb->max_depth) {
        subgroup_send(rb, g);
        return;
    }
    if (fresh) *gp = g;
    if (g->n == SUBMIT_GROUP_MAX) {
        *gp = g->next;
        subgroup_send(rb, g);
        return;
    }
    flush_start(rb);
}

static void op_submit_batch(sp_backend_t *b, const char *queue, size_t queue_len,
                            const sp_job_spec_t *specs, size_t n, sp_be_batch_cb cb, void *ud)
{
    redis_backend_t *rb = rb_of(b);
    if (n == 0) {
        cb(ud, 0, NULL, NULL, NULL, 0);
        return;
    }
    if (n > 100000) {
        cb(ud, SP_ETOOBIG, "too many jobs in one batch", NULL, NULL, 0);
        return;
    }
    subgroup_t *g = subgroup_new(queue, queue_len);
    bool ok = g != NULL;
    if (ok) {
        g->specs = malloc(n * sizeof *g->specs);
        ok = g->specs != NULL;
        if (ok) g->cap = n;
    }
    for (size_t i = 0; ok && i < n; i++) ok = subgroup_push(g, &specs[i], NULL, NULL);
    if (!ok) {
        if (g) subgroup_free(g);
        cb(ud, SP_ENOMEM, "out of memory", NULL, NULL, 0);
        return;
    }
    g->batch_cb = cb;
    g->batch_ud = ud;
    subgroup_send(rb, g);
}

static void get_send(redis_backend_t *rb, uint64_t id, sp_be_job_cb cb, void *ud, sp_be_wait_t *w)
{
    args_t a;
    if (!args_init(&a, 3, 1)) {
        if (w) wait_end(w);
        cb(ud, SP_ENOMEM, "out of memory", NULL);
        return;
    }
    arg_str(&a, "get");
    arg_u64(&a, id);
    if (w && !usable(rb)) {
        args_free(&a);
        wait_end(w);
        cb(ud, SP_EUNAVAIL, "Redis is unreachable", NULL);
        return;
    }
    run(rb, OP_GET, (void *)cb, ud, w, 0, &a);
}

static sp_be_wait_t *op_get(sp_backend_t *b, uint64_t id, int64_t wait_ms, sp_be_job_cb cb,
                            void *ud)
{
    redis_backend_t *rb = rb_of(b);
    if (wait_ms <= 0 || !usable(rb)) {
        get_send(rb, id, cb, ud, NULL);
        return NULL;
    }
    sp_be_wait_t *w = wait_new(rb, WAIT_GET, wait_ms, ud);
    if (!w) {
        get_send(rb, id, cb, ud, NULL);
        return NULL;
    }
    w->cb.get = cb;
    w->job_id = id;
    get_send(rb, id, cb, ud, w);
    return w->done ? NULL : w;
}

static void job_op(sp_backend_t *b, const char *name, uint64_t id, sp_be_job_cb cb, void *ud)
{
    args_t a;
    if (!args_init(&a, 3, 1)) {
        cb(ud, SP_ENOMEM, "out of memory", NULL);
        return;
    }
    arg_str(&a, name);
    arg_u64(&a, id);
    run(rb_of(b), OP_JOB, (void *)cb, ud, NULL, 0, &a);
}

static void op_cancel(sp_backend_t *b, uint64_t id, sp_be_job_cb cb, void *ud)
{
    job_op(b, "cancel", id, cb, ud);
}

static void op_retry(sp_backend_t *b, uint64_t id, sp_be_job_cb cb, void *ud)
{
    job_op(b, "retry", id, cb, ud);
}

static void lease_args_send(redis_backend_t *rb, const sp_lease_req_t *req, sp_be_jobs_cb cb,
                            void *ud, sp_be_wait_t *w)
{
    size_t nq = req->queues ? req->nqueues : 0;
    args_t a;
    if (nq > 10000 || !args_init(&a, (int)(6 + nq), 3)) {
        if (w) wait_end(w);
        cb(ud, SP_ENOMEM, "out of memory", NULL, 0, 0);
        return;
    }
    arg_str(&a, "lease");
    arg_u64(&a, req->max);
    arg_str(&a, req->worker ? "1" : "0");
    arg_bin(&a, req->worker ? req->worker : "", req->worker ? req->worker_len : 0);
    /* Tokens are this random prefix and a global counter: unique, and not guessable from
     * another job's token. */
    arg_u64(&a, 100000000 + rng_next(rb) % 900000000);
    arg_u64(&a, nq);
    for (size_t i = 0; i < nq; i++) arg_bin(&a, req->queues[i], req->queue_lens[i]);
    if (w && !usable(rb)) {
        args_free(&a);
        wait_end(w);
        cb(ud, SP_EUNAVAIL, "Redis is unreachable", NULL, 0, 0);
        return;
    }
    run(rb, OP_LEASE, (void *)cb, ud, w, 0, &a);
}

static sp_be_wait_t *op_lease(sp_backend_t *b, const sp_lease_req_t *req, int64_t wait_ms,
                              sp_be_jobs_cb cb, void *ud)
{
    redis_backend_t *rb = rb_of(b);
    if (req->queues && req->nqueues == 0) {
        cb(ud, 0, NULL, NULL, 0, 0);
        return NULL;
    }
    if (wait_ms <= 0 || !usable(rb)) {
        lease_args_send(rb, req, cb, ud, NULL);
        return NULL;
    }
    sp_be_wait_t *w = wait_new(rb, WAIT_LEASE, wait_ms, ud);
    if (!w || !wait_copy_req(w, req)) {
        if (w) wait_end(w);
        cb(ud, SP_ENOMEM, "out of memory", NULL, 0, 0);
        return NULL;
    }
    w->cb.lease = cb;
    lease_args_send(rb, req, cb, ud, w);
    return w->done ? NULL : w;
}

static void lease_op(sp_backend_t *b, args_t *a, sp_be_job_cb cb, void *ud)
{
    run(rb_of(b), OP_JOB, (void *)cb, ud, NULL, 0, a);
}

/* Sends the pending acks as one "acks" call. */
static void acks_send(redis_backend_t *rb)
{
    ack_batch_t *ab = rb->acks;
    rb->acks = NULL;
    if (!ab || ab->n == 0) {
        free(ab);
        return;
    }
    args_t a;
    if (!args_init(&a, (int)(2 + 5 * ab->n), (int)(1 + 2 * ab->n))) {
        answer_error(OP_ACKS, NULL, ab, SP_ENOMEM, "out of memory");
        return;
    }
    arg_str(&a, "acks");
    arg_u64(&a, ab->n);
    for (size_t i = 0; i < ab->n; i++) {
        pending_ack_t *p = &ab->a[i];
        arg_u64(&a, p->id);
        arg_u64(&a, p->lease);
        arg_str(&a, p->result ? "1" : "0");
        arg_bin(&a, p->result ? p->result : "", p->result ? p->result_len : 0);
        arg_str(&a, p->want_job ? "1" : "0");
    }
    run(rb, OP_ACKS, NULL, ab, NULL, ab->n, &a);
}

static void ackflush_cb(uv_idle_t *h)
{
    redis_backend_t *rb = sp_container_of(h, redis_backend_t, ackflush);
    uv_idle_stop(h);
    subs_send(rb);
    acks_send(rb);
}

static void flush_start(redis_backend_t *rb)
{
    if (!uv_is_active((uv_handle_t *)&rb->ackflush)) uv_idle_start(&rb->ackflush, ackflush_cb);
}

/* Acks wait for the end of the loop turn, so that a worker pool finishing many jobs at once
 * sends them in one script call. */
static void op_ack(sp_backend_t *b, uint64_t id, uint64_t lease, const char *result,
                   size_t result_len, bool want_job, sp_be_job_cb cb, void *ud)
{
    redis_backend_t *rb = rb_of(b);
    if (!usable(rb)) {
        cb(ud, SP_EUNAVAIL, rb->closing ? "the backend is closing" : "Redis is unreachable", NULL);
        return;
    }
    if (!rb->acks) {
        rb->acks = malloc(sizeof *rb->acks + ACK_BATCH_MAX * sizeof(pending_ack_t));
        if (!rb->acks) {
            cb(ud, SP_ENOMEM, "out of memory", NULL);
            return;
        }
        rb->acks->n = 0;
        flush_start(rb);
    }
    pending_ack_t *p = &rb->acks->a[rb->acks->n];
    p->result = NULL;
    p->result_len = 0;
    if (result) {
        p->result = malloc(result_len ? result_len : 1);
        if (!p->result) {
            cb(ud, SP_ENOMEM, "out of memory", NULL);
            return;
        }
        if (result_len) memcpy(p->result, result, result_len);
        p->result_len = result_len;
    }
    p->id = id;
    p->lease = lease;
    p->want_job = want_job;
    p->cb = cb;
    p->ud = ud;
    if (++rb->acks->n == ACK_BATCH_MAX) acks_send(rb);
}

static void op_fail(sp_backend_t *b, uint64_t id, uint64_t lease, const char *error,
                    size_t error_len, bool retry, int64_t retry_in_ms, sp_be_job_cb cb, void *ud)
{
    redis_backend_t *rb = rb_of(b);
    args_t a;
    if (!args_init(&a, 9, 4)) {
        cb(ud, SP_ENOMEM, "out of memory", NULL);
        return;
    }
    arg_str(&a, "fail");
    arg_u64(&a, id);
    arg_u64(&a, lease);
    arg_str(&a, error ? "1" : "0");
    arg_bin(&a, error ? error : "", error ? error_len : 0);
    arg_str(&a, retry ? "1" : "0");
    arg_i64(&a, retry_in_ms < 0 ? -1 : retry_in_ms);
    arg_u64(&a, rng_next(rb) >> 33);
    lease_op(b, &a, cb, ud);
}

static void op_heartbeat(sp_backend_t *b, uint64_t id, uint64_t lease, int64_t extend_ms,
                         sp_be_job_cb cb, void *ud)
{
    args_t a;
    if (!args_init(&a, 5, 3)) {
        cb(ud, SP_ENOMEM, "out of memory", NULL);
        return;
    }
    arg_str(&a, "heartbeat");
    arg_u64(&a, id);
    arg_u64(&a, lease);
    arg_i64(&a, extend_ms < 0 ? -1 : extend_ms);
    lease_op(b, &a, cb, ud);
}

static void op_release(sp_backend_t *b, uint64_t id, uint64_t lease, sp_be_job_cb cb, void *ud)
{
    args_t a;
    if (!args_init(&a, 4, 2)) {
        cb(ud, SP_ENOMEM, "out of memory", NULL);
        return;
    }
    arg_str(&a, "release");
    arg_u64(&a, id);
    arg_u64(&a, lease);
    lease_op(b, &a, cb, ud);
}

static void op_queues(sp_backend_t *b, const char *name, size_t name_len, sp_be_queues_cb cb,
                      void *ud)
{
    args_t a;
    if (!args_init(&a, 3, 1)) {
        cb(ud, SP_ENOMEM, "out of memory", NULL, 0);
        return;
    }
    if (name && name_len == 0) {
        args_free(&a);
        cb(ud, SP_ENOTFOUND, "no queue with this name", NULL, 0);
        return;
    }
    arg_str(&a, "queues");
    arg_bin(&a, name ? name : "", name ? name_len : 0);
    run(rb_of(b), OP_QUEUES, (void *)cb, ud, NULL, 0, &a);
}

static void op_list(sp_backend_t *b, const char *queue, size_t queue_len, int state, uint64_t after,
                    size_t limit, sp_be_jobs_cb cb, void *ud)
{
    args_t a;
    if (!args_init(&a, 6, 3)) {
        cb(ud, SP_ENOMEM, "out of memory", NULL, 0, 0);
        return;
    }
    arg_str(&a, "list");
    arg_bin(&a, queue, queue_len);
    arg_i64(&a, state);
    arg_u64(&a, after);
    arg_u64(&a, limit);
    run(rb_of(b), OP_LIST, (void *)cb, ud, NULL, 0, &a);
}

static void op_pause(sp_backend_t *b, const char *queue, size_t queue_len, bool pause,
                     sp_be_queues_cb cb, void *ud)
{
    args_t a;
    if (!args_init(&a, 4, 1)) {
        cb(ud, SP_ENOMEM, "out of memory", NULL, 0);
        return;
    }
    arg_str(&a, "pause");
    arg_bin(&a, queue, queue_len);
    arg_str(&a, pause ? "1" : "0");
    run(rb_of(b), OP_PAUSE, (void *)cb, ud, NULL, 0, &a);
}

static void op_purge(sp_backend_t *b, const char *queue, size_t queue_len, sp_state_t state,
                     sp_be_count_cb cb, void *ud)
{
    if ((unsigned)state >= SP_STATE_COUNT || state == SP_STATE_RUNNING) {
        cb(ud, SP_EINVAL, "running jobs cannot be purged", 0);
        return;
    }
    args_t a;
    if (!args_init(&a, 4, 1)) {
        cb(ud, SP_ENOMEM, "out of memory", 0);
        return;
    }
    arg_str(&a, "purge");
    arg_bin(&a, queue, queue_len);
    arg_i64(&a, state);
    run(rb_of(b), OP_PURGE, (void *)cb, ud, NULL, 0, &a);
}

/* Ready when a PING comes back on the command connection and the events connection is not
 * down (without it long polls would not wake). */
static void op_ready(sp_backend_t *b, sp_be_status_cb cb, void *ud)
{
    redis_backend_t *rb = rb_of(b);
    if (rb->closing) {
        cb(ud, SP_EUNAVAIL, "the backend is closing");
        return;
    }
    if (!usable(rb) || rb->ev.state == CONN_DOWN) {
        cb(ud, SP_EUNAVAIL, "Redis is unreachable");
        return;
    }
    cmd_t *k = cmd_new(OP_READY, (void *)cb, ud);
    if (!k) {
        cb(ud, SP_ENOMEM, "out of memory");
        return;
    }
    k->rb = rb;
    k->sent_at = sp_now_ms();
    k->resent = true; /* a PING is never sent again */
    if (redisAsyncCommand(rb->cmd.ac, cmd_reply, k, "PING") != REDIS_OK) {
        cmd_free(k);
        cb(ud, SP_EUNAVAIL, "Redis is unreachable");
        return;
    }
    sp_list_push(&rb->outstanding, &k->link);
}

static void op_cancel_wait(sp_backend_t *b, sp_be_wait_t *w)
{
    (void)b;
    if (w) wait_end(w);
}

/* ---- closing ---------------------------------------------------------------------------- */

static void release_handle(redis_backend_t *rb)
{
    if (--rb->open_handles > 0) return;
    void (*done)(void *) = rb->closed;
    void *ud = rb->closed_ud;
    free(rb);
    if (done) done(ud);
}

static void handle_closed(uv_handle_t *h)
{
    release_handle(h->data);
}

static void op_close(sp_backend_t *b, void (*done)(void *ud), void *ud)
{
    redis_backend_t *rb = rb_of(b);
    rb->closing = true;
    rb->closed = done;
    rb->closed_ud = ud;
    while (!sp_list_empty(&rb->lease_waits)) {
        sp_be_wait_t *w = sp_container_of(rb->lease_waits.next, sp_be_wait_t, link);
        sp_be_jobs_cb cb = w->cb.lease;
        void *wud = w->ud;
        wait_end(w);
        cb(wud, 0, NULL, NULL, 0, 0);
    }
    while (!sp_list_empty(&rb->get_waits)) {
        sp_be_wait_t *w = sp_container_of(rb->get_waits.next, sp_be_wait_t, link);
        sp_be_job_cb cb = w->cb.get;
        void *wud = w->ud;
        wait_end(w);
        cb(wud, SP_EUNAVAIL, "the backend is closing", NULL);
    }
    if (rb->acks) {
        ack_batch_t *ab = rb->acks;
        rb->acks = NULL;
        answer_error(OP_ACKS, NULL, ab, SP_EUNAVAIL, "the backend is closing");
    }
    while (rb->subs) {
        subgroup_t *g = rb->subs;
        rb->subs = g->next;
        answer_error(OP_SUBMITS, NULL, g, SP_EUNAVAIL, "the backend is closing");
    }
    uv_close((uv_handle_t *)&rb->ackflush, handle_closed);
    conn_t *conns[2] = {&rb->cmd, &rb->ev};
    for (int i = 0; i < 2; i++) {
        redisAsyncContext *ac = conns[i]->ac;
        conns[i]->ac = NULL;
        conns[i]->state = CONN_DOWN;
        if (ac) redisAsyncFree(ac);
    }
    uv_close((uv_handle_t *)&rb->tick, handle_closed);
    uv_close((uv_handle_t *)&rb->wake, handle_closed);
}

static const sp_backend_ops_t redis_ops = {
    .name = "redis",
    .submit = op_submit,
    .submit_batch = op_submit_batch,
    .get = op_get,
    .cancel = op_cancel,
    .retry = op_retry,
    .lease = op_lease,
    .ack = op_ack,
    .fail = op_fail,
    .heartbeat = op_heartbeat,
    .release = op_release,
    .queues = op_queues,
    .list = op_list,
    .pause = op_pause,
    .purge = op_purge,
    .ready = op_ready,
    .cancel_wait = op_cancel_wait,
    .close = op_close,
};

int sp_backend_redis_new(uv_loop_t *loop, const sp_backend_redis_opts_t *o, sp_backend_t **out,
                         char *err, size_t errlen)
{
    *out = NULL;
    redis_backend_t *rb = calloc(1, sizeof *rb);
    if (!rb) {
        snprintf(err, errlen, "out of memory");
        return SP_ENOMEM;
    }
    sp_redis_url_t u;
    int rc = sp_backend_redis_parse_url(o->url, &u, err, errlen);
    if (rc) {
        free(rb);
        return rc;
    }
    memcpy(rb->host, u.host, sizeof rb->host);
    rb->port = u.port;
    rb->db = u.db;
    memcpy(rb->user, u.user, sizeof rb->user);
    memcpy(rb->password, u.password, sizeof rb->password);
    rb->has_password = u.has_password;
    memset(&u, 0, sizeof u);
    rb->connect_timeout_ms = o->connect_timeout_ms ? (int64_t)o->connect_timeout_ms : 2000;
    rb->command_timeout_ms = o->command_timeout_ms ? (int64_t)o->command_timeout_ms : 5000;
    if (!o->skip_start_check) {
        rc = start_check(rb, err, errlen);
        if (rc) {
            free(rb);
            return rc;
        }
    }
    if (rb->db)
        snprintf(rb->channel, sizeof rb->channel, "spool:ev:%d", rb->db);
    else
        snprintf(rb->channel, sizeof rb->channel, "spool:ev");
    rb->base.ops = &redis_ops;
    rb->loop = loop;
    rb->retention_ms = o->retention_ms ? o->retention_ms : DAY_MS;
    if (rb->retention_ms < 0) rb->retention_ms = -1;
    rb->idem_ttl_ms = o->idem_ttl_ms > 0 ? o->idem_ttl_ms : DAY_MS;
    rb->max_depth = o->max_depth;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    rb->rng =
        ((uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec) ^ ((uint64_t)getpid() << 32);
    sp_list_init(&rb->outstanding);
    sp_list_init(&rb->lease_waits);
    sp_list_init(&rb->get_waits);
    uv_timer_init(loop, &rb->tick);
    uv_idle_init(loop, &rb->wake);
    uv_idle_init(loop, &rb->ackflush);
    rb->tick.data = rb;
    rb->wake.data = rb;
    rb->ackflush.data = rb;
    rb->open_handles = 3;
    conn_start(rb, &rb->cmd);
    conn_start(rb, &rb->ev);
    uv_timer_start(&rb->tick, tick_cb, TICK_MS, TICK_MS);
    *out = &rb->base;
    return 0;
}

void sp_backend_redis_observe(sp_backend_t *b,
                              void (*fn)(void *ud, const sp_jobrec_t *job, int from), void *ud)
{
    redis_backend_t *rb = rb_of(b);
    rb->observe = fn;
    rb->observe_ud = ud;
}
