/* backoff.c - capped exponential backoff with jitter (see backoff.h). */
#include "backoff.h"

#include "sp.h"

void sp_backoff_init(sp_backoff_t *b, int64_t min_ms, int64_t max_ms, unsigned jitter_pct)
{
    b->min_ms = min_ms > 0 ? min_ms : 1;
    b->max_ms = max_ms > b->min_ms ? max_ms : b->min_ms;
    b->jitter_pct = jitter_pct;
    b->base_ms = 0;
    /* Jitter only has to differ between processes and calls, not resist prediction. */
    b->rng = (uint64_t)sp_now_ms() ^ ((uint64_t)(uintptr_t)b * 0x9e3779b97f4a7c15ULL);
}

static uint64_t next_random(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

int64_t sp_backoff_next(sp_backoff_t *b)
{
    if (b->base_ms == 0)
        b->base_ms = b->min_ms;
    else
        b->base_ms = b->base_ms > b->max_ms / 2 ? b->max_ms : b->base_ms * 2;
    /* base * pct / 100 without the product overflowing for bases near the cap */
    int64_t pct = b->jitter_pct > 100 ? 100 : (int64_t)b->jitter_pct;
    int64_t span = b->base_ms / 100 * pct + b->base_ms % 100 * pct / 100;
    int64_t jitter = span > 0 ? (int64_t)(next_random(&b->rng) % (uint64_t)(span + 1)) : 0;
    return b->base_ms + jitter;
}

void sp_backoff_reset(sp_backoff_t *b)
{
    b->base_ms = 0;
}
