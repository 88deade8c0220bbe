/*
 * shardctl.h: what shardctl's files share.
 */
#ifndef SHARDCTL_H
#define SHARDCTL_H

#include <pthread.h>
#include <stdint.h>

#include "shardmap/shardmap.h"

/*
 * Exit codes of every command, the one table (docs/operations.md repeats it):
 *   0 success (also: nothing to do)
 *   1 error
 *   2 usage: bad operands, no such shard, nothing to compare with
 *   3 a host is down or cannot be reached
 *   4 a comparison found differences
 *   5 refused: another tool moves the shard, it has an unfinished move to
 *     another host, or another shard's move between the same two hosts is
 *     unfinished
 */
enum {
    SC_OK = 0,
    SC_ERROR = 1,
    SC_USAGE = 2,
    SC_DOWN = 3,
    SC_DIFFER = 4,
    SC_REFUSED = 5,
};
/*
 * SC_DOWN for a status of a server that did not answer (down, timed out),
 * SC_ERROR for any other, one that refused the account included (it answered).
 */
int sc_exit_of(int rc);

/* How the move engine's events are shown (shardctl_reshard.c). */
struct sc_out {
    int json;        /* one JSON object per line on stdout */
    int tty;         /* stderr is a terminal: progress bars redraw in place */
    int no_progress; /* rebalance: its overall bar instead of each move's */
    char prefix[SHARDMAP_PREFIX_MAX]; /* schema prefix, for messages */
    int64_t last_progress_ms;
    pthread_mutex_t lock;
};
/* Escapes s for a JSON string (without the quotes). */
void sc_json_str(char *out, size_t size, const char *s);

struct sc_move_opts {
    int keep_source;
    int no_verify;
    int abort;
    int resume;
    unsigned grace_s;             /* before the source copy is dropped */
    const char *postpone_cutover; /* while this file exists, stay in catch-up */
    unsigned parallel;            /* rebalance: moves at a time */
    uint64_t copy_rate;           /* rows/s cap of the copy, 0: none */
};

/* The commands over the move engine; each returns an exit code. */
int shardctl_move(const struct shardmap_conf *conf, struct sc_out *out, uint32_t shard,
                  const char *to, const struct sc_move_opts *opts);
int shardctl_rebalance(const struct shardmap_conf *conf, struct sc_out *out,
                       const char *plan_path, const struct sc_move_opts *opts);
int shardctl_moves(const struct shardmap_conf *conf, struct sc_out *out);
int shardctl_verify(const struct shardmap_conf *conf, struct sc_out *out,
                    uint32_t shard, const char *against);
/* With BC_SHARDCTL_HOLD set, blocks SIGUSR1 in every thread (call first). */
void shardctl_reshard_signals(void);

#endif
