/*
 * api_standings_store.c: the writes of a recomputation's lists, beside its
 * reads.
 *
 * A recomputation makes its lists (JSON text) while it reads the shards,
 * and writes them under its new generation in one transaction on the global
 * host: multi-row REPLACEs of about STORE_BYTES of lists each. Each REPLACE
 * is made and sent by a thread of the writer's own while the recomputation
 * goes on to its next scatter, so that the writes (a tenth to a fifth of a
 * recomputation on the 1,000,000-user bench) no longer come after the
 * reads. Two buffers: the one being filled and the one being written; a
 * full buffer waits for the previous write, so at most two statements'
 * worth of lists are held.
 *
 * The thread stores each list deflated (zlib, its fastest level) in
 * body_deflate, body left empty: JSON of names and numbers shrinks about
 * 8 times (15 MB of lists a recomputation at 1,000,000 users: 1.75 MB).
 * Every byte stored is also written to the redo log, copied into the
 * binlog at the commit (under the lock every other commit of the host
 * waits for) and sent to each replica. MariaDB also copies each
 * statement's text into the binlog beside its rows
 * (binlog_annotate_row_events, on by default, and only an administrator
 * may turn it off for a session), so the deflated bytes go as an escaped
 * _binary string, about their own size, not as hex, twice it: 3.7 MB of
 * binlog a recomputation at 1,000,000 users instead of 32.8 MB with the
 * text (docs/benchmarks.md, "Run 169"). Readers inflate
 * (api_standings_read.c).
 *
 * The transaction belongs to one thread at a time: the writer's thread from
 * a flush until the write is done, the caller's otherwise (api_lists_finish
 * waits for the last write before it returns, and the caller commits).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "api/api_int.h"

/* Bytes of lists (before deflating) one statement writes. */
#define STORE_BYTES (2 * 1024 * 1024)

/*
 * A list queued in a buffer: this header, then its len bytes of text. The
 * kind is one of the recomputation's own names (users, teams, companies).
 */
struct queued {
    char kind[16];
    uint64_t scope;
    size_t len;
};

struct api_lists {
    struct router_txn *txn;
    uint64_t gen;
    struct sql_buf out;     /* being filled: lists queued (struct queued, text) */
    struct sql_buf writing; /* handed to the thread */
    struct sql_buf sql;     /* the thread's: the REPLACE of writing's lists */
    unsigned char *packed;  /* the thread's: one list deflated */
    size_t packed_cap;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int busy; /* writing holds a statement the thread has not written yet */
    int quit; /* the thread leaves once not busy */
    int rc;   /* the first failed write's status, else 0 */
    char error[256];
    uint32_t stores;
    int64_t store_ms;
};

/*
 * The one list at p (len bytes) deflated into l->packed (*n bytes): 0,
 * -ENOMEM or -EIO.
 */
static int deflate_list(struct api_lists *l, const char *p, size_t len, size_t *n)
{
    uLongf size = compressBound((uLong)len);

    if (size > l->packed_cap) {
        unsigned char *b = realloc(l->packed, size);
        if (b == NULL)
            return -ENOMEM;
        l->packed = b;
        l->packed_cap = size;
    }
    if (compress2(l->packed, &size, (const Bytef *)p, (uLong)len, Z_BEST_SPEED) != Z_OK)
        return -EIO;
    *n = size;
    return 0;
}

/*
 * l->sql: the VALUES rows of the lists queued in l->writing, each deflated
 * (body empty). 0, -ENOMEM, or -EIO when zlib fails.
 */
static int make_rows(struct api_lists *l)
{
    size_t off = 0;
    int rc = 0;

    l->sql.len = 0;
    while (rc == 0 && off < l->writing.len) {
        struct queued q;
        const char *text;
        size_t n;

        memcpy(&q, l->writing.buf + off, sizeof(q));
        text = l->writing.buf + off + sizeof(q);
        off += sizeof(q) + q.len;
        if ((rc = deflate_list(l, text, q.len, &n)) < 0)
            return rc;
        rc = sql_format(
            &l->sql, NULL, 0, "%R(%s, %u, %u, UTC_TIMESTAMP(3), '', _binary %b)",
            l->sql.len ? "," : "", q.kind, q.scope, l->gen, (const char *)l->packed, n);
    }
    return rc;
}

static void *writer_main(void *arg)
{
    struct api_lists *l = arg;

    pthread_mutex_lock(&l->lock);
    for (;;) {
        while (!l->busy && !l->quit)
            pthread_cond_wait(&l->cond, &l->lock);
        if (!l->busy)
            break;
        pthread_mutex_unlock(&l->lock);
        int64_t t = sql_now_ms();
        int rc = make_rows(l);
        if (rc == 0)
            rc = router_txn_exec(l->txn, NULL,
                                 "REPLACE INTO %S.standings (kind, scope, generation, "
                                 "computed_at, body, body_deflate) VALUES %R",
                                 l->sql.buf);
        else
            sql_set_error("cannot deflate the standings' lists: %s",
                          rc == -ENOMEM ? "out of memory" : "zlib failed");
        t = sql_now_ms() - t;
        pthread_mutex_lock(&l->lock);
        if (rc < 0 && l->rc == 0) {
            l->rc = rc;
            snprintf(l->error, sizeof(l->error), "%s", router_last_error());
        }
        l->writing.len = 0;
        l->stores++;
        l->store_ms += t;
        l->busy = 0;
        pthread_cond_broadcast(&l->cond);
    }
    pthread_mutex_unlock(&l->lock);
    return NULL;
}

int api_lists_start(struct router_txn *txn, uint64_t gen, struct api_lists **out)
{
    struct api_lists *l = calloc(1, sizeof(*l));

    *out = NULL;
    if (l == NULL)
        return -ENOMEM;
    l->txn = txn;
    l->gen = gen;
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->cond, NULL);
    if (pthread_create(&l->thread, NULL, writer_main, l) != 0) {
        pthread_cond_destroy(&l->cond);
        pthread_mutex_destroy(&l->lock);
        free(l);
        return -EAGAIN;
    }
    *out = l;
    return 0;
}

/* Waits for the write in progress; its status (and the first failure's). */
static int wait_idle(struct api_lists *l)
{
    int rc;

    pthread_mutex_lock(&l->lock);
    while (l->busy)
        pthread_cond_wait(&l->cond, &l->lock);
    rc = l->rc;
    pthread_mutex_unlock(&l->lock);
    if (rc < 0)
        sql_set_error("%s", l->error);
    return rc;
}

/* Hands the lists made so far to the thread, once it is done with the last. */
static int flush(struct api_lists *l)
{
    struct sql_buf t;
    int rc;

    if (l->out.len == 0)
        return 0;
    if ((rc = wait_idle(l)) < 0)
        return rc;
    pthread_mutex_lock(&l->lock);
    t = l->writing;
    l->writing = l->out;
    l->out = t;
    l->out.len = 0;
    l->busy = 1;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->lock);
    return 0;
}

int api_lists_add(struct api_lists *l, const char *kind, uint64_t scope,
                  const char *text, size_t len)
{
    struct queued q = {.scope = scope, .len = len};
    int rc;

    if (strlen(kind) >= sizeof(q.kind))
        return -EINVAL;
    strcpy(q.kind, kind);
    rc = sql_buf_add(&l->out, (const char *)&q, sizeof(q));
    if (rc == 0)
        rc = sql_buf_add(&l->out, text, len);
    if (rc == 0 && l->out.len >= STORE_BYTES)
        rc = flush(l);
    return rc;
}

int api_lists_finish(struct api_lists *l, uint32_t *stores, int64_t *store_ms)
{
    int rc = flush(l);
    int last = wait_idle(l);

    *stores = l->stores;
    *store_ms = l->store_ms;
    return rc < 0 ? rc : last;
}

void api_lists_destroy(struct api_lists *l)
{
    if (l == NULL)
        return;
    pthread_mutex_lock(&l->lock);
    l->quit = 1;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->lock);
    pthread_join(l->thread, NULL);
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->lock);
    sql_buf_deinit(&l->out);
    sql_buf_deinit(&l->writing);
    sql_buf_deinit(&l->sql);
    free(l->packed);
    free(l);
}
