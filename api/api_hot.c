/*
 * api_hot.c: the hot table: prebuilt responses of the hottest read,
 * GET /v1/matches/{id}/odds, one per match, answered on the event loop.
 *
 * An entry is a whole libmicrohttpd response (body, Content-Type and the
 * headers every answer has: api_response_make()), built once by the worker
 * that filled it. libmicrohttpd counts a response's references, so one
 * response is queued on any number of connections at once; the table holds
 * one reference, each connection that sends it another, and the body is
 * freed with the last. A hit is thus a lookup by the match's id under the
 * slot's lock and MHD_queue_response(): no memcached key hashed, nothing
 * allocated, nothing copied.
 *
 * Freshness is the near-cache's rule (cache/cache.h, CACHE_NEAR_MS): an
 * entry lives CACHE_NEAR_MS from the moment its filler began to read its
 * body from memcached (or the database), so a server shows odds older than
 * a write for at most that long after the write's invalidation. The
 * writer's own server drops the entry at once (api_match_changed(), after
 * its memcached deletes), and a fill that began before the drop does not
 * come in after it: every drop bumps its slot's generation, which a fill
 * reads before its body and its put checks.
 *
 * The table is direct-mapped (ids are AUTO_INCREMENT: consecutive matches
 * take consecutive slots), with striped locks; a put evicts whatever had
 * the slot.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "api/api_int.h"

#define HOT_SLOTS 4096
#define HOT_STRIPES 64

struct hot_slot {
    uint64_t id; /* 0: empty */
    uint64_t gen;
    int64_t expires_ms;        /* of the clock the callers pass */
    struct MHD_Response *resp; /* the table's reference; NULL: empty */
};

/* A lock and the counters it guards, on a cache line of their own. */
struct hot_stripe {
    pthread_mutex_t lock;
    uint64_t hits, fills, stale; /* under lock */
} __attribute__((aligned(64)));

struct api_hot {
    struct hot_stripe stripe[HOT_STRIPES];
    struct hot_slot slot[HOT_SLOTS];
};

static struct hot_slot *slot_of(struct api_hot *h, uint64_t id,
                                struct hot_stripe **stripe)
{
    uint32_t i = (uint32_t)(id % HOT_SLOTS);

    *stripe = &h->stripe[i % HOT_STRIPES];
    return &h->slot[i];
}

int api_hot_create(struct api_hot **out)
{
    struct api_hot *h = calloc(1, sizeof(*h));

    if (h == NULL)
        return -ENOMEM;
    for (int i = 0; i < HOT_STRIPES; i++)
        pthread_mutex_init(&h->stripe[i].lock, NULL);
    *out = h;
    return 0;
}

void api_hot_destroy(struct api_hot *h)
{
    if (h == NULL)
        return;
    for (int i = 0; i < HOT_SLOTS; i++)
        if (h->slot[i].resp != NULL)
            MHD_destroy_response(h->slot[i].resp);
    for (int i = 0; i < HOT_STRIPES; i++)
        pthread_mutex_destroy(&h->stripe[i].lock);
    free(h);
}

int api_hot_use(struct api_hot *h, uint64_t id, int64_t now_ms,
                void (*use)(void *arg, struct MHD_Response *resp), void *arg)
{
    struct hot_stripe *st;
    struct hot_slot *s = slot_of(h, id, &st);
    int hit;

    pthread_mutex_lock(&st->lock);
    hit = s->resp != NULL && s->id == id && s->expires_ms > now_ms;
    if (hit) {
        /* Under the lock: a put or drop cannot release the response meanwhile. */
        use(arg, s->resp);
        st->hits++;
    }
    pthread_mutex_unlock(&st->lock);
    return hit;
}

uint64_t api_hot_gen(struct api_hot *h, uint64_t id)
{
    struct hot_stripe *st;
    struct hot_slot *s = slot_of(h, id, &st);
    uint64_t gen;

    pthread_mutex_lock(&st->lock);
    gen = s->gen;
    pthread_mutex_unlock(&st->lock);
    return gen;
}

int api_hot_put(struct api_hot *h, uint64_t id, uint64_t gen, int64_t expires_ms,
                struct MHD_Response *resp)
{
    struct hot_stripe *st;
    struct hot_slot *s = slot_of(h, id, &st);
    struct MHD_Response *old = resp;
    int rc = -ESTALE;

    pthread_mutex_lock(&st->lock);
    /*
     * Refused when the slot was dropped since the fill began (its body may
     * predate the write that dropped it), or when it holds this match's
     * body read later than this one (fills that raced: the fresher stays).
     */
    if (s->gen == gen &&
        !(s->resp != NULL && s->id == id && s->expires_ms > expires_ms)) {
        old = s->resp;
        s->id = id;
        s->expires_ms = expires_ms;
        s->resp = resp;
        st->fills++;
        rc = 0;
    } else {
        st->stale++;
    }
    pthread_mutex_unlock(&st->lock);
    /* The table's reference to what it no longer holds (connections keep theirs). */
    if (old != NULL)
        MHD_destroy_response(old);
    return rc;
}

void api_hot_drop(struct api_hot *h, uint64_t id)
{
    struct hot_stripe *st;
    struct hot_slot *s = slot_of(h, id, &st);
    struct MHD_Response *old = NULL;

    pthread_mutex_lock(&st->lock);
    s->gen++;
    if (s->id == id) {
        old = s->resp;
        s->resp = NULL;
        s->id = 0;
    }
    pthread_mutex_unlock(&st->lock);
    if (old != NULL)
        MHD_destroy_response(old);
}

void api_hot_stats(struct api_hot *h, struct api_hot_stats *out)
{
    out->hits = out->fills = out->stale = 0;
    for (int i = 0; i < HOT_STRIPES; i++) {
        struct hot_stripe *st = &h->stripe[i];
        pthread_mutex_lock(&st->lock);
        out->hits += st->hits;
        out->fills += st->fills;
        out->stale += st->stale;
        pthread_mutex_unlock(&st->lock);
    }
}
