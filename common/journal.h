/*
 * journal.h - the memory backend's durability (--data-dir): an append-only log of state
 * changes written in groups on libuv's thread pool, snapshots with log compaction in the
 * background, replay on start, and the directory lock.
 *
 * What is logged is the resulting state, not the operation: after a change the job's full record
 * (an "upsert"), or a "forget" when it is gone, and a queue's pause flag and totals. Replaying is
 * then idempotent and order-insensitive per object (the last record wins), which is what lets a
 * snapshot be written while the engine keeps changing.
 *
 * Files in the directory: LOCK (flock, held while open), snapshot-N.snap (the state before
 * journal-N.log), journal-N.log, journal-N+1.log, ... Every record is framed as
 * [u32 length][u32 CRC32C of the body][body], little-endian.
 */
#ifndef SP_JOURNAL_H
#define SP_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "engine.h"

typedef struct sp_journal sp_journal_t;

typedef struct {
    const char *dir;
    /* true (--fsync always): a change is answered once its group is on disk. false (--fsync
     * interval): answered at once, written and synced every interval_ms; a crash can lose the
     * last interval. */
    bool fsync_always;
    int64_t interval_ms;     /* default 10 */
    uint64_t compact_min;    /* a segment past max(this, the last snapshot) and half superseded
                              * records is compacted; 64 MiB */
    const char *truncate_at; /* "journal-N.log:OFFSET": the way out of a corrupt record */
    /* Called when writes succeed again after failing (the disk has room again); may be NULL. */
    void (*on_writable)(void *ud);
    void *ud;
} sp_journal_opts_t;

void sp_journal_opts_default(sp_journal_opts_t *o);

/* Locks the directory (creating it if needed), loads the newest snapshot and replays the logs
 * after it into `e` (which must be new and empty), truncating a torn last record, then opens a
 * new log segment. Returns 0, or -1 with a message in err naming the file (and offset) at fault:
 * a directory in use by another server, a corrupt record, an I/O error. */
int sp_journal_open(uv_loop_t *loop, const sp_journal_opts_t *o, sp_engine_t *e, sp_journal_t **out,
                    char *err, size_t errlen);

/* Notes that a job changed (or went away) and that a queue's flag or totals changed; the
 * resulting state is written with the loop turn's group. */
void sp_journal_job(sp_journal_t *j, uint64_t id);
void sp_journal_queue(sp_journal_t *j, const sp_equeue_t *q);

/* Whether answers must wait for the disk (--fsync always). */
bool sp_journal_waits(const sp_journal_t *j);

/* 0 while writes succeed; SP_EUNAVAIL while the last write failed (disk full, I/O error), with
 * *why saying so. Changes are refused meanwhile; the write is retried until it succeeds. */
int sp_journal_status(const sp_journal_t *j, const char **why);

/* Calls fn(arg, 0, NULL) once every change noted so far is on disk, or fn(arg, SP_EUNAVAIL, why)
 * when the write holding them failed (the changes stay in memory and are written when the disk
 * takes them). At once when nothing is pending. */
void sp_journal_after(sp_journal_t *j, void (*fn)(void *arg, int status, const char *why),
                      void *arg);

/* Writes what is pending, waits for background work, releases the lock and frees the journal,
 * then calls done(ud) (on a later loop turn, or at once when nothing runs). */
void sp_journal_close(sp_journal_t *j, void (*done)(void *ud), void *ud);

/* Starts a snapshot and compaction now (tests; also done on its own as the log grows). Returns
 * false when one is already running. */
bool sp_journal_compact(sp_journal_t *j);
/* Whether a snapshot is being written. */
bool sp_journal_compacting(const sp_journal_t *j);

/* ---- records, for tests and tools ------------------------------------------------------- */

/* CRC32C (Castagnoli), as used by iSCSI and ext4: crc of the empty string is 0. */
uint32_t sp_crc32c(uint32_t crc, const void *data, size_t len);

typedef enum {
    SP_JREC_JOB = 1,    /* a job's full record */
    SP_JREC_FORGET = 2, /* a job is gone */
    SP_JREC_QUEUE = 3,  /* a queue's pause flag and totals */
    SP_JREC_NEXTID = 4, /* the next job id */
    SP_JREC_END = 5,    /* the end of a complete snapshot */
    SP_JREC_GROUP = 6,  /* a log write's header: the length and CRC32C of the records after it */
} sp_jrec_type_t;

/* The framed size of an SP_JREC_GROUP record. */
#define SP_JREC_GROUP_SIZE 21

/* One decoded record; pointers point into the bytes it was decoded from. */
typedef struct {
    sp_jrec_type_t type;
    sp_jobrec_t job;        /* SP_JREC_JOB */
    uint64_t id;            /* SP_JREC_FORGET, SP_JREC_NEXTID */
    sp_queue_stats_t queue; /* SP_JREC_QUEUE: name, paused and totals */
    uint64_t group_len;     /* SP_JREC_GROUP: bytes of records that follow in the same write */
    uint32_t group_crc;     /* SP_JREC_GROUP: their CRC32C */
} sp_jrec_t;

/* Appends one framed record. */
void sp_jrec_put_job(sp_buf_t *b, const sp_jobrec_t *job);
void sp_jrec_put_forget(sp_buf_t *b, uint64_t id);
void sp_jrec_put_queue(sp_buf_t *b, const sp_queue_stats_t *q);
void sp_jrec_put_u64(sp_buf_t *b, sp_jrec_type_t type, uint64_t v);
/* Writes the SP_JREC_GROUP record for the `len` bytes at `data` into out[SP_JREC_GROUP_SIZE]. */
void sp_jrec_group(unsigned char *out, const void *data, size_t len);

/* Decodes the framed record at p[0..len). Returns its framed size (> 0); 0 when the bytes end
 * before the record does (a torn tail); -1 when the CRC or the body is wrong. */
long long sp_jrec_get(const void *p, size_t len, sp_jrec_t *out);

/* Applies a decoded record to an engine (as replay does). 0, or an SP_E* code. */
int sp_jrec_apply(sp_engine_t *e, int64_t now, const sp_jrec_t *r);

#endif
