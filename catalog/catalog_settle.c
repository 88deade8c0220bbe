/*
 * catalog_settle.c: the settlement jobs of posted match results.
 *
 * One row per match: the result, running or done, and the progress the API
 * counts from the shards' own guard rows (settled_matches), so a settlement
 * that crashed resumes where it was and the row only reports it.
 */
#include <stdio.h>
#include <string.h>

#include "catalog/catalog_int.h"

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
                      "SELECT result, state, shards_total, shards_done, bets_settled "
                      "FROM %S.settlements WHERE match_id = %u",
                      match_id);
    if (rc == 0 && rows.nrow > 0) {
        memset(out, 0, sizeof(*out));
        out->match_id = match_id;
        catalog__str(out->result, sizeof(out->result), sql_cell(&rows, 0, 0));
        catalog__str(out->state, sizeof(out->state), sql_cell(&rows, 0, 1));
        out->shards_total = (uint32_t)catalog__u64(sql_cell(&rows, 0, 2));
        out->shards_done = (uint32_t)catalog__u64(sql_cell(&rows, 0, 3));
        out->bets_settled = catalog__u64(sql_cell(&rows, 0, 4));
        rc = 1;
    }
    sql_rows_free(&rows);
    return rc;
}

int catalog_settlement_progress(struct catalog *cat, uint64_t match_id,
                                uint32_t shards_done, uint64_t bets_settled, int done)
{
    return catalog__run(
        cat, NULL,
        "UPDATE %S.settlements SET shards_done = %u, bets_settled = %u, "
        "state = IF(%d, 'done', 'running'), "
        "finished_at = IF(%d, NOW(3), NULL) WHERE match_id = %u",
        (uint64_t)shards_done, bets_settled, (int64_t)(done != 0), (int64_t)(done != 0),
        match_id);
}

int catalog_settlement_advance(struct catalog *cat, uint64_t match_id, uint32_t shards,
                               uint64_t bets)
{
    return catalog__run(cat, NULL,
                        "UPDATE %S.settlements SET shards_done = LEAST(shards_total, "
                        "shards_done + %u), bets_settled = bets_settled + %u WHERE "
                        "match_id = %u AND state = 'running'",
                        (uint64_t)shards, bets, match_id);
}
