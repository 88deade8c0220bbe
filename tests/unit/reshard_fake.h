/*
 * reshard_fake.h: the fake backend of test_reshard.c. It keeps a catalog in
 * memory (the shard map, the moves table, the shards' locks) and records
 * every host operation; a test makes any operation fail once (fail_op), as
 * a crash or a refusal would.
 */
#ifndef RESHARD_FAKE_H
#define RESHARD_FAKE_H

#include <stdint.h>

#include "reshard/reshard.h"

#define NSHARD 64 /* the smallest shard count a map may have */
#define MAXMOVES 32

struct fake {
    char map[NSHARD][SHARDMAP_NAME_MAX];
    int state[NSHARD];
    uint64_t version;
    struct catalog_move moves[MAXMOVES];
    uint32_t nmove;
    int locked[NSHARD];
    /* hosts */
    int target_copy[NSHARD]; /* 0 none, 1 fenced retired copy, 2 live */
    int source_copy[NSHARD]; /* 1 while the source copy exists */
    int fenced[NSHARD];
    int replicating[NSHARD];
    /* behaviour */
    char fail_op[32]; /* the next call of this op fails (once) */
    int fail_status;
    char fail_always[32]; /* this op fails every time, for one shard: */
    int fail_always_shard;
    int fence_busy; /* fence answers BC_ELOCKWAIT this many times */
    int drain_slow; /* drain answers BC_ETIMEOUT this many times */
    uint32_t diffs_at_fence, diffs_in_flight, diffs_copies;
    int no_snapshot; /* compare_at_fence has no snapshot (a resumed run) */
    int plan_stale;
    /* create records this move first, as another tool would have meanwhile */
    const struct catalog_move *pair_race;
    char hosts[8][SHARDMAP_NAME_MAX];
    int nhost;
    /* what happened */
    char log[4096];
    char events[4096];
    char error_event[512]; /* the text of the last error event */
    char hooks[256];
    int ncutover_attempt;
    int pair_of[NSHARD]; /* from * 4 + to of the shard's replication */
    int pair_max;
    char last_error[256];
};

/* A fake, the backend over it and the move options: a test's state. */
struct world {
    struct fake f;
    struct reshard_backend b;
    struct reshard_opts o;
};

/* cmocka setup and teardown: *state is a struct world, two hosts db1, db2. */
int fake_setup(void **state);
int fake_teardown(void **state);
/* Forgets the operations, events and hooks recorded so far. */
void clear_logs(struct fake *f);

#endif
