/*
 * api_tarpit.c: refusals of sign-ups and logins answered late.
 *
 * A login or sign-up refused at once (429: a rate bucket is empty; 503: the
 * password-hash queue is full) costs its sender nothing to repeat: a flood
 * from many addresses, each under its own limits, got thousands of such
 * answers a second, and their cost (HAProxy, the loops, the flooders) took
 * the CPUs from every other request. Held here for delay_ms before it is
 * sent, a refusal lets a flooding connection send one request per delay_ms.
 * A held request is a suspended connection and a list entry, nothing else:
 * no thread, no worker place (the worker gave it back). Every hold lasts
 * the same time, so the list is in due order: one thread sleeps until its
 * head is due and resumes what is. At most max are held; beyond, and while
 * the server stops, a refusal leaves at once. The server holds every 429 and
 * 503 of a login or sign-up (api_http.c), a database that cannot answer's
 * too: its clients' retries slow down with the flood's.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "api/api_int.h"

struct api_tarpit {
    pthread_mutex_t lock;
    pthread_cond_t wake; /* a hold into an empty list, or stopping */
    pthread_t thread;
    int64_t delay_us;
    void (*resume)(struct api_req *req);
    uint32_t max, n;
    int stopping;
    struct api_req *head, *tail; /* by due time, linked by held_next */
};

static int64_t mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The held requests due by now (all when stopping), off the list. Under lock. */
static struct api_req *take_due(struct api_tarpit *t, int64_t now)
{
    struct api_req *due = t->head, *last = NULL;

    while (t->head != NULL && (t->stopping || t->head->held_due_us <= now)) {
        last = t->head;
        t->head = t->head->held_next;
        t->n--;
    }
    if (last == NULL)
        return NULL;
    last->held_next = NULL;
    if (t->head == NULL)
        t->tail = NULL;
    return due;
}

static void resume_all(struct api_tarpit *t, struct api_req *r)
{
    while (r != NULL) {
        struct api_req *next = r->held_next;
        /* The request may be completed and freed from here on. */
        t->resume(r);
        r = next;
    }
}

static void *tarpit_main(void *arg)
{
    struct api_tarpit *t = arg;

    pthread_setname_np(pthread_self(), "bc-tarpit");
    pthread_mutex_lock(&t->lock);
    while (!t->stopping || t->head != NULL) {
        int64_t now = mono_us();
        struct api_req *due = take_due(t, now);

        if (due != NULL) {
            pthread_mutex_unlock(&t->lock);
            resume_all(t, due);
            pthread_mutex_lock(&t->lock);
        } else if (t->head == NULL) {
            pthread_cond_wait(&t->wake, &t->lock);
        } else {
            int64_t at = t->head->held_due_us;
            struct timespec ts = {.tv_sec = at / 1000000,
                                  .tv_nsec = at % 1000000 * 1000};
            pthread_cond_timedwait(&t->wake, &t->lock, &ts);
        }
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

int api_tarpit_create(uint32_t delay_ms, uint32_t max,
                      void (*resume)(struct api_req *req), struct api_tarpit **out)
{
    struct api_tarpit *t = calloc(1, sizeof(*t));
    pthread_condattr_t attr;
    int rc;

    if (t == NULL)
        return -ENOMEM;
    t->delay_us = (int64_t)delay_ms * 1000;
    t->max = max;
    t->resume = resume;
    pthread_mutex_init(&t->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&t->wake, &attr);
    pthread_condattr_destroy(&attr);
    if ((rc = -pthread_create(&t->thread, NULL, tarpit_main, t)) < 0) {
        pthread_cond_destroy(&t->wake);
        pthread_mutex_destroy(&t->lock);
        free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int api_tarpit_hold(struct api_tarpit *t, struct api_req *req)
{
    int rc = -EAGAIN;

    if (t == NULL || t->delay_us == 0)
        return -EAGAIN;
    pthread_mutex_lock(&t->lock);
    if (!t->stopping && t->n < t->max) {
        req->held_next = NULL;
        req->held_due_us = mono_us() + t->delay_us;
        if (t->tail != NULL)
            t->tail->held_next = req;
        else
            t->head = req;
        t->tail = req;
        if (t->n++ == 0)
            pthread_cond_signal(&t->wake);
        rc = 0;
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}

uint32_t api_tarpit_held(struct api_tarpit *t)
{
    uint32_t n;

    if (t == NULL)
        return 0;
    pthread_mutex_lock(&t->lock);
    n = t->n;
    pthread_mutex_unlock(&t->lock);
    return n;
}

void api_tarpit_drain(struct api_tarpit *t)
{
    struct api_req *all;

    if (t == NULL)
        return;
    pthread_mutex_lock(&t->lock);
    t->stopping = 1;
    all = take_due(t, 0);
    pthread_cond_signal(&t->wake);
    pthread_mutex_unlock(&t->lock);
    resume_all(t, all);
}

void api_tarpit_destroy(struct api_tarpit *t)
{
    if (t == NULL)
        return;
    api_tarpit_drain(t);
    pthread_join(t->thread, NULL);
    pthread_cond_destroy(&t->wake);
    pthread_mutex_destroy(&t->lock);
    free(t);
}
