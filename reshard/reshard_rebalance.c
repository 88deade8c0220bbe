/*
 * reshard_rebalance.c: running a plan's moves (shardctl rebalance).
 *
 * The plan must have been made from the map as it is now; its new host is
 * added first, the moves run opts->parallel at a time, the sources of all of
 * them wait out one grace period together, and hosts the plan drained leave
 * the map at the end.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "reshard/reshard_int.h"

#define MAX_THREADS 16
#define MOVE_ATTEMPTS 2 /* a failed move is resumed once */
#define RETRY_PAUSE_MS 2000

/* A host pair's state. */
enum { PAIR_FREE, PAIR_BUSY, PAIR_FAILED };

struct rebalance {
    const struct reshard_backend *b;
    const struct shardmap_plan *plan;
    struct reshard_opts opts;
    struct reshard_move **moves; /* per plan move, NULL when it did not start */
    int *rc;
    /*
     * MariaDB takes one replication connection per source host on a target:
     * moves running at once never share a (from, to) pair. A move that
     * failed unfinished, with its connection perhaps still there or to come
     * when it is resumed, leaves its pair failed: the pair's other moves are
     * not started (the engine would refuse them: pair_busy).
     */
    pthread_mutex_t lock;
    pthread_cond_t freed;
    uint8_t *started; /* per move */
    uint8_t *pair;    /* [from * nnode + to]: PAIR_* */
    atomic_uint done, failed;
    int64_t t0;
};

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void report(struct rebalance *rb, enum reshard_event_kind kind)
{
    struct reshard_event ev = {
        .kind = kind, .shard = RESHARD_NO_SHARD, .from = "", .to = ""};

    ev.rebalance.done = atomic_load(&rb->done);
    ev.rebalance.total = rb->plan->nmove;
    ev.rebalance.failed = atomic_load(&rb->failed);
    ev.rebalance.seconds = (double)(now_ms() - rb->t0) / 1000.0;
    reshard__emit(&rb->opts, &ev);
}

/*
 * The next move whose host pair is free, or -1 when none is left to start;
 * *skip set for a move whose pair failed (the caller reports it).
 */
static int next_move(struct rebalance *rb, int *skip)
{
    uint32_t nnode = rb->plan->target->nnode;
    int left;

    pthread_mutex_lock(&rb->lock);
    for (;;) {
        left = 0;
        for (uint32_t i = 0; i < rb->plan->nmove; i++) {
            const struct shardmap_move *mv = &rb->plan->moves[i];
            if (rb->started[i])
                continue;
            left = 1;
            uint8_t *pair = &rb->pair[mv->from * nnode + mv->to];
            if (*pair != PAIR_BUSY) {
                rb->started[i] = 1;
                *skip = *pair == PAIR_FAILED;
                if (*pair == PAIR_FREE)
                    *pair = PAIR_BUSY;
                pthread_mutex_unlock(&rb->lock);
                return (int)i;
            }
        }
        if (!left)
            break;
        pthread_cond_wait(&rb->freed, &rb->lock);
    }
    pthread_mutex_unlock(&rb->lock);
    return -1;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/*
 * A move that failed recorded and before "verified": its replication
 * connection may be there, or comes when it is resumed; no other move
 * between its two hosts may start before it finished (or was rolled back).
 */
static int may_hold_pair(const struct reshard_move *m)
{
    return m != NULL && reshard_move_phase(m) < RESHARD_VERIFIED;
}

/*
 * One move of the plan, resumed once when it fails; its status. *hold is
 * set when it failed with its replication connection perhaps left behind.
 */
static int run_move(struct rebalance *rb, uint32_t i, int *hold)
{
    const struct shardmap_move *mv = &rb->plan->moves[i];
    const char *to = rb->plan->target->nodes[mv->to].name;
    int rc = -1;

    for (int attempt = 1; attempt <= MOVE_ATTEMPTS && rc < 0; attempt++) {
        if (attempt > 1) {
            reshard__note(
                &rb->opts, mv->shard,
                "shard %u: resuming the failed move in %u ms (attempt %d of %d)",
                mv->shard, RETRY_PAUSE_MS, attempt, MOVE_ATTEMPTS);
            sleep_ms(RETRY_PAUSE_MS);
        }
        reshard_move_destroy(rb->moves[i]);
        rb->moves[i] = NULL;
        rc = reshard_move_create(rb->b, mv->shard, to, &rb->opts, &rb->moves[i]);
        if (rc == 0) {
            reshard_move_defer_cleanup(rb->moves[i], 1);
            rc = reshard_move_run(rb->moves[i]);
        }
        *hold = rc < 0 && (*hold || may_hold_pair(rb->moves[i]));
        /*
         * Another shardctl on the shard, a move elsewhere, or another move
         * between the two hosts (not the plan's): not ours to retry.
         */
        if (rc == -EBUSY || rc == BC_EEXISTS || rc == -EALREADY)
            break;
    }
    return rc == RESHARD_NOTHING ? 0 : rc;
}

static void *worker(void *arg)
{
    struct rebalance *rb = arg;
    uint32_t nnode = rb->plan->target->nnode;
    int i, skip = 0;

    while ((i = next_move(rb, &skip)) >= 0) {
        const struct shardmap_move *mv = &rb->plan->moves[i];
        const char *from = rb->plan->target->nodes[mv->from].name;
        const char *to = rb->plan->target->nodes[mv->to].name;
        uint8_t after = PAIR_FREE;

        if (skip) {
            rb->rc[i] = reshard__fail(
                &rb->opts, mv->shard, -ECANCELED,
                "not moved: a move from %s to %s failed before it and is "
                "unfinished (it may hold their replication connection, and no "
                "other move between them starts before it finished); resume or "
                "roll back that move, then run the plan again",
                from, to);
            after = PAIR_FAILED;
        } else {
            int hold = 0;
            rb->rc[i] = run_move(rb, (uint32_t)i, &hold);
            if (hold)
                after = PAIR_FAILED;
        }
        if (rb->rc[i] < 0)
            atomic_fetch_add(&rb->failed, 1);
        pthread_mutex_lock(&rb->lock);
        rb->pair[mv->from * nnode + mv->to] = after;
        pthread_cond_broadcast(&rb->freed);
        pthread_mutex_unlock(&rb->lock);
        atomic_fetch_add(&rb->done, 1);
        report(rb, RESHARD_EV_REBALANCE);
    }
    return NULL;
}

/* Adds the plan's new host to the map (a new map version). */
static int add_new_host(struct rebalance *rb)
{
    const struct shardmap_host_conf *planned = &rb->plan->new_host;
    struct shardmap_host_conf h = *planned;
    struct reshard_event ev = {
        .kind = RESHARD_EV_HOST_ADDED, .shard = RESHARD_NO_SHARD, .from = "", .to = ""};
    int added = 0, rc;

    if (!rb->plan->has_new_host)
        return 0;
    if ((rc = rb->b->ops->add_host(rb->b->be, &h, &added)) < 0)
        return reshard__fail(&rb->opts, RESHARD_NO_SHARD, rc, "adding the host: %s",
                             sql_last_error());
    if (added) {
        ev.text = h.name;
        reshard__emit(&rb->opts, &ev);
        if (strcmp(h.addr, planned->addr) != 0 || h.port != planned->port)
            reshard__note(
                &rb->opts, RESHARD_NO_SHARD,
                "host %s (%s:%u, its primary now; the plan named %s:%u) added "
                "to the map",
                h.name, h.addr, h.port, planned->addr, planned->port);
        else
            reshard__note(&rb->opts, RESHARD_NO_SHARD,
                          "host %s (%s:%u) added to the map", h.name, h.addr, h.port);
    }
    return 0;
}

/* Hosts the plan leaves empty, and that hold no shard now, leave the map. */
static int remove_drained(struct rebalance *rb)
{
    uint32_t counts[SHARDMAP_MAX_HOSTS];
    const struct shardmap *t = rb->plan->target;

    shardmap_count(t, counts);
    for (uint32_t i = 0; i < t->nnode; i++) {
        struct reshard_event ev = {
            .kind = RESHARD_EV_HOST_REMOVED, .from = "", .to = ""};
        int removed = 0, rc;
        if (counts[i] != 0)
            continue;
        rc = rb->b->ops->remove_host(rb->b->be, t->nodes[i].name, &removed);
        if (rc < 0)
            return reshard__fail(&rb->opts, RESHARD_NO_SHARD, rc,
                                 "removing the drained host: %s", sql_last_error());
        if (!removed)
            continue;
        ev.text = t->nodes[i].name;
        reshard__emit(&rb->opts, &ev);
        reshard__note(&rb->opts, RESHARD_NO_SHARD,
                      "host %s holds no shard any more: removed from the map",
                      t->nodes[i].name);
    }
    return 0;
}

/* Moves whose source copy waits for the grace period (finish_moves() drops them). */
static uint32_t sources_waiting(const struct rebalance *rb)
{
    uint32_t n = 0;

    for (uint32_t i = 0; i < rb->plan->nmove; i++) {
        const struct reshard_move *m = rb->moves[i];
        n += m != NULL && rb->rc[i] == RESHARD_OK && m->phase != RESHARD_DONE;
    }
    return n;
}

/* Runs every deferred cleanup at once (the grace period is over). */
static int finish_moves(struct rebalance *rb)
{
    int rc = 0;

    for (uint32_t i = 0; i < rb->plan->nmove; i++) {
        struct reshard_move *m = rb->moves[i];
        if (m != NULL && rb->rc[i] == RESHARD_OK && m->phase != RESHARD_DONE) {
            reshard_move_defer_cleanup(m, 0);
            m->opts.grace_s = 0;
            rb->rc[i] = reshard_move_run(m);
        }
        if (rb->rc[i] < 0 || (rb->rc[i] == RESHARD_DIFFER && rc >= 0))
            rc = rc < 0 ? rc : rb->rc[i];
    }
    return rc;
}

int reshard_rebalance(const struct reshard_backend *b, const struct shardmap_plan *plan,
                      const struct reshard_opts *opts)
{
    struct rebalance rb = {.b = b, .plan = plan, .opts = *opts};
    pthread_t threads[MAX_THREADS];
    unsigned nthread = opts->parallel ? opts->parallel : 1, started = 0;
    uint32_t n = plan->nmove ? plan->nmove : 1;
    int rc;

    if ((rc = b->ops->check_plan(b->be, plan)) < 0)
        return reshard__fail(opts, RESHARD_NO_SHARD, rc, "%s", sql_last_error());
    if ((rc = add_new_host(&rb)) < 0)
        return rc;
    rb.moves = calloc(n, sizeof(*rb.moves));
    rb.rc = calloc(n, sizeof(*rb.rc));
    rb.started = calloc(n, 1);
    rb.pair = calloc((size_t)plan->target->nnode * plan->target->nnode, 1);
    pthread_mutex_init(&rb.lock, NULL);
    pthread_cond_init(&rb.freed, NULL);
    if (rb.moves == NULL || rb.rc == NULL || rb.started == NULL || rb.pair == NULL) {
        rc = reshard__fail(opts, RESHARD_NO_SHARD, -ENOMEM, "out of memory");
        goto out;
    }
    if (nthread > MAX_THREADS)
        nthread = MAX_THREADS;
    reshard__note(opts, RESHARD_NO_SHARD, "rebalance: %u moves, %u at a time",
                  plan->nmove, nthread);
    rb.t0 = now_ms();
    for (unsigned i = 0; i < nthread; i++)
        if (pthread_create(&threads[i], NULL, worker, &rb) == 0)
            started++;
    if (started == 0)
        worker(&rb);
    for (unsigned i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    /* One grace period for all the moves, then the sources go. */
    /* A plan whose moves were all done before (a re-run) has nothing to drop. */
    if (!opts->keep_source && opts->grace_s > 0 && sources_waiting(&rb) > 0) {
        reshard__note(opts, RESHARD_NO_SHARD,
                      "rebalance: dropping the source copies in %u s", opts->grace_s);
        struct timespec ts = {opts->grace_s, 0};
        nanosleep(&ts, NULL);
    }
    rc = finish_moves(&rb);
    if (rc == RESHARD_OK)
        rc = remove_drained(&rb);
    report(&rb, RESHARD_EV_REBALANCE_DONE);
    reshard__note(opts, RESHARD_NO_SHARD, "rebalance: %u of %u moves done in %.0f s",
                  plan->nmove - atomic_load(&rb.failed), plan->nmove,
                  (double)(now_ms() - rb.t0) / 1000.0);
out:
    for (uint32_t i = 0; rb.moves && i < plan->nmove; i++)
        reshard_move_destroy(rb.moves[i]);
    free(rb.moves);
    free(rb.rc);
    free(rb.started);
    free(rb.pair);
    pthread_mutex_destroy(&rb.lock);
    pthread_cond_destroy(&rb.freed);
    return rc;
}
