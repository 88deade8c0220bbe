/*
 * api_dispatch.c: what the route table declares, answered before a handler
 * runs, and the handler's run itself.
 *
 * On the event loop, as soon as the headers are in: the client's address,
 * no route (404/405), the body's media type (415), a Content-Length over the
 * route's limit (413) and the token (401) (api_precheck()); once the body is
 * in, the same again with what the body showed (api_dispatch()). Then,
 * where the route's reads say (a worker, or the loop for routes without
 * I/O): the caller's access, the body's parsing and the handler, with the
 * replica flag and the read-your-writes mark around it (api_dispatch_rest()).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "api/api_int.h"

static int is_json_type(const char *ct)
{
    size_t n = strlen("application/json");

    return ct != NULL && strncasecmp(ct, "application/json", n) == 0 &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/*
 * The bearer token of the Authorization header into req->auth; 0 or
 * negative. The same token as the last one verified on the connection
 * costs a compare and its expiry (a keep-alive client sends its token with
 * every request, and each request is checked twice: headers, then body).
 * The keys never change while the server runs, so what a token said stays
 * true until it expires.
 */
static int auth_check(struct api_req *req)
{
    const char *authz =
        MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Authorization");
    struct api_token_memo *memo = req->memo;
    char trimmed[API_TOKEN_MEMO_MAX];
    const char *token;
    size_t len;
    int rc;

    if (authz == NULL || strncasecmp(authz, "Bearer ", 7) != 0)
        return -EACCES;
    /* White space around the token is the header's, not the token's. */
    token = authz + 7;
    token += strspn(token, " \t");
    len = strlen(token);
    while (len > 0 && (token[len - 1] == ' ' || token[len - 1] == '\t'))
        len--;
    if (token[len] != '\0') {
        if (len >= sizeof(trimmed))
            return -EACCES;
        memcpy(trimmed, token, len);
        trimmed[len] = '\0';
        token = trimmed;
    }
    if (memo != NULL && memo->len == len && memcmp(memo->token, token, len) == 0) {
        if (memo->auth.expires <= (int64_t)time(NULL))
            return -ETIMEDOUT;
        req->auth = memo->auth;
        return 0;
    }
    rc = api_token_check(req->srv, token, &req->auth);
    api_server_count_verify(req->srv);
    if (memo != NULL) {
        memo->len = 0;
        if (rc == 0 && len > 0 && len <= sizeof(memo->token)) {
            memcpy(memo->token, token, len);
            memo->auth = req->auth;
            memo->len = len;
        }
    }
    return rc;
}

/*
 * What one walk over the headers finds: the client's address, the framing,
 * the number of Authorization headers.
 */
struct xff {
    const char *last; /* the last X-Forwarded-For header's value */
    unsigned lengths; /* Content-Length headers */
    unsigned chunked; /* Transfer-Encoding headers */
    int coded;        /* one of them is not "chunked" alone (gzip, ...) */
    unsigned authz;   /* Authorization headers */
};

static enum MHD_Result xff_each(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
    struct xff *x = cls;
    (void)kind;

    if (strcasecmp(key, "X-Forwarded-For") == 0 && value != NULL)
        x->last = value;
    else if (strcasecmp(key, "Content-Length") == 0)
        x->lengths++;
    else if (strcasecmp(key, "Transfer-Encoding") == 0) {
        x->chunked++;
        x->coded |= value == NULL || strcasecmp(value, "chunked") != 0;
    } else if (strcasecmp(key, "Authorization") == 0)
        x->authz++;
    return MHD_YES;
}

/*
 * Who the client is: the TCP peer, or, when the peer is a trusted proxy,
 * the last hop of X-Forwarded-For (what that proxy saw; the hops before it
 * are the client's word). An unreadable last hop leaves the peer.
 */
void api_client_find(struct api_req *req)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    struct xff x = {.last = NULL};
    struct in_addr a;

    if (info != NULL && info->client_addr->sa_family == AF_INET)
        req->peer_ip = ((const struct sockaddr_in *)info->client_addr)->sin_addr.s_addr;
    req->client_ip = req->peer_ip;
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, xff_each, &x);
    req->forwarded = x.last != NULL;
    req->bad_framing =
        x.lengths > 1 || (x.lengths > 0 && x.chunked > 0) || x.chunked > 1 || x.coded;
    req->two_authz = x.authz > 1;
    if (x.last != NULL &&
        api_net_match(&api_server_conf(req->srv)->limits.trusted, req->peer_ip)) {
        const char *hop = strrchr(x.last, ',');
        char text[64];
        size_t n;

        hop = hop != NULL ? hop + 1 : x.last;
        while (*hop == ' ' || *hop == '\t')
            hop++;
        n = strcspn(hop, " \t");
        if (n < sizeof(text)) {
            memcpy(text, hop, n);
            text[n] = '\0';
            if (inet_pton(AF_INET, text, &a) == 1)
                req->client_ip = a.s_addr;
        }
    }
    a.s_addr = req->client_ip;
    inet_ntop(AF_INET, &a, req->client, sizeof(req->client));
}

/*
 * The route's checks of the body's media type (415), its size (413) and the
 * token (401), in that order, shared by the check at the headers and the
 * dispatcher. body: a body is coming or came. 1 when it answered, else 0.
 */
static int route_check(struct api_req *req, const struct api_route *route,
                       const char *ct, int body, int too_large)
{
    if (route->body == API_BODY_JSON && !is_json_type(ct) && (ct != NULL || body)) {
        api_error(req, 415, "unsupported_media_type",
                  "send the body as Content-Type: application/json");
        return 1;
    }
    if (too_large) {
        api_error(req, 413, "body_too_large", "the body is larger than %zu bytes",
                  req->body_max);
        return 1;
    }
    if (route->auth && auth_check(req) < 0) {
        api_add_header(req, "WWW-Authenticate", "Bearer");
        api_error(req, 401, "unauthorized", "a valid bearer token is required");
        return 1;
    }
    return 0;
}

/*
 * What the headers alone decide, answered before any body is read: a body
 * whose end is unclear (400), then in the dispatcher's order: no route
 * (404, 405), the body's media type (415), a Content-Length over the
 * route's limit (413), the token (401). 1 when it answered, 0 when the
 * request goes on.
 */
int api_precheck(struct api_req *req)
{
    const struct api_route *route;
    const char *ct, *cl, *te;
    unsigned long long len = 0;
    char *end;

    ct = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Content-Type");
    cl = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Content-Length");
    te = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Transfer-Encoding");
    if (cl != NULL) {
        errno = 0;
        len = strtoull(cl, &end, 10);
        if (errno != 0 || end == cl)
            len = ULLONG_MAX;
    }
    req->has_body = len > 0 || te != NULL;
    /*
     * Where the body ends is not clear (RFC 9112 6.3): libmicrohttpd would
     * take the first Content-Length, or the chunks, and read what follows as
     * the next request, which another reader of the same bytes (a proxy)
     * would cut elsewhere. A transfer coding other than chunked alone
     * (gzip, ...) it does not decode, and would wait for a body it cannot
     * delimit. HAProxy refuses or repairs such requests; sent straight to a
     * server they get 400 and the connection is closed.
     */
    if (req->bad_framing) {
        api_add_header(req, "Connection", "close");
        api_error(req, 400, "malformed_request",
                  "give one Content-Length, or Transfer-Encoding: chunked alone");
        return 1;
    }
    /* Whose request it is must not depend on which of two tokens is read. */
    if (req->two_authz) {
        api_error(req, 400, "malformed_request", "give one Authorization header");
        return 1;
    }
    if (req->found < 0) {
        (void)api_dispatch(req);
        return 1;
    }
    route = &api_routes[req->route];
    return route_check(req, route, ct, req->has_body, len > req->body_max);
}

/* The read-your-writes flag of a user (cache_mark). */
static void rw_key(char *key, size_t size, uint64_t user)
{
    snprintf(key, size, "bc:v1:rw:%" PRIu64, user);
}

/* Whether a replica may answer a stale-ok read (a server without a router: yes). */
static int replicas_possible(struct api_req *req)
{
    struct router *r = api_server_router(req->srv);

    return r == NULL || router_replicas_possible(r);
}

/*
 * Whether a replica may answer the request's reads: its route allows it,
 * and the caller did not write within rw_window_s (memcached's flag says
 * not; no cache, or one that cannot tell, means the primary). Where no
 * replica can answer (router_replicas_possible()), there is no flag to ask.
 */
static int stale_ok(struct api_req *req, const struct api_route *route)
{
    char key[64];

    if (route->reads != API_READS_STALE)
        return 0;
    if (!route->auth || req->auth.user_id == 0 || !replicas_possible(req))
        return 1;
    if (req->cache == NULL)
        return 0;
    rw_key(key, sizeof(key), req->auth.user_id);
    return cache_marked(req->cache, key) == 0;
}

int api_rw_mark(struct api_req *req, char *key, size_t size, uint32_t *ttl_s)
{
    const struct api_route *route = &api_routes[req->route];

    if (!route->auth || req->auth.user_id == 0 || req->cache == NULL ||
        strcmp(route->method, "GET") == 0 || !replicas_possible(req))
        return 0;
    rw_key(key, size, req->auth.user_id);
    *ttl_s = api_server_conf(req->srv)->rw_window_s
                 ? api_server_conf(req->srv)->rw_window_s
                 : 2;
    return 1;
}

/* After a write of a signed-in user: that user reads the primary for a while. */
static void wrote(struct api_req *req)
{
    char key[64];
    uint32_t ttl_s;

    if (api_rw_mark(req, key, sizeof(key), &ttl_s))
        (void)cache_mark(req->cache, key, ttl_s);
}

/*
 * Answers what the route declares, in the order clients have always seen:
 * no route (404, 405), the body's media type (415) and size (413), the token
 * (401), here, on the event loop; then (api_dispatch_rest()) the caller's access
 * (401/403/404), the body's syntax (400 or, for images, 415/422) and the
 * handler, where the route's reads say. 1 when it answered, 0 when the
 * rest is to run.
 */
int api_dispatch(struct api_req *req)
{
    const struct api_route *route;
    const char *ct;

    if (req->found == -EOPNOTSUPP) {
        api_add_header(req, "Allow", "%s", req->allow);
        api_error(req, 405, "method_not_allowed",
                  "method %s not allowed here (allowed: %s)", req->method, req->allow);
        return 1;
    }
    if (req->found < 0) {
        api_error(req, 404, "not_found", "no such resource");
        return 1;
    }
    route = &api_routes[req->route];
    ct = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Content-Type");
    return route_check(req, route, ct, req->body_len > 0, req->body_too_large);
}

/*
 * The dispatcher's part that may do I/O: the access check (it may read the
 * caller's row), the body, and the handler with the replica flag and the
 * read-your-writes mark around it (thread-local state and memcached: all on
 * the thread that runs the handler).
 */
void api_dispatch_rest(struct api_req *req)
{
    const struct api_route *route = &api_routes[req->route];

    if (api_check_access(req, route->access, req->param[0]) < 0)
        return;
    if (route->body == API_BODY_JSON && api_body_parse(req) < 0)
        return;
    if (route->body == API_BODY_IMAGE && api_body_image(req) < 0)
        return;
    (void)router_stale_reads(stale_ok(req, route));
    route->handler(req);
    (void)router_stale_reads(0);
    /* Before the answer leaves: the user's next read cannot come earlier. */
    wrote(req);
    if (req->status == 0 && req->job == NULL)
        api_error(req, 500, "internal", "the handler gave no answer");
}
