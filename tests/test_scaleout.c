/*
 * test_scaleout.c - Spool scaled out with real processes: two spool-servers and two
 * spool-workers (one on Redis directly, one over HTTP) sharing one redis-server with AOF on,
 * 20 000 jobs submitted across both servers, then one server and one worker killed with -9
 * mid-run; the survivors finish every job, each one once apart from the attempts the killed
 * worker held, which come back when their leases expire.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/spt.h"

#define QUEUE "scale"
#define JOBS 20000
#define BATCH 1000
/* Each run takes SLEEP_MS, so a worker does at most CONCURRENCY / SLEEP_MS = 10 jobs a ms: when
 * the kill comes at KILL_AT jobs, the 16 000 left are more than 0.8 s of work for both workers
 * and 1.6 s for the survivor, however fast the machine is. */
#define SLEEP_MS 10
#define CONCURRENCY 100
#define KILL_AT 4000
/* Short leases, so that the killed worker's jobs are handed out again within seconds. */
#define LEASE_MS 2000
#define FINISH_MS 120000
#define ID_CAP 24
#define STR_(x) #x
#define STR(x) STR_(x)

typedef struct {
    char id[ID_CAP];
    int seen;
    int held; /* HELD: running under the killed worker when it died */
} job_ref_t;

#define HELD 2

static int ref_cmp(const void *a, const void *b)
{
    const job_ref_t *x = a, *y = b;
    return strcmp(x->id, y->id);
}

/* One batch of BATCH sleep jobs to the server on port; their ids are appended to refs. */
static void submit_batch(int port, job_ref_t *refs, int *nrefs)
{
    static const char one[] = "{\"type\":\"sleep\",\"payload\":{\"ms\":" STR(
        SLEEP_MS) "},\"timeout_ms\":" STR(LEASE_MS) ",\"max_attempts\":10}";
    size_t cap = 16 + BATCH * (sizeof(one) + 1);
    char *body = malloc(cap);
    assert_non_null(body);
    size_t len = 0;
    memcpy(body, "{\"jobs\":[", 9);
    len = 9;
    for (int i = 0; i < BATCH; i++) {
        if (i > 0) body[len++] = ',';
        memcpy(body + len, one, sizeof(one) - 1);
        len += sizeof(one) - 1;
    }
    memcpy(body + len, "]}", 3);
    spt_resp_t r = spt_do(port, "POST", "/v1/queues/" QUEUE "/batch", body, NULL);
    free(body);
    assert_int_equal(r.status, 201);
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(r.json, "jobs");
    assert_int_equal(cJSON_GetArraySize(jobs), BATCH);
    const cJSON *j;
    cJSON_ArrayForEach(j, jobs)
    {
        const char *id = spt_jstr(j, "id");
        assert_non_null(id);
        assert_true(strlen(id) < ID_CAP);
        assert_true(*nrefs < JOBS);
        memcpy(refs[*nrefs].id, id, strlen(id) + 1);
        refs[*nrefs].seen = 0;
        (*nrefs)++;
    }
    spt_resp_free(&r);
}

static int worker_start(spt_proc_t *w, const char *how, const char *where, const char *name)
{
    char conc[16];
    snprintf(conc, sizeof conc, "%d", CONCURRENCY);
    const char *args[] = {how,    where,    "--queues", QUEUE, "--concurrency", conc, "--log-level",
                          "warn", "--name", name,       NULL};
    return spt_start(w, "spool-worker", args, NULL, false);
}

/* Kills with -9 and reaps; the exit code is 128 + SIGKILL unless it had died already. */
static void kill_hard(spt_proc_t *p, const char *what)
{
    assert_int_equal(spt_signal(p, SIGKILL), 0);
    int code = spt_finish(p, 10000, NULL, NULL);
    if (code != 128 + SIGKILL) fail_msg("%s exited with %d before it was killed", what, code);
}

static job_ref_t *ref_find(job_ref_t *refs, int nrefs, const char *id)
{
    if (strlen(id) >= ID_CAP) return NULL;
    job_ref_t key;
    memcpy(key.id, id, strlen(id) + 1);
    return bsearch(&key, refs, (size_t)nrefs, sizeof(*refs), ref_cmp);
}

/* Pages through the running jobs; each one run by the worker process name and whose held mark is
 * from (a previous pass) gets from + 1. Returns how many were marked. */
static int mark_running(int port, const char *name, job_ref_t *refs, int nrefs, int from)
{
    int marked = 0;
    char after[ID_CAP] = "";
    for (;;) {
        char target[128];
        snprintf(target, sizeof target, "/v1/queues/" QUEUE "/jobs?state=running&limit=1000%s%s",
                 after[0] ? "&after=" : "", after);
        spt_resp_t r = spt_do(port, "GET", target, NULL, NULL);
        assert_int_equal(r.status, 200);
        const cJSON *j;
        cJSON_ArrayForEach(j, cJSON_GetObjectItemCaseSensitive(r.json, "jobs"))
        {
            /* A worker process names each of its slots NAME/N. */
            const char *w = spt_jstr(j, "worker");
            size_t nl = strlen(name);
            if (!w || strncmp(w, name, nl) != 0 || w[nl] != '/') continue;
            job_ref_t *ref = ref_find(refs, nrefs, spt_jstr(j, "id") ? spt_jstr(j, "id") : "");
            if (!ref) fail_msg("running job %s was never submitted", spt_jstr(j, "id"));
            if (ref->held == from) {
                ref->held = from + 1;
                marked++;
            }
        }
        const cJSON *next = cJSON_GetObjectItemCaseSensitive(r.json, "next");
        int more = cJSON_IsString(next) && strlen(next->valuestring) < ID_CAP;
        if (more) memcpy(after, next->valuestring, strlen(next->valuestring) + 1);
        spt_resp_free(&r);
        if (!more) return marked;
    }
}

/* Stops the worker (SIGSTOP) and marks the jobs it holds, until it holds at least one; then
 * kills it. The marks are those of two listings in a row while it is stopped: an ack it sent
 * just before it stopped has landed by the second, so every job marked HELD is one whose
 * attempt dies with it. Returns how many. */
static int kill_holding(spt_proc_t *w, const char *name, int port, job_ref_t *refs, int nrefs,
                        long long deadline)
{
    for (;;) {
        assert_int_equal(spt_signal(w, SIGSTOP), 0);
        for (int i = 0; i < nrefs; i++) refs[i].held = 0;
        mark_running(port, name, refs, nrefs, 0);
        int held = mark_running(port, name, refs, nrefs, HELD - 1);
        if (held > 0) {
            kill_hard(w, name);
            return held;
        }
        /* Between an ack and the next lease it may hold nothing for a moment. */
        assert_int_equal(spt_signal(w, SIGCONT), 0);
        if (spt_now_ms() > deadline) fail_msg("worker %s never held a job", name);
        spt_sleep_ms(20);
    }
}

static long long succeeded_now(int port)
{
    return spt_queue_num(port, QUEUE, "counts", "succeeded");
}

/* Pages through every succeeded job on port: each must be one of refs, seen once, and done, a
 * job the killed worker held with a second attempt after its lease expired; returns how many
 * took more than one attempt. */
static int check_succeeded(int port, job_ref_t *refs, int nrefs, int *expired)
{
    int total = 0, retried = 0;
    *expired = 0;
    char after[ID_CAP] = "";
    for (;;) {
        char target[128];
        if (after[0])
            snprintf(target, sizeof target,
                     "/v1/queues/" QUEUE "/jobs?state=succeeded&limit=1000&after=%s", after);
        else
            snprintf(target, sizeof target, "/v1/queues/" QUEUE "/jobs?state=succeeded&limit=1000");
        spt_resp_t r = spt_do(port, "GET", target, NULL, NULL);
        assert_int_equal(r.status, 200);
        const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(r.json, "jobs");
        assert_true(cJSON_IsArray(jobs));
        const cJSON *j;
        cJSON_ArrayForEach(j, jobs)
        {
            const char *id = spt_jstr(j, "id");
            assert_non_null(id);
            assert_true(strlen(id) < ID_CAP);
            job_ref_t *ref = ref_find(refs, nrefs, id);
            if (!ref) fail_msg("job %s succeeded but was never submitted", id);
            if (ref->seen) fail_msg("job %s listed twice", id);
            ref->seen = 1;
            SPT_ASSERT_STR(spt_jstr(j, "state"), "succeeded");
            long long attempts = spt_jint(j, "attempts");
            SPT_ASSERT_BETWEEN(attempts, 1, 10);
            const char *err = spt_jstr(j, "last_error");
            bool lost = err && strstr(err, "lease expired");
            if (attempts > 1) retried++;
            if (attempts > 1 && lost) (*expired)++;
            if (ref->held == HELD && (attempts < 2 || !lost))
                fail_msg("job %s, held by the killed worker, has %lld attempts, last_error %s", id,
                         attempts, err ? err : "null");
            total++;
        }
        const cJSON *next = cJSON_GetObjectItemCaseSensitive(r.json, "next");
        if (!cJSON_IsString(next)) {
            spt_resp_free(&r);
            break;
        }
        assert_true(strlen(next->valuestring) < ID_CAP);
        memcpy(after, next->valuestring, strlen(next->valuestring) + 1);
        spt_resp_free(&r);
    }
    assert_int_equal(total, nrefs);
    for (int i = 0; i < nrefs; i++)
        if (!refs[i].seen) fail_msg("job %s is not among the succeeded ones", refs[i].id);
    return retried;
}

static void test_kill_one_server_and_one_worker(void **state)
{
    (void)state;
    spt_redis_t redis;
    assert_int_equal(spt_redis_start(&redis, NULL), 0);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", redis.port);

    spt_proc_t s[2];
    for (int i = 0; i < 2; i++) SPT_START(s[i], "--backend", url, "--log-level", "warn");

    /* Static rather than malloc'd: a failed assertion jumps out of the test and leaks nothing. */
    static job_ref_t refs[JOBS];
    int nrefs = 0;
    long long t0 = spt_now_ms();
    for (int b = 0; b < JOBS / BATCH; b++) submit_batch(s[b % 2].port, refs, &nrefs);
    long long t_submitted = spt_now_ms();
    assert_int_equal(nrefs, JOBS);
    assert_int_equal(spt_queue_num(s[0].port, QUEUE, "counts", "queued"), JOBS);
    assert_int_equal(spt_queue_num(s[1].port, QUEUE, "totals", "enqueued"), JOBS);
    qsort(refs, (size_t)nrefs, sizeof(*refs), ref_cmp);
    for (int i = 1; i < nrefs; i++)
        if (ref_cmp(&refs[i - 1], &refs[i]) == 0) fail_msg("id %s given twice", refs[i].id);

    /* The workers start once every job is queued, so that the kill below falls mid-run by
     * count, not by how fast submissions were. w[0] takes jobs from Redis itself; w[1] leases
     * over HTTP from s[1], the server that stays. w[0] starts alone, and w[1] once w[0] has
     * finished a job: however slowly w[0] starts, it is at work when the time comes to kill it. */
    spt_proc_t w[2];
    char s1_url[96];
    snprintf(s1_url, sizeof s1_url, "http://%s", s[1].addr);
    long long t_workers = spt_now_ms();
    long long deadline = t_workers + FINISH_MS;
    assert_int_equal(worker_start(&w[0], "--backend", url, "doomed"), 0);
    while (succeeded_now(s[1].port) < 1) {
        if (spt_now_ms() > deadline) fail_msg("the Redis worker did no job");
        spt_sleep_ms(20);
    }
    assert_int_equal(worker_start(&w[1], "--server", s1_url, "survivor"), 0);

    long long n = 0;
    while ((n = succeeded_now(s[1].port)) < KILL_AT) {
        if (spt_now_ms() > deadline) fail_msg("only %lld jobs succeeded before the kill", n);
        spt_sleep_ms(20);
    }
    long long at_kill = n;
    kill_hard(&s[0], "spool-server s0");
    int held = kill_holding(&w[0], "doomed", s[1].port, refs, nrefs, deadline);
    long long t_kill = spt_now_ms();
    printf("# killed s0, and the Redis worker holding %d jobs, with %lld of %d jobs succeeded\n",
           held, at_kill, JOBS);

    while ((n = succeeded_now(s[1].port)) < JOBS) {
        if (spt_now_ms() > deadline)
            fail_msg("%lld of %d jobs succeeded in %d s after the workers started", n, JOBS,
                     FINISH_MS / 1000);
        spt_sleep_ms(50);
    }
    long long t_done = spt_now_ms();
    assert_int_equal(n, JOBS);
    assert_int_equal(spt_queue_num(s[1].port, QUEUE, "counts", "failed"), 0);
    assert_int_equal(spt_queue_num(s[1].port, QUEUE, "counts", "running"), 0);
    assert_int_equal(spt_queue_num(s[1].port, QUEUE, "counts", "queued"), 0);
    assert_int_equal(spt_queue_num(s[1].port, QUEUE, "counts", "scheduled"), 0);
    assert_int_equal(spt_queue_num(s[1].port, QUEUE, "totals", "enqueued"), JOBS);
    assert_int_equal(spt_queue_num(s[1].port, QUEUE, "totals", "succeeded"), JOBS);

    int expired = 0;
    int retried = check_succeeded(s[1].port, refs, nrefs, &expired);
    printf("# %d jobs took a second attempt (%d after an expired lease); the killed worker held "
           "%d\n",
           retried, expired, held);
    printf("# submit %lld ms, to the kill %lld ms, kill to all done %lld ms, total %lld ms\n",
           t_submitted - t0, t_kill - t_workers, t_done - t_kill, t_done - t0);
    /* The attempts the killed worker held run again; no worker holds more than its
     * concurrency, so anything beyond that is a job done twice. */
    SPT_ASSERT_BETWEEN(retried, held, CONCURRENCY);

    assert_int_equal(spt_stop(&w[1]), 0);
    assert_int_equal(spt_stop(&s[1]), 0);
    assert_int_equal(spt_redis_stop(&redis, false), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_one_server_and_one_worker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
