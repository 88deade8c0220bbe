/*
 * catalog_settle.c: the settlement jobs of posted match results.
 *
 * One row per match: the result, running or done, a lease (who runs it, and
 * until when on the global host's clock), and progress counts for people.
 * The shards' own rows are the truth of what is settled (a bet's status,
 * each shard's settled_matches guard row): a runner recounts from them when
 * it claims a job and when it finishes, so the counts are right after any
 * crash too.
 *
 * Every lease decision is one conditional UPDATE of the job's row, and the
 * connections report found rows (CLIENT_FOUND_ROWS), so "affected" says
 * whether the condition held: InnoDB's row lock orders two claims of one
 * row, and the second sees the first's lease and matches nothing.
 */
#include <stdio.h>
#include <string.h>

#include "catalog/catalog_int.h"

/* A lease of ms milliseconds from now, on the global host's clock. */
#define LEASE_UNTIL "UTC_TIMESTAMP(3) + INTERVAL %u MICROSECOND"
/* Nobody holds it: never claimed, released, or expired. */
#define LEASE_FREE "(lease_until IS NULL OR lease_until < UTC_TIMESTAMP(3))"

int catalog_settlement_create(struct catalog *cat, uint64_t match_id,
                              const char *result, uint32_t shards_total)
{
    return catalog__run(cat, NULL,
                        "INSERT INTO %S.settlements (match_id, result, shards_total) "
                        "VALUES (%u, %s, %u)",
                        match_id, result, (uint64_t)shards_total);
}

int catalog_settlement_get(struct catalog *cat, uint64_t match_id,
                           struct catalog_settlement *out)
{
    struct sql_rows rows = {0};
    int rc;

    rc = catalog__run(cat, &rows,
                      "SELECT result, state, shards_total, shards_done, bets_total, "
                      "bets_settled, lease_owner, NOT " LEASE_FREE " FROM "
                      "%S.settlements WHERE match_id = %u",
                      match_id);
    if (rc == 0 && rows.nrow > 0) {
        memset(out, 0, sizeof(*out));
        out->match_id = match_id;
        catalog__str(out->result, sizeof(out->result), sql_cell(&rows, 0, 0));
        catalog__str(out->state, sizeof(out->state), sql_cell(&rows, 0, 1));
        out->shards_total = (uint32_t)catalog__u64(sql_cell(&rows, 0, 2));
        out->shards_done = (uint32_t)catalog__u64(sql_cell(&rows, 0, 3));
        out->bets_total = catalog__u64(sql_cell(&rows, 0, 4));
        out->bets_settled = catalog__u64(sql_cell(&rows, 0, 5));
        catalog__str(out->lease_owner, sizeof(out->lease_owner), sql_cell(&rows, 0, 6));
        out->leased = catalog__u64(sql_cell(&rows, 0, 7)) != 0;
        rc = 1;
    }
    sql_rows_free(&rows);
    return rc;
}

int catalog_settlement_claimable(struct catalog *cat, uint64_t *ids, uint32_t max,
                                 uint32_t *n)
{
    struct sql_rows rows = {0};
    int rc;

    *n = 0;
    rc = catalog__run(cat, &rows,
                      "SELECT match_id FROM %S.settlements WHERE state = 'running' "
                      "AND " LEASE_FREE " ORDER BY match_id LIMIT %u",
                      (uint64_t)max);
    for (uint32_t i = 0; rc == 0 && i < rows.nrow && i < max; i++)
        ids[(*n)++] = catalog__u64(sql_cell(&rows, i, 0));
    sql_rows_free(&rows);
    return rc;
}

/* A conditional UPDATE's answer: 1 it matched the row, 0 not, or its status. */
static int matched(int rc, struct sql_rows *rows)
{
    if (rc == 0)
        rc = rows->affected > 0;
    sql_rows_free(rows);
    return rc;
}

int catalog_settlement_claim(struct catalog *cat, uint64_t match_id, const char *owner,
                             uint32_t lease_ms)
{
    struct sql_rows rows = {0};
    int rc;

    rc = catalog__run(
        cat, &rows,
        "UPDATE %S.settlements SET lease_owner = %s, lease_until = " LEASE_UNTIL
        " WHERE match_id = %u AND state = 'running' AND " LEASE_FREE,
        owner, (uint64_t)lease_ms * 1000, match_id);
    return matched(rc, &rows);
}

int catalog_settlement_renew(struct catalog *cat, uint64_t match_id, const char *owner,
                             uint32_t lease_ms)
{
    struct sql_rows rows = {0};
    int rc;

    /* Not after a release (lease_until NULL): that would take it back. */
    rc = catalog__run(cat, &rows,
                      "UPDATE %S.settlements SET lease_until = " LEASE_UNTIL
                      " WHERE match_id = %u AND state = 'running' AND lease_owner = %s "
                      "AND lease_until IS NOT NULL",
                      (uint64_t)lease_ms * 1000, match_id, owner);
    return matched(rc, &rows);
}

int catalog_settlement_release(struct catalog *cat, uint64_t match_id,
                               const char *owner)
{
    /* The owner stays: the last server that held it, for people. */
    return catalog__run(cat, NULL,
                        "UPDATE %S.settlements SET lease_until = NULL WHERE match_id = "
                        "%u AND lease_owner = %s",
                        match_id, owner);
}

int catalog_settlement_advance(struct catalog *cat, uint64_t match_id,
                               const char *owner, uint32_t shards, uint64_t bets)
{
    return catalog__run(
        cat, NULL,
        "UPDATE %S.settlements SET shards_done = LEAST(shards_total, shards_done + "
        "%u), "
        "bets_settled = bets_settled + %u, bets_total = GREATEST(bets_total, "
        "bets_settled) WHERE match_id = %u AND state = 'running' AND lease_owner = %s",
        (uint64_t)shards, bets, match_id, owner);
}

int catalog_settlement_progress(struct catalog *cat, uint64_t match_id,
                                const char *owner, uint32_t shards_done,
                                uint64_t bets_settled, uint64_t bets_total)
{
    return catalog__run(
        cat, NULL,
        "UPDATE %S.settlements SET shards_done = %u, bets_settled = %u, "
        "bets_total = GREATEST(%u, %u) WHERE match_id = %u AND state = "
        "'running' AND lease_owner = %s",
        (uint64_t)shards_done, bets_settled, bets_total, bets_settled, match_id, owner);
}

int catalog_settlement_finish(struct catalog *cat, uint64_t match_id,
                              uint32_t shards_done, uint64_t bets_settled)
{
    return catalog__run(cat, NULL,
                        "UPDATE %S.settlements SET state = 'done', shards_done = %u, "
                        "bets_settled = %u, bets_total = %u, finished_at = NOW(3), "
                        "lease_until = NULL WHERE match_id = %u AND state = 'running'",
                        (uint64_t)shards_done, bets_settled, bets_settled, match_id);
}
