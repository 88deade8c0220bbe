/*
 * api_settle_count.c: a settlement's progress as its shards tell it
 * (api_settle_job.c recounts it when a run claims the job and when its
 * hosts are done).
 */
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "api/api_settle.h"

int api_settle_recount(struct router *r, uint64_t match, struct api_settle_count *c,
                       uint8_t *guarded, uint64_t *before, int first)
{
    struct sql_rows rows = {0};
    uint32_t nshard = router_nshard(r);
    int rc;

    memset(c, 0, sizeof(*c));
    memset(guarded, 0, nshard);
    if (!first) {
        rc = router_scatter(r, &rows,
                            "SELECT %N, bets_settled FROM %S.settled_matches WHERE "
                            "match_id = %u",
                            match);
        for (uint32_t i = 0; rc == 0 && i < rows.nrow; i++) {
            uint64_t s = strtoull(sql_cell(&rows, i, 0), NULL, 10);
            if (s < nshard && !guarded[s]) {
                guarded[s] = 1;
                c->shards_done++;
                c->bets_total += strtoull(sql_cell(&rows, i, 1), NULL, 10);
            }
        }
        sql_rows_free(&rows);
        if (rc == 0 && c->shards_done == nshard) {
            c->bets_settled = c->bets_total;
            return rc;
        }
        memset(c, 0, sizeof(*c));
        memset(guarded, 0, nshard);
    }
    if (before != NULL)
        memset(before, 0, nshard * sizeof(*before));
    rc = router_scatter(
        r, &rows,
        "SELECT %N, (SELECT COUNT(*) FROM %S.settled_matches WHERE "
        "match_id = %u), COUNT(*)%R FROM %S.bets WHERE match_id = %u",
        match, before != NULL ? ", COALESCE(SUM(status <> 'open'), 0)" : "", match);
    /* A host that failed sent no rows: the others' rows count all the same. */
    for (uint32_t i = 0; i < rows.nrow; i++) {
        uint64_t s = strtoull(sql_cell(&rows, i, 0), NULL, 10);
        uint64_t bets = strtoull(sql_cell(&rows, i, 2), NULL, 10);

        if (s >= nshard)
            continue;
        if (strcmp(sql_cell(&rows, i, 1), "0") != 0) {
            if (!guarded[s]) {
                guarded[s] = 1;
                c->shards_done++;
                c->bets_settled += bets;
            }
        } else if (before != NULL) {
            before[s] = strtoull(sql_cell(&rows, i, 3), NULL, 10);
            c->bets_settled += before[s];
        }
        c->bets_total += bets;
    }
    sql_rows_free(&rows);
    return rc;
}
