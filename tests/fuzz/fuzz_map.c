/*
 * fuzz_map.c: libFuzzer harness of the shard map loader (shardmap_load(),
 * docs/shardmap.md).
 *
 * The input is the file. What must hold: a refused file comes with a
 * message; an accepted map has every shard on one of its hosts, and survives
 * shardmap_save() -> shardmap_load() unchanged.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "shardmap/shardmap.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct shardmap *map, *again;
    char path[128], *err = NULL;
    int rc;

    rc = shardmap_load(fuzz_file(data, size), &map, &err);
    if (rc != 0) {
        if (rc > 0 || map != NULL || err == NULL || err[0] == '\0')
            fuzz_fail("map refused (%d) without a message", rc);
        free(err);
        return 0;
    }
    if (err != NULL)
        fuzz_fail("map accepted with a message: %s", err);
    if (!shardmap_valid_nshard(map->nshard) || map->nnode == 0)
        fuzz_fail("map accepted but not valid");
    for (uint32_t i = 0; i < map->nshard; i++)
        if (map->node_of[i] >= map->nnode)
            fuzz_fail("map: shard %u on host %u of %u", i, map->node_of[i], map->nnode);
    snprintf(path, sizeof(path), "%s/shardmap.yaml", fuzz_dir());
    if (shardmap_save(path, map) != 0)
        fuzz_fail("map: save failed");
    if (shardmap_load(path, &again, &err) != 0)
        fuzz_fail("map: a saved map does not load: %s", err ? err : "");
    fuzz_map_same(map, again, "map: save -> load");
    shardmap_destroy(again);
    shardmap_destroy(map);
    unlink(path);
    return 0;
}
