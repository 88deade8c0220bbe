/*
 * shardmap_map.c: the versioned shard -> host map value.
 *
 * A map is built once and then only read, so any number of threads may share
 * one; a new version is a new map (see router's map swap).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "shardmap/shardmap.h"

struct shardmap *shardmap_create(uint32_t nshard, const struct shardmap_node *nodes,
                                 uint32_t nnode, uint64_t version)
{
    struct shardmap *map;

    if (!shardmap_valid_nshard(nshard) || nnode == 0 || nnode > SHARDMAP_MAX_HOSTS)
        return NULL;
    map = calloc(1, sizeof(*map));
    if (map == NULL)
        return NULL;
    map->version = version;
    map->nshard = nshard;
    map->nnode = nnode;
    map->nodes = calloc(nnode, sizeof(*map->nodes));
    map->node_of = calloc(nshard, sizeof(*map->node_of));
    map->state = calloc(nshard, sizeof(*map->state));
    if (map->nodes == NULL || map->node_of == NULL || map->state == NULL) {
        shardmap_destroy(map);
        return NULL;
    }
    memcpy(map->nodes, nodes, nnode * sizeof(*nodes));
    return map;
}

void shardmap_destroy(struct shardmap *map)
{
    if (map == NULL)
        return;
    free(map->nodes);
    free(map->node_of);
    free(map->state);
    free(map);
}

struct shardmap *shardmap_clone(const struct shardmap *map)
{
    struct shardmap *copy;

    copy = shardmap_create(map->nshard, map->nodes, map->nnode, map->version);
    if (copy == NULL)
        return NULL;
    memcpy(copy->node_of, map->node_of, map->nshard * sizeof(*map->node_of));
    memcpy(copy->state, map->state, map->nshard * sizeof(*map->state));
    return copy;
}

int shardmap_node_index(const struct shardmap *map, const char *name)
{
    for (uint32_t i = 0; i < map->nnode; i++)
        if (strcmp(map->nodes[i].name, name) == 0)
            return (int)i;
    return BC_EHOST;
}

void shardmap_count(const struct shardmap *map, uint32_t *counts)
{
    memset(counts, 0, map->nnode * sizeof(*counts));
    for (uint32_t s = 0; s < map->nshard; s++)
        counts[map->node_of[s]]++;
}
