/*
 * backend_redis.h - the Redis backend: every job in one Redis, shared by any number of
 * spool-server and spool-worker processes. Every state change is one Lua script run by
 * EVALSHA on a command connection; a second connection subscribes to the events channel that
 * the scripts publish on, which wakes long-poll leases and waiting gets and feeds observers.
 * A 50 ms timer runs the reaper script (due delayed jobs, expired leases, retention) and checks
 * the connect and command timeouts. While Redis is unreachable every operation answers
 * SP_EUNAVAIL; the connections come back alone, with capped backoff. See docs/REDIS.md.
 */
#ifndef SP_BACKEND_REDIS_H
#define SP_BACKEND_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "backend.h"

typedef struct {
    const char *url;             /* "redis://[[USER]:PASSWORD@]HOST:PORT[/DB]"; copied */
    int64_t retention_ms;        /* how long finished jobs are kept; 0: 24 h; < 0: this process
                                  * never drops finished jobs (another one does) */
    int64_t idem_ttl_ms;         /* how long an idempotency key lives; <= 0: 24 h */
    uint64_t max_depth;          /* per queue unfinished jobs; 0 = none */
    uint64_t connect_timeout_ms; /* 0 = 2 s */
    uint64_t command_timeout_ms; /* 0 = 5 s */
    bool skip_start_check;       /* tests only: no maxmemory-policy check at start */
} sp_backend_redis_opts_t;

/* A parsed redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] (USER and PASSWORD percent-decoded;
 * "redis://PASSWORD@HOST" is a password alone). */
typedef struct {
    char host[256];
    int port, db;
    char user[128];     /* "" for the default user */
    char password[256]; /* "" with has_password false: no AUTH */
    bool has_password;
} sp_redis_url_t;

/* Parses a redis:// URL. Returns 0, or SP_EINVAL with a message in err. */
int sp_backend_redis_parse_url(const char *url, sp_redis_url_t *out, char *err, size_t errlen);

/* A redis:// URL as logs may show it: "redis://HOST:PORT/DB", without credentials ("redis"
 * when it does not parse). */
void sp_backend_redis_url_shown(const char *url, char *out, size_t cap);

/* Connects once, synchronously, to check the server: refuses (SP_EINVAL, message in err) a
 * Redis whose maxmemory-policy may evict keys, answers SP_EUNAVAIL when it cannot be reached
 * within the connect timeout, and warns when neither AOF nor RDB persistence is on. Then makes
 * the backend on `loop`, whose connections open asynchronously. */
int sp_backend_redis_new(uv_loop_t *loop, const sp_backend_redis_opts_t *opts, sp_backend_t **out,
                         char *err, size_t errlen);

/* Observes every job state change published by the scripts, from every process sharing the
 * Redis. The record carries id, queue, state, attempts, run_at, started_at and finished_at;
 * its other fields are empty. One observer, may be NULL. */
void sp_backend_redis_observe(sp_backend_t *b,
                              void (*fn)(void *ud, const sp_jobrec_t *job, int from), void *ud);

/* Whether both connections are up and the script is loaded (what ready answers). */
bool sp_backend_redis_connected(const sp_backend_t *b);

#endif
