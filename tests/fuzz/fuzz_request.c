/*
 * fuzz_request.c: libFuzzer harness of the API's request handling without a
 * socket or a database: the route table (api_route_find()), the token, the
 * access check, the parsing of JSON and image bodies, and each endpoint's
 * own checks of its body and query, up to its first database call.
 *
 * An input is a request as text:
 *
 *   METHOD /path?query
 *   Header: value
 *   ...
 *   (empty line)
 *   body bytes
 *
 * The path is %XX-decoded and the query cut into arguments as
 * libmicrohttpd does. "Authorization: Bearer @member" (@admin, @platform)
 * stands for a valid token of a member of company 5 (an admin of company 5,
 * the platform admin); the caller's role is then taken as known, since the
 * row it is read from lives in a database. Any other token goes through
 * api_token_check() as it is.
 *
 * The steps are the dispatcher's (api_http.c), in its order: 404/405, 415,
 * 413, 401, the access check, the body's parsing, the handler, and the
 * handler's second half after a password hash (done at once here). The router is
 * a cluster whose every host is down (fuzz_api_fake.c), so a handler that
 * gets past its checks answers 503. What must hold for every input: an
 * answer is given, its status is 2xx-4xx or 503 (never 500: with the hosts
 * down no input may reach the server's own faults), an error is the JSON
 * error shape {"error":{"code","message"}} (but /readyz's own), no header
 * value holds a control character, and nothing leaks or overflows
 * (ASan, UBSan).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api_int.h"
#include "tests/fuzz/fuzz.h"

#define MEMBER_ID 235539314929360897ULL
#define ADMIN_ID 235539314929360898ULL
#define PLATFORM_ID 235539314929360899ULL

static struct api_server *srv;

/* The callers "@name" stands for. */
static struct caller {
    const char *name;
    uint64_t user, company;
    int role;
    char token[256];
} callers[] = {
    {"@member", MEMBER_ID, 5, API_ROLE_MEMBER, ""},
    {"@admin", ADMIN_ID, 5, API_ROLE_COMPANY_ADMIN, ""},
    {"@platform", PLATFORM_ID, 1, API_ROLE_PLATFORM_ADMIN, ""},
};
#define NCALLER (sizeof(callers) / sizeof(callers[0]))

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;

    srv = fuzz_api_server();
    for (size_t i = 0; i < NCALLER; i++)
        if (api_token_make(srv, callers[i].user, callers[i].company, callers[i].role,
                           callers[i].token, sizeof(callers[i].token)) < 0)
            fuzz_fail("api_token_make failed");
    return 0;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * %XX in place, as libmicrohttpd unescapes ('+' stays). The server's own
 * callback (api_http.c) leaves a path that starts with '/' as sent.
 */
static void path_unescape(char *s)
{
    char *out = s;

    for (; *s != '\0'; s++) {
        if (*s == '%' && hex_value(s[1]) >= 0 && hex_value(s[2]) >= 0) {
            *out++ = (char)(hex_value(s[1]) * 16 + hex_value(s[2]));
            s += 2;
        } else {
            *out++ = *s;
        }
    }
    *out = '\0';
}

/* One parsed input; text is a NUL-terminated copy cut in place. */
struct input {
    char *text;
    const char *method;
    char *path;
    struct fuzz_conn conn;
    const char *body; /* ref into the input's bytes */
    size_t body_len;
};

/* Cuts line at '\n' (and a '\r' before it); returns the next line or NULL. */
static char *line_end(char *line)
{
    char *nl = strchr(line, '\n');

    if (nl == NULL)
        return NULL;
    *nl = '\0';
    if (nl > line && nl[-1] == '\r')
        nl[-1] = '\0';
    return nl + 1;
}

/* 0, or -1 when the input is no request (no request line). */
static int input_parse(const uint8_t *data, size_t size, struct input *in)
{
    char *line, *next, *sp, *q;

    memset(in, 0, sizeof(*in));
    in->text = malloc(size + 1);
    if (in->text == NULL)
        return -1;
    memcpy(in->text, data, size);
    in->text[size] = '\0';
    line = in->text;
    next = line_end(line);
    sp = strchr(line, ' ');
    if (sp == NULL)
        return -1;
    *sp = '\0';
    in->method = line;
    in->path = sp + 1;
    q = strchr(in->path, '?');
    if (q != NULL) {
        *q++ = '\0';
        fuzz_conn_query(&in->conn, q);
    }
    if (in->path[0] != '/')
        path_unescape(in->path);
    /* Headers up to an empty line; the rest of the input is the body. */
    while (next != NULL) {
        char *colon, *value;
        line = next;
        next = line_end(line);
        if (*line == '\0') {
            if (next != NULL) {
                in->body = (const char *)data + (next - in->text);
                in->body_len = size - (size_t)(next - in->text);
            }
            break;
        }
        colon = strchr(line, ':');
        if (colon == NULL || in->conn.nheader == FUZZ_MAX_PAIRS)
            continue;
        *colon = '\0';
        for (value = colon + 1; *value == ' '; value++)
            ;
        in->conn.header[in->conn.nheader].name = line;
        in->conn.header[in->conn.nheader].value = value;
        in->conn.nheader++;
    }
    return 0;
}

static const char *header(struct input *in, const char *name)
{
    for (int i = 0; i < in->conn.nheader; i++)
        if (strcasecmp(in->conn.header[i].name, name) == 0)
            return in->conn.header[i].value;
    return NULL;
}

static int is_json_type(const char *ct)
{
    size_t n = strlen("application/json");

    return ct != NULL && strncasecmp(ct, "application/json", n) == 0 &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* The token: 0 with req->auth set (and the role, for a stand-in), or -1. */
static int authenticate(struct api_req *req, struct input *in)
{
    const char *authz = header(in, "Authorization");

    if (authz == NULL || strncasecmp(authz, "Bearer ", 7) != 0)
        return -1;
    for (size_t i = 0; i < NCALLER; i++)
        if (strcmp(authz + 7, callers[i].name) == 0) {
            if (api_token_check(srv, callers[i].token, &req->auth) < 0)
                fuzz_fail("a token just made is refused");
            req->role = callers[i].role;
            req->role_known = 1;
            return 0;
        }
    return api_token_check(srv, authz + 7, &req->auth) < 0 ? -1 : 0;
}

/* The dispatcher's steps; returns with req answered or refused. */
static void serve(struct api_req *req, struct input *in, const struct api_route *route)
{
    const char *ct = header(in, "Content-Type");

    if (route->body == API_BODY_JSON && !is_json_type(ct) &&
        (ct != NULL || req->body_len > 0))
        return; /* 415 */
    if (req->body_len > route->body_max)
        return; /* 413 */
    if (route->auth && authenticate(req, in) < 0)
        return; /* 401 */
    if (api_check_access(req, route->access, req->param[0]) < 0)
        return;
    if (route->body == API_BODY_JSON && api_body_parse(req) < 0)
        return;
    if (route->body == API_BODY_IMAGE && api_body_image(req) < 0)
        return;
    route->handler(req);
    if (req->job != NULL) {
        /*
         * A password to hash or verify (api_req_hash): the server suspends
         * the request and queues the job; here it is done at once, with the
         * stubs' answer (a fixed hash; no password matches), and the
         * handler's second half answers.
         */
        struct api_pwhash_job *job = req->job;
        api_pwhash_release(api_server_pwhash(srv), req->client_ip, job->place);
        if (req->status == 0) {
            job->rc = job->op == API_PWHASH_VERIFY ? -EACCES : 0;
            if (job->op != API_PWHASH_VERIFY)
                snprintf(job->hash, sizeof(job->hash), "$argon2id$fuzz");
            req->then(req);
        }
        free(job);
        req->job = NULL;
    }
    if (req->status == 0)
        fuzz_fail("%s %s: the handler gave no answer", req->method, req->url);
}

/* What every answer must be. */
static void check_answer(struct api_req *req)
{
    json_t *v, *err;

    if (req->status == 0)
        return; /* refused by a step the dispatcher answers itself */
    if (req->status < 200 || req->status > 599 || req->status == 500)
        fuzz_fail("%s %s: status %d", req->method, req->url, req->status);
    /* A header value with a line break would split the response. */
    for (int i = 0; i < req->nheaders; i++)
        for (const char *p = req->headers[i].value; *p != '\0'; p++)
            if ((unsigned char)*p < 0x20 && *p != '\t')
                fuzz_fail("%s %s: header %s has a control character", req->method,
                          req->url, req->headers[i].name);
    if (req->resp_type == NULL || strcmp(req->resp_type, "application/json") != 0)
        return;
    v = json_loadb(req->resp, req->resp_len, JSON_DECODE_ANY, NULL);
    if (v == NULL)
        fuzz_fail("%s %s: %d answer is not JSON", req->method, req->url, req->status);
    err = json_object_get(v, "error");
    /* (GET /readyz's 503 is {"status":"not_ready","reason"}, docs/api.md.) */
    if (req->status >= 400 && strcmp(api_routes[req->route].name, "readyz") != 0 &&
        (!json_is_string(json_object_get(err, "code")) ||
         !json_is_string(json_object_get(err, "message"))))
        fuzz_fail("%s %s: %d answer is not the error shape", req->method, req->url,
                  req->status);
    json_decref(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct api_req req;
    struct api_match m;
    struct input in;

    if (input_parse(data, size, &in) < 0)
        goto out;
    memset(&req, 0, sizeof(req));
    req.srv = srv;
    req.router = api_server_router(srv);
    req.conn = (struct MHD_Connection *)(void *)&in.conn;
    req.method = in.method;
    req.url = in.path;
    req.found = api_route_find(in.method, in.path, &m);
    req.route = m.route;
    memcpy(req.param, m.param, sizeof(req.param));
    if (req.found == -EOPNOTSUPP && m.allow[0] == '\0')
        fuzz_fail("%s %s: 405 without an Allow list", in.method, in.path);
    if (req.found == 0) {
        if (m.route < 0 || m.route >= api_nroutes)
            fuzz_fail("%s %s: route %d", in.method, in.path, m.route);
        req.body = malloc(in.body_len + 1);
        if (req.body == NULL)
            goto out;
        if (in.body_len > 0)
            memcpy(req.body, in.body, in.body_len);
        req.body[in.body_len] = '\0';
        req.body_len = in.body_len;
        req.body_max = api_routes[m.route].body_max;
        fuzz_conn_set(&in.conn);
        serve(&req, &in, &api_routes[m.route]);
        fuzz_conn_set(NULL);
        check_answer(&req);
    }
    api_req_clear(&req);
out:
    free(in.text);
    return 0;
}
