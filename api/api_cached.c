/*
 * api_cached.c: the API's hot reads through the cache (cache/cache.h).
 *
 * Keys (all versioned "bc:v1:"):
 *   match:<id>                       the match with its odds (near-cached)
 *   odds:<id>                        the odds response body (near-cached)
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
 * The hottest read: the odds body itself is a (near-)cached key, so a hit is
 * a copy of ready bytes, with no JSON parsed or printed.
 */
int api_odds_cached(struct api_req *req, uint64_t id, char **text)
{
    char key[64];

    snprintf(key, sizeof(key), "bc:v1:odds:%" PRIu64, id);
    return api_cached_text(req, key, 1, 300, odds_fill, id, text);
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
    cache_bump(req->cache, "matches");
}
