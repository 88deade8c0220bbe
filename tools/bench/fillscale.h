/*
 * fillscale.h: what fillscale's files share: the plan of who is where
 * (companies, teams, matches) and the figures every worker reads.
 */
#ifndef FILLSCALE_H
#define FILLSCALE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "router/router.h"
#include "tools/bench/fill_util.h"

#define ROWS_PER_INSERT 2000
#define MAX_STAKE 10
#define HASH_MAX 256
#define STRIDE 1000003ULL /* prime: i -> i * STRIDE mod N is a permutation */
#define NO_TEAM_EVERY 10
#define MAX_PER_HOST 8
#define MAX_MATCHES 1024
#define PROGRESS_S 10

struct scale_company {
    uint64_t id;
    uint64_t start, size; /* seats [start, start + size) of the plan */
    uint64_t *teams;      /* owned */
    uint32_t nteam;
};

struct scale_match {
    uint64_t id;
    int64_t odds[3]; /* home, draw, away, in hundredths */
};

/* What every worker reads; fixed before they start. */
struct scale {
    struct router *r;           /* owned */
    const struct shardmap *map; /* ref in r */
    struct scale_company *companies;
    uint32_t ncompany;
    struct scale_match matches[MAX_MATCHES]; /* [0]: every user bets on it */
    uint32_t nmatch;
    uint64_t nuser, nbet, from, to; /* the plan's users and bets; the slice */
    int64_t balance, max_stake;
    char hash[HASH_MAX];
    uint32_t *first;    /* nshard + 1: shard s has users by_shard[first[s]..] */
    uint32_t *by_shard; /* user numbers of the slice, grouped by shard */
    int binlog, fence_check;
    atomic_int stop;           /* a worker failed: the others stop */
    atomic_uint finished;      /* workers that ended */
    atomic_uint_fast64_t rows; /* for the progress line */
};

/* ---- the plan (fillscale_plan.c) ---- */
uint64_t scale_extra_bets(const struct scale *s, uint64_t i);
void scale_seat_of(const struct scale *s, uint64_t i, uint64_t *company,
                   uint64_t *team);
int scale_email_of(uint64_t i, char *buf, size_t size);
int scale_plan_load(struct scale *s, const char *path);
int scale_matches_load(struct scale *s);
int scale_group_users(struct scale *s);

#endif
