/*
 * spt.h - support for Spool's integration tests: start real binaries on free loopback ports,
 * talk HTTP to them over plain sockets, and parse answers. Every wait is bounded.
 *
 * Binaries are taken from $SPOOL_BIN_DIR (make test sets it to the sanitizer build), else
 * build/bin relative to the current directory.
 */
#ifndef SPT_H
#define SPT_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* The full path of a binary ("spool-server"); a static buffer per call site is not needed:
 * returns a pointer to an internal buffer valid until the next call. */
const char *spt_bin(const char *name);

typedef struct {
    pid_t pid;
    int port;
    char addr[64];      /* "127.0.0.1:PORT" */
    char log_path[256]; /* the process's stderr is written here */
    int stdout_fd;      /* the rest of its stdout, readable */
} spt_proc_t;

/* Starts BIN (a name for spt_bin) with args (NULL-terminated, may be NULL) and extra environment
 * entries "NAME=VALUE" (NULL-terminated, may be NULL; added to the inherited environment). When
 * wait_listen is true, "--listen 127.0.0.1:0" is added for spool-server unless args already
 * have --listen, and the first stdout line "listening on 127.0.0.1:PORT" is awaited (10 s at
 * most) to fill port and addr. Returns 0, or -1 (the test should fail). */
int spt_start(spt_proc_t *p, const char *bin, const char *const *args, const char *const *env,
              bool wait_listen);
/* Shorthand: spool-server with these args, waiting for its listening line. */
int spt_server_start(spt_proc_t *p, const char *const *args);
/* Sends a signal. */
int spt_signal(spt_proc_t *p, int sig);
/* Waits for exit at most timeout_ms; returns 0 and the raw wait status, or -1 on timeout. */
int spt_wait(spt_proc_t *p, int timeout_ms, int *status);
/* SIGTERM, wait up to 20 s, then SIGKILL. Returns the exit code (or 128+signal). Prints the
 * process's stderr log when it did not exit 0 (sanitizer reports show up there). */
int spt_stop(spt_proc_t *p);
/* Reads the stderr log so far into a malloc'd string (caller frees). */
char *spt_log(const spt_proc_t *p);

typedef struct {
    int status;
    char *head; /* status line and headers, NUL-terminated */
    char *body; /* NUL-terminated (body_len bytes, may contain NUL) */
    size_t body_len;
    cJSON *json; /* body parsed when it is JSON, else NULL */
} spt_resp_t;

/* One request on a new connection (closed after), bounded by 15 s. body may be NULL;
 * headers is zero or more "Name: value\r\n" lines or NULL. A body gets
 * "Content-Type: application/json" unless headers name a Content-Type. Returns 0, or -1 when
 * no complete answer came. */
int spt_request(int port, const char *method, const char *target, const char *body,
                const char *headers, spt_resp_t *out);
/* printf-style target and body helpers are not provided: build strings with snprintf. */
void spt_resp_free(spt_resp_t *r);
/* The value of a response header (case-insensitive) copied into a static buffer, or NULL. */
const char *spt_header(const spt_resp_t *r, const char *name);
/* The error code in an error body ({"error":{"code":..}}), or "" when there is none. */
const char *spt_error_code(const spt_resp_t *r);

/* Raw sockets, for keep-alive, pipelining and slow-client tests. */
int spt_connect(int port); /* blocking socket with 15 s receive timeout; -1 */
int spt_send(int fd, const void *data, size_t len); /* all bytes or -1 */
/* Reads exactly one response from fd (Content-Length, chunked, or until close), with leftover
 * bytes kept per fd for the next call. head_only for answers to HEAD. Returns 0 or -1. */
int spt_read_response(int fd, spt_resp_t *out, bool head_only);
/* True when the peer has closed fd (reads EOF within timeout_ms). */
bool spt_closed(int fd, int timeout_ms);
void spt_close(int fd);

/* JSON helpers on a parsed body; return NULL/-1 when absent. */
const char *spt_jstr(const cJSON *obj, const char *key);
long long spt_jint(const cJSON *obj, const char *key);

/* Submits {"type": type, ...extra} to queue and returns the new job's id in id (cap bytes);
 * extra is a JSON fragment of more members (",\"priority\":9") or "". Returns the status. */
int spt_submit(int port, const char *queue, const char *type, const char *extra, char *id,
               size_t cap);

/* Milliseconds of a monotonic clock. */
long long spt_now_ms(void);

/* ---- Additions: helpers shared by the API tests. ---- */

/* One raw request (len bytes, sent as given) on a new connection, then one answer read as
 * spt_read_response does; for requests spt_request cannot express (no Content-Type, bad
 * framing). Bounded by 15 s. Returns 0 or -1. */
int spt_exchange(int port, const void *raw, size_t len, bool head_only, spt_resp_t *out);
/* spt_request that never fails: when no complete answer came, status is 0 (so that an
 * assertion on the status fails) and a line on stderr says which request it was. */
spt_resp_t spt_do(int port, const char *method, const char *target, const char *body,
                  const char *headers);
/* Sends a request and checks its answer: the status, and for an error status (and any method
 * but HEAD) the error shape {"error":{"code": snake_case, "message": non-empty}}, the message
 * containing msg_part when it is not NULL. Returns 0, or -1 after printing the request, what
 * was expected and what came. */
int spt_expect(int port, const char *method, const char *target, const char *body,
               const char *headers, int status, const char *msg_part);

/* JSON text compared as a value: whitespace dropped, object members sorted by key, string
 * escapes decoded (the same code points compare equal however they are escaped), number text
 * kept digit for digit (only the exponent's spelling is normalised). */
/* The canonical text of the value at path in text ("" or NULL: the whole value; else keys and
 * array indexes separated by dots, "jobs.0.payload"); malloc'd (caller frees), NULL when the
 * text is not JSON or the path is absent. */
char *spt_json_at(const char *text, size_t len, const char *path);
/* True when the value at path in text is the same JSON value as expected (a JSON text); prints
 * both on stderr when not. */
bool spt_json_same(const char *text, size_t len, const char *path, const char *expected);

/* Polls GET /v1/jobs/{id} every 20 ms until its state is state, at most timeout_ms. Returns 0,
 * or -1 after printing the last state seen. */
int spt_wait_state(int port, const char *id, const char *state, int timeout_ms);
/* GET /v1/queues/{queue}, then the integer group.name ("counts", "queued") or, with group NULL,
 * the top-level integer name ("oldest_queued_age_ms"); -1 when absent or on error. */
long long spt_queue_num(int port, const char *queue, const char *group, const char *name);
/* Leases at most one job from queue ({"queues":[queue],"max":1}); copies its id and lease.
 * Returns 1 when a job was leased, 0 when none was ready, -1 on an error answer. */
int spt_lease_one(int port, const char *queue, char *id, size_t id_cap, char *lease,
                  size_t lease_cap);
/* Wall-clock milliseconds since the Unix epoch, to compare with the *_at fields. */
long long spt_wall_ms(void);

/* For a process expected to exit on its own (--help, a bad flag): waits at most timeout_ms
 * (then kills it), returns its exit code (128+signal when killed), and hands over the rest of
 * its stdout and its stderr log as malloc'd strings when out / err are not NULL (caller frees).
 * Cleans up like spt_stop, without printing anything. */
int spt_finish(spt_proc_t *p, int timeout_ms, char **out, char **err);
/* Sleeps ms milliseconds: only to let a request reach the server before the next step of a
 * test whose assertion holds either way, never to wait for an outcome. */
void spt_sleep_ms(int ms);
/* Reads from fd (leftover bytes first) until needle has been seen, at most timeout_ms; the
 * bytes after it stay for the next read. For streams that never end (Server-Sent Events). */
bool spt_recv_until(int fd, const char *needle, int timeout_ms);
/* True when the comma-separated header value list (an Allow header) holds token. */
bool spt_list_has(const char *list, const char *token);

/* ---- Redis: a real redis-server for the tests of the Redis backend. ---- */

typedef struct {
    pid_t pid;
    int port;
    char dir[200]; /* its temporary directory (data, AOF, log) */
} spt_redis_t;

/* Starts redis-server on a free loopback port in a new temporary directory, with AOF on, RDB
 * off and 4096 databases, plus extra_args (NULL-terminated, may be NULL; e.g. "--maxmemory-policy",
 * "allkeys-lru"); waits (10 s at most) until it answers PING. Returns 0, or -1. */
int spt_redis_start(spt_redis_t *r, const char *const *extra_args);
/* Stops it (SIGTERM, then SIGKILL after 10 s); with keep_dir the directory stays for a restart
 * (spt_redis_restart), else it is removed. Returns 0, or -1. */
int spt_redis_stop(spt_redis_t *r, bool keep_dir);
/* Starts it again on the same port and directory (its AOF is replayed). Returns 0, or -1. */
int spt_redis_restart(spt_redis_t *r);
/* With SPOOL_TEST_BACKEND=redis in the environment: the URL of the one redis-server shared by
 * the test binary (started on first use, stopped at exit), on a database of its own for each
 * call, so that every spool-server started sees an empty store as with the memory backend;
 * spt_start then adds "--backend URL" to spool-server's arguments unless they name a backend.
 * NULL when the variable is not set (or the server could not start). */
const char *spt_test_backend_url(void);

/* Assertions for cmocka tests; they expand only where <cmocka.h> is included. */
#define SPT_START(p, ...)                                                                          \
    do {                                                                                           \
        const char *const spt_args_[] = {__VA_ARGS__, NULL};                                       \
        assert_int_equal(spt_server_start(&(p), spt_args_), 0);                                    \
    } while (0)
#define SPT_STOP(p) assert_int_equal(spt_stop(&(p)), 0)
#define SPT_EXPECT(port, method, target, body, headers, status, msg_part)                          \
    assert_int_equal(                                                                              \
        spt_expect((port), (method), (target), (body), (headers), (status), (msg_part)), 0)
/* assert_string_equal that fails, rather than crashes, on NULL. */
#define SPT_ASSERT_STR(actual, expected)                                                           \
    do {                                                                                           \
        const char *spt_a_ = (actual);                                                             \
        if (!spt_a_) fail_msg("%s is absent, expected \"%s\"", #actual, (expected));               \
        assert_string_equal(spt_a_, (expected));                                                   \
    } while (0)
#define SPT_ASSERT_BETWEEN(value, lo, hi)                                                          \
    do {                                                                                           \
        long long spt_v_ = (value), spt_lo_ = (lo), spt_hi_ = (hi);                                \
        if (spt_v_ < spt_lo_ || spt_v_ > spt_hi_)                                                  \
            fail_msg("%s = %lld, not in [%lld, %lld]", #value, spt_v_, spt_lo_, spt_hi_);          \
    } while (0)
/* The member key of obj is present and JSON null. */
#define SPT_ASSERT_JNULL(obj, key)                                                                 \
    do {                                                                                           \
        const cJSON *spt_m_ = cJSON_GetObjectItemCaseSensitive((obj), (key));                      \
        if (!cJSON_IsNull(spt_m_)) fail_msg("\"%s\" is absent or not null", (key));                \
    } while (0)

#endif
