/*
 * api_cached.c: the API's hot reads through the cache (cache/cache.h).
 *
 * Keys (all versioned "bc:v1:"):
 *   match:<id>                       the match with its odds (near-cached)
 *   odds:<id>                        the odds response body (near: the server's
 *                                    hot table of whole responses, api_hot.c)
 *   matches:g<gen>:<query>           a page of the match list ("matches" group);
 *                                    the query's window is explicit and at most
 *                                    31 days (api_matches.c)
 *   teams:<company>:v                the version of a company's team list: a
 *                                    random value, deleted by api_teams_changed()
 *   teams:<company>:v<ver>:<page>    a page of its teams with member counts
 *   standings:<kind>:<scope>:g<gen>  a standings list ("standings" group)
 *   profile:<id>:g<gen>              a public profile (points change only at a
 *                                    settlement, which bumps "standings")
 *   company:<id>                     a company's branding
 * Writers delete what they changed after their commit, or bump the group.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api_int.h"

struct fill_ctx {
    struct api_req *req;
    api_fill_fn fill;
    uint64_t id;
};

static int fill_adapter(void *arg, char **value, size_t *len)
{
    struct fill_ctx *f = arg;
    int rc = f->fill(f->req, f->id, value);

    if (rc == 0)
        *len = strlen(*value);
    return rc;
}

int api_cached_text(struct api_req *req, const char *key, int near, uint32_t ttl_s,
                    api_fill_fn fill, uint64_t id, char **text)
{
    struct fill_ctx f = {.req = req, .fill = fill, .id = id};
    size_t len;
    int rc, stale;

    if (req->cache == NULL)
        return fill(req, id, text);
    /* What the cache keeps comes from the primary (router_stale_reads()). */
    stale = router_stale_reads(0);
    rc = cache_get(req->cache, key, near, ttl_s, fill_adapter, &f, text, &len);
    (void)router_stale_reads(stale);
    return rc;
}

static int match_fill(struct api_req *req, uint64_t id, char **text)
{
    struct sql_rows rows = {0};
    int rc =
        router_exec(req->router, ROUTER_GLOBAL, &rows,
                    "SELECT id, home, away, stage, kickoff, status, odds_home, "
                    "odds_draw, odds_away, odds_version, home_goals, away_goals FROM "
                    "%S.matches WHERE id = %u",
                    id);

    if (rc == 0 && rows.nrow == 0)
        rc = BC_ENOTFOUND;
    if (rc == 0) {
        json_t *m = api_match_row_json(&rows, 0);
        *text = m ? json_dumps(m, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
        json_decref(m);
        if (*text == NULL)
            rc = -ENOMEM;
    }
    sql_rows_free(&rows);
    return rc;
}

int api_match_cached(struct api_req *req, uint64_t id, int near, json_t **match)
{
    char key[64], *text = NULL;
    int rc;

    snprintf(key, sizeof(key), "bc:v1:match:%" PRIu64, id);
    rc = api_cached_text(req, key, near, 300, match_fill, id, &text);
    if (rc < 0)
        return rc;
    *match = json_loads(text, 0, NULL);
    free(text);
    return *match ? 0 : -ENOMEM;
}

int api_match_near(struct api_req *req, uint64_t id, json_t **match)
{
    char key[64], *text;
    size_t len;

    snprintf(key, sizeof(key), "bc:v1:match:%" PRIu64, id);
    if (req->cache == NULL || !cache_near(req->cache, key, &text, &len))
        return 0;
    *match = json_loadb(text, len, 0, NULL);
    free(text);
    return *match != NULL;
}

/*
 * The odds body, made from the match in memcached (or the database), never
 * from this process's near-cache: a near copy may predate an invalidation
 * that this fill's lease came after, and memcached would then keep old odds.
 */
static int odds_fill(struct api_req *req, uint64_t id, char **text)
{
    json_t *m = NULL, *odds;
    int rc = api_match_cached(req, id, 0, &m);

    if (rc < 0)
        return rc;
    odds = json_deep_copy(json_object_get(m, "odds"));
    json_decref(m);
    if (odds == NULL)
        return -ENOMEM;
    json_object_set_new(odds, "match_id", api_id_json(id));
    *text = json_dumps(odds, JSON_COMPACT | JSON_REAL_PRECISION(10));
    json_decref(odds);
    return *text ? 0 : -ENOMEM;
}

/*
 * The hottest read. Its near copy is not the cache's text but the server's
 * hot table (api_hot.c) of whole responses, which the event loops answer
 * from before they come here: this is its miss (or expiry), on a worker. The
 * body comes from memcached (or the database, under the lease), never from
 * the cache's near copies, and goes into the table fresh for CACHE_NEAR_MS
 * from the moment this read began: the near-cache's rule, so no server
 * shows odds older than before. The slot's generation is read first: a
 * write on this server that drops the entry meanwhile keeps this body out.
 */
int api_odds_cached(struct api_req *req, uint64_t id, char **text)
{
    struct api_hot *hot = api_server_hot(req->srv);
    struct MHD_Response *resp;
    char key[64], *body;
    uint64_t gen;
    int64_t t0;
    size_t len;
    int rc;

    snprintf(key, sizeof(key), "bc:v1:odds:%" PRIu64, id);
    if (req->cache == NULL)
        return api_cached_text(req, key, 0, 300, odds_fill, id, text);
    gen = api_hot_gen(hot, id);
    t0 = sql_now_ms();
    rc = api_cached_text(req, key, 0, 300, odds_fill, id, text);
    if (rc < 0)
        return rc;
    len = strlen(*text);
    body = malloc(len > 0 ? len : 1);
    if (body == NULL)
        return 0; /* answered all the same, not kept */
    memcpy(body, *text, len);
    resp = api_response_make("application/json", body, len);
    if (resp != NULL)
        (void)api_hot_put(hot, id, gen, t0 + CACHE_NEAR_MS, resp);
    return 0;
}

void api_match_changed(struct api_req *req, uint64_t id)
{
    char key[64];

    if (req->cache == NULL)
        return;
    snprintf(key, sizeof(key), "bc:v1:match:%" PRIu64, id);
    cache_delete(req->cache, key);
    snprintf(key, sizeof(key), "bc:v1:odds:%" PRIu64, id);
    cache_delete(req->cache, key);
    /*
     * After memcached's delete: a fill of this server that begins from now
     * on reads the new odds, and one that began before is kept out.
     */
    api_hot_drop(api_server_hot(req->srv), id);
    cache_bump(req->cache, "matches");
}

/*
 * The cache's keeper: a memcached server that missed deletes of this
 * server's while its breaker was open is flushed when the breaker closes,
 * whether or not a request of this server uses it then (cache_maintain()):
 * the other API servers may be reading it meanwhile.
 */
#define CACHE_KEEP_KEY                                                                 \
    (UINT64_MAX - 1) /* not a match id, the settler's or the purge's */
#define CACHE_KEEP_MS 250

static void keeper_main(struct api_job *job, uint64_t key, void *arg)
{
    struct cache *cache = arg;

    (void)key;
    while (!api_job_stopping(job)) {
        cache_maintain(cache);
        api_job_sleep(job, CACHE_KEEP_MS);
    }
}

int api_cache_keeper_start(struct api_jobs *jobs, struct cache *cache)
{
    return api_jobs_start(jobs, CACHE_KEEP_KEY, keeper_main, cache);
}
