/*
 * test_journal.c - unit tests of the memory backend's journal (common/journal.c): CRC32C,
 * record encoding, replay after a clean close, torn tails, corrupt records in the middle and
 * the way out, snapshot plus tail replay, compaction while changes go on (the state after
 * replay equals the state before: every job's record and every queue's stats), the directory
 * lock, and --fsync interval. The backend runs on a private libuv loop in the test's thread.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "backend_memory.h"
#include "journal.h"

/* ---- fixture: a backend with a journal in a fresh directory -------------------------------- */

typedef struct {
    uv_loop_t loop;
    char dir[256];
    sp_backend_t *b;
    bool always;
    uint64_t compact_min;
} fx_t;

static void rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    char path[512];
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static int fx_open_err(fx_t *f, const char *truncate_at, char *err, size_t errlen)
{
    sp_engine_opts_t eo;
    sp_engine_opts_default(&eo);
    sp_journal_opts_t jo;
    sp_journal_opts_default(&jo);
    jo.dir = f->dir;
    jo.fsync_always = f->always;
    jo.truncate_at = truncate_at;
    if (f->compact_min) jo.compact_min = f->compact_min;
    f->b = sp_backend_memory_open(&f->loop, &eo, &jo, err, errlen);
    return f->b ? 0 : -1;
}

static void fx_open(fx_t *f)
{
    char err[1024] = "";
    if (fx_open_err(f, NULL, err, sizeof err)) fail_msg("open %s: %s", f->dir, err);
}

static void closed_cb(void *ud)
{
    *(bool *)ud = true;
}

/* Runs the loop until *flag, bounded. */
static void run_until(fx_t *f, const bool *flag)
{
    for (int i = 0; i < 200000 && !*flag; i++) uv_run(&f->loop, UV_RUN_ONCE);
    assert_true(*flag);
}

static void fx_close(fx_t *f)
{
    bool done = false;
    f->b->ops->close(f->b, closed_cb, &done);
    run_until(f, &done);
    f->b = NULL;
}

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    snprintf(f->dir, sizeof f->dir, "/tmp/spool-test-journal-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->always = true;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    if (f->b) fx_close(f);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    rm_dir(f->dir);
    free(f);
    return 0;
}

/* ---- synchronous wrappers over the backend ------------------------------------------------ */

typedef struct {
    bool done;
    int status;
    uint64_t id;
    uint64_t lease;
    size_t n;
    uint64_t ids[64], leases[64];
} res_t;

static void job_cb(void *ud, int status, const char *why, const sp_jobrec_t *job)
{
    (void)why;
    res_t *r = ud;
    r->done = true;
    r->status = status;
    if (job) r->id = job->id, r->lease = job->lease;
}

static void submit_cb(void *ud, int status, const char *why, const sp_jobrec_t *job, bool existed)
{
    (void)existed;
    job_cb(ud, status, why, job);
}

static void batch_cb(void *ud, int status, const char *why, const sp_jobrec_t *jobs,
                     const bool *existed, size_t n)
{
    (void)why;
    (void)existed;
    res_t *r = ud;
    r->done = true;
    r->status = status;
    r->n = n;
    if (n) r->id = jobs[0].id;
}

static void jobs_cb(void *ud, int status, const char *why, const sp_jobrec_t *jobs, size_t n,
                    uint64_t next)
{
    (void)why;
    (void)next;
    res_t *r = ud;
    r->done = true;
    r->status = status;
    r->n = n;
    for (size_t i = 0; i < n && i < 64; i++) r->ids[i] = jobs[i].id, r->leases[i] = jobs[i].lease;
}

static void queues_cb(void *ud, int status, const char *why, const sp_queue_stats_t *q, size_t n)
{
    (void)why;
    (void)q;
    res_t *r = ud;
    r->done = true;
    r->status = status;
    r->n = n;
}

static void count_cb(void *ud, int status, const char *why, uint64_t n)
{
    (void)why;
    res_t *r = ud;
    r->done = true;
    r->status = status;
    r->n = (size_t)n;
}

static sp_job_spec_t spec(const char *type, const char *payload, int priority)
{
    sp_job_spec_t s;
    memset(&s, 0, sizeof s);
    s.type_len = strlen(type);
    memcpy(s.type, type, s.type_len + 1);
    s.payload = payload;
    s.payload_len = strlen(payload);
    s.priority = priority;
    s.run_at = sp_now_ms();
    s.max_attempts = 3;
    s.timeout_ms = 30000;
    s.backoff_ms = 1000;
    return s;
}

static uint64_t do_submit(fx_t *f, const char *queue, const sp_job_spec_t *s)
{
    res_t r = {0};
    f->b->ops->submit(f->b, queue, strlen(queue), s, submit_cb, &r);
    run_until(f, &r.done);
    assert_int_equal(r.status, 0);
    return r.id;
}

static uint64_t submit_simple(fx_t *f, const char *queue, int i)
{
    char payload[64];
    snprintf(payload, sizeof payload, "{\"i\":%d}", i);
    sp_job_spec_t s = spec("t", payload, i % 10);
    return do_submit(f, queue, &s);
}

static void do_batch(fx_t *f, const char *queue, size_t n)
{
    sp_job_spec_t *specs = calloc(n, sizeof *specs);
    assert_non_null(specs);
    for (size_t i = 0; i < n; i++) specs[i] = spec("b", "[1,2,3]", (int)(i % 10));
    res_t r = {0};
    f->b->ops->submit_batch(f->b, queue, strlen(queue), specs, n, batch_cb, &r);
    run_until(f, &r.done);
    assert_int_equal(r.status, 0);
    free(specs);
}

static size_t do_lease(fx_t *f, const char *queue, size_t max, res_t *r)
{
    const char *qs[1] = {queue};
    size_t lens[1] = {strlen(queue)};
    sp_lease_req_t req = {qs, lens, 1, max, "worker-1", 8};
    memset(r, 0, sizeof *r);
    sp_be_wait_t *w = f->b->ops->lease(f->b, &req, 0, jobs_cb, r);
    /* A lease held for the disk gives a handle (it can still be canceled) until it is
     * answered; one answered at once gives none. */
    assert_true(w ? !r->done : r->done);
    run_until(f, &r->done);
    assert_int_equal(r->status, 0);
    return r->n;
}

static int do_ack(fx_t *f, uint64_t id, uint64_t lease)
{
    res_t r = {0};
    f->b->ops->ack(f->b, id, lease, "{\"ok\":true}", 11, true, job_cb, &r);
    run_until(f, &r.done);
    return r.status;
}

static int do_fail(fx_t *f, uint64_t id, uint64_t lease, bool retry)
{
    res_t r = {0};
    (f->b->ops->fail)(f->b, id, lease, "it broke", 8, retry, 0, job_cb, &r);
    run_until(f, &r.done);
    return r.status;
}

static int do_heartbeat(fx_t *f, uint64_t id, uint64_t lease)
{
    res_t r = {0};
    f->b->ops->heartbeat(f->b, id, lease, 120000, job_cb, &r);
    run_until(f, &r.done);
    return r.status;
}

static int do_cancel(fx_t *f, uint64_t id)
{
    res_t r = {0};
    f->b->ops->cancel(f->b, id, job_cb, &r);
    run_until(f, &r.done);
    return r.status;
}

static void do_pause(fx_t *f, const char *queue, bool pause)
{
    res_t r = {0};
    f->b->ops->pause(f->b, queue, strlen(queue), pause, queues_cb, &r);
    run_until(f, &r.done);
    assert_int_equal(r.status, 0);
}

static size_t do_purge(fx_t *f, const char *queue, sp_state_t st)
{
    res_t r = {0};
    f->b->ops->purge(f->b, queue, strlen(queue), st, count_cb, &r);
    run_until(f, &r.done);
    assert_int_equal(r.status, 0);
    return r.n;
}

/* ---- the state as bytes, to compare before and after --------------------------------------- */

static int name_cmp(const void *a, const void *b)
{
    size_t la, lb;
    const char *na = sp_equeue_name(*(sp_equeue_t *const *)a, &la);
    const char *nb = sp_equeue_name(*(sp_equeue_t *const *)b, &lb);
    int c = memcmp(na, nb, SP_MIN(la, lb));
    return c ? c : (la > lb) - (la < lb);
}

/* Every queue (by name: its flag, counts and totals) and every job's full record. */
static char *state_of(sp_engine_t *e, size_t *len)
{
    size_t nq = sp_engine_queue_count(e);
    sp_equeue_t **qs = calloc(nq + 1, sizeof *qs);
    assert_non_null(qs);
    for (size_t i = 0; i < nq; i++) qs[i] = sp_engine_queue_at(e, i);
    qsort(qs, nq, sizeof *qs, name_cmp);
    sp_buf_t b = SP_BUF_INIT;
    static sp_ejob_t *page[256];
    for (size_t i = 0; i < nq; i++) {
        sp_queue_stats_t st;
        sp_engine_queue_stats(e, qs[i], 0, &st);
        sp_jrec_put_queue(&b, &st);
        for (int s = 0; s < SP_STATE_COUNT; s++) sp_jrec_put_u64(&b, SP_JREC_NEXTID, st.counts[s]);
        uint64_t after = 0, next;
        do {
            size_t n = sp_engine_list(e, qs[i], -1, after, 256, page, &next);
            for (size_t k = 0; k < n; k++) {
                sp_jobrec_t r;
                sp_engine_view_full(e, page[k], &r);
                sp_jrec_put_job(&b, &r);
            }
            after = next;
        } while (next);
    }
    sp_jrec_put_u64(&b, SP_JREC_NEXTID, sp_engine_next_id(e));
    free(qs);
    assert_false(b.oom);
    *len = b.len;
    return b.data;
}

/* Closes, reopens, and checks that the state is what it was. */
static void expect_same_after_reopen(fx_t *f)
{
    size_t la, lb;
    char *a = state_of(sp_backend_memory_engine(f->b), &la);
    fx_close(f);
    fx_open(f);
    char *b = state_of(sp_backend_memory_engine(f->b), &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la);
    free(a);
    free(b);
}

/* A mix of every kind of change. */
static void churn(fx_t *f, int n)
{
    for (int i = 0; i < n; i++) submit_simple(f, (i % 3) ? "alpha" : "beta", i);
    sp_job_spec_t k = spec("keyed", "\"x\"", 5);
    k.has_idem_key = true;
    memcpy(k.idem_key, "key\0with nul", 12);
    k.idem_key_len = 12;
    do_submit(f, "alpha", &k);
    sp_job_spec_t d = spec("delayed", "null", 1);
    d.run_at = sp_now_ms() + 3600000;
    do_submit(f, "beta", &d);
    res_t r;
    size_t got = do_lease(f, "alpha", 8, &r);
    assert_true(got >= 6);
    assert_int_equal(do_ack(f, r.ids[0], r.leases[0]), 0);
    assert_int_equal(do_fail(f, r.ids[1], r.leases[1], true), 0);
    assert_int_equal(do_fail(f, r.ids[2], r.leases[2], false), 0);
    assert_int_equal(do_heartbeat(f, r.ids[3], r.leases[3]), 0);
    assert_int_equal(do_cancel(f, r.ids[4]), 0); /* running: cancel requested */
    do_lease(f, "beta", 2, &r);
    assert_int_equal(do_cancel(f, submit_simple(f, "beta", 99)), 0);
    do_pause(f, "gamma", true);
    do_pause(f, "beta", true);
    do_pause(f, "beta", false);
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_crc32c(void **state)
{
    (void)state;
    assert_int_equal(sp_crc32c(0, "", 0), 0);
    assert_int_equal(sp_crc32c(0, "123456789", 9), 0xE3069283u);
    unsigned char zeros[32] = {0}, ones[32];
    memset(ones, 0xff, sizeof ones);
    assert_int_equal(sp_crc32c(0, zeros, 32), 0x8A9136AAu); /* RFC 3720 B.4 */
    assert_int_equal(sp_crc32c(0, ones, 32), 0x62A8AB43u);
    const char *text = "The quick brown fox jumps over the lazy dog, again and again.";
    size_t n = strlen(text);
    for (size_t cut = 0; cut <= n; cut++)
        assert_int_equal(sp_crc32c(sp_crc32c(0, text, cut), text + cut, n - cut),
                         sp_crc32c(0, text, n));
}

static void test_record_roundtrip(void **state)
{
    (void)state;
    sp_jobrec_t j = {0};
    j.id = 123456789012345ULL;
    j.queue = "emails";
    j.queue_len = 6;
    j.type = "send";
    j.type_len = 4;
    j.payload = "{\"to\":\"a@b\"}";
    j.payload_len = strlen(j.payload);
    j.state = SP_STATE_RUNNING;
    j.priority = 7;
    j.attempts = 2;
    j.max_attempts = 5;
    j.timeout_ms = 1000;
    j.backoff_ms = 0;
    j.created_at = 1700000000000LL;
    j.run_at = 1700000000001LL;
    j.started_at = 1700000000002LL;
    j.finished_at = -1;
    j.lease_expires_at = 1700000001002LL;
    j.last_error = "boom";
    j.last_error_len = 4;
    j.worker = "host:1";
    j.worker_len = 6;
    j.idem_key = "k\0y";
    j.idem_key_len = 3;
    j.cancel_requested = true;
    j.lease = 0xfedcba9876543210ULL;
    sp_queue_stats_t q = {0};
    q.name = "emails";
    q.name_len = 6;
    q.paused = true;
    q.enqueued = 10, q.succeeded = 4, q.failed = 3, q.retried = 2, q.leased = 9, q.canceled = 1;

    sp_buf_t b = SP_BUF_INIT;
    sp_jrec_put_job(&b, &j);
    size_t first = b.len;
    sp_jrec_put_queue(&b, &q);
    sp_jrec_put_forget(&b, 42);
    sp_jrec_put_u64(&b, SP_JREC_NEXTID, 99);

    sp_jrec_t r;
    long long n = sp_jrec_get(b.data, b.len, &r);
    assert_int_equal(n, (long long)first);
    assert_int_equal(r.type, SP_JREC_JOB);
    assert_int_equal(r.job.id, j.id);
    assert_int_equal(r.job.lease, j.lease);
    assert_int_equal(r.job.state, j.state);
    assert_int_equal(r.job.priority, 7);
    assert_int_equal(r.job.attempts, 2);
    assert_int_equal(r.job.lease_expires_at, j.lease_expires_at);
    assert_int_equal(r.job.finished_at, -1);
    assert_true(r.job.cancel_requested);
    assert_null(r.job.result);
    assert_int_equal(r.job.idem_key_len, 3);
    assert_memory_equal(r.job.idem_key, "k\0y", 3);
    assert_memory_equal(r.job.payload, j.payload, j.payload_len);
    assert_memory_equal(r.job.worker, "host:1", 6);
    size_t off = (size_t)n;
    n = sp_jrec_get(b.data + off, b.len - off, &r);
    assert_true(n > 0);
    assert_int_equal(r.type, SP_JREC_QUEUE);
    assert_true(r.queue.paused);
    assert_int_equal(r.queue.leased, 9);
    assert_memory_equal(r.queue.name, "emails", 6);
    off += (size_t)n;
    n = sp_jrec_get(b.data + off, b.len - off, &r);
    assert_int_equal(r.type, SP_JREC_FORGET);
    assert_int_equal(r.id, 42);
    off += (size_t)n;
    n = sp_jrec_get(b.data + off, b.len - off, &r);
    assert_int_equal(r.type, SP_JREC_NEXTID);
    assert_int_equal(r.id, 99);
    assert_int_equal(off + (size_t)n, b.len);

    /* Every prefix of a record is torn (0); every flipped byte is corrupt (-1). */
    for (size_t cut = 0; cut < first; cut++) assert_int_equal(sp_jrec_get(b.data, cut, &r), 0);
    for (size_t i = 0; i < first; i++) {
        b.data[i] ^= 0x40;
        long long got = sp_jrec_get(b.data, b.len, &r);
        if (i < 4)
            assert_true(got <= 0 || got != (long long)first); /* the length itself */
        else
            assert_int_equal(got, -1);
        b.data[i] ^= 0x40;
    }
    sp_buf_free(&b);
}

static void test_replay_after_close(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    churn(f, 40);
    assert_int_equal(do_purge(f, "beta", SP_STATE_CANCELED), 1);
    expect_same_after_reopen(f);
    /* Leases survive: the token given before the restart still acks. */
    res_t r;
    assert_int_equal(do_lease(f, "alpha", 1, &r), 1);
    uint64_t id = r.ids[0], lease = r.leases[0];
    fx_close(f);
    fx_open(f);
    assert_int_equal(do_ack(f, id, lease), 0);
    /* New ids go on after the old ones. */
    uint64_t fresh = submit_simple(f, "alpha", 1);
    assert_true(fresh > id);
    expect_same_after_reopen(f);
}

/* A lease answered at once but held for the disk can still be canceled (its client left): it
 * is never answered, and its job goes back to the queue with the attempt not counted. */
static void test_held_lease_canceled(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    uint64_t id = submit_simple(f, "held", 1);
    const char *qs[1] = {"held"};
    size_t lens[1] = {4};
    sp_lease_req_t req = {qs, lens, 1, 1, "worker-1", 8};
    res_t r;
    memset(&r, 0, sizeof r);
    sp_be_wait_t *w = f->b->ops->lease(f->b, &req, 0, jobs_cb, &r);
    assert_non_null(w);
    f->b->ops->cancel_wait(f->b, w);
    /* Answers come in order: once a later submission is answered, the lease's group is done. */
    submit_simple(f, "other", 2);
    assert_false(r.done);
    sp_engine_t *e = sp_backend_memory_engine(f->b);
    sp_ejob_t *job = sp_engine_get(e, id);
    assert_non_null(job);
    assert_int_equal(sp_ejob_state(job), SP_STATE_QUEUED);
    sp_jobrec_t v;
    sp_engine_view(e, job, &v);
    assert_int_equal(v.attempts, 0);
    expect_same_after_reopen(f);
}

static char *last_log(fx_t *f)
{
    static char path[512];
    DIR *d = opendir(f->dir);
    assert_non_null(d);
    struct dirent *de;
    char best[256] = "";
    while ((de = readdir(d)))
        if (strncmp(de->d_name, "journal-", 8) == 0 && strcmp(de->d_name, best) > 0)
            snprintf(best, sizeof best, "%s", de->d_name);
    closedir(d);
    assert_true(best[0] != '\0');
    snprintf(path, sizeof path, "%s/%s", f->dir, best);
    return path;
}

static off_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static void append_bytes(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, n), (ssize_t)n);
    close(fd);
}

static void test_torn_tail(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    churn(f, 10);
    size_t la;
    char *a = state_of(sp_backend_memory_engine(f->b), &la);
    fx_close(f);
    /* A record cut short, as a crash in the middle of a write leaves it. */
    char *path = last_log(f);
    off_t good = file_size(path);
    sp_buf_t b = SP_BUF_INIT;
    sp_jobrec_t j = {0};
    j.id = 999;
    j.queue = j.type = j.payload = "qqq";
    j.queue_len = j.type_len = j.payload_len = 3;
    j.max_attempts = 1;
    sp_jrec_put_job(&b, &j);
    append_bytes(path, b.data, b.len / 2);
    fx_open(f);
    size_t lb;
    char *c = state_of(sp_backend_memory_engine(f->b), &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(a, c, la);
    free(c);
    fx_close(f);
    assert_int_equal(file_size(path), good);
    /* Zeros past the end (a file extended but never written) are a torn tail too. */
    path = last_log(f);
    good = file_size(path);
    char zeros[100] = {0};
    append_bytes(path, zeros, sizeof zeros);
    fx_open(f);
    c = state_of(sp_backend_memory_engine(f->b), &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(a, c, la);
    free(c);
    fx_close(f);
    /* A record cut short inside the zeros filled in ahead of writes. */
    path = last_log(f);
    append_bytes(path, b.data, b.len / 2);
    char more[4096] = {0};
    append_bytes(path, more, sizeof more);
    fx_open(f);
    c = state_of(sp_backend_memory_engine(f->b), &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(a, c, la);
    free(c);
    free(a);
    sp_buf_free(&b);
}

static void test_corrupt_middle(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    uint64_t first = submit_simple(f, "q", 1);
    fx_close(f);
    char *path = last_log(f);
    off_t cut = file_size(path);
    char name[256];
    snprintf(name, sizeof name, "%s", strrchr(path, '/') + 1);
    fx_open(f);
    for (int i = 0; i < 5; i++) submit_simple(f, "q", i);
    fx_close(f);
    /* Two segments now: the first holds job 1, the second the five others. Damage the first
     * record of the second segment: good records follow it, so it is not a torn tail. */
    (void)cut;
    char *second = last_log(f);
    char sname[256];
    snprintf(sname, sizeof sname, "%s", strrchr(second, '/') + 1);
    assert_string_not_equal(sname, name);
    int fd = open(second, O_RDWR);
    assert_true(fd >= 0);
    char byte;
    assert_int_equal(pread(fd, &byte, 1, 20), 1);
    byte ^= 0x11;
    assert_int_equal(pwrite(fd, &byte, 1, 20), 1);
    close(fd);
    char err[1024] = "";
    assert_int_equal(fx_open_err(f, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, sname));
    assert_non_null(strstr(err, "offset 0"));
    assert_non_null(strstr(err, "--journal-truncate-at"));
    /* The way out named in the message. */
    char arg[300];
    snprintf(arg, sizeof arg, "%s:0", sname);
    err[0] = '\0';
    if (fx_open_err(f, arg, err, sizeof err)) fail_msg("truncate-at: %s", err);
    sp_engine_t *e = sp_backend_memory_engine(f->b);
    assert_int_equal(sp_engine_job_count(e), 1);
    assert_non_null(sp_engine_get(e, first));
    /* The flag left set for a later start changes nothing: there is no bad record any more. */
    submit_simple(f, "q", 7);
    fx_close(f);
    if (fx_open_err(f, arg, err, sizeof err)) fail_msg("truncate-at again: %s", err);
    assert_int_equal(sp_engine_job_count(sp_backend_memory_engine(f->b)), 2);
    /* A bad argument is refused. */
    fx_close(f);
    assert_int_equal(fx_open_err(f, "nonsense", err, sizeof err), -1);
    assert_non_null(strstr(err, "journal-truncate-at"));
    fx_open(f);
}

static char *read_file(const char *path, size_t *len)
{
    off_t n = file_size(path);
    char *p = malloc((size_t)n + 1);
    assert_non_null(p);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, p, (size_t)n), (ssize_t)n);
    close(fd);
    *len = (size_t)n;
    return p;
}

static void write_at(const char *path, const void *p, size_t n, off_t off)
{
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, p, n, off), (ssize_t)n);
    close(fd);
}

/* The offsets of the group records (one starts each write) in a log's bytes. */
static size_t group_offsets(const char *p, size_t len, size_t *offs, size_t cap)
{
    size_t n = 0, off = 0;
    sp_jrec_t r;
    long long got;
    while (off < len && (got = sp_jrec_get(p + off, len - off, &r)) > 0) {
        if (r.type == SP_JREC_GROUP && n < cap) offs[n++] = off;
        off += (size_t)got;
    }
    assert_int_equal(off, len);
    return n;
}

static void test_torn_last_group(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    churn(f, 10);
    size_t la;
    char *a = state_of(sp_backend_memory_engine(f->b), &la);
    do_batch(f, "big", 300); /* one write of several pages, the log's last */
    fx_close(f);
    char *path = last_log(f);
    size_t len;
    char *bytes = read_file(path, &len);
    size_t offs[256];
    size_t n = group_offsets(bytes, len, offs, 256);
    assert_true(n >= 4);
    size_t last = offs[n - 1];
    assert_true(len - last > 3 * 4096);
    char name[256];
    snprintf(name, sizeof name, "%s", strrchr(path, '/') + 1);

    /* Damage inside an earlier write, with whole writes after it: it was synced and answered,
     * so this is corruption, refused with the offset of the write it is in. */
    size_t mid = offs[1] + (offs[2] - offs[1]) / 2;
    char byte = (char)(bytes[mid] ^ 0x40);
    write_at(path, &byte, 1, (off_t)mid);
    char err[1024] = "";
    assert_int_equal(fx_open_err(f, NULL, err, sizeof err), -1);
    char want[64];
    snprintf(want, sizeof want, "offset %zu ", offs[1]);
    assert_non_null(strstr(err, name));
    assert_non_null(strstr(err, want));
    write_at(path, &bytes[mid], 1, (off_t)mid);

    /* A power cut before the last write's sync: a page in its middle never reached the disk
     * while the pages after it did. Nothing of that write was answered: it is dropped whole. */
    static const char zeros[4096];
    size_t hole = (last + 4096 + 4095) / 4096 * 4096;
    assert_true(hole + 4096 < len);
    write_at(path, zeros, sizeof zeros, (off_t)hole);
    fx_open(f);
    size_t lb;
    char *c = state_of(sp_backend_memory_engine(f->b), &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(a, c, la);
    free(c);
    fx_close(f);
    assert_int_equal(file_size(path), (off_t)last);
    free(bytes);
    free(a);
}

static void wait_compacted(fx_t *f)
{
    sp_journal_t *j = sp_backend_memory_journal(f->b);
    assert_non_null(j);
    for (int i = 0; i < 200000 && sp_journal_compacting(j); i++) uv_run(&f->loop, UV_RUN_ONCE);
    assert_false(sp_journal_compacting(j));
}

static size_t count_files(fx_t *f, const char *prefix)
{
    DIR *d = opendir(f->dir);
    assert_non_null(d);
    struct dirent *de;
    size_t n = 0;
    while ((de = readdir(d))) n += strncmp(de->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

static void test_snapshot_and_tail(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    churn(f, 30);
    do_batch(f, "bulk", 500);
    assert_true(sp_journal_compact(sp_backend_memory_journal(f->b)));
    wait_compacted(f);
    assert_int_equal(count_files(f, "snapshot-"), 1);
    assert_int_equal(count_files(f, "journal-"), 1);
    /* The tail: changes after the snapshot. */
    churn(f, 5);
    assert_int_equal(do_purge(f, "bulk", SP_STATE_QUEUED), 500);
    expect_same_after_reopen(f);
    /* Twice more: older snapshots go away. */
    assert_true(sp_journal_compact(sp_backend_memory_journal(f->b)));
    wait_compacted(f);
    churn(f, 3);
    assert_true(sp_journal_compact(sp_backend_memory_journal(f->b)));
    wait_compacted(f);
    assert_int_equal(count_files(f, "snapshot-"), 1);
    expect_same_after_reopen(f);
}

/* Files whose names only resemble the journal's own (an operator's copy, an editor's backup) are
 * neither replayed nor deleted by compaction. */
static void test_foreign_files_left_alone(void **state)
{
    fx_t *f = *state;
    static const char *const names[] = {
        "journal-1.log",   "journal-000000000000.log.bak", "journal- 00000000001.log",
        "snapshot-0.snap", "snapshot-00000000000x.snap",   "journal-000000000000.logs"};
    char path[512];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", f->dir, names[i]);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, "not a journal", 13), 13);
        close(fd);
    }
    fx_open(f);
    churn(f, 10);
    expect_same_after_reopen(f);
    assert_true(sp_journal_compact(sp_backend_memory_journal(f->b)));
    wait_compacted(f);
    churn(f, 10);
    assert_true(sp_journal_compact(sp_backend_memory_journal(f->b)));
    wait_compacted(f);
    expect_same_after_reopen(f);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", f->dir, names[i]);
        assert_int_equal(file_size(path), 13);
    }
}

static void lease_cb_count(void *ud, int status, const char *why, const sp_jobrec_t *jobs, size_t n,
                           uint64_t next)
{
    (void)why;
    (void)jobs;
    (void)next;
    assert_int_equal(status, 0);
    (*(size_t *)ud) += n;
}

static void submit_cb_count(void *ud, int status, const char *why, const sp_jobrec_t *job,
                            bool existed)
{
    (void)why;
    (void)job;
    (void)existed;
    assert_int_equal(status, 0);
    (*(size_t *)ud)++;
}

/* Changes keep coming while the snapshot is written chunk by chunk: what replay builds from the
 * snapshot and the new segment is exactly the state at the end. */
static void test_compaction_while_changing(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    for (int i = 0; i < 40; i++) do_batch(f, (i & 1) ? "one" : "two", 1000);
    sp_journal_t *j = sp_backend_memory_journal(f->b);
    assert_true(sp_journal_compact(j));
    assert_false(sp_journal_compact(j)); /* one at a time */
    size_t answered = 0, asked = 0;
    const char *qs[1] = {"one"};
    size_t lens[1] = {3};
    sp_lease_req_t req = {qs, lens, 1, 50, "w", 1};
    for (int i = 0; i < 100000 && sp_journal_compacting(j); i++) {
        if (asked < 400) {
            sp_job_spec_t s = spec("late", "1", 4);
            f->b->ops->submit(f->b, "two", 3, &s, submit_cb_count, &answered);
            f->b->ops->lease(f->b, &req, 0, lease_cb_count, &answered);
            asked++;
        }
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    assert_false(sp_journal_compacting(j));
    for (int i = 0; i < 100000 && answered < asked; i++) uv_run(&f->loop, UV_RUN_ONCE);
    expect_same_after_reopen(f);
    assert_int_equal(count_files(f, "snapshot-"), 1);
}

static void test_automatic_compaction(void **state)
{
    fx_t *f = *state;
    f->compact_min = 32 << 10;
    fx_open(f);
    for (int round = 0; round < 6; round++) {
        do_batch(f, "auto", 300);
        do_purge(f, "auto", SP_STATE_QUEUED);
    }
    wait_compacted(f);
    assert_int_equal(count_files(f, "snapshot-"), 1);
    /* The journal follows the live jobs: nothing is live, so little is left (once the zeros
     * filled in ahead are trimmed by a clean stop). */
    size_t la, lb;
    char *before = state_of(sp_backend_memory_engine(f->b), &la);
    fx_close(f);
    assert_true(file_size(last_log(f)) < 64 << 10);
    fx_open(f);
    char *after = state_of(sp_backend_memory_engine(f->b), &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(before, after, la);
    free(before);
    free(after);
}

/* A log of live jobs only (a burst nobody takes yet) is not rewritten into a snapshot, however
 * long: it replays as fast as one. Once most of it is superseded, it is compacted. */
static void test_no_compaction_of_live_jobs(void **state)
{
    fx_t *f = *state;
    f->compact_min = 32 << 10;
    fx_open(f);
    for (int round = 0; round < 6; round++) do_batch(f, "live", 300);
    sp_journal_t *j = sp_backend_memory_journal(f->b);
    for (int i = 0; i < 1000; i++) uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_false(sp_journal_compacting(j));
    assert_int_equal(count_files(f, "snapshot-"), 0);
    do_purge(f, "live", SP_STATE_QUEUED);
    do_batch(f, "live", 10);
    wait_compacted(f);
    assert_int_equal(count_files(f, "snapshot-"), 1);
    fx_close(f);
}

static void test_lock(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    sp_backend_t *first = f->b;
    char err[1024] = "";
    assert_int_equal(fx_open_err(f, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "in use by another spool-server"));
    f->b = first;
    fx_close(f);
    fx_open(f); /* free again once closed */
}

static void test_fsync_interval(void **state)
{
    fx_t *f = *state;
    f->always = false;
    fx_open(f);
    /* Answers come at once, before anything is written. */
    res_t r = {0};
    sp_job_spec_t s = spec("t", "1", 1);
    f->b->ops->submit(f->b, "q", 1, &s, submit_cb, &r);
    assert_true(r.done);
    churn(f, 10);
    expect_same_after_reopen(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c),
        cmocka_unit_test(test_record_roundtrip),
        cmocka_unit_test_setup_teardown(test_replay_after_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_held_lease_canceled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_middle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_last_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_and_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreign_files_left_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction_while_changing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_automatic_compaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_compaction_of_live_jobs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fsync_interval, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
