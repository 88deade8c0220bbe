/*
 * fuzz_plan.c: libFuzzer harness of the plan loader (shardmap_plan_load(),
 * docs/config.md).
 *
 * The input is the file. What must hold: a refused file comes with a
 * message; an accepted plan's moves name shards and hosts of its target, each
 * move's `to` is the shard's host in the target, and the plan survives
 * shardmap_plan_save() -> shardmap_plan_load() unchanged.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shardmap/shardmap.h"
#include "tests/fuzz/fuzz.h"

static void same_plan(const struct shardmap_plan *a, const struct shardmap_plan *b)
{
    if (a->base_version != b->base_version || a->nmove != b->nmove ||
        a->has_new_host != b->has_new_host)
        fuzz_fail("plan changed by save -> load");
    fuzz_map_same(a->target, b->target, "plan target: save -> load");
    for (uint32_t i = 0; i < a->nmove; i++)
        if (a->moves[i].shard != b->moves[i].shard ||
            a->moves[i].from != b->moves[i].from || a->moves[i].to != b->moves[i].to)
            fuzz_fail("plan: move %u changed by save -> load", i);
    if (a->has_new_host && (strcmp(a->new_host.name, b->new_host.name) != 0 ||
                            strcmp(a->new_host.addr, b->new_host.addr) != 0 ||
                            a->new_host.port != b->new_host.port))
        fuzz_fail("plan: new_host changed by save -> load");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct shardmap_plan plan, again;
    char path[128], *err = NULL;
    int rc;

    memset(&plan, 0, sizeof(plan));
    rc = shardmap_plan_load(fuzz_file(data, size), &plan, &err);
    if (rc != 0) {
        if (rc > 0 || err == NULL || err[0] == '\0')
            fuzz_fail("plan refused (%d) without a message", rc);
        free(err);
        shardmap_plan_deinit(&plan);
        return 0;
    }
    if (err != NULL)
        fuzz_fail("plan accepted with a message: %s", err);
    if (plan.target == NULL)
        fuzz_fail("plan accepted without a target");
    for (uint32_t i = 0; i < plan.nmove; i++) {
        const struct shardmap_move *mv = &plan.moves[i];
        if (mv->shard >= plan.target->nshard || mv->from >= plan.target->nnode ||
            mv->to >= plan.target->nnode || plan.target->node_of[mv->shard] != mv->to)
            fuzz_fail("plan: move %u is not a move of the target", i);
    }
    snprintf(path, sizeof(path), "%s/plan.yaml", fuzz_dir());
    if (shardmap_plan_save(path, &plan) != 0)
        fuzz_fail("plan: save failed");
    memset(&again, 0, sizeof(again));
    if (shardmap_plan_load(path, &again, &err) != 0)
        fuzz_fail("plan: a saved plan does not load: %s", err ? err : "");
    same_plan(&plan, &again);
    shardmap_plan_deinit(&again);
    shardmap_plan_deinit(&plan);
    unlink(path);
    return 0;
}
