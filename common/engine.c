/*
 * engine.c - the in-memory queue engine (see engine.h): jobs and their states, queues with
 * their ready lists, the timer heap, leases, retries, retention and the idempotency index.
 * No I/O and no clock of its own: time is the caller's `now`.
 *
 * Layout, chosen for memory at millions of jobs:
 * - a job is one allocation: fixed fields, then the payload bytes inline;
 * - what a job shares with its siblings (queue, type, timeout, backoff, max_attempts) lives in
 *   a reference-counted "class" interned per queue, so a job holds one pointer for all of it;
 * - what only a leased, finished or keyed job needs lives in an optional extension block;
 * - a job is in exactly one of: the timer heap (scheduled, running), a ready list (queued) or
 *   the finished list (finished), so the list links and the heap slot share storage.
 */
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NPRIO 10
#define BACKOFF_CAP_MS 3600000
#define DAY_MS 86400000LL
#define STATE_NEW 0xff /* a job being created: not yet anywhere */

/* An intrusive circular doubly linked list; a list is its own sentinel node. */
struct dl {
    struct dl *prev, *next;
};

/* A worker name shared by every job one lease call hands out. */
struct rstr {
    uint32_t refs;
    uint32_t len;
    char s[];
};

/* What jobs of one queue with the same type and settings share. */
struct jclass {
    uint64_t hash;
    sp_equeue_t *q;
    uint32_t refs;
    uint32_t timeout_ms;
    uint32_t backoff_ms;
    uint16_t max_attempts;
    uint8_t type_len;
    char type[]; /* NUL-terminated */
};

/* What only a leased, finished or keyed job needs. */
struct jext {
    sp_ejob_t *job;
    int64_t started_at;
    int64_t finished_at;
    int64_t lease_expires_at;
    uint64_t lease; /* the current lease, or the last one once the job is finished */
    struct rstr *worker;
    char *result;
    size_t result_len;
    const char *last_error; /* owned unless error_static */
    size_t last_error_len;
    struct dl idem_link; /* in the engine's idempotency FIFO while idem_live */
    uint64_t idem_hash;
    bool cancel_requested;
    bool error_static;
    bool has_key;
    bool idem_live;
    uint16_t idem_key_len;
    char idem_key[];
};

struct sp_ejob {
    uint64_t id;
    int64_t created_at;
    int64_t run_at;  /* when it became (or becomes) eligible to run */
    struct dl qlink; /* the queue's list of all its jobs, in id order */
    union {
        struct dl link;    /* queued: a ready list; finished: the finished list */
        uint32_t heap_idx; /* scheduled, running: slot in the timer heap */
    } u;
    struct jclass *cls;
    struct jext *ext;
    uint32_t payload_len;
    uint8_t priority;
    uint8_t state;
    uint16_t attempts;
    char payload[];
};

/* An open-addressing table of pointers with linear probing; the slot comes from the top bits of
 * a 64-bit hash, deletion shifts entries back so that no tombstones are needed. */
struct ptab {
    void **slots;
    unsigned bits;
    size_t count;
};

typedef uint64_t (*hash_fn)(const void *p);

struct sp_equeue {
    struct dl ready[NPRIO];
    struct dl all;
    uint64_t counts[SP_STATE_COUNT];
    uint64_t enqueued, succeeded, failed, retried, leased, canceled;
    struct ptab classes;
    uint64_t hash;
    uint64_t idem_k0; /* keys the idempotency hash, so that equal keys differ across queues */
    bool paused;
    size_t name_len;
    char name[]; /* NUL-terminated */
};

struct sp_engine {
    sp_engine_opts_t o;
    uint64_t rng;
    uint64_t hk0, hk1;
    uint64_t next_id;
    size_t njobs;
    struct ptab ids;
    struct ptab qnames;
    sp_equeue_t **queues;
    size_t nqueues, qcap;
    sp_ejob_t **heap;
    size_t heap_len, heap_cap;
    struct dl finished;  /* finished jobs, by finish time */
    struct ptab idem;    /* jobs whose idempotency key is live */
    struct dl idem_fifo; /* their extensions, by creation time */
    bool batching;       /* a batch fires on_ready once, at its end */
};

/* ---- small helpers ----------------------------------------------------------------------- */

static void dl_init(struct dl *h)
{
    h->prev = h->next = h;
}

static bool dl_empty(const struct dl *h)
{
    return h->next == h;
}

static void dl_push(struct dl *h, struct dl *n)
{
    n->prev = h->prev;
    n->next = h;
    h->prev->next = n;
    h->prev = n;
}

static void dl_del(struct dl *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = NULL;
}

#define JOB_OF_LINK(n) sp_container_of(n, sp_ejob_t, u.link)
#define JOB_OF_QLINK(n) sp_container_of(n, sp_ejob_t, qlink)

static int64_t sat_add(int64_t a, int64_t b)
{
    if (b > 0 && a > INT64_MAX - b) return INT64_MAX;
    if (b < 0 && a < INT64_MIN - b) return INT64_MIN;
    return a + b;
}

static uint64_t rng_next(sp_engine_t *e)
{
    /* splitmix64: fast, and every seed gives a full-period sequence */
    uint64_t z = (e->rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static void sipround(uint64_t v[4])
{
    v[0] += v[1];
    v[1] = rotl(v[1], 13);
    v[1] ^= v[0];
    v[0] = rotl(v[0], 32);
    v[2] += v[3];
    v[3] = rotl(v[3], 16);
    v[3] ^= v[2];
    v[0] += v[3];
    v[3] = rotl(v[3], 21);
    v[3] ^= v[0];
    v[2] += v[1];
    v[1] = rotl(v[1], 17);
    v[1] ^= v[2];
    v[2] = rotl(v[2], 32);
}

/* SipHash-1-3: keys, types and queue names come from clients, so the tables that hold them use
 * a keyed hash against collision flooding. */
static uint64_t siphash(const void *src, size_t len, uint64_t k0, uint64_t k1)
{
    const unsigned char *in = src;
    uint64_t v[4] = {0x736f6d6570736575ULL ^ k0, 0x646f72616e646f6dULL ^ k1,
                     0x6c7967656e657261ULL ^ k0, 0x7465646279746573ULL ^ k1};
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t m;
        memcpy(&m, in + i, 8);
        v[3] ^= m;
        sipround(v);
        v[0] ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    for (size_t k = 0; i + k < len; k++) b |= (uint64_t)in[i + k] << (8 * k);
    v[3] ^= b;
    sipround(v);
    v[0] ^= b;
    v[2] ^= 0xff;
    sipround(v);
    sipround(v);
    sipround(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* Fibonacci hashing: sequential ids land evenly spread over the top bits. */
static uint64_t id_hash(uint64_t id)
{
    return id * 0x9E3779B97F4A7C15ULL;
}

/* ---- pointer tables ---------------------------------------------------------------------- */

static size_t ptab_cap(const struct ptab *t)
{
    return t->slots ? (size_t)1 << t->bits : 0;
}

static size_t ptab_home(const struct ptab *t, uint64_t h)
{
    return (size_t)(h >> (64 - t->bits));
}

static void ptab_put(struct ptab *t, void *p, uint64_t h)
{
    size_t mask = ptab_cap(t) - 1;
    size_t i = ptab_home(t, h);
    while (t->slots[i]) i = (i + 1) & mask;
    t->slots[i] = p;
    t->count++;
}

/* Makes room for `extra` more entries at a load of at most 3/4. */
static int ptab_reserve(struct ptab *t, size_t extra, hash_fn hf)
{
    if (extra > SIZE_MAX / 8 - t->count) return SP_ENOMEM;
    size_t need = t->count + extra;
    if (need * 4 <= ptab_cap(t) * 3) return 0;
    unsigned bits = t->bits < 4 ? 4 : t->bits;
    while (((size_t)1 << bits) * 3 < need * 4) {
        if (bits >= sizeof(size_t) * 8 - 4) return SP_ENOMEM;
        bits++;
    }
    void **slots = calloc((size_t)1 << bits, sizeof(void *));
    if (!slots) return SP_ENOMEM;
    struct ptab nt = {slots, bits, 0};
    size_t cap = ptab_cap(t);
    for (size_t i = 0; i < cap; i++)
        if (t->slots[i]) ptab_put(&nt, t->slots[i], hf(t->slots[i]));
    free(t->slots);
    *t = nt;
    return 0;
}

/* Gives memory back after a burst: at a load under 1/8, halves down to a load near 3/8, so
 * that growing again is far off. Short of memory it keeps the larger table. */
static void ptab_shrink(struct ptab *t, hash_fn hf)
{
    size_t cap = ptab_cap(t);
    if (cap <= 64 || t->count * 8 >= cap) return;
    unsigned bits = 6;
    while (((size_t)1 << bits) * 3 < t->count * 8) bits++;
    if (bits >= t->bits) return;
    void **slots = calloc((size_t)1 << bits, sizeof(void *));
    if (!slots) return;
    struct ptab nt = {slots, bits, 0};
    for (size_t i = 0; i < cap; i++)
        if (t->slots[i]) ptab_put(&nt, t->slots[i], hf(t->slots[i]));
    free(t->slots);
    *t = nt;
}

static void ptab_del(struct ptab *t, const void *p, uint64_t h, hash_fn hf)
{
    size_t mask = ptab_cap(t) - 1;
    size_t i = ptab_home(t, h);
    while (t->slots[i] != p) i = (i + 1) & mask;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!t->slots[j]) break;
        size_t k = ptab_home(t, hf(t->slots[j]));
        /* An entry stays where it is when its home lies cyclically in (i, j]. */
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (stays) continue;
        t->slots[i] = t->slots[j];
        i = j;
    }
    t->slots[i] = NULL;
    t->count--;
}

static void ptab_free(struct ptab *t)
{
    free(t->slots);
    t->slots = NULL;
    t->bits = 0;
    t->count = 0;
}

static uint64_t job_id_hashfn(const void *p)
{
    return id_hash(((const sp_ejob_t *)p)->id);
}

static uint64_t job_idem_hashfn(const void *p)
{
    return ((const sp_ejob_t *)p)->ext->idem_hash;
}

static uint64_t class_hashfn(const void *p)
{
    return ((const struct jclass *)p)->hash;
}

static uint64_t queue_hashfn(const void *p)
{
    return ((const sp_equeue_t *)p)->hash;
}

/* ---- the timer heap ---------------------------------------------------------------------- */

/* When the job needs the engine's attention: a scheduled job at run_at, a running one at the
 * first millisecond after its lease (which is honoured up to lease_expires_at inclusive). */
static int64_t job_due(const sp_ejob_t *j)
{
    if (j->state == SP_STATE_SCHEDULED) return j->run_at;
    return sat_add(j->ext->lease_expires_at, 1);
}

static void heap_set(sp_engine_t *e, size_t i, sp_ejob_t *j)
{
    e->heap[i] = j;
    j->u.heap_idx = (uint32_t)i;
}

static void heap_up(sp_engine_t *e, size_t i)
{
    sp_ejob_t *j = e->heap[i];
    int64_t d = job_due(j);
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (job_due(e->heap[p]) <= d) break;
        heap_set(e, i, e->heap[p]);
        i = p;
    }
    heap_set(e, i, j);
}

static void heap_down(sp_engine_t *e, size_t i)
{
    sp_ejob_t *j = e->heap[i];
    int64_t d = job_due(j);
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= e->heap_len) break;
        if (c + 1 < e->heap_len && job_due(e->heap[c + 1]) < job_due(e->heap[c])) c++;
        if (d <= job_due(e->heap[c])) break;
        heap_set(e, i, e->heap[c]);
        i = c;
    }
    heap_set(e, i, j);
}

static int heap_reserve(sp_engine_t *e, size_t extra)
{
    if (extra > UINT32_MAX - e->heap_len) return SP_ENOMEM;
    size_t need = e->heap_len + extra;
    if (need <= e->heap_cap) return 0;
    size_t cap = e->heap_cap ? e->heap_cap : 64;
    while (cap < need) cap *= 2;
    sp_ejob_t **h = realloc(e->heap, cap * sizeof(*h));
    if (!h) return SP_ENOMEM;
    e->heap = h;
    e->heap_cap = cap;
    return 0;
}

static void heap_shrink(sp_engine_t *e)
{
    if (e->heap_cap <= 1024 || e->heap_len * 4 >= e->heap_cap) return;
    sp_ejob_t **h = realloc(e->heap, e->heap_cap / 2 * sizeof(*h));
    if (!h) return;
    e->heap = h;
    e->heap_cap /= 2;
}

static void heap_push(sp_engine_t *e, sp_ejob_t *j)
{
    heap_set(e, e->heap_len++, j);
    heap_up(e, e->heap_len - 1);
}

static void heap_fix(sp_engine_t *e, size_t i)
{
    if (i > 0 && job_due(e->heap[i]) < job_due(e->heap[(i - 1) / 2]))
        heap_up(e, i);
    else
        heap_down(e, i);
}

static void heap_remove(sp_engine_t *e, sp_ejob_t *j)
{
    size_t i = j->u.heap_idx;
    sp_ejob_t *last = e->heap[--e->heap_len];
    if (i == e->heap_len) return;
    heap_set(e, i, last);
    heap_fix(e, i);
}

/* ---- classes, extensions, strings -------------------------------------------------------- */

static uint64_t class_hash(const sp_engine_t *e, const sp_job_spec_t *s)
{
    uint64_t h = siphash(s->type, s->type_len, e->hk0, e->hk1);
    uint64_t p =
        ((uint64_t)s->timeout_ms << 32) ^ s->backoff_ms ^ ((uint64_t)s->max_attempts << 48);
    return h ^ id_hash(p ^ 0x5bd1e995ULL);
}

static bool class_matches(const struct jclass *c, uint64_t h, const sp_job_spec_t *s)
{
    return c->hash == h && c->type_len == s->type_len && c->timeout_ms == s->timeout_ms &&
           c->backoff_ms == s->backoff_ms && c->max_attempts == s->max_attempts &&
           memcmp(c->type, s->type, s->type_len) == 0;
}

/* Finds or creates the class of a spec in q and takes a reference to it. */
static struct jclass *class_get(sp_engine_t *e, sp_equeue_t *q, const sp_job_spec_t *s)
{
    uint64_t h = class_hash(e, s);
    struct ptab *t = &q->classes;
    if (t->slots) {
        size_t mask = ptab_cap(t) - 1;
        for (size_t i = ptab_home(t, h); t->slots[i]; i = (i + 1) & mask) {
            struct jclass *c = t->slots[i];
            if (class_matches(c, h, s)) {
                c->refs++;
                return c;
            }
        }
    }
    if (ptab_reserve(t, 1, class_hashfn) != 0) return NULL;
    struct jclass *c = malloc(sizeof(*c) + s->type_len + 1);
    if (!c) return NULL;
    c->hash = h;
    c->q = q;
    c->refs = 1;
    c->timeout_ms = s->timeout_ms;
    c->backoff_ms = s->backoff_ms;
    c->max_attempts = (uint16_t)s->max_attempts;
    c->type_len = (uint8_t)s->type_len;
    memcpy(c->type, s->type, s->type_len);
    c->type[s->type_len] = '\0';
    ptab_put(t, c, h);
    return c;
}

static void class_put(struct jclass *c)
{
    if (--c->refs > 0) return;
    ptab_del(&c->q->classes, c, c->hash, class_hashfn);
    free(c);
}

static void rstr_put(struct rstr *s)
{
    if (s && --s->refs == 0) free(s);
}

static struct jext *ext_new(sp_ejob_t *j, const char *key, size_t key_len, bool has_key)
{
    struct jext *x = malloc(sizeof(*x) + key_len);
    if (!x) return NULL;
    memset(x, 0, sizeof(*x));
    x->job = j;
    x->started_at = -1;
    x->finished_at = -1;
    x->lease_expires_at = -1;
    x->has_key = has_key;
    x->idem_key_len = (uint16_t)key_len;
    if (key_len) memcpy(x->idem_key, key, key_len);
    return x;
}

static void ext_set_error(struct jext *x, const char *text, size_t len, bool is_static)
{
    if (!x->error_static) free((char *)x->last_error);
    x->last_error = text;
    x->last_error_len = len;
    x->error_static = is_static;
}

static void ext_free(struct jext *x)
{
    if (!x) return;
    rstr_put(x->worker);
    free(x->result);
    if (!x->error_static) free((char *)x->last_error);
    free(x);
}

/* A NUL-terminated copy (NUL bytes inside are kept: lengths travel with the text). */
static char *copy_bytes(const char *s, size_t len)
{
    if (len == SIZE_MAX) return NULL;
    char *c = malloc(len + 1);
    if (!c) return NULL;
    if (len) memcpy(c, s, len);
    c[len] = '\0';
    return c;
}

/* Gives a job its extension block now, so that later steps cannot fail. */
static int ensure_ext(sp_ejob_t *j)
{
    if (j->ext) return 0;
    j->ext = ext_new(j, NULL, 0, false);
    return j->ext ? 0 : SP_ENOMEM;
}

/* ---- state changes ----------------------------------------------------------------------- */

/* Takes a job out of where its state keeps it: the heap, a ready list or the finished list. */
static void leave_state(sp_engine_t *e, sp_ejob_t *j)
{
    switch ((sp_state_t)j->state) {
    case SP_STATE_SCHEDULED:
    case SP_STATE_RUNNING:
        heap_remove(e, j);
        break;
    case SP_STATE_QUEUED:
    case SP_STATE_SUCCEEDED:
    case SP_STATE_FAILED:
    case SP_STATE_CANCELED:
        dl_del(&j->u.link);
        break;
    }
    j->cls->q->counts[j->state]--;
}

static void finish(sp_engine_t *e, sp_ejob_t *j, int64_t now)
{
    j->ext->finished_at = now;
    dl_push(&e->finished, &j->u.link);
}

/* Moves a job to state `to`: takes it out of where its old state kept it, puts it where the new
 * one keeps it, adjusts counts and totals, then tells the observers. What the new place depends
 * on (run_at, lease_expires_at, the extension block of a finishing job, heap capacity) must be
 * set up by the caller first, so that nothing here can fail. */
static void set_state(sp_engine_t *e, sp_ejob_t *j, sp_state_t to, int64_t now)
{
    sp_equeue_t *q = j->cls->q;
    int from = j->state == STATE_NEW ? -1 : j->state;
    if (from >= 0) leave_state(e, j);
    j->state = (uint8_t)to;
    q->counts[to]++;
    switch (to) {
    case SP_STATE_SCHEDULED:
        heap_push(e, j);
        break;
    case SP_STATE_QUEUED:
        dl_push(&q->ready[j->priority], &j->u.link);
        break;
    case SP_STATE_RUNNING:
        q->leased++;
        heap_push(e, j);
        break;
    case SP_STATE_SUCCEEDED:
        q->succeeded++;
        finish(e, j, now);
        break;
    case SP_STATE_FAILED:
        q->failed++;
        finish(e, j, now);
        break;
    case SP_STATE_CANCELED:
        q->canceled++;
        finish(e, j, now);
        break;
    }
    if (e->o.on_change) e->o.on_change(e->o.ud, j, from, to);
    if (to == SP_STATE_QUEUED && !e->batching && e->o.on_ready) e->o.on_ready(e->o.ud, q);
}

static void idem_unlink(sp_engine_t *e, sp_ejob_t *j)
{
    struct jext *x = j->ext;
    if (!x || !x->idem_live) return;
    ptab_del(&e->idem, j, x->idem_hash, job_idem_hashfn);
    dl_del(&x->idem_link);
    x->idem_live = false;
}

static void job_free(sp_ejob_t *j)
{
    ext_free(j->ext);
    class_put(j->cls);
    free(j);
}

/* Forgets a job entirely: out of every structure, memory freed. */
static void job_forget(sp_engine_t *e, sp_ejob_t *j)
{
    leave_state(e, j);
    idem_unlink(e, j);
    ptab_del(&e->ids, j, id_hash(j->id), job_id_hashfn);
    dl_del(&j->qlink);
    e->njobs--;
    job_free(j);
}

/* After jobs were forgotten: the tables give back what a burst made them grow to. */
static void shrink_tables(sp_engine_t *e)
{
    ptab_shrink(&e->ids, job_id_hashfn);
    ptab_shrink(&e->idem, job_idem_hashfn);
    heap_shrink(e);
}

/* ---- engine ------------------------------------------------------------------------------ */

void sp_engine_opts_default(sp_engine_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->retention_ms = DAY_MS;
    o->idem_ttl_ms = DAY_MS;
    o->first_id = 1;
}

sp_engine_t *sp_engine_new(const sp_engine_opts_t *opts)
{
    sp_engine_t *e = calloc(1, sizeof(*e));
    if (!e) return NULL;
    if (opts)
        e->o = *opts;
    else
        sp_engine_opts_default(&e->o);
    if (e->o.retention_ms < 0) e->o.retention_ms = 0;
    if (e->o.idem_ttl_ms < 0) e->o.idem_ttl_ms = 0;
    e->next_id = e->o.first_id ? e->o.first_id : 1;
    e->rng = e->o.seed;
    if (!e->rng) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        e->rng = ((uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec) ^
                 ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)e;
    }
    e->hk0 = rng_next(e);
    e->hk1 = rng_next(e);
    dl_init(&e->finished);
    dl_init(&e->idem_fifo);
    return e;
}

void sp_engine_free(sp_engine_t *e)
{
    if (!e) return;
    for (size_t i = 0; i < e->nqueues; i++) {
        sp_equeue_t *q = e->queues[i];
        struct dl *n = q->all.next;
        while (n != &q->all) {
            struct dl *next = n->next;
            job_free(JOB_OF_QLINK(n));
            n = next;
        }
        ptab_free(&q->classes);
        free(q);
    }
    free(e->queues);
    ptab_free(&e->ids);
    ptab_free(&e->qnames);
    ptab_free(&e->idem);
    free(e->heap);
    free(e);
}

/* ---- queues ------------------------------------------------------------------------------ */

sp_equeue_t *sp_engine_queue_find(sp_engine_t *e, const char *name, size_t len)
{
    struct ptab *t = &e->qnames;
    if (!t->slots) return NULL;
    uint64_t h = siphash(name, len, e->hk0, e->hk1);
    size_t mask = ptab_cap(t) - 1;
    for (size_t i = ptab_home(t, h); t->slots[i]; i = (i + 1) & mask) {
        sp_equeue_t *q = t->slots[i];
        if (q->hash == h && q->name_len == len && memcmp(q->name, name, len) == 0) return q;
    }
    return NULL;
}

int sp_engine_queue_get(sp_engine_t *e, const char *name, size_t len, sp_equeue_t **out)
{
    sp_equeue_t *q = sp_engine_queue_find(e, name, len);
    if (q) {
        *out = q;
        return 0;
    }
    if (len > SIZE_MAX / 2) return SP_ENOMEM;
    if (ptab_reserve(&e->qnames, 1, queue_hashfn) != 0) return SP_ENOMEM;
    if (e->nqueues == e->qcap) {
        size_t cap = e->qcap ? e->qcap * 2 : 8;
        sp_equeue_t **qs = realloc(e->queues, cap * sizeof(*qs));
        if (!qs) return SP_ENOMEM;
        e->queues = qs;
        e->qcap = cap;
    }
    q = calloc(1, sizeof(*q) + len + 1);
    if (!q) return SP_ENOMEM;
    for (int p = 0; p < NPRIO; p++) dl_init(&q->ready[p]);
    dl_init(&q->all);
    q->hash = siphash(name, len, e->hk0, e->hk1);
    q->idem_k0 = e->hk0 ^ id_hash(e->nqueues + 1);
    q->name_len = len;
    if (len) memcpy(q->name, name, len);
    q->name[len] = '\0';
    ptab_put(&e->qnames, q, q->hash);
    e->queues[e->nqueues++] = q;
    *out = q;
    return 0;
}

void sp_engine_queue_stats(const sp_engine_t *e, const sp_equeue_t *q, int64_t now,
                           sp_queue_stats_t *out)
{
    (void)e;
    memset(out, 0, sizeof(*out));
    out->name = q->name;
    out->name_len = q->name_len;
    out->paused = q->paused;
    memcpy(out->counts, q->counts, sizeof(out->counts));
    bool any = false;
    int64_t oldest = 0;
    for (int p = 0; p < NPRIO; p++) {
        if (dl_empty(&q->ready[p])) continue;
        int64_t t = JOB_OF_LINK(q->ready[p].next)->run_at;
        if (!any || t < oldest) oldest = t;
        any = true;
    }
    out->oldest_queued_age_ms = any && now > oldest ? now - oldest : 0;
    out->enqueued = q->enqueued;
    out->succeeded = q->succeeded;
    out->failed = q->failed;
    out->retried = q->retried;
    out->leased = q->leased;
    out->canceled = q->canceled;
}

size_t sp_engine_queue_count(const sp_engine_t *e)
{
    return e->nqueues;
}

sp_equeue_t *sp_engine_queue_at(const sp_engine_t *e, size_t i)
{
    return i < e->nqueues ? e->queues[i] : NULL;
}

const char *sp_equeue_name(const sp_equeue_t *q, size_t *len)
{
    if (len) *len = q->name_len;
    return q->name;
}

int sp_engine_pause(sp_engine_t *e, const char *name, size_t len, sp_equeue_t **out)
{
    sp_equeue_t *q;
    int rc = sp_engine_queue_get(e, name, len, &q);
    if (rc) return rc;
    q->paused = true;
    if (out) *out = q;
    return 0;
}

int sp_engine_resume(sp_engine_t *e, const char *name, size_t len, sp_equeue_t **out)
{
    sp_equeue_t *q;
    int rc = sp_engine_queue_get(e, name, len, &q);
    if (rc) return rc;
    bool was = q->paused;
    q->paused = false;
    if (out) *out = q;
    if (was && q->counts[SP_STATE_QUEUED] > 0 && e->o.on_ready) e->o.on_ready(e->o.ud, q);
    return 0;
}

bool sp_equeue_has_ready(const sp_equeue_t *q)
{
    return !q->paused && q->counts[SP_STATE_QUEUED] > 0;
}

/* ---- submission -------------------------------------------------------------------------- */

static uint64_t idem_hash(const sp_equeue_t *q, const char *key, size_t len, uint64_t k1)
{
    return siphash(key, len, q->idem_k0, k1);
}

/* The job holding a live key in q, or NULL; a key past its time is dropped on the way, as tick
 * would have done. */
static sp_ejob_t *idem_find(sp_engine_t *e, const sp_equeue_t *q, const char *key, size_t len,
                            uint64_t h, int64_t now)
{
    struct ptab *t = &e->idem;
    if (!t->slots) return NULL;
    size_t mask = ptab_cap(t) - 1;
    for (size_t i = ptab_home(t, h); t->slots[i]; i = (i + 1) & mask) {
        sp_ejob_t *j = t->slots[i];
        struct jext *x = j->ext;
        if (x->idem_hash != h || j->cls->q != q || x->idem_key_len != len ||
            memcmp(x->idem_key, key, len) != 0)
            continue;
        if (sat_add(j->created_at, e->o.idem_ttl_ms) <= now) {
            idem_unlink(e, j);
            return NULL;
        }
        return j;
    }
    return NULL;
}

static int spec_check(const sp_job_spec_t *s)
{
    if (s->type_len == 0 || s->type_len > SP_NAME_MAX) return SP_EINVAL;
    if (s->priority < 0 || s->priority >= NPRIO) return SP_EINVAL;
    if (s->max_attempts < 1 || s->max_attempts > UINT16_MAX) return SP_EINVAL;
    if (s->has_idem_key && s->idem_key_len > SP_IDEM_KEY_MAX) return SP_EINVAL;
    if (s->payload_len > UINT32_MAX || (s->payload_len && !s->payload)) return SP_EINVAL;
    return 0;
}

/* For each spec of a batch: the index of an earlier spec with the same key, or SIZE_MAX. */
static int batch_dups(const sp_job_spec_t *specs, size_t n, const uint64_t *hashes, size_t *dup_of)
{
    size_t cap = 8;
    while (cap < 2 * n) cap *= 2;
    size_t *slots = calloc(cap, sizeof(*slots)); /* spec index + 1, 0 = empty */
    if (!slots) return SP_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        dup_of[i] = SIZE_MAX;
        if (!specs[i].has_idem_key) continue;
        size_t k = (size_t)(hashes[i] >> 1) & (cap - 1);
        for (;; k = (k + 1) & (cap - 1)) {
            if (!slots[k]) {
                slots[k] = i + 1;
                break;
            }
            const sp_job_spec_t *o = &specs[slots[k] - 1];
            if (hashes[slots[k] - 1] == hashes[i] && o->idem_key_len == specs[i].idem_key_len &&
                memcmp(o->idem_key, specs[i].idem_key, o->idem_key_len) == 0) {
                dup_of[i] = slots[k] - 1;
                break;
            }
        }
    }
    free(slots);
    return 0;
}

/* Allocates a job for a spec, with its class reference and, for a keyed spec, its extension.
 * Links nothing. */
static sp_ejob_t *job_alloc(sp_engine_t *e, sp_equeue_t *q, const sp_job_spec_t *s)
{
    sp_ejob_t *j = malloc(offsetof(sp_ejob_t, payload) + s->payload_len);
    if (!j) return NULL;
    memset(j, 0, offsetof(sp_ejob_t, payload));
    j->cls = class_get(e, q, s);
    if (!j->cls) goto fail;
    if (s->has_idem_key) {
        j->ext = ext_new(j, s->idem_key, s->idem_key_len, true);
        if (!j->ext) goto fail;
    }
    return j;
fail:
    if (j->cls) class_put(j->cls);
    free(j);
    return NULL;
}

/* When a new job becomes eligible. A delay counts from the engine's `now`, not from when the
 * submission was parsed (the clock may have moved on a millisecond since), so that run_at is
 * exactly created_at + delay_ms; a run_at the client gave is kept as given. Specs made without
 * a parse (parsed_at 0) are taken as they are. */
static int64_t spec_run_at(const sp_job_spec_t *s, int64_t now)
{
    int64_t at = s->run_at;
    if (!s->run_at_given && s->parsed_at > 0) at = sat_add(now, s->run_at - s->parsed_at);
    return at > now ? at : now;
}

static void job_link_new(sp_engine_t *e, sp_ejob_t *j, const sp_job_spec_t *s, uint64_t h,
                         int64_t now)
{
    sp_equeue_t *q = j->cls->q;
    j->id = e->next_id++;
    j->created_at = now;
    j->run_at = spec_run_at(s, now);
    j->payload_len = (uint32_t)s->payload_len;
    if (s->payload_len) memcpy(j->payload, s->payload, s->payload_len);
    j->priority = (uint8_t)s->priority;
    j->state = STATE_NEW;
    j->attempts = 0;
    ptab_put(&e->ids, j, id_hash(j->id));
    dl_push(&q->all, &j->qlink);
    if (j->ext) {
        j->ext->idem_hash = h;
        j->ext->idem_live = true;
        ptab_put(&e->idem, j, h);
        dl_push(&e->idem_fifo, &j->ext->idem_link);
    }
    e->njobs++;
    q->enqueued++;
    set_state(e, j, j->run_at > now ? SP_STATE_SCHEDULED : SP_STATE_QUEUED, now);
}

/* The batch's scratch space: key hashes and in-batch duplicates. */
struct batch_tmp {
    uint64_t *hashes;
    size_t *dup_of;
    uint64_t one_hash; /* a single submit needs no allocation for its one hash */
};

static int batch_prepare(sp_engine_t *e, int64_t now, sp_equeue_t *q, const sp_job_spec_t *specs,
                         size_t n, sp_ejob_t **out, bool *existed, struct batch_tmp *tmp,
                         size_t *nnew, size_t *nkeys, size_t *ndelayed)
{
    size_t keyed = 0;
    for (size_t i = 0; i < n; i++) keyed += specs[i].has_idem_key;
    if (keyed) {
        if (n > SIZE_MAX / sizeof(uint64_t)) return SP_ENOMEM;
        tmp->hashes = n == 1 ? &tmp->one_hash : malloc(n * sizeof(uint64_t));
        if (!tmp->hashes) return SP_ENOMEM;
        for (size_t i = 0; i < n; i++)
            tmp->hashes[i] = specs[i].has_idem_key
                                 ? idem_hash(q, specs[i].idem_key, specs[i].idem_key_len, e->hk1)
                                 : 0;
    }
    if (keyed > 1) {
        if (n > SIZE_MAX / 2 / sizeof(size_t)) return SP_ENOMEM;
        tmp->dup_of = malloc(n * sizeof(size_t));
        if (!tmp->dup_of) return SP_ENOMEM;
        int rc = batch_dups(specs, n, tmp->hashes, tmp->dup_of);
        if (rc) return rc;
    }
    *nnew = *nkeys = *ndelayed = 0;
    for (size_t i = 0; i < n; i++) {
        out[i] = NULL;
        existed[i] = false;
        const sp_job_spec_t *s = &specs[i];
        if (s->has_idem_key) {
            out[i] = idem_find(e, q, s->idem_key, s->idem_key_len, tmp->hashes[i], now);
            if (out[i]) existed[i] = true;
            if (out[i] || (tmp->dup_of && tmp->dup_of[i] != SIZE_MAX)) continue;
            (*nkeys)++;
        }
        (*nnew)++;
        if (spec_run_at(s, now) > now) (*ndelayed)++;
    }
    return 0;
}

int sp_engine_submit_batch(sp_engine_t *e, int64_t now, const char *queue, size_t queue_len,
                           const sp_job_spec_t *specs, size_t n, sp_ejob_t **out, bool *existed)
{
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (spec_check(&specs[i]) != 0) return SP_EINVAL;
    sp_equeue_t *q;
    int rc = sp_engine_queue_get(e, queue, queue_len, &q);
    if (rc) return rc;

    struct batch_tmp tmp = {NULL, NULL, 0};
    size_t nnew, nkeys, ndelayed, made = 0;
    rc = batch_prepare(e, now, q, specs, n, out, existed, &tmp, &nnew, &nkeys, &ndelayed);
    if (rc) goto done;
    uint64_t depth =
        q->counts[SP_STATE_SCHEDULED] + q->counts[SP_STATE_QUEUED] + q->counts[SP_STATE_RUNNING];
    if (e->o.max_depth && nnew > 0 && (nnew > e->o.max_depth || depth > e->o.max_depth - nnew)) {
        rc = SP_EFULL;
        goto done;
    }
    /* Room first, then the jobs, then linking, which cannot fail. */
    if (ptab_reserve(&e->ids, nnew, job_id_hashfn) ||
        ptab_reserve(&e->idem, nkeys, job_idem_hashfn) || heap_reserve(e, ndelayed)) {
        rc = SP_ENOMEM;
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        if (existed[i] || (tmp.dup_of && tmp.dup_of[i] != SIZE_MAX)) continue;
        out[i] = job_alloc(e, q, &specs[i]);
        if (!out[i]) {
            rc = SP_ENOMEM;
            goto done;
        }
        made++;
    }
    bool gained = false;
    e->batching = true;
    for (size_t i = 0; i < n; i++) {
        if (existed[i]) continue;
        if (tmp.dup_of && tmp.dup_of[i] != SIZE_MAX) {
            out[i] = out[tmp.dup_of[i]];
            existed[i] = true;
            continue;
        }
        job_link_new(e, out[i], &specs[i], tmp.hashes ? tmp.hashes[i] : 0, now);
        gained |= out[i]->state == SP_STATE_QUEUED;
    }
    e->batching = false;
    if (gained && e->o.on_ready) e->o.on_ready(e->o.ud, q);
    made = 0;
done:
    if (rc && made) {
        for (size_t i = 0; i < n; i++) {
            if (existed[i] || !out[i]) continue;
            job_free(out[i]);
            out[i] = NULL;
        }
    }
    if (tmp.hashes != &tmp.one_hash) free(tmp.hashes);
    free(tmp.dup_of);
    return rc;
}

int sp_engine_submit(sp_engine_t *e, int64_t now, const char *queue, size_t queue_len,
                     const sp_job_spec_t *spec, sp_ejob_t **out, bool *existed)
{
    return sp_engine_submit_batch(e, now, queue, queue_len, spec, 1, out, existed);
}

/* ---- reading ----------------------------------------------------------------------------- */

sp_ejob_t *sp_engine_get(sp_engine_t *e, uint64_t id)
{
    const struct ptab *t = &e->ids;
    if (!t->slots) return NULL;
    size_t mask = ptab_cap(t) - 1;
    for (size_t i = ptab_home(t, id_hash(id)); t->slots[i]; i = (i + 1) & mask) {
        sp_ejob_t *j = t->slots[i];
        if (j->id == id) return j;
    }
    return NULL;
}

void sp_engine_view(const sp_engine_t *e, const sp_ejob_t *j, sp_jobrec_t *out)
{
    (void)e;
    const struct jext *x = j->ext;
    const struct jclass *c = j->cls;
    bool running = j->state == SP_STATE_RUNNING;
    memset(out, 0, sizeof(*out));
    out->id = j->id;
    out->queue = c->q->name;
    out->queue_len = c->q->name_len;
    out->type = c->type;
    out->type_len = c->type_len;
    out->payload = j->payload;
    out->payload_len = j->payload_len;
    out->state = (sp_state_t)j->state;
    out->priority = j->priority;
    out->attempts = j->attempts;
    out->max_attempts = c->max_attempts;
    out->timeout_ms = c->timeout_ms;
    out->backoff_ms = c->backoff_ms;
    out->created_at = j->created_at;
    out->run_at = j->run_at;
    out->started_at = x ? x->started_at : -1;
    out->finished_at = x ? x->finished_at : -1;
    out->lease_expires_at = running ? x->lease_expires_at : -1;
    out->lease = running ? x->lease : 0;
    if (!x) return;
    out->result = x->result;
    out->result_len = x->result ? x->result_len : 0;
    out->last_error = x->last_error;
    out->last_error_len = x->last_error ? x->last_error_len : 0;
    out->worker = x->worker ? x->worker->s : NULL;
    out->worker_len = x->worker ? x->worker->len : 0;
    out->idem_key = x->has_key ? x->idem_key : NULL;
    out->idem_key_len = x->has_key ? x->idem_key_len : 0;
    out->cancel_requested = x->cancel_requested;
}

uint64_t sp_ejob_id(const sp_ejob_t *job)
{
    return job->id;
}

sp_state_t sp_ejob_state(const sp_ejob_t *job)
{
    return (sp_state_t)job->state;
}

sp_equeue_t *sp_ejob_queue(const sp_ejob_t *job)
{
    return job->cls->q;
}

size_t sp_engine_job_count(const sp_engine_t *e)
{
    return e->njobs;
}

/* ---- changing a job ---------------------------------------------------------------------- */

static const char *const why_not_running[SP_STATE_COUNT] = {
    "job is scheduled, not running", "job is queued, not running", "job is running",
    "job is already succeeded",      "job is already failed",      "job is already canceled",
};

static const char *const why_not_retryable[SP_STATE_COUNT] = {
    "job is scheduled, not failed or canceled",
    "job is queued, not failed or canceled",
    "job is running, not failed or canceled",
    "job is succeeded, not failed or canceled",
    "job is failed",
    "job is canceled",
};

static int conflict(const char **why, const char *text)
{
    if (why) *why = text;
    return SP_ECONFLICT;
}

/* The job `id` if it is running under `lease` and that lease is still honoured. */
static int leased_job(sp_engine_t *e, int64_t now, uint64_t id, uint64_t lease, sp_ejob_t **jp,
                      const char **why)
{
    sp_ejob_t *j = sp_engine_get(e, id);
    if (!j) return SP_ENOTFOUND;
    *jp = j;
    if (j->state != SP_STATE_RUNNING) return conflict(why, why_not_running[j->state]);
    if (j->ext->lease != lease) return conflict(why, "lease is not the job's current lease");
    if (now > j->ext->lease_expires_at) return conflict(why, "lease expired");
    return 0;
}

int sp_engine_cancel(sp_engine_t *e, int64_t now, uint64_t id, sp_ejob_t **out, const char **why)
{
    sp_ejob_t *j = sp_engine_get(e, id);
    if (!j) return SP_ENOTFOUND;
    switch ((sp_state_t)j->state) {
    case SP_STATE_SCHEDULED:
    case SP_STATE_QUEUED:
        if (ensure_ext(j) != 0) return SP_ENOMEM;
        set_state(e, j, SP_STATE_CANCELED, now);
        break;
    case SP_STATE_RUNNING:
        j->ext->cancel_requested = true;
        break;
    case SP_STATE_SUCCEEDED:
    case SP_STATE_FAILED:
    case SP_STATE_CANCELED:
        return conflict(why, why_not_running[j->state]);
    }
    if (out) *out = j;
    return 0;
}

int sp_engine_retry(sp_engine_t *e, int64_t now, uint64_t id, sp_ejob_t **out, const char **why)
{
    sp_ejob_t *j = sp_engine_get(e, id);
    if (!j) return SP_ENOTFOUND;
    switch ((sp_state_t)j->state) {
    case SP_STATE_SCHEDULED:
    case SP_STATE_QUEUED:
    case SP_STATE_RUNNING:
    case SP_STATE_SUCCEEDED:
        return conflict(why, why_not_retryable[j->state]);
    case SP_STATE_FAILED:
    case SP_STATE_CANCELED:
        break;
    }
    /* last_error stays: it tells why the job needed a retry. */
    j->attempts = 0;
    j->run_at = now;
    j->ext->finished_at = -1;
    j->ext->cancel_requested = false;
    set_state(e, j, SP_STATE_QUEUED, now);
    if (out) *out = j;
    return 0;
}

/* Takes the first ready job of q, or NULL. */
static sp_ejob_t *ready_head(sp_equeue_t *q)
{
    for (int p = NPRIO - 1; p >= 0; p--)
        if (!dl_empty(&q->ready[p])) return JOB_OF_LINK(q->ready[p].next);
    return NULL;
}

/* Leases from one queue until it is empty or *n reaches max; SP_ENOMEM stops early. */
static int lease_from(sp_engine_t *e, int64_t now, sp_equeue_t *q, const sp_lease_req_t *req,
                      struct rstr **worker, sp_ejob_t **out, size_t *n)
{
    while (*n < req->max) {
        sp_ejob_t *j = ready_head(q);
        if (!j) return 0;
        if (req->worker && !*worker) {
            if (req->worker_len > UINT32_MAX - 1) return SP_ENOMEM;
            *worker = malloc(sizeof(struct rstr) + req->worker_len + 1);
            if (!*worker) return SP_ENOMEM;
            (*worker)->refs = 1; /* the lease call's own, dropped at its end */
            (*worker)->len = (uint32_t)req->worker_len;
            memcpy((*worker)->s, req->worker, req->worker_len);
            (*worker)->s[req->worker_len] = '\0';
        }
        if (ensure_ext(j) != 0 || heap_reserve(e, 1) != 0) return SP_ENOMEM;
        struct jext *x = j->ext;
        uint64_t token;
        do token = rng_next(e);
        while (token == 0);
        x->lease = token;
        x->started_at = now;
        x->lease_expires_at = sat_add(now, j->cls->timeout_ms);
        x->cancel_requested = false;
        rstr_put(x->worker);
        x->worker = *worker;
        if (*worker) (*worker)->refs++;
        if (j->attempts < UINT16_MAX) j->attempts++;
        out[(*n)++] = j;
        set_state(e, j, SP_STATE_RUNNING, now);
    }
    return 0;
}

int sp_engine_lease(sp_engine_t *e, int64_t now, const sp_lease_req_t *req, sp_ejob_t **out,
                    size_t *n)
{
    *n = 0;
    struct rstr *worker = NULL;
    int rc = 0;
    size_t nq = req->queues ? req->nqueues : e->nqueues;
    for (size_t i = 0; i < nq && *n < req->max && rc == 0; i++) {
        sp_equeue_t *q = req->queues ? sp_engine_queue_find(e, req->queues[i], req->queue_lens[i])
                                     : e->queues[i];
        if (!q || q->paused) continue;
        rc = lease_from(e, now, q, req, &worker, out, n);
    }
    rstr_put(worker);
    /* Jobs already leased are handed out: dropping them would cost them an attempt. */
    return *n > 0 ? 0 : rc;
}

int sp_engine_ack(sp_engine_t *e, int64_t now, uint64_t id, uint64_t lease, const char *result,
                  size_t result_len, sp_ejob_t **out, const char **why)
{
    sp_ejob_t *j = sp_engine_get(e, id);
    if (j && j->state == SP_STATE_SUCCEEDED && j->ext->lease == lease) {
        if (out) *out = j;
        return 0;
    }
    int rc = leased_job(e, now, id, lease, &j, why);
    if (rc) return rc;
    char *copy = NULL;
    if (result) {
        copy = copy_bytes(result, result_len);
        if (!copy) return SP_ENOMEM;
    }
    free(j->ext->result);
    j->ext->result = copy;
    j->ext->result_len = copy ? result_len : 0;
    set_state(e, j, SP_STATE_SUCCEEDED, now);
    if (out) *out = j;
    return 0;
}

/* The retry delay after a failed attempt: exponential from backoff_ms, capped, with jitter. */
static int64_t backoff_delay(sp_engine_t *e, const sp_ejob_t *j)
{
    uint64_t base = j->cls->backoff_ms;
    unsigned shift = j->attempts > 0 ? (unsigned)j->attempts - 1 : 0;
    if (base == 0) return 0;
    /* 2^22 ms already exceeds the cap, and base < 2^32 keeps base << 21 in range. */
    if (shift >= 22)
        base = BACKOFF_CAP_MS;
    else
        base = SP_MIN(base << shift, (uint64_t)BACKOFF_CAP_MS);
    return (int64_t)(base + rng_next(e) % (base / 10 + 1));
}

/* Puts a job whose attempt ended back to queued at once, or scheduled after `delay`. */
static void requeue(sp_engine_t *e, sp_ejob_t *j, int64_t now, int64_t delay)
{
    j->cls->q->retried++;
    j->run_at = sat_add(now, delay);
    set_state(e, j, delay > 0 ? SP_STATE_SCHEDULED : SP_STATE_QUEUED, now);
}

int sp_engine_fail(sp_engine_t *e, int64_t now, uint64_t id, uint64_t lease, const char *error,
                   size_t error_len, bool retry, int64_t retry_in_ms, sp_ejob_t **out,
                   const char **why)
{
    sp_ejob_t *j;
    int rc = leased_job(e, now, id, lease, &j, why);
    if (rc) return rc;
    if (error) {
        char *copy = copy_bytes(error, error_len);
        if (!copy) return SP_ENOMEM;
        ext_set_error(j->ext, copy, error_len, false);
    } else {
        ext_set_error(j->ext, "failed", 6, true);
    }
    if (j->ext->cancel_requested)
        set_state(e, j, SP_STATE_CANCELED, now);
    else if (retry && j->attempts < j->cls->max_attempts)
        requeue(e, j, now, retry_in_ms >= 0 ? retry_in_ms : backoff_delay(e, j));
    else
        set_state(e, j, SP_STATE_FAILED, now);
    if (out) *out = j;
    return 0;
}

int sp_engine_heartbeat(sp_engine_t *e, int64_t now, uint64_t id, uint64_t lease, int64_t extend_ms,
                        sp_ejob_t **out, const char **why)
{
    sp_ejob_t *j;
    int rc = leased_job(e, now, id, lease, &j, why);
    if (rc) return rc;
    j->ext->lease_expires_at = sat_add(now, extend_ms >= 0 ? extend_ms : j->cls->timeout_ms);
    heap_fix(e, j->u.heap_idx);
    if (out) *out = j;
    return 0;
}

int sp_engine_release(sp_engine_t *e, int64_t now, uint64_t id, uint64_t lease, sp_ejob_t **out,
                      const char **why)
{
    sp_ejob_t *j;
    int rc = leased_job(e, now, id, lease, &j, why);
    if (rc) return rc;
    if (j->attempts > 0) j->attempts--;
    if (j->ext->cancel_requested) {
        set_state(e, j, SP_STATE_CANCELED, now);
    } else {
        j->run_at = now;
        set_state(e, j, SP_STATE_QUEUED, now);
    }
    if (out) *out = j;
    return 0;
}

/* ---- listing and purging ----------------------------------------------------------------- */

size_t sp_engine_list(sp_engine_t *e, const sp_equeue_t *q, int state, uint64_t after, size_t limit,
                      sp_ejob_t **out, uint64_t *next)
{
    *next = 0;
    if (!q || limit == 0) return 0;
    const struct dl *end = &q->all;
    struct dl *n = q->all.next;
    if (after) {
        sp_ejob_t *a = sp_engine_get(e, after);
        if (a && a->cls->q == q) {
            n = a->qlink.next;
        } else {
            /* The cursor's job is gone: the queue's list is in id order, so skip to past it. */
            while (n != end && JOB_OF_QLINK(n)->id <= after) n = n->next;
        }
    }
    size_t k = 0;
    for (; n != end; n = n->next) {
        sp_ejob_t *j = JOB_OF_QLINK(n);
        if (state >= 0 && j->state != state) continue;
        if (k == limit) {
            *next = out[k - 1]->id;
            break;
        }
        out[k++] = j;
    }
    return k;
}

int sp_engine_purge(sp_engine_t *e, int64_t now, sp_equeue_t *q, sp_state_t state,
                    uint64_t *deleted)
{
    (void)now;
    *deleted = 0;
    if ((unsigned)state >= SP_STATE_COUNT || state == SP_STATE_RUNNING) return SP_EINVAL;
    struct dl *n = q->all.next;
    while (n != &q->all && q->counts[state] > 0) {
        struct dl *next = n->next;
        sp_ejob_t *j = JOB_OF_QLINK(n);
        if (j->state == state) {
            job_forget(e, j);
            (*deleted)++;
        }
        n = next;
    }
    shrink_tables(e);
    return 0;
}

/* ---- time -------------------------------------------------------------------------------- */

/* A running job whose lease ran out: the attempt failed. */
static void expire_lease(sp_engine_t *e, sp_ejob_t *j, int64_t now)
{
    struct jext *x = j->ext;
    char msg[80];
    int len = snprintf(msg, sizeof(msg), "lease expired after %lld ms without ack or heartbeat",
                       (long long)(x->lease_expires_at - x->started_at));
    char *copy = len > 0 ? copy_bytes(msg, (size_t)len) : NULL;
    if (copy)
        ext_set_error(x, copy, (size_t)len, false);
    else /* short of memory the job still moves on, with a shorter message */
        ext_set_error(x, "lease expired", 13, true);
    if (x->cancel_requested)
        set_state(e, j, SP_STATE_CANCELED, now);
    else if (j->attempts < j->cls->max_attempts)
        requeue(e, j, now, 0);
    else
        set_state(e, j, SP_STATE_FAILED, now);
}

int64_t sp_engine_tick(sp_engine_t *e, int64_t now)
{
    while (e->heap_len > 0 && job_due(e->heap[0]) <= now) {
        sp_ejob_t *j = e->heap[0];
        if (j->state == SP_STATE_SCHEDULED)
            set_state(e, j, SP_STATE_QUEUED, now);
        else
            expire_lease(e, j, now);
    }
    while (!dl_empty(&e->finished)) {
        sp_ejob_t *j = JOB_OF_LINK(e->finished.next);
        if (sat_add(j->ext->finished_at, e->o.retention_ms) > now) break;
        job_forget(e, j);
    }
    while (!dl_empty(&e->idem_fifo)) {
        struct jext *x = sp_container_of(e->idem_fifo.next, struct jext, idem_link);
        if (sat_add(x->job->created_at, e->o.idem_ttl_ms) > now) break;
        idem_unlink(e, x->job);
    }
    shrink_tables(e);
    return sp_engine_next_deadline(e);
}

int64_t sp_engine_next_deadline(const sp_engine_t *e)
{
    int64_t t = INT64_MAX;
    if (e->heap_len > 0) t = job_due(e->heap[0]);
    if (!dl_empty(&e->finished)) {
        const sp_ejob_t *j = JOB_OF_LINK(e->finished.next);
        t = SP_MIN(t, sat_add(j->ext->finished_at, e->o.retention_ms));
    }
    if (!dl_empty(&e->idem_fifo)) {
        const struct jext *x = sp_container_of(e->idem_fifo.next, struct jext, idem_link);
        t = SP_MIN(t, sat_add(x->job->created_at, e->o.idem_ttl_ms));
    }
    return t;
}

/* ---- restoring ---------------------------------------------------------------------------- */

void sp_engine_view_full(const sp_engine_t *e, const sp_ejob_t *job, sp_jobrec_t *out)
{
    sp_engine_view(e, job, out);
    if (job->ext) {
        out->lease = job->ext->lease;
        out->lease_expires_at = job->ext->lease_expires_at;
    }
}

uint64_t sp_engine_next_id(const sp_engine_t *e)
{
    return e->next_id;
}

void sp_engine_set_next_id(sp_engine_t *e, uint64_t id)
{
    if (id > e->next_id) e->next_id = id;
}

int sp_engine_forget(sp_engine_t *e, uint64_t id)
{
    sp_ejob_t *j = sp_engine_get(e, id);
    if (!j) return SP_ENOTFOUND;
    job_forget(e, j);
    return 0;
}

int sp_engine_queue_restore(sp_engine_t *e, const sp_queue_stats_t *st)
{
    if (!sp_name_valid(st->name, st->name_len)) return SP_EINVAL;
    sp_equeue_t *q;
    int rc = sp_engine_queue_get(e, st->name, st->name_len, &q);
    if (rc) return rc;
    q->paused = st->paused;
    q->enqueued = st->enqueued;
    q->succeeded = st->succeeded;
    q->failed = st->failed;
    q->retried = st->retried;
    q->leased = st->leased;
    q->canceled = st->canceled;
    return 0;
}

/* Inserts n into a list kept sorted by key, searching from the back: restored jobs come nearly
 * in order, so the walk is short. */
static void dl_insert_sorted(struct dl *h, struct dl *n,
                             bool (*later)(const struct dl *, const struct dl *))
{
    struct dl *p = h->prev;
    while (p != h && later(p, n)) p = p->prev;
    n->prev = p;
    n->next = p->next;
    p->next->prev = n;
    p->next = n;
}

static bool qlink_later(const struct dl *a, const struct dl *b)
{
    return JOB_OF_QLINK(a)->id > JOB_OF_QLINK(b)->id;
}

static bool finished_later(const struct dl *a, const struct dl *b)
{
    return JOB_OF_LINK(a)->ext->finished_at > JOB_OF_LINK(b)->ext->finished_at;
}

static bool idem_later(const struct dl *a, const struct dl *b)
{
    return sp_container_of(a, struct jext, idem_link)->job->created_at >
           sp_container_of(b, struct jext, idem_link)->job->created_at;
}

/* Puts a restored job where its state keeps it; counts follow, totals and observers do not. */
static void enter_state(sp_engine_t *e, sp_ejob_t *j)
{
    sp_equeue_t *q = j->cls->q;
    q->counts[j->state]++;
    switch ((sp_state_t)j->state) {
    case SP_STATE_SCHEDULED:
    case SP_STATE_RUNNING:
        heap_push(e, j);
        break;
    case SP_STATE_QUEUED:
        dl_push(&q->ready[j->priority], &j->u.link);
        break;
    case SP_STATE_SUCCEEDED:
    case SP_STATE_FAILED:
    case SP_STATE_CANCELED:
        dl_insert_sorted(&e->finished, &j->u.link, finished_later);
        break;
    }
}

static bool rec_valid(const sp_jobrec_t *r)
{
    if (r->id == 0 || (unsigned)r->state >= SP_STATE_COUNT) return false;
    if (!sp_name_valid(r->queue, r->queue_len) || !sp_name_valid(r->type, r->type_len))
        return false;
    if (r->priority < 0 || r->priority >= NPRIO) return false;
    if (r->max_attempts < 1 || r->max_attempts > UINT16_MAX || r->attempts > UINT16_MAX)
        return false;
    if (r->payload_len > UINT32_MAX || (r->payload_len && !r->payload)) return false;
    if (r->idem_key && r->idem_key_len > SP_IDEM_KEY_MAX) return false;
    if (r->worker && r->worker_len > UINT32_MAX - 1) return false;
    if (r->state == SP_STATE_RUNNING && r->lease_expires_at < 0) return false;
    if (sp_state_finished(r->state) && r->finished_at < 0) return false;
    return true;
}

/* The strings a record's extension owns, allocated before anything changes. */
struct rest_strs {
    struct rstr *worker;
    char *result;
    char *error;
};

static void rest_strs_free(struct rest_strs *s)
{
    rstr_put(s->worker);
    free(s->result);
    free(s->error);
}

static int rest_strs_make(const sp_jobrec_t *r, struct rest_strs *s)
{
    memset(s, 0, sizeof(*s));
    if (r->worker) {
        s->worker = malloc(sizeof(struct rstr) + r->worker_len + 1);
        if (!s->worker) return SP_ENOMEM;
        s->worker->refs = 1;
        s->worker->len = (uint32_t)r->worker_len;
        if (r->worker_len) memcpy(s->worker->s, r->worker, r->worker_len);
        s->worker->s[r->worker_len] = '\0';
    }
    if (r->result && !(s->result = copy_bytes(r->result, r->result_len))) goto oom;
    if (r->last_error && !(s->error = copy_bytes(r->last_error, r->last_error_len))) goto oom;
    return 0;
oom:
    rest_strs_free(s);
    return SP_ENOMEM;
}

static bool rec_needs_ext(const sp_jobrec_t *r)
{
    return r->idem_key || r->worker || r->result || r->last_error || r->cancel_requested ||
           r->lease || r->started_at >= 0 || r->finished_at >= 0 || r->lease_expires_at >= 0 ||
           r->state == SP_STATE_RUNNING || sp_state_finished(r->state);
}

/* Sets what changes over a job's life from the record; the strings are taken over. */
static void rest_apply(sp_ejob_t *j, const sp_jobrec_t *r, struct rest_strs *s)
{
    j->run_at = r->run_at;
    j->attempts = (uint16_t)r->attempts;
    j->state = (uint8_t)r->state;
    struct jext *x = j->ext;
    if (!x) return;
    x->started_at = r->started_at;
    x->finished_at = r->finished_at;
    x->lease_expires_at = r->lease_expires_at;
    x->lease = r->lease;
    x->cancel_requested = r->cancel_requested;
    rstr_put(x->worker);
    x->worker = s->worker;
    free(x->result);
    x->result = s->result;
    x->result_len = s->result ? r->result_len : 0;
    ext_set_error(x, s->error, s->error ? r->last_error_len : 0, false);
    memset(s, 0, sizeof(*s));
}

/* Whether an existing job is the same job as the record (what never changes matches). */
static bool rec_same_job(const sp_ejob_t *j, const sp_jobrec_t *r)
{
    const struct jclass *c = j->cls;
    return c->q->name_len == r->queue_len && memcmp(c->q->name, r->queue, r->queue_len) == 0 &&
           c->type_len == r->type_len && memcmp(c->type, r->type, r->type_len) == 0 &&
           c->timeout_ms == r->timeout_ms && c->backoff_ms == r->backoff_ms &&
           c->max_attempts == r->max_attempts && j->priority == r->priority &&
           j->created_at == r->created_at && j->payload_len == r->payload_len &&
           (!j->ext || !j->ext->has_key) == !r->idem_key &&
           (!r->idem_key || (j->ext->idem_key_len == r->idem_key_len &&
                             memcmp(j->ext->idem_key, r->idem_key, r->idem_key_len) == 0)) &&
           memcmp(j->payload, r->payload, r->payload_len) == 0;
}

int sp_engine_restore(sp_engine_t *e, int64_t now, const sp_jobrec_t *r)
{
    if (!rec_valid(r)) return SP_EINVAL;
    sp_ejob_t *j = sp_engine_get(e, r->id);
    if (j && !rec_same_job(j, r)) {
        job_forget(e, j);
        j = NULL;
    }
    struct rest_strs s;
    if (rest_strs_make(r, &s) != 0) return SP_ENOMEM;
    bool in_heap = r->state == SP_STATE_SCHEDULED || r->state == SP_STATE_RUNNING;
    if (in_heap && heap_reserve(e, 1) != 0) goto oom;
    if (j) {
        if (rec_needs_ext(r) && ensure_ext(j) != 0) goto oom;
        leave_state(e, j);
        rest_apply(j, r, &s);
        enter_state(e, j);
        return 0;
    }
    sp_equeue_t *q;
    if (sp_engine_queue_get(e, r->queue, r->queue_len, &q) != 0) goto oom;
    if (ptab_reserve(&e->ids, 1, job_id_hashfn) != 0) goto oom;
    sp_job_spec_t spec;
    memcpy(spec.type, r->type, r->type_len);
    spec.type[r->type_len] = '\0';
    spec.type_len = r->type_len;
    spec.timeout_ms = r->timeout_ms;
    spec.backoff_ms = r->backoff_ms;
    spec.max_attempts = r->max_attempts;
    spec.payload_len = r->payload_len;
    spec.has_idem_key = r->idem_key != NULL;
    spec.idem_key_len = r->idem_key ? r->idem_key_len : 0;
    if (r->idem_key && r->idem_key_len) memcpy(spec.idem_key, r->idem_key, r->idem_key_len);
    bool key_live = r->idem_key && sat_add(r->created_at, e->o.idem_ttl_ms) > now;
    if (key_live && ptab_reserve(&e->idem, 1, job_idem_hashfn) != 0) goto oom;
    j = job_alloc(e, q, &spec);
    if (!j) goto oom;
    if (rec_needs_ext(r) && ensure_ext(j) != 0) {
        job_free(j);
        goto oom;
    }
    j->id = r->id;
    j->created_at = r->created_at;
    j->payload_len = (uint32_t)r->payload_len;
    if (r->payload_len) memcpy(j->payload, r->payload, r->payload_len);
    j->priority = (uint8_t)r->priority;
    rest_apply(j, r, &s);
    ptab_put(&e->ids, j, id_hash(j->id));
    dl_insert_sorted(&q->all, &j->qlink, qlink_later);
    if (key_live) {
        j->ext->idem_hash = idem_hash(q, r->idem_key, r->idem_key_len, e->hk1);
        j->ext->idem_live = true;
        ptab_put(&e->idem, j, j->ext->idem_hash);
        dl_insert_sorted(&e->idem_fifo, &j->ext->idem_link, idem_later);
    }
    e->njobs++;
    enter_state(e, j);
    if (r->id >= e->next_id) e->next_id = r->id + 1;
    return 0;
oom:
    rest_strs_free(&s);
    return SP_ENOMEM;
}
