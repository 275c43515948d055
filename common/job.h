/*
 * job.h - the job model at the edges: validating a submission against every rule of API.md,
 * and writing a job record as JSON.
 *
 * A submission is validated into an sp_job_spec_t whose payload is a span of the request body
 * (the client's exact JSON text); nothing is copied until the backend stores it. A job record to
 * be shown (sp_jobrec_t) is a flat read-only view that any backend can fill.
 */
#ifndef SP_JOB_H
#define SP_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "json.h"
#include "sp.h"

#define SP_IDEM_KEY_MAX 256
#define SP_WORKER_MAX 256

/* Defaults and limits of a submission (API.md). */
#define SP_DEFAULT_PRIORITY 5
#define SP_DEFAULT_MAX_ATTEMPTS 3
#define SP_DEFAULT_TIMEOUT_MS 30000
#define SP_DEFAULT_BACKOFF_MS 1000
#define SP_MAX_ATTEMPTS_LIMIT 1000
#define SP_TIMEOUT_MS_MIN 100
#define SP_TIMEOUT_MS_MAX 86400000
#define SP_BACKOFF_MS_MAX 86400000
#define SP_DELAY_MS_MAX 31536000000LL /* a year */

/* A validated submission. */
typedef struct {
    char type[SP_NAME_MAX + 1]; /* NUL-terminated */
    size_t type_len;
    const char *payload; /* span of the caller's request body; "null" when absent */
    size_t payload_len;
    int priority;      /* 0-9 */
    int64_t run_at;    /* absolute ms; == now when neither delay_ms nor run_at was given */
    bool delayed;      /* run_at > now at validation time */
    int64_t parsed_at; /* that `now`: a backend with its own clock keeps run_at - parsed_at */
    bool run_at_given; /* run_at came from the client's run_at (else from delay_ms or now) */
    uint32_t max_attempts;
    uint32_t timeout_ms;
    uint32_t backoff_ms;
    bool has_idem_key;
    char idem_key[SP_IDEM_KEY_MAX]; /* may contain any bytes, NUL included */
    size_t idem_key_len;
} sp_job_spec_t;

/* Validates one submission object `obj` (already checked by sp_json_parse) into *out.
 * `now` is the current time in ms. `prefix` is prepended to every field name in error messages
 * ("" for a single job, "jobs[3]." in a batch). Checks: unknown fields, duplicate keys, types
 * and ranges of every field, `delay_ms` and `run_at` not both, `null` meaning the default.
 * Returns 0, or SP_EINVAL with a message in err such as
 * "priority: must be an integer from 0 to 9" or "unknown field 'priorty'". */
int sp_job_spec_parse(sp_json_val_t obj, int64_t now, const char *prefix, sp_job_spec_t *out,
                      char *err, size_t errlen);

/* Applies an Idempotency-Key header to a spec: sets the key when the body had none; when the
 * body had a different one, returns SP_EINVAL with a message. An empty header is SP_EINVAL. */
int sp_job_spec_set_header_key(sp_job_spec_t *spec, const char *key, size_t len, char *err,
                               size_t errlen);

/* A job as shown to clients, filled by a backend. Pointers are valid only for the duration of
 * the callback that hands the record out. A time of -1 and a NULL string mean JSON null. */
typedef struct {
    uint64_t id;
    const char *queue;
    size_t queue_len;
    const char *type;
    size_t type_len;
    const char *payload; /* raw JSON text */
    size_t payload_len;
    sp_state_t state;
    int priority;
    uint32_t attempts;
    uint32_t max_attempts;
    uint32_t timeout_ms;
    uint32_t backoff_ms;
    int64_t created_at;
    int64_t run_at;
    int64_t started_at;
    int64_t finished_at;
    int64_t lease_expires_at;
    const char *result; /* raw JSON text, or NULL */
    size_t result_len;
    const char *last_error; /* plain text, or NULL */
    size_t last_error_len;
    const char *worker; /* plain text, or NULL */
    size_t worker_len;
    const char *idem_key; /* plain bytes, or NULL */
    size_t idem_key_len;
    bool cancel_requested;
    uint64_t lease; /* the current lease token while running, else 0 */
} sp_jobrec_t;

/* Writes the full job record as one JSON object:
 * {"id":"42","queue":..,"type":..,"payload":<raw>,"state":..,"priority":..,"attempts":..,
 *  "max_attempts":..,"timeout_ms":..,"backoff_ms":..,"idempotency_key":..|null,
 *  "created_at":..,"run_at":..,"started_at":..|null,"finished_at":..|null,
 *  "lease_expires_at":..|null,"cancel_requested":bool,"result":<raw>|null,
 *  "last_error":..|null,"worker":..|null}
 * Ids and lease tokens are written as JSON strings of their decimal value. */
void sp_job_write_json(sp_buf_t *b, const sp_jobrec_t *job);

/* Writes what a worker needs for a leased job:
 * {"id","queue","type","payload","attempts","max_attempts","timeout_ms","lease","lease_expires_at"}
 */
void sp_job_write_lease_json(sp_buf_t *b, const sp_jobrec_t *job);

/* Parses an id or lease token given as a JSON string of decimal digits or a JSON integer
 * (clients echo back what they were given). Returns 0, or SP_EINVAL. */
int sp_job_parse_id_json(sp_json_val_t v, uint64_t *out);
/* Parses an id or token from text (a path segment): 1-20 decimal digits, no sign. */
int sp_job_parse_id(const char *s, size_t len, uint64_t *out);

/* A lease request. queues == NULL means every queue (in the order queues were first seen). */
typedef struct {
    const char *const *queues; /* names, each queue_lens[i] bytes */
    const size_t *queue_lens;
    size_t nqueues;
    size_t max;         /* 1-1000 */
    const char *worker; /* stored in the job record; copied */
    size_t worker_len;
} sp_lease_req_t;

/* One queue as GET /v1/queues shows it. */
typedef struct {
    const char *name;
    size_t name_len;
    bool paused;
    uint64_t counts[SP_STATE_COUNT];
    int64_t oldest_queued_age_ms;                  /* 0 when nothing is queued */
    uint64_t enqueued, succeeded, failed, retried; /* totals since first seen */
    uint64_t leased, canceled;                     /* further totals, for metrics */
} sp_queue_stats_t;

#endif
