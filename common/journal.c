/*
 * journal.c - the memory backend's journal (see journal.h): record encoding with CRC32C, group
 * commit on libuv's thread pool, snapshots and compaction in the background, replay on start.
 *
 * One loop thread owns the journal. A loop turn's changes are noted as job ids and queues; at
 * the end of the turn (a uv_check) their resulting state is encoded into one buffer, and one
 * pwrite + fdatasync of that buffer runs on the thread pool while the loop serves on. The next
 * group forms while one syncs and starts when it is done, so under load every fsync carries
 * many answers (MAX_INFLIGHT groups may be in flight, answered strictly in order). A failed
 * group, and any after it, are rewritten from the last durable offset.
 *
 * A snapshot is written without stopping the loop: the log is first switched to a new segment,
 * then the engine's jobs are encoded a chunk per step on the loop and written on the thread
 * pool. Jobs that change during the snapshot also land in the new segment, after the snapshot
 * in replay order, and replay keeps the last record of each object, so the mix is exact.
 */
#include "journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define HDR 8
#define REC_MAX ((uint32_t)1 << 31)
#define SNAP_CHUNK 16384
#define RETRY_MS 200
/* Log segments are filled with zeros ahead of the writes: an fdatasync of blocks that already
 * exist need not commit a new file size, which makes it markedly faster. Replay reads zeros
 * after the last record as the end. */
#define PREALLOC ((int64_t)8 << 20)
#define PATH_CAP 4096
#define DIR_CAP (PATH_CAP - 320)

/* ---- CRC32C ------------------------------------------------------------------------------ */

static uint32_t crc_tab[8][256];
static uv_once_t crc_once = UV_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
        crc_tab[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_tab[t][i] = (crc_tab[t - 1][i] >> 8) ^ crc_tab[0][crc_tab[t - 1][i] & 0xff];
}

/* Slicing-by-8: eight table look-ups per 8 bytes, fast enough that loading a large snapshot is
 * bound by memory, not by the checksum. */
uint32_t sp_crc32c(uint32_t crc, const void *data, size_t len)
{
    uv_once(&crc_once, crc_init);
    const unsigned char *p = data;
    crc = ~crc;
    while (len >= 8) {
        uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                             (uint32_t)p[3] << 24);
        crc = crc_tab[7][lo & 0xff] ^ crc_tab[6][(lo >> 8) & 0xff] ^ crc_tab[5][(lo >> 16) & 0xff] ^
              crc_tab[4][lo >> 24] ^ crc_tab[3][p[4]] ^ crc_tab[2][p[5]] ^ crc_tab[1][p[6]] ^
              crc_tab[0][p[7]];
        p += 8;
        len -= 8;
    }
    while (len--) crc = (crc >> 8) ^ crc_tab[0][(crc ^ *p++) & 0xff];
    return ~crc;
}

/* ---- encoding ----------------------------------------------------------------------------- */

static char *put_u32(char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (char)(v >> (8 * i));
    return p + 4;
}

static char *put_u64(char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (char)(v >> (8 * i));
    return p + 8;
}

static char *put_str(char *p, const char *s, size_t n)
{
    p = put_u32(p, (uint32_t)n);
    if (n) memcpy(p, s, n);
    return p + n;
}

/* Reserves a frame of body size n in b and returns where the body goes, or NULL (b->oom set). */
static char *frame_begin(sp_buf_t *b, size_t n)
{
    if (n > REC_MAX || !sp_buf_reserve(b, HDR + n + 1)) {
        b->oom = true;
        return NULL;
    }
    return b->data + b->len + HDR;
}

static void frame_end(sp_buf_t *b, size_t n)
{
    char *h = b->data + b->len;
    put_u32(h, (uint32_t)n);
    put_u32(h + 4, sp_crc32c(0, h + HDR, n));
    b->len += HDR + n;
    b->data[b->len] = '\0';
}

enum { F_CANCEL = 1, F_RESULT = 2, F_ERROR = 4, F_WORKER = 8, F_KEY = 16 };

void sp_jrec_put_job(sp_buf_t *b, const sp_jobrec_t *r)
{
    size_t n = 1 + 8 * 7 + 4 * 4 + 3 + 4 * 3 + r->queue_len + r->type_len + r->payload_len;
    unsigned flags = r->cancel_requested ? F_CANCEL : 0;
    if (r->result) flags |= F_RESULT, n += 4 + r->result_len;
    if (r->last_error) flags |= F_ERROR, n += 4 + r->last_error_len;
    if (r->worker) flags |= F_WORKER, n += 4 + r->worker_len;
    if (r->idem_key) flags |= F_KEY, n += 4 + r->idem_key_len;
    char *p = frame_begin(b, n);
    if (!p) return;
    *p++ = SP_JREC_JOB;
    p = put_u64(p, r->id);
    p = put_u64(p, r->lease);
    p = put_u64(p, (uint64_t)r->created_at);
    p = put_u64(p, (uint64_t)r->run_at);
    p = put_u64(p, (uint64_t)r->started_at);
    p = put_u64(p, (uint64_t)r->finished_at);
    p = put_u64(p, (uint64_t)r->lease_expires_at);
    p = put_u32(p, r->attempts);
    p = put_u32(p, r->max_attempts);
    p = put_u32(p, r->timeout_ms);
    p = put_u32(p, r->backoff_ms);
    *p++ = (char)r->state;
    *p++ = (char)r->priority;
    *p++ = (char)flags;
    p = put_str(p, r->queue, r->queue_len);
    p = put_str(p, r->type, r->type_len);
    p = put_str(p, r->payload, r->payload_len);
    if (r->result) p = put_str(p, r->result, r->result_len);
    if (r->last_error) p = put_str(p, r->last_error, r->last_error_len);
    if (r->worker) p = put_str(p, r->worker, r->worker_len);
    if (r->idem_key) p = put_str(p, r->idem_key, r->idem_key_len);
    frame_end(b, n);
}

void sp_jrec_put_u64(sp_buf_t *b, sp_jrec_type_t type, uint64_t v)
{
    char *p = frame_begin(b, 9);
    if (!p) return;
    *p++ = (char)type;
    put_u64(p, v);
    frame_end(b, 9);
}

void sp_jrec_group(unsigned char *out, const void *data, size_t len)
{
    char *p = (char *)out + HDR;
    *p++ = (char)SP_JREC_GROUP;
    p = put_u64(p, (uint64_t)len);
    put_u32(p, sp_crc32c(0, data, len));
    put_u32((char *)out, SP_JREC_GROUP_SIZE - HDR);
    put_u32((char *)out + 4, sp_crc32c(0, out + HDR, SP_JREC_GROUP_SIZE - HDR));
}

void sp_jrec_put_forget(sp_buf_t *b, uint64_t id)
{
    sp_jrec_put_u64(b, SP_JREC_FORGET, id);
}

void sp_jrec_put_queue(sp_buf_t *b, const sp_queue_stats_t *q)
{
    size_t n = 1 + 1 + 8 * 6 + 4 + q->name_len;
    char *p = frame_begin(b, n);
    if (!p) return;
    *p++ = SP_JREC_QUEUE;
    *p++ = (char)q->paused;
    p = put_u64(p, q->enqueued);
    p = put_u64(p, q->succeeded);
    p = put_u64(p, q->failed);
    p = put_u64(p, q->retried);
    p = put_u64(p, q->leased);
    p = put_u64(p, q->canceled);
    put_str(p, q->name, q->name_len);
    frame_end(b, n);
}

/* ---- decoding ----------------------------------------------------------------------------- */

typedef struct {
    const unsigned char *p, *end;
    bool bad;
} rd_t;

static uint64_t get_u64(rd_t *r)
{
    if (r->end - r->p < 8) {
        r->bad = true;
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)r->p[i] << (8 * i);
    r->p += 8;
    return v;
}

static uint32_t get_u32(rd_t *r)
{
    if (r->end - r->p < 4) {
        r->bad = true;
        return 0;
    }
    uint32_t v = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 |
                 (uint32_t)r->p[3] << 24;
    r->p += 4;
    return v;
}

static uint8_t get_u8(rd_t *r)
{
    if (r->p >= r->end) {
        r->bad = true;
        return 0;
    }
    return *r->p++;
}

static const char *get_str(rd_t *r, size_t *len)
{
    uint32_t n = get_u32(r);
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = true;
        *len = 0;
        return NULL;
    }
    const char *s = (const char *)r->p;
    r->p += n;
    *len = n;
    return s;
}

static int decode_job(rd_t *r, sp_jobrec_t *j)
{
    memset(j, 0, sizeof(*j));
    j->id = get_u64(r);
    j->lease = get_u64(r);
    j->created_at = (int64_t)get_u64(r);
    j->run_at = (int64_t)get_u64(r);
    j->started_at = (int64_t)get_u64(r);
    j->finished_at = (int64_t)get_u64(r);
    j->lease_expires_at = (int64_t)get_u64(r);
    j->attempts = get_u32(r);
    j->max_attempts = get_u32(r);
    j->timeout_ms = get_u32(r);
    j->backoff_ms = get_u32(r);
    uint8_t state = get_u8(r);
    j->priority = get_u8(r);
    uint8_t flags = get_u8(r);
    if (state >= SP_STATE_COUNT) return -1;
    j->state = (sp_state_t)state;
    j->cancel_requested = flags & F_CANCEL;
    j->queue = get_str(r, &j->queue_len);
    j->type = get_str(r, &j->type_len);
    j->payload = get_str(r, &j->payload_len);
    if (flags & F_RESULT) j->result = get_str(r, &j->result_len);
    if (flags & F_ERROR) j->last_error = get_str(r, &j->last_error_len);
    if (flags & F_WORKER) j->worker = get_str(r, &j->worker_len);
    if (flags & F_KEY) j->idem_key = get_str(r, &j->idem_key_len);
    return r->bad ? -1 : 0;
}

long long sp_jrec_get(const void *data, size_t len, sp_jrec_t *out)
{
    const unsigned char *p = data;
    if (len < HDR) return 0;
    uint32_t n = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    uint32_t crc =
        (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
    if (n == 0 || n > REC_MAX) return -1;
    if (len - HDR < n) return 0;
    if (sp_crc32c(0, p + HDR, n) != crc) return -1;
    rd_t r = {p + HDR, p + HDR + n, false};
    memset(out, 0, sizeof(*out));
    uint8_t type = get_u8(&r);
    out->type = (sp_jrec_type_t)type;
    switch (type) {
    case SP_JREC_JOB:
        if (decode_job(&r, &out->job)) return -1;
        break;
    case SP_JREC_FORGET:
    case SP_JREC_NEXTID:
    case SP_JREC_END:
        out->id = get_u64(&r);
        break;
    case SP_JREC_GROUP:
        out->group_len = get_u64(&r);
        out->group_crc = get_u32(&r);
        break;
    case SP_JREC_QUEUE:
        out->queue.paused = get_u8(&r) != 0;
        out->queue.enqueued = get_u64(&r);
        out->queue.succeeded = get_u64(&r);
        out->queue.failed = get_u64(&r);
        out->queue.retried = get_u64(&r);
        out->queue.leased = get_u64(&r);
        out->queue.canceled = get_u64(&r);
        out->queue.name = get_str(&r, &out->queue.name_len);
        break;
    default:
        return -1;
    }
    if (r.bad || r.p != r.end) return -1;
    return (long long)(HDR + n);
}

int sp_jrec_apply(sp_engine_t *e, int64_t now, const sp_jrec_t *r)
{
    switch (r->type) {
    case SP_JREC_JOB:
        return sp_engine_restore(e, now, &r->job);
    case SP_JREC_FORGET:
        sp_engine_forget(e, r->id);
        if (r->id < UINT64_MAX) sp_engine_set_next_id(e, r->id + 1);
        return 0;
    case SP_JREC_QUEUE:
        return sp_engine_queue_restore(e, &r->queue);
    case SP_JREC_NEXTID:
        sp_engine_set_next_id(e, r->id);
        return 0;
    case SP_JREC_END:
    case SP_JREC_GROUP:
        return 0;
    }
    return SP_EINVAL;
}

/* ---- the journal ------------------------------------------------------------------------- */

typedef struct waiter {
    struct waiter *next;
    void (*fn)(void *arg, int status, const char *why);
    void *arg;
} waiter_t;

typedef struct {
    waiter_t *head, **tail;
} wlist_t;

/* One write on the thread pool: the log group, or a snapshot chunk (and its completion). */
typedef struct {
    uv_work_t req;
    sp_journal_t *j;
    int fd;
    int64_t off;
    const char *data;
    size_t len;
    bool sync;       /* fdatasync after writing */
    bool sync_dir;   /* the file is new: sync the directory too */
    int64_t *zeroed; /* log writes: how far the segment is filled with zeros */
    bool finish;     /* snapshot: close, rename into place, drop the old files */
    int err;         /* errno, 0 on success */
} wjob_t;

/* Groups written at once. One: on a 2-core machine with the server pinned to one core, two in
 * flight made smaller groups, more fsyncs and thread switches, and 12 % fewer durable submits
 * (bench/run.sh durable). With one, a write starts only once the one before it is synced, which
 * replay relies on: a whole group after damage proves the damaged bytes were synced. */
#define MAX_INFLIGHT 1

typedef struct {
    wjob_t w;
    sp_buf_t buf;
    wlist_t waiters;
    bool done;
} group_t;

typedef struct {
    bool active;
    bool aborting;
    bool working;
    uint64_t seq;
    int fd;
    int64_t off;
    size_t qi;
    uint64_t after;
    size_t njobs;
    uint64_t started_ms;
    sp_buf_t buf;
    sp_ejob_t **jobs;
    wjob_t w;
} snap_t;

struct sp_journal {
    uv_loop_t *loop;
    sp_engine_t *e;
    sp_journal_opts_t o;
    char dir[DIR_CAP];
    int lock_fd;
    int dir_fd;
    /* the current log segment */
    uint64_t seg_seq;
    int seg_fd;
    int64_t seg_off;
    bool seg_new;               /* created and not yet synced into the directory */
    int64_t seg_zeroed;         /* the file's size, zeros past seg_off (the writing thread's) */
    int64_t seg_zeroed_planned; /* the loop's view: how far the fill will have gone */
    bool filling; /* a group that extends the segment with zeros is in flight: no other starts,
                   * or its data could land where the fill's zeros are still being written */
    /* what the current turn changed */
    uint64_t *ids;
    size_t nids, cap_ids;
    const sp_equeue_t **qs;
    size_t nqs, cap_qs;
    wlist_t open;  /* waiting for the next group */
    sp_buf_t gbuf; /* the next group being formed, or what failed writes leave to retry */
    sp_buf_t rbuf; /* failed groups, in order, while later ones are still in flight */
    /* Groups being written, oldest first: a new group starts while the previous one is still
     * syncing, and groups are answered strictly in order. */
    group_t groups[MAX_INFLIGHT];
    size_t ghead, nflight;
    int64_t sent_off; /* seg_off plus what is in flight */
    int broken;       /* an earlier group in this flight failed: the later ones count as failed */
    bool writing;     /* nflight > 0 */
    int failing;      /* errno of the last failed write, 0 when writes succeed */
    char why[256];
    uint64_t failed_writes;
    /* loop handles */
    uv_check_t check;
    uv_idle_t idle;   /* keeps the poll from blocking while a group waits for the check */
    uv_timer_t timer; /* --fsync interval, and retries after a failed write */
    bool kicked;
    bool timer_on;
    int open_handles;
    /* snapshots */
    snap_t snap;
    bool rotate_pending;
    bool lost_notes; /* a change could not be noted: only a snapshot has it */
    uint64_t last_snap_bytes;
    /* How much of the current segment later records superseded (a job's older states, jobs
     * since forgotten), estimated as a job record's average size per superseding record. */
    uint64_t dead_bytes;
    uint64_t job_rec_bytes, job_recs; /* for that average, over the segment */
    uint64_t max_id_logged;           /* a record of a job at or below it supersedes one */
    /* closing */
    bool closing;
    bool finished; /* closing: the handles are being closed */
    void (*done)(void *ud);
    void *done_ud;
};

static void path_of(const sp_journal_t *j, char *out, size_t cap, const char *kind, uint64_t seq,
                    const char *ext)
{
    snprintf(out, cap, "%s/%s-%012" PRIu64 ".%s", j->dir, kind, seq, ext);
}

/* The sequence number of a file that path_of named KIND-SEQ.EXT (SEQ zero-padded to 12 digits);
 * false for any other name, such as a file an operator left in the directory. */
static bool name_seq(const char *name, const char *kind, const char *ext, uint64_t *seq)
{
    size_t kl = strlen(kind), n = 0;
    if (strncmp(name, kind, kl) != 0 || name[kl] != '-') return false;
    const char *p = name + kl + 1;
    uint64_t v = 0;
    for (; p[n] >= '0' && p[n] <= '9' && n < 19; n++) v = v * 10 + (uint64_t)(p[n] - '0');
    if (n < 12 || p[n] != '.' || strcmp(p + n + 1, ext) != 0) return false;
    *seq = v;
    return true;
}

static void wl_init(wlist_t *l)
{
    l->head = NULL;
    l->tail = &l->head;
}

static void wl_push(wlist_t *l, waiter_t *w)
{
    w->next = NULL;
    *l->tail = w;
    l->tail = &w->next;
}

static void wl_append(wlist_t *dst, wlist_t *src)
{
    if (!src->head) return;
    *dst->tail = src->head;
    dst->tail = src->tail;
    wl_init(src);
}

static void wl_call(wlist_t *l, int status, const char *why)
{
    waiter_t *w = l->head;
    wl_init(l);
    while (w) {
        waiter_t *next = w->next;
        void (*fn)(void *, int, const char *) = w->fn;
        void *arg = w->arg;
        free(w);
        fn(arg, status, why);
        w = next;
    }
}

void sp_journal_opts_default(sp_journal_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->fsync_always = true;
    o->interval_ms = 10;
    o->compact_min = 64u << 20;
}

bool sp_journal_waits(const sp_journal_t *j)
{
    return j->o.fsync_always;
}

int sp_journal_status(const sp_journal_t *j, const char **why)
{
    if (!j->failing) return 0;
    if (why) *why = j->why;
    return SP_EUNAVAIL;
}

bool sp_journal_compacting(const sp_journal_t *j)
{
    return j->snap.active || j->rotate_pending;
}

/* ---- writing ------------------------------------------------------------------------------ */

static int write_all(int fd, const char *p, size_t len, int64_t off)
{
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (n == 0) return EIO;
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return errno;
    int rc = fsync(fd) == 0 ? 0 : errno;
    close(fd);
    return rc;
}

/* Drops logs and snapshots older than snapshot `seq` once it is in place. */
static void drop_old_files(const char *dir, uint64_t seq)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    char path[PATH_CAP];
    while ((de = readdir(d))) {
        uint64_t s;
        bool old = (name_seq(de->d_name, "journal", "log", &s) && s < seq) ||
                   (name_seq(de->d_name, "snapshot", "snap", &s) && s < seq);
        if (!old) continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        unlink(path);
    }
    closedir(d);
}

/* Extends a segment with zeros past what this write needs. Best effort: short of space the
 * extension is taken back and the write extends the file itself. */
static void prefill(wjob_t *w)
{
    static const char zeros[1 << 16];
    int64_t from = *w->zeroed, to = w->off + (int64_t)w->len + PREALLOC;
    for (int64_t at = from; at < to; at += (int64_t)sizeof zeros) {
        size_t n = (size_t)SP_MIN((int64_t)sizeof zeros, to - at);
        if (write_all(w->fd, zeros, n, at) != 0) {
            if (ftruncate(w->fd, (off_t)from) != 0) {
                /* the zeros written stay: replay reads them as the end */
            }
            return;
        }
    }
    *w->zeroed = to;
}

static void work_write(uv_work_t *req)
{
    wjob_t *w = req->data;
    sp_journal_t *j = w->j;
    if (w->zeroed && w->off + (int64_t)w->len > *w->zeroed) prefill(w);
    w->err = write_all(w->fd, w->data, w->len, w->off);
    if (!w->err && w->zeroed && w->off + (int64_t)w->len > *w->zeroed)
        *w->zeroed = w->off + (int64_t)w->len;
    if (!w->err && w->sync && fdatasync(w->fd) != 0) w->err = errno;
    if (!w->err && w->sync_dir) w->err = sync_dir(j->dir);
    if (w->err || !w->finish) return;
    char tmp[PATH_CAP], fin[PATH_CAP];
    path_of(j, tmp, sizeof tmp, "snapshot", j->snap.seq, "tmp");
    path_of(j, fin, sizeof fin, "snapshot", j->snap.seq, "snap");
    if (fsync(w->fd) != 0) w->err = errno;
    close(w->fd);
    j->snap.fd = -1;
    if (!w->err && rename(tmp, fin) != 0) w->err = errno;
    if (!w->err) w->err = sync_dir(j->dir);
    if (w->err) {
        unlink(tmp);
        return;
    }
    drop_old_files(j->dir, j->snap.seq);
}

static void flush(sp_journal_t *j, bool retry);
static void snap_step(sp_journal_t *j);
static void maybe_finish_close(sp_journal_t *j);
static void timer_cb(uv_timer_t *t);

static void check_cb(uv_check_t *h);
static void idle_cb(uv_idle_t *h);

static void kick(sp_journal_t *j)
{
    if (j->closing) return;
    if (!j->o.fsync_always || j->failing) {
        /* Interval mode writes on a timer; a failing journal retries on it. */
        if (!j->timer_on) {
            j->timer_on = true;
            uv_timer_start(&j->timer, timer_cb, j->failing ? RETRY_MS : (uint64_t)j->o.interval_ms,
                           0);
        }
        return;
    }
    if (j->kicked) return;
    j->kicked = true;
    uv_check_start(&j->check, check_cb);
    uv_idle_start(&j->idle, idle_cb);
}

static void idle_cb(uv_idle_t *h)
{
    (void)h;
}

static void check_cb(uv_check_t *h)
{
    sp_journal_t *j = h->data;
    uv_check_stop(&j->check);
    uv_idle_stop(&j->idle);
    j->kicked = false;
    flush(j, false);
}

static void timer_cb(uv_timer_t *t)
{
    sp_journal_t *j = t->data;
    j->timer_on = false;
    flush(j, true);
}

void sp_journal_job(sp_journal_t *j, uint64_t id)
{
    if (j->nids && j->ids[j->nids - 1] == id) return;
    if (j->nids == j->cap_ids) {
        size_t cap = j->cap_ids ? j->cap_ids * 2 : 256;
        uint64_t *ids = realloc(j->ids, cap * sizeof *ids);
        if (!ids) {
            /* The change cannot be noted: the group is marked failed so that nobody is told
             * it is durable, and a snapshot writes the whole state once writes work again. */
            j->gbuf.oom = true;
            j->lost_notes = true;
            kick(j);
            return;
        }
        j->ids = ids;
        j->cap_ids = cap;
    }
    j->ids[j->nids++] = id;
    kick(j);
}

void sp_journal_queue(sp_journal_t *j, const sp_equeue_t *q)
{
    size_t from = j->nqs > 8 ? j->nqs - 8 : 0;
    for (size_t i = from; i < j->nqs; i++)
        if (j->qs[i] == q) return;
    if (j->nqs == j->cap_qs) {
        size_t cap = j->cap_qs ? j->cap_qs * 2 : 16;
        const sp_equeue_t **qs = realloc(j->qs, cap * sizeof *qs);
        if (!qs) {
            j->gbuf.oom = true;
            j->lost_notes = true;
            kick(j);
            return;
        }
        j->qs = qs;
        j->cap_qs = cap;
    }
    j->qs[j->nqs++] = q;
    kick(j);
}

void sp_journal_after(sp_journal_t *j, void (*fn)(void *arg, int status, const char *why),
                      void *arg)
{
    if (!j->o.fsync_always || (!j->writing && j->nids == 0 && j->nqs == 0 && j->gbuf.len == 0)) {
        fn(arg, 0, NULL);
        return;
    }
    waiter_t *w = malloc(sizeof *w);
    if (!w) {
        fn(arg, SP_ENOMEM, "out of memory");
        return;
    }
    w->fn = fn;
    w->arg = arg;
    wl_push(&j->open, w);
    kick(j);
}

/* Encodes the noted changes' resulting state after what the group buffer holds; false when
 * memory ran out (the buffer is put back and the notes kept, for another try). */
static bool encode_group(sp_journal_t *j)
{
    size_t keep = j->gbuf.len;
    uint64_t dead = 0, bytes = 0, recs = 0, max_id = j->max_id_logged;
    for (size_t i = 0; i < j->nids && !j->gbuf.oom; i++) {
        uint64_t id = j->ids[i];
        sp_ejob_t *job = sp_engine_get(j->e, id);
        size_t before = j->gbuf.len;
        if (job) {
            sp_jobrec_t rec;
            sp_engine_view_full(j->e, job, &rec);
            sp_jrec_put_job(&j->gbuf, &rec);
            bytes += j->gbuf.len - before;
            recs++;
        } else {
            sp_jrec_put_forget(&j->gbuf, id);
        }
        if (id <= max_id)
            dead++;
        else
            max_id = id;
    }
    int64_t now = sp_now_ms();
    for (size_t i = 0; i < j->nqs && !j->gbuf.oom; i++) {
        sp_queue_stats_t st;
        sp_engine_queue_stats(j->e, j->qs[i], now, &st);
        sp_jrec_put_queue(&j->gbuf, &st);
    }
    if (j->gbuf.oom) {
        j->gbuf.len = keep;
        j->gbuf.oom = false;
        return false;
    }
    j->nids = j->nqs = 0;
    j->job_rec_bytes += bytes;
    j->job_recs += recs;
    j->max_id_logged = max_id;
    if (dead && j->job_recs) j->dead_bytes += dead * (j->job_rec_bytes / j->job_recs);
    return true;
}

/* A segment is compacted once past max(compact_min, the last snapshot) and at least half made
 * of superseded records. A log of mostly live jobs (a burst of submissions nobody takes yet)
 * replays as fast as a snapshot of the same jobs would; rewriting it would only load the disk
 * while it is busiest. */
static bool compact_due(const sp_journal_t *j)
{
    uint64_t size = (uint64_t)j->seg_off;
    return size > SP_MAX(j->o.compact_min, j->last_snap_bytes) && j->dead_bytes >= size / 2;
}

static int open_segment(sp_journal_t *j, uint64_t seq)
{
    char path[PATH_CAP];
    path_of(j, path, sizeof path, "journal", seq, "log");
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return errno;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return e;
    }
    if (j->seg_fd >= 0) close(j->seg_fd);
    j->seg_fd = fd;
    j->seg_seq = seq;
    j->seg_off = st.st_size;
    j->sent_off = st.st_size;
    j->seg_zeroed = st.st_size;
    j->seg_zeroed_planned = st.st_size;
    j->seg_new = true;
    /* What an existing segment holds is not known record by record: counted as superseded. */
    j->dead_bytes = (uint64_t)st.st_size;
    j->job_rec_bytes = j->job_recs = 0;
    return 0;
}

static void set_failing(sp_journal_t *j, int err)
{
    if (!j->failing)
        sp_error("journal: cannot write %s/journal-%012" PRIu64 ".log: %s; changes are refused "
                 "until it can be written again",
                 j->dir, j->seg_seq, strerror(err));
    j->failing = err;
    j->failed_writes++;
    snprintf(j->why, sizeof j->why,
             "the journal cannot be written (%s): changes are not accepted until it can",
             strerror(err));
}

static void snap_begin(sp_journal_t *j);

static void after_write(uv_work_t *req, int status)
{
    (void)status;
    wjob_t *w = req->data;
    sp_journal_t *j = w->j;
    ((group_t *)w)->done = true;
    if (w->zeroed) j->filling = false; /* this group's fill, and its write, are done */
    /* The answers of the groups now durable go out after the next group has started: its sync
     * then overlaps the writing of these answers instead of waiting for it. */
    wlist_t answered;
    wl_init(&answered);
    /* Groups are answered in the order they were formed, whatever order their syncs end in. */
    while (j->nflight > 0 && j->groups[j->ghead].done) {
        group_t *g = &j->groups[j->ghead];
        j->ghead = (j->ghead + 1) % MAX_INFLIGHT;
        j->nflight--;
        g->done = false;
        if (g->w.err == 0 && !j->broken) {
            j->seg_off += (int64_t)g->w.len;
            j->seg_new = false;
            bool recovered = j->failing != 0;
            if (recovered)
                sp_info("journal: writing again after %" PRIu64 " failed attempts",
                        j->failed_writes);
            j->failing = 0;
            j->failed_writes = 0;
            if (recovered && j->o.on_writable) j->o.on_writable(j->o.ud);
            /* A huge batch's buffer is not kept for the small groups that follow. */
            if (g->buf.cap > (8u << 20))
                sp_buf_free(&g->buf);
            else
                sp_buf_reset(&g->buf);
            wl_append(&answered, &g->waiters);
        } else {
            /* This group, and any after it, are written again from seg_off: their bytes go
             * back in front of what is not sent yet. */
            if (!j->broken) j->broken = g->w.err ? g->w.err : EIO;
            set_failing(j, j->broken);
            /* without its group record: the rewrite gets one of its own */
            sp_buf_append(&j->rbuf, g->buf.data + SP_JREC_GROUP_SIZE,
                          g->buf.len - SP_JREC_GROUP_SIZE);
            sp_buf_reset(&g->buf);
            if (j->rbuf.oom) sp_error("journal: out of memory keeping a failed write");
            wl_call(&answered, 0, NULL);
            wl_call(&g->waiters, SP_EUNAVAIL, j->why);
        }
    }
    j->writing = j->nflight > 0;
    if (j->nflight == 0 && j->broken) {
        /* Failed groups in order, then what was formed meanwhile: rewritten from seg_off. */
        sp_buf_append(&j->rbuf, j->gbuf.data, j->gbuf.len);
        sp_buf_t t = j->gbuf;
        j->gbuf = j->rbuf;
        j->rbuf = t;
        sp_buf_reset(&j->rbuf);
        j->broken = 0;
        j->sent_off = j->seg_off;
    }
    if (j->closing) {
        wl_call(&answered, 0, NULL);
        if (!j->failing && (j->nids || j->nqs || j->open.head))
            flush(j, true);
        else
            maybe_finish_close(j);
        return;
    }
    if (!j->failing && !j->snap.active && !j->rotate_pending && (j->lost_notes || compact_due(j))) {
        j->lost_notes = false;
        sp_journal_compact(j);
    }
    if (j->nids || j->nqs || j->open.head || j->gbuf.len || j->rotate_pending) {
        if (j->failing || !j->o.fsync_always)
            kick(j);
        else
            flush(j, false);
    }
    wl_call(&answered, 0, NULL);
}

/* A group could not be formed for want of memory: what waits for it fails, and the journal
 * retries on its timer (the notes and the buffer are kept). */
static void flush_out_of_memory(sp_journal_t *j)
{
    set_failing(j, ENOMEM);
    wl_call(&j->open, SP_EUNAVAIL, j->why);
    kick(j);
}

/* Forms the next group and writes it while fewer than MAX_INFLIGHT are in flight (a completion
 * forms the next one otherwise). A failing journal writes only from its retry timer (`retry`),
 * with nothing else in flight. */
static void flush(sp_journal_t *j, bool retry)
{
    if (j->nflight == MAX_INFLIGHT || (j->failing && !retry) || j->broken) return;
    if (j->failing && j->nflight > 0) return;
    if (j->rotate_pending && !j->closing) {
        /* The switch waits until the old segment has everything in flight. */
        if (j->nflight > 0) return;
        /* Everything written so far is in the old segment; the snapshot covers it. */
        j->rotate_pending = false;
        int err = open_segment(j, j->seg_seq + 1);
        if (err) {
            sp_error("journal: cannot start a new segment in %s: %s", j->dir, strerror(err));
            j->last_snap_bytes = (uint64_t)j->seg_off + j->o.compact_min;
        } else {
            snap_begin(j);
        }
    }
    if (!encode_group(j)) {
        flush_out_of_memory(j);
        return;
    }
    if (j->gbuf.len == 0) {
        if (j->nflight > 0) {
            /* What they wait for is in the groups already in flight. */
            group_t *last = &j->groups[(j->ghead + j->nflight - 1) % MAX_INFLIGHT];
            wl_append(&last->waiters, &j->open);
            return;
        }
        wl_call(&j->open, 0, NULL);
        if (j->closing) maybe_finish_close(j);
        return;
    }
    /* Zeros are filled in only with nothing else in flight, and nothing else starts while they
     * are: the fill and another group's data must never write the same bytes at once. */
    if (j->nflight > 0 && (j->filling || j->sent_off + SP_JREC_GROUP_SIZE + (int64_t)j->gbuf.len >
                                             j->seg_zeroed_planned))
        return;
    /* Each write starts with a group record, the length and CRC of the records after it: replay
     * tells a write the disk got only part of (before its sync, so never answered) from damage
     * to one that was answered. */
    if (!sp_buf_reserve(&j->gbuf, SP_JREC_GROUP_SIZE)) {
        flush_out_of_memory(j);
        return;
    }
    memmove(j->gbuf.data + SP_JREC_GROUP_SIZE, j->gbuf.data, j->gbuf.len + 1);
    sp_jrec_group((unsigned char *)j->gbuf.data, j->gbuf.data + SP_JREC_GROUP_SIZE, j->gbuf.len);
    j->gbuf.len += SP_JREC_GROUP_SIZE;
    group_t *g = &j->groups[(j->ghead + j->nflight) % MAX_INFLIGHT];
    sp_buf_t spare = g->buf;
    g->buf = j->gbuf;
    j->gbuf = spare;
    sp_buf_reset(&j->gbuf);
    wl_init(&g->waiters);
    wl_append(&g->waiters, &j->open);
    g->done = false;
    j->nflight++;
    j->writing = true;
    wjob_t *w = &g->w;
    memset(w, 0, sizeof *w);
    w->req.data = w;
    w->j = j;
    w->fd = j->seg_fd;
    w->off = j->sent_off;
    w->data = g->buf.data;
    w->len = g->buf.len;
    w->sync = true;
    w->sync_dir = j->seg_new;
    if (j->nflight == 1 && w->off + (int64_t)w->len > j->seg_zeroed_planned) {
        w->zeroed = &j->seg_zeroed;
        j->seg_zeroed_planned = w->off + (int64_t)w->len + PREALLOC;
        j->filling = true;
    }
    j->sent_off += (int64_t)w->len;
    int rc = uv_queue_work(j->loop, &w->req, work_write, after_write);
    if (rc) {
        w->err = EIO;
        after_write(&w->req, rc);
    }
}

/* ---- snapshots ----------------------------------------------------------------------------- */

bool sp_journal_compact(sp_journal_t *j)
{
    if (j->snap.active || j->rotate_pending || j->failing || j->closing) return false;
    j->rotate_pending = true;
    if (j->o.fsync_always) {
        kick(j);
    } else if (!j->writing) {
        flush(j, true);
    }
    return true;
}

static void snap_abort(sp_journal_t *j, const char *what, int err)
{
    snap_t *s = &j->snap;
    if (what) sp_error("journal: snapshot %012" PRIu64 " %s: %s", s->seq, what, strerror(err));
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
    char tmp[PATH_CAP];
    path_of(j, tmp, sizeof tmp, "snapshot", s->seq, "tmp");
    unlink(tmp);
    s->active = false;
    s->aborting = false;
    /* Not again before the log has grown as much once more. */
    j->last_snap_bytes = (uint64_t)j->seg_off + j->o.compact_min;
}

static void after_snap(uv_work_t *req, int status)
{
    (void)status;
    wjob_t *w = req->data;
    sp_journal_t *j = w->j;
    snap_t *s = &j->snap;
    s->working = false;
    if (w->err) {
        snap_abort(j, "could not be written", w->err);
    } else if (s->aborting) {
        snap_abort(j, NULL, 0);
    } else {
        s->off += (int64_t)w->len;
        if (!w->finish) {
            snap_step(j);
        } else {
            s->active = false;
            sp_buf_free(&s->buf);
            j->last_snap_bytes = (uint64_t)s->off;
            sp_info("journal: snapshot %012" PRIu64 " written: %zu jobs, %lld bytes in %llu ms; "
                    "older files dropped",
                    s->seq, s->njobs, (long long)s->off,
                    (unsigned long long)(uv_now(j->loop) - s->started_ms));
        }
    }
    if (j->closing) maybe_finish_close(j);
}

static void snap_begin(sp_journal_t *j)
{
    snap_t *s = &j->snap;
    s->seq = j->seg_seq;
    char tmp[PATH_CAP];
    path_of(j, tmp, sizeof tmp, "snapshot", s->seq, "tmp");
    s->fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (s->fd < 0) {
        sp_error("journal: cannot create %s: %s", tmp, strerror(errno));
        j->last_snap_bytes = (uint64_t)j->seg_off + j->o.compact_min;
        return;
    }
    s->active = true;
    s->aborting = false;
    s->off = 0;
    s->qi = 0;
    s->after = 0;
    s->njobs = 0;
    s->started_ms = uv_now(j->loop);
    snap_step(j);
}

/* Encodes the next chunk of jobs (and, at the end, the queues, the next id and the end mark)
 * on the loop, and writes it on the thread pool. */
static void snap_step(sp_journal_t *j)
{
    snap_t *s = &j->snap;
    sp_engine_t *e = j->e;
    sp_buf_reset(&s->buf);
    size_t n = 0, nq = sp_engine_queue_count(e);
    while (n < SNAP_CHUNK && s->qi < nq) {
        sp_equeue_t *q = sp_engine_queue_at(e, s->qi);
        uint64_t next = 0;
        size_t k = sp_engine_list(e, q, -1, s->after, SNAP_CHUNK - n, s->jobs, &next);
        for (size_t i = 0; i < k; i++) {
            sp_jobrec_t rec;
            sp_engine_view_full(e, s->jobs[i], &rec);
            sp_jrec_put_job(&s->buf, &rec);
        }
        n += k;
        s->njobs += k;
        if (next == 0) {
            s->qi++;
            s->after = 0;
        } else {
            s->after = next;
        }
    }
    bool final = s->qi >= nq;
    if (final) {
        int64_t now = sp_now_ms();
        for (size_t i = 0; i < nq; i++) {
            sp_queue_stats_t st;
            sp_engine_queue_stats(e, sp_engine_queue_at(e, i), now, &st);
            sp_jrec_put_queue(&s->buf, &st);
        }
        sp_jrec_put_u64(&s->buf, SP_JREC_NEXTID, sp_engine_next_id(e));
        sp_jrec_put_u64(&s->buf, SP_JREC_END, s->njobs);
    }
    if (s->buf.oom) {
        snap_abort(j, "could not be encoded", ENOMEM);
        return;
    }
    wjob_t *w = &s->w;
    memset(w, 0, sizeof *w);
    w->req.data = w;
    w->j = j;
    w->fd = s->fd;
    w->off = s->off;
    w->data = s->buf.data;
    w->len = s->buf.len;
    w->finish = final;
    s->working = true;
    int rc = uv_queue_work(j->loop, &w->req, work_write, after_snap);
    if (rc) {
        w->err = EIO;
        after_snap(&w->req, rc);
    }
}

/* ---- closing ------------------------------------------------------------------------------ */

static void handle_closed(uv_handle_t *h)
{
    sp_journal_t *j = h->data;
    if (--j->open_handles > 0) return;
    void (*done)(void *) = j->done;
    void *ud = j->done_ud;
    sp_buf_free(&j->gbuf);
    sp_buf_free(&j->rbuf);
    for (size_t i = 0; i < MAX_INFLIGHT; i++) sp_buf_free(&j->groups[i].buf);
    sp_buf_free(&j->snap.buf);
    free(j->snap.jobs);
    free(j->ids);
    free(j->qs);
    free(j);
    if (done) done(ud);
}

static void maybe_finish_close(sp_journal_t *j)
{
    if (!j->closing || j->finished || j->writing || j->snap.working) return;
    j->finished = true;
    if (j->snap.active) snap_abort(j, NULL, 0);
    if (j->failing && (j->gbuf.len || j->nids || j->nqs))
        sp_error("journal: closing with changes that could not be written: %s", j->why);
    wl_call(&j->open, SP_EUNAVAIL, "the journal is closing");
    /* A clean stop leaves the segment without its zeros. */
    if (j->seg_fd >= 0 && j->seg_zeroed > j->seg_off && ftruncate(j->seg_fd, j->seg_off) != 0)
        sp_warn("journal: cannot trim %s/journal-%012" PRIu64 ".log: %s", j->dir, j->seg_seq,
                strerror(errno));
    if (j->seg_fd >= 0) close(j->seg_fd);
    if (j->lock_fd >= 0) close(j->lock_fd);
    j->seg_fd = j->lock_fd = -1;
    j->open_handles = 3;
    uv_close((uv_handle_t *)&j->check, handle_closed);
    uv_close((uv_handle_t *)&j->idle, handle_closed);
    uv_close((uv_handle_t *)&j->timer, handle_closed);
}

void sp_journal_close(sp_journal_t *j, void (*done)(void *ud), void *ud)
{
    j->done = done;
    j->done_ud = ud;
    uv_check_stop(&j->check);
    uv_idle_stop(&j->idle);
    uv_timer_stop(&j->timer);
    j->kicked = j->timer_on = false;
    j->rotate_pending = false;
    if (j->snap.active) j->snap.aborting = true;
    j->closing = true;
    if (!j->writing) flush(j, true);
    maybe_finish_close(j);
}

/* ---- opening and replay -------------------------------------------------------------------- */

typedef struct {
    uint64_t *v;
    size_t n, cap;
} seqs_t;

static int seqs_add(seqs_t *s, uint64_t v)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        uint64_t *nv = realloc(s->v, cap * sizeof *nv);
        if (!nv) return -1;
        s->v = nv;
        s->cap = cap;
    }
    s->v[s->n++] = v;
    return 0;
}

static int seq_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* A file's bytes, mapped read-only; len 0 maps nothing. */
typedef struct {
    const unsigned char *p;
    size_t len;
} map_t;

static int map_file(const char *path, map_t *m, char *err, size_t errlen)
{
    m->p = NULL;
    m->len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            snprintf(err, errlen, "cannot map %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        madvise(p, (size_t)st.st_size, MADV_SEQUENTIAL);
        m->p = p;
        m->len = (size_t)st.st_size;
    }
    close(fd);
    return 0;
}

static void unmap_file(map_t *m)
{
    if (m->len) munmap((void *)m->p, m->len);
    m->p = NULL;
    m->len = 0;
}

static bool all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i]) return false;
    return true;
}

typedef struct {
    uint64_t records;
    uint64_t log_bytes;
    bool saw_end;
} replay_stats_t;

/* Whether the write starting at `off` is whole: a group record whose records all follow intact.
 * *next is then where they start. */
static bool group_whole(const unsigned char *p, size_t size, size_t off, size_t *next)
{
    sp_jrec_t r;
    if (size - off < SP_JREC_GROUP_SIZE || sp_jrec_get(p + off, size - off, &r) <= 0 ||
        r.type != SP_JREC_GROUP)
        return false;
    size_t body = off + SP_JREC_GROUP_SIZE;
    if (r.group_len > size - body || sp_crc32c(0, p + body, (size_t)r.group_len) != r.group_crc)
        return false;
    *next = body;
    return true;
}

/* Whether a whole write starts anywhere past `off`. A write starts only once the one before it
 * is synced, so one found there proves that the bytes at `off` were synced (and answered). */
static bool whole_group_after(const unsigned char *p, size_t size, size_t off)
{
    for (size_t at = off + 1; at + SP_JREC_GROUP_SIZE <= size; at++) {
        size_t next;
        if (p[at] == SP_JREC_GROUP_SIZE - HDR && p[at + 1] == 0 && p[at + 2] == 0 &&
            p[at + 3] == 0 && p[at + HDR] == SP_JREC_GROUP && group_whole(p, size, at, &next))
            return true;
    }
    return false;
}

/* Applies the records of one file. `limit` stops early (a --journal-truncate-at offset). Logs
 * are written as groups (a group record, then the records it covers); a group is applied only
 * when all of it is intact. For the last log, a bad group or record with no whole group after
 * it is a write cut short: the file is cut there. Anywhere else it is corruption, reported with
 * the file and offset. */
static int replay_file(sp_journal_t *j, const char *name, bool is_last, bool is_snap, size_t cut_at,
                       bool *cut, replay_stats_t *rs, char *err, size_t errlen)
{
    char path[PATH_CAP];
    snprintf(path, sizeof path, "%s/%s", j->dir, name);
    map_t m;
    if (map_file(path, &m, err, errlen)) return -1;
    size_t size = m.len;
    size_t off = 0;
    int64_t now = sp_now_ms();
    int rc = 0;
    size_t group_end = 0; /* the end of the whole group being applied */
    bool grouped = false; /* the file is written in groups */
    while (off < size) {
        sp_jrec_t r;
        long long n = sp_jrec_get(m.p + off, size - off, &r);
        if (n > 0 && r.type == SP_JREC_GROUP) {
            size_t next;
            grouped = true;
            if (!is_snap && off >= group_end && group_whole(m.p, size, off, &next)) {
                group_end = next + (size_t)r.group_len;
                off = next;
                continue;
            }
            n = -1; /* its records are not all there: none of them is applied */
        }
        if (n > 0) {
            int arc = sp_jrec_apply(j->e, now, &r);
            if (arc == SP_ENOMEM) {
                snprintf(err, errlen, "out of memory loading %s", path);
                rc = -1;
                break;
            }
            if (arc == 0) {
                if (r.type == SP_JREC_END) rs->saw_end = true;
                rs->records++;
                off += (size_t)n;
                continue;
            }
        }
        size_t rest = size - off;
        if (!is_snap && all_zero(m.p + off, rest)) {
            /* Zeros filled in ahead of writes that never came: the end of the records. */
            if (is_last && truncate(path, (off_t)off) != 0)
                sp_warn("journal: cannot trim %s: %s", path, strerror(errno));
            break;
        }
        uint32_t declared = rest >= 4
                                ? (uint32_t)m.p[off] | (uint32_t)m.p[off + 1] << 8 |
                                      (uint32_t)m.p[off + 2] << 16 | (uint32_t)m.p[off + 3] << 24
                                : 0;
        /* Torn: the last write stopped inside this record, and nothing was written after it
         * (only zeros, or the end of the file). */
        size_t end = (uint64_t)declared + HDR >= rest ? rest : HDR + declared;
        /* In a log written in groups, damage outside a whole group with no whole group after
         * it is in the last write, which was never synced: a power cut can leave any of its
         * pages unwritten.
         * In older logs: a zero length is a hole (a later part of the last write reached the
         * disk before an earlier one); otherwise only zeros may follow the bad record. */
        bool torn = is_last && !is_snap && off >= group_end && !whole_group_after(m.p, size, off) &&
                    (grouped || n == 0 || declared == 0 || all_zero(m.p + off + end, rest - end));
        if (!torn && !is_snap && off == cut_at) {
            sp_warn("journal: %s: dropping the corrupt record at offset %zu and the %zu bytes "
                    "from there, as --journal-truncate-at asked",
                    path, off, rest);
            if (truncate(path, (off_t)off) != 0) {
                snprintf(err, errlen, "cannot truncate %s: %s", path, strerror(errno));
                rc = -1;
            }
            *cut = true;
            break;
        }
        if (!torn) {
            if (is_snap)
                snprintf(err, errlen,
                         "corrupt record in snapshot %s at offset %zu; move the snapshot away "
                         "only if the journal files before it are still there (see "
                         "docs/OPERATIONS.md)",
                         path, off);
            else
                snprintf(err, errlen,
                         "corrupt record in %s at offset %zu (of %zu bytes); to drop it and "
                         "everything after it, start once with --journal-truncate-at %s:%zu "
                         "(see docs/OPERATIONS.md)",
                         path, off, m.len, name, off);
            rc = -1;
            break;
        }
        sp_warn("journal: %s: dropping a torn last record: %zu bytes at offset %zu", path, rest,
                off);
        if (truncate(path, (off_t)off) != 0) {
            snprintf(err, errlen, "cannot truncate %s: %s", path, strerror(errno));
            rc = -1;
        }
        m.len = SP_MIN(m.len, off); /* nothing past the cut counts */
        break;
    }
    if (!is_snap) rs->log_bytes += off;
    unmap_file(&m);
    return rc;
}

static int lock_dir(sp_journal_t *j, char *err, size_t errlen)
{
    char path[PATH_CAP];
    snprintf(path, sizeof path, "%s/LOCK", j->dir);
    j->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (j->lock_fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(j->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            snprintf(err, errlen, "%s is in use by another spool-server (it holds the lock on %s)",
                     j->dir, path);
        else
            snprintf(err, errlen, "cannot lock %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Parses "journal-N.log:OFFSET". */
static int parse_truncate_at(const char *s, char *name, size_t cap, size_t *off)
{
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= cap || colon == s) return -1;
    memcpy(name, s, (size_t)(colon - s));
    name[colon - s] = '\0';
    char *end;
    errno = 0;
    unsigned long long v = strtoull(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || colon[1] == '-') return -1;
    *off = (size_t)v;
    uint64_t seq;
    return name_seq(name, "journal", "log", &seq) ? 0 : -1;
}

static int load(sp_journal_t *j, uint64_t *next_seg, replay_stats_t *rs, size_t *nlogs, char *err,
                size_t errlen)
{
    seqs_t logs = {0}, snaps = {0};
    int rc = -1;
    DIR *d = opendir(j->dir);
    if (!d) {
        snprintf(err, errlen, "cannot read %s: %s", j->dir, strerror(errno));
        return -1;
    }
    struct dirent *de;
    char path[PATH_CAP], name[256];
    while ((de = readdir(d))) {
        uint64_t s;
        if (name_seq(de->d_name, "journal", "log", &s)) {
            if (seqs_add(&logs, s)) goto oom;
        } else if (name_seq(de->d_name, "snapshot", "snap", &s)) {
            if (seqs_add(&snaps, s)) goto oom;
        } else if (name_seq(de->d_name, "snapshot", "tmp", &s)) {
            snprintf(path, sizeof path, "%s/%s", j->dir, de->d_name);
            unlink(path); /* a snapshot that never completed */
        }
    }
    closedir(d);
    d = NULL;
    if (logs.n) qsort(logs.v, logs.n, sizeof(uint64_t), seq_cmp);
    if (snaps.n) qsort(snaps.v, snaps.n, sizeof(uint64_t), seq_cmp);

    char tname[256] = "";
    size_t toff = 0;
    bool tfound = false;
    if (j->o.truncate_at && parse_truncate_at(j->o.truncate_at, tname, sizeof tname, &toff) != 0) {
        snprintf(err, errlen, "--journal-truncate-at: expected journal-N.log:OFFSET, got '%s'",
                 j->o.truncate_at);
        goto out;
    }

    uint64_t base = 0;
    if (snaps.n) {
        base = snaps.v[snaps.n - 1];
        snprintf(name, sizeof name, "snapshot-%012" PRIu64 ".snap", base);
        replay_stats_t ss = {0};
        bool unused = false;
        if (replay_file(j, name, false, true, SIZE_MAX, &unused, &ss, err, errlen)) goto out;
        if (!ss.saw_end) {
            snprintf(err, errlen, "snapshot %s/%s has no end mark (it is incomplete)", j->dir,
                     name);
            goto out;
        }
        rs->records += ss.records;
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", j->dir, name);
        if (stat(path, &st) == 0) j->last_snap_bytes = (uint64_t)st.st_size;
    }
    bool discard = false;
    uint64_t maxlog = 0;
    for (size_t i = 0; i < logs.n; i++) {
        snprintf(name, sizeof name, "journal-%012" PRIu64 ".log", logs.v[i]);
        snprintf(path, sizeof path, "%s/%s", j->dir, name);
        if (logs.v[i] < base) {
            unlink(path); /* covered by the snapshot; left by an interrupted compaction */
            continue;
        }
        if (discard) {
            char moved[PATH_CAP + 16];
            snprintf(moved, sizeof moved, "%s.discarded", path);
            if (rename(path, moved) == 0)
                sp_warn("journal: %s moved to %s (after the truncation point)", path, moved);
            continue;
        }
        /* The cut happens only where that file really has a bad record: a flag left set
         * for a later start then changes nothing. */
        size_t cut_at = SIZE_MAX;
        bool cut = false;
        if (tname[0] && strcmp(name, tname) == 0) {
            tfound = true;
            cut_at = toff;
        }
        maxlog = logs.v[i];
        (*nlogs)++;
        bool last = i + 1 == logs.n;
        if (replay_file(j, name, last, false, cut_at, &cut, rs, err, errlen)) goto out;
        if (cut)
            discard = true;
        else if (cut_at != SIZE_MAX)
            sp_warn("journal: --journal-truncate-at %s: no bad record at offset %zu; nothing "
                    "was cut",
                    j->o.truncate_at, toff);
    }
    if (tname[0] && !tfound)
        sp_warn("journal: --journal-truncate-at: no %s in %s; nothing was cut", tname, j->dir);
    *next_seg = SP_MAX(base, maxlog + 1);
    if (*next_seg == 0) *next_seg = 1;
    rc = 0;
    goto out;
oom:
    snprintf(err, errlen, "out of memory reading %s", j->dir);
out:
    if (d) closedir(d);
    free(logs.v);
    free(snaps.v);
    return rc;
}

int sp_journal_open(uv_loop_t *loop, const sp_journal_opts_t *o, sp_engine_t *e, sp_journal_t **out,
                    char *err, size_t errlen)
{
    *out = NULL;
    if (strlen(o->dir) >= DIR_CAP) {
        snprintf(err, errlen, "data directory path is too long");
        return -1;
    }
    sp_journal_t *j = calloc(1, sizeof *j);
    if (!j || !(j->snap.jobs = malloc(SNAP_CHUNK * sizeof(sp_ejob_t *)))) {
        if (j) free(j);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    j->loop = loop;
    j->e = e;
    j->o = *o;
    if (j->o.interval_ms <= 0) j->o.interval_ms = 10;
    snprintf(j->dir, sizeof j->dir, "%s", o->dir);
    j->o.dir = j->dir;
    j->lock_fd = j->seg_fd = j->snap.fd = -1;
    wl_init(&j->open);
    sp_buf_init(&j->gbuf);
    sp_buf_init(&j->rbuf);
    sp_buf_init(&j->snap.buf);

    uint64_t t0 = uv_hrtime();
    uint64_t next_seg = 1;
    replay_stats_t rs = {0};
    size_t nlogs = 0;
    int rc = -1;
    if (mkdir(j->dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", j->dir, strerror(errno));
        goto fail;
    }
    if (lock_dir(j, err, errlen) || load(j, &next_seg, &rs, &nlogs, err, errlen)) goto fail;
    rc = open_segment(j, next_seg);
    if (rc) {
        snprintf(err, errlen, "cannot create a journal file in %s: %s", j->dir, strerror(rc));
        goto fail;
    }
    uv_check_init(loop, &j->check);
    uv_idle_init(loop, &j->idle);
    uv_timer_init(loop, &j->timer);
    j->check.data = j->idle.data = j->timer.data = j;
    sp_info("journal: %s: %zu jobs loaded (%" PRIu64 " records, %zu log files) in %llu ms", j->dir,
            sp_engine_job_count(e), rs.records, nlogs,
            (unsigned long long)((uv_hrtime() - t0) / 1000000));
    uint64_t next = sp_engine_next_id(e);
    j->max_id_logged = next > 0 ? next - 1 : 0;
    /* A long tail or many segments (restarts) are folded into a snapshot at once. */
    if (rs.log_bytes > j->o.compact_min || nlogs > 4) sp_journal_compact(j);
    *out = j;
    return 0;
fail:
    if (j->lock_fd >= 0) close(j->lock_fd);
    if (j->seg_fd >= 0) close(j->seg_fd);
    free(j->snap.jobs);
    free(j);
    return -1;
}
