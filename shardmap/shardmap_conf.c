/*
 * shardmap_conf.c: the cluster config file (cluster.yaml): the cluster's
 * name, schema prefix and shard count, the MySQL hosts (each with two
 * accounts: the API server's and the operator tools'), the memcached
 * servers and the router's pool and timeouts. docs/config.md has every key,
 * its type, default and range.
 *
 * Loading checks every value and collects every error before failing; the
 * YAML layer is shared with the shard map and plan files (shardmap_yaml.c).
 */
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "shardmap.h"
#include "shardmap_yaml_int.h"

/* An integer key of the router: or replication: section: its range and default. */
struct router_key {
    const char *section;
    const char *name;
    uint32_t min;
    uint32_t max;
    uint32_t def;
    size_t offset; /* of the field in struct shardmap_conf */
};

static const struct router_key router_keys[] = {
    {"router", "pool_size", 1, 1024, 8, offsetof(struct shardmap_conf, pool_size)},
    {"router", "connect_timeout_ms", 10, 60000, 500,
     offsetof(struct shardmap_conf, connect_timeout_ms)},
    {"router", "query_timeout_ms", 10, 600000, 800,
     offsetof(struct shardmap_conf, query_timeout_ms)},
    {"router", "batch_timeout_ms", 100, 3600000, 30000,
     offsetof(struct shardmap_conf, batch_timeout_ms)},
    {"router", "map_poll_ms", 1000, 600000, 1000,
     offsetof(struct shardmap_conf, map_poll_ms)},
    {"router", "move_wait_ms", 100, 60000, 3000,
     offsetof(struct shardmap_conf, move_wait_ms)},
    {"replication", "max_lag_ms", 100, 3600000, 1000,
     offsetof(struct shardmap_conf, max_lag_ms)},
    {"replication", "probe_ms", 50, 10000, 250,
     offsetof(struct shardmap_conf, probe_ms)},
    {"replication", "down_after_ms", 200, 600000, 1000,
     offsetof(struct shardmap_conf, down_after_ms)},
};
#define NROUTER_KEY (sizeof(router_keys) / sizeof(router_keys[0]))

static uint32_t *router_field(struct shardmap_conf *conf, size_t i)
{
    return (uint32_t *)((char *)conf + router_keys[i].offset);
}

static uint32_t router_value(const struct shardmap_conf *conf, size_t i)
{
    return *(const uint32_t *)((const char *)conf + router_keys[i].offset);
}

void shardmap_conf_defaults(struct shardmap_conf *conf)
{
    size_t i;

    for (i = 0; i < NROUTER_KEY; i++) {
        uint32_t *v = router_field(conf, i);

        if (*v == 0) {
            *v = router_keys[i].def;
        } else if (*v < router_keys[i].min) {
            *v = router_keys[i].min;
        }
    }
}

static int valid_prefix(const char *s)
{
    size_t n;

    for (n = 0; s[n] != '\0'; n++) {
        if (!(s[n] >= 'a' && s[n] <= 'z') && !isdigit((unsigned char)s[n]) &&
            s[n] != '_') {
            return 0;
        }
    }
    return n >= 1 && n < SHARDMAP_PREFIX_MAX;
}

static void read_cluster(struct shardmap__yaml *y, yaml_node_t *node, int line,
                         struct shardmap_conf *conf, yaml_node_t **global_host)
{
    static const char ctx[] = "cluster";
    struct shardmap__key keys[] = {{"name", 1, NULL, 0},
                                   {"schema_prefix", 1, NULL, 0},
                                   {"shards", 1, NULL, 0},
                                   {"global_host", 0, NULL, 0}};

    if (shardmap__yaml_fields(y, node, line, ctx, keys, 4) != 0) {
        return;
    }
    if (keys[0].value) {
        shardmap__yaml_name(y, keys[0].value, ctx, "name", conf->name);
    }
    if (keys[1].value) {
        const char *s = shardmap__yaml_text(y, keys[1].value, ctx, "schema_prefix");

        if (s != NULL && !valid_prefix(s)) {
            shardmap__yaml_error(y, shardmap__yaml_line(keys[1].value), ctx,
                                 "schema_prefix",
                                 "'%.40s' is not a valid prefix: 1..%d characters of "
                                 "a-z 0-9 _",
                                 s, SHARDMAP_PREFIX_MAX - 1);
        } else if (s != NULL) {
            memcpy(conf->schema_prefix, s, strlen(s) + 1);
        }
    }
    if (keys[2].value) {
        shardmap__yaml_nshard(y, keys[2].value, ctx, "shards", &conf->nshard);
    }
    /* Checked against the hosts once they are read. */
    *global_host = keys[3].value;
}

/*
 * The operator tools' account of a host: ops_user and ops_password, or the
 * API's user and password when the host names no ops_user (a cluster with one
 * account for everything, as before the accounts were split).
 */
static void read_ops_account(struct shardmap__yaml *y, const struct shardmap__key *user,
                             const struct shardmap__key *password, const char *ctx,
                             struct shardmap_host_conf *h)
{
    if (user->value == NULL) {
        if (password->value != NULL) {
            shardmap__yaml_error(y, password->line, ctx, "ops_password",
                                 "is given without ops_user (the tools would use "
                                 "user and password)");
        }
        memcpy(h->ops_user, h->user, sizeof(h->ops_user));
        memcpy(h->ops_password, h->password, sizeof(h->ops_password));
        return;
    }
    if (shardmap__yaml_str(y, user->value, ctx, "ops_user", h->ops_user,
                           sizeof(h->ops_user), 0) != 0) {
        return;
    }
    if (password->value != NULL &&
        shardmap__yaml_str(y, password->value, ctx, "ops_password", h->ops_password,
                           sizeof(h->ops_password), 1) != 0) {
        return;
    }
    /* One account cannot have two passwords: a typo, not a choice. */
    if (h->user[0] != '\0' && strcmp(h->ops_user, h->user) == 0 &&
        strcmp(h->ops_password, h->password) != 0) {
        shardmap__yaml_error(y, user->line, ctx, "ops_user",
                             "'%s' is also user, with another password", h->ops_user);
    }
}

/* A host's replicas: a sequence of {name, addr, port}. */
static void read_replicas(struct shardmap__yaml *y, yaml_node_t *node, int line,
                          const char *hctx, struct shardmap_host_conf *h)
{
    char ctx[64];
    uint64_t v;
    size_t n;

    if (shardmap__yaml_seq(y, node, line, hctx, "replicas") != 0) {
        return;
    }
    n = shardmap__yaml_len(node);
    if (n > SHARDMAP_MAX_REPLICAS) {
        shardmap__yaml_error(y, line, hctx, "replicas", "has %zu entries, at most %u",
                             n, SHARDMAP_MAX_REPLICAS);
        return;
    }
    h->nreplica = (uint32_t)n;
    for (uint32_t i = 0; i < h->nreplica; i++) {
        yaml_node_t *item = shardmap__yaml_item(y, node, i);
        struct shardmap__key keys[] = {
            {"name", 1, NULL, 0}, {"addr", 1, NULL, 0}, {"port", 1, NULL, 0}};
        struct shardmap_replica_conf *r = &h->replicas[i];

        snprintf(ctx, sizeof(ctx), "%s.replicas[%u]", hctx, i);
        if (shardmap__yaml_fields(y, item, shardmap__yaml_line(item), ctx, keys, 3) !=
            0) {
            continue;
        }
        if (keys[0].value) {
            shardmap__yaml_name(y, keys[0].value, ctx, "name", r->name);
        }
        if (keys[1].value) {
            shardmap__yaml_str(y, keys[1].value, ctx, "addr", r->addr, sizeof(r->addr),
                               0);
        }
        if (keys[2].value &&
            shardmap__yaml_uint(y, keys[2].value, ctx, "port", 1, 65535, &v) == 0) {
            r->port = (uint16_t)v;
        }
    }
}

/* Reads one host; returns the line of its name, 0 when it has none. */
static int read_host(struct shardmap__yaml *y, yaml_node_t *node, const char *ctx,
                     struct shardmap_host_conf *h)
{
    struct shardmap__key keys[] = {
        {"name", 1, NULL, 0},     {"addr", 1, NULL, 0},
        {"port", 1, NULL, 0},     {"user", 1, NULL, 0},
        {"password", 0, NULL, 0}, {"weight", 0, NULL, 0},
        {"ops_user", 0, NULL, 0}, {"ops_password", 0, NULL, 0},
        {"replicas", 0, NULL, 0}};
    uint64_t v;

    h->weight = 1;
    if (shardmap__yaml_fields(y, node, shardmap__yaml_line(node), ctx, keys, 9) != 0) {
        return 0;
    }
    if (keys[0].value) {
        shardmap__yaml_name(y, keys[0].value, ctx, "name", h->name);
    }
    if (keys[1].value) {
        shardmap__yaml_str(y, keys[1].value, ctx, "addr", h->addr, sizeof(h->addr), 0);
    }
    if (keys[2].value &&
        shardmap__yaml_uint(y, keys[2].value, ctx, "port", 1, 65535, &v) == 0) {
        h->port = (uint16_t)v;
    }
    if (keys[3].value) {
        shardmap__yaml_str(y, keys[3].value, ctx, "user", h->user, sizeof(h->user), 0);
    }
    if (keys[4].value) {
        shardmap__yaml_str(y, keys[4].value, ctx, "password", h->password,
                           sizeof(h->password), 1);
    }
    if (keys[5].value &&
        shardmap__yaml_uint(y, keys[5].value, ctx, "weight", 1, 1000, &v) == 0) {
        h->weight = (uint32_t)v;
    }
    read_ops_account(y, &keys[6], &keys[7], ctx, h);
    if (shardmap__yaml_opt(keys[8].value)) {
        read_replicas(y, keys[8].value, keys[8].line, ctx, h);
    }
    return keys[0].value ? shardmap__yaml_line(keys[0].value) : 0;
}

/*
 * Server names are one namespace: a replica may not take the name of a host
 * (the host's first primary carries it) or of another replica.
 */
static void check_server_names(struct shardmap__yaml *y,
                               const struct shardmap_conf *conf, int line)
{
    for (uint32_t i = 0; i < conf->nhost; i++) {
        for (uint32_t k = 0; k < conf->hosts[i].nreplica; k++) {
            const char *name = conf->hosts[i].replicas[k].name;

            if (name[0] == '\0') {
                continue;
            }
            for (uint32_t j = 0; j < conf->nhost; j++) {
                int dup = strcmp(conf->hosts[j].name, name) == 0;

                for (uint32_t l = 0; !dup && l < conf->hosts[j].nreplica; l++) {
                    dup = (j < i || (j == i && l < k)) &&
                          strcmp(conf->hosts[j].replicas[l].name, name) == 0;
                }
                if (dup) {
                    shardmap__yaml_error(y, line, NULL, "hosts",
                                         "server name '%s' is used twice (hosts[%u] "
                                         "and hosts[%u].replicas[%u])",
                                         name, j, i, k);
                    break;
                }
            }
        }
    }
}

static void read_hosts(struct shardmap__yaml *y, yaml_node_t *node, int line,
                       struct shardmap_conf *conf)
{
    char ctx[32];
    uint32_t i, j;
    int name_line;
    size_t n;

    if (shardmap__yaml_seq(y, node, line, NULL, "hosts") != 0) {
        return;
    }
    n = shardmap__yaml_len(node);
    if (n < 1 || n > SHARDMAP_MAX_HOSTS) {
        shardmap__yaml_error(y, line, NULL, "hosts", "has %zu entries, must have 1..%u",
                             n, SHARDMAP_MAX_HOSTS);
        return;
    }
    conf->hosts = calloc(n, sizeof(*conf->hosts));
    if (conf->hosts == NULL) {
        y->nomem = 1;
        return;
    }
    conf->nhost = (uint32_t)n;
    for (i = 0; i < conf->nhost; i++) {
        yaml_node_t *item = shardmap__yaml_item(y, node, i);

        snprintf(ctx, sizeof(ctx), "hosts[%u]", i);
        name_line = read_host(y, item, ctx, &conf->hosts[i]);
        if (conf->hosts[i].name[0] == '\0') {
            continue;
        }
        for (j = 0; j < i; j++) {
            if (strcmp(conf->hosts[j].name, conf->hosts[i].name) == 0) {
                shardmap__yaml_error(y, name_line, ctx, "name",
                                     "duplicate host name '%s' (also hosts[%u])",
                                     conf->hosts[i].name, j);
                break;
            }
        }
    }
    check_server_names(y, conf, line);
}

static void read_memcached(struct shardmap__yaml *y, yaml_node_t *node, int line,
                           struct shardmap_conf *conf)
{
    char ctx[32];
    uint64_t v;
    uint32_t i;
    size_t n;

    if (shardmap__yaml_seq(y, node, line, NULL, "memcached") != 0) {
        return;
    }
    n = shardmap__yaml_len(node);
    if (n > SHARDMAP_MAX_MEMCACHED) {
        shardmap__yaml_error(y, line, NULL, "memcached",
                             "has %zu entries, at most %u allowed", n,
                             SHARDMAP_MAX_MEMCACHED);
        return;
    }
    conf->memcached = calloc(n ? n : 1, sizeof(*conf->memcached));
    if (conf->memcached == NULL) {
        y->nomem = 1;
        return;
    }
    conf->nmemcached = (uint32_t)n;
    for (i = 0; i < n; i++) {
        yaml_node_t *item = shardmap__yaml_item(y, node, i);
        struct shardmap__key keys[] = {{"addr", 1, NULL, 0}, {"port", 1, NULL, 0}};
        struct shardmap_endpoint *e = &conf->memcached[i];

        snprintf(ctx, sizeof(ctx), "memcached[%u]", i);
        if (shardmap__yaml_fields(y, item, shardmap__yaml_line(item), ctx, keys, 2) !=
            0) {
            continue;
        }
        if (keys[0].value) {
            shardmap__yaml_str(y, keys[0].value, ctx, "addr", e->addr, sizeof(e->addr),
                               0);
        }
        if (keys[1].value &&
            shardmap__yaml_uint(y, keys[1].value, ctx, "port", 1, 65535, &v) == 0) {
            e->port = (uint16_t)v;
        }
    }
}

/* The integer keys of one section (router: or replication:). */
static void read_section(struct shardmap__yaml *y, yaml_node_t *node, int line,
                         const char *section, struct shardmap_conf *conf)
{
    struct shardmap__key keys[NROUTER_KEY];
    size_t idx[NROUTER_KEY], n = 0, i;
    uint64_t v;

    for (i = 0; i < NROUTER_KEY; i++) {
        if (strcmp(router_keys[i].section, section) == 0) {
            keys[n] = (struct shardmap__key){router_keys[i].name, 0, NULL, 0};
            idx[n++] = i;
        }
    }
    if (node == NULL || shardmap__yaml_fields(y, node, line, section, keys, n) != 0) {
        return;
    }
    for (i = 0; i < n; i++) {
        const struct router_key *k = &router_keys[idx[i]];

        if (keys[i].value && shardmap__yaml_uint(y, keys[i].value, section, k->name,
                                                 k->min, k->max, &v) == 0) {
            *router_field(conf, idx[i]) = (uint32_t)v;
        }
    }
}

int shardmap_conf_load(const char *path, struct shardmap_conf *conf, char **err)
{
    struct shardmap__key keys[] = {{"cluster", 1, NULL, 0},
                                   {"hosts", 1, NULL, 0},
                                   {"memcached", 0, NULL, 0},
                                   {"router", 0, NULL, 0},
                                   {"replication", 0, NULL, 0}};
    struct shardmap__yaml y;
    yaml_node_t *root, *global_host = NULL;
    int rc;

    memset(conf, 0, sizeof(*conf));
    rc = shardmap__yaml_open(&y, path);
    if (rc != 0) {
        goto out;
    }
    root = shardmap__yaml_root(&y);
    if (root == NULL) {
        shardmap__yaml_error(&y, 1, NULL, NULL,
                             "the file is empty, expected 'cluster:'");
        goto out;
    }
    if (shardmap__yaml_fields(&y, root, shardmap__yaml_line(root), NULL, keys, 5) !=
        0) {
        goto out;
    }
    if (keys[0].value) {
        read_cluster(&y, keys[0].value, keys[0].line, conf, &global_host);
    }
    if (keys[1].value) {
        read_hosts(&y, keys[1].value, keys[1].line, conf);
    }
    if (shardmap__yaml_opt(keys[2].value)) {
        read_memcached(&y, keys[2].value, keys[2].line, conf);
    }
    read_section(&y, shardmap__yaml_opt(keys[3].value), keys[3].line, "router", conf);
    read_section(&y, shardmap__yaml_opt(keys[4].value), keys[4].line, "replication",
                 conf);
    /* Keys the file left out are 0 here (a key given is at least its min). */
    shardmap_conf_defaults(conf);
    if (global_host != NULL) {
        if (shardmap__yaml_name(&y, global_host, "cluster", "global_host",
                                conf->global_host) == 0 &&
            conf->nhost > 0 && shardmap_conf_host(conf, conf->global_host) < 0) {
            shardmap__yaml_error(&y, shardmap__yaml_line(global_host), "cluster",
                                 "global_host", "'%s' is not one of the hosts",
                                 conf->global_host);
        }
    } else if (conf->nhost > 0) {
        memcpy(conf->global_host, conf->hosts[0].name, sizeof(conf->global_host));
    }
out:
    rc = shardmap__yaml_close(&y, rc, err);
    if (rc != 0) {
        shardmap_conf_deinit(conf);
    }
    return rc;
}

int shardmap_conf_save(const char *path, const struct shardmap_conf *conf)
{
    struct shardmap__out o;
    uint32_t i;

    /* 0600: the file holds the hosts' passwords. */
    shardmap__out_open(&o, path, 0600);
    shardmap__out_map(&o, 0);

    shardmap__out_str(&o, "cluster");
    shardmap__out_map(&o, 0);
    shardmap__out_str(&o, "name");
    shardmap__out_str(&o, conf->name);
    shardmap__out_str(&o, "schema_prefix");
    shardmap__out_str(&o, conf->schema_prefix);
    shardmap__out_str(&o, "shards");
    shardmap__out_uint(&o, conf->nshard);
    shardmap__out_str(&o, "global_host");
    shardmap__out_str(&o, conf->global_host);
    shardmap__out_end_map(&o);

    shardmap__out_str(&o, "hosts");
    shardmap__out_seq(&o, 0);
    for (i = 0; i < conf->nhost; i++) {
        const struct shardmap_host_conf *h = &conf->hosts[i];

        shardmap__out_map(&o, 0);
        shardmap__out_str(&o, "name");
        shardmap__out_str(&o, h->name);
        shardmap__out_str(&o, "addr");
        shardmap__out_str(&o, h->addr);
        shardmap__out_str(&o, "port");
        shardmap__out_uint(&o, h->port);
        shardmap__out_str(&o, "user");
        shardmap__out_str(&o, h->user);
        shardmap__out_str(&o, "password");
        shardmap__out_quoted(&o, h->password);
        /* A conf built in code may leave it empty: then the file omits it too. */
        if (h->ops_user[0] != '\0') {
            shardmap__out_str(&o, "ops_user");
            shardmap__out_str(&o, h->ops_user);
            shardmap__out_str(&o, "ops_password");
            shardmap__out_quoted(&o, h->ops_password);
        }
        shardmap__out_str(&o, "weight");
        shardmap__out_uint(&o, h->weight);
        if (h->nreplica > 0) {
            shardmap__out_str(&o, "replicas");
            shardmap__out_seq(&o, 0);
            for (uint32_t k = 0; k < h->nreplica; k++) {
                shardmap__out_map(&o, 0);
                shardmap__out_str(&o, "name");
                shardmap__out_str(&o, h->replicas[k].name);
                shardmap__out_str(&o, "addr");
                shardmap__out_str(&o, h->replicas[k].addr);
                shardmap__out_str(&o, "port");
                shardmap__out_uint(&o, h->replicas[k].port);
                shardmap__out_end_map(&o);
            }
            shardmap__out_end_seq(&o);
        }
        shardmap__out_end_map(&o);
    }
    shardmap__out_end_seq(&o);

    shardmap__out_str(&o, "memcached");
    shardmap__out_seq(&o, 0);
    for (i = 0; i < conf->nmemcached; i++) {
        shardmap__out_map(&o, 0);
        shardmap__out_str(&o, "addr");
        shardmap__out_str(&o, conf->memcached[i].addr);
        shardmap__out_str(&o, "port");
        shardmap__out_uint(&o, conf->memcached[i].port);
        shardmap__out_end_map(&o);
    }
    shardmap__out_end_seq(&o);

    for (const char *const *sec = (const char *const[]){"router", "replication", NULL};
         *sec != NULL; sec++) {
        shardmap__out_str(&o, *sec);
        shardmap__out_map(&o, 0);
        for (i = 0; i < NROUTER_KEY; i++) {
            /* 0 is a key a conf built in code left unset: its default loads back. */
            uint32_t v = router_value(conf, i);

            if (strcmp(router_keys[i].section, *sec) != 0) {
                continue;
            }
            shardmap__out_str(&o, router_keys[i].name);
            shardmap__out_uint(&o, v != 0 ? v : router_keys[i].def);
        }
        shardmap__out_end_map(&o);
    }

    shardmap__out_end_map(&o);
    return shardmap__out_close(&o, path);
}

void shardmap_conf_deinit(struct shardmap_conf *conf)
{
    free(conf->hosts);
    free(conf->memcached);
    memset(conf, 0, sizeof(*conf));
}

int shardmap_conf_host(const struct shardmap_conf *conf, const char *name)
{
    uint32_t i;

    for (i = 0; i < conf->nhost; i++) {
        if (strcmp(conf->hosts[i].name, name) == 0) {
            return (int)i;
        }
    }
    return BC_EHOST;
}
