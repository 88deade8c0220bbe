/*
 * netwire_queue.h: the delay line of tools/netwire, one per direction of a
 * link: a bounded FIFO of packets, each with the time it is due to leave.
 * With a fixed delay the due times come in arrival order, so the head is
 * always the next packet due and the queue never reorders.
 *
 * Pure: no I/O and no clock; the caller passes the times (nanoseconds on any
 * monotonic clock). Not thread-safe: one thread owns a queue.
 */
#ifndef NETWIRE_QUEUE_H
#define NETWIRE_QUEUE_H

#include <stddef.h>
#include <stdint.h>

struct netwire_queue {
    /* private */
    unsigned char *data; /* owned: cap slots of slot_size bytes */
    uint64_t *due;       /* owned: cap due times */
    size_t *len;         /* owned: cap packet lengths */
    size_t slot_size;
    uint32_t cap;
    uint32_t head; /* index of the oldest packet */
    uint32_t n;    /* packets queued */
};

/*
 * Makes q an empty queue of at most cap packets of at most slot_size bytes
 * each, allocating cap * slot_size bytes up front (a link's buffer does not
 * grow). 0, -EINVAL (cap or slot_size 0, or too large) or -ENOMEM.
 */
int netwire_queue_init(struct netwire_queue *q, uint32_t cap, size_t slot_size);
/* Frees what init allocated; q may be zeroed storage that init never saw. */
void netwire_queue_deinit(struct netwire_queue *q);

/*
 * The slot the next packet is to be read into (slot_size bytes), or NULL when
 * the queue is full: the packet is then to be dropped, as a link whose
 * buffer is full drops it. The slot is the queue's until netwire_queue_push.
 */
unsigned char *netwire_queue_slot(struct netwire_queue *q);

/*
 * Appends the packet just read into netwire_queue_slot()'s slot: len bytes
 * (at most slot_size), due at due_ns. A due time before the last packet's is
 * raised to it, so that packets leave in the order they came. Ignored when
 * the queue is full (netwire_queue_slot gave NULL).
 */
void netwire_queue_push(struct netwire_queue *q, size_t len, uint64_t due_ns);

/*
 * The oldest packet if it is due at now_ns (its due time <= now_ns), with its
 * length in *len; NULL if the queue is empty or the oldest is not due yet.
 * The bytes stay valid until netwire_queue_pop.
 */
const unsigned char *netwire_queue_due(const struct netwire_queue *q, uint64_t now_ns,
                                       size_t *len);

/* Removes the oldest packet, if any. */
void netwire_queue_pop(struct netwire_queue *q);

/* The oldest packet's due time; UINT64_MAX when the queue is empty. */
uint64_t netwire_queue_next_due(const struct netwire_queue *q);

/* Packets queued. */
uint32_t netwire_queue_count(const struct netwire_queue *q);

#endif
