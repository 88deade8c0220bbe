/*
 * router_scatter.c: one statement shape over every shard.
 *
 * The cost that matters is round trips, not shards: each host gets ONE
 * statement that covers all of its shards (a UNION ALL of the shape over its
 * schemas, or a multi-statement batch for writes), and the hosts run in
 * parallel, one thread each. The call returns when every host answered or
 * hit its deadline, so a dead host costs at most one timeout. A background
 * thread's scatter may ask fewer hosts at once (router_set_background_hosts()),
 * and its hosts that share a machine take turns (router_machine.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router/router_int.h"

enum scatter_kind { SCATTER_UNION, SCATTER_TOPK, SCATTER_BATCH };

struct scatter_host {
    struct router *router;    /* ref */
    struct router_pool *pool; /* ref */
    struct sql_buf sql;
    struct sql_rows rows;
    uint32_t nparts; /* shards in the statement */
    int rc;
    char error[256];
    int background; /* the caller's mode (router_background()) */
};

static void *scatter_main(void *arg)
{
    struct scatter_host *h = arg;
    struct router_conn *conn;
    int broken = 0;

    int token = -1;

    /* The mode is per thread: a host's thread takes its caller's. */
    router_background(h->background);
    /* Background statements of hosts that share a machine take turns. */
    if (h->background)
        (void)router__machine_enter(h->router, h->pool,
                                    h->background == ROUTER_BACKGROUND_PER_CORE
                                        ? ROUTER_MACHINE_PER_CORE_PCT
                                        : 0,
                                    NULL, NULL, &token);
    h->rc = router__conn_get(h->router, h->pool, &conn);
    if (h->rc == 0) {
        h->rc = router__conn_query(h->router, conn, h->sql.buf, h->sql.len, &h->rows,
                                   &broken);
        router__conn_put(conn, broken);
    }
    router_machine_leave(h->router, token);
    if (h->rc < 0)
        snprintf(h->error, sizeof(h->error), "%s", router_last_error());
    return NULL;
}

/* The threads that ask the hosts: each takes the next host not yet asked. */
struct scatter_crew {
    struct scatter_host *hosts; /* ref */
    uint32_t n;
    atomic_uint next;
};

static void *crew_main(void *arg)
{
    struct scatter_crew *crew = arg;
    uint32_t i;

    while ((i = atomic_fetch_add(&crew->next, 1)) < crew->n)
        if (crew->hosts[i].nparts > 0)
            scatter_main(&crew->hosts[i]);
    return NULL;
}

/*
 * Asks the hosts width at a time: width - 1 threads and the caller's (the
 * caller's alone when no thread is to be had).
 */
static void scatter_crew_run(struct scatter_host *hosts, uint32_t n, uint32_t width)
{
    struct scatter_crew crew = {.hosts = hosts, .n = n};
    pthread_t *threads = calloc(width, sizeof(*threads));
    uint32_t started = 0;

    atomic_init(&crew.next, 0);
    while (threads != NULL && started + 1 < width &&
           pthread_create(&threads[started], NULL, crew_main, &crew) == 0)
        started++;
    crew_main(&crew);
    for (uint32_t i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    free(threads);
}

void router_set_background_hosts(struct router *r, uint32_t n)
{
    atomic_store(&r->bg_hosts, n);
}

/* Appends the shape for one shard to the host's statement. */
static int add_part(struct router *r, struct sql_buf *sql, enum scatter_kind kind,
                    uint32_t shard, int first, const char *fmt, va_list ap)
{
    va_list copy;
    int rc;

    if (!first && (rc = sql_buf_add(sql, kind == SCATTER_BATCH ? ";\n" : "\nUNION ALL ",
                                    kind == SCATTER_BATCH ? 2 : 11)) < 0)
        return rc;
    if (kind != SCATTER_BATCH && (rc = sql_buf_add(sql, "(", 1)) < 0)
        return rc;
    va_copy(copy, ap);
    rc = router__vformat(r, shard, sql, fmt, copy);
    va_end(copy);
    if (rc == 0 && kind != SCATTER_BATCH)
        rc = sql_buf_add(sql, ")", 1);
    return rc;
}

/*
 * Builds each host's statement, runs them in parallel and leaves the results
 * in *out (*nout hosts, to be freed with scatter_free() whatever the status).
 */
static int scatter_run(struct router *r, enum scatter_kind kind, const char *head,
                       const char *tail, struct scatter_host **out, uint32_t *nout,
                       const char *fmt, va_list ap)
{
    struct router_map *m = atomic_load(&r->current);
    struct scatter_host *hosts;
    uint32_t nnode, width;
    int rc = 0;

    *out = NULL;
    *nout = 0;
    if (m == NULL) {
        router__no_map_error(r);
        return BC_ENOMAP;
    }
    nnode = m->map->nnode;
    hosts = calloc(nnode, sizeof(*hosts));
    if (hosts == NULL)
        return -ENOMEM;
    *out = hosts;
    *nout = nnode;
    for (uint32_t n = 0; n < nnode; n++) {
        hosts[n].router = r;
        hosts[n].pool = m->pool_of[n];
        hosts[n].background = router__background();
    }
    for (uint32_t s = 0; s < r->nshard && rc == 0; s++) {
        struct scatter_host *h = &hosts[m->map->node_of[s]];
        if (h->nparts == 0 && head != NULL)
            rc = sql_buf_add(&h->sql, head, strlen(head));
        if (rc == 0)
            rc = add_part(r, &h->sql, kind, s, h->nparts == 0, fmt, ap);
        h->nparts++;
    }
    for (uint32_t n = 0; n < nnode && rc == 0 && tail != NULL; n++)
        if (hosts[n].nparts > 0)
            rc = sql_buf_add(&hosts[n].sql, tail, strlen(tail));
    if (rc < 0)
        return rc;
    /* Every host at once, unless a background thread's scatter is capped. */
    width = atomic_load(&r->bg_hosts);
    if (!router__background() || width == 0 || width > nnode)
        width = nnode;
    scatter_crew_run(hosts, nnode, width);
    return 0;
}

static void scatter_free(struct scatter_host *hosts, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        sql_buf_deinit(&hosts[i].sql);
        sql_rows_free(&hosts[i].rows);
    }
    free(hosts);
}

/*
 * First failure of any host, with its message made the thread's error; a
 * missing schema or a fenced copy is a moved shard (router__moved()).
 */
static int scatter_status(struct scatter_host *hosts, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (hosts[i].rc < 0) {
            router__set_error("%s", hosts[i].error);
            return router__moved(hosts[i].rc);
        }
    return 0;
}

static int scatter_gather(struct router *r, enum scatter_kind kind, const char *head,
                          const char *tail, struct sql_rows *rows, const char *fmt,
                          va_list ap)
{
    struct scatter_host *hosts;
    uint32_t n;
    int rc;

    rc = scatter_run(r, kind, head, tail, &hosts, &n, fmt, ap);
    if (rc == 0)
        rc = scatter_status(hosts, n);
    for (uint32_t i = 0; i < n && rc == 0 && rows != NULL; i++)
        rc = sql_rows_append(rows, &hosts[i].rows);
    if (rc < 0 && rows != NULL)
        sql_rows_free(rows);
    scatter_free(hosts, n);
    return rc;
}

/* A read: when a shard moved under it, it is safe to ask every host again. */
static int scatter_read(struct router *r, const char *head, const char *tail,
                        struct sql_rows *rows, const char *fmt, va_list ap)
{
    int64_t deadline = 0;
    va_list again;
    uint64_t seen;
    int rc;

    do {
        seen = router_map_version(r);
        va_copy(again, ap);
        rc = scatter_gather(r, SCATTER_UNION, head, tail, rows, fmt, again);
        va_end(again);
    } while (rc == BC_EMOVED && router_await_move(r, seen, &deadline) == 0);
    return rc;
}

int router_scatter(struct router *r, struct sql_rows *rows, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = scatter_read(r, NULL, NULL, rows, fmt, ap);
    va_end(ap);
    return rc;
}

int router_scatter_wrap(struct router *r, struct sql_rows *rows, const char *head,
                        const char *tail, const char *fmt, ...)
{
    va_list ap;
    int rc;

    if (tail == NULL) /* head may be NULL: see router.h */
        return -EINVAL;
    va_start(ap, fmt);
    rc = scatter_read(r, head, tail, rows, fmt, ap);
    va_end(ap);
    return rc;
}

int router_scatter_exec(struct router *r, struct sql_rows *rows, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = scatter_gather(r, SCATTER_BATCH, NULL, NULL, rows, fmt, ap);
    va_end(ap);
    return rc;
}

/* k-way merge of the hosts' sorted lists into rows, best first, at most k. */
static int merge_topk(struct scatter_host *hosts, uint32_t n, uint32_t k,
                      router_row_cmp cmp, void *arg, struct sql_rows *rows)
{
    uint32_t pos[SHARDMAP_MAX_HOSTS] = {0}, ncol = 0, total = 0;

    for (uint32_t i = 0; i < n; i++) {
        if (hosts[i].rows.nrow > 0)
            ncol = hosts[i].rows.ncol;
        total += hosts[i].rows.nrow;
    }
    if (total > k)
        total = k;
    rows->ncol = ncol;
    rows->nrow = 0;
    if (total == 0)
        return 0;
    rows->cell = calloc((size_t)total * ncol, sizeof(*rows->cell));
    rows->len = calloc((size_t)total * ncol, sizeof(*rows->len));
    if (rows->cell == NULL || rows->len == NULL)
        return -ENOMEM;
    while (rows->nrow < total) {
        int best = -1;
        for (uint32_t i = 0; i < n; i++) {
            struct sql_rows *hr = &hosts[i].rows;
            if (pos[i] >= hr->nrow)
                continue;
            if (best < 0 || cmp((const char *const *)&hr->cell[(size_t)pos[i] * ncol],
                                (const char *const *)&hosts[best]
                                    .rows.cell[(size_t)pos[best] * ncol],
                                arg) < 0)
                best = (int)i;
        }
        struct sql_rows *src = &hosts[best].rows;
        size_t from = (size_t)pos[best]++ * ncol, to = (size_t)rows->nrow++ * ncol;
        for (uint32_t c = 0; c < ncol; c++) {
            rows->cell[to + c] = src->cell[from + c];
            rows->len[to + c] = src->len[from + c];
        }
    }
    /* The moved cells' bytes are in the hosts' blocks: rows owns them now. */
    for (uint32_t i = 0; i < n; i++)
        sql_rows_adopt(rows, &hosts[i].rows);
    return 0;
}

int router_scatter_topk(struct router *r, struct sql_rows *rows, uint32_t k,
                        const char *order_sql, router_row_cmp cmp, void *cmp_arg,
                        const char *fmt, ...)
{
    struct scatter_host *hosts;
    struct sql_buf tail = {0};
    int64_t deadline = 0;
    va_list ap, again;
    char limit[32];
    uint64_t seen;
    uint32_t n;
    int rc;

    if (k == 0)
        return -EINVAL;
    /* Each host: SELECT * FROM (its union) t ORDER BY order_sql LIMIT k. */
    snprintf(limit, sizeof(limit), " LIMIT %u", k);
    if ((rc = sql_buf_add(&tail, ") t ORDER BY ", 13)) < 0 ||
        (rc = sql_buf_add(&tail, order_sql, strlen(order_sql))) < 0 ||
        (rc = sql_buf_add(&tail, limit, strlen(limit))) < 0) {
        sql_buf_deinit(&tail);
        return rc;
    }
    va_start(ap, fmt);
    do {
        seen = router_map_version(r);
        va_copy(again, ap);
        rc = scatter_run(r, SCATTER_TOPK, "SELECT * FROM (", tail.buf, &hosts, &n, fmt,
                         again);
        va_end(again);
        if (rc == 0)
            rc = scatter_status(hosts, n);
        if (rc == 0)
            rc = merge_topk(hosts, n, k, cmp, cmp_arg, rows);
        if (rc < 0)
            sql_rows_free(rows);
        scatter_free(hosts, n);
    } while (rc == BC_EMOVED && router_await_move(r, seen, &deadline) == 0);
    va_end(ap);
    sql_buf_deinit(&tail);
    return rc;
}
