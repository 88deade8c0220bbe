/*
 * api_settle_job.c: the server's settler, which runs the settlement jobs of
 * posted results, whichever server took the result, each bet exactly once.
 *
 * A settlement is a job row in the global schema with a lease (the
 * catalog's settlements, catalog/catalog.h). Every server runs a settler, a
 * job of the server (api_jobs.c) that looks for jobs nobody holds, at start,
 * every SETTLE_POLL_MS and at once when a result is posted here; it claims
 * one (of servers racing for it, exactly one wins) and runs it as a job of
 * its own, which renews the lease while it works. A server that dies stops
 * renewing; when the lease runs out another server's settler claims the job
 * and goes on where the shards say it was. Nobody re-posts anything.
 *
 * A run settles the shards in parallel by host: one thread per host of the
 * map walks that host's shards that have no guard row yet (with
 * settle_batches, the server's hosts' threads take turns: at most that many
 * batches of all its runs at once, for hosts that share CPUs). A shard is
 * settled in batches of at most settle_batch_bets (api_settle_batch.c), each one
 * transaction on the shard: lock the next open bets of the match (in id
 * order), write their ledger rows, credit their users' balances and points,
 * update the standings aggregates (api_standings_batch), mark the bets won,
 * lost or void. A bet's status, its ledger row and its credit commit
 * together, and only an open bet is settled, so whatever dies when, no bet
 * is paid twice or lost. Each batch takes the bets after the last one's;
 * the transaction that, looking at every bet of the match on the shard,
 * finds fewer open ones than a batch (none, at the end) also inserts the
 * shard's settled_matches guard row: bets read that row with a share lock
 * (api_bets.c), and the locks of "no open bet left" and of the insert are
 * held together, so a bet racing the end of the settlement is either
 * settled by it or refused. A shard that fails is
 * retried with backoff while the host's other shards go on; the job is done
 * when every shard has its guard row. (A settled bet keeps its place in
 * match_bets, so two matches settling on one shard at once no longer write
 * into gaps each other's reads locked; should InnoDB still find a deadlock,
 * it rolls one batch back at once, and that is tried again like any
 * failure.)
 *
 * Progress: a run recounts the shards (guard rows, bets of the match, and,
 * when it takes over from another run, bets no longer open; once every
 * shard is guarded, the counts its guard row kept) when it claims the job,
 * reports what its batches settled
 * with each renewal, writes the recount once every shard is settled (while
 * the standings are recomputed, or before: shards_done = shards_total while
 * the job is still running), and the final counts when it finishes it. When
 * the run's own hosts settled every shard that was left, the standings'
 * recomputation starts beside that last recount, not after it.
 *
 * Every thread here is background work (router_background()): its own
 * pools and deadlines, and a slow batch never marks a host down.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "api/api_int.h"
#include "api/api_settle.h"
#include "catalog/catalog.h"

/*
 * The lease and its renewal, on the global host's clock. Renewing every
 * second costs one small UPDATE per running job; a 5 s lease survives four
 * missed renewals (a global host's blip, a stalled process) before another
 * server may take the job over, and bounds a takeover after a crash to
 * about lease + poll, 6 s.
 */
#define SETTLE_LEASE_MS 5000
#define SETTLE_RENEW_MS 1000
/* How often a settler looks for jobs nobody holds: one tiny SELECT. */
#define SETTLE_POLL_MS 1000
/*
 * Jobs one server runs at once. Matches that end together (the last group
 * games, two at a time) settle in parallel; a third waits for another
 * server or the next poll. The background pool has ROUTER_BG_POOL_MAX (4)
 * connections per host, and each run takes one per host for its batches
 * and one of the global host's for its lease: two runs leave room for the
 * settler's scan and the standings' scatters.
 */
#define SETTLE_RUNS_MAX 2
/* A failing shard is tried again after 200 ms (+ up to half), doubling up to 5 s. */
#define SETTLE_BACKOFF_MIN_MS 200
#define SETTLE_BACKOFF_MAX_MS 5000
/*
 * A host's failed batches are logged each shard's first time, then one line
 * in SETTLE_LOG_MS with the count of those not logged: a host down for an
 * hour wrote 12,000 lines a settlement.
 */
#define SETTLE_LOG_MS 10000
/* The settler's own job key: match ids start at 1. */
#define SETTLER_KEY 0

struct api_settler {
    struct router *router;               /* ref */
    struct cache *cache;                 /* ref, may be NULL */
    struct api_jobs *jobs;               /* ref: the server's */
    char owner[CATALOG_LEASE_OWNER_MAX]; /* "<name>/<nonce>", read-only */
    atomic_int nrun;                     /* runs started and not yet returned */
    uint32_t pause_pct;                  /* limits' settle_pause_pct */
    uint32_t batches_max;                /* limits' settle_batches (0: no cap) */
    uint32_t batch_bets;                 /* limits' settle_batch_bets */
    int standings_mode;                  /* the recomputation's router_background() */
    pthread_mutex_t lock;                /* guards nbatch and runs' batches_peak */
    pthread_cond_t freed;                /* a batch ended */
    uint32_t nbatch;                     /* batches in flight, of every run */
    int scan_failing;                    /* the settler thread's own */
};

/* One claimed job while it runs (on its job's thread, with its host threads). */
struct settle_run {
    struct api_settler *settler; /* ref */
    struct api_job *job;         /* ref: the run's own job */
    struct router *router;       /* ref */
    uint64_t match;
    char result[16];
    const char *reason; /* static: the ledger's reason, refund or payout */
    atomic_int lost;    /* the lease is gone: stop after the batch in hand */
    atomic_int nworking;
    /* Settled since the last report: added by the hosts, taken by renewals. */
    atomic_uint_fast64_t bets_new;
    atomic_uint shards_new;
    atomic_uint shards_run;        /* settled by this run, never taken */
    const uint64_t *before;        /* ref: bets counted settled at the claim, a shard */
    atomic_int_fast64_t paused_ms; /* the hosts' pauses (settle_pause_pct) */
    atomic_uint_fast64_t batches;  /* batches of this run that settled bets */
    atomic_uint_fast64_t widest;   /* the most bets one of them settled */
    uint32_t batches_peak;         /* the server's batches at once, at most (lock) */
};

/* One host's part of a run: its shards without a guard row. */
struct settle_host {
    struct settle_run *run; /* ref */
    const char *name;       /* ref in the map */
    pthread_t thread;
    uint32_t nshard;
    uint32_t *shard;   /* ref in the run's array */
    int64_t *next_ms;  /* owned: when a failed shard is tried again; 0 done */
    uint32_t *backoff; /* owned */
    uint64_t *settled; /* owned: bets this run settled on each shard */
    int64_t logged_ms; /* the last retry logged (SETTLE_LOG_MS apart) */
    uint32_t unlogged; /* retries not logged since */
};

static int run_stopping(struct settle_run *run)
{
    return atomic_load(&run->lost) || api_job_stopping(run->job);
}

static void batch_leave(struct settle_run *run, int token);

static int run_stopping_cb(void *run)
{
    return run_stopping(run);
}

/*
 * Takes a place among the server's batches in flight, waiting while
 * settle_batches of them run, then one among the background statements of
 * shard's host's machine (router_machine_enter(): hosts that share a
 * machine take turns); -ECANCELED when the run stops first. Counts the
 * batches also without a cap, for the run's peak in its last log line.
 * *token goes back to batch_leave().
 */
static int batch_enter(struct settle_run *run, uint32_t shard, int *token)
{
    struct api_settler *s = run->settler;
    int rc = 0;

    pthread_mutex_lock(&s->lock);
    while (s->batches_max > 0 && s->nbatch >= s->batches_max) {
        if (run_stopping(run)) {
            rc = -ECANCELED;
            break;
        }
        /* Timed (monotonic clock): a run that stops is noticed within 100 ms. */
        struct timespec ts;
        api_deadline_ms(&ts, CLOCK_MONOTONIC, 100);
        pthread_cond_timedwait(&s->freed, &s->lock, &ts);
    }
    if (rc == 0 && ++s->nbatch > run->batches_peak)
        run->batches_peak = s->nbatch;
    pthread_mutex_unlock(&s->lock);
    if (rc < 0)
        return rc;
    /* Then a place among the batches and scans of the host's machine. */
    if ((rc = router_machine_enter(run->router, shard, run_stopping_cb, run, token)) <
        0)
        batch_leave(run, -1);
    return rc;
}

static void batch_leave(struct settle_run *run, int token)
{
    struct api_settler *s = run->settler;

    router_machine_leave(run->router, token);
    pthread_mutex_lock(&s->lock);
    s->nbatch--;
    pthread_cond_signal(&s->freed);
    pthread_mutex_unlock(&s->lock);
}

/*
 * Settles shard to its guard row; -ECANCELED when the run stops first.
 * *settled: the bets this run settled on it, kept over the tries. Once the
 * guard row is in, the shard's bets that earlier runs settled and the claim
 * did not count (run->before) are reported too: the progress ends at the
 * match's bets.
 */
static int settle_shard(struct settle_run *run, uint32_t shard, uint64_t *settled)
{
    int64_t deadline = 0;
    uint64_t seen, n, total = 0, after = 0;
    int rc, token, last = 0;

    while (!last) {
        if (run_stopping(run))
            return -ECANCELED;
        if ((rc = batch_enter(run, shard, &token)) < 0)
            return rc;
        /* On the shard's new host when a move fenced it. */
        int64_t t0 = sql_now_ms();
        do {
            seen = router_map_version(run->router);
            rc = api_settle_batch(run->router, run->match, run->result, run->reason,
                                  shard, run->settler->batch_bets, &after, &n, &last,
                                  &total);
        } while (rc == BC_EMOVED &&
                 router_await_move(run->router, seen, &deadline) == 0);
        batch_leave(run, token);
        if (rc < 0)
            return rc;
        deadline = 0;
        *settled += n;
        atomic_fetch_add(&run->bets_new, n);
        if (n > 0) {
            uint_fast64_t w = atomic_load(&run->widest);

            atomic_fetch_add(&run->batches, 1);
            while (n > w && !atomic_compare_exchange_weak(&run->widest, &w, n))
                ;
        }
        /* The host's CPU left to requests for a while (settle_pause_pct). */
        if (run->settler->pause_pct > 0 && n > 0) {
            int64_t ms = (sql_now_ms() - t0) * run->settler->pause_pct / 100;
            api_job_sleep(run->job, (uint32_t)ms);
            atomic_fetch_add(&run->paused_ms, ms);
        }
    }
    if (total > run->before[shard] + *settled)
        atomic_fetch_add(&run->bets_new, total - run->before[shard] - *settled);
    atomic_fetch_add(&run->shards_new, 1);
    atomic_fetch_add(&run->shards_run, 1);
    return 0;
}

/* ---- a host's thread ------------------------------------------------------ */

/*
 * Walks the host's shards until each has its guard row: a shard that fails
 * waits its backoff while the others go on. Ends early when the run stops.
 */
static void *host_main(void *arg)
{
    struct settle_host *h = arg;
    struct settle_run *run = h->run;
    uint32_t left = h->nshard;

    router_background(1);
    for (uint32_t i = 0; i < h->nshard; i++) {
        h->next_ms[i] = 1; /* due now */
        h->backoff[i] = SETTLE_BACKOFF_MIN_MS;
    }
    while (left > 0 && !run_stopping(run)) {
        int64_t wait = SETTLE_BACKOFF_MAX_MS;

        for (uint32_t i = 0; i < h->nshard && !run_stopping(run); i++) {
            int64_t now = sql_now_ms();
            int rc;

            if (h->next_ms[i] == 0)
                continue;
            if (h->next_ms[i] > now) {
                if (h->next_ms[i] - now < wait)
                    wait = h->next_ms[i] - now;
                continue;
            }
            rc = settle_shard(run, h->shard[i], &h->settled[i]);
            if (rc == 0) {
                h->next_ms[i] = 0;
                left--;
            } else if (rc != -ECANCELED) {
                /*
                 * Jitter: two batches that deadlocked (settlements of two
                 * matches on one shard) do not meet again at once.
                 */
                uint32_t ms =
                    h->backoff[i] + randombytes_uniform(h->backoff[i] / 2 + 1);
                if (h->backoff[i] == SETTLE_BACKOFF_MIN_MS ||
                    now - h->logged_ms >= SETTLE_LOG_MS) {
                    api_log("settlement %" PRIu64 ": shard %u (host %s) failed: %s "
                            "(%s); again in %u ms, the host's other shards go on "
                            "(%u failures of its shards not logged since)",
                            run->match, h->shard[i], h->name, bc_strerror(rc),
                            router_last_error(), ms, h->unlogged);
                    h->logged_ms = now;
                    h->unlogged = 0;
                } else {
                    h->unlogged++;
                }
                h->next_ms[i] = sql_now_ms() + ms;
                if (ms < wait)
                    wait = ms;
                h->backoff[i] = h->backoff[i] * 2 > SETTLE_BACKOFF_MAX_MS
                                    ? SETTLE_BACKOFF_MAX_MS
                                    : h->backoff[i] * 2;
            }
        }
        if (left > 0 && !run_stopping(run))
            api_job_sleep(run->job, (uint32_t)(wait > 0 ? wait : 1));
    }
    /* The last host out wakes the run (it sleeps between renewals). */
    if (atomic_fetch_sub(&run->nworking, 1) == 1)
        api_jobs_kick(run->settler->jobs);
    return NULL;
}

/* ---- a run -------------------------------------------------------------- */

/* Writes what the hosts settled since the last report (kept on failure). */
static void settle_report(struct settle_run *run)
{
    uint64_t bets = atomic_exchange(&run->bets_new, 0);
    uint32_t shards = atomic_exchange(&run->shards_new, 0);

    if ((bets > 0 || shards > 0) &&
        catalog_settlement_advance(router_catalog(run->router), run->match,
                                   run->settler->owner, shards, bets) < 0) {
        atomic_fetch_add(&run->bets_new, bets);
        atomic_fetch_add(&run->shards_new, shards);
    }
}

/*
 * Renews the lease every SETTLE_RENEW_MS until the hosts are done or the
 * run stops; the lease is lost when another owner has it, or when no
 * renewal succeeded for a whole lease (another server may have it by now).
 */
static void settle_keep_lease(struct settle_run *run)
{
    struct catalog *cat = router_catalog(run->router);
    int64_t renewed = sql_now_ms();
    int rc;

    while (atomic_load(&run->nworking) > 0 && !run_stopping(run)) {
        api_job_sleep(run->job, SETTLE_RENEW_MS);
        if (atomic_load(&run->nworking) == 0 || run_stopping(run))
            break;
        settle_report(run);
        rc = catalog_settlement_renew(cat, run->match, run->settler->owner,
                                      SETTLE_LEASE_MS);
        if (rc == 1) {
            renewed = sql_now_ms();
            continue;
        }
        if (rc == 0)
            api_log("settlement %" PRIu64 ": %s lost its lease to another server; "
                    "stopping",
                    run->match, run->settler->owner);
        else if (sql_now_ms() - renewed < SETTLE_LEASE_MS)
            continue; /* try again: the lease still runs */
        else
            api_log("settlement %" PRIu64 ": %s could not renew its lease for %d ms "
                    "(%s); stopping",
                    run->match, run->settler->owner, SETTLE_LEASE_MS,
                    router_last_error());
        atomic_store(&run->lost, 1);
        api_jobs_kick(run->settler->jobs);
    }
}

/*
 * Runs a thread per host over the shards not guarded yet, keeps the lease
 * meanwhile, and joins them. 0 when they ran (done or stopped), or a status
 * when they could not start (the lease is left to expire).
 */
static int settle_hosts(struct settle_run *run, const uint8_t *guarded)
{
    const struct shardmap *map = router_map(run->router);
    uint32_t nshard = router_nshard(run->router), *shards = NULL;
    struct settle_host *hosts = NULL;
    int rc = -ENOMEM;

    if (map == NULL)
        return BC_ENOMAP;
    hosts = calloc(map->nnode, sizeof(*hosts));
    shards = calloc(nshard, sizeof(*shards));
    if (hosts == NULL || shards == NULL)
        goto out;
    /* The pending shards grouped by host, in shard order within each. */
    for (uint32_t s = 0; s < nshard; s++)
        if (!guarded[s])
            hosts[map->node_of[s]].nshard++;
    for (uint32_t i = 0, at = 0; i < map->nnode; i++) {
        hosts[i].run = run;
        hosts[i].name = map->nodes[i].name;
        hosts[i].shard = shards + at;
        at += hosts[i].nshard;
        hosts[i].nshard = 0;
    }
    for (uint32_t s = 0; s < nshard; s++)
        if (!guarded[s]) {
            struct settle_host *h = &hosts[map->node_of[s]];
            h->shard[h->nshard++] = s;
        }
    rc = 0;
    for (uint32_t i = 0; i < map->nnode && rc == 0; i++) {
        struct settle_host *h = &hosts[i];
        if (h->nshard == 0)
            continue;
        h->next_ms = calloc(h->nshard, sizeof(*h->next_ms));
        h->backoff = calloc(h->nshard, sizeof(*h->backoff));
        h->settled = calloc(h->nshard, sizeof(*h->settled));
        if (h->next_ms == NULL || h->backoff == NULL || h->settled == NULL) {
            rc = -ENOMEM;
            break;
        }
        atomic_fetch_add(&run->nworking, 1);
        if ((rc = -pthread_create(&h->thread, NULL, host_main, h)) < 0) {
            atomic_fetch_sub(&run->nworking, 1);
            h->nshard = 0; /* not started: not joined */
        }
    }
    if (rc < 0) {
        api_log("settlement %" PRIu64 ": cannot start its host threads: %s", run->match,
                bc_strerror(rc));
        atomic_store(&run->lost, 1); /* the started ones stop */
    } else {
        settle_keep_lease(run);
    }
    for (uint32_t i = 0; i < map->nnode; i++)
        if (hosts[i].nshard > 0)
            pthread_join(hosts[i].thread, NULL);
    settle_report(run);
out:
    for (uint32_t i = 0; hosts != NULL && i < map->nnode; i++) {
        free(hosts[i].next_ms);
        free(hosts[i].backoff);
        free(hosts[i].settled);
    }
    free(hosts);
    free(shards);
    return rc;
}

/* The standings' recomputation, on a thread of its own. */
struct standings_job {
    struct settle_run *run;
    pthread_t thread;
    int started;
    int rc;
};

static void *standings_main(void *arg)
{
    struct standings_job *sj = arg;

    /*
     * Its scans take the machine's places at the batches' share, or at one a
     * core with standings_per_core (docs/architecture.md, "Hosts that share
     * a machine").
     */
    router_background(sj->run->settler->standings_mode);
    sj->rc = api_standings_recompute(sj->run->router);
    if (atomic_fetch_sub(&sj->run->nworking, 1) == 1)
        api_jobs_kick(sj->run->settler->jobs);
    return NULL;
}

/* Starts the recomputation's thread; 0, or -1 when none could start. */
static int standings_start(struct standings_job *sj)
{
    sj->rc = 0;
    sj->started = 0;
    atomic_fetch_add(&sj->run->nworking, 1);
    if (pthread_create(&sj->thread, NULL, standings_main, sj) != 0) {
        atomic_fetch_sub(&sj->run->nworking, 1);
        return -1;
    }
    sj->started = 1;
    return 0;
}

/*
 * Recomputes the standings (sj started already, or now) while the run
 * keeps renewing its lease: at a million users they take seconds, and a
 * lease left to run out meanwhile would have another server claim the job
 * and recompute them again.
 */
static int settle_standings(struct settle_run *run, struct standings_job *sj,
                            int64_t t0)
{
    int early = sj->started;

    if (!early)
        t0 = sql_now_ms();
    if (!early && standings_start(sj) < 0) {
        /* No thread to be had: here, on a fresh lease. */
        (void)catalog_settlement_renew(router_catalog(run->router), run->match,
                                       run->settler->owner, SETTLE_LEASE_MS);
        atomic_fetch_add(&run->nworking, 1);
        standings_main(sj);
    } else {
        settle_keep_lease(run);
        pthread_join(sj->thread, NULL);
        sj->started = 0;
    }
    if (sj->rc == 0)
        api_log("settlement %" PRIu64 ": standings recomputed in %" PRId64 " ms%s",
                run->match, sql_now_ms() - t0,
                early ? " (begun beside the last recount)" : "");
    return sj->rc;
}

/*
 * Every shard has its guard row: the standings, then the job's record. In
 * that order, so that a crash between them redoes the standings.
 */
static void settle_finish(struct settle_run *run, const struct api_settle_count *c,
                          struct standings_job *sj, int64_t t0, int64_t t_std)
{
    struct catalog *cat = router_catalog(run->router);
    int rc = settle_standings(run, sj, t_std);

    if (rc < 0) {
        /*
         * The job stays running (its standings are not those of its bets):
         * released, the next claim, here or on another server, finds every
         * shard settled and recomputes them again.
         */
        api_log("settlement %" PRIu64 ": cannot recompute the standings (%s): the job "
                "stays running and is claimed again",
                run->match, bc_strerror(rc));
        catalog_settlement_release(cat, run->match, run->settler->owner);
        return;
    }
    /* Standings and profiles (points) change: one generation bump. */
    if (run->settler->cache != NULL)
        cache_bump(run->settler->cache, "standings");
    if (catalog_settlement_finish(cat, run->match, c->shards_done, c->bets_settled) < 0)
        api_log("settlement %" PRIu64 ": cannot record it done: %s; the next "
                "claim will",
                run->match, router_last_error());
    else {
        pthread_mutex_lock(&run->settler->lock);
        uint32_t peak = run->batches_peak;
        pthread_mutex_unlock(&run->settler->lock);
        char machines[512];
        router_machines_describe(run->router, machines, sizeof(machines));
        api_log("settlement %" PRIu64 ": done by %s: %" PRIu64 " bets on %u shards "
                "(this run %" PRId64 " ms; its hosts paused %" PRId64 " ms in all; "
                "the server ran at most %u batches at once; %" PRIu64
                " batches, at most %" PRIu64 " bets in one; machines: %s)",
                run->match, run->settler->owner, c->bets_settled, c->shards_done,
                sql_now_ms() - t0, (int64_t)atomic_load(&run->paused_ms), peak,
                (uint64_t)atomic_load(&run->batches),
                (uint64_t)atomic_load(&run->widest), machines);
    }
}

/* A claimed job (a job of the server keyed by the match), to its end. */
static void run_main(struct api_job *job, uint64_t match, void *arg)
{
    struct api_settler *s = arg;
    struct catalog *cat = router_catalog(s->router);
    struct settle_run run = {
        .settler = s, .job = job, .router = s->router, .match = match};
    struct catalog_settlement st;
    struct api_settle_count c;
    struct standings_job sj = {.run = &run};
    uint8_t *guarded = calloc(router_nshard(s->router), 1);
    uint64_t *before = calloc(router_nshard(s->router), sizeof(*before));
    uint32_t pending;
    int64_t t0 = sql_now_ms(), t_std;
    int rc, taken_over;

    router_background(1);
    if (guarded == NULL || before == NULL)
        goto out;
    if ((rc = catalog_settlement_get(cat, match, &st)) <= 0 ||
        strcmp(st.state, "running") != 0) {
        if (rc < 0)
            api_log("settlement %" PRIu64 ": cannot read it: %s", match,
                    router_last_error());
        goto out; /* the lease expires (or the job is done) */
    }
    snprintf(run.result, sizeof(run.result), "%s", st.result);
    run.reason = strcmp(st.result, "cancelled") == 0 ? "refund" : "payout";
    run.before = before;
    /*
     * A run before this one counted the match's bets when it claimed the
     * job: it may have settled some on shards it did not finish, and this
     * run's progress starts from them, read from the bets themselves. The
     * first run starts at once.
     */
    taken_over = st.bets_total > 0 || st.shards_done > 0;
    /*
     * A host that does not answer leaves its shards uncounted (not known
     * settled): they are settled as they come, retried while it is down,
     * and the others go on; the recount at the end counts them all.
     */
    if ((rc = api_settle_recount(s->router, match, &c, guarded,
                                 taken_over ? before : NULL, !taken_over)) < 0)
        api_log("settlement %" PRIu64 ": a host did not answer its count (%s): its "
                "shards are counted once they settle",
                match, router_last_error());
    rc = catalog_settlement_progress(cat, match, s->owner, c.shards_done,
                                     c.bets_settled, c.bets_total);
    if (rc < 0) {
        api_log("settlement %" PRIu64 ": cannot count its shards: %s", match,
                router_last_error());
        goto out;
    }
    api_log("settlement %" PRIu64 " (%s): %s runs it; %u of %u shards and %" PRIu64
            " of %" PRIu64 " bets settled before (counted in %" PRId64 " ms%s)",
            match, run.result, s->owner, c.shards_done, router_nshard(s->router),
            c.bets_settled, c.bets_total, sql_now_ms() - t0,
            taken_over ? ", every bet read: an earlier run claimed it" : "");
    pending = router_nshard(s->router) - c.shards_done;
    if (pending > 0 && (rc = settle_hosts(&run, guarded)) < 0)
        goto out;
    if (run_stopping(&run)) {
        if (!atomic_load(&run.lost))
            catalog_settlement_release(cat, match, s->owner);
        api_log("settlement %" PRIu64 ": %s stopped; %s", match, s->owner,
                atomic_load(&run.lost) ? "its new holder goes on"
                                       : "released for another server");
        goto out;
    }
    /*
     * When this run's hosts settled every pending shard, the standings'
     * sums are final: their recomputation starts now, beside the recount
     * that confirms it (the guard rows' counts, a row a shard).
     */
    t_std = sql_now_ms();
    if (pending > 0 && atomic_load(&run.shards_run) == pending)
        (void)standings_start(&sj);
    if ((rc = api_settle_recount(s->router, match, &c, guarded, NULL, 0)) < 0) {
        api_log("settlement %" PRIu64 ": cannot count its shards: %s", match,
                router_last_error());
    } else if (c.shards_done == router_nshard(s->router)) {
        /*
         * Every bet is settled: say so before the standings take their
         * seconds (the job stays running until they are stored).
         */
        if (catalog_settlement_progress(cat, match, s->owner, c.shards_done,
                                        c.bets_settled, c.bets_total) < 0)
            api_log("settlement %" PRIu64 ": cannot record its progress: %s", match,
                    router_last_error());
        settle_finish(&run, &c, &sj, t0, t_std);
    } else {
        catalog_settlement_release(cat, match, s->owner); /* claimed again soon */
    }
    if (sj.started) {
        /* Not finished (the recount failed or disagreed): nothing bumped. */
        pthread_join(sj.thread, NULL);
        api_log("settlement %" PRIu64 ": its standings were recomputed early; the "
                "next run recomputes them",
                match);
    }
out:
    free(guarded);
    free(before);
    atomic_fetch_sub(&s->nrun, 1);
}

/* ---- the settler ------------------------------------------------------------ */

/* Claims jobs nobody holds, while this server runs fewer than it may. */
static void settler_scan(struct api_settler *s)
{
    struct catalog *cat = router_catalog(s->router);
    uint64_t ids[2 * SETTLE_RUNS_MAX];
    uint32_t n = 0;
    int rc;

    if (atomic_load(&s->nrun) >= SETTLE_RUNS_MAX)
        return;
    rc = catalog_settlement_claimable(cat, ids, 2 * SETTLE_RUNS_MAX, &n);
    if (rc < 0 || s->scan_failing) {
        /* Said once when it starts failing and once when it works again. */
        if ((rc < 0) != s->scan_failing)
            api_log("settler %s: %s%s", s->owner,
                    rc < 0 ? "cannot look for settlements: " : "looking again",
                    rc < 0 ? router_last_error() : "");
        s->scan_failing = rc < 0;
    }
    for (uint32_t i = 0; i < n && atomic_load(&s->nrun) < SETTLE_RUNS_MAX; i++) {
        if (api_jobs_running(s->jobs, ids[i]))
            continue; /* ours, ending: its lease was just released */
        if ((rc = catalog_settlement_claim(cat, ids[i], s->owner, SETTLE_LEASE_MS)) <=
            0) {
            if (rc < 0)
                api_log("settlement %" PRIu64 ": cannot claim it: %s", ids[i],
                        router_last_error());
            continue;
        }
        atomic_fetch_add(&s->nrun, 1);
        if ((rc = api_jobs_start(s->jobs, ids[i], run_main, s)) < 0) {
            atomic_fetch_sub(&s->nrun, 1);
            catalog_settlement_release(cat, ids[i], s->owner);
            if (rc != -ECANCELED)
                api_log("settlement %" PRIu64 ": cannot start it: %s", ids[i],
                        bc_strerror(rc));
        }
    }
}

static void settler_main(struct api_job *job, uint64_t key, void *arg)
{
    struct api_settler *s = arg;
    (void)key;

    router_background(1);
    while (!api_job_stopping(job)) {
        settler_scan(s);
        api_job_sleep(job, SETTLE_POLL_MS);
    }
}

int api_settler_create(struct api_server *srv, struct api_settler **out)
{
    struct api_settler *s = calloc(1, sizeof(*s));
    unsigned char nonce[8];
    char hex[2 * sizeof(nonce) + 1];
    int rc;

    if (s == NULL)
        return -ENOMEM;
    s->router = api_server_router(srv);
    s->cache = api_server_conf(srv)->cache;
    s->jobs = api_server_jobs(srv);
    s->pause_pct = api_server_conf(srv)->limits.settle_pause_pct;
    s->batches_max = api_server_conf(srv)->limits.settle_batches;
    s->batch_bets = api_server_conf(srv)->limits.settle_batch_bets;
    s->standings_mode = api_server_conf(srv)->limits.standings_per_core
                            ? ROUTER_BACKGROUND_PER_CORE
                            : ROUTER_BACKGROUND;
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&s->freed, &attr);
    pthread_condattr_destroy(&attr);
    /* A process that restarts under the same name is another owner. */
    randombytes_buf(nonce, sizeof(nonce));
    sodium_bin2hex(hex, sizeof(hex), nonce, sizeof(nonce));
    snprintf(s->owner, sizeof(s->owner), "%.64s/%s", api_server_conf(srv)->name, hex);
    if ((rc = api_jobs_start(s->jobs, SETTLER_KEY, settler_main, s)) < 0) {
        pthread_cond_destroy(&s->freed);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void api_settler_destroy(struct api_settler *s)
{
    if (s == NULL)
        return;
    pthread_cond_destroy(&s->freed);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

void api_settler_wake(struct api_settler *s)
{
    if (s != NULL)
        api_jobs_kick(s->jobs);
}
