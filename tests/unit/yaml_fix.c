/*
 * yaml_fix.c: helpers of the unit tests of libshardmap's YAML files
 * (yaml_fix.h).
 */
#include <errno.h>
#include <glob.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "shardmap/shardmap.h"

#include "tests/unit/yaml_fix.h"

/* Writes text to a new temporary file; path must hold 64 bytes. */
void write_tmp(char *path, const char *text)
{
    size_t len = strlen(text);
    int fd;

    strcpy(path, "/tmp/test_shardmap_conf-XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
}

void tmp_name(char *path)
{
    write_tmp(path, "");
}

char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

int all_zero(const void *p, size_t n)
{
    const unsigned char *c = p;

    for (size_t i = 0; i < n; i++) {
        if (c[i] != 0) {
            return 0;
        }
    }
    return 1;
}

/*
 * Loads text as a file of the given kind, which must fail with BC_ECONFIG,
 * leave its output zeroed, and give an error text. Returns the text; path
 * gets the (removed) file's name for expect_err().
 */
char *load_bad(enum kind kind, const char *text, char *path)
{
    struct shardmap_conf conf;
    struct shardmap_plan plan;
    struct shardmap *map = (struct shardmap *)1;
    char *err = NULL;
    int rc = 0;

    write_tmp(path, text);
    switch (kind) {
    case KIND_CONF:
        rc = shardmap_conf_load(path, &conf, &err);
        assert_true(all_zero(&conf, sizeof(conf)));
        break;
    case KIND_MAP:
        rc = shardmap_load(path, &map, &err);
        assert_null(map);
        break;
    case KIND_PLAN:
        rc = shardmap_plan_load(path, &plan, &err);
        assert_true(all_zero(&plan, sizeof(plan)));
        break;
    }
    unlink(path);
    assert_int_equal(rc, BC_ECONFIG);
    assert_non_null(err);
    return err;
}

/* Asserts that err holds the line "path:line: msg" (msg may be a prefix). */
void expect_err(const char *err, const char *path, int line, const char *msg)
{
    char want[512];
    const char *p;

    snprintf(want, sizeof(want), "%s:%d: %s", path, line, msg);
    p = strstr(err, want);
    if (p == NULL || (p != err && p[-1] != '\n')) {
        print_error("expected \"%s\" in:\n%s\n", want, err);
        fail();
    }
}

unsigned count_lines(const char *err)
{
    unsigned n = 1;

    for (; *err != '\0'; err++) {
        n += *err == '\n';
    }
    return n;
}

/* One error only: err is one line, "path:line: msg" (msg may be a prefix). */
void expect_only(enum kind kind, const char *text, int line, const char *msg)
{
    char path[64], want[512];
    char *err = load_bad(kind, text, path);

    snprintf(want, sizeof(want), "%s:%d: %s", path, line, msg);
    if (strncmp(err, want, strlen(want)) != 0 || strchr(err, '\n') != NULL) {
        print_error("expected \"%s\", got:\n%s\n", want, err);
        fail();
    }
    free(err);
}

void assert_maps_equal(const struct shardmap *a, const struct shardmap *b)
{
    assert_int_equal(a->version, b->version);
    assert_int_equal(a->nshard, b->nshard);
    assert_int_equal(a->nnode, b->nnode);
    for (uint32_t i = 0; i < a->nnode; i++) {
        assert_string_equal(a->nodes[i].name, b->nodes[i].name);
        assert_int_equal(a->nodes[i].weight, b->nodes[i].weight);
    }
    assert_memory_equal(a->node_of, b->node_of, a->nshard * sizeof(*a->node_of));
    for (uint32_t s = 0; s < b->nshard; s++) {
        assert_int_equal(b->state[s], SHARDMAP_STATE_ACTIVE);
    }
}

void assert_confs_equal(const struct shardmap_conf *a, const struct shardmap_conf *b)
{
    assert_string_equal(a->name, b->name);
    assert_string_equal(a->schema_prefix, b->schema_prefix);
    assert_int_equal(a->nshard, b->nshard);
    assert_string_equal(a->global_host, b->global_host);
    assert_int_equal(a->nhost, b->nhost);
    for (uint32_t i = 0; i < a->nhost; i++) {
        assert_string_equal(a->hosts[i].name, b->hosts[i].name);
        assert_string_equal(a->hosts[i].addr, b->hosts[i].addr);
        assert_int_equal(a->hosts[i].port, b->hosts[i].port);
        assert_string_equal(a->hosts[i].user, b->hosts[i].user);
        assert_string_equal(a->hosts[i].password, b->hosts[i].password);
        assert_string_equal(a->hosts[i].ops_user, b->hosts[i].ops_user);
        assert_string_equal(a->hosts[i].ops_password, b->hosts[i].ops_password);
        assert_int_equal(a->hosts[i].weight, b->hosts[i].weight);
    }
    assert_int_equal(a->nmemcached, b->nmemcached);
    for (uint32_t i = 0; i < a->nmemcached; i++) {
        assert_string_equal(a->memcached[i].addr, b->memcached[i].addr);
        assert_int_equal(a->memcached[i].port, b->memcached[i].port);
    }
    assert_int_equal(a->pool_size, b->pool_size);
    assert_int_equal(a->connect_timeout_ms, b->connect_timeout_ms);
    assert_int_equal(a->query_timeout_ms, b->query_timeout_ms);
    assert_int_equal(a->map_poll_ms, b->map_poll_ms);
    assert_int_equal(a->move_wait_ms, b->move_wait_ms);
}

void assert_plans_equal(const struct shardmap_plan *a, const struct shardmap_plan *b)
{
    assert_int_equal(a->base_version, b->base_version);
    assert_int_equal(a->has_new_host, b->has_new_host);
    if (a->has_new_host) {
        assert_string_equal(a->new_host.name, b->new_host.name);
        assert_string_equal(a->new_host.addr, b->new_host.addr);
        assert_int_equal(a->new_host.port, b->new_host.port);
    }
    assert_maps_equal(a->target, b->target);
    assert_int_equal(a->nmove, b->nmove);
    for (uint32_t i = 0; i < a->nmove; i++) {
        assert_int_equal(a->moves[i].shard, b->moves[i].shard);
        assert_int_equal(a->moves[i].from, b->moves[i].from);
        assert_int_equal(a->moves[i].to, b->moves[i].to);
    }
}

enum kind kind_of(const char *path)
{
    char line[256];
    FILE *f = fopen(path, "r");

    assert_non_null(f);
    while (fgets(line, sizeof(line), f) != NULL) {
        if (line[0] == '#' || line[0] == ' ' || line[0] == '\n') {
            continue;
        }
        fclose(f);
        if (strncmp(line, "cluster:", 8) == 0 || strncmp(line, "hosts:", 6) == 0) {
            return KIND_CONF;
        }
        if (strncmp(line, "shard_map:", 10) == 0) {
            return KIND_MAP;
        }
        if (strncmp(line, "plan:", 5) == 0) {
            return KIND_PLAN;
        }
        print_error("%s: unknown top-level key: %s", path, line);
        fail();
    }
    fclose(f);
    print_error("%s: no top-level key\n", path);
    fail();
    return KIND_CONF;
}

void round_trip_file(const char *path, enum kind kind)
{
    struct shardmap_conf c1, c2;
    struct shardmap_plan p1, p2;
    struct shardmap *m1, *m2;
    char out[64], *err = (char *)1;

    tmp_name(out);
    switch (kind) {
    case KIND_CONF:
        assert_int_equal(shardmap_conf_load(path, &c1, &err), 0);
        assert_null(err);
        assert_int_equal(shardmap_conf_save(out, &c1), 0);
        assert_int_equal(shardmap_conf_load(out, &c2, &err), 0);
        assert_confs_equal(&c1, &c2);
        shardmap_conf_deinit(&c1);
        shardmap_conf_deinit(&c2);
        break;
    case KIND_MAP:
        assert_int_equal(shardmap_load(path, &m1, &err), 0);
        assert_null(err);
        assert_int_equal(shardmap_save(out, m1), 0);
        assert_int_equal(shardmap_load(out, &m2, &err), 0);
        assert_maps_equal(m1, m2);
        shardmap_destroy(m1);
        shardmap_destroy(m2);
        break;
    case KIND_PLAN:
        assert_int_equal(shardmap_plan_load(path, &p1, &err), 0);
        assert_null(err);
        assert_int_equal(shardmap_plan_save(out, &p1), 0);
        assert_int_equal(shardmap_plan_load(out, &p2, &err), 0);
        assert_plans_equal(&p1, &p2);
        shardmap_plan_deinit(&p1);
        shardmap_plan_deinit(&p2);
        break;
    }
    unlink(out);
}

/* ---- examples ------------------------------------------------------------ */
