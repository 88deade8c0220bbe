/*
 * fuzz_config.c: libFuzzer harness of the cluster config loader
 * (shardmap_conf_load(), cluster.yaml; docs/config.md).
 *
 * The input is the file. What must hold: a refused file comes with a message
 * (and no config to free); an accepted one is valid by the loader's own
 * rules (a power-of-two shard count, hosts named, the global host among
 * them, router: values at least their minimums), and survives
 * shardmap_conf_save() -> shardmap_conf_load() unchanged.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shardmap/shardmap.h"
#include "tests/fuzz/fuzz.h"

static void same_conf(const struct shardmap_conf *a, const struct shardmap_conf *b)
{
    if (strcmp(a->name, b->name) != 0 ||
        strcmp(a->schema_prefix, b->schema_prefix) != 0 || a->nshard != b->nshard ||
        strcmp(a->global_host, b->global_host) != 0 || a->nhost != b->nhost ||
        a->nmemcached != b->nmemcached)
        fuzz_fail("config: cluster section changed by save -> load");
    for (uint32_t i = 0; i < a->nhost; i++) {
        const struct shardmap_host_conf *x = &a->hosts[i], *y = &b->hosts[i];
        if (strcmp(x->name, y->name) != 0 || strcmp(x->addr, y->addr) != 0 ||
            x->port != y->port || strcmp(x->user, y->user) != 0 ||
            strcmp(x->password, y->password) != 0 || x->weight != y->weight)
            fuzz_fail("config: host %u changed by save -> load", i);
    }
    for (uint32_t i = 0; i < a->nmemcached; i++)
        if (strcmp(a->memcached[i].addr, b->memcached[i].addr) != 0 ||
            a->memcached[i].port != b->memcached[i].port)
            fuzz_fail("config: memcached %u changed by save -> load", i);
    if (a->pool_size != b->pool_size ||
        a->connect_timeout_ms != b->connect_timeout_ms ||
        a->query_timeout_ms != b->query_timeout_ms ||
        a->batch_timeout_ms != b->batch_timeout_ms ||
        a->map_poll_ms != b->map_poll_ms || a->move_wait_ms != b->move_wait_ms)
        fuzz_fail("config: router section changed by save -> load");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct shardmap_conf conf, again;
    char path[128], *err = NULL;
    int rc;

    rc = shardmap_conf_load(fuzz_file(data, size), &conf, &err);
    if (rc != 0) {
        if (rc > 0 || err == NULL || err[0] == '\0')
            fuzz_fail("config refused (%d) without a message", rc);
        free(err);
        return 0;
    }
    if (err != NULL)
        fuzz_fail("config accepted with a message: %s", err);
    if (!shardmap_valid_nshard(conf.nshard) || conf.nhost == 0 ||
        shardmap_conf_host(&conf, conf.global_host) < 0 || conf.map_poll_ms < 1000)
        fuzz_fail("config accepted but not valid");
    snprintf(path, sizeof(path), "%s/cluster.yaml", fuzz_dir());
    if (shardmap_conf_save(path, &conf) != 0)
        fuzz_fail("config: save failed");
    rc = shardmap_conf_load(path, &again, &err);
    if (rc != 0)
        fuzz_fail("config: a saved config does not load: %s", err ? err : "");
    same_conf(&conf, &again);
    shardmap_conf_deinit(&again);
    shardmap_conf_deinit(&conf);
    unlink(path);
    return 0;
}
