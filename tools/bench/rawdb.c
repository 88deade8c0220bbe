/*
 * rawdb: the database work behind GET /v1/me and POST /v1/bets, driven
 * straight from C with no HTTP server in between, to measure the database's
 * own limit on this machine (the baseline of `make bench`).
 *
 *   rawdb select|bet|bet-min|bet-min-1rt --targets FILE [-c CONNS] [-d SECONDS]
 *         [--json]
 *
 * select       the statement GET /v1/me runs (api_user_load in api/api_users.c):
 *              one user row by primary key in its shard schema.
 * bet          what POST /v1/bets (api_h_bet_create in api/api_bets.c, without
 *              an Idempotency-Key) sends: one CALL of the shard's place_bet
 *              procedure (etc/schema/shard.sql: the settled check, the debit,
 *              the bet and ledger rows, the commit). 1 round trip. This
 *              measures the API's own statement without the API.
 * bet-min      the least a correct bet needs, statement by statement: START
 *              TRANSACTION; the conditional balance UPDATE (as place_bet's:
 *              the balance covers the stake, the open payout is counted and
 *              the balance limit kept, docs/api.md); the bet INSERT,
 *              whose id is made inside it from the shard's sequence and clock
 *              (the layout of router_next_id) and kept in a session variable;
 *              the ledger INSERT with that id; COMMIT. 5 round trips, no
 *              idempotency, no settled check, no separate id round trip.
 * bet-min-1rt  the same five statements as one multi-statement text, every
 *              result read: 1 round trip. The INSERTs are guarded by
 *              ROW_COUNT() = 1, so a bet the balance does not cover writes
 *              nothing (the client learns it only after the COMMIT).
 * In every bet mode the match comes from the API's cache, so it is read once
 * per thread; stake 1; the pick rotates over home/draw/away. Every bet row
 * and ledger row is as the API writes it: `bcadmin check-ledger` holds after.
 *
 * Each of CONNS threads (default 64) opens one connection to one database
 * host with the blocking libmariadb API (utf8mb4, multi-statements, found
 * rows: the router's options) and loops over the bench users of that host;
 * thread t takes the host of user t mod N, so the hosts get the same share
 * of the load as when a client rotates over all N users. In the bet modes a
 * thread whose host is not the global host also has a second connection,
 * to the global host, for the match SELECT (the server's pools do the same).
 *
 * FILE (written by tools/bench/run), one item a line:
 *   user NAME
 *   password PASSWORD
 *   global ADDR PORT SCHEMA          host and schema of the global data
 *   match ID                         bet modes: a scheduled match, kickoff ahead
 *   target ADDR PORT SCHEMA USER_ID  one line per bench user (its shard)
 *
 * Prints one line: ops, ops/s, p50 and p99 latency of one operation (ms),
 * errors; with --json one JSON object instead. Exit 0 if no operation
 * failed, 1 otherwise, 2 on usage errors.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mysql.h>

#include "shardmap/shardmap.h" /* the id layout (SHARDMAP_ID_*) only */

#define MAX_TARGETS 4096
#define MAX_THREADS 1024

enum mode { MODE_SELECT, MODE_BET, MODE_BET_MIN, MODE_BET_MIN_1RT };

/* The command-line names, by mode. */
static const char *const mode_names[] = {"select", "bet", "bet-min", "bet-min-1rt"};

static const char *const picks[3] = {"home", "draw", "away"};

struct target {
    char addr[128];
    unsigned port;
    char schema[72];
    uint64_t user_id;
};

struct bench {
    enum mode mode;
    char user[128];
    char password[256];
    struct target global; /* user_id unused */
    uint64_t match_id;
    struct target *targets;
    unsigned ntarget;
    unsigned conns;
    double seconds;
    pthread_barrier_t start;
    atomic_int stop;
};

struct worker {
    struct bench *b;
    unsigned index;
    pthread_t thread;
    unsigned *users; /* indexes into b->targets: the users of this host */
    unsigned nuser;
    uint32_t *lat_us; /* one latency per completed operation */
    size_t nlat, caplat;
    uint64_t errors;
    char error[256]; /* the first error */
    int failed;      /* could not start */
    /* The match as the API's cache holds it: read once from the global schema. */
    int have_match;
    unsigned long long match_odds[3];
};

static void usage(FILE *out)
{
    fprintf(out, "usage: rawdb select|bet|bet-min|bet-min-1rt --targets FILE "
                 "[-c CONNS] [-d SECONDS] [--json]\n");
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int same_host(const struct target *a, const struct target *b)
{
    return a->port == b->port && strcmp(a->addr, b->addr) == 0;
}

/* Copies a value that must fit (with its NUL) into out. */
static int copy_value(char *out, size_t size, const char *value)
{
    size_t n = strlen(value);

    if (n >= size)
        return -1;
    memcpy(out, value, n + 1);
    return 0;
}

static int load_targets(struct bench *b, const char *path)
{
    char line[1024];
    unsigned lineno = 0;
    int have_global = 0;
    FILE *f = fopen(path, "r");

    if (f == NULL) {
        fprintf(stderr, "rawdb: %s: %s\n", path, strerror(errno));
        return -1;
    }
    b->targets = calloc(MAX_TARGETS, sizeof(*b->targets));
    if (b->targets == NULL) {
        fclose(f);
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        struct target *t;
        char *nl = strchr(line, '\n');

        lineno++;
        if (nl != NULL)
            *nl = '\0';
        if (line[0] == '\0' || line[0] == '#')
            continue;
        if (strncmp(line, "user ", 5) == 0) {
            if (copy_value(b->user, sizeof(b->user), line + 5) < 0)
                goto bad;
        } else if (strncmp(line, "password ", 9) == 0) {
            if (copy_value(b->password, sizeof(b->password), line + 9) < 0)
                goto bad;
        } else if (strncmp(line, "global ", 7) == 0) {
            t = &b->global;
            if (sscanf(line + 7, "%127s %u %71s", t->addr, &t->port, t->schema) != 3)
                goto bad;
            have_global = 1;
        } else if (strncmp(line, "match ", 6) == 0) {
            if (sscanf(line + 6, "%" SCNu64, &b->match_id) != 1)
                goto bad;
        } else if (strncmp(line, "target ", 7) == 0) {
            if (b->ntarget == MAX_TARGETS) {
                fprintf(stderr, "rawdb: %s: more than %d targets\n", path, MAX_TARGETS);
                fclose(f);
                return -1;
            }
            t = &b->targets[b->ntarget];
            if (sscanf(line + 7, "%127s %u %71s %" SCNu64, t->addr, &t->port, t->schema,
                       &t->user_id) != 4)
                goto bad;
            b->ntarget++;
        } else {
            goto bad;
        }
    }
    fclose(f);
    if (b->ntarget == 0 || (b->mode != MODE_SELECT && (!have_global || !b->match_id))) {
        fprintf(stderr, "rawdb: %s: needs target lines%s\n", path,
                b->mode != MODE_SELECT ? ", a global line and a match line" : "");
        return -1;
    }
    return 0;
bad:
    fprintf(stderr, "rawdb: %s:%u: cannot parse '%s'\n", path, lineno, line);
    fclose(f);
    return -1;
}

static MYSQL *db_connect(struct worker *w, const struct target *host)
{
    struct bench *b = w->b;
    MYSQL *m = mysql_init(NULL);

    if (m == NULL)
        return NULL;
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    if (mysql_real_connect(m, host->addr, b->user, b->password, NULL, host->port, NULL,
                           CLIENT_MULTI_STATEMENTS | CLIENT_FOUND_ROWS) == NULL) {
        snprintf(w->error, sizeof(w->error), "connect %s:%u: %s", host->addr,
                 host->port, mysql_error(m));
        mysql_close(m);
        return NULL;
    }
    return m;
}

/*
 * Sends one statement (or a multi-statement batch) and reads every result,
 * as the router does. The first result set goes to *res if res is not NULL
 * (the caller frees it); affected[i] gets the affected rows of statement i,
 * for the first naffected statements (the others are read and dropped).
 */
static int db_query(struct worker *w, MYSQL *m, const char *sql, MYSQL_RES **res,
                    uint64_t *affected, unsigned naffected)
{
    unsigned i = 0;
    int rc;

    if (res != NULL)
        *res = NULL;
    if (mysql_real_query(m, sql, (unsigned long)strlen(sql)) != 0)
        goto fail;
    do {
        MYSQL_RES *r = mysql_store_result(m);

        if (r == NULL && mysql_field_count(m) != 0)
            goto fail;
        if (i < naffected)
            affected[i] = mysql_affected_rows(m);
        if (i == 0 && res != NULL)
            *res = r;
        else if (r != NULL)
            mysql_free_result(r);
        i++;
    } while ((rc = mysql_next_result(m)) == 0);
    if (rc > 0)
        goto fail;
    return 0;
fail:
    if (res != NULL && *res != NULL) {
        mysql_free_result(*res);
        *res = NULL;
    }
    if (w->error[0] == '\0')
        snprintf(w->error, sizeof(w->error), "%s: %.120s", mysql_error(m), sql);
    return -1;
}

/* GET /v1/me: the user row (USER_COLS of api/api_users.c) by primary key. */
static int op_select(struct worker *w, MYSQL *m, const struct target *t)
{
    char sql[1024];
    MYSQL_RES *res;
    MYSQL_ROW row;
    int found = 0;

    snprintf(sql, sizeof(sql),
             "SELECT u.id, u.email, u.display_name, u.company_id, u.team_id, u.role, "
             "u.balance, u.points, EXISTS(SELECT 1 FROM `%s`.avatars a WHERE "
             "a.user_id = u.id) FROM `%s`.users u WHERE u.id = %" PRIu64,
             t->schema, t->schema, t->user_id);
    if (db_query(w, m, sql, &res, NULL, 0) < 0)
        return -1;
    while ((row = mysql_fetch_row(res)) != NULL)
        found++;
    mysql_free_result(res);
    if (found != 1) {
        if (w->error[0] == '\0')
            snprintf(w->error, sizeof(w->error), "user %" PRIu64 " not found",
                     t->user_id);
        return -1;
    }
    return 0;
}

/* The first row's cell col as text; -1 if there is none or it is NULL. */
static int first_cell(MYSQL_RES *res, unsigned col, char *out, size_t size)
{
    MYSQL_ROW row = mysql_fetch_row(res);

    if (row == NULL || col >= mysql_num_fields(res) || row[col] == NULL)
        return -1;
    snprintf(out, size, "%s", row[col]);
    return 0;
}

/*
 * The match of the bets, as the API's cache holds it: the API reads it through
 * memcached and its near-cache, so a bet sends nothing to the global schema;
 * here it is read once per thread, on its first bet.
 */
static int bet_match(struct worker *w, MYSQL *global)
{
    const struct bench *b = w->b;
    char sql[512];
    MYSQL_RES *res;
    MYSQL_ROW row;
    int ok;

    if (w->have_match)
        return 0;
    snprintf(sql, sizeof(sql),
             "SELECT status, odds_home, odds_draw, odds_away, kickoff > "
             "UTC_TIMESTAMP(3) FROM `%s`.matches WHERE id = %" PRIu64,
             b->global.schema, b->match_id);
    if (db_query(w, global, sql, &res, NULL, 0) < 0)
        return -1;
    row = mysql_fetch_row(res);
    ok = row != NULL && row[0] != NULL && strcmp(row[0], "scheduled") == 0 &&
         row[4] != NULL && strcmp(row[4], "1") == 0 && row[1] != NULL &&
         row[2] != NULL && row[3] != NULL;
    for (int i = 0; ok && i < 3; i++)
        w->match_odds[i] = strtoull(row[1 + i], NULL, 10);
    mysql_free_result(res);
    if (!ok) {
        if (w->error[0] == '\0')
            snprintf(w->error, sizeof(w->error), "match %" PRIu64 " is not open",
                     b->match_id);
        return -1;
    }
    w->have_match = 1;
    return 0;
}

/* The bet's placed_at, from this machine's clock as the API takes it. */
static void placed_now(char *out, size_t size)
{
    struct timespec now;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    snprintf(out, size, "%04d-%02d-%02d %02d:%02d:%02d.%03ld", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             now.tv_nsec / 1000000);
}

/* The shard a user id carries (shardmap_id_shard without linking shardmap). */
static unsigned id_shard(uint64_t id)
{
    return (unsigned)((id >> SHARDMAP_ID_SEQ_BITS) &
                      ((1u << SHARDMAP_ID_SHARD_BITS) - 1));
}

/* POST /v1/bets: the one statement api_h_bet_create sends, the shard's place_bet. */
static int op_bet(struct worker *w, MYSQL *shard, MYSQL *global, const struct target *t,
                  unsigned seq)
{
    const struct bench *b = w->b;
    unsigned p = seq % 3;
    char sql[1024], placed[64], outcome[32] = "";
    MYSQL_RES *res;
    int ok;

    if (bet_match(w, global) < 0)
        return -1;
    placed_now(placed, sizeof(placed));
    snprintf(sql, sizeof(sql),
             "CALL `%s`.place_bet(%llu, %u, %" PRIu64 ", %" PRIu64
             ", '%s', 1, %llu, '%s', NULL, NULL)",
             t->schema, (unsigned long long)SHARDMAP_ID_EPOCH_MS, id_shard(t->user_id),
             t->user_id, b->match_id, picks[p], w->match_odds[p], placed);
    if (db_query(w, shard, sql, &res, NULL, 0) < 0)
        return -1;
    ok = first_cell(res, 0, outcome, sizeof(outcome)) == 0 &&
         strcmp(outcome, "placed") == 0;
    mysql_free_result(res);
    if (!ok && w->error[0] == '\0')
        snprintf(w->error, sizeof(w->error), "user %" PRIu64 ": place_bet answered %s",
                 t->user_id, outcome);
    return ok ? 0 : -1;
}

/*
 * The minimal bet transaction: START TRANSACTION; the conditional debit; the
 * bet; its ledger row; COMMIT. The bet id is made inside the bet's INSERT
 * with router_next_id's layout (the server's clock in ms since the id epoch,
 * the shard, the low bits of the shard's sequence) and kept in @bet_id for
 * the ledger row, so it costs no round trip of its own.
 *
 * one_rt 0: one statement a round trip (5), checking the debit before the
 * INSERTs as the API does. one_rt 1: the five statements in one text (1
 * round trip, every result read); there the client cannot stop between
 * them, so each INSERT only writes if the statement before it wrote one row
 * (ROW_COUNT() = 1): a bet the balance does not cover commits nothing.
 */
static int op_bet_min(struct worker *w, MYSQL *shard, MYSQL *global,
                      const struct target *t, unsigned seq, int one_rt)
{
    const struct bench *b = w->b;
    unsigned p = seq % 3;
    char sql[2048], debit[512], bet[768], ledger[256], id_expr[256], placed[64];
    uint64_t affected[5] = {0};

    if (bet_match(w, global) < 0)
        return -1;
    placed_now(placed, sizeof(placed));
    snprintf(id_expr, sizeof(id_expr),
             "@bet_id := (((CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS UNSIGNED) - %llu) "
             "<< %d) | (%u << %d) | (NEXTVAL(`%s`.id_seq) & %u))",
             SHARDMAP_ID_EPOCH_MS, SHARDMAP_ID_SHARD_BITS + SHARDMAP_ID_SEQ_BITS,
             id_shard(t->user_id), SHARDMAP_ID_SEQ_BITS, t->schema,
             (1u << SHARDMAP_ID_SEQ_BITS) - 1);
    /* The debit as place_bet's: the open payout counted, the balance limit kept. */
    snprintf(debit, sizeof(debit),
             "UPDATE `%s`.users SET balance = balance - 1, open_payout = open_payout + "
             "%llu DIV 100 WHERE id = %" PRIu64 " AND balance >= 1 AND open_payout <= "
             "1000000000000 - %llu DIV 100 AND balance - 1 <= 1000000000000 - %llu DIV "
             "100 - open_payout",
             t->schema, w->match_odds[p], t->user_id, w->match_odds[p],
             w->match_odds[p]);
    snprintf(bet, sizeof(bet),
             "INSERT INTO `%s`.bets (id, user_id, match_id, pick, stake, odds, "
             "placed_at, payout, settled_at) %s%s, %" PRIu64 ", %" PRIu64
             ", '%s', 1, %llu, '%s', 0, '%s'%s",
             t->schema, one_rt ? "SELECT " : "VALUES (", id_expr, t->user_id,
             b->match_id, picks[p], w->match_odds[p], placed, placed,
             one_rt ? " FROM DUAL WHERE ROW_COUNT() = 1" : ")");
    snprintf(ledger, sizeof(ledger),
             "INSERT INTO `%s`.ledger (user_id, delta, reason, bet_id) %s%" PRIu64
             ", -1, 'bet', @bet_id%s",
             t->schema, one_rt ? "SELECT " : "VALUES (", t->user_id,
             one_rt ? " FROM DUAL WHERE ROW_COUNT() = 1" : ")");

    if (one_rt) {
        snprintf(sql, sizeof(sql), "START TRANSACTION;\n%s;\n%s;\n%s;\nCOMMIT", debit,
                 bet, ledger);
        if (db_query(w, shard, sql, NULL, affected, 5) < 0)
            goto rollback; /* a statement failed: the rest did not run */
        if (affected[1] == 1 && affected[2] == 1 && affected[3] == 1)
            return 0;
        if (w->error[0] == '\0')
            snprintf(w->error, sizeof(w->error),
                     "user %" PRIu64 ": rows debited/bet/ledger %" PRIu64 "/%" PRIu64
                     "/%" PRIu64 " (no balance left?)",
                     t->user_id, affected[1], affected[2], affected[3]);
        return -1; /* committed, but wrote nothing */
    }
    if (db_query(w, shard, "START TRANSACTION", NULL, NULL, 0) < 0)
        return -1;
    if (db_query(w, shard, debit, NULL, affected, 1) < 0)
        goto rollback;
    if (affected[0] == 0) {
        if (w->error[0] == '\0')
            snprintf(w->error, sizeof(w->error), "user %" PRIu64 ": no balance left",
                     t->user_id);
        goto rollback;
    }
    if (db_query(w, shard, bet, NULL, NULL, 0) < 0 ||
        db_query(w, shard, ledger, NULL, NULL, 0) < 0 ||
        db_query(w, shard, "COMMIT", NULL, NULL, 0) < 0)
        goto rollback;
    return 0;
rollback:
    (void)db_query(w, shard, "ROLLBACK", NULL, NULL, 0);
    return -1;
}

static int record(struct worker *w, double us)
{
    if (w->nlat == w->caplat) {
        size_t cap = w->caplat ? w->caplat * 2 : 65536;
        uint32_t *p = realloc(w->lat_us, cap * sizeof(*p));

        if (p == NULL)
            return -1;
        w->lat_us = p;
        w->caplat = cap;
    }
    w->lat_us[w->nlat++] = us > 4e9 ? UINT32_MAX : (uint32_t)(us + 0.5);
    return 0;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct bench *b = w->b;
    const struct target *home = &b->targets[w->users[0]];
    MYSQL *shard = NULL, *global = NULL;
    unsigned i = 0;

    mysql_thread_init();
    shard = db_connect(w, home);
    if (shard != NULL && b->mode != MODE_SELECT)
        global = same_host(home, &b->global) ? shard : db_connect(w, &b->global);
    if (shard == NULL || (b->mode != MODE_SELECT && global == NULL))
        w->failed = 1;
    pthread_barrier_wait(&b->start); /* everyone connected (or failed) */
    while (!w->failed && !atomic_load_explicit(&b->stop, memory_order_relaxed)) {
        const struct target *t = &b->targets[w->users[i % w->nuser]];
        double t0 = now_s();
        unsigned seq = i / w->nuser;
        int rc;

        switch (b->mode) {
        case MODE_SELECT:
            rc = op_select(w, shard, t);
            break;
        case MODE_BET:
            rc = op_bet(w, shard, global, t, seq);
            break;
        default:
            rc = op_bet_min(w, shard, global, t, seq, b->mode == MODE_BET_MIN_1RT);
            break;
        }

        if (rc < 0) {
            w->errors++;
            /* A broken connection: reconnect (and stop if that fails). */
            if (mysql_ping(shard) != 0 || (global && mysql_ping(global) != 0)) {
                if (global != NULL && global != shard)
                    mysql_close(global);
                mysql_close(shard);
                global = NULL;
                shard = db_connect(w, home);
                if (shard != NULL && b->mode != MODE_SELECT)
                    global =
                        same_host(home, &b->global) ? shard : db_connect(w, &b->global);
                if (shard == NULL || (b->mode != MODE_SELECT && global == NULL))
                    w->failed = 1;
            }
        } else if (record(w, (now_s() - t0) * 1e6) < 0) {
            w->failed = 1;
        }
        i++;
    }
    if (global != NULL && global != shard)
        mysql_close(global);
    if (shard != NULL)
        mysql_close(shard);
    mysql_thread_end();
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted samples, in ms. */
static double percentile_ms(const uint32_t *v, size_t n, double p)
{
    size_t rank;

    if (n == 0)
        return 0;
    rank = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return v[rank - 1] / 1000.0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"targets", required_argument, NULL, 'f'},
                                         {"connections", required_argument, NULL, 'c'},
                                         {"duration", required_argument, NULL, 'd'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    struct bench b = {.conns = 64, .seconds = 10};
    struct worker *workers;
    const char *targets = NULL;
    uint32_t *all;
    size_t nall = 0;
    uint64_t errors = 0;
    const char *first_error = "";
    unsigned started = 0, failed = 0;
    double t0, elapsed, rate, p50, p99;
    int c, json = 0;
    char *end;

    while ((c = getopt_long(argc, argv, "f:c:d:jh", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            targets = optarg;
            break;
        case 'c':
            b.conns = (unsigned)strtoul(optarg, &end, 10);
            if (*end != '\0' || b.conns < 1 || b.conns > MAX_THREADS) {
                fprintf(stderr, "rawdb: -c wants 1..%d\n", MAX_THREADS);
                return 2;
            }
            break;
        case 'd':
            b.seconds = strtod(optarg, &end);
            if (*end != '\0' || !(b.seconds > 0)) {
                fprintf(stderr, "rawdb: -d wants a positive number of seconds\n");
                return 2;
            }
            break;
        case 'j':
            json = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind + 1 != argc || targets == NULL) {
        usage(stderr);
        return 2;
    }
    for (c = 0; c < (int)(sizeof(mode_names) / sizeof(mode_names[0])); c++)
        if (strcmp(argv[optind], mode_names[c]) == 0)
            break;
    if (c == (int)(sizeof(mode_names) / sizeof(mode_names[0]))) {
        usage(stderr);
        return 2;
    }
    b.mode = (enum mode)c;
    if (load_targets(&b, targets) < 0)
        return 2;
    if (mysql_library_init(0, NULL, NULL) != 0) {
        fprintf(stderr, "rawdb: cannot initialise libmariadb\n");
        return 1;
    }
    workers = calloc(b.conns, sizeof(*workers));
    if (workers == NULL)
        return 1;
    /* Thread t: the host of user t mod N, and every user of that host. */
    for (unsigned t = 0; t < b.conns; t++) {
        struct worker *w = &workers[t];
        unsigned mine = t % b.ntarget, k = 0;

        w->b = &b;
        w->index = t;
        w->users = calloc(b.ntarget, sizeof(*w->users));
        if (w->users == NULL)
            return 1;
        /* Start at its own user, then the host's others in order. */
        for (unsigned j = 0; j < b.ntarget; j++) {
            unsigned u = (mine + j) % b.ntarget;
            if (same_host(&b.targets[u], &b.targets[mine]))
                w->users[k++] = u;
        }
        w->nuser = k;
    }
    pthread_barrier_init(&b.start, NULL, b.conns + 1);
    for (; started < b.conns; started++)
        if (pthread_create(&workers[started].thread, NULL, worker_main,
                           &workers[started]) != 0)
            break;
    if (started < b.conns) {
        fprintf(stderr, "rawdb: cannot start %u threads\n", b.conns);
        return 1; /* the started threads wait on the barrier; exiting ends them */
    }
    pthread_barrier_wait(&b.start);
    t0 = now_s();
    while (now_s() - t0 < b.seconds)
        usleep(10000);
    atomic_store(&b.stop, 1);
    for (unsigned t = 0; t < b.conns; t++) {
        pthread_join(workers[t].thread, NULL);
        nall += workers[t].nlat;
    }
    elapsed = now_s() - t0;
    all = malloc((nall ? nall : 1) * sizeof(*all));
    if (all == NULL)
        return 1;
    nall = 0;
    for (unsigned t = 0; t < b.conns; t++) {
        struct worker *w = &workers[t];

        if (w->nlat)
            memcpy(all + nall, w->lat_us, w->nlat * sizeof(*all));
        nall += w->nlat;
        errors += w->errors;
        failed += w->failed;
        if (first_error[0] == '\0' && w->error[0] != '\0')
            first_error = w->error;
    }
    qsort(all, nall, sizeof(*all), cmp_u32);
    rate = (double)nall / elapsed;
    p50 = percentile_ms(all, nall, 50);
    p99 = percentile_ms(all, nall, 99);
    if (json) {
        printf("{\"mode\":\"%s\",\"conns\":%u,\"seconds\":%.2f,\"ops\":%zu,"
               "\"ops_per_s\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"errors\":%" PRIu64
               ",\"failed_threads\":%u}\n",
               mode_names[b.mode], b.conns, elapsed, nall, rate, p50, p99, errors,
               failed);
    } else {
        printf("rawdb %s: %u conns, %.1f s: %zu ops, %.1f ops/s, p50 %.2f ms, "
               "p99 %.2f ms, %" PRIu64 " errors\n",
               mode_names[b.mode], b.conns, elapsed, nall, rate, p50, p99, errors);
    }
    if (first_error[0] != '\0')
        fprintf(stderr, "rawdb: first error: %s\n", first_error);
    if (failed)
        fprintf(stderr, "rawdb: %u threads could not run\n", failed);
    for (unsigned t = 0; t < b.conns; t++) {
        free(workers[t].users);
        free(workers[t].lat_us);
    }
    free(workers);
    free(all);
    free(b.targets);
    mysql_library_end();
    return errors || failed ? 1 : 0;
}
