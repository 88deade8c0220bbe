/*
 * api_standings_read.c: the standings endpoints. Each answers the list the
 * last recomputation stored (api_standings.c) through the cache, keyed by
 * the "standings" generation: one primary-key read of the global schema a
 * cold key, however many readers wait. A list is stored deflated
 * (api_standings_store.c), or as plain text in body by the servers before
 * that change: both are read.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "api/api_int.h"

/* Largest list inflated: the plain column's own limit (MEDIUMTEXT). */
#define LIST_MAX (16u * 1024 * 1024)

/*
 * The deflated list z (n bytes) inflated into a new NUL-terminated string:
 * 0, -ENOMEM, or -EBADMSG when it is not a zlib stream of at most LIST_MAX
 * bytes (a damaged row).
 */
static int inflate_list(const char *z, unsigned long n, char **out)
{
    z_stream zs = {.next_in = (Bytef *)z, .avail_in = (uInt)n};
    size_t cap = n * 8 + 64, len = 0;
    char *buf = malloc(cap);
    int zrc = Z_OK;

    *out = NULL;
    if (buf == NULL)
        return -ENOMEM;
    if (inflateInit(&zs) != Z_OK) {
        free(buf);
        return -ENOMEM;
    }
    while (zrc == Z_OK) {
        if (len + 1 >= cap) {
            char *b = cap >= LIST_MAX ? NULL : realloc(buf, cap * 2);
            if (b == NULL) {
                zrc = cap >= LIST_MAX ? Z_DATA_ERROR : Z_MEM_ERROR;
                break;
            }
            buf = b;
            cap *= 2;
        }
        zs.next_out = (Bytef *)buf + len;
        zs.avail_out = (uInt)(cap - 1 - len);
        zrc = inflate(&zs, Z_NO_FLUSH);
        len = cap - 1 - zs.avail_out;
        if (zrc == Z_BUF_ERROR && zs.avail_out > 0)
            zrc = Z_DATA_ERROR; /* the input ended before the stream did */
        else if (zrc == Z_BUF_ERROR)
            zrc = Z_OK;
    }
    inflateEnd(&zs);
    if (zrc != Z_STREAM_END || zs.avail_in != 0) {
        free(buf);
        return zrc == Z_MEM_ERROR ? -ENOMEM : -EBADMSG;
    }
    buf[len] = '\0';
    *out = buf;
    return 0;
}

/* The stored list as its response body; id = scope, kind from the key. */
static int standings_fill(struct api_req *req, const char *kind, uint64_t scope,
                          char **text)
{
    struct sql_rows rows = {0};
    json_t *body, *items;
    char *plain = NULL;
    int rc;

    rc = router_exec(req->router, ROUTER_GLOBAL, &rows,
                     "SELECT generation, computed_at, body, body_deflate FROM "
                     "%S.standings WHERE kind = %s AND scope = %u",
                     kind, scope);
    if (rc < 0)
        return rc;
    if (rows.nrow > 0 && sql_cell(&rows, 0, 3) != NULL &&
        (rc = inflate_list(sql_cell(&rows, 0, 3), rows.len[3], &plain)) < 0) {
        api_log("standings: the stored list %s %" PRIu64 " does not inflate (%s)", kind,
                scope, rc == -ENOMEM ? "out of memory" : "not a zlib stream of a list");
        sql_rows_free(&rows);
        return rc;
    }
    if (rows.nrow == 0) {
        body = json_pack("{s:[],s:i,s:n}", "items", "generation", 0, "computed_at");
    } else {
        items = json_loads(plain ? plain : sql_cell(&rows, 0, 2), 0, NULL);
        body = json_pack("{s:o,s:I,s:o}", "items", items ? items : json_array(),
                         "generation",
                         (json_int_t)strtoll(sql_cell(&rows, 0, 0), NULL, 10),
                         "computed_at", api_time_json(sql_cell(&rows, 0, 1)));
    }
    free(plain);
    sql_rows_free(&rows);
    /* 15 digits: the averages as stored (api_standings.c, store()). */
    *text = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(body);
    return *text ? 0 : -ENOMEM;
}

static int fill_users(struct api_req *req, uint64_t scope, char **text)
{
    return standings_fill(req, "users", scope, text);
}

static int fill_teams(struct api_req *req, uint64_t scope, char **text)
{
    return standings_fill(req, "teams", scope, text);
}

static int fill_companies(struct api_req *req, uint64_t scope, char **text)
{
    return standings_fill(req, "companies", scope, text);
}

/*
 * Standings through the cache, keyed by the "standings" generation that each
 * recomputation bumps: a cold key costs one read however many readers wait.
 * The generation itself is read from memcached each time, not from the
 * near-cache: a settlement's standings show on every server as soon as its
 * job is done, not up to CACHE_NEAR_MS later on the servers that did not
 * run it (one memcached get a request). "standings2": the lists as servers
 * that read deflated rows have them; a server from before that change, in
 * a rolling upgrade, reads such a row as an empty list, and caches it
 * under its own key, not this one.
 */
static void standings_reply(struct api_req *req, const char *kind, uint64_t scope,
                            api_fill_fn fill)
{
    char key[128], *text = NULL;
    uint64_t gen = req->cache ? cache_generation(req->cache, "standings", 0) : 0;
    int rc;

    snprintf(key, sizeof(key), "bc:v1:standings2:%s:%" PRIu64 ":g%" PRIu64, kind, scope,
             gen);
    rc = api_cached_text(req, key, 1, 3600, fill, scope, &text);
    if (rc < 0)
        api_db_error(req, rc);
    else
        api_reply_raw(req, 200, "application/json", text, strlen(text));
    free(text);
}

/*
 * ?company=ID (0 when absent and not required), checked for membership: 0,
 * or after replying -EINVAL (400: absent but required, or not an id) or what
 * the access check failed with (404 for a company the caller cannot see).
 */
static int company_param(struct api_req *req, uint64_t *company, int required)
{
    const char *s;

    *company = 0;
    if (api_query(req, "company", &s) < 0)
        return -EINVAL;
    if (s == NULL) {
        if (!required)
            return 0;
        api_error(req, 400, "invalid_parameter", "company=ID is required");
        return -EINVAL;
    }
    if (api_parse_id(s, company) < 0) {
        api_error(req, 400, "invalid_parameter",
                  "company must be an id (digits, from 1 to 2^63 - 1)");
        return -EINVAL;
    }
    return api_check_access(req, API_ACCESS_COMPANY_MEMBER, *company);
}

void api_h_standings_users(struct api_req *req)
{
    uint64_t company;

    if (company_param(req, &company, 0) < 0)
        return;
    standings_reply(req, "users", company, fill_users);
}

void api_h_standings_teams(struct api_req *req)
{
    uint64_t company;

    if (company_param(req, &company, 1) < 0)
        return;
    standings_reply(req, "teams", company, fill_teams);
}

void api_h_standings_companies(struct api_req *req)
{
    standings_reply(req, "companies", 0, fill_companies);
}
