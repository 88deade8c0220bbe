/*
 * api_routes.c: the route table and its matcher.
 *
 * Every endpoint of docs/api.md declares here what the dispatcher answers
 * for it before its handler runs: whether it needs a token, who may call it,
 * and what body it takes up to how many bytes. Paths are written already
 * split into segments, so matching a request compares the URL's segments
 * with constant strings in place: nothing is formatted, split or copied per
 * request. `betcity-api --routes` prints this table, which tests/openapi
 * compares with docs/openapi.yaml.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "api/api_int.h"

const char api_seg_id[] = "{id}";

/* Short names, for one route per line. */
#define ID api_seg_id
#define OPEN 0  /* no token */
#define TOKEN 1 /* a valid bearer token */
#define ANYONE API_ACCESS_ANY
#define CO_MEMBER API_ACCESS_COMPANY_MEMBER /* of the path's company */
#define CO_ADMIN API_ACCESS_COMPANY_ADMIN   /* of the path's company */
#define PLATFORM API_ACCESS_PLATFORM_ADMIN
/* A stray body on a route that takes none is read up to the JSON limit. */
#define NO_BODY API_BODY_NONE, API_JSON_MAX
#define JSON_BODY API_BODY_JSON, API_JSON_MAX
#define IMAGE_BODY API_BODY_IMAGE, API_IMAGE_MAX
/*
 * Where a handler reads (enum api_reads): the primaries, or a replica where a
 * slightly stale read is fine (docs/architecture.md, "Replicas"), both on a
 * worker; nothing at all, on the event loop; first the hot table of
 * prebuilt responses, on the event loop, then the primaries on a worker; or
 * one short read of the primaries started on the event loop itself (else on
 * a worker).
 */
#define STALE API_READS_STALE
#define PRIMARY API_READS_PRIMARY
#define NO_IO API_READS_NONE
#define HOT API_READS_HOT
#define LOOP API_READS_LOOP

/*
 * method, path, handler, token, access, body and its limit, metrics label,
 * what it reads (where it runs)
 */
const struct api_route api_routes[] = {
    {"GET", {"healthz"}, api_h_healthz, OPEN, ANYONE, NO_BODY, "healthz", NO_IO},
    {"GET", {"readyz"}, api_h_readyz, OPEN, ANYONE, NO_BODY, "readyz", PRIMARY},
    {"GET", {"metrics"}, api_h_metrics, OPEN, ANYONE, NO_BODY, "metrics", NO_IO},
    {"POST",
     {"v1", "auth", "signup"},
     api_h_signup,
     OPEN,
     ANYONE,
     JSON_BODY,
     "signup",
     PRIMARY},
    {"POST",
     {"v1", "auth", "login"},
     api_h_login,
     OPEN,
     ANYONE,
     JSON_BODY,
     "login",
     PRIMARY},
    {"GET", {"v1", "me"}, api_h_me, TOKEN, ANYONE, NO_BODY, "me", LOOP},
    {"PATCH",
     {"v1", "me"},
     api_h_me_patch,
     TOKEN,
     ANYONE,
     JSON_BODY,
     "me_patch",
     PRIMARY},
    {"PUT",
     {"v1", "me", "avatar"},
     api_h_me_avatar_put,
     TOKEN,
     ANYONE,
     IMAGE_BODY,
     "avatar_put",
     PRIMARY},
    {"GET",
     {"v1", "me", "bets"},
     api_h_my_bets,
     TOKEN,
     ANYONE,
     NO_BODY,
     "my_bets",
     STALE},
    /* A profile's access depends on its user's company: the handler checks it. */
    {"GET", {"v1", "users", ID}, api_h_user_get, TOKEN, ANYONE, NO_BODY, "user", STALE},
    {"GET",
     {"v1", "users", ID, "avatar"},
     api_h_user_avatar_get,
     OPEN,
     ANYONE,
     NO_BODY,
     "avatar",
     PRIMARY},
    {"POST",
     {"v1", "companies"},
     api_h_company_create,
     TOKEN,
     PLATFORM,
     JSON_BODY,
     "company_create",
     PRIMARY},
    {"GET",
     {"v1", "companies", ID},
     api_h_company_get,
     TOKEN,
     CO_MEMBER,
     NO_BODY,
     "company",
     STALE},
    {"PATCH",
     {"v1", "companies", ID},
     api_h_company_patch,
     TOKEN,
     CO_ADMIN,
     JSON_BODY,
     "company_patch",
     PRIMARY},
    {"PUT",
     {"v1", "companies", ID, "logo"},
     api_h_company_logo_put,
     TOKEN,
     CO_ADMIN,
     IMAGE_BODY,
     "logo_put",
     PRIMARY},
    {"GET",
     {"v1", "companies", ID, "logo"},
     api_h_company_logo_get,
     OPEN,
     ANYONE,
     NO_BODY,
     "logo",
     PRIMARY},
    {"POST",
     {"v1", "companies", ID, "teams"},
     api_h_team_create,
     TOKEN,
     CO_ADMIN,
     JSON_BODY,
     "team_create",
     PRIMARY},
    {"GET",
     {"v1", "companies", ID, "teams"},
     api_h_team_list,
     TOKEN,
     CO_MEMBER,
     NO_BODY,
     "teams",
     STALE},
    {"POST",
     {"v1", "companies", ID, "admins"},
     api_h_admin_add,
     TOKEN,
     CO_ADMIN,
     JSON_BODY,
     "admin_add",
     PRIMARY},
    {"POST",
     {"v1", "matches"},
     api_h_match_create,
     TOKEN,
     PLATFORM,
     JSON_BODY,
     "match_create",
     PRIMARY},
    {"GET",
     {"v1", "matches"},
     api_h_match_list,
     TOKEN,
     ANYONE,
     NO_BODY,
     "matches",
     STALE},
    {"GET",
     {"v1", "matches", ID},
     api_h_match_get,
     TOKEN,
     ANYONE,
     NO_BODY,
     "match",
     STALE},
    /* The hottest read: answered on the loop from prebuilt responses (api_hot.c). */
    {"GET",
     {"v1", "matches", ID, "odds"},
     api_h_odds_get,
     TOKEN,
     ANYONE,
     NO_BODY,
     "odds",
     HOT},
    {"PUT",
     {"v1", "matches", ID, "odds"},
     api_h_odds_put,
     TOKEN,
     PLATFORM,
     JSON_BODY,
     "odds_put",
     PRIMARY},
    {"POST",
     {"v1", "matches", ID, "result"},
     api_h_result_post,
     TOKEN,
     PLATFORM,
     JSON_BODY,
     "result",
     PRIMARY},
    {"GET",
     {"v1", "matches", ID, "settlement"},
     api_h_settlement_get,
     TOKEN,
     PLATFORM,
     NO_BODY,
     "settlement",
     PRIMARY},
    {"POST",
     {"v1", "bets"},
     api_h_bet_create,
     TOKEN,
     ANYONE,
     JSON_BODY,
     "bet_create",
     LOOP},
    {"GET", {"v1", "bets", ID}, api_h_bet_get, TOKEN, ANYONE, NO_BODY, "bet", STALE},
    /* ?company= is checked by the handlers (through api_check_access). */
    {"GET",
     {"v1", "standings", "users"},
     api_h_standings_users,
     TOKEN,
     ANYONE,
     NO_BODY,
     "standings_users",
     STALE},
    {"GET",
     {"v1", "standings", "teams"},
     api_h_standings_teams,
     TOKEN,
     ANYONE,
     NO_BODY,
     "standings_teams",
     STALE},
    {"GET",
     {"v1", "standings", "companies"},
     api_h_standings_companies,
     TOKEN,
     ANYONE,
     NO_BODY,
     "standings_companies",
     STALE},
};
const int api_nroutes = (int)(sizeof(api_routes) / sizeof(api_routes[0]));

#undef ID
#undef STALE
#undef PRIMARY
#undef NO_IO
#undef HOT
#undef OPEN
#undef TOKEN
#undef ANYONE
#undef CO_MEMBER
#undef CO_ADMIN
#undef PLATFORM
#undef NO_BODY
#undef JSON_BODY
#undef IMAGE_BODY

/* One segment of the request's path, in place in the URL. */
struct seg {
    const char *p;
    size_t n;
};

/*
 * Cuts "/a/b/c" into its segments (empty ones included); returns their
 * count, or -EINVAL for what no route has: no leading slash, a trailing
 * slash, more segments than any route.
 */
static int path_split(const char *path, struct seg seg[API_ROUTE_SEGS])
{
    int n = 0;

    if (path[0] != '/')
        return -EINVAL;
    if (path[1] == '\0')
        return 0;
    for (const char *p = path + 1;;) {
        const char *slash = strchr(p, '/');
        if (n == API_ROUTE_SEGS)
            return -EINVAL;
        seg[n].p = p;
        seg[n].n = slash != NULL ? (size_t)(slash - p) : strlen(p);
        n++;
        if (slash == NULL)
            return n;
        p = slash + 1;
        if (*p == '\0')
            return -EINVAL;
    }
}

/* Whether route r has exactly these segments; its ids go to param. */
static int route_matches(const struct api_route *r, const struct seg *seg, int nseg,
                         uint64_t param[API_MAX_PARAMS])
{
    int i, np = 0;

    for (i = 0; i < nseg; i++) {
        const char *want = r->seg[i];
        if (want == NULL)
            return 0;
        if (want == api_seg_id) {
            if (np == API_MAX_PARAMS ||
                api_parse_id_n(seg[i].p, seg[i].n, &param[np]) < 0)
                return 0;
            np++;
        } else if (strncmp(want, seg[i].p, seg[i].n) != 0 || want[seg[i].n] != '\0') {
            return 0;
        }
    }
    return r->seg[i] == NULL;
}

/*
 * The path of a request target in absolute form ("http://host/v1/me", RFC
 * 9112 3.2.2: what a request to a proxy carries, which a server must take
 * too): what follows the authority ("/" when nothing does). Any other
 * target is its own path.
 */
static const char *origin_path(const char *target)
{
    const char *p;

    if (strncasecmp(target, "http://", 7) == 0)
        p = target + 7;
    else if (strncasecmp(target, "https://", 8) == 0)
        p = target + 8;
    else
        return target;
    p += strcspn(p, "/");
    return *p == '/' ? p : "/";
}

int api_route_find(const char *method, const char *path, struct api_match *m)
{
    struct seg seg[API_ROUTE_SEGS];
    uint64_t param[API_MAX_PARAMS] = {0};
    int nseg = path_split(origin_path(path), seg), found_path = 0;
    size_t len = 0;

    memset(m, 0, sizeof(*m));
    m->route = -1;
    if (nseg < 0)
        return BC_ENOTFOUND;
    /* HEAD is GET without the body (RFC 9110 9.3.2; libmicrohttpd drops it). */
    if (strcmp(method, "HEAD") == 0)
        method = "GET";
    for (int r = 0; r < api_nroutes; r++) {
        const char *name = api_routes[r].method;

        if (!route_matches(&api_routes[r], seg, nseg, param))
            continue;
        if (strcmp(name, method) == 0) {
            m->route = r;
            memcpy(m->param, param, sizeof(param));
            m->allow[0] = '\0';
            return 0;
        }
        /* The 405's Allow header: the path's methods in table order, HEAD after GET. */
        found_path = 1;
        if (len + strlen(name) + 9 < sizeof(m->allow))
            len += (size_t)snprintf(m->allow + len, sizeof(m->allow) - len, "%s%s%s",
                                    len > 0 ? ", " : "", name,
                                    strcmp(name, "GET") == 0 ? ", HEAD" : "");
    }
    return found_path ? -EOPNOTSUPP : BC_ENOTFOUND;
}

void api_print_routes(FILE *out)
{
    for (int r = 0; r < api_nroutes; r++) {
        int nid = 0;
        fprintf(out, "%s ", api_routes[r].method);
        for (const char *const *s = api_routes[r].seg; *s != NULL; s++)
            fprintf(out, "/%s", *s != api_seg_id ? *s : nid++ == 0 ? "{id}" : "{id2}");
        fputc('\n', out);
    }
}
