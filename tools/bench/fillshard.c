/*
 * fillshard: fills one logical shard with users and open bets straight in the
 * database, much faster than the API could, to give shard moves and their
 * benchmarks something to copy.
 *
 *   fillshard [-c CLUSTER.yaml] --shard N --users U --bets B [--match ID]
 *             [--company ID] [--password PW] [--balance N]
 *
 * The rows are what the API would have made:
 *  - users fill-<N>-<i>@fill.invalid, only the numbers i whose e-mail hashes to
 *    shard N (a user lives in the shard of his e-mail, or he could never log
 *    in), starting after the largest i already on the shard, so a second run
 *    adds more; password --password (default fill-password) for all of them,
 *    hashed once; company --company, default the platform company (else the
 *    first company), counted among its members in the shard's standings
 *    aggregates as a signup is; role member, no team, balance --balance (default 1000,
 *    the API's economy.initial_balance) less their stakes;
 *  - B bets spread evenly over the new users, status open, on --match
 *    (default the first scheduled match), random pick, stake 1..10 (less when
 *    the balances would not cover it) at the match's odds; each with its
 *    ledger row (delta -stake, reason bet), so balance = initial_balance +
 *    sum(ledger.delta) and balance >= 0 hold (bcadmin check-ledger).
 *
 * Ids carry shard N like the API's (shardmap_id), but do not take the shard's
 * sequence: the API stamps an id with its host's NOW(3) when it makes it and
 * inserts it within its request deadline (seconds at most), so it can never
 * make an id whose milliseconds lie a minute in the past. fillshard takes its
 * ids from such a window, a minute before it starts, and skips every id of
 * the window already in users or bets (the API's, or an earlier fill's).
 * Do not run two fillshards on one shard at once: they could pick the same
 * e-mails and ids (the second then fails on a duplicate key, and rolls back).
 *
 * Rows go in multi-row INSERTs of ROWS_PER_INSERT, through the router (the
 * host the global map says), one transaction per USERS_PER_TXN users with
 * their bets and ledger rows: check-ledger holds at every moment, and an
 * interrupted fill leaves whole users behind.
 *
 * Prints one line: rows, seconds, rows/s. Exit codes: 0 ok, 1 failed, 2 usage.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "router/router.h"
#include "tools/bench/fill_util.h"

#define ROWS_PER_INSERT 1000
#define USERS_PER_TXN 1000
#define MAX_STAKE 10
#define HASH_MAX 256

struct fill_user {
    uint64_t id, num; /* e-mail fill-<shard>-<num>@fill.invalid */
    int64_t spent;    /* sum of its stakes */
    int64_t owed;     /* what its open bets can pay (users.open_payout) */
};

struct fill_match {
    uint64_t id;
    int64_t odds[3]; /* home, draw, away, in hundredths */
};

struct fill {
    struct router *r; /* ref */
    uint32_t shard;
    uint64_t company;
    struct fill_match match;
    int64_t balance, max_stake;
    const char *hash; /* ref: the password hash, [A-Za-z0-9$+/=,-] only */
    struct fill_user *users;
    uint64_t nuser, nbet, rows;
    struct idgen ids;
    uint64_t rng;
    struct sbuf sql;
    char why[256]; /* what went wrong, when it is more than a status */
};

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: fillshard [-c CLUSTER.yaml] --shard N --users U --bets B "
        "[--match ID]\n"
        "                 [--company ID] [--password PW] [--balance N]\n"
        "\n"
        "  --shard N       logical shard to fill (on the host the global map says)\n"
        "  --users U       new users fill-N-<i>@fill.invalid (1..10000000)\n"
        "  --bets B        open bets spread over them, each with its ledger row\n"
        "  --match ID      match of the bets (default: the first scheduled one)\n"
        "  --company ID    company of the users (default: the platform company)\n"
        "  --password PW   password of every user (default fill-password)\n"
        "  --balance N     initial balance (default 1000, as the API's)\n");
}

static int fail(struct fill *f, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records why the fill fails (the first reason only) and returns rc. */
static int fail(struct fill *f, int rc, const char *fmt, ...)
{
    va_list ap;

    if (f->why[0] == '\0') {
        va_start(ap, fmt);
        vsnprintf(f->why, sizeof(f->why), fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* Sets up g for n ids of shard, in a window ending FILL_ID_WINDOW_AGO_MS before
 * the shard's host clock, with the ids already taken there. */
static int idgen_init(struct fill *f, uint64_t n)
{
    struct router *r = f->r;
    struct idgen *g = &f->ids;
    uint32_t shard = f->shard;
    struct sql_rows rows = {0};
    struct shardmap_id lo = {0}, hi = {0};
    uint64_t now_ms, nms = n / (1u << SHARDMAP_ID_SEQ_BITS) + FILL_ID_SPARE_MS, lo_id,
                     hi_id;
    int rc;

    memset(g, 0, sizeof(*g));
    g->shard = shard;
    rc = router_exec(r, shard, &rows,
                     "SELECT CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS UNSIGNED)");
    if (rc < 0)
        return rc;
    now_ms = strtoull(sql_cell(&rows, 0, 0), NULL, 10);
    sql_rows_free(&rows);
    if (now_ms < SHARDMAP_ID_EPOCH_MS + FILL_ID_WINDOW_AGO_MS + nms)
        return fail(f, -ERANGE, "the host's clock is before the id epoch");
    g->ms_end = now_ms - SHARDMAP_ID_EPOCH_MS - FILL_ID_WINDOW_AGO_MS;
    g->ms = g->ms_end - nms;
    lo.ms = g->ms;
    lo.shard = hi.shard = shard;
    hi.ms = g->ms_end - 1;
    hi.seq = (1u << SHARDMAP_ID_SEQ_BITS) - 1;
    if ((rc = shardmap_id_pack(&lo, &lo_id)) < 0 ||
        (rc = shardmap_id_pack(&hi, &hi_id)) < 0)
        return rc;
    rc = router_exec(r, shard, &rows,
                     "SELECT id FROM %S.users WHERE id BETWEEN %u AND %u UNION "
                     "SELECT id FROM %S.bets WHERE id BETWEEN %u AND %u ORDER BY id",
                     lo_id, hi_id, lo_id, hi_id);
    if (rc < 0)
        return rc;
    if (rows.nrow > 0 && (g->taken = calloc(rows.nrow, sizeof(uint64_t))) == NULL) {
        sql_rows_free(&rows);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < rows.nrow; i++)
        g->taken[i] = strtoull(sql_cell(&rows, i, 0), NULL, 10);
    g->ntaken = rows.nrow;
    sql_rows_free(&rows);
    return 0;
}

/* Company id: the given one if it exists, else the platform company, else
 * the first. */
static int find_company(struct fill *f, uint64_t want)
{
    struct router *r = f->r;
    struct sql_rows rows = {0};
    int rc;

    if (want != 0)
        rc = router_exec(r, ROUTER_GLOBAL, &rows,
                         "SELECT id FROM %S.companies WHERE id = %u", want);
    else
        rc = router_exec(r, ROUTER_GLOBAL, &rows,
                         "SELECT id FROM %S.companies ORDER BY platform DESC, id "
                         "LIMIT 1");
    if (rc == 0 && rows.nrow == 0)
        rc = fail(f, BC_ENOTFOUND, "%s",
                  want ? "no such company (--company)"
                       : "no company yet (bcadmin create-admin makes the platform "
                         "company)");
    if (rc == 0)
        f->company = strtoull(sql_cell(&rows, 0, 0), NULL, 10);
    sql_rows_free(&rows);
    return rc;
}

/* The match of the bets: the given one, else the first scheduled one; it
 * must be scheduled and not settled on the shard. */
static int find_match(struct fill *f, uint64_t want)
{
    struct router *r = f->r;
    struct fill_match *m = &f->match;
    uint32_t shard = f->shard;
    struct sql_rows rows = {0};
    int rc;

    if (want != 0)
        rc = router_exec(r, ROUTER_GLOBAL, &rows,
                         "SELECT id, status, odds_home, odds_draw, odds_away FROM "
                         "%S.matches WHERE id = %u",
                         want);
    else
        rc = router_exec(r, ROUTER_GLOBAL, &rows,
                         "SELECT id, status, odds_home, odds_draw, odds_away FROM "
                         "%S.matches WHERE status = 'scheduled' ORDER BY kickoff, id "
                         "LIMIT 1");
    if (rc < 0)
        goto out;
    if (rows.nrow == 0 || strcmp(sql_cell(&rows, 0, 1), "scheduled") != 0) {
        rc = fail(f, BC_ENOTFOUND, "%s",
                  rows.nrow == 0 ? "no such match (create matches, or give --match)"
                                 : "the match is not scheduled: its bets cannot be "
                                   "open");
        goto out;
    }
    m->id = strtoull(sql_cell(&rows, 0, 0), NULL, 10);
    for (int i = 0; i < 3; i++)
        m->odds[i] = strtoll(sql_cell(&rows, 0, 2 + i), NULL, 10);
    sql_rows_free(&rows);
    rc = router_exec(r, shard, &rows,
                     "SELECT COUNT(*) FROM %S.settled_matches WHERE match_id = %u",
                     m->id);
    if (rc == 0 && strcmp(sql_cell(&rows, 0, 0), "0") != 0)
        rc = fail(f, BC_EEXISTS, "match %" PRIu64 " is settled on shard %u", m->id,
                  shard);
out:
    sql_rows_free(&rows);
    return rc;
}

/* The numbers of nuser new e-mails on the shard, after the largest there. */
static int pick_emails(struct fill *f)
{
    struct sql_rows rows = {0};
    char email[96];
    uint64_t num;
    int rc, n;

    snprintf(email, sizeof(email), "fill-%u-%%@fill.invalid", f->shard);
    rc = router_exec(f->r, f->shard, &rows,
                     "SELECT COALESCE(MAX(CAST(SUBSTRING_INDEX(SUBSTRING_INDEX(email, "
                     "'@', 1), '-', -1) AS UNSIGNED)), 0) FROM %S.users WHERE email "
                     "LIKE %s",
                     email);
    if (rc < 0)
        return rc;
    num = strtoull(sql_cell(&rows, 0, 0), NULL, 10);
    sql_rows_free(&rows);
    for (uint64_t k = 0; k < f->nuser;) {
        n = snprintf(email, sizeof(email), "fill-%u-%" PRIu64 "@fill.invalid", f->shard,
                     ++num);
        if (router_shard_of_key(f->r, email, (size_t)n) == f->shard)
            f->users[k++].num = num;
    }
    return 0;
}

/* First bet of user k: the bets are spread evenly, in user order. */
static uint64_t first_bet(const struct fill *f, uint64_t k)
{
    return (uint64_t)((unsigned __int128)f->nbet * k / f->nuser);
}

/*
 * Users [k0, k1) with their bets and ledger rows, in one transaction: the
 * bets are drawn first, so that the users go in with their final balance.
 */
static int fill_group(struct fill *f, uint64_t k0, uint64_t k1)
{
    struct router_txn *txn = NULL;
    uint64_t b0 = first_bet(f, k0), nb = first_bet(f, k1) - b0, i, k;
    struct bet {
        uint64_t id, user;
        int64_t stake;
        int pick;
    } *bets = nb ? calloc(nb, sizeof(*bets)) : NULL;
    int rc = -ENOMEM;

    if (nb > 0 && bets == NULL)
        goto out;
    for (i = 0, k = k0; i < nb; i++) {
        while (first_bet(f, k + 1) <= b0 + i)
            k++;
        bets[i].user = k;
        bets[i].stake = 1 + (int64_t)(fill_rng_next(&f->rng) % (uint64_t)f->max_stake);
        bets[i].pick = (int)(fill_rng_next(&f->rng) % 3);
        if ((rc = idgen_next(&f->ids, &bets[i].id)) < 0)
            goto out;
        f->users[k].spent += bets[i].stake;
        f->users[k].owed += bets[i].stake * f->match.odds[bets[i].pick] / 100;
    }
    if ((rc = router_txn_begin(f->r, f->shard, &txn)) < 0)
        goto out;
    f->sql.len = 0;
    rc = sb_printf(&f->sql, "INSERT INTO %%S.users (id, email, password_hash, "
                            "display_name, company_id, role, balance, "
                            "initial_balance, open_payout) VALUES ");
    for (k = k0; k < k1 && rc == 0; k++)
        rc = sb_printf(&f->sql,
                       "%s(%" PRIu64 ", 'fill-%u-%" PRIu64 "@fill.invalid', '%s', "
                       "'Fill %u-%" PRIu64 "', %" PRIu64 ", 'member', %" PRId64
                       ", %" PRId64 ", %" PRId64 ")",
                       k > k0 ? "," : "", f->users[k].id, f->shard, f->users[k].num,
                       f->hash, f->shard, f->users[k].num, f->company,
                       f->balance - f->users[k].spent, f->balance, f->users[k].owed);
    if (rc == 0)
        rc = router_txn_exec(txn, NULL, f->sql.s);
    /* The company's members in the shard's standings aggregates, as a signup's. */
    if (rc == 0 && k1 > k0)
        rc = router_txn_exec(
            txn, NULL,
            "INSERT INTO %S.standings_company (company_id, members, points) VALUES "
            "(%u, %u, 0) ON DUPLICATE KEY UPDATE members = members + VALUES(members)",
            f->company, (uint64_t)(k1 - k0));
    f->rows += k1 - k0;
    /* Each chunk of bets and its ledger rows: one round trip. */
    for (uint64_t c = 0; c < nb && rc == 0; c += ROWS_PER_INSERT) {
        uint64_t end = c + ROWS_PER_INSERT < nb ? c + ROWS_PER_INSERT : nb;

        f->sql.len = 0;
        rc = sb_printf(&f->sql, "INSERT INTO %%S.bets (id, user_id, match_id, pick, "
                                "stake, odds, placed_at, payout, settled_at) VALUES ");
        for (i = c; i < end && rc == 0; i++)
            rc = sb_printf(&f->sql,
                           "%s(%" PRIu64 ", %" PRIu64 ", %" PRIu64 ", '%s', %" PRId64
                           ", %" PRId64 ", NOW(3), 0, NOW(3))",
                           i > c ? "," : "", bets[i].id, f->users[bets[i].user].id,
                           f->match.id, fill_picks[bets[i].pick], bets[i].stake,
                           f->match.odds[bets[i].pick]);
        if (rc == 0)
            rc = sb_printf(&f->sql, ";\nINSERT INTO %%S.ledger (user_id, delta, "
                                    "reason, bet_id) VALUES ");
        for (i = c; i < end && rc == 0; i++)
            rc = sb_printf(&f->sql, "%s(%" PRIu64 ", %" PRId64 ", 'bet', %" PRIu64 ")",
                           i > c ? "," : "", f->users[bets[i].user].id, -bets[i].stake,
                           bets[i].id);
        if (rc == 0)
            rc = router_txn_exec(txn, NULL, f->sql.s);
        f->rows += 2 * (end - c);
    }
    if (rc == 0) {
        rc = router_txn_commit(txn);
        txn = NULL;
    }
out:
    router_txn_rollback(txn);
    free(bets);
    return rc;
}

static int fill_run(struct fill *f)
{
    int rc;

    if ((f->users = calloc(f->nuser, sizeof(*f->users))) == NULL)
        return -ENOMEM;
    f->sql.cap = 256 * ROWS_PER_INSERT;
    if ((f->sql.s = malloc(f->sql.cap)) == NULL)
        return -ENOMEM;
    if ((rc = pick_emails(f)) < 0 || (rc = idgen_init(f, f->nuser + f->nbet)) < 0)
        return rc;
    for (uint64_t k = 0; k < f->nuser; k++) {
        if ((rc = idgen_next(&f->ids, &f->users[k].id)) < 0)
            return rc;
    }
    for (uint64_t k = 0; k < f->nuser; k += USERS_PER_TXN) {
        rc = fill_group(f, k,
                        k + USERS_PER_TXN < f->nuser ? k + USERS_PER_TXN : f->nuser);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"shard", required_argument, NULL, 's'},
                                         {"users", required_argument, NULL, 'u'},
                                         {"bets", required_argument, NULL, 'b'},
                                         {"match", required_argument, NULL, 'm'},
                                         {"company", required_argument, NULL, 'C'},
                                         {"password", required_argument, NULL, 'p'},
                                         {"balance", required_argument, NULL, 'B'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *path = getenv("BC_CLUSTER"), *password = "fill-password";
    uint64_t shard = UINT64_MAX, users = 0, bets = UINT64_MAX, match = 0, company = 0;
    uint64_t balance = 1000, per_user;
    struct shardmap_conf conf;
    struct fill f;
    const struct shardmap *map;
    char *err = NULL, hash[HASH_MAX], schema[SHARDMAP_SCHEMA_MAX];
    double t0;
    int c, bad = 0, rc;

    memset(&f, 0, sizeof(f));
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 's':
            bad |= fill_num_arg("fillshard", "--shard", optarg, 0,
                                SHARDMAP_MAX_SHARDS - 1, &shard);
            break;
        case 'u':
            bad |= fill_num_arg("fillshard", "--users", optarg, 1, 10000000, &users);
            break;
        case 'b':
            bad |= fill_num_arg("fillshard", "--bets", optarg, 0, 1000000000, &bets);
            break;
        case 'm':
            bad |= fill_num_arg("fillshard", "--match", optarg, 1, INT64_MAX, &match);
            break;
        case 'C':
            bad |=
                fill_num_arg("fillshard", "--company", optarg, 1, INT64_MAX, &company);
            break;
        case 'p':
            password = optarg;
            break;
        case 'B':
            bad |= fill_num_arg("fillshard", "--balance", optarg, 0, 1000000000000,
                                &balance);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            bad = -1;
        }
    }
    if (!bad && optind != argc) {
        fprintf(stderr, "fillshard: unexpected argument '%s'\n", argv[optind]);
        bad = -1;
    }
    if (!bad && (shard == UINT64_MAX || users == 0 || bets == UINT64_MAX)) {
        fprintf(stderr, "fillshard: --shard, --users and --bets are required\n");
        bad = -1;
    }
    per_user = users ? (bets + users - 1) / users : 0;
    if (!bad && bets > 0 && balance / per_user < 1) {
        fprintf(stderr,
                "fillshard: %" PRIu64 " bets a user at stake 1 are more than the "
                "balance %" PRIu64 "\n",
                per_user, balance);
        bad = -1;
    }
    if (!bad && strlen(password) < 8) {
        fprintf(stderr, "fillshard: --password: at least 8 characters\n");
        bad = -1;
    }
    if (bad) {
        usage(stderr);
        return 2;
    }
    if (path == NULL)
        path = ".stack/cluster.yaml";
    if (shardmap_conf_load(path, &conf, &err) < 0) {
        fprintf(stderr, "fillshard: %s\n",
                err ? err : "cannot load the cluster config");
        free(err);
        return 1;
    }
    conf.query_timeout_ms = 60000;       /* statements of a thousand rows */
    conf.account = SHARDMAP_ACCOUNT_OPS; /* batches of statements */
    t0 = fill_now_s();
    if ((rc = router_create(&conf, &f.r)) < 0) {
        fprintf(stderr, "fillshard: %s\n", bc_strerror(rc));
        shardmap_conf_deinit(&conf);
        return 1;
    }
    f.shard = (uint32_t)shard;
    f.nuser = users;
    f.nbet = bets;
    f.balance = (int64_t)balance;
    f.max_stake = bets ? (int64_t)(balance / per_user) : 1;
    f.max_stake = f.max_stake < MAX_STAKE ? f.max_stake : MAX_STAKE;
    f.rng = (uint64_t)time(NULL) ^ ((uint64_t)shard << 48);
    f.hash = hash;
    if ((map = router_map(f.r)) == NULL)
        rc = fail(&f, BC_ENOTFOUND, "no shard map (run shardctl init)");
    else if (shard >= map->nshard)
        rc = fail(&f, BC_ESHARD, "--shard %" PRIu64 ": the cluster has %u shards",
                  shard, map->nshard);
    else if ((rc = find_company(&f, company)) == 0 &&
             (bets == 0 || (rc = find_match(&f, match)) == 0) &&
             (rc = api_password_hash(password, hash, sizeof(hash))) == 0)
        rc = fill_plain_hash(hash)
                 ? fill_run(&f)
                 : fail(&f, -EINVAL, "unexpected password hash format");
    if (rc < 0 && f.why[0] != '\0')
        fprintf(stderr, "fillshard: %s\n", f.why);
    else if (rc < 0)
        fprintf(stderr, "fillshard: shard %u: %s%s%s\n", f.shard, bc_strerror(rc),
                router_last_error()[0] ? ": " : "", router_last_error());
    if (rc == 0) {
        double s = fill_now_s() - t0;

        map = router_map(f.r);
        router_schema(f.r, f.shard, schema, sizeof(schema));
        printf("fillshard: shard %u (%s on %s): %" PRIu64 " users, %" PRIu64
               " bets and ledger rows (match %" PRIu64 "): %" PRIu64
               " rows in %.2f s (%.0f rows/s)\n",
               f.shard, schema, map->nodes[map->node_of[f.shard]].name, f.nuser, f.nbet,
               f.match.id, f.rows, s, (double)f.rows / s);
    }
    free(f.ids.taken);
    free(f.sql.s);
    free(f.users);
    router_destroy(f.r);
    shardmap_conf_deinit(&conf);
    return rc < 0 ? 1 : 0;
}
