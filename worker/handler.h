/*
 * handler.h - how a job becomes work: the interface between the worker pool and the code that
 * runs a job, the table that maps job types to handlers, and the four built-in handlers
 * (noop, echo, sleep, fail; in handler_builtin.c).
 *
 * The pool copies a leased job into an sp_hjob_t that it owns and calls the handler's start.
 * The handler reports the outcome exactly once through the `done` function it was given,
 * either before start returns (noop, echo) or from a later libuv callback (sleep, and later
 * exec, http and lib handlers). It never blocks the loop.
 */
#ifndef SP_HANDLER_H
#define SP_HANDLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct sp_hjob sp_hjob_t;
typedef struct sp_handler sp_handler_t;

/* Reports a job's outcome. ok: `text` is the result as JSON text (NULL means null); not ok:
 * `text` is the error as plain text (NULL means "failed") and `retry` says whether another
 * attempt may help. The text is copied before done returns. After done the handler must not
 * touch the job again. */
typedef void (*sp_handler_done_fn)(sp_hjob_t *job, bool ok, const char *text, size_t len,
                                   bool retry);

/* A running job as a handler sees it. Owned by the pool; every field is valid from start until
 * the handler calls done. Strings are NUL-terminated copies (valid JSON holds no raw NUL byte,
 * so a payload can be handed to C string functions as is). */
struct sp_hjob {
    uv_loop_t *loop;
    uint64_t id;
    uint64_t lease;
    const char *queue;
    size_t queue_len;
    const char *type;
    size_t type_len;
    const char *payload; /* raw JSON text */
    size_t payload_len;
    uint32_t attempts; /* this attempt's number, from 1 */
    uint32_t max_attempts;
    uint32_t timeout_ms;
    void *hstate; /* the handler's own state for this run; NULL at start */
};

struct sp_handler {
    const char *kind; /* "builtin", "exec", "http", "lib": for logs */
    /* Runs the job; calls done exactly once, possibly before returning. */
    void (*start)(const sp_handler_t *h, sp_hjob_t *job, sp_handler_done_fn done);
    /* Asks a job that has not called done yet to stop. The handler still calls done exactly
     * once (inside cancel or later), after its work has stopped and nothing of it refers to
     * the job any more; the outcome it reports is then ignored. NULL for handlers that always
     * finish inside start. */
    void (*cancel)(const sp_handler_t *h, sp_hjob_t *job);
    /* Frees what `ud` holds when the table is freed; may be NULL. */
    void (*destroy)(sp_handler_t *h);
    void *ud; /* the handler's configuration (argv, URL, library) */
};

/* The built-in handler for a type (noop, echo, sleep, fail), or NULL. */
const sp_handler_t *sp_handler_builtin(const char *type, size_t len);

/* A table of handlers by job type, as a handlers file describes them. */
typedef struct sp_handlers sp_handlers_t;

/* Returns NULL on allocation failure. */
sp_handlers_t *sp_handlers_new(void);
/* Calls each handler's destroy, then frees the table. NULL is allowed. */
void sp_handlers_free(sp_handlers_t *hs);
/* Maps `type` to a copy of *h (the table then owns h->ud through h->destroy). Returns 0,
 * SP_EINVAL when the type is not a valid name, is a built-in one, or is already mapped, or
 * SP_ENOMEM. */
int sp_handlers_add(sp_handlers_t *hs, const char *type, size_t len, const sp_handler_t *h);
/* The handler for a type: a built-in one first, then the table (hs may be NULL). NULL when no
 * handler knows the type. The pointer stays valid until the table is changed or freed. */
const sp_handler_t *sp_handlers_find(const sp_handlers_t *hs, const char *type, size_t len);

#endif
