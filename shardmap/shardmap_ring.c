/*
 * shardmap_ring.c: placement of logical shards on hosts.
 *
 * Hosts sit on a consistent-hash ring with SHARDMAP_VNODES virtual nodes per
 * unit of weight (as twemproxy's ketama and HAProxy's lb_chash do). Pure
 * consistent hashing of 1,024 shards over 16 hosts leaves a spread of about
 * +-12 % (binomial noise of 64 shards per host), so placement bounds each
 * host's load to its fair share (the shares sum to N, so hosts differ by at
 * most one shard of weight) (Mirrokni et al., "consistent hashing with
 * bounded loads"): a shard goes to the first host clockwise that is not full.
 *
 * Plans change the fewest shards: adding a host moves only onto it, removing
 * one moves only its shards. Everything here is deterministic.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardmap/shardmap.h"

struct ring_point {
    uint64_t hash;
    uint16_t node;
};

struct ring {
    struct ring_point *points;
    uint32_t npoint;
};

static int point_cmp(const void *a, const void *b)
{
    const struct ring_point *x = a, *y = b;

    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return (int)x->node - (int)y->node;
}

/* Builds the ring over the nodes of map, leaving out node `skip` (-1: none). */
static int ring_init(struct ring *ring, const struct shardmap *map, int skip)
{
    uint32_t n = 0;
    char buf[SHARDMAP_NAME_MAX + 16];

    for (uint32_t i = 0; i < map->nnode; i++)
        if ((int)i != skip)
            n += map->nodes[i].weight * SHARDMAP_VNODES;
    ring->points = calloc(n ? n : 1, sizeof(*ring->points));
    if (ring->points == NULL)
        return -ENOMEM;
    ring->npoint = 0;
    for (uint32_t i = 0; i < map->nnode; i++) {
        if ((int)i == skip)
            continue;
        for (uint32_t v = 0; v < map->nodes[i].weight * SHARDMAP_VNODES; v++) {
            int len = snprintf(buf, sizeof(buf), "%s#%u", map->nodes[i].name, v);
            ring->points[ring->npoint].hash = shardmap_hash(buf, (size_t)len);
            ring->points[ring->npoint].node = (uint16_t)i;
            ring->npoint++;
        }
    }
    qsort(ring->points, ring->npoint, sizeof(*ring->points), point_cmp);
    return 0;
}

static void ring_deinit(struct ring *ring)
{
    free(ring->points);
    ring->points = NULL;
}

static uint64_t shard_point(uint32_t shard)
{
    char buf[32];
    int len = snprintf(buf, sizeof(buf), "shard-%u", shard);

    return shardmap_hash(buf, (size_t)len);
}

/* Index of the first ring point at or after h, wrapping around. */
static uint32_t ring_search(const struct ring *ring, uint64_t h)
{
    uint32_t lo = 0, hi = ring->npoint;

    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (ring->points[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == ring->npoint ? 0 : lo;
}

/*
 * Owner of a shard: the first node clockwise whose load is under its cap
 * (cap NULL: no bound). Returns the node index, or -1 if every node is full.
 */
static int ring_owner(const struct ring *ring, uint32_t shard, const uint32_t *load,
                      const uint32_t *cap)
{
    uint32_t at = ring_search(ring, shard_point(shard));

    for (uint32_t k = 0; k < ring->npoint; k++) {
        uint16_t node = ring->points[(at + k) % ring->npoint].node;
        if (cap == NULL || load[node] < cap[node])
            return node;
    }
    return -1;
}

/*
 * Fair shares of nshard over the nodes other than skip (which gets 0): each
 * floor(nshard * w_i / W), and the remainder handed one by one to the largest
 * fractional parts (ties to the lower index), so the caps sum to nshard.
 */
static void fair_caps(const struct shardmap *map, int skip, uint32_t *cap)
{
    uint64_t total = 0, rem[SHARDMAP_MAX_HOSTS];
    uint32_t given = 0;

    for (uint32_t i = 0; i < map->nnode; i++)
        if ((int)i != skip)
            total += map->nodes[i].weight;
    for (uint32_t i = 0; i < map->nnode; i++) {
        uint64_t share = (uint64_t)map->nshard * map->nodes[i].weight;
        cap[i] = (int)i == skip ? 0 : (uint32_t)(share / total);
        rem[i] = (int)i == skip ? 0 : share % total;
        given += cap[i];
    }
    while (given < map->nshard) {
        uint32_t best = 0;
        for (uint32_t i = 1; i < map->nnode; i++)
            if (rem[i] > rem[best] || (best == (uint32_t)skip && (int)i != skip))
                best = i;
        cap[best]++;
        rem[best] = 0;
        given++;
    }
}

static int check_weights(const struct shardmap *map)
{
    for (uint32_t i = 0; i < map->nnode; i++)
        if (map->nodes[i].weight == 0 || map->nodes[i].weight > 1000)
            return -EINVAL;
    return 0;
}

int shardmap_place(struct shardmap *map)
{
    struct ring ring;
    uint32_t *load, *cap;
    int rc;

    if ((rc = check_weights(map)) < 0)
        return rc;
    load = calloc(map->nnode, sizeof(*load));
    cap = calloc(map->nnode, sizeof(*cap));
    if (load == NULL || cap == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    if ((rc = ring_init(&ring, map, -1)) < 0)
        goto out;
    fair_caps(map, -1, cap);
    for (uint32_t s = 0; s < map->nshard; s++) {
        int node = ring_owner(&ring, s, load, cap);
        /* Caps sum to nshard, so some node always has room. */
        map->node_of[s] = (uint16_t)node;
        load[node]++;
    }
    ring_deinit(&ring);
out:
    free(load);
    free(cap);
    return rc;
}

static int plan_begin(struct shardmap_plan *plan, const struct shardmap *map,
                      const struct shardmap_node *extra)
{
    struct shardmap_node nodes[SHARDMAP_MAX_HOSTS];
    uint32_t nnode = map->nnode;

    memset(plan, 0, sizeof(*plan));
    memcpy(nodes, map->nodes, nnode * sizeof(*nodes));
    if (extra != NULL)
        nodes[nnode++] = *extra;
    plan->base_version = map->version;
    plan->target = shardmap_create(map->nshard, nodes, nnode, map->version + 1);
    plan->moves = calloc(map->nshard, sizeof(*plan->moves));
    if (plan->target == NULL || plan->moves == NULL) {
        shardmap_plan_deinit(plan);
        return -ENOMEM;
    }
    memcpy(plan->target->node_of, map->node_of, map->nshard * sizeof(*map->node_of));
    return 0;
}

static void plan_move(struct shardmap_plan *plan, uint32_t shard, uint16_t to)
{
    struct shardmap_move *m = &plan->moves[plan->nmove++];

    m->shard = shard;
    m->from = plan->target->node_of[shard];
    m->to = to;
    plan->target->node_of[shard] = to;
}

int shardmap_plan_add(const struct shardmap *map, const struct shardmap_node *node,
                      struct shardmap_plan *plan)
{
    struct ring ring = {0};
    uint32_t *load = NULL;
    uint64_t total = 0;
    uint32_t fair, nn;
    int rc;

    if (map->nnode >= SHARDMAP_MAX_HOSTS || node->weight == 0 || node->weight > 1000)
        return -EINVAL;
    if (shardmap_node_index(map, node->name) >= 0)
        return BC_EEXISTS;
    if ((rc = plan_begin(plan, map, node)) < 0)
        return rc;
    nn = map->nnode; /* index of the new node in target */
    if ((rc = ring_init(&ring, plan->target, -1)) < 0)
        goto error;
    load = calloc(plan->target->nnode, sizeof(*load));
    if (load == NULL) {
        rc = -ENOMEM;
        goto error;
    }
    shardmap_count(plan->target, load);
    for (uint32_t i = 0; i <= nn; i++)
        total += plan->target->nodes[i].weight;
    fair = (uint32_t)(((uint64_t)map->nshard * node->weight * 2 + total) / (2 * total));

    for (uint32_t k = 0; k < fair; k++) {
        /* The most loaded old node by load / weight; ties to the lower index. */
        uint32_t from = 0;
        int64_t pick = -1;
        for (uint32_t i = 1; i < nn; i++)
            if ((uint64_t)load[i] * plan->target->nodes[from].weight >
                (uint64_t)load[from] * plan->target->nodes[i].weight)
                from = i;
        if (load[from] == 0)
            break;
        for (uint32_t s = 0; s < map->nshard; s++) {
            if (plan->target->node_of[s] != from)
                continue;
            if (pick < 0)
                pick = s;
            if (ring_owner(&ring, s, NULL, NULL) == (int)nn) {
                pick = s;
                break;
            }
        }
        plan_move(plan, (uint32_t)pick, (uint16_t)nn);
        load[from]--;
        load[nn]++;
    }
    ring_deinit(&ring);
    free(load);
    return 0;
error:
    ring_deinit(&ring);
    free(load);
    shardmap_plan_deinit(plan);
    return rc;
}

int shardmap_plan_remove(const struct shardmap *map, const char *name,
                         struct shardmap_plan *plan)
{
    struct ring ring = {0};
    uint32_t *load = NULL, *cap = NULL;
    int gone, rc;

    gone = shardmap_node_index(map, name);
    if (gone < 0)
        return gone;
    if (map->nnode < 2)
        return -EINVAL;
    if ((rc = plan_begin(plan, map, NULL)) < 0)
        return rc;
    load = calloc(map->nnode, sizeof(*load));
    cap = calloc(map->nnode, sizeof(*cap));
    if (load == NULL || cap == NULL) {
        rc = -ENOMEM;
        goto error;
    }
    if ((rc = ring_init(&ring, map, gone)) < 0)
        goto error;
    shardmap_count(map, load);
    load[gone] = 0;
    fair_caps(map, gone, cap);
    for (uint32_t s = 0; s < map->nshard; s++) {
        int to;
        if (map->node_of[s] != (uint16_t)gone)
            continue;
        to = ring_owner(&ring, s, load, cap);
        if (to < 0) {
            /* Every survivor is at its fair share already: least loaded. */
            to = gone == 0 ? 1 : 0;
            for (uint32_t i = 0; i < map->nnode; i++)
                if ((int)i != gone && (uint64_t)load[i] * map->nodes[to].weight <
                                          (uint64_t)load[to] * map->nodes[i].weight)
                    to = (int)i;
        }
        plan_move(plan, s, (uint16_t)to);
        load[to]++;
    }
    ring_deinit(&ring);
    free(load);
    free(cap);
    return 0;
error:
    ring_deinit(&ring);
    free(load);
    free(cap);
    shardmap_plan_deinit(plan);
    return rc;
}

void shardmap_plan_deinit(struct shardmap_plan *plan)
{
    shardmap_destroy(plan->target);
    free(plan->moves);
    memset(plan, 0, sizeof(*plan));
}
