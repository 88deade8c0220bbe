/*
 * api_purge.c: Idempotency-Key records leave the shards after 24 hours.
 *
 * A key answers a repeated POST /v1/bets with the bet it made for
 * API_IDEM_KEEP_S (docs/api.md); after that the record is deleted, shard by
 * shard, in short deletes of at most PURGE_BATCH rows by the index on
 * created_at (etc/schema/shard.sql), so no statement holds a shard's locks
 * for long. Every API server runs the purge as a job of its own, at start
 * and every PURGE_EVERY_MS, in the router's background mode (its own
 * connections and deadline: a slow shard is never taken for a dead host);
 * two servers purging at once delete disjoint rows or nothing.
 * `bcadmin purge-idempotency` runs the same pass once.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <time.h>

#include "api/api_int.h"

#define PURGE_BATCH 1000
#define PURGE_EVERY_MS (10 * 60 * 1000)
#define PURGE_KEY UINT64_MAX /* the job's key: not a match id, not the settler's */

int api_idem_purge(struct router *r, uint32_t keep_s, uint64_t *deleted,
                   uint32_t *failed)
{
    uint32_t nshard = router_nshard(r);
    int first = 0;

    *deleted = 0;
    *failed = 0;
    for (uint32_t shard = 0; shard < nshard; shard++) {
        struct sql_rows rows = {0};
        int rc;

        do {
            sql_rows_free(&rows);
            rc = router_exec(r, shard, &rows,
                             "DELETE FROM %S.idempotency WHERE created_at < NOW(3) - "
                             "INTERVAL %d SECOND LIMIT %d",
                             (int64_t)keep_s, (int64_t)PURGE_BATCH);
            if (rc == 0)
                *deleted += rows.affected;
        } while (rc == 0 && rows.affected >= PURGE_BATCH);
        sql_rows_free(&rows);
        if (rc < 0 && (*failed)++ == 0) {
            /* The first failure's text; the others are counted. */
            first = rc;
            api_log("idempotency purge: shard %" PRIu32 ": %s", shard,
                    router_last_error());
        }
    }
    return first;
}

static void purge_main(struct api_job *job, uint64_t key, void *arg)
{
    struct router *r = arg;
    int64_t next = 0;
    uint64_t deleted;
    uint32_t failed;
    (void)key;

    router_background(1);
    while (!api_job_stopping(job)) {
        /* A kick of the jobs (a posted result) ends the sleep early: not a pass. */
        if (sql_now_ms() >= next && router_map(r) != NULL) {
            next = sql_now_ms() + PURGE_EVERY_MS;
            (void)api_idem_purge(r, API_IDEM_KEEP_S, &deleted, &failed);
            if (deleted > 0 || failed > 0)
                api_log("idempotency purge: %" PRIu64 " keys older than %u s deleted"
                        "%s",
                        deleted, (unsigned)API_IDEM_KEEP_S,
                        failed > 0 ? ", some shards failed (next pass retries)" : "");
        }
        api_job_sleep(job, 1000);
    }
}

int api_purge_start(struct api_jobs *jobs, struct router *router)
{
    return api_jobs_start(jobs, PURGE_KEY, purge_main, router);
}
