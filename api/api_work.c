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
 *
 * An item may carry a key (the API's: the user of a write): at most per_key
 * items of one key are queued or running at once; the next ones are parked
 * on their key, in order, without a thread, and one goes back to the front
 * of the queue each time one of its key ends. One user's writes all wait
 * for the same row lock: more of them at once would only make the lock's
 * queue longer than the statement deadline (and three timeouts in a row
 * mark a host down for everyone on it); parked, they wait their turn
 * without a deadline, as they did in the listen queue before. At most
 * park_max of them: each holds a place, and one user's flood of writes
 * (thousands of connections, or clients that send and hang up) took every
 * place, so that other users' requests were refused; past it, the key's
 * next reservations are (api_work_reserve_key()), and so are those that
 * would be parked once three quarters of the places are taken.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "api/api_int.h"

/* A key with items admitted (queued or running), and those parked behind. */
struct key_entry {
    uint64_t key;
    uint32_t active; /* admitted: queued or running, at most per_key */
    uint32_t nparked;
    struct api_work_item *parked, *parked_tail;
    struct key_entry *next; /* in its bucket, or the free list */
};

struct api_work {
    pthread_mutex_t lock;
    pthread_cond_t work; /* an item queued, or quitting */
    pthread_cond_t idle; /* no place taken */
    struct api_work_item *head, *tail;
    struct api_work_item
        *unparked_tail; /* the last of the queue's prefix back from parking */
    uint32_t depth;     /* places, at most */
    uint32_t places;    /* taken: queued, running, or between two runs */
    uint32_t queued;    /* items waiting for a thread */
    uint32_t running;   /* items on a thread */
    uint32_t nparked;   /* items waiting for their key's turn */
    uint32_t per_key;   /* 0: no bound */
    uint32_t park_max;  /* parked items of one key (0: no bound) */
    /* Keys with items in the pool: at most one per place, so depth entries. */
    struct key_entry **bucket, *entries, *free_entries;
    uint32_t nbucket; /* a power of two */
    int stopping;     /* drain(): no new place */
    int quit;         /* destroy(): threads leave once the queue is empty */
    uint32_t nthread;
    pthread_t *thread;
    atomic_uint_fast64_t done, refused, park_refused;
};

/* The entry of key in the table, made when add (or NULL). Under lock. */
static struct key_entry *key_find(struct api_work *w, uint64_t key, int add)
{
    struct key_entry **b =
        &w->bucket[(key * 0x9e3779b97f4a7c15ull) >> 32 & (w->nbucket - 1)];
    struct key_entry *e;

    for (e = *b; e != NULL; e = e->next)
        if (e->key == key)
            return e;
    if (!add || w->free_entries == NULL)
        return NULL; /* (no free entry: more keys than places, a caller's bug) */
    e = w->free_entries;
    w->free_entries = e->next;
    e->key = key;
    e->active = 0;
    e->parked = e->parked_tail = NULL;
    e->nparked = 0;
    e->next = *b;
    *b = e;
    return e;
}

static void key_free(struct api_work *w, struct key_entry *e)
{
    struct key_entry **b =
        &w->bucket[(e->key * 0x9e3779b97f4a7c15ull) >> 32 & (w->nbucket - 1)];

    while (*b != e)
        b = &(*b)->next;
    *b = e->next;
    e->next = w->free_entries;
    w->free_entries = e;
}

/*
 * Puts item on the queue and wakes a thread. front: after the other items
 * that came back from parking and wait still (a prefix of the queue, in the
 * order they came back), before everything else. Under lock.
 */
static void queue_push(struct api_work *w, struct api_work_item *item, int front)
{
    if (front) {
        struct api_work_item **at =
            w->unparked_tail ? &w->unparked_tail->next : &w->head;
        item->next = *at;
        *at = item;
        if (w->tail == NULL || w->tail == w->unparked_tail)
            w->tail = item;
        w->unparked_tail = item;
    } else {
        item->next = NULL;
        if (w->tail != NULL)
            w->tail->next = item;
        else
            w->head = item;
        w->tail = item;
    }
    w->queued++;
    pthread_cond_signal(&w->work);
}

/* An item of key ended its run: the next parked one of its key goes. Under lock. */
static void key_done(struct api_work *w, uint64_t key)
{
    struct key_entry *e = key != 0 && w->per_key > 0 ? key_find(w, key, 0) : NULL;
    struct api_work_item *next;

    if (e == NULL)
        return;
    e->active--;
    if ((next = e->parked) != NULL) {
        e->parked = next->next;
        if (e->parked == NULL)
            e->parked_tail = NULL;
        e->nparked--;
        w->nparked--;
        e->active++;
        queue_push(w, next, 1); /* it waited longer than what is queued */
    } else if (e->active == 0) {
        key_free(w, e);
    }
}

static void *work_main(void *arg)
{
    struct api_work *w = arg;
    struct api_work_item *item;
    uint64_t key;

    pthread_setname_np(pthread_self(), "bc-work");
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
        if (w->unparked_tail == item)
            w->unparked_tail = NULL;
        w->queued--;
        w->running++;
        key = item->key;
        pthread_mutex_unlock(&w->lock);
        /* The item may be freed (or queued again) by the time run() returns. */
        item->run(item);
        atomic_fetch_add_explicit(&w->done, 1, memory_order_relaxed);
        pthread_mutex_lock(&w->lock);
        w->running--;
        key_done(w, key);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int api_work_create(uint32_t nthread, uint32_t depth, uint32_t per_key,
                    uint32_t park_max, struct api_work **out)
{
    struct api_work *w;
    int rc;

    if (nthread == 0 || depth == 0)
        return -EINVAL;
    w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -ENOMEM;
    for (w->nbucket = 16; w->nbucket < depth && w->nbucket < (1u << 16);)
        w->nbucket *= 2;
    w->thread = calloc(nthread, sizeof(*w->thread));
    w->bucket = calloc(w->nbucket, sizeof(*w->bucket));
    w->entries = per_key > 0 ? calloc(depth, sizeof(*w->entries)) : NULL;
    if (w->thread == NULL || w->bucket == NULL || (per_key > 0 && w->entries == NULL)) {
        free(w->entries);
        free(w->bucket);
        free(w->thread);
        free(w);
        return -ENOMEM;
    }
    w->per_key = per_key;
    w->park_max = park_max;
    for (uint32_t i = 0; w->entries != NULL && i < depth; i++) {
        w->entries[i].next = w->free_entries;
        w->free_entries = &w->entries[i];
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
    free(w->entries);
    free(w->bucket);
    free(w->thread);
    free(w);
}

int api_work_reserve_key(struct api_work *w, uint64_t key)
{
    struct key_entry *e;
    int rc = -EAGAIN;

    pthread_mutex_lock(&w->lock);
    e = key != 0 && w->per_key > 0 && w->park_max > 0 ? key_find(w, key, 0) : NULL;
    /*
     * One that would be parked (its key has per_key items admitted) takes
     * no place of the pool's last quarter: those stay for requests that run
     * at once, so that accounts flooding writes (each up to per_key running
     * and park_max parked: 52 of them took all 1,024 places) leave the
     * others room.
     */
    if (e != NULL &&
        (e->nparked >= w->park_max ||
         (e->active >= w->per_key && w->places >= w->depth - w->depth / 4))) {
        rc = -EBUSY;
    } else if (!w->stopping && w->places < w->depth) {
        w->places++;
        rc = 0;
    }
    pthread_mutex_unlock(&w->lock);
    if (rc < 0)
        atomic_fetch_add_explicit(rc == -EBUSY ? &w->park_refused : &w->refused, 1,
                                  memory_order_relaxed);
    return rc;
}

int api_work_reserve(struct api_work *w)
{
    return api_work_reserve_key(w, 0);
}

void api_work_submit(struct api_work *w, struct api_work_item *item)
{
    struct key_entry *e;

    pthread_mutex_lock(&w->lock);
    e = item->key != 0 && w->per_key > 0 ? key_find(w, item->key, 1) : NULL;
    if (e == NULL)
        item->key = 0; /* not counted: its end must not count either */
    if (e != NULL && e->active >= w->per_key) {
        item->next = NULL;
        if (e->parked_tail != NULL)
            e->parked_tail->next = item;
        else
            e->parked = item;
        e->parked_tail = item;
        e->nparked++;
        w->nparked++;
    } else {
        if (e != NULL)
            e->active++;
        queue_push(w, item, 0);
    }
    pthread_mutex_unlock(&w->lock);
}

int api_work_key_take(struct api_work *w, uint64_t key)
{
    struct key_entry *e;
    int taken = 1;

    if (key == 0 || w->per_key == 0)
        return 1;
    pthread_mutex_lock(&w->lock);
    e = key_find(w, key, 1);
    if (e == NULL || e->active >= w->per_key)
        taken = 0;
    else
        e->active++;
    pthread_mutex_unlock(&w->lock);
    return taken;
}

void api_work_key_give(struct api_work *w, uint64_t key)
{
    if (key == 0 || w->per_key == 0)
        return;
    pthread_mutex_lock(&w->lock);
    key_done(w, key);
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
    st->parked = w->nparked;
    st->per_key = w->per_key;
    st->park_max = w->park_max;
    pthread_mutex_unlock(&w->lock);
    st->park_refused = atomic_load(&w->park_refused);
    st->done = atomic_load(&w->done);
    st->refused = atomic_load(&w->refused);
}
