/*
 * api_http.c: the server object and its libmicrohttpd glue: body limits,
 * where a request runs (the loop, the hot table, a worker), the responses,
 * access log and metrics. What the route table declares is answered by the
 * dispatcher (api_dispatch.c) before the handler.
 *
 * Threading. One event loop per core (conf->threads, api_loop.c), each a
 * thread that runs a libmicrohttpd daemon over its share of the
 * connections, which one acceptor thread deals out (api_listen.c). A loop
 * never waits for I/O: it reads requests, answers what needs none (no
 * route, 415, 413, a bad token; health and metrics), and queues responses.
 * GET odds is answered there too when the hot table (api_hot.c) has its
 * prebuilt response: the same response object is queued on every
 * connection that asks, nothing is copied. GET /v1/me's read runs there as
 * well, on the loop's epoll set (api_loop_query()), when a connection is
 * idle in the router's pool. Every other handler
 * runs on the worker pool (api_work.c, conf->workers threads): the request
 * takes a place in the pool (none left: 503 at once), its connection is
 * suspended, a worker runs the access check, the body's parsing and the
 * handler, which may block on the router (whose deadlines bound that) and
 * memcached, then resumes the connection, and its loop queues the answer.
 * A handler never waits for a password hash either: it gets a job of the
 * hash queue (api_req_hash()); the connection stays suspended while the job
 * waits and runs, and its second half runs on a worker again. A login's or
 * sign-up's 429 or 503 is answered late (api_tarpit.c).
 *
 * What the headers decide (404/405, 415, a Content-Length over the route's
 * limit, a missing or bad token) is answered as soon as the headers are in,
 * before any body is read. A body without a Content-Length is accumulated
 * up to the route's limit; beyond it the rest is read and dropped and the
 * answer is 413.
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "api/api_int.h"

/*
 * libmicrohttpd's memory a connection (read buffer, a record per header and
 * parameter, the answer's header), resident once used. What HAProxy lets
 * through (a URI of 4 KiB, 64 parameters, 8 KiB of 64 header fields) needs
 * about 19 KiB: at 16 KiB it was refused, or closed unanswered after its
 * handler ran (a write made, its answer lost). 39 MB at 1,000 connections.
 */
#define API_CONN_MEMORY (24 * 1024)

struct api_server {
    struct api_conf conf;
    struct router *router;    /* ref */
    struct MHD_Daemon **loop; /* a daemon per event loop */
    struct api_loop **lp;     /* the thread that runs each (api_loop.c) */
    uint32_t nloop;
    struct api_listener *listener; /* the socket and the thread that accepts */
    atomic_uint_fast64_t nverify;  /* tokens verified by their HMAC */
    struct api_metrics *metrics;
    struct api_pwhash *pwhash; /* the password-hash queue and its threads */
    struct api_tarpit *tarpit; /* refused logins and sign-ups, answered late */
    struct api_work *work;     /* the workers that run handlers off the loops */
    struct api_hot *hot;       /* prebuilt odds responses, answered on the loops */
    struct api_conns *conns;   /* per-address cap, header and body deadlines */
    struct api_limit *login_addr, *signup_addr, *account, *device; /* token buckets */
    struct api_jobs *jobs; /* the settler and its settlements, joined by destroy */
    struct api_settler *settler; /* NULL without a router */
    atomic_int stopping;         /* api_server_drain() began */
};

int64_t api_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
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

struct api_pwhash *api_server_pwhash(struct api_server *srv)
{
    return srv->pwhash;
}

struct api_tarpit *api_server_tarpit(struct api_server *srv)
{
    return srv->tarpit;
}

struct api_work *api_server_work(struct api_server *srv)
{
    return srv->work;
}

struct api_hot *api_server_hot(struct api_server *srv)
{
    return srv->hot;
}

void api_conns_of(struct api_server *srv, uint64_t *open, uint64_t *reaped,
                  uint64_t *refused)
{
    api_conns_stats(srv->conns, open, reaped, refused);
}

void api_server_count_verify(struct api_server *srv)
{
    atomic_fetch_add_explicit(&srv->nverify, 1, memory_order_relaxed);
}

uint64_t api_server_verifies(struct api_server *srv)
{
    return atomic_load_explicit(&srv->nverify, memory_order_relaxed);
}

uint32_t api_server_loops(struct api_server *srv, uint32_t *count, uint32_t max)
{
    return api_conns_loops(srv->conns, count, max);
}

uint16_t api_server_port(const struct api_server *srv)
{
    return api_listen_port(srv->listener);
}

struct api_limit *api_server_bucket(struct api_server *srv, const char *which)
{
    return strcmp(which, "login_addr") == 0    ? srv->login_addr
           : strcmp(which, "signup_addr") == 0 ? srv->signup_addr
           : strcmp(which, "device") == 0      ? srv->device
                                               : srv->account;
}

struct MHD_Response *api_response_make(const char *type, char *body, size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer_with_free_callback(len, body, free);

    if (resp == NULL) {
        free(body);
        return NULL;
    }
    if (type != NULL)
        MHD_add_response_header(resp, "Content-Type", type);
    /* No type guessing: an uploaded image is shown as its type or not at all. */
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    return resp;
}

static enum MHD_Result queue_response(struct api_req *req)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;

    resp = api_response_make(req->resp_type, req->resp, req->resp_len);
    req->resp = NULL; /* owned by resp now (or freed) */
    if (resp == NULL)
        return MHD_NO;
    req->queued = 1;
    for (int i = 0; i < req->nheaders; i++)
        MHD_add_response_header(resp, req->headers[i].name, req->headers[i].value);
    /* Stopping: the client's next request goes to a new connection, elsewhere. */
    if (atomic_load_explicit(&req->srv->stopping, memory_order_relaxed))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    ret = MHD_queue_response(req->conn, (unsigned int)req->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* The tarpit's end: the answer leaves (on_request() queues it). */
static void refusal_resume(struct api_req *req)
{
    api_loop_resume(req->loop, req->conn);
}

/*
 * Runs on a worker: the dispatcher's rest and the handler, or the handler's
 * second half after its password hash; then the connection is resumed, and
 * its loop queues the answer (on_request()).
 */
static void work_run(struct api_work_item *item)
{
    struct api_req *req =
        (struct api_req *)(void *)((char *)item - offsetof(struct api_req, work));
    struct api_server *srv = req->srv;

    if (req->job == NULL) {
        api_dispatch_rest(req);
        if (req->job != NULL && req->status == 0) {
            /* Still suspended, its place kept: hash_done() brings it back here. */
            api_pwhash_submit(srv->pwhash, req->job);
            return;
        }
    } else if (req->status == 0) {
        /* The hash is done: the handler's second half answers. */
        api_pwhash_release(srv->pwhash, req->client_ip, req->job->place);
        req->then(req);
        free(req->job);
        req->job = NULL;
    }
    if (req->job != NULL) { /* the handler answered after all */
        api_pwhash_release(srv->pwhash, req->client_ip, req->job->place);
        free(req->job);
        req->job = NULL;
    }
    if (req->status == 0)
        api_error(req, 500, "internal", "the handler gave no answer");
    req->where = API_WORKER_ANSWERED;
    /*
     * A login's or sign-up's 429 or 503 waits in the tarpit, without its
     * place: the server drains the tarpit before it waits for the places.
     */
    api_handler h = req->route >= 0 ? api_routes[req->route].handler : NULL;
    if ((h == api_h_login || h == api_h_signup) &&
        (req->status == 429 || req->status == 503) &&
        api_tarpit_hold(srv->tarpit, req) == 0) {
        api_work_release(srv->work);
        return;
    }
    /*
     * Resumed before its place is given back: the server stops its daemon
     * only once every place is back (api_server_destroy()), and
     * libmicrohttpd must not stop with a connection still suspended. The
     * request may be completed and freed from the resume on.
     */
    api_loop_resume(req->loop, req->conn);
    api_work_release(srv->work);
}

struct hot_answer {
    struct api_req *req;
    enum MHD_Result ret;
};

/* Under the hot table's slot lock: queues its response, shared as it is. */
static void hot_queue(void *arg, struct MHD_Response *resp)
{
    struct hot_answer *a = arg;

    a->ret = MHD_queue_response(a->req->conn, MHD_HTTP_OK, resp);
}

/*
 * A hot route's answer from the table, on the loop: 1 when it was there
 * (queued, *ret set), 0 when the handler is to run on a worker.
 */
static int hot_answer(struct api_req *req, enum MHD_Result *ret)
{
    struct hot_answer a = {req, MHD_NO};

    if (req->cache == NULL ||
        !api_hot_use(req->srv->hot, req->param[0], api_now_us() / 1000, hot_queue, &a))
        return 0;
    req->status = MHD_HTTP_OK;
    req->queued = 1;
    *ret = a.ret;
    return 1;
}

/* The key a request's work item takes turns by: a signed-in user's writes. */
static uint64_t work_key(const struct api_req *req)
{
    return strcmp(api_routes[req->route].method, "GET") != 0 ? req->auth.user_id : 0;
}

/*
 * The request goes to a worker: a place in the pool (or 503 at once when
 * they are all taken, 429 when its user has work_parked_per_user writes
 * waiting already), then its connection is suspended until the worker
 * answered.
 */
static int work_place(struct api_req *req)
{
    int rc = api_work_reserve_key(req->srv->work, work_key(req));

    if (rc == 0)
        return 0;
    api_add_header(req, "Retry-After", "1");
    if (rc == -EBUSY)
        api_error(req, 429, "rate_limited",
                  "too many of your changes are waiting for their turn; try again");
    else if (atomic_load(&req->srv->stopping))
        api_error(req, 503, "unavailable", "the server is stopping; try again");
    else
        api_error(req, 503, "unavailable", "too many requests in progress; try again");
    return -EAGAIN;
}

/* Queues a request that has its place and its connection suspended. */
static void work_queue(struct api_req *req)
{
    req->where = API_ON_WORKER;
    req->work.run = work_run;
    /*
     * A signed-in user's writes take turns (work_per_user at once): they
     * wait for his row's lock anyway, and a long queue on it would pass the
     * statement deadline. Reads are not keyed.
     */
    req->work.key = work_key(req);
    api_work_submit(req->srv->work, &req->work);
}

static enum MHD_Result to_worker(struct api_req *req)
{
    if (work_place(req) < 0)
        return queue_response(req);
    /* Suspended first: the worker's resume never comes before it. */
    api_loop_suspend(req->loop, req->conn);
    work_queue(req);
    return MHD_YES;
}

void api_req_to_worker(struct api_req *req)
{
    if (work_place(req) < 0) {
        req->where = API_WORKER_ANSWERED;
        api_loop_resume(req->loop, req->conn);
        return;
    }
    work_queue(req);
}

/*
 * A route that runs its statement on the loop: the rest of the dispatch
 * (an access check that reads nothing, the JSON body) here, then its
 * handler starts its statement (api_loop_query()), answers at once, or
 * leaves it to a worker.
 */
static enum MHD_Result on_loop(struct api_req *req)
{
    const struct api_route *route = &api_routes[req->route];
    const struct api_limits *lim = &req->srv->conf.limits;

    if ((strcmp(route->method, "GET") == 0 ? lim->loop_reads : lim->loop_bets) &&
        route->access == API_ACCESS_ANY) {
        if (route->body == API_BODY_JSON && api_body_parse(req) < 0)
            return queue_response(req); /* 400, as api_dispatch_rest() answers */
        route->handler(req);
        if (req->where != API_ON_LOOP)
            return MHD_YES; /* suspended: its statement answers (or a worker) */
        if (req->status != 0)
            return queue_response(req);
    }
    return to_worker(req);
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
        req = api_conn_req(srv->conns, conn);
        if (req != NULL)
            req->lent = 1;
        else if ((req = calloc(1, sizeof(*req))) == NULL)
            return MHD_NO;
        req->srv = srv;
        req->router = srv->router;
        req->cache = srv->conf.cache;
        req->conn = conn;
        req->loop = api_loop_self();
        req->method = method;
        req->url = url;
        req->start_us = api_now_us();
        /* Found once, at the headers: the route sets the body's limit. */
        req->found = api_route_find(method, url, &m);
        req->route = m.route;
        memcpy(req->param, m.param, sizeof(req->param));
        memcpy(req->allow, m.allow, sizeof(req->allow));
        req->body_max = req->found == 0 ? api_routes[m.route].body_max : API_JSON_MAX;
        *ctx = req;
        api_client_find(req);
        /*
         * An answer the headers decide goes out at once, and libmicrohttpd
         * closes the connection without reading the body. Not to a trusted
         * proxy that is still sending one: closing on unread bytes resets
         * the connection, and the proxy could lose the answer. The body is
         * then read and dropped (never buffered), within body_timeout_ms.
         * A body whose end is unclear (bad framing) has no end to read
         * to: it is answered at once, whoever sends it.
         */
        if (api_precheck(req) &&
            (req->bad_framing || !req->has_body ||
             !api_net_match(&srv->conf.limits.trusted, req->peer_ip))) {
            api_conn_phase(srv->conns, conn, API_CONN_BUSY);
            return queue_response(req);
        }
        api_conn_phase(srv->conns, conn, API_CONN_BODY);
        return MHD_YES;
    }
    if (req->queued)
        return MHD_YES;
    if (req->where == API_WORKER_ANSWERED) /* resumed: a worker answered */
        return queue_response(req);
    if (req->where == API_ON_WORKER || req->where == API_ON_LOOP_DB)
        return MHD_YES; /* (suspended: libmicrohttpd does not call then) */
    if (req->status != 0) {
        /* Decided at the headers: the body is dropped, then the answer sent. */
        if (*upload_size > 0) {
            *upload_size = 0;
            return MHD_YES;
        }
        if (api_conn_phase(srv->conns, conn, API_CONN_BUSY) < 0)
            return MHD_NO; /* answered 408 at the body's deadline */
        return queue_response(req);
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
    if (api_conn_phase(srv->conns, conn, API_CONN_BUSY) < 0)
        return MHD_NO; /* answered 408 at the body's deadline: never handled */
    api_conn_handler(srv->conns, conn, 1);
    if (!api_dispatch(req)) {
        enum MHD_Result ret;
        if (api_routes[req->route].reads == API_READS_HOT && hot_answer(req, &ret)) {
            api_conn_handler(srv->conns, conn, 0);
            return ret;
        }
        if (api_routes[req->route].reads == API_READS_LOOP) {
            api_conn_handler(srv->conns, conn, 0);
            return on_loop(req);
        }
        if (api_routes[req->route].reads != API_READS_NONE) {
            api_conn_handler(srv->conns, conn, 0);
            return to_worker(req);
        }
        api_dispatch_rest(req); /* a handler without I/O: here, on the loop */
        if (req->job != NULL) {
            /* Such a handler never asks for a hash: it would need a worker. */
            api_pwhash_release(srv->pwhash, req->client_ip, req->job->place);
            free(req->job);
            req->job = NULL;
            api_error(req, 500, "internal", "a hash asked for on the event loop");
        }
    }
    api_conn_handler(srv->conns, conn, 0);
    return queue_response(req);
}

/*
 * The path is matched as sent: no route has a byte that needs escaping,
 * so an escaped one matches none (404). Decoded, %2F would make a
 * separator that HAProxy's rules on the path did not see, and %00 would
 * cut the path short. Query keys and values (which never start with '/')
 * are decoded.
 */
static size_t unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    return s[0] == '/' ? strlen(s) : MHD_http_unescape(s);
}

void api_req_clear(struct api_req *req)
{
    free(req->account);
    free(req->job); /* a suspended request is never completed: no job runs now */
    free(req->body);
    free(req->resp);
    json_decref(req->json);
    req->account = NULL;
    req->job = NULL;
    req->body = NULL;
    req->resp = NULL;
    req->json = NULL;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **ctx,
                         enum MHD_RequestTerminationCode toe)
{
    struct api_server *srv = cls;
    struct api_req *req = *ctx;
    char method[64], url[512];
    int64_t us;
    int reaped;

    if (req == NULL)
        return;
    /* A body the reaper timed out: its 408 is the request's answer. */
    reaped = api_conn_phase(srv->conns, conn, API_CONN_IDLE) < 0;
    if (reaped && req->status == 0)
        req->status = 408;
    us = api_now_us() - req->start_us;
    us = us < 0 ? 0 : us;
    api_metrics_observe(srv->metrics, req->route, req->status, us);
    if (srv->conf.access_log != NULL) {
        /* The URL is decoded: a %0A in it must not start a line of its own. */
        api_log_escape(req->method, method, sizeof(method));
        api_log_escape(req->url, url, sizeof(url));
        /* Milliseconds from integers: a double's formatting costs more. */
        api_access_log(srv->conf.access_log, "%s %s %s %s %d %lld.%03dms%s\n",
                       srv->conf.name, req->client, method, url, req->status,
                       (long long)(us / 1000), (int)(us % 1000),
                       toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? ""
                       : reaped                                   ? " body timed out"
                                                                  : " aborted");
    }
    /* The server's refusal is not the client's failure (api_rate_refund()). */
    if (req->status >= 500)
        api_rate_refund(req);
    api_req_clear(req);
    if (!req->lent)
        free(req);
    *ctx = NULL;
}

/* The cores this process may run on now, 1..256: one event loop each. */
static uint32_t online_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    return n < 1 ? 1 : n > 256 ? 256 : (uint32_t)n;
}

void api_conf_init(struct api_conf *conf)
{
    memset(conf, 0, sizeof(*conf));
    snprintf(conf->listen_addr, sizeof(conf->listen_addr), "127.0.0.1");
    conf->port = 8081;
    snprintf(conf->name, sizeof(conf->name), "api");
    conf->threads = online_cores();
    conf->workers = 64;
    conf->token_ttl_s = 86400;
    conf->initial_balance = 1000;
    conf->max_connections = 4096;
    api_limits_init(&conf->limits);
}

int api_server_stopping(struct api_server *srv)
{
    return atomic_load_explicit(&srv->stopping, memory_order_relaxed);
}

void api_server_drain(struct api_server *srv, uint32_t drain_ms)
{
    struct timespec ts = {drain_ms / 1000, (long)(drain_ms % 1000) * 1000000L};

    if (srv == NULL || atomic_exchange(&srv->stopping, 1))
        return;
    /* Background work stops now: another server takes its leases at once. */
    api_jobs_stop(srv->jobs);
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/*
 * Each loop's thread ends first (once its statements in flight are
 * answered), then its daemon (which has no thread).
 */
static void stop_loops(struct api_server *srv)
{
    for (uint32_t i = 0; srv->lp != NULL && i < srv->nloop; i++)
        api_loop_stop(srv->lp[i]);
    for (uint32_t i = 0; srv->loop != NULL && i < srv->nloop; i++)
        if (srv->loop[i] != NULL)
            MHD_stop_daemon(srv->loop[i]);
    free(srv->lp);
    free(srv->loop);
    srv->lp = NULL;
    srv->loop = NULL;
}

int api_server_create(const struct api_conf *conf, struct router *router,
                      struct api_server **out)
{
    struct api_server *srv;
    struct sockaddr_in addr = {.sin_family = AF_INET};
    unsigned int per_loop;
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
    /*
     * The socket first: a port in use fails here, before any thread starts
     * (the settler would take leases under this server's name).
     */
    if ((rc = api_listen_open(&addr, &srv->listener)) < 0)
        goto error;
    rc = -ENOMEM;
    srv->metrics = api_metrics_create();
    if (srv->metrics == NULL)
        goto error;
    if ((rc = api_limit_create(&conf->limits.login_addr, conf->limits.table_size,
                               &srv->login_addr)) < 0 ||
        (rc = api_limit_create(&conf->limits.signup_addr, conf->limits.table_size,
                               &srv->signup_addr)) < 0 ||
        (rc = api_limit_create(&conf->limits.account, conf->limits.table_size,
                               &srv->account)) < 0 ||
        (rc = api_limit_create(&conf->limits.device, conf->limits.table_size,
                               &srv->device)) < 0)
        goto error;
    if ((rc = api_pwhash_create(conf->limits.hash_threads, conf->limits.hash_queue,
                                conf->limits.hash_known, conf->limits.hash_per_addr,
                                conf->limits.hash_max_wait_ms, API_PWHASH_AGE_MS,
                                conf->limits.hash_nice, &srv->pwhash)) < 0 ||
        (rc = api_tarpit_create(conf->limits.auth_refusal_delay_ms,
                                conf->limits.auth_refusal_held, refusal_resume,
                                &srv->tarpit)) < 0)
        goto error;
    if ((rc = api_work_create(conf->workers, conf->limits.work_queue,
                              conf->limits.work_per_user,
                              conf->limits.work_parked_per_user, &srv->work)) < 0)
        goto error;
    if ((rc = api_hot_create(&srv->hot)) < 0)
        goto error;
    if ((rc = api_conns_create(&conf->limits, &srv->conns)) < 0)
        goto error;
    if ((rc = api_jobs_create(conf->limits.background_nice, &srv->jobs)) < 0)
        goto error;
    if (router != NULL) {
        router_set_background_hosts(router, conf->limits.background_hosts);
        router_set_background_cores(router, conf->limits.background_cores_pct);
        router_set_background_idle(router, (int)conf->limits.background_idle);
    }
    /* Every server settles: it runs the jobs nobody holds, whoever took the result. */
    if (router != NULL && (rc = api_settler_create(srv, &srv->settler)) < 0)
        goto error;
    if (router != NULL && (rc = api_purge_start(srv->jobs, router)) < 0)
        goto error;
    if (conf->cache != NULL &&
        (rc = api_cache_keeper_start(srv->jobs, conf->cache)) < 0)
        goto error;
    /*
     * A daemon per loop, without a listening socket: the acceptor
     * (api_listen.c) gives each connection to the loop with the fewest.
     */
    srv->nloop = conf->threads < 1               ? 1
                 : conf->threads > API_LOOPS_MAX ? API_LOOPS_MAX
                                                 : conf->threads;
    if ((srv->loop = calloc(srv->nloop, sizeof(*srv->loop))) == NULL ||
        (srv->lp = calloc(srv->nloop, sizeof(*srv->lp))) == NULL) {
        rc = -ENOMEM;
        goto error;
    }
    per_loop = conf->max_connections / srv->nloop;
    for (uint32_t i = 0; i < srv->nloop; i++) {
        srv->loop[i] = MHD_start_daemon(
            MHD_USE_EPOLL | MHD_USE_TURBO | MHD_USE_ERROR_LOG |
                MHD_ALLOW_SUSPEND_RESUME | MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC,
            0, api_conns_accept, srv->conns, on_request, srv,
            MHD_OPTION_NOTIFY_CONNECTION, api_conns_notify, srv->conns,
            MHD_OPTION_CONNECTION_LIMIT, per_loop ? per_loop : 1u,
            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)20,
            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)API_CONN_MEMORY,
            MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
            MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL, MHD_OPTION_EXTERNAL_LOGGER,
            api_log_mhd, NULL, MHD_OPTION_END);
        if (srv->loop[i] == NULL) {
            rc = -EIO;
            goto error;
        }
    }
    api_conns_set_loops(srv->conns, srv->loop, srv->nloop);
    for (uint32_t i = 0; i < srv->nloop; i++)
        if ((rc = api_loop_start(srv->loop[i], srv->conf.cache, router,
                                 conf->limits.loop_batch_wakes, &srv->lp[i])) < 0)
            goto error;
    if ((rc = api_listen_run(srv->listener, srv->lp, srv->nloop, srv->conns)) < 0)
        goto error;
    *out = srv;
    return 0;
error:
    api_listen_close(srv->listener);
    stop_loops(srv);
    api_jobs_destroy(srv->jobs);
    api_settler_destroy(srv->settler);
    api_conns_destroy(srv->conns);
    api_hot_destroy(srv->hot);
    api_work_destroy(srv->work);
    api_pwhash_destroy(srv->pwhash);
    api_tarpit_destroy(srv->tarpit);
    api_limit_destroy(srv->device);
    api_limit_destroy(srv->account);
    api_limit_destroy(srv->signup_addr);
    api_limit_destroy(srv->login_addr);
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
     * server goes on at once. The workers drain before the daemon stops
     * (new requests for them are refused with 503): libmicrohttpd must not
     * stop with a connection still suspended, and a request waiting for a
     * hash keeps its place until its second half has answered, so no hash
     * is left either.
     */
    atomic_store(&srv->stopping, 1);
    api_listen_close(srv->listener); /* no new connection */
    srv->listener = NULL;
    for (uint32_t i = 0; srv->lp != NULL && i < srv->nloop; i++)
        api_loop_finish(srv->lp[i]); /* no new statement; those in flight end */
    api_tarpit_drain(srv->tarpit);
    api_work_drain(srv->work);
    api_pwhash_drain(srv->pwhash);
    stop_loops(srv);
    api_conns_destroy(srv->conns);
    api_hot_destroy(srv->hot);
    api_work_destroy(srv->work);
    api_pwhash_destroy(srv->pwhash);
    api_tarpit_destroy(srv->tarpit);
    api_jobs_destroy(srv->jobs);
    api_settler_destroy(srv->settler);
    api_limit_destroy(srv->device);
    api_limit_destroy(srv->account);
    api_limit_destroy(srv->signup_addr);
    api_limit_destroy(srv->login_addr);
    api_metrics_destroy(srv->metrics);
    free(srv);
}
