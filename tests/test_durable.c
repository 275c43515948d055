/*
 * test_durable.c - integration tests of spool-server --data-dir: kill -9 in the middle of
 * concurrent submissions, leases and acks, several times over one directory, and after each
 * restart every job answered 2xx is there with a state at least as far along as its last 2xx
 * said (and its lease still acks); the directory lock; a full disk (RLIMIT_FSIZE), where
 * submissions get 503, a long poll is not served, nothing accepted is lost, and service (the
 * waiting poll included) resumes when space returns.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/spt.h"

#define MAX_JOBS 200000
#define NTHREADS 4

enum { L_SUBMITTED = 1, L_LEASED = 2, L_ACKED = 3 };

typedef struct {
    unsigned char level;
    char lease[24];
} seen_t;

static struct {
    pthread_mutex_t mu;
    seen_t *jobs; /* by id */
    uint64_t max_id;
    size_t answers;
    size_t server_errors;
    volatile int stop;
    int port;
} g = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0, 0, 0, 0};

static void note(uint64_t id, int level, const char *lease)
{
    if (id == 0 || id >= MAX_JOBS) return;
    pthread_mutex_lock(&g.mu);
    seen_t *s = &g.jobs[id];
    if (level >= s->level) {
        s->level = (unsigned char)level;
        if (lease) snprintf(s->lease, sizeof s->lease, "%s", lease);
    }
    if (id > g.max_id) g.max_id = id;
    g.answers++;
    pthread_mutex_unlock(&g.mu);
}

static uint64_t parse_id(const char *s)
{
    return s ? strtoull(s, NULL, 10) : 0;
}

static void count_error(int status)
{
    if (status < 500) return;
    pthread_mutex_lock(&g.mu);
    g.server_errors++;
    pthread_mutex_unlock(&g.mu);
}

/* Submits, leases and acks until told to stop or the server goes away. */
static void *client(void *arg)
{
    long me = (long)(intptr_t)arg;
    char body[256];
    for (long i = 0; !g.stop; i++) {
        spt_resp_t r;
        snprintf(body, sizeof body, "{\"type\":\"t\",\"payload\":{\"c\":%ld,\"i\":%ld}}", me, i);
        if (spt_request(g.port, "POST", "/v1/queues/d/jobs", body, NULL, &r)) break;
        if (r.status == 201 && r.json) note(parse_id(spt_jstr(r.json, "id")), L_SUBMITTED, NULL);
        count_error(r.status);
        spt_resp_free(&r);
        if (i % 2 == 0) continue;
        if (spt_request(g.port, "POST", "/v1/lease", "{\"queues\":[\"d\"],\"max\":1}", NULL, &r))
            break;
        count_error(r.status);
        cJSON *jobs = r.json ? cJSON_GetObjectItemCaseSensitive(r.json, "jobs") : NULL;
        cJSON *j0 = jobs ? cJSON_GetArrayItem(jobs, 0) : NULL;
        char lease[24] = "";
        uint64_t id = 0;
        if (r.status == 200 && j0) {
            id = parse_id(spt_jstr(j0, "id"));
            snprintf(lease, sizeof lease, "%s", spt_jstr(j0, "lease") ? spt_jstr(j0, "lease") : "");
            note(id, L_LEASED, lease);
        }
        spt_resp_free(&r);
        if (!id || i % 4 != 1) continue;
        char target[64];
        snprintf(target, sizeof target, "/v1/jobs/%llu/ack", (unsigned long long)id);
        snprintf(body, sizeof body, "{\"lease\":\"%s\",\"result\":{\"ok\":%ld}}", lease, i);
        if (spt_request(g.port, "POST", target, body, NULL, &r)) break;
        if (r.status == 200) note(id, L_ACKED, NULL);
        count_error(r.status);
        spt_resp_free(&r);
    }
    return NULL;
}

static int state_level(const char *state)
{
    if (!state) return -1;
    if (!strcmp(state, "queued") || !strcmp(state, "scheduled")) return L_SUBMITTED;
    if (!strcmp(state, "running")) return L_LEASED;
    if (!strcmp(state, "succeeded")) return L_ACKED;
    return L_LEASED; /* failed, canceled: further along than a lease, not an ack */
}

/* Reads every job of queue d and checks each one answered 2xx against what the server says. */
static void verify(int port)
{
    unsigned char *state = calloc(MAX_JOBS, 1);
    assert_non_null(state);
    char target[128];
    uint64_t after = 0;
    for (int pages = 0; pages < 1000; pages++) {
        snprintf(target, sizeof target, "/v1/queues/d/jobs?limit=1000%s%llu",
                 after ? "&after=" : "", (unsigned long long)after);
        if (!after) snprintf(target, sizeof target, "/v1/queues/d/jobs?limit=1000");
        spt_resp_t r = spt_do(port, "GET", target, NULL, NULL);
        if (r.status == 404) {
            spt_resp_free(&r);
            break; /* no job was ever stored */
        }
        assert_int_equal(r.status, 200);
        assert_non_null(r.json);
        cJSON *jobs = cJSON_GetObjectItemCaseSensitive(r.json, "jobs");
        cJSON *j;
        cJSON_ArrayForEach(j, jobs)
        {
            uint64_t id = parse_id(spt_jstr(j, "id"));
            if (id > 0 && id < MAX_JOBS)
                state[id] = (unsigned char)state_level(spt_jstr(j, "state"));
        }
        const char *next = spt_jstr(r.json, "next");
        after = parse_id(next);
        spt_resp_free(&r);
        if (!after) break;
    }
    size_t checked = 0, leased_acked = 0;
    for (uint64_t id = 1; id <= g.max_id; id++) {
        seen_t *s = &g.jobs[id];
        if (!s->level) continue;
        checked++;
        if (state[id] < s->level)
            fail_msg("job %llu: answered level %d before the kill, level %d after the restart",
                     (unsigned long long)id, s->level, state[id]);
        /* A lease answered 2xx survives the restart: its token still acks. */
        if (s->level == L_LEASED && state[id] == L_LEASED && leased_acked < 5) {
            char body[128];
            snprintf(target, sizeof target, "/v1/jobs/%llu/ack", (unsigned long long)id);
            snprintf(body, sizeof body, "{\"lease\":\"%s\"}", s->lease);
            SPT_EXPECT(port, "POST", target, body, NULL, 200, NULL);
            s->level = L_ACKED;
            leased_acked++;
        }
    }
    fprintf(stderr, "verified %zu jobs answered 2xx (%zu leases acked after the restart)\n",
            checked, leased_acked);
    free(state);
}

static void make_dir(char *dir, size_t cap)
{
    snprintf(dir, cap, "/tmp/spool-test-durable-XXXXXX");
    assert_non_null(mkdtemp(dir));
}

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

static void test_kill9_rounds(void **state)
{
    (void)state;
    char dir[64];
    make_dir(dir, sizeof dir);
    g.jobs = calloc(MAX_JOBS, sizeof *g.jobs);
    assert_non_null(g.jobs);
    srand((unsigned)getpid());
    for (int round = 0; round < 5; round++) {
        spt_proc_t p;
        SPT_START(p, "--data-dir", dir);
        if (round > 0) verify(p.port);
        g.port = p.port;
        g.stop = 0;
        size_t before = g.answers;
        pthread_t th[NTHREADS];
        for (long i = 0; i < NTHREADS; i++)
            assert_int_equal(pthread_create(&th[i], NULL, client, (void *)(intptr_t)i), 0);
        /* The kill comes at a random moment once the clients are under way. */
        long long t0 = spt_now_ms();
        while (g.answers < before + 50 && spt_now_ms() - t0 < 20000) spt_sleep_ms(5);
        assert_true(g.answers >= before + 50);
        spt_sleep_ms(50 + rand() % 400);
        assert_int_equal(spt_signal(&p, SIGKILL), 0);
        int st;
        assert_int_equal(spt_wait(&p, 10000, &st), 0);
        assert_true(WIFSIGNALED(st));
        g.stop = 1;
        for (int i = 0; i < NTHREADS; i++) pthread_join(th[i], NULL);
        spt_finish(&p, 1000, NULL, NULL); /* cleans up what spt keeps for the process */
        fprintf(stderr, "round %d: %zu answers so far, max id %llu\n", round, g.answers,
                (unsigned long long)g.max_id);
    }
    assert_int_equal(g.server_errors, 0);
    spt_proc_t p;
    SPT_START(p, "--data-dir", dir);
    verify(p.port);
    SPT_STOP(p);
    /* A graceful stop keeps everything too. */
    SPT_START(p, "--data-dir", dir);
    verify(p.port);
    SPT_STOP(p);
    free(g.jobs);
    g.jobs = NULL;
    rm_dir(dir);
}

static void test_lock(void **state)
{
    (void)state;
    char dir[64];
    make_dir(dir, sizeof dir);
    spt_proc_t p;
    SPT_START(p, "--data-dir", dir);
    spt_proc_t q;
    const char *const args[] = {"--listen", "127.0.0.1:0", "--data-dir", dir, NULL};
    assert_int_equal(spt_start(&q, "spool-server", args, NULL, false), 0);
    char *err = NULL;
    assert_int_equal(spt_finish(&q, 10000, NULL, &err), 1);
    assert_non_null(err);
    if (!strstr(err, "in use by another spool-server")) fail_msg("stderr: %s", err);
    free(err);
    SPT_STOP(p);
    SPT_START(p, "--data-dir", dir); /* free again */
    SPT_STOP(p);
    /* Bad flag values are refused before anything starts. */
    const char *const bad[] = {"--data-dir", dir, "--fsync", "sometimes", NULL};
    assert_int_equal(spt_start(&q, "spool-server", bad, NULL, false), 0);
    assert_int_equal(spt_finish(&q, 10000, NULL, NULL), 2);
    rm_dir(dir);
}

/* A long poll whose client leaves while its lease answer waits for the disk: the server must
 * neither touch the gone request nor give the job away. Repeated, since the window is the
 * length of one fsync; each round closes the poll at a slightly different moment. */
static void test_long_poll_gone_during_fsync(void **state)
{
    (void)state;
    char dir[64];
    make_dir(dir, sizeof dir);
    spt_proc_t p;
    SPT_START(p, "--data-dir", dir);
    const char *lease = "{\"queues\":[\"gone\"],\"wait_ms\":10000}";
    const char *submit = "{\"type\":\"noop\"}";
    char req[512], sub[512];
    snprintf(req, sizeof req,
             "POST /v1/lease HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             strlen(lease), lease);
    snprintf(sub, sizeof sub,
             "POST /v1/queues/gone/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             strlen(submit), submit);
    int rounds = 80;
    for (int i = 0; i < rounds; i++) {
        int a = spt_connect(p.port), b = spt_connect(p.port);
        assert_true(a >= 0 && b >= 0);
        assert_int_equal(spt_send(a, req, strlen(req)), 0);
        spt_sleep_ms(50); /* the lease is waiting */
        assert_int_equal(spt_send(b, sub, strlen(sub)), 0);
        struct timespec ts = {0, (long)(i % 20) * 200000L}; /* 0 to 4 ms */
        nanosleep(&ts, NULL);
        spt_close(a);
        spt_resp_t r;
        assert_int_equal(spt_read_response(b, &r, false), 0);
        assert_int_equal(r.status, 201);
        spt_resp_free(&r);
        spt_close(b);
    }
    /* Every job is either back in the queue or was handed out before the client left; none may
     * be lost, and the server must still answer. */
    long long queued = spt_queue_num(p.port, "gone", "counts", "queued");
    long long running = spt_queue_num(p.port, "gone", "counts", "running");
    print_message("%d rounds: %lld jobs back in the queue, %lld leased before the client left\n",
                  rounds, queued, running);
    assert_int_equal(queued + running, rounds);
    SPT_STOP(p);
    rm_dir(dir);
}

static void test_disk_full(void **state)
{
    (void)state;
    char dir[64];
    make_dir(dir, sizeof dir);
    /* The server inherits a small file-size limit: its journal cannot grow past 48 KiB. */
    struct rlimit old, small;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    small = old;
    small.rlim_cur = 48 << 10;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
    spt_proc_t p;
    const char *const args[] = {"--data-dir", dir, NULL};
    int rc = spt_server_start(&p, args);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    assert_int_equal(rc, 0);

    uint64_t *ids = calloc(4000, sizeof *ids);
    assert_non_null(ids);
    size_t nids = 0, refused = 0;
    /* A long poll waits on a queue whose one job comes due while the disk is full: a lease
     * then could not be kept, so the poll is not served until the journal writes again. */
    spt_resp_t d =
        spt_do(p.port, "POST", "/v1/queues/lp/jobs", "{\"type\":\"t\",\"delay_ms\":4000}", NULL);
    assert_int_equal(d.status, 201);
    uint64_t due_id = parse_id(spt_jstr(d.json, "id"));
    ids[nids++] = due_id;
    spt_resp_free(&d);
    long long due_at = spt_now_ms() + 4000;
    const char *lp = "{\"queues\":[\"lp\"],\"wait_ms\":20000}";
    char lreq[256];
    snprintf(lreq, sizeof lreq,
             "POST /v1/lease HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             strlen(lp), lp);
    int poll_fd = spt_connect(p.port);
    assert_true(poll_fd >= 0);
    assert_int_equal(spt_send(poll_fd, lreq, strlen(lreq)), 0);
    char body[512], pad[301];
    memset(pad, 'x', 300);
    pad[300] = '\0';
    for (int i = 0; i < 4000 && refused < 3; i++) {
        snprintf(body, sizeof body, "{\"type\":\"t\",\"payload\":\"%s\"}", pad);
        spt_resp_t r = spt_do(p.port, "POST", "/v1/queues/full/jobs", body, NULL);
        if (r.status == 201) {
            ids[nids++] = parse_id(spt_jstr(r.json, "id"));
        } else {
            assert_int_equal(r.status, 503);
            const char *m = strstr(r.body, "journal");
            if (!m) fail_msg("503 without a clear message: %s", r.body);
            refused++;
        }
        spt_resp_free(&r);
    }
    assert_true(nids > 10);
    assert_int_equal(refused, 3);
    if (spt_now_ms() > due_at - 500) fail_msg("filling the disk took longer than the delay");
    /* Due, and still not handed out while the journal cannot write. */
    spt_sleep_ms((unsigned)(due_at - spt_now_ms()));
    assert_false(spt_recv_until(poll_fd, "HTTP/1.1", 1000));
    /* Space returns: the server retries its write and accepts again. */
    struct rlimit big = old;
    assert_int_equal(prlimit(p.pid, RLIMIT_FSIZE, &big, NULL), 0);
    int status = 0;
    long long t0 = spt_now_ms();
    while (spt_now_ms() - t0 < 10000) {
        spt_resp_t r = spt_do(p.port, "POST", "/v1/queues/full/jobs", "{\"type\":\"t\"}", NULL);
        status = r.status;
        if (status == 201) ids[nids++] = parse_id(spt_jstr(r.json, "id"));
        spt_resp_free(&r);
        if (status == 201) break;
        spt_sleep_ms(20);
    }
    assert_int_equal(status, 201);
    /* Writing again, the waiting poll gets the job. */
    spt_resp_t l;
    assert_int_equal(spt_read_response(poll_fd, &l, false), 0);
    assert_int_equal(l.status, 200);
    char *got = spt_json_at(l.body, l.body_len, "jobs.0.id");
    assert_non_null(got);
    char want[32];
    snprintf(want, sizeof want, "\"%llu\"", (unsigned long long)due_id);
    SPT_ASSERT_STR(got, want);
    free(got);
    spt_resp_free(&l);
    spt_close(poll_fd);
    /* Nothing accepted is lost, across a crash. */
    assert_int_equal(spt_signal(&p, SIGKILL), 0);
    spt_finish(&p, 10000, NULL, NULL);
    SPT_START(p, "--data-dir", dir);
    char target[64];
    for (size_t i = 0; i < nids; i++) {
        snprintf(target, sizeof target, "/v1/jobs/%llu", (unsigned long long)ids[i]);
        SPT_EXPECT(p.port, "GET", target, NULL, NULL, 200, NULL);
    }
    SPT_STOP(p);
    free(ids);
    rm_dir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lock),
        cmocka_unit_test(test_long_poll_gone_during_fsync),
        cmocka_unit_test(test_disk_full),
        cmocka_unit_test(test_kill9_rounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
