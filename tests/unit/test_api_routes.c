/*
 * test_api_routes.c: unit tests of the API's route table and its matcher
 * (every route, unknown paths, ids at their limits, 405 with Allow, the
 * table's form and its printed copy), and of the access check for callers
 * whose role is known. No database, no server.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/api_int.h"

/* ---- routes ---- */

/* A concrete path of route r: its ids are 101 and 202. */
static void route_path(int r, char *out, size_t size)
{
    size_t n = 0;
    int nid = 0;

    out[0] = '\0';
    for (const char *const *seg = api_routes[r].seg; *seg != NULL; seg++)
        n += (size_t)snprintf(out + n, size - n, "/%s",
                              *seg == api_seg_id ? (nid++ == 0 ? "101" : "202") : *seg);
}

static void test_routes_every_route_matches(void **state)
{
    struct api_match m;
    char path[128];
    (void)state;

    for (int r = 0; r < api_nroutes; r++) {
        int nid = 0;
        route_path(r, path, sizeof(path));
        for (const char *const *seg = api_routes[r].seg; *seg != NULL; seg++)
            nid += *seg == api_seg_id;
        if (api_route_find(api_routes[r].method, path, &m) != 0 || m.route != r)
            fail_msg("%s %s: route %d, want %d", api_routes[r].method, path, m.route,
                     r);
        assert_int_equal(m.param[0], nid > 0 ? 101 : 0);
        assert_int_equal(m.param[1], nid > 1 ? 202 : 0);
    }
}

static void test_routes_unknown_paths_404(void **state)
{
    static const char *const paths[] = {
        "",
        "/",
        "nope",
        "/nope",
        "/v1",
        "/v1/nope",
        "/v1/users",
        "/v2/me",
        "/v1/me/nope",
        "/v1/me/",
        "/v1/users/",
        "/v1//me",
        "//v1/me",
        "/healthz/",
        "/healthz/x",
        "/v1/matches/1/nope",
        "/v1/companies/1/teams/2",
        "/v1/companies/1/logo/x/y/z",
        "/v1/matches/1/odds/x",
        "/V1/me",
        "/v1/mee",
        "/v1/m",
        "/v1/me\x01",
        /* ids: digits only, 1..INT64_MAX */
        "/v1/users/abc",
        "/v1/users/-1",
        "/v1/users/0",
        "/v1/users/+1",
        "/v1/users/1x",
        "/v1/users/ 1",
        "/v1/users/0x10",
        "/v1/bets/1.5",
        "/v1/users/9223372036854775808",
        "/v1/users/12345678901234567890",
        "/v1/users/99999999999999999999999",
        "/v1/companies/%2F1/teams",
    };
    struct api_match m;
    (void)state;

    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        if (api_route_find("GET", paths[i], &m) != BC_ENOTFOUND)
            fail_msg("GET '%s' found a route", paths[i]);
        assert_int_equal(m.route, -1);
    }
}

static void test_routes_ids_at_the_limits(void **state)
{
    struct api_match m;
    (void)state;

    assert_int_equal(api_route_find("GET", "/v1/users/9223372036854775807", &m), 0);
    assert_int_equal(m.param[0], 9223372036854775807ULL);
    assert_int_equal(api_route_find("GET", "/v1/users/1", &m), 0);
    assert_int_equal(m.param[0], 1);
    assert_int_equal(api_route_find("GET", "/v1/users/0001/avatar", &m), 0);
    assert_int_equal(m.param[0], 1);
    assert_string_equal(api_routes[m.route].name, "avatar");
}

static void test_routes_wrong_method_405_with_allow(void **state)
{
    static const struct {
        const char *method, *path, *allow;
    } cases[] = {
        {"DELETE", "/v1/me", "GET, HEAD, PATCH"},
        {"PUT", "/v1/auth/login", "POST"},
        {"HEAD", "/v1/auth/login", "POST"}, /* HEAD only where GET is */
        {"GET", "/v1/auth/signup", "POST"},
        {"POST", "/healthz", "GET, HEAD"},
        {"DELETE", "/v1/matches", "POST, GET, HEAD"},
        {"PATCH", "/v1/companies/5/logo", "PUT, GET, HEAD"},
        {"DELETE", "/v1/matches/5/odds", "GET, HEAD, PUT"},
        {"get", "/v1/me", "GET, HEAD, PATCH"}, /* methods are case-sensitive */
    };
    struct api_match m;
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (api_route_find(cases[i].method, cases[i].path, &m) != -EOPNOTSUPP)
            fail_msg("%s %s: not a 405", cases[i].method, cases[i].path);
        assert_int_equal(m.route, -1);
        assert_string_equal(m.allow, cases[i].allow);
    }
    /* A bad id is no such resource, whatever the method. */
    assert_int_equal(api_route_find("DELETE", "/v1/matches/x/odds", &m), BC_ENOTFOUND);
}

/* HEAD finds the path's GET route (libmicrohttpd sends its answer without the body). */
static void test_routes_head_is_get(void **state)
{
    static const char *const paths[] = {"/healthz", "/v1/me", "/v1/matches/5",
                                        "/v1/matches/5/odds", "/v1/companies/5/logo"};
    struct api_match get, head;
    (void)state;

    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        assert_int_equal(api_route_find("GET", paths[i], &get), 0);
        assert_int_equal(api_route_find("HEAD", paths[i], &head), 0);
        assert_int_equal(head.route, get.route);
        assert_memory_equal(head.param, get.param, sizeof(get.param));
    }
}

/*
 * A target in absolute form (RFC 9112 3.2.2) is its path after the
 * authority; a server must take it. Anything else not starting with '/' is
 * no path.
 */
static void test_routes_absolute_form_is_its_path(void **state)
{
    static const char *const same[][2] = {
        {"http://api.example/v1/matches/5", "/v1/matches/5"},
        {"HTTPS://127.0.0.1:8080/healthz", "/healthz"},
        {"http://x", "/"},
        {"http://x/v1/x", "/v1/x"},
    };
    struct api_match a, b;
    (void)state;

    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        int ra = api_route_find("GET", same[i][0], &a);
        int rb = api_route_find("GET", same[i][1], &b);
        assert_int_equal(ra, rb);
        assert_int_equal(a.route, b.route);
        assert_memory_equal(a.param, b.param, sizeof(a.param));
    }
    assert_int_equal(api_route_find("GET", "http://x/healthz", &a), 0);
    assert_int_equal(api_route_find("GET", "ftp://x/healthz", &a), BC_ENOTFOUND);
    assert_int_equal(api_route_find("GET", "x/healthz", &a), BC_ENOTFOUND);
}

/* What the dispatcher relies on, and docs/openapi.yaml with it. */
static void test_routes_table_is_well_formed(void **state)
{
    (void)state;
    for (int r = 0; r < api_nroutes; r++) {
        const struct api_route *a = &api_routes[r];
        int nseg = 0, nid = 0;
        for (const char *const *seg = a->seg; *seg != NULL; seg++, nseg++)
            nid += *seg == api_seg_id;
        assert_true(nseg >= 1 && nseg <= API_ROUTE_SEGS);
        assert_true(nid <= API_MAX_PARAMS);
        assert_non_null(a->handler);
        assert_true(a->auth || a->access == API_ACCESS_ANY);
        /* The company of a company check is the path's first id. */
        if (a->access == API_ACCESS_COMPANY_MEMBER ||
            a->access == API_ACCESS_COMPANY_ADMIN)
            assert_true(nseg >= 3 && strcmp(a->seg[1], "companies") == 0 &&
                        a->seg[2] == api_seg_id);
        assert_int_equal(a->body_max,
                         a->body == API_BODY_IMAGE ? API_IMAGE_MAX : API_JSON_MAX);
        if (a->body != API_BODY_NONE)
            assert_true(strcmp(a->method, "POST") == 0 ||
                        strcmp(a->method, "PUT") == 0 ||
                        strcmp(a->method, "PATCH") == 0);
        for (int o = 0; o < r; o++) {
            assert_string_not_equal(a->name, api_routes[o].name);
            if (strcmp(a->method, api_routes[o].method) != 0)
                continue;
            /* The same method and path twice: the second could never match. */
            int same = 1;
            for (int i = 0; same && i <= API_ROUTE_SEGS; i++)
                same = a->seg[i] == api_routes[o].seg[i] ||
                       (a->seg[i] != NULL && api_routes[o].seg[i] != NULL &&
                        strcmp(a->seg[i], api_routes[o].seg[i]) == 0);
            if (same)
                fail_msg("routes %d and %d are the same", o, r);
        }
    }
}

/* `betcity-api --routes`, which tests/openapi compares with the spec. */
static void test_routes_print_is_pinned(void **state)
{
    static const char want[] = "GET /healthz\n"
                               "GET /readyz\n"
                               "GET /metrics\n"
                               "POST /v1/auth/signup\n"
                               "POST /v1/auth/login\n"
                               "GET /v1/me\n"
                               "PATCH /v1/me\n"
                               "PUT /v1/me/avatar\n"
                               "GET /v1/me/bets\n"
                               "GET /v1/users/{id}\n"
                               "GET /v1/users/{id}/avatar\n"
                               "POST /v1/companies\n"
                               "GET /v1/companies/{id}\n"
                               "PATCH /v1/companies/{id}\n"
                               "PUT /v1/companies/{id}/logo\n"
                               "GET /v1/companies/{id}/logo\n"
                               "POST /v1/companies/{id}/teams\n"
                               "GET /v1/companies/{id}/teams\n"
                               "POST /v1/companies/{id}/admins\n"
                               "POST /v1/matches\n"
                               "GET /v1/matches\n"
                               "GET /v1/matches/{id}\n"
                               "GET /v1/matches/{id}/odds\n"
                               "PUT /v1/matches/{id}/odds\n"
                               "POST /v1/matches/{id}/result\n"
                               "GET /v1/matches/{id}/settlement\n"
                               "POST /v1/bets\n"
                               "GET /v1/bets/{id}\n"
                               "GET /v1/standings/users\n"
                               "GET /v1/standings/teams\n"
                               "GET /v1/standings/companies\n";
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    (void)state;

    assert_non_null(f);
    api_print_routes(f);
    fclose(f);
    assert_string_equal(text, want);
    free(text);
}

/* ---- the access check, for callers whose role is known (no database) ---- */

/* Runs the check for a caller of company 5 with role; returns its status. */
static int access_as(int role, enum api_access access, uint64_t company, int *status)
{
    struct api_req req;
    int rc;

    memset(&req, 0, sizeof(req));
    req.auth.company_id = 5;
    req.role = role;
    req.role_known = 1;
    rc = api_check_access(&req, access, company);
    *status = req.status;
    free(req.resp);
    return rc;
}

static void test_access_checks(void **state)
{
    static const struct {
        int role;
        enum api_access access;
        uint64_t company;
        int rc, status;
    } cases[] = {
        {API_ROLE_MEMBER, API_ACCESS_ANY, 0, 0, 0},
        {API_ROLE_MEMBER, API_ACCESS_COMPANY_MEMBER, 5, 0, 0},
        {API_ROLE_MEMBER, API_ACCESS_COMPANY_MEMBER, 6, BC_ENOTFOUND, 404},
        {API_ROLE_MEMBER, API_ACCESS_COMPANY_ADMIN, 5, -EACCES, 403},
        {API_ROLE_MEMBER, API_ACCESS_COMPANY_ADMIN, 6, BC_ENOTFOUND, 404},
        {API_ROLE_MEMBER, API_ACCESS_PLATFORM_ADMIN, 0, -EACCES, 403},
        {API_ROLE_COMPANY_ADMIN, API_ACCESS_COMPANY_ADMIN, 5, 0, 0},
        {API_ROLE_COMPANY_ADMIN, API_ACCESS_COMPANY_ADMIN, 6, BC_ENOTFOUND, 404},
        {API_ROLE_COMPANY_ADMIN, API_ACCESS_COMPANY_MEMBER, 6, BC_ENOTFOUND, 404},
        {API_ROLE_COMPANY_ADMIN, API_ACCESS_PLATFORM_ADMIN, 0, -EACCES, 403},
        /*
         * The platform admin on a company's routes: the company is read
         * (one that does not exist is 404): test_companies.py, e2e.
         */
        {API_ROLE_PLATFORM_ADMIN, API_ACCESS_PLATFORM_ADMIN, 0, 0, 0},
    };
    struct api_req req;
    int status;
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = access_as(cases[i].role, cases[i].access, cases[i].company, &status);
        if (rc != cases[i].rc || status != cases[i].status)
            fail_msg("case %zu: got %d/%d want %d/%d", i, rc, status, cases[i].rc,
                     cases[i].status);
    }
    /* A member reaches his own company without his row being read (no router). */
    memset(&req, 0, sizeof(req));
    req.auth.company_id = 5;
    assert_int_equal(api_check_access(&req, API_ACCESS_COMPANY_MEMBER, 5), 0);
    assert_int_equal(api_check_access(&req, API_ACCESS_ANY, 0), 0);
    assert_int_equal(req.role_known, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes_every_route_matches),
        cmocka_unit_test(test_routes_unknown_paths_404),
        cmocka_unit_test(test_routes_ids_at_the_limits),
        cmocka_unit_test(test_routes_wrong_method_405_with_allow),
        cmocka_unit_test(test_routes_head_is_get),
        cmocka_unit_test(test_routes_absolute_form_is_its_path),
        cmocka_unit_test(test_routes_table_is_well_formed),
        cmocka_unit_test(test_routes_print_is_pinned),
        cmocka_unit_test(test_access_checks),
    };

    return cmocka_run_group_tests_name("api_routes", tests, NULL, NULL);
}
