/*
 * bcadmin: operator commands of the game that are not HTTP.
 *
 *   bcadmin -c cluster.yaml create-admin --email E --password P [--display-name N]
 *   bcadmin -c cluster.yaml check-ledger
 *   bcadmin -c cluster.yaml check-standings
 *   bcadmin -c cluster.yaml rebuild-standings
 *   bcadmin -c cluster.yaml purge-idempotency [--older-than SECONDS]
 *   bcadmin -c cluster.yaml recompute-standings
 *   bcadmin -c cluster.yaml recount-open-payouts
 *
 * check-ledger verifies, on every shard, that every user's balance equals
 * initial_balance + the sum of his ledger deltas and is not negative, and that
 * his open_payout is what his open bets can pay (place_bet's limit counts it).
 * recount-open-payouts sets every user's open_payout from his open bets, one
 * transaction per shard that locks the shard's users (a cluster upgraded from
 * before open_payout existed: docs/operations.md).
 * check-standings verifies, on every shard, that the standings aggregates
 * (standings_company, standings_team: see api/api_standings_agg.c) equal a full
 * recomputation from the shard's users, and every user's points the sum of payout -
 * stake over his settled bets. rebuild-standings makes every shard's aggregates again
 * from its users (a cluster upgraded from before the aggregates existed), one
 * transaction per shard. purge-idempotency deletes the Idempotency-Key records older
 * than 24 hours (or SECONDS) from every shard, as each API server does every 10
 * minutes. recompute-standings recomputes every standings list now, as a server does
 * after each settlement (a new generation), bumps the cache's "standings"
 * group as the server does, so that the servers answer the new lists within
 * about a second instead of when their cached copies expire (an hour), and
 * prints how long it took.
 * Exit codes: 0 ok, 1 violated or failed, 2 usage.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "cache/cache.h"
#include "router/router.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: bcadmin [-c CLUSTER.yaml] create-admin --email E --password P "
                 "[--display-name N]\n"
                 "       bcadmin [-c CLUSTER.yaml] check-ledger\n"
                 "       bcadmin [-c CLUSTER.yaml] check-standings\n"
                 "       bcadmin [-c CLUSTER.yaml] rebuild-standings\n"
                 "       bcadmin [-c CLUSTER.yaml] purge-idempotency [--older-than "
                 "SECONDS]\n"
                 "       bcadmin [-c CLUSTER.yaml] recompute-standings\n"
                 "       bcadmin [-c CLUSTER.yaml] recount-open-payouts\n");
}

/* What a shard's users' open bets can pay, as place_bet counts it (%s: the alias). */
#define OPEN_PAYOUTS                                                                   \
    "(SELECT user_id, SUM(FLOOR(stake * odds / 100)) AS o FROM %%S.bets WHERE status " \
    "= 'open' GROUP BY user_id) %s ON %s.user_id = u.id"

static int check_ledger(struct router *r)
{
    struct sql_rows bad = {0}, open = {0}, users = {0};
    uint64_t total = 0;
    int rc;

    rc = router_scatter(r, &users, "SELECT COUNT(*) FROM %S.users");
    if (rc == 0)
        rc = router_scatter(
            r, &bad,
            "SELECT %N, u.id, u.balance, u.initial_balance + COALESCE(l.d, 0) "
            "FROM %S.users u LEFT JOIN (SELECT user_id, SUM(delta) AS d FROM "
            "%S.ledger GROUP BY user_id) l ON l.user_id = u.id WHERE "
            "u.balance <> u.initial_balance + COALESCE(l.d, 0) OR u.balance < 0");
    if (rc == 0) {
        char q[512];

        snprintf(q, sizeof(q),
                 "SELECT %%N, u.id, u.open_payout, COALESCE(b.o, 0) FROM %%S.users u "
                 "LEFT JOIN " OPEN_PAYOUTS " WHERE u.open_payout <> COALESCE(b.o, 0)",
                 "b", "b");
        rc = router_scatter(r, &open, q);
    }
    if (rc < 0) {
        fprintf(stderr, "bcadmin: %s%s\n", router_last_error(),
                rc == BC_EQUERY ? " (no open_payout? run shardctl init, then bcadmin "
                                  "recount-open-payouts)"
                                : "");
        goto out;
    }
    for (uint32_t i = 0; i < users.nrow; i++)
        total += strtoull(sql_cell(&users, i, 0), NULL, 10);
    for (uint32_t i = 0; i < bad.nrow && i < 20; i++)
        printf("VIOLATION shard %s user %s: balance %s, initial + ledger %s\n",
               sql_cell(&bad, i, 0), sql_cell(&bad, i, 1), sql_cell(&bad, i, 2),
               sql_cell(&bad, i, 3));
    for (uint32_t i = 0; i < open.nrow && i < 20; i++)
        printf("VIOLATION shard %s user %s: open_payout %s, his open bets can pay %s\n",
               sql_cell(&open, i, 0), sql_cell(&open, i, 1), sql_cell(&open, i, 2),
               sql_cell(&open, i, 3));
    printf("ledger: %" PRIu64 " users on %u shards checked, %u violations\n", total,
           router_nshard(r), bad.nrow + open.nrow);
    rc = bad.nrow + open.nrow == 0 ? 0 : 1;
out:
    sql_rows_free(&users);
    sql_rows_free(&bad);
    sql_rows_free(&open);
    return rc < 0 ? 1 : rc;
}

/*
 * Each shard's aggregate rows beside the same sums recomputed from its users
 * (platform admins are not ranked), only the rows that differ: %N, the
 * group's id, then members and points of the aggregate and of the users, and
 * for teams the company of each. One statement per host, so each shard is
 * compared in one consistent read.
 */
#define CHECK_COMPANIES                                                                \
    "SELECT %N, k.id, COALESCE(a.members, 0), COALESCE(a.points, 0), "                 \
    "COALESCE(u.members, 0), COALESCE(u.points, 0) FROM (SELECT company_id AS id "     \
    "FROM %S.standings_company UNION SELECT company_id FROM %S.users WHERE role <> "   \
    "'platform_admin') k LEFT JOIN %S.standings_company a ON a.company_id = k.id "     \
    "LEFT JOIN (SELECT company_id, COUNT(*) AS members, SUM(points) AS points FROM "   \
    "%S.users WHERE role <> 'platform_admin' GROUP BY company_id) u ON "               \
    "u.company_id = k.id WHERE COALESCE(a.members, 0) <> COALESCE(u.members, 0) "      \
    "OR COALESCE(a.points, 0) <> COALESCE(u.points, 0)"
#define CHECK_TEAMS                                                                    \
    "SELECT %N, k.id, COALESCE(a.members, 0), COALESCE(a.points, 0), "                 \
    "COALESCE(u.members, 0), COALESCE(u.points, 0), a.company_id, u.company_id "       \
    "FROM (SELECT team_id AS id FROM %S.standings_team UNION SELECT team_id FROM "     \
    "%S.users WHERE role <> 'platform_admin' AND team_id IS NOT NULL) k LEFT JOIN "    \
    "%S.standings_team a ON a.team_id = k.id LEFT JOIN (SELECT team_id, COUNT(*) AS "  \
    "members, SUM(points) AS points, MIN(company_id) AS company_id, "                  \
    "MAX(company_id) AS company_max FROM %S.users WHERE role <> 'platform_admin' "     \
    "AND team_id IS NOT NULL GROUP BY team_id) u ON u.team_id = k.id WHERE "           \
    "COALESCE(a.members, 0) <> COALESCE(u.members, 0) OR COALESCE(a.points, 0) <> "    \
    "COALESCE(u.points, 0) OR (u.members > 0 AND (a.company_id <> u.company_id OR "    \
    "u.company_id <> u.company_max))"
/* Users whose points are not the sum over their settled bets. */
#define CHECK_POINTS                                                                   \
    "SELECT %N, u.id, u.points, COALESCE(b.p, 0) FROM %S.users u LEFT JOIN (SELECT "   \
    "user_id, SUM(payout - stake) AS p FROM %S.bets WHERE status <> 'open' GROUP BY "  \
    "user_id) b ON b.user_id = u.id WHERE u.points <> COALESCE(b.p, 0)"

#define MAX_SHOWN 20

static int check_standings(struct router *r)
{
    struct sql_rows companies = {0}, teams = {0}, points = {0}, counts = {0};
    uint64_t ngroup[2] = {0, 0};
    uint32_t shown = 0, ndiff;
    int rc;

    rc = router_scatter(r, &counts,
                        "SELECT (SELECT COUNT(*) FROM %S.standings_company), (SELECT "
                        "COUNT(*) FROM %S.standings_team)");
    if (rc == 0)
        rc = router_scatter(r, &companies, CHECK_COMPANIES);
    if (rc == 0)
        rc = router_scatter(r, &teams, CHECK_TEAMS);
    if (rc == 0)
        rc = router_scatter(r, &points, CHECK_POINTS);
    if (rc < 0) {
        fprintf(stderr, "bcadmin: check-standings: %s%s\n", router_last_error(),
                rc == BC_ENOSCHEMA || rc == BC_EQUERY
                    ? " (no aggregate tables? run shardctl init, then bcadmin "
                      "rebuild-standings)"
                    : "");
        goto out;
    }
    for (uint32_t i = 0; i < counts.nrow; i++) {
        ngroup[0] += strtoull(sql_cell(&counts, i, 0), NULL, 10);
        ngroup[1] += strtoull(sql_cell(&counts, i, 1), NULL, 10);
    }
    for (uint32_t i = 0; i < companies.nrow && shown < MAX_SHOWN; i++, shown++)
        printf("DIFF shard %s company %s: aggregate %s members %s points, users %s "
               "members %s points\n",
               sql_cell(&companies, i, 0), sql_cell(&companies, i, 1),
               sql_cell(&companies, i, 2), sql_cell(&companies, i, 3),
               sql_cell(&companies, i, 4), sql_cell(&companies, i, 5));
    for (uint32_t i = 0; i < teams.nrow && shown < MAX_SHOWN; i++, shown++) {
        const char *ac = sql_cell(&teams, i, 6), *uc = sql_cell(&teams, i, 7);
        printf("DIFF shard %s team %s: aggregate %s members %s points (company %s), "
               "users %s members %s points (company %s)\n",
               sql_cell(&teams, i, 0), sql_cell(&teams, i, 1), sql_cell(&teams, i, 2),
               sql_cell(&teams, i, 3), ac ? ac : "-", sql_cell(&teams, i, 4),
               sql_cell(&teams, i, 5), uc ? uc : "-");
    }
    for (uint32_t i = 0; i < points.nrow && shown < MAX_SHOWN; i++, shown++)
        printf("DIFF shard %s user %s: points %s, settled bets give %s\n",
               sql_cell(&points, i, 0), sql_cell(&points, i, 1),
               sql_cell(&points, i, 2), sql_cell(&points, i, 3));
    ndiff = companies.nrow + teams.nrow + points.nrow;
    if (ndiff > shown)
        printf("... and %u more\n", ndiff - shown);
    printf("standings: %" PRIu64 " company and %" PRIu64
           " team aggregate rows on %u shards checked: %u companies, %u teams, %u "
           "users differ\n",
           ngroup[0], ngroup[1], router_nshard(r), companies.nrow, teams.nrow,
           points.nrow);
    rc = ndiff == 0 ? 0 : 1;
out:
    sql_rows_free(&counts);
    sql_rows_free(&companies);
    sql_rows_free(&teams);
    sql_rows_free(&points);
    return rc < 0 ? 1 : rc;
}

/*
 * One shard's aggregates made again from its users, in one transaction that
 * first takes the fence check (a copy being cut over refuses it) and a
 * share lock on every user row and gap: signups, settlement batches and
 * team changes, which lock users before aggregates, wait for it or it for
 * them, so no change is lost or counted twice.
 */
static int rebuild_shard(struct router *r, uint32_t shard, uint64_t *nusers)
{
    struct sql_rows rows = {0};
    struct router_txn *txn;
    int rc;

    if ((rc = router_txn_begin(r, shard, &txn)) < 0)
        return rc;
    rc = router_txn_exec(txn, NULL, "CALL %S.fence_check()");
    if (rc == 0)
        rc = router_txn_exec(txn, &rows,
                             "SELECT COUNT(*) FROM %S.users LOCK IN SHARE MODE");
    if (rc == 0)
        rc = router_txn_exec(
            txn, NULL,
            "DELETE FROM %S.standings_company; DELETE FROM %S.standings_team");
    if (rc == 0)
        rc = router_txn_exec(
            txn, NULL,
            "INSERT INTO %S.standings_company (company_id, members, points) SELECT "
            "company_id, COUNT(*), SUM(points) FROM %S.users WHERE role <> "
            "'platform_admin' GROUP BY company_id ORDER BY company_id");
    if (rc == 0)
        rc = router_txn_exec(
            txn, NULL,
            "INSERT INTO %S.standings_team (team_id, company_id, members, points) "
            "SELECT team_id, MIN(company_id), COUNT(*), SUM(points) FROM %S.users "
            "WHERE role <> 'platform_admin' AND team_id IS NOT NULL GROUP BY "
            "team_id ORDER BY team_id");
    if (rc < 0) {
        router_txn_rollback(txn);
    } else {
        *nusers = strtoull(sql_cell(&rows, 0, 0), NULL, 10);
        rc = router_txn_commit(txn);
    }
    sql_rows_free(&rows);
    return rc;
}

static int rebuild_standings(struct router *r)
{
    uint64_t total = 0;

    for (uint32_t s = 0; s < router_nshard(r); s++) {
        int64_t deadline = 0;
        uint64_t seen, n = 0;
        int rc;
        do {
            seen = router_map_version(r);
            rc = rebuild_shard(r, s, &n);
        } while (rc == BC_EMOVED && router_await_move(r, seen, &deadline) == 0);
        if (rc < 0) {
            fprintf(stderr, "bcadmin: rebuild-standings: shard %u: %s\n", s,
                    router_last_error());
            return 1;
        }
        total += n;
    }
    printf("standings: aggregates rebuilt from %" PRIu64 " users on %u shards\n", total,
           router_nshard(r));
    return 0;
}

/*
 * One shard's open_payout made again from its open bets, in one transaction
 * that first takes the fence check and an exclusive lock on every user row:
 * bets (place_bet locks its user first) and settlement batches (they lock
 * their users before they write them) wait for it or it for them, so the
 * plain read of the bets that follows sees each one's last commit.
 */
static int recount_shard(struct router *r, uint32_t shard, uint64_t *nusers,
                         uint64_t *changed)
{
    struct sql_rows rows = {0}, upd = {0};
    struct router_txn *txn;
    char q[512];
    int rc;

    if ((rc = router_txn_begin(r, shard, &txn)) < 0)
        return rc;
    rc = router_txn_exec(txn, NULL, "CALL %S.fence_check()");
    if (rc == 0)
        rc = router_txn_exec(txn, &rows, "SELECT COUNT(*) FROM %S.users FOR UPDATE");
    snprintf(q, sizeof(q),
             "UPDATE %%S.users u LEFT JOIN " OPEN_PAYOUTS
             " SET u.open_payout = COALESCE(b.o, 0) WHERE u.open_payout <> "
             "COALESCE(b.o, 0)",
             "b", "b");
    if (rc == 0)
        rc = router_txn_exec(txn, &upd, q);
    if (rc < 0) {
        router_txn_rollback(txn);
    } else {
        *nusers = strtoull(sql_cell(&rows, 0, 0), NULL, 10);
        *changed = upd.affected;
        rc = router_txn_commit(txn);
    }
    sql_rows_free(&rows);
    sql_rows_free(&upd);
    return rc;
}

static int recount_open_payouts(struct router *r)
{
    uint64_t total = 0, changed = 0;

    for (uint32_t s = 0; s < router_nshard(r); s++) {
        int64_t deadline = 0;
        uint64_t seen, n = 0, c = 0;
        int rc, tries = 0;
        do {
            seen = router_map_version(r);
            rc = recount_shard(r, s, &n, &c);
            /* A deadlock with a settlement batch: that one retries, so may this. */
        } while ((rc == BC_EMOVED && router_await_move(r, seen, &deadline) == 0) ||
                 (rc == BC_ELOCKWAIT && ++tries < 5));
        if (rc < 0) {
            fprintf(stderr, "bcadmin: recount-open-payouts: shard %u: %s\n", s,
                    router_last_error());
            return 1;
        }
        total += n;
        changed += c;
    }
    printf("open payouts: %" PRIu64 " users on %u shards recounted, %" PRIu64
           " changed\n",
           total, router_nshard(r), changed);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"email", required_argument, NULL, 'e'},
                                         {"password", required_argument, NULL, 'p'},
                                         {"display-name", required_argument, NULL, 'd'},
                                         {"older-than", required_argument, NULL, 'o'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *path = getenv("BC_CLUSTER"), *email = NULL, *password = NULL;
    const char *display = "Platform Admin";
    struct shardmap_conf conf;
    struct router *r;
    char *err = NULL;
    uint64_t id = 0;
    uint32_t older_than = API_IDEM_KEEP_S;
    unsigned long v;
    char *end;
    int c, rc;

    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 'e':
            email = optarg;
            break;
        case 'p':
            password = optarg;
            break;
        case 'd':
            display = optarg;
            break;
        case 'o':
            errno = 0;
            v = strtoul(optarg, &end, 10);
            /* Clients are told a key holds 24 hours (docs/api.md): no less. */
            if (errno != 0 || optarg[0] < '0' || optarg[0] > '9' || *end != '\0' ||
                v < 86400 || v > 10 * 365 * 86400UL) {
                fprintf(stderr,
                        "bcadmin: --older-than wants whole seconds from 86400 (the 24 "
                        "hours a key is promised to clients) to 10 years, got '%s'\n",
                        optarg);
                return 2;
            }
            older_than = (uint32_t)v;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    /* A mistyped command is a usage error (2), whatever the config. */
    static const char *const known[] = {"check-ledger",         "check-standings",
                                        "rebuild-standings",    "recompute-standings",
                                        "recount-open-payouts", "purge-idempotency",
                                        "create-admin"};
    size_t k = 0;
    while (k < sizeof(known) / sizeof(known[0]) && strcmp(argv[optind], known[k]) != 0)
        k++;
    if (k == sizeof(known) / sizeof(known[0])) {
        fprintf(stderr, "bcadmin: unknown command '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[optind], "create-admin") == 0 &&
        (email == NULL || password == NULL)) {
        usage(stderr); /* a usage error (2) too, whatever the config */
        return 2;
    }
    if (path == NULL)
        path = ".stack/cluster.yaml";
    if (shardmap_conf_load(path, &conf, &err) < 0) {
        fprintf(stderr, "bcadmin: %s\n", err ? err : "cannot load the cluster config");
        free(err);
        return 1;
    }
    conf.query_timeout_ms = 30000;       /* scans of whole shards */
    conf.account = SHARDMAP_ACCOUNT_OPS; /* an operator's tool */
    if ((rc = router_create(&conf, &r)) < 0) {
        fprintf(stderr, "bcadmin: %s\n", bc_strerror(rc));
        shardmap_conf_deinit(&conf);
        return 1;
    }
    if (strcmp(argv[optind], "check-ledger") == 0) {
        rc = check_ledger(r);
    } else if (strcmp(argv[optind], "check-standings") == 0) {
        rc = check_standings(r);
    } else if (strcmp(argv[optind], "rebuild-standings") == 0) {
        rc = rebuild_standings(r);
    } else if (strcmp(argv[optind], "recount-open-payouts") == 0) {
        rc = recount_open_payouts(r);
    } else if (strcmp(argv[optind], "recompute-standings") == 0) {
        struct timespec t0, t1;

        clock_gettime(CLOCK_MONOTONIC, &t0);
        rc = api_standings_recompute(r);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (rc < 0) {
            fprintf(stderr, "bcadmin: recompute-standings: %s: %s\n", bc_strerror(rc),
                    router_last_error());
        } else {
            struct cache *cache = NULL;
            printf("standings recomputed in %.0f ms\n",
                   (double)(t1.tv_sec - t0.tv_sec) * 1e3 +
                       (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
            /* The servers' cached lists are keyed by the group's generation. */
            if (conf.nmemcached == 0)
                printf("no memcached in the config: the servers read the new lists "
                       "as their cached copies expire\n");
            else if (cache_create(&conf, 0, &cache) < 0)
                fprintf(stderr,
                        "bcadmin: recompute-standings: cannot reach memcached: the "
                        "servers show the new lists when their cached copies "
                        "expire (within an hour)\n");
            else
                cache_bump(cache, "standings");
            cache_destroy(cache);
        }
        rc = rc < 0 ? 1 : 0;
    } else if (strcmp(argv[optind], "purge-idempotency") == 0) {
        uint64_t deleted;
        uint32_t failed;

        rc = api_idem_purge(r, older_than, &deleted, &failed);
        printf("%" PRIu64 " idempotency keys older than %u s deleted, %u shards "
               "failed\n",
               deleted, older_than, failed);
        if (rc < 0)
            fprintf(stderr, "bcadmin: purge-idempotency: %s\n", bc_strerror(rc));
        rc = rc < 0 ? 1 : 0;
    } else { /* create-admin: the last of known[] */
        if (email == NULL || password == NULL) {
            usage(stderr);
            rc = 2;
        } else {
            rc = api_create_platform_admin(r, email, password, display, 1000, &id);
            if (rc == 0 || rc == BC_EEXISTS) {
                printf("platform admin %s: user %" PRIu64 "%s\n", email, id,
                       rc == BC_EEXISTS ? " (already there)" : " created");
                rc = 0;
            } else if (rc == -EPERM) {
                fprintf(
                    stderr,
                    "bcadmin: create-admin: user %" PRIu64 " has the e-mail %s and "
                    "is not a platform admin: nothing changed (use another e-mail)\n",
                    id, email);
                rc = 1;
            } else {
                fprintf(stderr, "bcadmin: create-admin: %s%s%s\n",
                        rc == -EINVAL ? "a bad e-mail, a password not of 8 to 256 "
                                        "characters, or a display name not of 1 "
                                        "to 100 characters without control ones"
                                      : bc_strerror(rc),
                        rc == -EINVAL ? "" : ": ",
                        rc == -EINVAL ? "" : router_last_error());
                rc = 1;
            }
        }
    }
    router_destroy(r);
    shardmap_conf_deinit(&conf);
    return rc;
}
