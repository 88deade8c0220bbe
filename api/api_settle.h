/*
 * api_settle.h: the parts of a settlement run (api_settle_job.c): a batch
 * of one shard (api_settle_batch.c) and the progress its shards tell
 * (api_settle_count.c). Internal to the API library.
 */
#ifndef API_SETTLE_H
#define API_SETTLE_H

#include <stdint.h>

#include "api/api_int.h"

/*
 * api_settle_batch.c: settles the next open bets of match on shard with ids
 * above *after (0: all), at most max_bets, in one transaction on the
 * router's background pools; result is the posted one, reason the ledger's
 * ("payout" or "refund"). A full batch sets *after to its last id. When
 * fewer were left: above 0, *after goes back to 0 (the next batch looks at
 * every bet of the match, once); at 0, the same transaction inserts the
 * shard's guard row and *last is set, with *total the shard's bets of the
 * match that row counts (0 when another runner's guard row was there
 * already). *n: bets settled. 0 or a router status (nothing of the batch
 * stays then; BC_EMOVED when a move fenced the shard).
 */
int api_settle_batch(struct router *r, uint64_t match, const char *result,
                     const char *reason, uint32_t shard, uint32_t max_bets,
                     uint64_t *after, uint64_t *n, int *last, uint64_t *total);

/* A settlement's progress as the shards tell it (api_settle_count.c). */
struct api_settle_count {
    uint32_t shards_done; /* with a guard row */
    uint64_t bets_total;  /* bets of the match */
    uint64_t bets_settled;
};

/*
 * Recounts match's progress from the shards of r; guarded (nshard entries)
 * gets each shard's. The guard rows first (unless first: the job's first
 * claim, when none is likely), one primary-key read a shard: once every
 * shard has one, their bets_settled (each shard's bets of the match, counted
 * under the lock that ended its settlement) are the counts, and the match's
 * bets are not counted again (a million index entries at a million bets,
 * beside the standings' recomputation). Otherwise the match's bets, from
 * match_bets alone, of which the guarded shards' are settled. With before
 * (nshard entries), also each unguarded shard's bets no longer open, which
 * reads every bet's row: 2-4 s at a million bets before any batch could
 * start (docs/benchmarks.md, run 113), so only a run that takes over from
 * another asks. Without, an unguarded shard counts none settled until the
 * host that finishes it adds what earlier runs settled there
 * (api_settle_job.c). 0, or a router status when a host failed: the
 * counts are then those of the hosts that answered.
 */
int api_settle_recount(struct router *r, uint64_t match, struct api_settle_count *c,
                       uint8_t *guarded, uint64_t *before, int first);

#endif
