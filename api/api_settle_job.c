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
 * map walks that host's shards that have no guard row yet. A shard is
 * settled in batches of at most SETTLE_BATCH bets, each one transaction on
 * the shard: lock the next open bets of the match (in id order), write
 * their ledger rows, credit their users' balances and points, update the
 * standings aggregates (api_standings_batch), mark the bets won, lost or
 * void. A bet's status, its ledger row and its credit commit together, and
 * only an open bet is settled, so whatever dies when, no bet is paid twice
 * or lost. The transaction that finds fewer open bets than a batch (none,
 * at the end) also inserts the shard's settled_matches guard row: bets read
 * that row with a share lock (api_bets.c), and the locks of "no open bet
 * left" and of the insert are held together, so a bet racing the end of
 * the settlement is either settled by it or refused. A shard that fails is
 * retried with backoff while the host's other shards go on; the job is done
 * when every shard has its guard row. (Two matches settling on one shard at
 * once can deadlock where their bets meet in match_open: the next-key lock
 * of one's first bet covers the gap the other's settled bets go into.
 * InnoDB rolls one batch back at once; it is tried again like any failure.)
 *
 * Progress: a run recounts the shards (guard rows, bets of the match, bets
 * no longer open) when it claims the job, reports what its batches settled
 * with each renewal, writes the recount once every shard is settled (before
 * the standings are recomputed: shards_done = shards_total while the job is
 * still running), and the final counts when it finishes it.
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
#include "catalog/catalog.h"

/*
 * Bets per transaction. A batch locks its bets and their users' rows until
 * it commits, and a user betting on another match waits for that: 2,000
 * bets commit in 0.1-0.2 s on the local stack (2 cores, 3 hosts), and the
 * transaction's undo, binlog event and semi-synchronous acknowledgement
 * stay small (a few hundred KB), while a million bets of one shard still
 * take only 500 transactions of five round trips each.
 */
#define SETTLE_BATCH 2000
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
/* The settler's own job key: match ids start at 1. */
#define SETTLER_KEY 0

struct api_settler {
    struct router *router;               /* ref */
    struct cache *cache;                 /* ref, may be NULL */
    struct api_jobs *jobs;               /* ref: the server's */
    char owner[CATALOG_LEASE_OWNER_MAX]; /* "<name>/<nonce>", read-only */
    atomic_int nrun;                     /* runs started and not yet returned */
    uint32_t pause_pct;                  /* limits' settle_pause_pct */
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
    atomic_int_fast64_t paused_ms; /* the hosts' pauses (settle_pause_pct) */
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
};

/* Progress as the shards tell it. */
struct settle_count {
    uint32_t shards_done; /* with a guard row */
    uint64_t bets_total;  /* bets of the match */
    uint64_t bets_settled;
};

static int run_stopping(struct settle_run *run)
{
    return atomic_load(&run->lost) || api_job_stopping(run->job);
}

/* ---- one batch ---------------------------------------------------------- */

/*
 * The batch's bets, still open: match, lo, hi. Read over match_open, the
 * range this batch locked already: over the primary key, InnoDB would also
 * share-lock the other matches' bets with ids in [lo, hi] and wait for their
 * writers (another match's settlement).
 */
#define BATCH                                                                          \
    "%S.bets FORCE INDEX (match_open) WHERE match_id = %u AND status = 'open' AND "    \
    "id BETWEEN %u AND %u"
/* A bet's payout (the result twice), as docs/api.md defines it. */
#define PAYOUT                                                                         \
    "CASE WHEN %s = 'cancelled' THEN stake WHEN pick = %s THEN "                       \
    "FLOOR(stake * odds / 100) ELSE 0 END"

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/*
 * The distinct users of the locked bets (column 1 of ids), in id order, as
 * rows of a table value constructor, "(12),(15),(40)", into b: digits the
 * program wrote itself, for %R.
 */
static int batch_users(const struct sql_rows *ids, struct sql_buf *b)
{
    uint64_t *u = malloc(ids->nrow * sizeof(*u));
    char num[24];
    int rc = 0, n;

    if (u == NULL)
        return -ENOMEM;
    for (uint32_t i = 0; i < ids->nrow; i++)
        u[i] = strtoull(sql_cell(ids, i, 1), NULL, 10);
    qsort(u, ids->nrow, sizeof(*u), u64_cmp);
    for (uint32_t i = 0; i < ids->nrow && rc == 0; i++) {
        if (i > 0 && u[i] == u[i - 1])
            continue;
        n = snprintf(num, sizeof(num), "%s(%" PRIu64 ")", b->len > 0 ? "," : "", u[i]);
        rc = sql_buf_add(b, num, (size_t)n);
    }
    free(u);
    return rc;
}

/*
 * Settles the next open bets of the match on shard, at most SETTLE_BATCH,
 * in one transaction; when fewer were left, the same transaction inserts
 * the shard's guard row and *last is set. *n: bets settled. Returns 0 or a
 * router status (nothing of the batch stays then).
 */
static int settle_batch(struct settle_run *run, uint32_t shard, uint64_t *n, int *last)
{
    const char *res = run->result;
    struct sql_rows ids = {0}, rows = {0};
    struct sql_buf users = {0};
    struct router_txn *txn;
    uint64_t lo = 0, hi = 0, m = run->match;
    int rc;

    *n = 0;
    *last = 0;
    if ((rc = router_txn_begin(run->router, shard, &txn)) < 0)
        return rc;
    /*
     * The shard's fence once for the batch, not once a written row: a batch
     * writes thousands (its bets, their users and ledger rows), and each
     * row's own check cost about as much as writing it.
     */
    if ((rc = router_txn_fence(txn)) < 0) {
        router_txn_rollback(txn);
        return rc;
    }
    /*
     * The index is forced: in id order over the primary key, InnoDB would
     * lock every bet it scanned, of any match. Over match_open it locks
     * these bets and, when it reaches the end of them, the gap after: no
     * open bet of the match can be written until this commits.
     */
    rc = router_txn_exec(
        txn, &ids,
        "SELECT id, user_id FROM %S.bets FORCE INDEX (match_open) WHERE match_id = "
        "%u AND status = 'open' ORDER BY id LIMIT %u FOR UPDATE",
        m, (uint64_t)SETTLE_BATCH);
    if (rc == 0 && ids.nrow > 0) {
        lo = strtoull(sql_cell(&ids, 0, 0), NULL, 10);
        hi = strtoull(sql_cell(&ids, ids.nrow - 1, 0), NULL, 10);
        /*
         * The users first, in id order, as every transaction that locks
         * several does: the sorted ids drive primary-key lookups. (A join
         * with the bets would lock them in the bets' order; an IN list may
         * become a scan of the whole table, and lock every user of the
         * shard.) Then one ledger row per paying bet, one credit per user.
         */
        rc = batch_users(&ids, &users);
        /* Three statements: the API's account sends one a call. */
        if (rc == 0)
            rc = router_txn_exec(txn, NULL,
                                 "WITH v (id) AS (VALUES %R) SELECT u.id FROM v "
                                 "STRAIGHT_JOIN %S.users u ON u.id = v.id FOR UPDATE",
                                 users.buf);
        if (rc == 0)
            rc = router_txn_exec(txn, NULL,
                                 "INSERT INTO %S.ledger (user_id, delta, reason, "
                                 "bet_id) SELECT user_id, p, %s, id FROM (SELECT "
                                 "user_id, id, " PAYOUT " AS p FROM " BATCH
                                 ") t WHERE p > 0 ORDER BY id",
                                 run->reason, res, res, m, lo, hi);
        if (rc == 0)
            rc = router_txn_exec(
                txn, NULL,
                "UPDATE %S.users u JOIN (SELECT user_id, SUM(p) AS p, SUM(p - stake) "
                "AS pts FROM (SELECT user_id, stake, " PAYOUT " AS p FROM " BATCH
                ") t GROUP BY user_id) b ON u.id = b.user_id SET u.balance = "
                "u.balance + b.p, u.points = u.points + b.pts",
                res, res, m, lo, hi);
    }
    /* While the bets are still open with ids in [lo, hi]: its contract. */
    if (rc == 0 && ids.nrow > 0)
        rc = api_standings_batch(txn, m, res, lo, hi);
    if (rc == 0 && ids.nrow > 0) {
        rc = router_txn_exec(txn, &rows,
                             "UPDATE %S.bets FORCE INDEX (match_open) SET status = "
                             "CASE WHEN %s = 'cancelled' THEN 'void' WHEN pick = %s "
                             "THEN 'won' ELSE 'lost' END, payout = " PAYOUT
                             ", settled_at = NOW(3) WHERE match_id = %u AND status = "
                             "'open' AND id BETWEEN %u AND %u",
                             res, res, res, res, m, lo, hi);
        if (rc == 0 && rows.affected != ids.nrow) {
            api_log("settlement %" PRIu64 ": shard %u: %" PRIu64
                    " bets changed of %u locked; rolled back",
                    m, shard, rows.affected, ids.nrow);
            rc = BC_EQUERY;
        }
    }
    if (rc == 0 && ids.nrow < SETTLE_BATCH) {
        /*
         * No open bet is left, and none can be written while this holds its
         * locks. The count is a plain read: a locking one would also lock
         * the next match's first bet in the index, while this holds users.
         */
        sql_rows_free(&rows);
        rc = router_txn_exec(txn, &rows,
                             "SELECT COUNT(*) FROM %S.bets WHERE match_id = %u", m);
        if (rc == 0)
            rc = router_txn_exec(txn, NULL,
                                 "INSERT INTO %S.settled_matches (match_id, result, "
                                 "bets_settled) VALUES (%u, %s, %u)",
                                 m, res, strtoull(sql_cell(&rows, 0, 0), NULL, 10));
        if (rc == BC_EDUPKEY) {
            /* Another runner (or the old code) finished it: keep its rows. */
            if (ids.nrow > 0)
                api_log("settlement %" PRIu64 ": shard %u has a guard row and %u "
                        "open bets; left as they are",
                        m, shard, ids.nrow);
            router_txn_rollback(txn);
            *last = 1;
            rc = 0;
            goto out;
        }
        *last = 1;
    }
    if (rc < 0) {
        router_txn_rollback(txn);
        goto out;
    }
    if ((rc = router_txn_commit(txn)) == 0)
        *n = ids.nrow;
out:
    sql_rows_free(&ids);
    sql_rows_free(&rows);
    sql_buf_deinit(&users);
    if (rc < 0)
        *last = 0;
    return rc;
}

/* Settles shard to its guard row; -ECANCELED when the run stops first. */
static int settle_shard(struct settle_run *run, uint32_t shard)
{
    int64_t deadline = 0;
    uint64_t seen, n;
    int rc, last = 0;

    while (!last) {
        if (run_stopping(run))
            return -ECANCELED;
        /* On the shard's new host when a move fenced it. */
        int64_t t0 = sql_now_ms();
        do {
            seen = router_map_version(run->router);
            rc = settle_batch(run, shard, &n, &last);
        } while (rc == BC_EMOVED &&
                 router_await_move(run->router, seen, &deadline) == 0);
        if (rc < 0)
            return rc;
        deadline = 0;
        atomic_fetch_add(&run->bets_new, n);
        /* The host's CPU left to requests for a while (settle_pause_pct). */
        if (run->settler->pause_pct > 0 && n > 0) {
            int64_t ms = (sql_now_ms() - t0) * run->settler->pause_pct / 100;
            api_job_sleep(run->job, (uint32_t)ms);
            atomic_fetch_add(&run->paused_ms, ms);
        }
    }
    atomic_fetch_add(&run->shards_new, 1);
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
            rc = settle_shard(run, h->shard[i]);
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
                api_log("settlement %" PRIu64 ": shard %u (host %s) failed: %s (%s); "
                        "again in %u ms, the host's other shards go on",
                        run->match, h->shard[i], h->name, bc_strerror(rc),
                        router_last_error(), ms);
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

/* Recounts progress from the shards; guarded (nshard entries) gets each shard's. */
static int settle_recount(struct router *r, uint64_t match, struct settle_count *c,
                          uint8_t *guarded)
{
    struct sql_rows rows = {0};
    uint32_t nshard = router_nshard(r);
    int rc;

    memset(c, 0, sizeof(*c));
    memset(guarded, 0, nshard);
    rc = router_scatter(r, &rows,
                        "SELECT %N, (SELECT COUNT(*) FROM %S.settled_matches WHERE "
                        "match_id = %u), COUNT(*), COALESCE(SUM(status <> 'open'), 0) "
                        "FROM %S.bets WHERE match_id = %u",
                        match, match);
    for (uint32_t i = 0; rc == 0 && i < rows.nrow; i++) {
        uint64_t s = strtoull(sql_cell(&rows, i, 0), NULL, 10);
        if (s < nshard && strcmp(sql_cell(&rows, i, 1), "0") != 0 && !guarded[s]) {
            guarded[s] = 1;
            c->shards_done++;
        }
        c->bets_total += strtoull(sql_cell(&rows, i, 2), NULL, 10);
        c->bets_settled += strtoull(sql_cell(&rows, i, 3), NULL, 10);
    }
    sql_rows_free(&rows);
    return rc;
}

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
        return BC_ENOTFOUND;
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
        if (h->next_ms == NULL || h->backoff == NULL) {
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
    }
    free(hosts);
    free(shards);
    return rc;
}

/* The standings' recomputation, on a thread of its own. */
struct standings_job {
    struct settle_run *run;
    int rc;
};

static void *standings_main(void *arg)
{
    struct standings_job *sj = arg;

    router_background(1);
    sj->rc = api_standings_recompute(sj->run->router);
    if (atomic_fetch_sub(&sj->run->nworking, 1) == 1)
        api_jobs_kick(sj->run->settler->jobs);
    return NULL;
}

/*
 * Recomputes the standings while the run keeps renewing its lease: at a
 * million users they take seconds, and a lease left to run out meanwhile
 * would have another server claim the job and recompute them again.
 */
static int settle_standings(struct settle_run *run)
{
    struct standings_job sj = {.run = run};
    pthread_t t;
    int64_t t0 = sql_now_ms();

    atomic_fetch_add(&run->nworking, 1);
    if (pthread_create(&t, NULL, standings_main, &sj) != 0) {
        /* No thread to be had: here, on a fresh lease. */
        (void)catalog_settlement_renew(router_catalog(run->router), run->match,
                                       run->settler->owner, SETTLE_LEASE_MS);
        standings_main(&sj);
    } else {
        settle_keep_lease(run);
        pthread_join(t, NULL);
    }
    if (sj.rc == 0)
        api_log("settlement %" PRIu64 ": standings recomputed in %" PRId64 " ms",
                run->match, sql_now_ms() - t0);
    return sj.rc;
}

/*
 * Every shard has its guard row: the standings, then the job's record. In
 * that order, so that a crash between them redoes the standings.
 */
static void settle_finish(struct settle_run *run, const struct settle_count *c,
                          int64_t t0)
{
    struct catalog *cat = router_catalog(run->router);

    if (settle_standings(run) == 0) {
        /* Standings and profiles (points) change: one generation bump. */
        if (run->settler->cache != NULL)
            cache_bump(run->settler->cache, "standings");
    } else {
        api_log("settlement %" PRIu64 ": cannot recompute the standings: %s; the "
                "next settlement will",
                run->match, router_last_error());
    }
    if (catalog_settlement_finish(cat, run->match, c->shards_done, c->bets_settled) < 0)
        api_log("settlement %" PRIu64 ": cannot record it done: %s; the next "
                "claim will",
                run->match, router_last_error());
    else
        api_log("settlement %" PRIu64 ": done by %s: %" PRIu64 " bets on %u shards "
                "(this run %" PRId64 " ms; its hosts paused %" PRId64 " ms in all)",
                run->match, run->settler->owner, c->bets_settled, c->shards_done,
                sql_now_ms() - t0, (int64_t)atomic_load(&run->paused_ms));
}

/* A claimed job (a job of the server keyed by the match), to its end. */
static void run_main(struct api_job *job, uint64_t match, void *arg)
{
    struct api_settler *s = arg;
    struct catalog *cat = router_catalog(s->router);
    struct settle_run run = {
        .settler = s, .job = job, .router = s->router, .match = match};
    struct catalog_settlement st;
    struct settle_count c;
    uint8_t *guarded = calloc(router_nshard(s->router), 1);
    int64_t t0 = sql_now_ms();
    int rc;

    router_background(1);
    if (guarded == NULL)
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
    if ((rc = settle_recount(s->router, match, &c, guarded)) == 0)
        rc = catalog_settlement_progress(cat, match, s->owner, c.shards_done,
                                         c.bets_settled, c.bets_total);
    if (rc < 0) {
        api_log("settlement %" PRIu64 ": cannot count its shards: %s", match,
                router_last_error());
        goto out;
    }
    api_log("settlement %" PRIu64 " (%s): %s runs it; %u of %u shards and %" PRIu64
            " of %" PRIu64 " bets settled before",
            match, run.result, s->owner, c.shards_done, router_nshard(s->router),
            c.bets_settled, c.bets_total);
    if (c.shards_done < router_nshard(s->router) &&
        (rc = settle_hosts(&run, guarded)) < 0)
        goto out;
    if (run_stopping(&run)) {
        if (!atomic_load(&run.lost))
            catalog_settlement_release(cat, match, s->owner);
        api_log("settlement %" PRIu64 ": %s stopped; %s", match, s->owner,
                atomic_load(&run.lost) ? "its new holder goes on"
                                       : "released for another server");
        goto out;
    }
    if ((rc = settle_recount(s->router, match, &c, guarded)) < 0) {
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
        settle_finish(&run, &c, t0);
    } else {
        catalog_settlement_release(cat, match, s->owner); /* claimed again soon */
    }
out:
    free(guarded);
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
    /* A process that restarts under the same name is another owner. */
    randombytes_buf(nonce, sizeof(nonce));
    sodium_bin2hex(hex, sizeof(hex), nonce, sizeof(nonce));
    snprintf(s->owner, sizeof(s->owner), "%.64s/%s", api_server_conf(srv)->name, hex);
    if ((rc = api_jobs_start(s->jobs, SETTLER_KEY, settler_main, s)) < 0) {
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void api_settler_destroy(struct api_settler *s)
{
    free(s);
}

void api_settler_wake(struct api_settler *s)
{
    if (s != NULL)
        api_jobs_kick(s->jobs);
}
