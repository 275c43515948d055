/*
 * handlers_file.h - the handlers file (JSON that maps job types to exec, http and lib handlers)
 * and the constructors of those three handler kinds (handler_exec.c, handler_http.c,
 * handler_lib.c), plus the helpers they share: the job record a handler hands over, and turning
 * a handler's output into a job result.
 *
 * The file, as docs/HANDLERS.md describes it:
 *   {"handlers": {
 *     "thumb":  {"exec": ["/usr/local/bin/make-thumb", "--size", "256"], "timeout_ms": 60000},
 *     "notify": {"http": "http://127.0.0.1:9000/hooks/notify"},
 *     "hash":   {"lib": "/usr/local/lib/libhash.so", "symbol": "hash"}}}
 */
#ifndef SP_HANDLERS_FILE_H
#define SP_HANDLERS_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "handler.h"

/* A handler's own timeout_ms: 0 (use the job's) or 100..86 400 000. */
#define SP_HANDLER_TIMEOUT_MIN 100
#define SP_HANDLER_TIMEOUT_MAX 86400000
/* exec: the most standard output kept; more fails the attempt. */
#define SP_EXEC_OUTPUT_MAX (1024 * 1024)
/* exec: the tail of standard error kept for the error message. */
#define SP_EXEC_STDERR_TAIL 4096
/* exec: default time between SIGTERM and SIGKILL. */
#define SP_EXEC_KILL_GRACE_MS 5000

/* Reads and checks the handlers file at `path` and builds the table; every lib is dlopen'ed and
 * its symbol resolved now, so that a bad file fails at start-up. `loop` is the loop the
 * handlers will run on (the http handlers' client lives there). Returns 0 and sets *out (the
 * caller frees it with sp_handlers_free, once the loop has stopped running: closing the http
 * client's connections runs the loop briefly), or SP_EINVAL / SP_ENOMEM with a message in err
 * that names the entry and says why ("handlers.thumb.exec: program path must be absolute:
 * 'make-thumb'"). */
int sp_handlers_load(const char *path, uv_loop_t *loop, sp_handlers_t **out, char *err,
                     size_t errlen);

/* ---- the three kinds: each fills *out (kind, start, cancel, destroy, ud) ------------------ */

/* exec: argv[0..argc) (argv[0] an absolute path; copied). timeout_ms 0 means the job's own.
 * kill_grace_ms: time between SIGTERM and SIGKILL (0 means SP_EXEC_KILL_GRACE_MS). Sets SIGPIPE
 * to ignored when it is at its default, so that a child that exits without reading its input
 * cannot kill the process. Returns 0, SP_EINVAL (message in err) or SP_ENOMEM. */
int sp_handler_exec_new(const char *const *argv, size_t argc, uint32_t timeout_ms,
                        uint32_t kill_grace_ms, sp_handler_t *out, char *err, size_t errlen);

/* http: POSTs the job record to url ("http://host:port/path", copied) with a client on loop.
 * Returns 0, SP_EINVAL (message in err) or SP_ENOMEM. */
int sp_handler_http_new(uv_loop_t *loop, const char *url, uint32_t timeout_ms, sp_handler_t *out,
                        char *err, size_t errlen);

/* The C function a lib handler calls, on a thread of libuv's pool: job_json[0..len) is the job
 * record (NUL-terminated too). Returns 0 for success with *result a malloc'd JSON text or
 * plain text (or NULL for null); else failure with *error a malloc'd message (or NULL). The
 * worker frees both with free(). */
typedef int (*sp_lib_fn)(const char *job_json, size_t len, char **result, char **error);

/* lib: dlopen(path, RTLD_NOW) and dlsym(symbol), once. Returns 0, SP_EINVAL (with a message
 * that names the library and the symbol) or SP_ENOMEM. */
int sp_handler_lib_new(const char *path, const char *symbol, uint32_t timeout_ms, sp_handler_t *out,
                       char *err, size_t errlen);

/* ---- shared by the handlers ------------------------------------------------------------- */

/* Appends the job record a handler hands over:
 * {"id":"42","queue":..,"type":..,"payload":<raw>,"attempts":N,"max_attempts":N,
 *  "timeout_ms":N}. */
void sp_handler_job_json(sp_buf_t *b, const sp_hjob_t *job);

/* The time a run may take: the handler's own timeout when set, else the job's (else the
 * default job timeout). */
uint32_t sp_handler_timeout(uint32_t handler_timeout_ms, const sp_hjob_t *job);

/* Turns output text into a result: the JSON value when text[0..len) parses as JSON (surrounding
 * whitespace dropped), "null" when it is empty, else a JSON string of the text (one trailing
 * newline dropped, invalid UTF-8 bytes replaced by U+FFFD). Writes into b (reset first). */
void sp_handler_result(sp_buf_t *b, const char *text, size_t len);

/* Appends text as plain UTF-8, invalid bytes replaced by U+FFFD and trailing whitespace
 * dropped: for error messages built from a program's output. */
void sp_handler_text(sp_buf_t *b, const char *text, size_t len);

#endif
