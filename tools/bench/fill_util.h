/*
 * fill_util.h: what the bulk fillers (fillshard, fillscale) share: statement
 * text, ids of a shard that skip the ones already taken, a small random
 * generator, and operand parsing.
 */
#ifndef FILL_UTIL_H
#define FILL_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* ID_WINDOW_AGO_MS: fill ids are this much older than now, at least;
 * ID_SPARE_MS: room in the window for ids the API took there. */
#define FILL_ID_WINDOW_AGO_MS 60000
#define FILL_ID_SPARE_MS 1000

extern const char *const fill_picks[3]; /* "home", "draw", "away" */

/* A growing statement text. */
struct sbuf {
    char *s;
    size_t len, cap;
};
/* Appends formatted text, growing the buffer; 0, -EINVAL or -ENOMEM. */
int sb_printf(struct sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Ids of one shard in milliseconds [ms, ms_end), skipping those in taken. */
struct idgen {
    uint64_t ms, ms_end;
    uint32_t shard, seq;
    uint64_t *taken; /* owned, ascending */
    size_t ntaken, next;
};
/* The next free id; -ERANGE when the window is used up. */
int idgen_next(struct idgen *g, uint64_t *id);

uint64_t fill_rng_next(uint64_t *s); /* splitmix64 */
double fill_now_s(void);             /* CLOCK_MONOTONIC seconds */
/*
 * 1 when a password hash has only characters that need no quoting in SQL
 * and are no format conversion (the fillers paste it into their text).
 */
int fill_plain_hash(const char *h);
/* An integer operand in lo..hi, or -1 after a message naming prog and flag. */
int fill_num_arg(const char *prog, const char *flag, const char *str, uint64_t lo,
                 uint64_t hi, uint64_t *out);

#endif
