/*
 * test_shardmap.c: unit tests of the pure shardmap core: hash vectors, canonical
 * keys, id packing, ring balance and the movement bounds of plans.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "shardmap/shardmap.h"

/* Pinned forever: changing any of these would move every user's data. */
static const struct {
    const char *key;
    uint64_t hash;
    uint32_t shard16, shard1024, shard8192;
} vectors[] = {
    /* XXH3-64("") with seed 0 is the reference value of the xxHash spec. */
    {"", 0x2d06800538d394c2ULL, 2, 194, 5314},
    {"a", 0xe6c632b61e964e1fULL, 15, 543, 3615},
    {"alice@example.com", 0x76eb895512bf35ffULL, 15, 511, 5631},
    {"bob@betcity.test", 0x3f366e3649dab8d4ULL, 4, 212, 6356},
    {"user-42@acme.example", 0x737a272efd79ff01ULL, 1, 769, 7937},
    {"h\xc3\xa9llo@ex\xc3\xa4mple.com", 0x0b8941ca52c540a7ULL, 7, 167, 167},
};

static void test_hash_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        size_t len = strlen(vectors[i].key);
        assert_int_equal(shardmap_hash(vectors[i].key, len), vectors[i].hash);
        assert_int_equal(shardmap_shard_of_key(vectors[i].key, len, 16),
                         vectors[i].shard16);
        assert_int_equal(shardmap_shard_of_key(vectors[i].key, len, 1024),
                         vectors[i].shard1024);
        assert_int_equal(shardmap_shard_of_key(vectors[i].key, len, 8192),
                         vectors[i].shard8192);
    }
}

static void test_valid_nshard(void **state)
{
    (void)state;
    assert_true(shardmap_valid_nshard(16));
    assert_true(shardmap_valid_nshard(1024));
    assert_true(shardmap_valid_nshard(8192));
    assert_false(shardmap_valid_nshard(8));
    assert_false(shardmap_valid_nshard(16384));
    assert_false(shardmap_valid_nshard(1000));
    assert_false(shardmap_valid_nshard(0));
}

static void test_canonical_email(void **state)
{
    char out[64];
    (void)state;
    assert_int_equal(
        shardmap_canonical_email("  Alice@Example.COM\t\n", out, sizeof(out)), 17);
    assert_string_equal(out, "alice@example.com");
    /* Canonical forms of one address land on one shard. */
    assert_int_equal(shardmap_shard_of_key(out, strlen(out), 1024), 511);
    assert_int_equal(shardmap_canonical_email(" \t ", out, sizeof(out)), -EINVAL);
    assert_int_equal(shardmap_canonical_email("abcdef", out, 6), -ENAMETOOLONG);
    assert_int_equal(shardmap_canonical_email("abcdef", out, 7), 6);
    /* Non-ASCII bytes are kept as they are. */
    assert_int_equal(shardmap_canonical_email("\xc3\x89T\xc3\x89", out, sizeof(out)),
                     5);
    assert_string_equal(out, "\xc3\x89t\xc3\x89");
}

static void test_id_pack_roundtrip(void **state)
{
    struct shardmap_id in = {.ms = 123456789, .shard = 8191, .seq = 1023}, out;
    uint64_t id;
    (void)state;

    assert_int_equal(shardmap_id_pack(&in, &id), 0);
    assert_int_equal(id, (123456789ULL << 23) | (8191ULL << 10) | 1023);
    assert_int_equal(shardmap_id_shard(id), 8191);
    assert_int_equal(shardmap_id_unpack(id, &out), 0);
    assert_int_equal(out.ms, in.ms);
    assert_int_equal(out.shard, in.shard);
    assert_int_equal(out.seq, in.seq);

    in = (struct shardmap_id){.ms = 5, .shard = 0, .seq = 0};
    assert_int_equal(shardmap_id_pack(&in, &id), 0);
    assert_int_equal(id, 5ULL << 23);
    assert_int_equal(shardmap_id_shard(id), 0);
}

static void test_id_pack_ranges(void **state)
{
    struct shardmap_id p = {.ms = 1, .shard = 8192, .seq = 0};
    uint64_t id = 0;
    (void)state;

    assert_int_equal(shardmap_id_pack(&p, &id), -ERANGE);
    p = (struct shardmap_id){.ms = 1, .shard = 0, .seq = 1024};
    assert_int_equal(shardmap_id_pack(&p, &id), -ERANGE);
    p = (struct shardmap_id){.ms = 1ULL << 40, .shard = 0, .seq = 0};
    assert_int_equal(shardmap_id_pack(&p, &id), -ERANGE);
    p = (struct shardmap_id){.ms = (1ULL << 40) - 1, .shard = 8191, .seq = 1023};
    assert_int_equal(shardmap_id_pack(&p, &id), 0);
    assert_int_equal(id, INT64_MAX);
    assert_int_equal(shardmap_id_unpack(0, &p), -EINVAL);
    assert_int_equal(shardmap_id_unpack(1ULL << 63, &p), -EINVAL);
}

static struct shardmap *placed_map(uint32_t nshard, uint32_t nhost,
                                   const uint32_t *weights)
{
    struct shardmap_node nodes[SHARDMAP_MAX_HOSTS];
    struct shardmap *map;

    for (uint32_t i = 0; i < nhost; i++) {
        snprintf(nodes[i].name, sizeof(nodes[i].name), "db%u", i + 1);
        nodes[i].weight = weights ? weights[i] : 1;
    }
    map = shardmap_create(nshard, nodes, nhost, 1);
    assert_non_null(map);
    assert_int_equal(shardmap_place(map), 0);
    return map;
}

static void assert_balanced(const struct shardmap *map, double tolerance)
{
    uint32_t counts[SHARDMAP_MAX_HOSTS], min = UINT32_MAX, max = 0, sum = 0;

    shardmap_count(map, counts);
    for (uint32_t i = 0; i < map->nnode; i++) {
        if (counts[i] < min)
            min = counts[i];
        if (counts[i] > max)
            max = counts[i];
        sum += counts[i];
    }
    assert_int_equal(sum, map->nshard);
    if (max > min * (1.0 + tolerance))
        fail_msg("%u hosts: max %u min %u shards", map->nnode, max, min);
}

static void test_ring_balance(void **state)
{
    (void)state;
    for (uint32_t h = 3; h <= 16; h++) {
        struct shardmap *map = placed_map(1024, h, NULL);
        assert_balanced(map, 0.10);
        shardmap_destroy(map);
    }
}

static void test_ring_deterministic(void **state)
{
    struct shardmap *a = placed_map(1024, 5, NULL), *b = placed_map(1024, 5, NULL);
    (void)state;
    assert_memory_equal(a->node_of, b->node_of, 1024 * sizeof(*a->node_of));
    /* Pinned: a change of the ring would silently re-place fresh clusters. */
    static const uint16_t pinned[16] = {4, 2, 2, 1, 0, 0, 3, 1, 3, 3, 4, 4, 3, 4, 0, 2};
    assert_memory_equal(a->node_of, pinned, sizeof(pinned));
    shardmap_destroy(a);
    shardmap_destroy(b);
}

static void test_ring_weighted(void **state)
{
    uint32_t w[3] = {1, 2, 1}, counts[3];
    struct shardmap *map = placed_map(1024, 3, w);
    (void)state;
    shardmap_count(map, counts);
    assert_int_equal(counts[0] + counts[1] + counts[2], 1024);
    assert_in_range(counts[1], 500, 512);
    assert_in_range(counts[0], 250, 256);
    assert_in_range(counts[2], 250, 256);
    shardmap_destroy(map);
}

static void test_plan_add_moves_only_onto_new_host(void **state)
{
    (void)state;
    for (uint32_t h = 3; h <= 16; h++) {
        struct shardmap *map = placed_map(1024, h, NULL);
        struct shardmap_node node = {.name = "new", .weight = 1};
        struct shardmap_plan plan;
        uint32_t expect = (1024 * 2 + (h + 1)) / (2 * (h + 1));

        assert_int_equal(shardmap_plan_add(map, &node, &plan), 0);
        assert_int_equal(plan.nmove, expect);
        assert_int_equal(plan.base_version, 1);
        assert_int_equal(plan.target->version, 2);
        assert_int_equal(plan.target->nnode, h + 1);
        for (uint32_t i = 0; i < plan.nmove; i++) {
            assert_int_equal(plan.moves[i].to, h);
            assert_int_equal(plan.moves[i].from, map->node_of[plan.moves[i].shard]);
        }
        /* Every shard not in the plan stays where it was. */
        for (uint32_t s = 0; s < 1024; s++)
            if (plan.target->node_of[s] != h)
                assert_int_equal(plan.target->node_of[s], map->node_of[s]);
        assert_balanced(plan.target, 0.10);
        shardmap_plan_deinit(&plan);
        shardmap_destroy(map);
    }
}

static void test_plan_add_deterministic(void **state)
{
    struct shardmap *map = placed_map(256, 3, NULL);
    struct shardmap_node node = {.name = "db4", .weight = 1};
    struct shardmap_plan a, b;
    (void)state;

    assert_int_equal(shardmap_plan_add(map, &node, &a), 0);
    assert_int_equal(shardmap_plan_add(map, &node, &b), 0);
    assert_int_equal(a.nmove, b.nmove);
    assert_memory_equal(a.moves, b.moves, a.nmove * sizeof(*a.moves));
    shardmap_plan_deinit(&b);
    assert_int_equal(shardmap_plan_add(map, &map->nodes[0], &b), BC_EEXISTS);
    shardmap_plan_deinit(&a);
    shardmap_destroy(map);
}

static void test_plan_remove_moves_only_its_shards(void **state)
{
    (void)state;
    for (uint32_t h = 3; h <= 16; h++) {
        struct shardmap *map = placed_map(1024, h, NULL);
        struct shardmap_plan plan;
        uint32_t counts[SHARDMAP_MAX_HOSTS];

        shardmap_count(map, counts);
        assert_int_equal(shardmap_plan_remove(map, "db2", &plan), 0);
        assert_int_equal(plan.nmove, counts[1]);
        for (uint32_t i = 0; i < plan.nmove; i++) {
            assert_int_equal(plan.moves[i].from, 1);
            assert_int_not_equal(plan.moves[i].to, 1);
        }
        for (uint32_t s = 0; s < 1024; s++)
            if (map->node_of[s] != 1)
                assert_int_equal(plan.target->node_of[s], map->node_of[s]);
        shardmap_count(plan.target, counts);
        assert_int_equal(counts[1], 0);
        shardmap_plan_deinit(&plan);
        shardmap_destroy(map);
    }
}

static void test_plan_remove_errors(void **state)
{
    struct shardmap *map = placed_map(64, 1, NULL);
    struct shardmap_plan plan;
    (void)state;
    assert_int_equal(shardmap_plan_remove(map, "nope", &plan), BC_EHOST);
    assert_int_equal(shardmap_plan_remove(map, "db1", &plan), -EINVAL);
    shardmap_destroy(map);
}

static void test_create_rejects_bad_input(void **state)
{
    struct shardmap_node node = {.name = "db1", .weight = 1};
    (void)state;
    assert_null(shardmap_create(1000, &node, 1, 1));
    assert_null(shardmap_create(64, &node, 0, 1));
}

static void test_errors_have_names(void **state)
{
    (void)state;
    assert_string_equal(bc_errname(BC_ETIMEOUT), "BC_ETIMEOUT");
    assert_string_equal(bc_strerror(BC_EDOWN), "host unavailable");
    assert_string_equal(bc_errname(-ENOENT), "ENOENT");
    assert_string_equal(bc_errname(0), "ok");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_vectors),
        cmocka_unit_test(test_valid_nshard),
        cmocka_unit_test(test_canonical_email),
        cmocka_unit_test(test_id_pack_roundtrip),
        cmocka_unit_test(test_id_pack_ranges),
        cmocka_unit_test(test_ring_balance),
        cmocka_unit_test(test_ring_deterministic),
        cmocka_unit_test(test_ring_weighted),
        cmocka_unit_test(test_plan_add_moves_only_onto_new_host),
        cmocka_unit_test(test_plan_add_deterministic),
        cmocka_unit_test(test_plan_remove_moves_only_its_shards),
        cmocka_unit_test(test_plan_remove_errors),
        cmocka_unit_test(test_create_rejects_bad_input),
        cmocka_unit_test(test_errors_have_names),
    };
    return cmocka_run_group_tests_name("shardmap", tests, NULL, NULL);
}
