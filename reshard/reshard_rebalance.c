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

struct rebalance {
    const struct reshard_backend *b;
    const struct shardmap_plan *plan;
    struct reshard_opts opts;
    struct reshard_move **moves; /* per plan move, NULL when it did not start */
    int *rc;
    /*
     * MariaDB takes one replication connection per source host on a target:
     * moves running at once never share a (from, to) pair.
     */
    pthread_mutex_t lock;
    pthread_cond_t freed;
    uint8_t *started;   /* per move */
    uint8_t *pair_busy; /* [from * nnode + to] */
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

/* The next move whose host pair is free, or -1 when none is left to start. */
static int next_move(struct rebalance *rb)
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
            if (!rb->pair_busy[mv->from * nnode + mv->to]) {
                rb->started[i] = 1;
                rb->pair_busy[mv->from * nnode + mv->to] = 1;
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

static void *worker(void *arg)
{
    struct rebalance *rb = arg;
    uint32_t nnode = rb->plan->target->nnode;
    int i;

    while ((i = next_move(rb)) >= 0) {
        const struct shardmap_move *mv = &rb->plan->moves[i];
        struct reshard_move *m = NULL;
        int rc = reshard_move_create(
            rb->b, mv->shard, rb->plan->target->nodes[mv->to].name, &rb->opts, &m);
        if (rc == 0) {
            reshard_move_defer_cleanup(m, 1);
            rc = reshard_move_run(m);
        }
        rb->moves[i] = m;
        rb->rc[i] = rc == RESHARD_NOTHING ? 0 : rc;
        if (rb->rc[i] < 0)
            atomic_fetch_add(&rb->failed, 1);
        pthread_mutex_lock(&rb->lock);
        rb->pair_busy[mv->from * nnode + mv->to] = 0;
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
    const struct shardmap_host_conf *h = &rb->plan->new_host;
    struct reshard_event ev = {
        .kind = RESHARD_EV_HOST_ADDED, .shard = RESHARD_NO_SHARD, .from = "", .to = ""};
    int added = 0, rc;

    if (!rb->plan->has_new_host)
        return 0;
    if ((rc = rb->b->ops->add_host(rb->b->be, h, &added)) < 0)
        return reshard__fail(&rb->opts, RESHARD_NO_SHARD, rc, "adding the host: %s",
                             sql_last_error());
    if (added) {
        ev.text = h->name;
        reshard__emit(&rb->opts, &ev);
        reshard__note(&rb->opts, RESHARD_NO_SHARD, "host %s (%s:%u) added to the map",
                      h->name, h->addr, h->port);
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
    rb.pair_busy = calloc((size_t)plan->target->nnode * plan->target->nnode, 1);
    pthread_mutex_init(&rb.lock, NULL);
    pthread_cond_init(&rb.freed, NULL);
    if (rb.moves == NULL || rb.rc == NULL || rb.started == NULL ||
        rb.pair_busy == NULL) {
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
    if (!opts->keep_source && opts->grace_s > 0 &&
        atomic_load(&rb.failed) < plan->nmove) {
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
    free(rb.pair_busy);
    pthread_mutex_destroy(&rb.lock);
    pthread_cond_destroy(&rb.freed);
    return rc;
}
