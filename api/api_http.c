/*
 * api_http.c: the server object and its libmicrohttpd glue: body limits,
 * dispatch (what the route table declares is answered here, before the
 * handler), access log and metrics.
 *
 * libmicrohttpd runs a pool of worker threads, each an epoll loop over its
 * connections; a handler runs on its worker and may block on the router
 * (whose deadlines bound that). Bodies are accumulated up to the route's
 * limit; beyond it the rest is read and dropped and the answer is 413.
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sodium.h>

#include "api/api_int.h"

struct api_server {
    struct api_conf conf;
    struct router *router; /* ref */
    struct MHD_Daemon *daemon;
    struct api_metrics *metrics;
    struct api_jobs *jobs; /* the settler and its settlements, joined by destroy */
    struct api_settler *settler; /* NULL without a router */
};

static int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void api_log(const char *fmt, ...)
{
    char buf[1024];
    struct timespec ts;
    struct tm tm;
    va_list ap;
    size_t n;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, ".%03ldZ ", ts.tv_nsec / 1000000);
    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof(buf) - n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", buf);
}

const struct api_conf *api_server_conf(struct api_server *srv)
{
    return &srv->conf;
}

struct api_metrics *api_server_metrics(struct api_server *srv)
{
    return srv->metrics;
}

struct router *api_server_router(struct api_server *srv)
{
    return srv->router;
}

struct api_jobs *api_server_jobs(struct api_server *srv)
{
    return srv->jobs;
}

struct api_settler *api_server_settler(struct api_server *srv)
{
    return srv->settler;
}

static int is_json_type(const char *ct)
{
    size_t n = strlen("application/json");

    return ct != NULL && strncasecmp(ct, "application/json", n) == 0 &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* The bearer token of the Authorization header into req->auth; 0 or negative. */
static int auth_check(struct api_req *req)
{
    const char *authz =
        MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Authorization");

    if (authz == NULL || strncasecmp(authz, "Bearer ", 7) != 0)
        return -EACCES;
    return api_token_check(req->srv, authz + 7, &req->auth);
}

/*
 * Answers what the route declares, in the order clients have always seen:
 * no route (404, 405), the body's media type (415) and size (413), the token
 * (401), the caller's access (401/403/404), the body's syntax (400 or, for
 * images, 415/422); then the handler answers the rest.
 */
static void dispatch(struct api_req *req)
{
    const struct api_route *route;
    const char *ct;

    if (req->found == -EOPNOTSUPP) {
        api_add_header(req, "Allow", "%s", req->allow);
        api_error(req, 405, "method_not_allowed",
                  "method %s not allowed here (allowed: %s)", req->method, req->allow);
        return;
    }
    if (req->found < 0) {
        api_error(req, 404, "not_found", "no such resource");
        return;
    }
    route = &api_routes[req->route];
    ct = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Content-Type");
    if (route->body == API_BODY_JSON && !is_json_type(ct) &&
        (ct != NULL || req->body_len > 0)) {
        api_error(req, 415, "unsupported_media_type",
                  "send the body as Content-Type: application/json");
        return;
    }
    if (req->body_too_large) {
        api_error(req, 413, "body_too_large", "the body is larger than %zu bytes",
                  req->body_max);
        return;
    }
    if (route->auth && auth_check(req) < 0) {
        api_add_header(req, "WWW-Authenticate", "Bearer");
        api_error(req, 401, "unauthorized", "a valid bearer token is required");
        return;
    }
    if (api_check_access(req, route->access, req->param[0]) < 0)
        return;
    if (route->body == API_BODY_JSON && api_body_parse(req) < 0)
        return;
    if (route->body == API_BODY_IMAGE && api_body_image(req) < 0)
        return;
    route->handler(req);
    if (req->status == 0)
        api_error(req, 500, "internal", "the handler gave no answer");
}

static enum MHD_Result queue_response(struct api_req *req)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;

    resp = MHD_create_response_from_buffer(req->resp_len, req->resp,
                                           MHD_RESPMEM_MUST_FREE);
    if (resp == NULL)
        return MHD_NO;
    req->resp = NULL; /* owned by resp now */
    if (req->resp_type != NULL)
        MHD_add_response_header(resp, "Content-Type", req->resp_type);
    for (int i = 0; i < req->nheaders; i++)
        MHD_add_response_header(resp, req->headers[i].name, req->headers[i].value);
    ret = MHD_queue_response(req->conn, (unsigned int)req->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **ctx)
{
    struct api_server *srv = cls;
    struct api_req *req = *ctx;
    struct api_match m;
    (void)version;

    if (req == NULL) {
        req = calloc(1, sizeof(*req));
        if (req == NULL)
            return MHD_NO;
        req->srv = srv;
        req->router = srv->router;
        req->cache = srv->conf.cache;
        req->conn = conn;
        req->method = method;
        req->url = url;
        req->start_us = now_us();
        /* Found once, at the headers: the route sets the body's limit. */
        req->found = api_route_find(method, url, &m);
        req->route = m.route;
        memcpy(req->param, m.param, sizeof(req->param));
        memcpy(req->allow, m.allow, sizeof(req->allow));
        req->body_max = req->found == 0 ? api_routes[m.route].body_max : API_JSON_MAX;
        *ctx = req;
        return MHD_YES;
    }
    if (*upload_size > 0) {
        if (!req->body_too_large && req->body_len + *upload_size <= req->body_max) {
            if (req->body_len + *upload_size + 1 > req->body_cap) {
                size_t cap = req->body_cap ? req->body_cap * 2 : 4096;
                while (cap < req->body_len + *upload_size + 1)
                    cap *= 2;
                char *b = realloc(req->body, cap);
                if (b == NULL)
                    return MHD_NO;
                req->body = b;
                req->body_cap = cap;
            }
            memcpy(req->body + req->body_len, upload, *upload_size);
            req->body_len += *upload_size;
            req->body[req->body_len] = '\0';
        } else {
            req->body_too_large = 1;
            free(req->body);
            req->body = NULL;
            req->body_len = req->body_cap = 0;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    dispatch(req);
    return queue_response(req);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **ctx,
                         enum MHD_RequestTerminationCode toe)
{
    struct api_server *srv = cls;
    struct api_req *req = *ctx;
    int64_t us;
    (void)conn;

    if (req == NULL)
        return;
    us = now_us() - req->start_us;
    api_metrics_observe(srv->metrics, req->route, req->status, us);
    if (srv->conf.access_log != NULL)
        fprintf(srv->conf.access_log, "%s %s %s %d %.3fms%s\n", srv->conf.name,
                req->method, req->url, req->status, (double)us / 1000.0,
                toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " aborted");
    free(req->body);
    free(req->resp);
    json_decref(req->json);
    free(req);
    *ctx = NULL;
}

void api_conf_init(struct api_conf *conf)
{
    memset(conf, 0, sizeof(*conf));
    snprintf(conf->listen_addr, sizeof(conf->listen_addr), "127.0.0.1");
    conf->port = 8081;
    snprintf(conf->name, sizeof(conf->name), "api");
    conf->threads = 16;
    conf->token_ttl_s = 86400;
    conf->initial_balance = 1000;
    conf->max_connections = 4096;
}

int api_server_create(const struct api_conf *conf, struct router *router,
                      struct api_server **out)
{
    struct api_server *srv;
    struct sockaddr_in addr = {.sin_family = AF_INET};
    int rc;

    if (sodium_init() < 0)
        return -EIO;
    if (inet_pton(AF_INET, conf->listen_addr, &addr.sin_addr) != 1)
        return -EINVAL;
    addr.sin_port = htons(conf->port);
    srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        return -ENOMEM;
    srv->conf = *conf;
    srv->router = router;
    rc = -ENOMEM;
    srv->metrics = api_metrics_create();
    if (srv->metrics == NULL)
        goto error;
    if ((rc = api_jobs_create(&srv->jobs)) < 0)
        goto error;
    /* Every server settles: it runs the jobs nobody holds, whoever took the result. */
    if (router != NULL && (rc = api_settler_create(srv, &srv->settler)) < 0)
        goto error;
    srv->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_TURBO |
            MHD_USE_ERROR_LOG,
        conf->port, NULL, NULL, on_request, srv, MHD_OPTION_SOCK_ADDR, &addr,
        MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned int)(conf->threads > 1 ? conf->threads : 0),
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)conf->max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)60,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16384,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned int)1,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_END);
    if (srv->daemon == NULL) {
        rc = -EADDRINUSE;
        goto error;
    }
    *out = srv;
    return 0;
error:
    api_jobs_destroy(srv->jobs);
    api_settler_destroy(srv->settler);
    api_metrics_destroy(srv->metrics);
    free(srv);
    return rc;
}

void api_server_destroy(struct api_server *srv)
{
    if (srv == NULL)
        return;
    /*
     * Requests first (a request in flight may still wake the settler), then
     * the settler and its settlements: asked to stop between batches and
     * joined, however long the batch in hand takes, so none outlives the
     * router it borrows. A stopped settlement releases its lease: another
     * server goes on at once.
     */
    MHD_stop_daemon(srv->daemon);
    api_jobs_destroy(srv->jobs);
    api_settler_destroy(srv->settler);
    api_metrics_destroy(srv->metrics);
    free(srv);
}
