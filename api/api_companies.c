/*
 * api_companies.c: companies, their branding and logo, and teams. All of it
 * lives in the global schema; team member counts are one scatter-gather per
 * page of teams, read through the cache.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "api/api_int.h"

#define COMPANY_COLS                                                                   \
    "c.id, c.name, c.slug, c.color_primary, c.color_secondary, c.join_code, "          \
    "EXISTS(SELECT 1 FROM %S.logos l WHERE l.company_id = c.id)"

static json_t *company_json(struct sql_rows *rows, uint32_t r, int with_code)
{
    char url[64];
    json_t *c;

    snprintf(url, sizeof(url), "/v1/companies/%s/logo", sql_cell(rows, r, 0));
    c = json_pack(
        "{s:o,s:s,s:s,s:{s:s,s:s},s:o}", "id",
        api_id_json(strtoull(sql_cell(rows, r, 0), NULL, 10)), "name",
        sql_cell(rows, r, 1), "slug", sql_cell(rows, r, 2), "colors", "primary",
        sql_cell(rows, r, 3), "secondary", sql_cell(rows, r, 4), "logo_url",
        strcmp(sql_cell(rows, r, 6), "1") == 0 ? json_string(url) : json_null());
    if (c != NULL && with_code)
        json_object_set_new(c, "join_code", json_string(sql_cell(rows, r, 5)));
    return c;
}

static int valid_color(const char *s)
{
    if (s == NULL || strlen(s) != 7 || s[0] != '#')
        return 0;
    for (int i = 1; i < 7; i++)
        if (!isxdigit((unsigned char)s[i]))
            return 0;
    return 1;
}

static int valid_slug(const char *s)
{
    size_t n = strlen(s);

    if (n < 2 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) ||
              s[i] == '-'))
            return 0;
    return 1;
}

/* Checks the optional colors object: 0, or -EINVAL after replying 400/422. */
static int colors_check(struct api_req *req, json_t *colors, const char **primary,
                        const char **secondary)
{
    const char *key;
    json_t *v;

    *primary = *secondary = NULL;
    if (colors == NULL)
        return 0;
    json_object_foreach(colors, key, v)
    {
        if (strcmp(key, "primary") != 0 && strcmp(key, "secondary") != 0) {
            api_error(req, 400, "unknown_field", "unknown field 'colors.%.32s'", key);
            return -EINVAL;
        }
        if (!json_is_string(v)) {
            api_error(req, 400, "invalid_field", "field 'colors.%s' must be a string",
                      key);
            return -EINVAL;
        }
        if (!valid_color(json_string_value(v))) {
            api_error(req, 422, "invalid_color", "colors.%s must be #rrggbb", key);
            return -EINVAL;
        }
        if (strcmp(key, "primary") == 0)
            *primary = json_string_value(v);
        else
            *secondary = json_string_value(v);
    }
    return 0;
}

static void company_changed(struct api_req *req, uint64_t id)
{
    char key[64];

    if (req->cache == NULL)
        return;
    snprintf(key, sizeof(key), "bc:v1:company:%" PRIu64, id);
    cache_delete(req->cache, key);
}

static void company_reply(struct api_req *req, int status, uint64_t id, int with_code)
{
    struct sql_rows rows = {0};
    int rc = router_exec(req->router, ROUTER_GLOBAL, &rows,
                         "SELECT " COMPANY_COLS " FROM %S.companies c WHERE c.id = %u "
                         "AND c.platform = 0",
                         id);

    if (rc < 0)
        api_db_error(req, rc);
    else if (rows.nrow == 0)
        api_error(req, 404, "not_found", "no such company");
    else
        api_reply_json(req, status, company_json(&rows, 0, with_code));
    sql_rows_free(&rows);
}

void api_h_company_create(struct api_req *req)
{
    static const struct api_field spec[] = {{"name", API_T_STR, 1, 0},
                                            {"slug", API_T_STR, 1, 0},
                                            {"colors", API_T_OBJ, 0, 0},
                                            {NULL, 0, 0, 0}};
    struct sql_rows rows = {0};
    const char *primary, *secondary;
    char code[11];
    json_t *body = req->json;
    int rc;

    if (api_body_check(req, spec) < 0)
        return;
    if (api_text_check(req, "invalid_name", "name", api_str(body, "name", ""), 100) < 0)
        return;
    if (!valid_slug(api_str(body, "slug", ""))) {
        api_error(req, 422, "invalid_slug", "slug must be 2 to 64 of a-z, 0-9 and -");
        return;
    }
    if (colors_check(req, json_object_get(body, "colors"), &primary, &secondary) < 0)
        return;
    api_join_code(code);
    rc = router_exec(
        req->router, ROUTER_GLOBAL, &rows,
        "INSERT INTO %S.companies (name, slug, color_primary, color_secondary, "
        "join_code) VALUES (%s, %s, COALESCE(%s, '#1d4ed8'), COALESCE(%s, "
        "'#f59e0b'), %s)",
        api_str(body, "name", ""), api_str(body, "slug", ""), primary, secondary, code);
    if (rc == BC_EDUPKEY)
        api_error(req, 409, "slug_taken", "a company with this slug exists");
    else if (rc < 0)
        api_db_error(req, rc);
    else
        company_reply(req, 201, rows.insert_id, 1);
    sql_rows_free(&rows);
}

/* The company with its join code, as cached branding. */
static int company_fill(struct api_req *req, uint64_t id, char **text)
{
    struct sql_rows rows = {0};
    int rc = router_exec(req->router, ROUTER_GLOBAL, &rows,
                         "SELECT " COMPANY_COLS " FROM %S.companies c WHERE c.id = %u "
                         "AND c.platform = 0",
                         id);

    if (rc == 0 && rows.nrow == 0)
        rc = BC_ENOTFOUND;
    if (rc == 0) {
        json_t *c = company_json(&rows, 0, 1);
        *text = c ? json_dumps(c, JSON_COMPACT) : NULL;
        json_decref(c);
        rc = *text ? 0 : -ENOMEM;
    }
    sql_rows_free(&rows);
    return rc;
}

void api_h_company_get(struct api_req *req)
{
    uint64_t id = req->param[0];
    char key[64], *text = NULL;
    json_t *c;
    int role, rc;

    /* The dispatcher checked membership; the role decides on the join code. */
    if (api_caller_role(req, &role) < 0)
        return;
    snprintf(key, sizeof(key), "bc:v1:company:%" PRIu64, id);
    rc = api_cached_text(req, key, 0, 300, company_fill, id, &text);
    if (rc == BC_ENOTFOUND) {
        api_error(req, 404, "not_found", "no such company");
        return;
    }
    if (rc < 0) {
        api_db_error(req, rc);
        return;
    }
    c = json_loads(text, 0, NULL);
    free(text);
    /* The join code is for the company's admins (and the platform's) only. */
    if (c != NULL && role == API_ROLE_MEMBER)
        json_object_del(c, "join_code");
    api_reply_json(req, 200, c);
}

void api_h_company_patch(struct api_req *req)
{
    static const struct api_field spec[] = {
        {"name", API_T_STR, 0, 0}, {"colors", API_T_OBJ, 0, 0}, {NULL, 0, 0, 0}};
    const char *primary, *secondary, *name;
    uint64_t id = req->param[0];
    json_t *body = req->json;
    int rc;

    if (api_body_check(req, spec) < 0)
        return;
    name = api_str(body, "name", NULL);
    if (name != NULL && api_text_check(req, "invalid_name", "name", name, 100) < 0)
        return;
    if (colors_check(req, json_object_get(body, "colors"), &primary, &secondary) < 0)
        return;
    rc = router_exec(
        req->router, ROUTER_GLOBAL, NULL,
        "UPDATE %S.companies SET name = COALESCE(%s, name), color_primary = "
        "COALESCE(%s, color_primary), color_secondary = COALESCE(%s, "
        "color_secondary) WHERE id = %u AND platform = 0",
        name, primary, secondary, id);
    if (rc < 0) {
        api_db_error(req, rc);
        return;
    }
    company_changed(req, id);
    company_reply(req, 200, id, 1);
}

void api_h_company_logo_put(struct api_req *req)
{
    char etag[17];
    int rc;

    api_image_etag(req->body, req->body_len, etag);
    rc = router_exec(
        req->router, ROUTER_GLOBAL, NULL,
        "INSERT INTO %S.logos (company_id, content_type, etag, data) SELECT id, "
        "%s, %s, %b FROM %S.companies WHERE id = %u ON DUPLICATE KEY UPDATE "
        "content_type = VALUES(content_type), etag = VALUES(etag), data = "
        "VALUES(data)",
        req->image_type, etag, req->body, req->body_len, req->param[0]);
    if (rc < 0) {
        api_db_error(req, rc);
        return;
    }
    company_changed(req, req->param[0]);
    api_reply_raw(req, 204, NULL, NULL, 0);
}

void api_h_company_logo_get(struct api_req *req)
{
    struct sql_rows rows = {0};
    int rc = router_exec(
        req->router, ROUTER_GLOBAL, &rows,
        "SELECT content_type, etag, data FROM %S.logos WHERE company_id = %u",
        req->param[0]);

    if (rc < 0)
        api_db_error(req, rc);
    else
        api_image_reply(req, &rows);
    sql_rows_free(&rows);
}

void api_h_team_create(struct api_req *req)
{
    static const struct api_field spec[] = {{"name", API_T_STR, 1, 0}, {NULL, 0, 0, 0}};
    struct sql_rows rows = {0};
    uint64_t company = req->param[0];
    json_t *body = req->json;
    int rc;

    if (api_body_check(req, spec) < 0)
        return;
    if (api_text_check(req, "invalid_name", "name", api_str(body, "name", ""), 100) < 0)
        return;
    rc = router_exec(
        req->router, ROUTER_GLOBAL, &rows,
        "INSERT INTO %S.teams (company_id, name) SELECT id, %s FROM %S.companies "
        "WHERE id = %u AND platform = 0",
        api_str(body, "name", ""), company);
    if (rc == BC_EDUPKEY)
        api_error(req, 409, "team_name_taken",
                  "the company has a team of this name (names compare without case "
                  "or accents)");
    else if (rc < 0)
        api_db_error(req, rc);
    else if (rows.affected == 0)
        api_error(req, 404, "not_found", "no such company");
    else {
        api_teams_changed(req, company);
        api_reply_json(req, 201,
                       json_pack("{s:o,s:o,s:s,s:i}", "id", api_id_json(rows.insert_id),
                                 "company_id", api_id_json(company), "name",
                                 api_str(body, "name", ""), "members", 0));
    }
    sql_rows_free(&rows);
}

/*
 * Team lists are pages of a company's teams by id, each with its member
 * count, which only the shards know (one scatter per page). Pages are read
 * through the cache under the company's team list version, a random value
 * in its own key: api_teams_changed() deletes that key, and the next reader
 * draws a new version, so every page of the old one is passed by at once.
 * Neither key is near-cached, so a member who joins a team and lists the
 * teams sees himself counted whichever server answers; the pages' TTL is a
 * backstop for a change nobody reported.
 */
#define TEAMS_TTL_S 60
#define TEAMS_VERSION_TTL_S 86400

static void teams_version_key(char *key, size_t size, uint64_t company)
{
    snprintf(key, size, "bc:v1:teams:%" PRIu64 ":v", company);
}

static int teams_version_fill(struct api_req *req, uint64_t company, char **text)
{
    uint64_t v;
    (void)req;
    (void)company;

    randombytes_buf(&v, sizeof(v));
    if (asprintf(text, "%016" PRIx64, v) < 0) {
        *text = NULL;
        return -ENOMEM;
    }
    return 0;
}

void api_teams_changed(struct api_req *req, uint64_t company_id)
{
    char key[64];

    if (req->cache == NULL)
        return;
    teams_version_key(key, sizeof(key), company_id);
    cache_delete(req->cache, key);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/*
 * One page of the company's teams after cursor, with their member counts,
 * as its response body. limit and cursor were checked by the handler.
 */
static int teams_fill(struct api_req *req, uint64_t company, char **text)
{
    struct sql_rows teams = {0}, counts = {0};
    uint64_t cursor, *ids = NULL;
    int64_t *members = NULL;
    json_t *items, *body;
    uint32_t n;
    int limit, rc;

    if (api_limit(req, &limit) < 0 || api_cursor(req, &cursor) < 0)
        return BC_EQUERY; /* checked before: cannot fail here */
    rc = router_exec(req->router, ROUTER_GLOBAL, &teams,
                     "SELECT id, name FROM %S.teams WHERE company_id = %u AND id > %u "
                     "ORDER BY id LIMIT %d",
                     company, cursor, (int64_t)limit + 1);
    if (rc < 0)
        return rc;
    n = teams.nrow < (uint32_t)limit ? teams.nrow : (uint32_t)limit;
    ids = calloc(n + 1, sizeof(*ids));
    members = calloc(n + 1, sizeof(*members));
    if (ids == NULL || members == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (uint32_t i = 0; i < n; i++)
        ids[i] = strtoull(sql_cell(&teams, i, 0), NULL, 10);
    /* The page's teams are all of the company's ids in [first, last]. */
    if (n > 0)
        rc = router_scatter(req->router, &counts,
                            "SELECT team_id, COUNT(*) FROM %S.users WHERE company_id = "
                            "%u AND team_id BETWEEN %u AND %u GROUP BY team_id",
                            company, ids[0], ids[n - 1]);
    if (rc < 0)
        goto out;
    for (uint32_t j = 0; j < counts.nrow; j++) {
        uint64_t team = strtoull(sql_cell(&counts, j, 0), NULL, 10);
        uint64_t *at = bsearch(&team, ids, n, sizeof(*ids), cmp_u64);
        if (at != NULL)
            members[at - ids] += strtoll(sql_cell(&counts, j, 1), NULL, 10);
    }
    items = json_array();
    for (uint32_t i = 0; i < n; i++)
        json_array_append_new(items,
                              json_pack("{s:o,s:o,s:s,s:I}", "id", api_id_json(ids[i]),
                                        "company_id", api_id_json(company), "name",
                                        sql_cell(&teams, i, 1), "members",
                                        (json_int_t)members[i]));
    body = json_pack("{s:o,s:o}", "items", items, "next_cursor",
                     api_cursor_json(n > 0 ? ids[n - 1] : 0, teams.nrow > n));
    *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    rc = *text ? 0 : -ENOMEM;
out:
    free(ids);
    free(members);
    sql_rows_free(&teams);
    sql_rows_free(&counts);
    return rc;
}

void api_h_team_list(struct api_req *req)
{
    char key[CACHE_KEY_MAX + 1], *version = NULL, *text = NULL;
    uint64_t company = req->param[0], cursor;
    int limit, rc;

    if (api_limit(req, &limit) < 0 || api_cursor(req, &cursor) < 0)
        return;
    teams_version_key(key, sizeof(key), company);
    rc = api_cached_text(req, key, 0, TEAMS_VERSION_TTL_S, teams_version_fill, company,
                         &version);
    if (rc == 0) {
        snprintf(key, sizeof(key), "bc:v1:teams:%" PRIu64 ":v%.16s:%" PRIx64 ":%d",
                 company, version, cursor, limit);
        rc = api_cached_text(req, key, 0, TEAMS_TTL_S, teams_fill, company, &text);
    }
    if (rc < 0)
        api_db_error(req, rc);
    else
        api_reply_raw(req, 200, "application/json", text, strlen(text));
    free(version);
    free(text);
}
