/*
 * netwire_queue.c: the delay line of tools/netwire (see netwire_queue.h): a
 * ring of fixed-size slots, allocated once.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tools/netwire_queue.h"

/* At most 1 GiB of slots: a queue is a link's buffer, not a store. */
#define QUEUE_BYTES_MAX ((size_t)1 << 30)

int netwire_queue_init(struct netwire_queue *q, uint32_t cap, size_t slot_size)
{
    memset(q, 0, sizeof(*q));
    if (cap == 0 || slot_size == 0 || slot_size > QUEUE_BYTES_MAX / cap)
        return -EINVAL;
    q->data = malloc((size_t)cap * slot_size);
    q->due = calloc(cap, sizeof(*q->due));
    q->len = calloc(cap, sizeof(*q->len));
    if (q->data == NULL || q->due == NULL || q->len == NULL)
        goto error;
    q->cap = cap;
    q->slot_size = slot_size;
    return 0;

error:
    netwire_queue_deinit(q);
    return -ENOMEM;
}

void netwire_queue_deinit(struct netwire_queue *q)
{
    free(q->len);
    free(q->due);
    free(q->data);
    memset(q, 0, sizeof(*q));
}

/* Index of the slot after the newest packet (the free one when not full). */
static uint32_t tail_index(const struct netwire_queue *q)
{
    return (uint32_t)(((uint64_t)q->head + q->n) % q->cap);
}

unsigned char *netwire_queue_slot(struct netwire_queue *q)
{
    if (q->n == q->cap)
        return NULL;
    return q->data + (size_t)tail_index(q) * q->slot_size;
}

void netwire_queue_push(struct netwire_queue *q, size_t len, uint64_t due_ns)
{
    uint32_t t = tail_index(q);

    if (q->n == q->cap)
        return;
    if (q->n > 0) {
        uint64_t last = q->due[(t + q->cap - 1) % q->cap];

        if (due_ns < last)
            due_ns = last;
    }
    q->due[t] = due_ns;
    q->len[t] = len < q->slot_size ? len : q->slot_size;
    q->n++;
}

const unsigned char *netwire_queue_due(const struct netwire_queue *q, uint64_t now_ns,
                                       size_t *len)
{
    if (q->n == 0 || q->due[q->head] > now_ns)
        return NULL;
    *len = q->len[q->head];
    return q->data + (size_t)q->head * q->slot_size;
}

void netwire_queue_pop(struct netwire_queue *q)
{
    if (q->n == 0)
        return;
    q->head = (q->head + 1) % q->cap;
    q->n--;
}

uint64_t netwire_queue_next_due(const struct netwire_queue *q)
{
    return q->n == 0 ? UINT64_MAX : q->due[q->head];
}

uint32_t netwire_queue_count(const struct netwire_queue *q)
{
    return q->n;
}
