/*
 * fillscale: fills a whole cluster with the members of many companies and
 * their bets straight in the databases, every host in parallel, for the
 * scale benchmark (tools/bench/scale). Where fillshard fills one shard,
 * fillscale fills users 0 .. N-1 of one plan, in slices (--from, --to), so
 * that a benchmark can measure at 10,000 users and then fill the rest.
 *
 *   fillscale [-c CLUSTER.yaml] --plan FILE --users N --bets B --from I --to J
 *             --match ID[,ID...] [--password PW] [--balance N] [--per-host K]
 *             [--max-stake S] [--no-binlog] [--no-fence-check] [--json]
 *
 * The plan FILE gives the companies and their teams (made beforehand, in the
 * global schema or through the API), one a line, their sizes adding up to N:
 *
 *   company ID SIZE [TEAM_ID,TEAM_ID,...]
 *
 * The rows are what the API would have made:
 *  - user i is scale-<i>@scale.invalid in the shard its e-mail hashes to (as
 *    signup puts it), display name "Scale <i>", password --password (default
 *    scale-password) for all, hashed once; role member; balance --balance
 *    (default 1000, the API's economy.initial_balance) less his stakes;
 *  - companies get their members spread over the user numbers: user i takes
 *    position (i * STRIDE) mod N of the plan's list of seats, so every slice
 *    of users has its share of every company. Inside a company, every tenth
 *    member is in no team, the others go round its teams;
 *  - user i has 1 + e(i) bets, e(i) = floor(E(i+1)/N) - floor(Ei/N), E = B - N:
 *    one on the first --match (a bet from every user), the others each on a
 *    random one of the other matches; status open, random pick, stake 1..10
 *    (1..S with --max-stake S: scores spread wider once a match is settled;
 *    less when the balance would not cover them), at the match's odds; each
 *    bet with its ledger row (delta -stake, reason bet), so that balance =
 *    initial_balance + sum(ledger.delta) and balance >= 0 hold (bcadmin
 *    check-ledger).
 * Ids carry their shard and are taken, as fillshard's, from a window of the
 * host's clock a minute in the past that the API can no longer use, skipping
 * the ids already there.
 *
 * One connection per host (--per-host K: K, each with every K-th shard of the
 * host), all at once; each shard's users of the slice go in one transaction
 * with their bets and ledger rows, in multi-row INSERTs of ROWS_PER_INSERT
 * rows: an interrupted fill leaves whole shards behind. --no-binlog fills
 * with sql_log_bin = 0 (the rows are the same; a stack that moves no shard
 * during the fill loses nothing), --no-fence-check with the fencing
 * triggers' bypass of a move's own copy (@bc_move_copy; the triggers still
 * run, without their share-locked read): do not use it while a move runs.
 *
 * Prints one line per host and a total (rows, seconds, rows/s), or with
 * --json one JSON object. A progress line goes to stderr every 10 s.
 * Exit codes: 0 ok, 1 failed, 2 usage.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "router/router.h"
#include "tools/bench/fill_util.h"
#include "tools/bench/fillscale.h"

struct fill_bet {
    uint64_t id;
    uint32_t user; /* index into the shard's users */
    uint16_t match;
    uint8_t pick;
    int64_t stake;
};

/* One filler: a connection to one host and every nk-th of its shards. */
struct worker {
    struct scale *s; /* ref */
    pthread_t thread;
    uint32_t node, k, nk;
    struct sql_conn *c;
    struct sbuf sql;
    struct idgen ids;
    uint64_t rng;
    uint64_t now_ms; /* the host's clock at the start */
    uint64_t nshard, nuser, nbet, rows;
    double seconds;
    int rc;
    char why[512];
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: fillscale [-c CLUSTER.yaml] --plan FILE --users N --bets B\n"
            "                 --from I --to J --match ID[,ID...] [--password PW]\n"
            "                 [--balance N] [--per-host K] [--max-stake S]\n"
            "                 [--no-binlog] [--no-fence-check] [--json]\n"
            "\n"
            "  --plan FILE      lines 'company ID SIZE [TEAM,TEAM,...]', sizes adding "
            "up to N\n"
            "  --users N        users of the whole plan (scale-<i>@scale.invalid)\n"
            "  --bets B         bets of the whole plan (B >= N: one per user on the "
            "first match)\n"
            "  --from I --to J  fill users I .. J-1 of the plan (and their bets)\n"
            "  --match IDS      the first match gets a bet of every user, the others "
            "the rest\n"
            "  --password PW    password of every user (default scale-password)\n"
            "  --balance N      initial balance (default 1000, as the API's)\n"
            "  --per-host K     connections per host (default 1)\n"
            "  --max-stake S    stakes 1..S (default 10; at most the balance over a "
            "user's bets)\n"
            "  --no-binlog      fill with sql_log_bin = 0\n"
            "  --no-fence-check fill with the fencing triggers' bypass "
            "(@bc_move_copy)\n"
            "  --json           the figures as one JSON object\n");
}

static int fail(struct worker *w, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records why the worker fails (the first reason only) and returns rc. */
static int fail(struct worker *w, int rc, const char *fmt, ...)
{
    va_list ap;

    if (w->why[0] == '\0') {
        va_start(ap, fmt);
        vsnprintf(w->why, sizeof(w->why), fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* ---- one shard --------------------------------------------------------------- */

/* Sets up the worker's ids for n rows of shard, a minute before the host's
 * clock, with the ids already taken there. */
static int idgen_init(struct worker *w, const char *schema, uint32_t shard, uint64_t n)
{
    struct idgen *g = &w->ids;
    struct sql_rows rows = {0};
    struct shardmap_id lo = {0}, hi = {0};
    uint64_t nms = n / (1u << SHARDMAP_ID_SEQ_BITS) + FILL_ID_SPARE_MS, lo_id, hi_id;
    int rc;

    free(g->taken);
    memset(g, 0, sizeof(*g));
    g->shard = shard;
    if (w->now_ms < SHARDMAP_ID_EPOCH_MS + FILL_ID_WINDOW_AGO_MS + nms)
        return fail(w, -ERANGE, "the host's clock is before the id epoch");
    g->ms_end = w->now_ms - SHARDMAP_ID_EPOCH_MS - FILL_ID_WINDOW_AGO_MS;
    g->ms = g->ms_end - nms;
    lo.ms = g->ms;
    lo.shard = hi.shard = shard;
    hi.ms = g->ms_end - 1;
    hi.seq = (1u << SHARDMAP_ID_SEQ_BITS) - 1;
    if ((rc = shardmap_id_pack(&lo, &lo_id)) < 0 ||
        (rc = shardmap_id_pack(&hi, &hi_id)) < 0)
        return rc;
    rc = sql_exec(w->c, &rows,
                  "SELECT id FROM %I.users WHERE id BETWEEN %u AND %u UNION "
                  "SELECT id FROM %I.bets WHERE id BETWEEN %u AND %u ORDER BY id",
                  schema, lo_id, hi_id, schema, lo_id, hi_id);
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

static int run_text(struct worker *w)
{
    int rc = sql_query(w->c, w->sql.s, w->sql.len, NULL);

    w->sql.len = 0;
    return rc;
}

/* The shard's users, then their bets with the ledger rows, in ROWS_PER_INSERT
 * chunks. The statements are built here from numbers, the plain e-mails and
 * names above and the password hash (checked by plain_hash): nothing to
 * escape. */
static int insert_rows(struct worker *w, const char *schema, const uint32_t *users,
                       uint32_t nu, const uint64_t *uid, const int64_t *spent,
                       const int64_t *owed, const struct fill_bet *bets, uint64_t nb)
{
    const struct scale *s = w->s;
    uint64_t company, team;
    int rc = 0;

    for (uint32_t c = 0; c < nu && rc == 0; c += ROWS_PER_INSERT) {
        uint32_t end = nu - c > ROWS_PER_INSERT ? c + ROWS_PER_INSERT : nu;

        rc = sb_printf(&w->sql,
                       "INSERT INTO `%s`.users (id, email, password_hash, "
                       "display_name, company_id, team_id, role, balance, "
                       "initial_balance, open_payout) VALUES ",
                       schema);
        for (uint32_t k = c; k < end && rc == 0; k++) {
            scale_seat_of(s, users[k], &company, &team);
            rc = sb_printf(&w->sql,
                           "%s(%" PRIu64 ", 'scale-%" PRIu32 "@scale.invalid', '%s', "
                           "'Scale %" PRIu32 "', %" PRIu64 ", NULLIF(%" PRIu64
                           ", 0), 'member', %" PRId64 ", %" PRId64 ", %" PRId64 ")",
                           k > c ? "," : "", uid[k], users[k], s->hash, users[k],
                           company, team, s->balance - spent[k], s->balance, owed[k]);
        }
        if (rc == 0)
            rc = run_text(w);
        w->rows += end - c;
        atomic_fetch_add(&w->s->rows, end - c);
    }
    for (uint64_t c = 0; c < nb && rc == 0; c += ROWS_PER_INSERT) {
        uint64_t end = nb - c > ROWS_PER_INSERT ? c + ROWS_PER_INSERT : nb;

        rc = sb_printf(&w->sql,
                       "INSERT INTO `%s`.bets (id, user_id, match_id, pick, stake, "
                       "odds, placed_at, payout, settled_at) VALUES ",
                       schema);
        for (uint64_t i = c; i < end && rc == 0; i++)
            rc = sb_printf(&w->sql,
                           "%s(%" PRIu64 ", %" PRIu64 ", %" PRIu64 ", '%s', %" PRId64
                           ", %" PRId64 ", NOW(3), 0, NOW(3))",
                           i > c ? "," : "", bets[i].id, uid[bets[i].user],
                           s->matches[bets[i].match].id, fill_picks[bets[i].pick],
                           bets[i].stake, s->matches[bets[i].match].odds[bets[i].pick]);
        if (rc == 0)
            rc = sb_printf(&w->sql,
                           ";\nINSERT INTO `%s`.ledger (user_id, delta, reason, "
                           "bet_id) VALUES ",
                           schema);
        for (uint64_t i = c; i < end && rc == 0; i++)
            rc = sb_printf(&w->sql, "%s(%" PRIu64 ", %" PRId64 ", 'bet', %" PRIu64 ")",
                           i > c ? "," : "", uid[bets[i].user], -bets[i].stake,
                           bets[i].id);
        if (rc == 0)
            rc = run_text(w);
        w->rows += 2 * (end - c);
        atomic_fetch_add(&w->s->rows, 2 * (end - c));
    }
    return rc;
}

/* The slice's users of one shard with their bets, in one transaction. */
static int fill_shard(struct worker *w, uint32_t shard)
{
    const struct scale *s = w->s;
    const uint32_t *users = s->by_shard + s->first[shard];
    uint32_t nu = s->first[shard + 1] - s->first[shard];
    uint64_t nb = 0, b = 0, *uid = NULL;
    int64_t *spent = NULL, *owed = NULL; /* a user's stakes; his open payouts */
    struct fill_bet *bets = NULL;
    char schema[SHARDMAP_SCHEMA_MAX];
    int rc = -ENOMEM;

    if (nu == 0)
        return 0;
    router_schema(s->r, shard, schema, sizeof(schema));
    for (uint32_t k = 0; k < nu; k++)
        nb += 1 + scale_extra_bets(s, users[k]);
    uid = calloc(nu, sizeof(*uid));
    spent = calloc(nu, sizeof(*spent));
    owed = calloc(nu, sizeof(*owed));
    bets = calloc(nb, sizeof(*bets));
    if (uid == NULL || spent == NULL || owed == NULL || bets == NULL)
        goto out;
    if ((rc = idgen_init(w, schema, shard, nu + nb)) < 0)
        goto out;
    for (uint32_t k = 0; k < nu && rc == 0; k++)
        rc = idgen_next(&w->ids, &uid[k]);
    for (uint32_t k = 0; k < nu && rc == 0; k++) {
        uint64_t n = 1 + scale_extra_bets(s, users[k]);

        for (uint64_t j = 0; j < n && rc == 0; j++, b++) {
            struct fill_bet *x = &bets[b];

            x->user = k;
            x->match =
                j == 0 ? 0 : (uint16_t)(1 + fill_rng_next(&w->rng) % (s->nmatch - 1));
            x->pick = (uint8_t)(fill_rng_next(&w->rng) % 3);
            x->stake = 1 + (int64_t)(fill_rng_next(&w->rng) % (uint64_t)s->max_stake);
            spent[k] += x->stake;
            owed[k] += x->stake * s->matches[x->match].odds[x->pick] / 100;
            rc = idgen_next(&w->ids, &x->id);
        }
    }
    if (rc < 0)
        goto out;
    if ((rc = sql_exec(w->c, NULL, "START TRANSACTION")) < 0)
        goto out;
    rc = insert_rows(w, schema, users, nu, uid, spent, owed, bets, nb);
    if (rc == 0)
        rc = sql_exec(w->c, NULL, "COMMIT");
    else if (!sql_conn_broken(w->c))
        sql_exec(w->c, NULL, "ROLLBACK");
    if (rc == 0) {
        w->nshard++;
        w->nuser += nu;
        w->nbet += nb;
    }
out:
    if (rc < 0)
        fail(w, rc, "shard %u (%s on %s): %s%s%s", shard, schema,
             s->map->nodes[w->node].name, bc_strerror(rc),
             sql_last_error()[0] ? ": " : "", sql_last_error());
    free(uid);
    free(spent);
    free(owed);
    free(bets);
    return rc;
}

/* ---- the workers --------------------------------------------------------------- */

static int worker_open(struct worker *w)
{
    const char *host = w->s->map->nodes[w->node].name;
    struct sql_conn_opts opts = {
        .connect_timeout_ms = 5000, .query_timeout_ms = 600000, .multi_statements = 1};
    struct sql_endpoint ep;
    char now[32];
    int rc;

    if ((rc = router_endpoint(w->s->r, host, &ep)) < 0)
        return fail(w, rc, "host %s: %s", host, router_last_error());
    if ((rc = sql_conn_open(&ep, &opts, &w->c)) < 0)
        return fail(w, rc, "%s", sql_last_error());
    if (!w->s->binlog && (rc = sql_exec(w->c, NULL, "SET SESSION sql_log_bin = 0")) < 0)
        return fail(w, rc, "%s", sql_last_error());
    if (!w->s->fence_check && (rc = sql_exec(w->c, NULL, "SET @bc_move_copy = 1")) < 0)
        return fail(w, rc, "%s", sql_last_error());
    rc = sql_value(w->c, now, sizeof(now),
                   "SELECT CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS UNSIGNED)");
    if (rc <= 0)
        return fail(w, rc < 0 ? rc : BC_EQUERY, "host %s: no clock: %s", host,
                    sql_last_error());
    w->now_ms = strtoull(now, NULL, 10);
    return 0;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct scale *s = w->s;
    double t0 = fill_now_s();
    uint32_t j = 0;

    w->rc = worker_open(w);
    for (uint32_t sh = 0; sh < s->map->nshard && w->rc == 0; sh++) {
        if (s->map->node_of[sh] != w->node)
            continue;
        if (j++ % w->nk != w->k)
            continue;
        if (atomic_load(&s->stop))
            break;
        w->rc = fill_shard(w, sh);
    }
    if (w->rc < 0)
        atomic_store(&s->stop, 1);
    w->seconds = fill_now_s() - t0;
    sql_conn_close(w->c);
    w->c = NULL;
    atomic_fetch_add(&s->finished, 1);
    return NULL;
}

/* ---- main ------------------------------------------------------------------------ */

static int match_args(struct scale *s, const char *str)
{
    const char *p = str;
    char *end;

    while (*p != '\0') {
        uint64_t id = strtoull(p, &end, 10);

        if (end == p || id == 0 || (*end != ',' && *end != '\0') ||
            s->nmatch == MAX_MATCHES) {
            fprintf(stderr, "fillscale: --match wants up to %d ids a,b,c, not '%s'\n",
                    MAX_MATCHES, str);
            return -1;
        }
        s->matches[s->nmatch++].id = id;
        p = end + (*end == ',');
    }
    return s->nmatch ? 0 : -1;
}

/* Prints the per-host figures and the total, as text or as JSON. */
static void report(const struct scale *s, const struct worker *ws, uint32_t nw,
                   double secs, int json)
{
    uint64_t rows = 0, users = 0, bets = 0;

    if (json)
        printf("{\"hosts\": [");
    for (uint32_t n = 0; n < s->map->nnode; n++) {
        uint64_t r = 0, u = 0, b = 0, sh = 0;
        double t = 0;

        for (uint32_t i = 0; i < nw; i++) {
            if (ws[i].node != n)
                continue;
            r += ws[i].rows, u += ws[i].nuser, b += ws[i].nbet, sh += ws[i].nshard;
            t = ws[i].seconds > t ? ws[i].seconds : t;
        }
        rows += r, users += u, bets += b;
        if (json)
            printf("%s{\"host\": \"%s\", \"shards\": %" PRIu64 ", \"users\": %" PRIu64
                   ", \"bets\": %" PRIu64 ", \"rows\": %" PRIu64
                   ", \"seconds\": %.2f, \"rows_per_s\": %.0f}",
                   n ? ", " : "", s->map->nodes[n].name, sh, u, b, r, t,
                   t > 0 ? (double)r / t : 0.0);
        else
            printf("fillscale: %s: %" PRIu64 " shards, %" PRIu64 " users, %" PRIu64
                   " bets: %" PRIu64 " rows in %.2f s (%.0f rows/s)\n",
                   s->map->nodes[n].name, sh, u, b, r, t, t > 0 ? (double)r / t : 0.0);
    }
    if (json)
        printf("], \"users\": %" PRIu64 ", \"bets\": %" PRIu64 ", \"rows\": %" PRIu64
               ", \"seconds\": %.2f, \"rows_per_s\": %.0f, \"per_host\": %u, "
               "\"binlog\": %s, \"fence_check\": %s}\n",
               users, bets, rows, secs, secs > 0 ? (double)rows / secs : 0.0,
               nw / s->map->nnode, s->binlog ? "true" : "false",
               s->fence_check ? "true" : "false");
    else
        printf("fillscale: users %" PRIu64 "..%" PRIu64 ": %" PRIu64 " users, %" PRIu64
               " bets and ledger rows: %" PRIu64 " rows in %.2f s (%.0f rows/s)\n",
               s->from, s->to - 1, users, bets, rows, secs,
               secs > 0 ? (double)rows / secs : 0.0);
}

/* Starts the workers, prints progress until they end, joins them. */
static int run_workers(struct scale *s, uint32_t per_host, int json)
{
    uint32_t nw = s->map->nnode * per_host;
    struct worker *ws = calloc(nw, sizeof(*ws));
    uint64_t total = 0;
    double t0 = fill_now_s(), last = t0;
    int rc = 0;

    if (ws == NULL)
        return -ENOMEM;
    for (uint64_t i = s->from; i < s->to; i++)
        total +=
            3 + 2 * scale_extra_bets(s, i); /* the user, his bets, their ledger rows */
    for (uint32_t i = 0; i < nw; i++) {
        ws[i].s = s;
        ws[i].node = i / per_host;
        ws[i].k = i % per_host;
        ws[i].nk = per_host;
        ws[i].rng = ((uint64_t)time(NULL) << 16) ^ ((uint64_t)i << 48) ^ s->from;
        if (pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]) != 0) {
            atomic_store(&s->stop, 1);
            nw = i;
            rc = -EAGAIN;
            break;
        }
    }
    while (atomic_load(&s->finished) < nw) {
        usleep(100000);
        if (fill_now_s() - last >= PROGRESS_S && atomic_load(&s->finished) < nw) {
            uint64_t rows = atomic_load(&s->rows);

            last = fill_now_s();
            fprintf(stderr,
                    "fillscale: %.0f %% (%" PRIu64 " of %" PRIu64
                    " rows, %.0f rows/s)\n",
                    100.0 * (double)rows / (double)total, rows, total,
                    (double)rows / (last - t0));
        }
    }
    for (uint32_t i = 0; i < nw; i++) {
        pthread_join(ws[i].thread, NULL);
        if (ws[i].rc < 0) {
            fprintf(stderr, "fillscale: %s\n",
                    ws[i].why[0] ? ws[i].why : bc_strerror(ws[i].rc));
            rc = ws[i].rc;
        }
        free(ws[i].ids.taken);
        free(ws[i].sql.s);
    }
    if (rc == 0)
        report(s, ws, nw, fill_now_s() - t0, json);
    free(ws);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"plan", required_argument, NULL, 'P'},
                                         {"users", required_argument, NULL, 'u'},
                                         {"bets", required_argument, NULL, 'b'},
                                         {"from", required_argument, NULL, 'f'},
                                         {"to", required_argument, NULL, 't'},
                                         {"match", required_argument, NULL, 'm'},
                                         {"password", required_argument, NULL, 'p'},
                                         {"balance", required_argument, NULL, 'B'},
                                         {"per-host", required_argument, NULL, 'k'},
                                         {"max-stake", required_argument, NULL, 'S'},
                                         {"no-binlog", no_argument, NULL, 'L'},
                                         {"no-fence-check", no_argument, NULL, 'F'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *path = getenv("BC_CLUSTER"), *password = "scale-password", *plan = NULL;
    uint64_t from = UINT64_MAX, to = 0, balance = 1000, per_host = 1, per_user;
    uint64_t max_stake = MAX_STAKE;
    struct shardmap_conf conf;
    struct scale *s = calloc(1, sizeof(*s));
    char *err = NULL;
    int c, bad = 0, json = 0, rc;

    if (s == NULL)
        return 1;
    s->binlog = s->fence_check = 1;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 'P':
            plan = optarg;
            break;
        case 'u':
            bad |= fill_num_arg("fillscale", "--users", optarg, 1, 10000000, &s->nuser);
            break;
        case 'b':
            bad |= fill_num_arg("fillscale", "--bets", optarg, 1, 1000000000, &s->nbet);
            break;
        case 'f':
            bad |= fill_num_arg("fillscale", "--from", optarg, 0, 10000000, &from);
            break;
        case 't':
            bad |= fill_num_arg("fillscale", "--to", optarg, 1, 10000000, &to);
            break;
        case 'm':
            bad |= match_args(s, optarg);
            break;
        case 'p':
            password = optarg;
            break;
        case 'B':
            bad |= fill_num_arg("fillscale", "--balance", optarg, 1, 1000000000000,
                                &balance);
            break;
        case 'k':
            bad |= fill_num_arg("fillscale", "--per-host", optarg, 1, MAX_PER_HOST,
                                &per_host);
            break;
        case 'S':
            bad |= fill_num_arg("fillscale", "--max-stake", optarg, 1, 1000000000,
                                &max_stake);
            break;
        case 'L':
            s->binlog = 0;
            break;
        case 'F':
            s->fence_check = 0;
            break;
        case 'j':
            json = 1;
            break;
        case 'h':
            usage(stdout);
            free(s);
            return 0;
        default:
            bad = -1;
        }
    }
    if (!bad && optind != argc) {
        fprintf(stderr, "fillscale: unexpected argument '%s'\n", argv[optind]);
        bad = -1;
    }
    if (!bad && (plan == NULL || s->nuser == 0 || s->nbet == 0 || from == UINT64_MAX ||
                 to == 0 || s->nmatch == 0)) {
        fprintf(stderr, "fillscale: --plan, --users, --bets, --from, --to and --match "
                        "are required\n");
        bad = -1;
    }
    if (!bad && (from >= to || to > s->nuser)) {
        fprintf(stderr, "fillscale: --from and --to: 0 <= I < J <= N\n");
        bad = -1;
    }
    if (!bad && s->nbet < s->nuser) {
        fprintf(stderr, "fillscale: --bets: at least one per user (the first match)\n");
        bad = -1;
    }
    if (!bad && s->nbet > s->nuser && s->nmatch < 2) {
        fprintf(stderr, "fillscale: --match: the bets beyond one per user need a "
                        "second match\n");
        bad = -1;
    }
    per_user = s->nuser ? (s->nbet + s->nuser - 1) / s->nuser : 1;
    if (!bad && balance / per_user < 1) {
        fprintf(stderr,
                "fillscale: %" PRIu64 " bets a user at stake 1 are more than the "
                "balance %" PRIu64 "\n",
                per_user, balance);
        bad = -1;
    }
    if (!bad && strlen(password) < 8) {
        fprintf(stderr, "fillscale: --password: at least 8 characters\n");
        bad = -1;
    }
    if (bad) {
        usage(stderr);
        free(s);
        return 2;
    }
    s->from = from;
    s->to = to;
    s->balance = (int64_t)balance;
    s->max_stake = balance / per_user < max_stake ? (int64_t)(balance / per_user)
                                                  : (int64_t)max_stake;
    if (path == NULL)
        path = ".stack/cluster.yaml";
    if (shardmap_conf_load(path, &conf, &err) < 0) {
        fprintf(stderr, "fillscale: %s\n",
                err ? err : "cannot load the cluster config");
        free(err);
        free(s);
        return 1;
    }
    conf.account = SHARDMAP_ACCOUNT_OPS; /* creates schemas, fills in batches */
    if ((rc = router_create(&conf, &s->r)) < 0) {
        fprintf(stderr, "fillscale: %s\n", bc_strerror(rc));
        goto out;
    }
    if ((s->map = router_map(s->r)) == NULL) {
        fprintf(stderr, "fillscale: no shard map (run shardctl init)\n");
        rc = BC_ENOTFOUND;
        goto out;
    }
    if ((rc = scale_plan_load(s, plan)) < 0 || (rc = scale_matches_load(s)) < 0)
        goto out;
    if ((rc = api_password_hash(password, s->hash, sizeof(s->hash))) < 0 ||
        !fill_plain_hash(s->hash)) {
        fprintf(stderr, "fillscale: cannot hash the password\n");
        rc = rc < 0 ? rc : -EINVAL;
        goto out;
    }
    if ((rc = scale_group_users(s)) < 0) {
        fprintf(stderr, "fillscale: %s\n", bc_strerror(rc));
        goto out;
    }
    rc = run_workers(s, (uint32_t)per_host, json);
out:
    for (uint32_t i = 0; i < s->ncompany; i++)
        free(s->companies[i].teams);
    free(s->companies);
    free(s->first);
    free(s->by_shard);
    router_destroy(s->r);
    shardmap_conf_deinit(&conf);
    free(s);
    return rc < 0 ? 1 : 0;
}
