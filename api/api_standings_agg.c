/*
 * api_standings_agg.c: the standings aggregates of each shard, kept in the
 * transactions that change what they sum.
 *
 * Every shard holds standings_company (company_id, members, points) and
 * standings_team (team_id, company_id, members, points) over its own users,
 * platform admins excluded (etc/schema/shard.sql). A recomputation of the
 * standings reads those rows instead of every user, so its cost grows with
 * companies and teams, not with users.
 *
 * Whoever changes a user's points or membership changes the aggregates in
 * the same transaction on the same shard, after locking the users' rows:
 * a settlement batch (api_standings_batch), a signup and a change of team
 * (api_standings_member). The users' rows are always locked before the
 * aggregates' rows, and aggregate rows in ascending id order, so two such
 * transactions wait for each other instead of deadlocking.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"

/*
 * Points of bet b for a result (payout - stake, as api_settle.c pays):
 * cancelled 0, won FLOOR(stake * odds / 100) - stake, lost -stake. Takes the
 * result twice.
 */
#define BET_POINTS                                                                     \
    "CASE WHEN %s = 'cancelled' THEN 0 WHEN b.pick = %s THEN "                         \
    "FLOOR(b.stake * b.odds / 100) - b.stake ELSE -b.stake END"

/*
 * The batch's bets joined with their (ranked) users; match, lo, hi. The
 * bets are read over match_open (only the batch's, already locked) and the
 * users by primary key from them (STRAIGHT_JOIN): in id order over the
 * primary keys InnoDB would share-lock every bet and user it scanned,
 * other matches' and new users' rows too, and wait for their writers.
 */
#define BATCH_BETS                                                                     \
    "FROM %S.bets b FORCE INDEX (match_open) STRAIGHT_JOIN %S.users u ON u.id = "      \
    "b.user_id WHERE b.match_id = %u AND b.status = 'open' AND b.id BETWEEN %u AND "   \
    "%u AND u.role <> 'platform_admin'"

int api_standings_batch(struct router_txn *txn, uint64_t match, const char *result,
                        uint64_t lo_id, uint64_t hi_id)
{
    int rc;

    /* A cancelled match refunds every stake: nobody's points change. */
    if (strcmp(result, "cancelled") == 0)
        return 0;
    /*
     * The caller holds the batch's users' rows (locked in id order, before
     * this): a change of team, which locks its user before moving his
     * points, waits for this batch, or this batch for it, and the team read
     * next is the one the user is in. Then the aggregate rows, in id order
     * in each table. Two statements: the API's account sends one a call.
     */
    rc = router_txn_exec(
        txn, NULL,
        "INSERT INTO %S.standings_company (company_id, members, points) SELECT "
        "u.company_id, 0, SUM(" BET_POINTS ") " BATCH_BETS " GROUP BY u.company_id "
        "ORDER BY u.company_id ON DUPLICATE KEY UPDATE points = points + "
        "VALUES(points)",
        result, result, match, lo_id, hi_id);
    if (rc == 0)
        rc = router_txn_exec(
            txn, NULL,
            "INSERT INTO %S.standings_team (team_id, company_id, members, points) "
            "SELECT u.team_id, MIN(u.company_id), 0, SUM(" BET_POINTS ") " BATCH_BETS
            " AND u.team_id IS NOT NULL GROUP BY u.team_id ORDER BY u.team_id ON "
            "DUPLICATE KEY UPDATE points = points + VALUES(points)",
            result, result, match, lo_id, hi_id);
    return rc;
}

int api_standings_member(struct router_txn *txn, uint64_t company, int join,
                         uint64_t from_team, uint64_t to_team, int64_t points)
{
    uint64_t lo = from_team < to_team ? from_team : to_team;
    uint64_t hi = from_team < to_team ? to_team : from_team;
    int64_t lo_sign = lo == from_team ? -1 : 1, hi_sign = -lo_sign;
    int rc = 0;

    if (join)
        rc = router_txn_exec(
            txn, NULL,
            "INSERT INTO %S.standings_company (company_id, members, points) VALUES "
            "(%u, 1, %d) ON DUPLICATE KEY UPDATE members = members + 1, points = "
            "points + VALUES(points)",
            company, points);
    if (rc < 0 || from_team == to_team)
        return rc;
    /* Both teams in one statement, the lower id first (the batches' order). */
    if (lo == 0)
        return router_txn_exec(
            txn, NULL,
            "INSERT INTO %S.standings_team (team_id, company_id, members, points) "
            "VALUES (%u, %u, %d, %d) ON DUPLICATE KEY UPDATE members = members + "
            "VALUES(members), points = points + VALUES(points)",
            hi, company, hi_sign, hi_sign * points);
    return router_txn_exec(
        txn, NULL,
        "INSERT INTO %S.standings_team (team_id, company_id, members, points) VALUES "
        "(%u, %u, %d, %d), (%u, %u, %d, %d) ON DUPLICATE KEY UPDATE members = "
        "members + VALUES(members), points = points + VALUES(points)",
        lo, company, lo_sign, lo_sign * points, hi, company, hi_sign, hi_sign * points);
}
