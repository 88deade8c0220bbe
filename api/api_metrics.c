/*
 * api_metrics.c: Prometheus metrics: requests by route and status, latency
 * histograms by route, and the router's per-host counters and pool use.
 * The request counters are per thread: each thread that completes requests
 * (an event loop) takes a slot of its own on first use, and adds to it
 * with relaxed atomics, so the loops never write the same cache line; a
 * scrape sums the slots. More threads than slots share them, still
 * correctly. The 503s the database causes are counted by cause.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"

static const int statuses[] = {200, 201, 202, 204, 304, 400, 401, 403, 404,
                               405, 409, 413, 415, 422, 429, 500, 503, 0};
#define NSTATUS ((int)(sizeof(statuses) / sizeof(statuses[0])))
static const double bounds_ms[] = {1,   2.5, 5,   10,   25,   50,
                                   100, 250, 500, 1000, 2500, 5000};
#define NBUCKET ((int)(sizeof(bounds_ms) / sizeof(bounds_ms[0])))
#define NROUTE_MAX 64 /* routes, plus one for "unmatched" */

struct route_stats {
    atomic_uint_fast64_t by_status[NSTATUS];
    atomic_uint_fast64_t bucket[NBUCKET + 1];
    atomic_uint_fast64_t sum_us;
};

/* One thread's counters: a multiple of the cache line (route_stats is 256 bytes). */
struct slot {
    struct route_stats route[NROUTE_MAX + 1];
};

#define NSLOT 16

/* Why api_db_error() answered 503: its status code, and the cause's label. */
static const struct {
    int rc;
    const char *cause;
} db_causes[] = {
    {BC_EDOWN, "down"},         {BC_ETIMEOUT, "timeout"},   {BC_EPOOL, "pool"},
    {BC_EMOVED, "moved"},       {BC_EREADONLY, "readonly"}, {BC_ENOTFOUND, "notfound"},
    {BC_ELOCKWAIT, "lockwait"}, {-ENOMEM, "nomem"},         {BC_ENOMAP, "nomap"},
};
#define NCAUSE ((int)(sizeof(db_causes) / sizeof(db_causes[0])))

struct api_metrics {
    struct slot slot[NSLOT];
    /* Rare (a 503 each): one counter per cause for all threads, and "other";
     * a cache line of their own, which keeps the size a multiple of it. */
    _Alignas(64) atomic_uint_fast64_t unavailable[NCAUSE + 1];
};

/* aligned_alloc() wants a size that is a multiple of the alignment. */
_Static_assert(sizeof(struct api_metrics) % 64 == 0,
               "api_metrics is whole cache lines");

/* This thread's slot number + 1 (0: none yet), the same in every server. */
static _Thread_local unsigned thread_slot;
static atomic_uint next_slot;

struct api_metrics *api_metrics_create(void)
{
    struct api_metrics *m = aligned_alloc(64, sizeof(struct api_metrics));

    if (m != NULL)
        memset(m, 0, sizeof(*m));
    return m;
}

void api_metrics_destroy(struct api_metrics *m)
{
    free(m);
}

/* A counter of route r summed over the slots: by_status[i], bucket[i] or sum_us. */
enum counter { BY_STATUS, BUCKET, SUM_US };

static uint64_t slots_sum(struct api_metrics *m, int r, enum counter c, int i)
{
    uint64_t sum = 0;

    for (int k = 0; k < NSLOT; k++) {
        struct route_stats *st = &m->slot[k].route[r];
        atomic_uint_fast64_t *v = c == BY_STATUS ? &st->by_status[i]
                                  : c == BUCKET  ? &st->bucket[i]
                                                 : &st->sum_us;
        sum += atomic_load_explicit(v, memory_order_relaxed);
    }
    return sum;
}

void api_metrics_observe(struct api_metrics *m, int route, int status, int64_t us)
{
    struct route_stats *r;
    int s = 0, b = 0;

    if (thread_slot == 0)
        thread_slot = atomic_fetch_add(&next_slot, 1) % NSLOT + 1;
    r = &m->slot[thread_slot - 1]
             .route[route >= 0 && route < NROUTE_MAX ? route : NROUTE_MAX];

    while (s < NSTATUS - 1 && statuses[s] != status)
        s++;
    while (b < NBUCKET && (double)us / 1000.0 > bounds_ms[b])
        b++;
    atomic_fetch_add_explicit(&r->by_status[s], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->sum_us, (uint64_t)us, memory_order_relaxed);
}

void api_metrics_unavailable(struct api_metrics *m, int rc)
{
    int c = 0;

    while (c < NCAUSE && db_causes[c].rc != rc)
        c++;
    atomic_fetch_add_explicit(&m->unavailable[c], 1, memory_order_relaxed);
}

static const char *route_label(int r)
{
    return r < api_nroutes ? api_routes[r].name : "unmatched";
}

void api_h_metrics(struct api_req *req)
{
    struct api_metrics *m = api_server_metrics(req->srv);
    struct router_host_stats *hosts;
    uint32_t nhost;
    const char *name = api_server_conf(req->srv)->name;
    char *buf = NULL;
    size_t len = 0;
    const struct api_limits *lim = &api_server_conf(req->srv)->limits;
    uint64_t inflight, done, refused, known, open, reaped, capped, answered, to_worker,
        marked, mark_failed, busy;
    uint32_t loop[API_LOOPS_MAX], nloop;
    struct api_work_stats ws;
    FILE *f;

    /*
     * For operators only: asked directly (no proxy's X-Forwarded-For) from
     * a metrics_from address. Through the public frontend it does not exist.
     */
    if (req->forwarded || !api_net_match(&lim->metrics_from, req->peer_ip)) {
        api_error(req, 404, "not_found", "no such resource");
        return;
    }
    /* Hosts and replicas: ~90 KiB at most, not on a worker's stack. */
    hosts = calloc(2 * SHARDMAP_MAX_HOSTS, sizeof(*hosts));
    f = hosts ? open_memstream(&buf, &len) : NULL;
    if (f == NULL) {
        free(hosts);
        api_error(req, 503, "unavailable", "out of memory");
        return;
    }
    nhost = router_stats(req->router, hosts, 2 * SHARDMAP_MAX_HOSTS);
    fprintf(f, "# HELP betcity_http_requests_total HTTP requests by route and status.\n"
               "# TYPE betcity_http_requests_total counter\n");
    for (int r = 0; r <= api_nroutes; r++)
        for (int s = 0; s < NSTATUS; s++) {
            uint64_t v = slots_sum(m, r < api_nroutes ? r : NROUTE_MAX, BY_STATUS, s);
            char code[8] = "other";
            if (statuses[s] != 0)
                snprintf(code, sizeof(code), "%d", statuses[s]);
            if (v > 0)
                fprintf(f,
                        "betcity_http_requests_total{instance=\"%s\",route=\"%s\","
                        "status=\"%s\"} %" PRIu64 "\n",
                        name, route_label(r), code, v);
        }
    fprintf(f,
            "# HELP betcity_http_request_duration_seconds Request latency by route.\n"
            "# TYPE betcity_http_request_duration_seconds histogram\n");
    for (int r = 0; r <= api_nroutes; r++) {
        int k = r < api_nroutes ? r : NROUTE_MAX;
        uint64_t cum = 0;
        for (int b = 0; b <= NBUCKET; b++)
            cum += slots_sum(m, k, BUCKET, b);
        if (cum == 0)
            continue;
        cum = 0;
        for (int b = 0; b <= NBUCKET; b++) {
            cum += slots_sum(m, k, BUCKET, b);
            if (b < NBUCKET)
                fprintf(f,
                        "betcity_http_request_duration_seconds_bucket{instance=\"%s\","
                        "route="
                        "\"%s\",le=\"%g\"} %" PRIu64 "\n",
                        name, route_label(r), bounds_ms[b] / 1000.0, cum);
            else
                fprintf(f,
                        "betcity_http_request_duration_seconds_bucket{instance=\"%s\","
                        "route="
                        "\"%s\",le=\"+Inf\"} %" PRIu64 "\n",
                        name, route_label(r), cum);
        }
        fprintf(
            f,
            "betcity_http_request_duration_seconds_sum{instance=\"%s\",route=\"%s\"} "
            "%.6f\n"
            "betcity_http_request_duration_seconds_count{instance=\"%s\",route=\"%s\"} "
            "%" PRIu64 "\n",
            name, route_label(r), (double)slots_sum(m, k, SUM_US, 0) / 1e6, name,
            route_label(r), cum);
    }
    fprintf(f,
            "# HELP betcity_db_queries_total Statements sent to each database host.\n"
            "# TYPE betcity_db_queries_total counter\n");
    for (uint32_t i = 0; i < nhost; i++)
        if (!hosts[i].replica)
            fprintf(f,
                    "betcity_db_queries_total{instance=\"%s\",host=\"%s\"} %" PRIu64
                    "\n",
                    name, hosts[i].name, hosts[i].queries);
    fprintf(f,
            "# HELP betcity_db_errors_total Failed statements and connects per host.\n"
            "# TYPE betcity_db_errors_total counter\n");
    for (uint32_t i = 0; i < nhost; i++)
        if (!hosts[i].replica)
            fprintf(
                f, "betcity_db_errors_total{instance=\"%s\",host=\"%s\"} %" PRIu64 "\n",
                name, hosts[i].name, hosts[i].errors);
    fprintf(
        f,
        "# HELP betcity_db_timeouts_total Statements or connects past their deadline.\n"
        "# TYPE betcity_db_timeouts_total counter\n");
    for (uint32_t i = 0; i < nhost; i++)
        if (!hosts[i].replica)
            fprintf(f,
                    "betcity_db_timeouts_total{instance=\"%s\",host=\"%s\"} %" PRIu64
                    "\n",
                    name, hosts[i].name, hosts[i].timeouts);
    fprintf(f, "# HELP betcity_db_stale_connections_total Idle pooled connections "
               "found closed by their server (a restart, wait_timeout) and replaced "
               "before use.\n"
               "# TYPE betcity_db_stale_connections_total counter\n");
    for (uint32_t i = 0; i < nhost; i++)
        if (!hosts[i].replica)
            fprintf(f,
                    "betcity_db_stale_connections_total{instance=\"%s\",host=\"%s\"} "
                    "%" PRIu64 "\n",
                    name, hosts[i].name, hosts[i].stale);
    fprintf(f,
            "# HELP betcity_db_unavailable_total Requests answered 503 because of the "
            "database, by cause (timeout: a statement past its deadline; moved: a "
            "shard's cut-over longer than move_wait_ms; lockwait: lock waits that "
            "retries did not get past; nomap: no shard map read yet).\n"
            "# TYPE betcity_db_unavailable_total counter\n");
    for (int c = 0; c <= NCAUSE; c++)
        fprintf(
            f,
            "betcity_db_unavailable_total{instance=\"%s\",cause=\"%s\"} %" PRIu64 "\n",
            name, c < NCAUSE ? db_causes[c].cause : "other",
            (uint64_t)atomic_load_explicit(&m->unavailable[c], memory_order_relaxed));
    fprintf(f, "# HELP betcity_db_pool_connections Connections per host (open, idle; "
               "background: open in the background pool).\n"
               "# TYPE betcity_db_pool_connections gauge\n");
    for (uint32_t i = 0; i < nhost; i++)
        if (!hosts[i].replica)
            fprintf(f,
                    "betcity_db_pool_connections{instance=\"%s\",host=\"%s\",state="
                    "\"open\"} %u\n"
                    "betcity_db_pool_connections{instance=\"%s\",host=\"%s\",state="
                    "\"idle\"} %u\n",
                    name, hosts[i].name, hosts[i].open, name, hosts[i].name,
                    hosts[i].idle);
    for (uint32_t i = 0; i < nhost; i++)
        if (!hosts[i].replica)
            fprintf(f,
                    "betcity_db_pool_connections{instance=\"%s\",host=\"%s\",state="
                    "\"background\"} %u\n",
                    name, hosts[i].name, hosts[i].bg_open);
    fprintf(f, "# HELP betcity_db_background_idle_threads Background connections whose "
               "MariaDB thread runs under SCHED_IDLE (background_idle).\n"
               "# TYPE betcity_db_background_idle_threads gauge\n");
    for (uint32_t i = 0; i < nhost; i++)
        if (!hosts[i].replica)
            fprintf(
                f,
                "betcity_db_background_idle_threads{instance=\"%s\",host=\"%s\"} %u\n",
                name, hosts[i].name, hosts[i].bg_lowered);
    fprintf(f, "# HELP betcity_db_background_idle_cgroup_threads Of those, the ones "
               "also in an idle cpu cgroup, which the other processes' threads "
               "preempt at once.\n"
               "# TYPE betcity_db_background_idle_cgroup_threads gauge\n");
    for (uint32_t i = 0; i < nhost; i++)
        if (!hosts[i].replica)
            fprintf(f,
                    "betcity_db_background_idle_cgroup_threads{instance=\"%s\",host="
                    "\"%s\"} %u\n",
                    name, hosts[i].name, hosts[i].bg_grouped);
    fprintf(f, "# HELP betcity_db_host_up 1 while the host is not marked down.\n"
               "# TYPE betcity_db_host_up gauge\n");
    for (uint32_t i = 0; i < nhost; i++)
        if (!hosts[i].replica)
            fprintf(f, "betcity_db_host_up{instance=\"%s\",host=\"%s\"} %d\n", name,
                    hosts[i].name, hosts[i].up);
    fprintf(
        f, "# HELP betcity_db_replica_queries_total Reads a replica answered (stale-ok "
           "reads within the lag bound).\n"
           "# TYPE betcity_db_replica_queries_total counter\n");
    for (uint32_t i = 0; i < nhost; i++)
        if (hosts[i].replica)
            fprintf(f,
                    "betcity_db_replica_queries_total{instance=\"%s\",host=\"%s\","
                    "server=\"%s\"} %" PRIu64 "\n",
                    name, hosts[i].host, hosts[i].name, hosts[i].queries);
    fprintf(
        f, "# HELP betcity_db_replica_lag_ms A replica's lag as last measured from the "
           "heartbeat (-1: unknown or unreachable).\n"
           "# TYPE betcity_db_replica_lag_ms gauge\n");
    for (uint32_t i = 0; i < nhost; i++)
        if (hosts[i].replica)
            fprintf(
                f,
                "betcity_db_replica_lag_ms{instance=\"%s\",host=\"%s\",server=\"%s\"} "
                "%d\n",
                name, hosts[i].host, hosts[i].name, hosts[i].lag_ms);
    if (req->cache != NULL) {
        struct cache_stats cs;
        struct api_hot_stats hs;
        static const char *const names[] = {
            "hits",           "misses",     "fills", "lease_waits",
            "lease_timeouts", "fill_races", "errors"};
        cache_stats(req->cache, &cs);
        fprintf(
            f, "# HELP betcity_cache_ops_total Cache outcomes per memcached server "
               "(lease_timeouts: readers that gave up waiting and read the database; "
               "fill_races: fills refused because the key was invalidated meanwhile).\n"
               "# TYPE betcity_cache_ops_total counter\n");
        for (uint32_t i = 0; i < cs.nserver; i++) {
            const struct cache_server_stats *s = &cs.server[i];
            const uint64_t v[] = {s->hits,        s->misses,         s->fills,
                                  s->lease_waits, s->lease_timeouts, s->fill_races,
                                  s->errors};
            for (size_t k = 0; k < sizeof(v) / sizeof(v[0]); k++)
                fprintf(
                    f,
                    "betcity_cache_ops_total{instance=\"%s\",server=\"%s\",op=\"%s\"} "
                    "%" PRIu64 "\n",
                    name, s->name, names[k], v[k]);
        }
        fprintf(f,
                "# HELP betcity_cache_server_up 0 while the breaker skips the server.\n"
                "# TYPE betcity_cache_server_up gauge\n");
        for (uint32_t i = 0; i < cs.nserver; i++)
            fprintf(f, "betcity_cache_server_up{instance=\"%s\",server=\"%s\"} %d\n",
                    name, cs.server[i].name, cs.server[i].up);
        api_hot_stats(api_server_hot(req->srv), &hs);
        fprintf(f,
                "# HELP betcity_cache_near_hits_total Reads served by the in-process "
                "near-cache (memcached values, and the prebuilt odds responses).\n"
                "# TYPE betcity_cache_near_hits_total counter\n"
                "betcity_cache_near_hits_total{instance=\"%s\"} %" PRIu64 "\n"
                "# HELP betcity_hot_responses_total The prebuilt odds responses: "
                "answered from the table on an event loop (hits), put by a worker "
                "(fills), refused because a write dropped the entry meanwhile or a "
                "fresher one was there (stale).\n"
                "# TYPE betcity_hot_responses_total counter\n"
                "betcity_hot_responses_total{instance=\"%s\",outcome=\"hits\"} "
                "%" PRIu64 "\n"
                "betcity_hot_responses_total{instance=\"%s\",outcome=\"fills\"} "
                "%" PRIu64 "\n"
                "betcity_hot_responses_total{instance=\"%s\",outcome=\"stale\"} "
                "%" PRIu64 "\n",
                name, cs.near_hits + hs.hits, name, hs.hits, name, hs.fills, name,
                hs.stale);
    }
    api_pwhash_stats(api_server_pwhash(req->srv), &inflight, &done, &refused, &known);
    api_conns_of(req->srv, &open, &reaped, &capped);
    api_work_stats(api_server_work(req->srv), &ws);
    fprintf(
        f,
        "# HELP betcity_pwhash_queue Password hashes waiting or running.\n"
        "# TYPE betcity_pwhash_queue gauge\n"
        "betcity_pwhash_queue{instance=\"%s\"} %" PRIu64 "\n"
        "# HELP betcity_pwhash_total Password hashes done, and refused (queue full).\n"
        "# TYPE betcity_pwhash_total counter\n"
        "betcity_pwhash_total{instance=\"%s\",outcome=\"done\"} %" PRIu64 "\n"
        "betcity_pwhash_total{instance=\"%s\",outcome=\"refused\"} %" PRIu64 "\n"
        "# HELP betcity_pwhash_known_total Of the hashes done, those of known "
        "devices' logins (a device token), on places of their own.\n"
        "# TYPE betcity_pwhash_known_total counter\n"
        "betcity_pwhash_known_total{instance=\"%s\"} %" PRIu64 "\n"
        "# HELP betcity_auth_refusals_held Refused logins and sign-ups whose "
        "answer waits (auth_refusal_delay_ms).\n"
        "# TYPE betcity_auth_refusals_held gauge\n"
        "betcity_auth_refusals_held{instance=\"%s\"} %" PRIu32 "\n"
        "# HELP betcity_http_connections Open client connections.\n"
        "# TYPE betcity_http_connections gauge\n"
        "betcity_http_connections{instance=\"%s\"} %" PRIu64 "\n"
        "# HELP betcity_http_connections_closed_total Connections closed past a "
        "header or body deadline (reaped), refused by the per-address cap "
        "(capped).\n"
        "# TYPE betcity_http_connections_closed_total counter\n"
        "betcity_http_connections_closed_total{instance=\"%s\",why=\"reaped\"} "
        "%" PRIu64 "\n"
        "betcity_http_connections_closed_total{instance=\"%s\",why=\"capped\"} "
        "%" PRIu64 "\n",
        name, inflight, name, done, name, refused, name, known, name,
        api_tarpit_held(api_server_tarpit(req->srv)), name, open, name, reaped, name,
        capped);
    nloop = api_server_loops(req->srv, loop, API_LOOPS_MAX);
    fprintf(f,
            "# HELP betcity_token_verifications_total Bearer tokens verified by "
            "their HMAC; a connection's next request with the same token is not.\n"
            "# TYPE betcity_token_verifications_total counter\n"
            "betcity_token_verifications_total{instance=\"%s\"} %" PRIu64 "\n",
            name, api_server_verifies(req->srv));
    fprintf(f, "# HELP betcity_http_loop_connections Open client connections per event "
               "loop (in the order the loops took their first one).\n"
               "# TYPE betcity_http_loop_connections gauge\n");
    for (uint32_t i = 0; i < nloop && i < API_LOOPS_MAX; i++)
        fprintf(f, "betcity_http_loop_connections{instance=\"%s\",loop=\"%u\"} %u\n",
                name, i, loop[i]);
    fprintf(f,
            "# HELP betcity_work_requests Requests on the worker pool: waiting for a "
            "worker (queued), on one (running), waiting for the same user's earlier "
            "writes (parked), holding a place (queued, running, parked or waiting "
            "for a password hash).\n"
            "# TYPE betcity_work_requests gauge\n"
            "betcity_work_requests{instance=\"%s\",state=\"queued\"} %u\n"
            "betcity_work_requests{instance=\"%s\",state=\"running\"} %u\n"
            "betcity_work_requests{instance=\"%s\",state=\"parked\"} %u\n"
            "betcity_work_requests{instance=\"%s\",state=\"placed\"} %u\n"
            "# HELP betcity_work_threads Worker threads.\n"
            "# TYPE betcity_work_threads gauge\n"
            "betcity_work_threads{instance=\"%s\"} %u\n"
            "# HELP betcity_work_places Places on the worker pool (work_queue).\n"
            "# TYPE betcity_work_places gauge\n"
            "betcity_work_places{instance=\"%s\"} %u\n"
            "# HELP betcity_work_total Handler runs on the workers (done), requests "
            "refused because every place was taken (refused), writes refused because "
            "their user had work_parked_per_user waiting (parked_refused, 429).\n"
            "# TYPE betcity_work_total counter\n"
            "betcity_work_total{instance=\"%s\",outcome=\"done\"} %" PRIu64 "\n"
            "betcity_work_total{instance=\"%s\",outcome=\"refused\"} %" PRIu64 "\n"
            "betcity_work_total{instance=\"%s\",outcome=\"parked_refused\"} %" PRIu64
            "\n",
            name, ws.queued, name, ws.running, name, ws.parked, name, ws.places, name,
            ws.threads, name, ws.depth, name, ws.done, name, ws.refused, name,
            ws.park_refused);
    api_loop_stats(&answered, &to_worker, &marked, &mark_failed, &busy);
    fprintf(
        f,
        "# HELP betcity_loop_reads_total Statements started on an event loop "
        "(GET /v1/me, POST /v1/bets): answered there, or sent to a worker after "
        "all (no idle connection, a moved shard, a dead idle connection, a lock "
        "wait to retry).\n"
        "# TYPE betcity_loop_reads_total counter\n"
        "betcity_loop_reads_total{instance=\"%s\",outcome=\"answered\"} %" PRIu64 "\n"
        "betcity_loop_reads_total{instance=\"%s\",outcome=\"to_worker\"} %" PRIu64 "\n"
        "# HELP betcity_loop_shared_reads_total Reads started on an event loop "
        "in one statement with other reads of the same host (read_batch).\n"
        "# TYPE betcity_loop_shared_reads_total counter\n"
        "betcity_loop_shared_reads_total{instance=\"%s\"} %" PRIu64 "\n"
        "# HELP betcity_loop_marks_total Read-your-writes marks of the writes "
        "answered on an event loop, set without blocking: set, or failed (no "
        "server took it, an error, no answer in the cache's timeout).\n"
        "# TYPE betcity_loop_marks_total counter\n"
        "betcity_loop_marks_total{instance=\"%s\",outcome=\"set\"} %" PRIu64 "\n"
        "betcity_loop_marks_total{instance=\"%s\",outcome=\"failed\"} %" PRIu64 "\n"
        "# HELP betcity_loop_statements Statements of the event loops now: in "
        "flight, or waiting on their loop for a connection.\n"
        "# TYPE betcity_loop_statements gauge\n"
        "betcity_loop_statements{instance=\"%s\"} %" PRIu64 "\n",
        name, answered, name, to_worker, name, api_loop_shared(), name, marked, name,
        mark_failed, name, busy);
    fprintf(f,
            "# HELP betcity_map_version The shard map version this server routes by "
            "(every server's the same soon after a move or a failover).\n"
            "# TYPE betcity_map_version gauge\n"
            "betcity_map_version{instance=\"%s\"} %" PRIu64 "\n"
            "# HELP betcity_read_your_writes_flags 1 while this server's writes set "
            "the read-your-writes flag (a replica could answer reads), 0 while no "
            "replica could.\n"
            "# TYPE betcity_read_your_writes_flags gauge\n"
            "betcity_read_your_writes_flags{instance=\"%s\"} %d\n",
            name, router_map_version(req->router), name,
            router_replicas_possible(req->router));
    fclose(f);
    free(hosts);
    api_reply_raw(req, 200, "text/plain; version=0.0.4", buf, len);
    free(buf);
}

void api_h_healthz(struct api_req *req)
{
    api_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

/*
 * Ready while the server can route, that is while it has a shard map: with
 * the global host down the router keeps the map it has, and the shards of
 * the other hosts are served, so HAProxy must keep sending requests here;
 * the body says that the global database is missing. Without a map nothing
 * can be routed, and a server that stops is being taken out. The shard
 * hosts are not asked: a host down fails its own shards only, the same on
 * every server, and the router's down marks last a second, too short to
 * take a server out of HAProxy by.
 */
void api_h_readyz(struct api_req *req)
{
    const char *reason = NULL;

    if (api_server_stopping(req->srv))
        reason = "the server is stopping";
    else if (router_map(req->router) == NULL)
        reason = "no shard map loaded";
    if (reason != NULL) {
        api_reply_json(req, 503,
                       json_pack("{s:s,s:s}", "status", "not_ready", "reason", reason));
        return;
    }
    if (router_exec(req->router, ROUTER_GLOBAL, NULL, "SELECT 1") < 0) {
        api_reply_json(req, 200,
                       json_pack("{s:s,s:s,s:s}", "status", "ready", "global",
                                 "unavailable", "reason",
                                 "the global database is unreachable: shards are "
                                 "routed by the map already loaded"));
        return;
    }
    api_reply_json(req, 200, json_pack("{s:s}", "status", "ready"));
}
