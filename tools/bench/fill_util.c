/*
 * fill_util.c: the pieces the bulk fillers share (see fill_util.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shardmap/shardmap.h"
#include "tools/bench/fill_util.h"

const char *const fill_picks[3] = {"home", "draw", "away"};

int sb_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return -EINVAL;
        if (b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return 0;
        }
        size_t cap =
            b->cap * 2 > b->len + (size_t)n + 1 ? b->cap * 2 : b->len + (size_t)n + 1;
        char *s = realloc(b->s, cap);

        if (s == NULL)
            return -ENOMEM;
        b->s = s;
        b->cap = cap;
    }
}

int idgen_next(struct idgen *g, uint64_t *id)
{
    struct shardmap_id parts;
    int rc;

    for (;;) {
        if (g->seq >= 1u << SHARDMAP_ID_SEQ_BITS) {
            g->ms++;
            g->seq = 0;
        }
        if (g->ms >= g->ms_end)
            return -ERANGE;
        parts.ms = g->ms;
        parts.shard = g->shard;
        parts.seq = g->seq++;
        if ((rc = shardmap_id_pack(&parts, id)) < 0)
            return rc;
        while (g->next < g->ntaken && g->taken[g->next] < *id)
            g->next++;
        if (g->next == g->ntaken || g->taken[g->next] != *id)
            return 0;
    }
}

uint64_t fill_rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

double fill_now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int fill_plain_hash(const char *h)
{
    return h[strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                       "0123456789$+/=,-")] == '\0';
}

int fill_num_arg(const char *prog, const char *flag, const char *str, uint64_t lo,
                 uint64_t hi, uint64_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(str, &end, 10);
    if (end == str || *end != '\0' || errno != 0 || str[0] == '-' || v < lo || v > hi) {
        fprintf(stderr, "%s: %s wants an integer %" PRIu64 "..%" PRIu64 ", not '%s'\n",
                prog, flag, lo, hi, str);
        return -1;
    }
    *out = v;
    return 0;
}
