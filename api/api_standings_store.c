/*
 * api_standings_store.c: the writes of a recomputation's lists, beside its
 * reads.
 *
 * A recomputation makes its lists (JSON text) while it reads the shards,
 * and writes them under its new generation in one transaction on the global
 * host: multi-row REPLACEs of about STORE_BYTES each. Each REPLACE is sent
 * by a thread of the writer's own while the recomputation goes on to its
 * next scatter, so that the writes (a tenth to a fifth of a recomputation
 * on the 1,000,000-user bench) no longer come after the reads. Two buffers:
 * the one being filled and the one being written; a full buffer waits for
 * the previous write, so at most two statements' worth of lists are held.
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

#include "api/api_int.h"

/* Bytes of lists one statement writes (the server takes 16 MiB by default). */
#define STORE_BYTES (1024 * 1024)

struct api_lists {
    struct router_txn *txn;
    uint64_t gen;
    struct sql_buf out;     /* being filled: VALUES rows of a REPLACE */
    struct sql_buf writing; /* handed to the thread */
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
        int rc = router_txn_exec(l->txn, NULL,
                                 "REPLACE INTO %S.standings (kind, scope, generation, "
                                 "computed_at, body) VALUES %R",
                                 l->writing.buf);
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
    int rc = sql_format(&l->out, NULL, 0, "%R(%s, %u, %u, UTC_TIMESTAMP(3), %b)",
                        l->out.len ? "," : "", kind, scope, l->gen, text, len);

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
    free(l);
}
