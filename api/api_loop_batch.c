/*
 * api_loop_batch.c: a loop's batched reads (api_loop_read()). The reads
 * that one turn of a loop starts (the handlers that MHD_run() called) wait
 * until the turn ends; then those of one host go as one statement, the UNION
 * ALL of theirs, each SELECT tagged with its place as a first column, and
 * each read gets its own row back. A host spends about half the CPU on four
 * primary-key reads sent as one statement that it spends on four sent one by
 * one (docs/benchmarks.md), and the loop waits on one socket instead of four.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_loop_int.h"

#define SELECT_WORD "SELECT "

static atomic_uint_fast64_t n_shared; /* reads started in a shared statement */

uint64_t api_loop_shared(void)
{
    return atomic_load_explicit(&n_shared, memory_order_relaxed);
}

int api_batch_text(struct sql_buf *out, const struct sql_buf *const *reads, uint32_t n)
{
    size_t word = strlen(SELECT_WORD);
    int rc = 0;

    for (uint32_t i = 0; i < n && rc == 0; i++) {
        char head[48];
        int len;

        if (reads[i]->len <= word || strncmp(reads[i]->buf, SELECT_WORD, word) != 0)
            return -EINVAL;
        len = snprintf(head, sizeof(head), "%s(SELECT %" PRIu32 ", ",
                       i > 0 ? " UNION ALL " : "", i);
        rc = sql_buf_add(out, head, (size_t)len);
        if (rc == 0)
            rc = sql_buf_add(out, reads[i]->buf + word, reads[i]->len - word);
        if (rc == 0)
            rc = sql_buf_add(out, ")", 1);
    }
    return rc;
}

int api_batch_rows(const struct sql_rows *all, uint32_t i, struct sql_rows *view)
{
    char tag[16];
    int len = snprintf(tag, sizeof(tag), "%" PRIu32, i);

    memset(view, 0, sizeof(*view));
    if (all->ncol == 0)
        return all->nrow == 0 ? 0 : BC_EQUERY;
    view->ncol = all->ncol - 1;
    for (uint32_t r = 0; r < all->nrow; r++) {
        const char *c = sql_cell(all, r, 0);

        if (c == NULL || all->len[(uint64_t)r * all->ncol] != (unsigned long)len ||
            memcmp(c, tag, (size_t)len) != 0)
            continue;
        if (view->nrow > 0) { /* a batched read answers one row at most */
            memset(view, 0, sizeof(*view));
            return BC_EQUERY;
        }
        view->nrow = 1;
        view->cell = &all->cell[(uint64_t)r * all->ncol + 1];
        view->len = &all->len[(uint64_t)r * all->ncol + 1];
    }
    return 0;
}

int api_loop_read(struct api_req *req, api_loop_done done, uint32_t shard,
                  const char *fmt, ...)
{
    struct api_loop *l = api_loop_self();
    struct api_loop_wait *w;
    va_list ap;
    int rc;

    va_start(ap, fmt);
    if (l == NULL || req->router == NULL || atomic_load(&l->quit) ||
        (l->retry != NULL && l->retry->req == req) ||
        api_server_conf(req->srv)->limits.read_batch <= 1 ||
        strcmp(api_routes[req->route].method, "GET") != 0) {
        /* Alone: also a pending read's next try (start_pending()). */
        rc = api_loop__vquery(req, done, shard, fmt, ap);
        va_end(ap);
        return rc;
    }
    w = calloc(1, sizeof(*w));
    rc = w == NULL ? -ENOMEM : router_vformat(req->router, shard, &w->text, fmt, ap);
    va_end(ap);
    if (rc < 0) {
        if (w != NULL)
            api_loop__wait_free(w);
        return 0;
    }
    w->req = req;
    w->done = done;
    w->shard = shard;
    w->next = l->reads; /* started when the turn ends: api_loop__start_reads() */
    l->reads = w;
    req->where = API_ON_LOOP_DB;
    api_loop_suspend(l, req->conn);
    return 1;
}

/*
 * The turn's reads of one host (n, the first's host) as one statement, or
 * the read alone. Not started: each waits on the loop for a connection as
 * api_loop_query()'s do, or runs on a worker.
 */
static void start_batch(struct api_loop *l, struct api_loop_wait **batch, uint32_t n)
{
    struct api_loop_wait *w = batch[0];
    const struct sql_buf *text[API_READ_BATCH_MAX];
    struct sql_buf all = {0};
    int rc = 0;

    for (uint32_t i = 0; i < n; i++)
        text[i] = &batch[i]->text;
    if (n > 1 && (w->batch = malloc(n * sizeof(*batch))) == NULL)
        rc = -ENOMEM;
    if (rc == 0 && n > 1)
        rc = api_batch_text(&all, text, n);
    if (rc == 0)
        rc = router_op_start(w->req->router, w->shard, &w->rows, &w->op, "%R",
                             n > 1 ? all.buf : w->text.buf);
    sql_buf_deinit(&all);
    for (uint32_t i = 0; i < n; i++)
        sql_buf_deinit(&batch[i]->text);
    if (rc == 0) {
        if (n > 1) {
            memcpy(w->batch, batch, n * sizeof(*batch));
            atomic_fetch_add_explicit(&n_shared, n, memory_order_relaxed);
        }
        w->nbatch = n > 1 ? n : 0;
        api_loop__started(l, w, n);
        return;
    }
    free(w->batch);
    w->batch = NULL;
    for (uint32_t i = 0; i < n; i++)
        api_loop__not_started(l, batch[i], rc);
}

/* The turn's reads, by host: a statement for each (read_batch reads at most). */
void api_loop__start_reads(struct api_loop *l)
{
    struct api_loop_wait *batch[API_READ_BATCH_MAX];

    while (l->reads != NULL) {
        struct api_loop_wait *w = l->reads, **at = &l->reads;
        struct router *r = w->req->router;
        uintptr_t host = router_host_key(r, w->shard);
        uint32_t max = api_server_conf(w->req->srv)->limits.read_batch, n = 0;

        if (max > API_READ_BATCH_MAX)
            max = API_READ_BATCH_MAX;
        while ((w = *at) != NULL && n < max) {
            if (n == 0 || (host != 0 && w->req->router == r &&
                           router_host_key(r, w->shard) == host)) {
                *at = w->next;
                w->next = NULL;
                batch[n++] = w;
            } else {
                at = &w->next;
            }
        }
        start_batch(l, batch, n);
    }
}
