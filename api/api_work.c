/*
 * api_work.c: the worker pool that runs the API's handlers off the event
 * loops.
 *
 * libmicrohttpd's loop threads (one per core) only parse requests, answer
 * what needs no I/O and queue responses; a request whose handler may wait
 * for the database or memcached reserves a place here, has its connection
 * suspended, and runs on one of the pool's threads, which resumes the
 * connection when the answer is ready. The pool is sized for database
 * concurrency (tens of threads, each blocked on a statement most of its
 * time), not for the cores: a slow host holds workers, never a loop.
 *
 * A place is what bounds the pool: it is taken at admission (refused at
 * once when all are taken: the caller answers 503) and given back when the
 * request is done with the pool, which may be after several runs (a handler
 * that waits for a password hash between two of them). Items run in the
 * order they were queued. The shape is that of the password-hash queue
 * (api_pwhash.c): reserve, submit, release, drain.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "api/api_int.h"

struct api_work {
    pthread_mutex_t lock;
    pthread_cond_t work; /* an item queued, or quitting */
    pthread_cond_t idle; /* no place taken */
    struct api_work_item *head, *tail;
    uint32_t depth;   /* places, at most */
    uint32_t places;  /* taken: queued, running, or between two runs */
    uint32_t queued;  /* items waiting for a thread */
    uint32_t running; /* items on a thread */
    int stopping;     /* drain(): no new place */
    int quit;         /* destroy(): threads leave once the queue is empty */
    uint32_t nthread;
    pthread_t *thread;
    atomic_uint_fast64_t done, refused;
};

static void *work_main(void *arg)
{
    struct api_work *w = arg;
    struct api_work_item *item;

    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (w->head == NULL && !w->quit)
            pthread_cond_wait(&w->work, &w->lock);
        item = w->head;
        if (item == NULL)
            break;
        w->head = item->next;
        if (w->head == NULL)
            w->tail = NULL;
        w->queued--;
        w->running++;
        pthread_mutex_unlock(&w->lock);
        /* The item may be freed by the time run() returns: not touched after. */
        item->run(item);
        atomic_fetch_add_explicit(&w->done, 1, memory_order_relaxed);
        pthread_mutex_lock(&w->lock);
        w->running--;
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int api_work_create(uint32_t nthread, uint32_t depth, struct api_work **out)
{
    struct api_work *w;
    int rc;

    if (nthread == 0 || depth == 0)
        return -EINVAL;
    w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -ENOMEM;
    w->thread = calloc(nthread, sizeof(*w->thread));
    if (w->thread == NULL) {
        free(w);
        return -ENOMEM;
    }
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->work, NULL);
    pthread_cond_init(&w->idle, NULL);
    w->depth = depth;
    for (; w->nthread < nthread; w->nthread++)
        if ((rc = -pthread_create(&w->thread[w->nthread], NULL, work_main, w)) < 0) {
            api_work_destroy(w);
            return rc;
        }
    *out = w;
    return 0;
}

void api_work_drain(struct api_work *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = 1;
    while (w->places > 0)
        pthread_cond_wait(&w->idle, &w->lock);
    pthread_mutex_unlock(&w->lock);
}

void api_work_destroy(struct api_work *w)
{
    if (w == NULL)
        return;
    api_work_drain(w);
    pthread_mutex_lock(&w->lock);
    w->quit = 1;
    pthread_cond_broadcast(&w->work);
    pthread_mutex_unlock(&w->lock);
    for (uint32_t i = 0; i < w->nthread; i++)
        pthread_join(w->thread[i], NULL);
    pthread_cond_destroy(&w->idle);
    pthread_cond_destroy(&w->work);
    pthread_mutex_destroy(&w->lock);
    free(w->thread);
    free(w);
}

int api_work_reserve(struct api_work *w)
{
    int rc = -EAGAIN;

    pthread_mutex_lock(&w->lock);
    if (!w->stopping && w->places < w->depth) {
        w->places++;
        rc = 0;
    }
    pthread_mutex_unlock(&w->lock);
    if (rc < 0)
        atomic_fetch_add_explicit(&w->refused, 1, memory_order_relaxed);
    return rc;
}

void api_work_submit(struct api_work *w, struct api_work_item *item)
{
    item->next = NULL;
    pthread_mutex_lock(&w->lock);
    if (w->tail != NULL)
        w->tail->next = item;
    else
        w->head = item;
    w->tail = item;
    w->queued++;
    pthread_cond_signal(&w->work);
    pthread_mutex_unlock(&w->lock);
}

void api_work_release(struct api_work *w)
{
    pthread_mutex_lock(&w->lock);
    if (--w->places == 0)
        pthread_cond_broadcast(&w->idle);
    pthread_mutex_unlock(&w->lock);
}

void api_work_stats(struct api_work *w, struct api_work_stats *st)
{
    pthread_mutex_lock(&w->lock);
    st->threads = w->nthread;
    st->depth = w->depth;
    st->places = w->places;
    st->queued = w->queued;
    st->running = w->running;
    pthread_mutex_unlock(&w->lock);
    st->done = atomic_load(&w->done);
    st->refused = atomic_load(&w->refused);
}
