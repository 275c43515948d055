/*
 * backoff.h - capped exponential backoff with jitter, for everything that retries: a worker
 * pool whose lease fails, a worker whose server is unreachable, an ack that could not be sent.
 *
 * The first delay is min_ms, each next one doubles up to max_ms, and each gets up to
 * jitter_pct percent more at random, so that many workers cut off together do not come back in
 * step. A success resets it.
 */
#ifndef SP_BACKOFF_H
#define SP_BACKOFF_H

#include <stdint.h>

typedef struct {
    int64_t min_ms;
    int64_t max_ms;
    unsigned jitter_pct;
    int64_t base_ms; /* the last delay without jitter; 0 before the first */
    uint64_t rng;
} sp_backoff_t;

void sp_backoff_init(sp_backoff_t *b, int64_t min_ms, int64_t max_ms, unsigned jitter_pct);
/* The delay before the next try, in ms: in [base, base + base * jitter_pct / 100]; jitter_pct
 * above 100 counts as 100. */
int64_t sp_backoff_next(sp_backoff_t *b);
/* Starts again from min_ms (after a success). */
void sp_backoff_reset(sp_backoff_t *b);

#endif
