/*
 * api_loop_sched.c: an event loop's scheduling policy (api_loop_start()'s
 * batch_wakes, the limit key loop_batch_wakes).
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "api/api_loop_int.h"

void api_loop__sched_init(struct api_loop *l, uint32_t batch_wakes)
{
    /* Wake-ups a window (at least one) from which the loop is busy. */
    l->busy_wakes = batch_wakes / (1000 / API_LOOP_SCHED_WINDOW_MS);
    l->busy_wakes += l->busy_wakes == 0 && batch_wakes > 0;
}

/*
 * Under SCHED_BATCH while the loop is busy (woken busy_wakes times or more
 * in a window; it stays so down to a quarter of that) and none of its
 * connections is suspended. Its wake-ups are then new requests coming
 * faster than it sleeps, which it takes in batches at its turn: on CPUs
 * shared with HAProxy, a loop that preempted HAProxy for each request cost
 * both a context switch a request. A loop that is not busy, and an answer
 * it waits for, wake it at once under SCHED_OTHER: on CPUs busy with other
 * work (a settlement's statements), a request then waits for no one's turn.
 */
void api_loop__sched_follow(struct api_loop *l, int64_t now)
{
    struct sched_param p = {.sched_priority = 0};
    int want;

    if (now - l->window_ms >= API_LOOP_SCHED_WINDOW_MS) {
        l->busy = l->wakes >= (l->busy ? (l->busy_wakes + 3) / 4 : l->busy_wakes);
        l->wakes = 0;
        l->window_ms = now;
    }
    want = l->busy && atomic_load_explicit(&l->suspended, memory_order_relaxed) <= 0;
    if (want == l->batched)
        return;
    if (pthread_setschedparam(pthread_self(), want ? SCHED_BATCH : SCHED_OTHER, &p) ==
        0)
        l->batched = want;
    else
        l->busy_wakes = 0; /* not allowed here: the policy stays */
}
