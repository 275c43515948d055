/*
 * sp.h - what every Spool module shares: the version, the error codes, the job states, the
 * clock, and small helpers that have no better home.
 *
 * Functions across Spool return 0 on success or a negative SP_E* code (like libuv); details go
 * to an out-parameter or to the log, never to errno.
 */
#ifndef SP_SP_H
#define SP_SP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SP_VERSION "0.1.0"

enum {
    SP_OK = 0,
    SP_ENOMEM = -1,    /* allocation failed */
    SP_EINVAL = -2,    /* invalid argument or input (400) */
    SP_ENOTFOUND = -3, /* unknown job or queue (404) */
    SP_ECONFLICT = -4, /* the job's state or lease forbids the action (409) */
    SP_EFULL = -5,     /* the queue is at its maximum depth (429) */
    SP_EUNAVAIL = -6,  /* backend unreachable or shutting down (503) */
    SP_ETOOBIG = -7,   /* over a size or count limit (413) */
    SP_EIO = -8,       /* an I/O error */
};

/* A short English text for an SP_E* code ("not found"); never NULL. */
const char *sp_strerror(int err);

/* A job's state. The order matters: the first three are unfinished. */
typedef enum {
    SP_STATE_SCHEDULED = 0,
    SP_STATE_QUEUED,
    SP_STATE_RUNNING,
    SP_STATE_SUCCEEDED,
    SP_STATE_FAILED,
    SP_STATE_CANCELED,
} sp_state_t;

#define SP_STATE_COUNT 6

/* "scheduled", "queued", ...; never NULL for a valid state. */
const char *sp_state_name(sp_state_t s);
/* Parses a state name of `len` bytes; returns 0 and sets *out, or SP_EINVAL. */
int sp_state_parse(const char *name, size_t len, sp_state_t *out);
static inline bool sp_state_finished(sp_state_t s)
{
    return s >= SP_STATE_SUCCEEDED;
}

/* Wall-clock milliseconds since the Unix epoch. */
int64_t sp_now_ms(void);

/* Queue names and job types: 1-128 bytes of [A-Za-z0-9._:-]. */
#define SP_NAME_MAX 128
bool sp_name_valid(const char *s, size_t len);

#define SP_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define SP_MIN(a, b) ((a) < (b) ? (a) : (b))
#define SP_MAX(a, b) ((a) > (b) ? (a) : (b))
#define sp_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#endif
