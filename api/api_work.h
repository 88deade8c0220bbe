/*
 * api_work.h: the worker pool that runs the API's handlers off the event
 * loops (api_work.c). Internal to the API server, included by api_int.h.
 */
#ifndef API_WORK_H
#define API_WORK_H

#include <stdint.h>

struct api_work_item; /* in api_int.h, in struct api_req */
struct api_work;      /* opaque: the threads and their queue */
struct api_work_stats {
    uint32_t threads, depth;
    uint32_t places;  /* taken: requests queued, running or between two runs */
    uint32_t queued;  /* items waiting for a thread */
    uint32_t running; /* items on a thread now */
    uint32_t parked;  /* items waiting for their key's turn */
    uint32_t per_key, park_max;
    uint64_t park_refused; /* reservations refused: their key's parked at park_max */
    uint64_t done;         /* items run */
    uint64_t refused;      /* reservations refused (full or draining) */
};
/*
 * Starts nthread threads over a FIFO of at most depth places, of which at
 * most per_key (0: any number) are queued or running for one item key at
 * once, and at most park_max (0: any number) more parked behind them. 0,
 * -EINVAL (a zero nthread or depth), or -errno.
 */
int api_work_create(uint32_t nthread, uint32_t depth, uint32_t per_key,
                    uint32_t park_max, struct api_work **out);
/* Refuses new reservations and waits until every place is given back. */
void api_work_drain(struct api_work *w);
/* Drains, then joins the threads and frees w. Accepts NULL. */
void api_work_destroy(struct api_work *w);
/*
 * A place for one request: 0, or -EAGAIN when all depth places are taken
 * or the pool is draining. Never waits; takes the pool's lock.
 */
int api_work_reserve(struct api_work *w);
/*
 * The same for a request of key (0: none), and -EBUSY when key has
 * park_max items parked already: one user's writes, parked, held places
 * that every other request then lacked (a flood of one account's writes
 * filled the pool, and others got 503).
 */
int api_work_reserve_key(struct api_work *w, uint64_t key);
/*
 * Queues item on a place the caller holds; a thread runs it in queue
 * order. An item whose key has per_key items queued or running is parked
 * until one of them ends, then goes to the queue's front. One place may
 * carry several submits, one after the other (a request's second half
 * after a password hash). Never fails or waits.
 */
void api_work_submit(struct api_work *w, struct api_work_item *item);
/* Gives a place back (its request is done with the pool). */
void api_work_release(struct api_work *w);
/*
 * A turn of key taken by a write that runs elsewhere (on an event loop):
 * 1 when taken (it counts as one of key's per_key, as an item queued or
 * running does), 0 when key has its per_key already (the write then goes
 * to the pool, which parks it). give ends it: a parked item of key goes.
 */
int api_work_key_take(struct api_work *w, uint64_t key);
void api_work_key_give(struct api_work *w, uint64_t key);
void api_work_stats(struct api_work *w, struct api_work_stats *st);

#endif
