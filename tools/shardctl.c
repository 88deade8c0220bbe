/*
 * shardctl: the operator's tool for the shard layout.
 *
 *   shardctl -c cluster.yaml init
 *   shardctl -c cluster.yaml status [--json]
 *   shardctl -c cluster.yaml plan --add-host NAME=HOST:PORT [--weight W] [-o FILE]
 *   shardctl -c cluster.yaml plan --remove-host NAME [-o FILE]
 *   shardctl -c cluster.yaml move SHARD TO-HOST [--keep-source] [--grace S] ...
 *   shardctl -c cluster.yaml move SHARD --resume | --abort
 *   shardctl -c cluster.yaml verify SHARD [--against HOST]
 *   shardctl -c cluster.yaml rebalance PLAN [--parallel N] [--keep-source]
 *   shardctl -c cluster.yaml moves
 *   shardctl -c cluster.yaml guard [--once] [--require-replica]
 *   shardctl -c cluster.yaml switchover HOST
 *
 * Exit codes: 0 success, 1 error, 2 usage, 3 some host down, 4 verify found
 * differences, 5 refused (another move of the shard).
 */
#include <errno.h>
#include <pthread.h>
#include <getopt.h>
#include <signal.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catalog/catalog.h"
#include "reshard/reshard.h"
#include "router/router.h"
#include "shardmap/shardmap.h"
#include "tools/shardctl.h"
#include "tools/shardctl_guard.h"

/* DDL on a cold host may take seconds; status and plan keep short deadlines. */
#define INIT_QUERY_TIMEOUT_MS 120000

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: shardctl [-c CLUSTER.yaml] COMMAND [options]\n"
        "\n"
        "commands:\n"
        "  init                      create the global schema and every shard schema\n"
        "                            on its host (idempotent)\n"
        "  status [--json]           hosts: up/down, shards, schemas, rows; map "
        "version\n"
        "  plan --add-host NAME=HOST:PORT [--weight W] [-o FILE]\n"
        "                            W: default the host's weight in the config, else "
        "1\n"
        "  plan --remove-host NAME [-o FILE]\n"
        "                            print the moves and write them as a plan file\n"
        "                            (default shardplan.yaml)\n"
        "  move SHARD TO-HOST [--keep-source] [--grace S] [--postpone-cutover FILE]\n"
        "                [--no-verify] [--copy-rate ROWS]\n"
        "                            copy the shard to TO-HOST while it serves, cut\n"
        "                            over, verify, drop the source after S seconds\n"
        "                            (default 5); a re-run resumes an interrupted "
        "move\n"
        "                            --copy-rate caps the copy at ROWS rows/s\n"
        "  move SHARD --resume       finish the shard's interrupted move\n"
        "  move SHARD --abort        roll back the shard's unfinished move (before\n"
        "                            the map flip)\n"
        "  verify SHARD [--against HOST]\n"
        "                            compare two copies of the shard, chunk by chunk\n"
        "  rebalance PLAN [--parallel N] [--keep-source] [--grace S] [--copy-rate "
        "ROWS]\n"
        "                            run a plan's moves, N at a time (default 1)\n"
        "  moves [--json]            the newest 100 move records, newest first\n"
        "  guard [--once] [--require-replica]\n"
        "                            the replication supervisor: primaries writable,\n"
        "                            replicas replicating, heartbeats, failover of a\n"
        "                            dead primary, fencing; --once: set up and exit\n"
        "  switchover HOST           make HOST's replica its primary (planned)\n"
        "\n"
        "--json prints one JSON event per line (move, verify, rebalance).\n"
        "Exit: 0 ok, 1 error, 2 usage, 3 host down, 4 differences, 5 refused.\n"
        "-c defaults to $BC_CLUSTER, then .stack/cluster.yaml\n");
}

/* Places the config's hosts and writes them as map version 1 (one transaction). */
static int init_map(struct catalog *cat, const struct shardmap_conf *conf)
{
    struct shardmap_node nodes[SHARDMAP_MAX_HOSTS];
    struct shardmap *map;
    int rc;

    for (uint32_t i = 0; i < conf->nhost; i++) {
        snprintf(nodes[i].name, sizeof(nodes[i].name), "%s", conf->hosts[i].name);
        nodes[i].weight = conf->hosts[i].weight;
    }
    map = shardmap_create(conf->nshard, nodes, conf->nhost, 1);
    if (map == NULL)
        return -ENOMEM;
    rc = shardmap_place(map);
    if (rc == 0)
        rc = catalog_map_create(cat, conf, map);
    shardmap_destroy(map);
    return rc;
}

/* One host's shard schemas, on a thread of its own (cmd_init()). */
struct init_host {
    const struct shardmap_conf *conf;
    struct router *router;
    const struct shardmap *map;
    uint32_t node;
    int rc;
    int started;
    pthread_t thread;
};

static void *init_host_main(void *arg)
{
    struct init_host *h = arg;
    struct sql_conn_opts co = {.connect_timeout_ms = h->conf->connect_timeout_ms,
                               .query_timeout_ms = INIT_QUERY_TIMEOUT_MS,
                               .multi_statements = 1};
    const char *host = h->map->nodes[h->node].name;
    char schema[SHARDMAP_SCHEMA_MAX];
    struct sql_endpoint ep;
    struct sql_conn *c = NULL;

    if ((h->rc = router_endpoint(h->router, host, &ep)) < 0 ||
        (h->rc = sql_conn_open(&ep, &co, &c)) < 0) {
        fprintf(stderr, "shardctl: %s: %s\n", host, sql_last_error());
        return NULL;
    }
    for (uint32_t s = 0; s < h->map->nshard && h->rc == 0; s++) {
        if (h->map->node_of[s] != h->node)
            continue;
        router_schema(h->router, s, schema, sizeof(schema));
        if ((h->rc = reshard_shard_install(c, schema, s, 0)) < 0)
            fprintf(stderr, "shardctl: creating %s on %s: %s\n", schema, host,
                    sql_last_error());
    }
    sql_conn_close(c);
    return NULL;
}

/* Every host's shard schemas, the hosts in parallel; 0 or the first failure. */
static int install_shards(const struct shardmap_conf *conf, struct router *r,
                          const struct shardmap *map)
{
    struct init_host *hosts = calloc(map->nnode, sizeof(*hosts));
    int rc = 0;

    if (hosts == NULL)
        return -ENOMEM;
    for (uint32_t i = 0; i < map->nnode; i++) {
        hosts[i] = (struct init_host){.conf = conf, .router = r, .map = map, .node = i};
        if (pthread_create(&hosts[i].thread, NULL, init_host_main, &hosts[i]) == 0)
            hosts[i].started = 1;
        else
            init_host_main(&hosts[i]); /* no thread to be had: here */
    }
    for (uint32_t i = 0; i < map->nnode; i++) {
        if (hosts[i].started)
            pthread_join(hosts[i].thread, NULL);
        if (rc == 0)
            rc = hosts[i].rc;
    }
    free(hosts);
    return rc;
}

static int cmd_init(struct shardmap_conf *conf)
{
    const struct shardmap *map;
    struct catalog *cat;
    struct router *r;
    uint32_t nshard;
    int rc;

    conf->query_timeout_ms = INIT_QUERY_TIMEOUT_MS;
    if ((rc = router_create(conf, &r)) < 0) {
        fprintf(stderr, "shardctl: %s\n", bc_strerror(rc));
        return 1;
    }
    cat = router_catalog(r);
    if ((rc = catalog_install(cat)) < 0) {
        fprintf(stderr, "shardctl: %s on %s: %s\n", cat->schema, conf->global_host,
                sql_last_error());
        goto out;
    }
    if ((rc = catalog_cluster_shards(cat, &nshard)) < 0) {
        fprintf(stderr, "shardctl: reading %s: %s\n", cat->schema, sql_last_error());
        goto out;
    }
    if (nshard != 0 && nshard != conf->nshard) {
        fprintf(stderr,
                "shardctl: refusing: the cluster in %s on %s has %u shards, "
                "the config says %u; the shard count is fixed at creation\n",
                cat->schema, conf->global_host, nshard, conf->nshard);
        rc = BC_EMISMATCH;
        goto out;
    }
    rc = nshard == 0 ? init_map(cat, conf) : BC_EEXISTS;
    if (rc == 0) {
        printf("created shard map version 1: %u shards over %u hosts\n", conf->nshard,
               conf->nhost);
    } else if (rc == BC_EEXISTS) {
        printf("shard map exists: keeping it\n");
    } else {
        fprintf(stderr, "shardctl: writing the shard map: %s\n", sql_last_error());
        goto out;
    }
    /* Each host's servers (its primary, its replicas) as the config lists them. */
    if ((rc = catalog_servers_sync(cat, conf)) < 0) {
        fprintf(stderr, "shardctl: recording the servers: %s\n", sql_last_error());
        goto out;
    }
    if ((rc = router_reload_map(r)) < 0 || (map = router_map(r)) == NULL) {
        fprintf(stderr, "shardctl: loading the shard map: %s\n", router_last_error());
        rc = rc < 0 ? rc : BC_ENOTFOUND;
        goto out;
    }
    /* One connection per host, with DDL's long deadline, hosts in parallel. */
    rc = install_shards(conf, r, map);
    if (rc < 0)
        goto out;
    printf("%u shard schemas ready\n", map->nshard);
out:
    router_destroy(r);
    return rc < 0 ? 1 : 0;
}

/* Unfinished moves first by shard, as status lists them. */
static int move_cmp(const void *a, const void *b)
{
    const struct catalog_move *x = a, *y = b;

    return x->shard < y->shard ? -1 : x->shard > y->shard;
}

/* The unfinished moves (none in clusters made before moves existed). */
static uint32_t unfinished_moves(struct catalog *cat, struct catalog_move **out)
{
    uint32_t n = 0, k = 0;

    if (catalog_moves_list(cat, UINT32_MAX, out, &n) < 0)
        return 0;
    for (uint32_t i = 0; i < n; i++)
        if (strcmp((*out)[i].phase, "done") != 0 &&
            strcmp((*out)[i].phase, "aborted") != 0)
            (*out)[k++] = (*out)[i];
    qsort(*out, k, sizeof(**out), move_cmp);
    return k;
}

/* A move whose map flip is done: --abort refuses it, only a re-run finishes it. */
static int past_flip(const char *phase)
{
    enum reshard_phase at;

    return reshard_phase_parse(phase, &at) == 0 && at >= RESHARD_SWITCHED;
}

/*
 * For status while the global host has no writable server that answers
 * (its primary died and nothing failed it over yet: the guard is down or
 * still deciding): the newest catalog copy among that host's servers
 * (catalog_global_newest). 0 and *c (close it after cat) and *from, or
 * BC_EDOWN.
 */
static int status_catalog_copy(const struct shardmap_conf *conf, struct catalog *cat,
                               struct catalog_map *cm, struct sql_conn **c,
                               const char **from)
{
    struct sql_conn_opts opts = {.connect_timeout_ms = 1000, .query_timeout_ms = 2000};
    struct sql_executor exec;
    struct sql_endpoint ep;

    *c = NULL;
    if (catalog_global_newest(conf, &ep, from) < 0 || sql_conn_open(&ep, &opts, c) < 0)
        return BC_EDOWN;
    sql_conn_executor(*c, &exec);
    catalog_init(cat, conf, &exec);
    if (catalog_map_load(cat, cm) < 0) {
        catalog_deinit(cat);
        sql_conn_close(*c);
        *c = NULL;
        return BC_EDOWN;
    }
    return 0;
}

/*
 * The host check of status: through the router, or with the catalog read
 * from a copy, straight to the address that copy gives (the router has no
 * map then, and the config's address may be a replica's by now).
 */
static int status_host_exec(const struct shardmap_conf *conf, struct router *r,
                            const struct catalog_host *h, int direct, const char *sql,
                            struct sql_rows *rows)
{
    struct sql_conn_opts opts = {.connect_timeout_ms = 1000, .query_timeout_ms = 5000};
    struct sql_endpoint ep;
    struct sql_conn *c;
    int rc;

    if (!direct)
        return router_host_exec(r, h->name, rows, sql);
    if ((rc = sql_endpoint_of(conf, h->name, h->addr, h->port, &ep)) != 0 ||
        (rc = sql_conn_open(&ep, &opts, &c)) != 0)
        return rc;
    rc = sql_query(c, sql, strlen(sql), rows);
    sql_conn_close(c);
    return rc;
}

static int cmd_status(struct shardmap_conf *conf, int json)
{
    struct catalog_map *cm = calloc(1, sizeof(*cm));
    struct catalog_move *moves = NULL;
    const struct shardmap *map;
    uint32_t counts[SHARDMAP_MAX_HOSTS], nmove;
    char sql[512], why[512];
    struct router *r;
    struct catalog copy, *cat;
    struct sql_conn *copy_conn = NULL;
    const char *from = NULL;
    int rc, down = 0;

    if (cm == NULL || (rc = router_create(conf, &r)) < 0) {
        fprintf(stderr, "shardctl: %s\n", bc_strerror(cm == NULL ? -ENOMEM : rc));
        free(cm);
        return 1;
    }
    cat = router_catalog(r);
    if ((rc = catalog_map_load(cat, cm)) < 0) {
        snprintf(why, sizeof(why), "%s",
                 sql_last_error()[0] ? sql_last_error() : "run shardctl init");
        if (status_catalog_copy(conf, &copy, cm, &copy_conn, &from) < 0) {
            fprintf(stderr, "shardctl: no shard map in %s_global on %s: %s\n",
                    conf->schema_prefix, conf->global_host, why);
            router_destroy(r);
            free(cm);
            /* A global host that does not answer is a host down (exit 3). */
            return sc_exit_of(rc);
        }
        cat = &copy;
        down++; /* the global host has no writable server that answers */
        if (!json)
            printf("warning: the global host %s has no writable server that answers "
                   "(%s): the catalog below is %s's copy, read-only; the global "
                   "schema takes no write until the guard fails the host over or its "
                   "primary is back\n\n",
                   conf->global_host, why, from);
    }
    map = cm->map;
    shardmap_count(map, counts);
    /* The prefix is [a-z0-9_] (checked when the config was loaded). */
    snprintf(sql, sizeof(sql),
             "SELECT COUNT(DISTINCT TABLE_SCHEMA), COALESCE(SUM(TABLE_ROWS), 0) "
             "FROM information_schema.TABLES WHERE TABLE_SCHEMA LIKE '%s\\_____' "
             "AND TABLE_NAME = 'users'",
             conf->schema_prefix);
    if (json) {
        char jwhy[1100];

        sc_json_str(jwhy, sizeof(jwhy), from != NULL ? why : "");
        printf("{\"map_version\":%" PRIu64 ",\"shards\":%u,\"prefix\":\"%s\",",
               map->version, map->nshard, conf->schema_prefix);
        if (from != NULL)
            printf("\"catalog_from\":\"%s\",\"global_error\":\"%s\",", from, jwhy);
        else
            printf("\"catalog_from\":null,\"global_error\":null,");
        printf("\"hosts\":[");
    } else
        printf("%-12s %-22s %-5s %7s %8s %12s\n", "HOST", "ADDRESS", "STATE", "SHARDS",
               "SCHEMAS", "ROWS(est)");
    for (uint32_t i = 0; i < map->nnode; i++) {
        const struct catalog_host *h = &cm->host[i];
        struct sql_rows rows = {0};
        char addr[300];
        int up = status_host_exec(conf, r, h, from != NULL, sql, &rows) == 0 &&
                 rows.nrow == 1;
        const char *schemas = up ? sql_cell(&rows, 0, 0) : "-";
        const char *nrows = up ? sql_cell(&rows, 0, 1) : "-";

        snprintf(addr, sizeof(addr), "%s:%u", h->addr, h->port);
        down += !up;
        if (json)
            printf("%s{\"name\":\"%s\",\"addr\":\"%s\",\"up\":%s,\"shards\":%u,"
                   "\"schemas\":%s,\"rows\":%s}",
                   i ? "," : "", h->name, addr, up ? "true" : "false", counts[i],
                   up ? schemas : "null", up ? nrows : "null");
        else
            printf("%-12s %-22s %-5s %7u %8s %12s\n", h->name, addr, up ? "up" : "DOWN",
                   counts[i], schemas, nrows);
        sql_rows_free(&rows);
    }
    nmove = unfinished_moves(cat, &moves);
    if (json)
        printf("]");
    else
        printf("\n");
    down += shardctl_servers_status(conf, cat, json);
    if (json) {
        printf(",\"moves\":[");
        for (uint32_t i = 0; i < nmove; i++)
            printf("%s{\"move\":%" PRIu64 ",\"shard\":%u,\"from\":\"%s\",\"to\":\"%s\","
                   "\"phase\":\"%s\"}",
                   i ? "," : "", moves[i].id, moves[i].shard, moves[i].src,
                   moves[i].dst, moves[i].phase);
        printf("]}\n");
    } else {
        printf("map version %" PRIu64 ", %u shards, prefix %s, global schema on %s\n",
               map->version, map->nshard, conf->schema_prefix, conf->global_host);
        for (uint32_t i = 0; i < nmove; i++)
            printf("unfinished move #%" PRIu64 ": shard %u %s -> %s, phase %s (re-run "
                   "shardctl move %u %s to finish it%s)\n",
                   moves[i].id, moves[i].shard, moves[i].src, moves[i].dst,
                   moves[i].phase, moves[i].shard, moves[i].dst,
                   past_flip(moves[i].phase) ? "; past the map flip, --abort no "
                                               "longer applies"
                                             : ", or --abort");
    }
    free(moves);
    catalog_map_deinit(cm);
    free(cm);
    if (copy_conn != NULL) {
        catalog_deinit(&copy);
        sql_conn_close(copy_conn);
    }
    router_destroy(r);
    return down ? 3 : 0;
}

/* Parses NAME=HOST:PORT. */
static int parse_new_host(const char *arg, struct shardmap_host_conf *h)
{
    const char *eq = strchr(arg, '='), *colon = strrchr(arg, ':');
    char *end;
    unsigned long port;

    if (eq == NULL || colon == NULL || colon < eq || eq == arg ||
        (size_t)(eq - arg) >= sizeof(h->name) ||
        (size_t)(colon - eq - 1) >= sizeof(h->addr) || colon == eq + 1)
        return -EINVAL;
    port = strtoul(colon + 1, &end, 10);
    if (*end != '\0' || port == 0 || port > 65535)
        return -EINVAL;
    memset(h, 0, sizeof(*h));
    memcpy(h->name, arg, (size_t)(eq - arg));
    memcpy(h->addr, eq + 1, (size_t)(colon - eq - 1));
    h->port = (uint16_t)port;
    for (const char *p = h->name; *p; p++)
        if (!(*p == '-' || *p == '_' || (*p >= '0' && *p <= '9') ||
              (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
            return -EINVAL;
    return 0;
}

/*
 * The map a plan starts from, of a cluster with the config's shard count:
 * 0, or the exit code after saying why (3: the global host is down).
 */
static int plan_map(const struct shardmap_conf *conf, struct router *r,
                    const struct shardmap **map)
{
    struct catalog *cat = router_catalog(r);
    int rc;

    if ((rc = catalog_check_shards(cat, conf->global_host)) == BC_EMISMATCH) {
        fprintf(stderr, "shardctl: %s\n", sql_last_error());
        return 1;
    }
    if (rc == 0)
        rc = router_reload_map(r);
    if (rc == 0 && (*map = router_map(r)) != NULL)
        return 0;
    fprintf(stderr, "shardctl: no shard map in %s on %s: %s\n", cat->schema,
            conf->global_host, rc < 0 ? sql_last_error() : "run shardctl init");
    /* A global host that does not answer is a host down, as for status. */
    return sc_exit_of(rc);
}

int sc_exit_of(int rc)
{
    return (rc == BC_EDOWN || rc == BC_ETIMEOUT) && !sql_last_denied() ? SC_DOWN
                                                                       : SC_ERROR;
}

static int cmd_plan(struct shardmap_conf *conf, const char *add, const char *remove,
                    uint32_t weight, const char *out)
{
    struct shardmap_plan plan;
    struct shardmap_host_conf nh;
    const struct shardmap *map;
    struct router *r;
    int rc;

    if ((add == NULL) == (remove == NULL)) {
        fprintf(stderr,
                "shardctl plan: give exactly one of --add-host, --remove-host\n");
        return 2;
    }
    if (add != NULL && parse_new_host(add, &nh) < 0) {
        fprintf(stderr, "shardctl plan: --add-host wants NAME=HOST:PORT, got '%s'\n",
                add);
        return 2;
    }
    if ((rc = router_create(conf, &r)) < 0) {
        fprintf(stderr, "shardctl: %s\n", bc_strerror(rc));
        return 1;
    }
    if ((rc = plan_map(conf, r, &map)) != 0) {
        router_destroy(r);
        return rc;
    }
    if (add != NULL) {
        struct shardmap_node node;
        int known = shardmap_conf_host(conf, nh.name);

        /* Without --weight, the weight the cluster config gives the host. */
        if (weight == 0)
            weight = known >= 0 ? conf->hosts[known].weight : 1;
        memset(&node, 0, sizeof(node));
        node.weight = weight;
        snprintf(node.name, sizeof(node.name), "%s", nh.name);
        rc = shardmap_plan_add(map, &node, &plan);
        if (rc == 0) {
            plan.has_new_host = 1;
            nh.weight = weight;
            plan.new_host = nh;
        }
    } else {
        rc = shardmap_plan_remove(map, remove, &plan);
    }
    if (rc == BC_EHOST) {
        fprintf(stderr, "shardctl plan: no host %s in the shard map\n", remove);
        router_destroy(r);
        return 2; /* a bad operand */
    }
    if (rc < 0) {
        fprintf(stderr, "shardctl plan: %s\n",
                rc == BC_EEXISTS ? "that host already holds shards"
                : rc == -EINVAL
                    ? "the plan would leave no host, or the weight is out of 1..1000"
                    : bc_strerror(rc));
        router_destroy(r);
        return 1;
    }
    for (uint32_t i = 0; i < plan.nmove; i++)
        printf("move shard %u: %s -> %s\n", plan.moves[i].shard,
               plan.target->nodes[plan.moves[i].from].name,
               plan.target->nodes[plan.moves[i].to].name);
    printf("%u of %u shards move; map version %" PRIu64 " -> %" PRIu64 "\n", plan.nmove,
           map->nshard, plan.base_version, plan.target->version);
    rc = shardmap_plan_save(out, &plan);
    if (rc < 0)
        fprintf(stderr, "shardctl: writing %s: %s\n", out, bc_strerror(rc));
    else
        printf("plan written to %s\n", out);
    shardmap_plan_deinit(&plan);
    router_destroy(r);
    return rc < 0 ? 1 : 0;
}

/* A shard number, or UINT32_MAX (out of range for every cluster). */
static uint32_t shard_arg(const char *s)
{
    char *end;
    unsigned long n = strtoul(s, &end, 10);

    return *s == '\0' || *end != '\0' || n > UINT32_MAX - 1 ? UINT32_MAX : (uint32_t)n;
}

/* Checks the command and its operands; prints what is wrong. */
static int command_args_ok(const char *cmd, int nargs, const struct sc_move_opts *o)
{
    static const char *const known[] = {"init",  "status", "plan",
                                        "move",  "verify", "rebalance",
                                        "moves", "guard",  "switchover"};
    const char *want = NULL;
    size_t i = 0;

    while (i < sizeof(known) / sizeof(known[0]) && strcmp(cmd, known[i]) != 0)
        i++;
    if (i == sizeof(known) / sizeof(known[0])) {
        fprintf(stderr, "shardctl: unknown command '%s'\n", cmd);
        usage(stderr);
        return 0;
    }
    if (strcmp(cmd, "move") == 0) {
        if (o->abort || o->resume) {
            if (nargs != 1 || (o->abort && o->resume))
                want = "move SHARD --resume | --abort";
        } else if (nargs != 2) {
            want = "move SHARD TO-HOST";
        }
    } else if (strcmp(cmd, "verify") == 0 || strcmp(cmd, "rebalance") == 0 ||
               strcmp(cmd, "switchover") == 0) {
        if (nargs != 1)
            want = strcmp(cmd, "verify") == 0       ? "verify SHARD"
                   : strcmp(cmd, "switchover") == 0 ? "switchover HOST"
                                                    : "rebalance PLAN";
    } else if (nargs != 0) {
        want = "no operands";
    }
    if (want != NULL)
        fprintf(stderr, "shardctl %s: usage: %s\n", cmd, want);
    return want == NULL;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"add-host", required_argument, NULL, 'a'},
        {"remove-host", required_argument, NULL, 'r'},
        {"weight", required_argument, NULL, 'w'},
        {"output", required_argument, NULL, 'o'},
        {"keep-source", no_argument, NULL, 'k'},
        {"grace", required_argument, NULL, 'g'},
        {"postpone-cutover", required_argument, NULL, 'P'},
        {"no-verify", no_argument, NULL, 'V'},
        {"abort", no_argument, NULL, 'A'},
        {"resume", no_argument, NULL, 'R'},
        {"parallel", required_argument, NULL, 'n'},
        {"against", required_argument, NULL, 'G'},
        {"copy-rate", required_argument, NULL, 'C'},
        {"once", no_argument, NULL, 'O'},
        {"require-replica", no_argument, NULL, 'Q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = getenv("BC_CLUSTER"), *add = NULL, *remove = NULL;
    const char *out = "shardplan.yaml", *against = NULL;
    struct sc_move_opts mopts = {.grace_s = 5, .parallel = 1};
    struct sc_out so = {.lock = PTHREAD_MUTEX_INITIALIZER};
    struct shardmap_conf conf;
    unsigned long weight = 0, num; /* 0: --weight not given */
    int once = 0, require_replica = 0;
    char *err = NULL, *end;
    int c, json = 0, rc;

    while ((c = getopt_long(argc, argv, "c:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 'j':
            json = 1;
            break;
        case 'a':
            add = optarg;
            break;
        case 'r':
            remove = optarg;
            break;
        case 'w':
            weight = strtoul(optarg, &end, 10);
            if (*end != '\0' || weight == 0 || weight > 1000) {
                fprintf(stderr, "shardctl: --weight wants 1..1000\n");
                return 2;
            }
            break;
        case 'o':
            out = optarg;
            break;
        case 'k':
            mopts.keep_source = 1;
            break;
        case 'g':
        case 'n':
            num = strtoul(optarg, &end, 10);
            if (*end != '\0' || *optarg == '\0' || (c == 'g' && num > 86400) ||
                (c == 'n' && (num < 1 || num > 16))) {
                fprintf(stderr, "shardctl: --%s wants %s\n",
                        c == 'g' ? "grace" : "parallel",
                        c == 'g' ? "seconds, 0..86400" : "1..16");
                return 2;
            }
            if (c == 'g')
                mopts.grace_s = (unsigned)num;
            else
                mopts.parallel = (unsigned)num;
            break;
        case 'P':
            mopts.postpone_cutover = optarg;
            break;
        case 'V':
            mopts.no_verify = 1;
            break;
        case 'A':
            mopts.abort = 1;
            break;
        case 'R':
            mopts.resume = 1;
            break;
        case 'G':
            against = optarg;
            break;
        case 'C':
            num = strtoul(optarg, &end, 10);
            if (*end != '\0' || *optarg == '\0' || num < 100 || num > 100000000) {
                fprintf(stderr, "shardctl: --copy-rate wants rows/s, 100..100000000\n");
                return 2;
            }
            mopts.copy_rate = num;
            break;
        case 'O':
            once = 1;
            break;
        case 'Q':
            require_replica = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            /* "move -1 db2": getopt took the number for options. */
            if (c == '?' && optopt >= '0' && optopt <= '9') {
                fprintf(stderr, "shardctl: a shard number has no sign (0 or more)\n");
                return 2;
            }
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    /* A mistyped command is a usage error (2), whatever the config. */
    if (!command_args_ok(argv[optind], argc - optind - 1, &mopts))
        return 2;
    if ((strcmp(argv[optind], "move") == 0 || strcmp(argv[optind], "verify") == 0) &&
        shard_arg(argv[optind + 1]) == UINT32_MAX) {
        fprintf(stderr, "shardctl %s: '%s' is not a shard number\n", argv[optind],
                argv[optind + 1]);
        return 2;
    }
    if (path == NULL)
        path = ".stack/cluster.yaml";
    rc = shardmap_conf_load(path, &conf, &err);
    if (rc < 0) {
        fprintf(stderr, "shardctl: %s\n", err ? err : bc_strerror(rc));
        free(err);
        return 1;
    }
    conf.account = SHARDMAP_ACCOUNT_OPS; /* schemas, moves, replication */
    so.json = json;
    so.tty = isatty(STDERR_FILENO);
    shardctl_reshard_signals();
    if (strcmp(argv[optind], "move") == 0)
        rc = shardctl_move(&conf, &so, shard_arg(argv[optind + 1]),
                           optind + 2 < argc ? argv[optind + 2] : NULL, &mopts);
    else if (strcmp(argv[optind], "verify") == 0)
        rc = shardctl_verify(&conf, &so, shard_arg(argv[optind + 1]), against);
    else if (strcmp(argv[optind], "rebalance") == 0)
        rc = shardctl_rebalance(&conf, &so, argv[optind + 1], &mopts);
    else if (strcmp(argv[optind], "moves") == 0)
        rc = shardctl_moves(&conf, &so);
    else if (strcmp(argv[optind], "guard") == 0)
        rc = shardctl_guard(&conf, once, require_replica);
    else if (strcmp(argv[optind], "switchover") == 0)
        rc = shardctl_switchover(&conf, argv[optind + 1]);
    else if (strcmp(argv[optind], "init") == 0)
        rc = cmd_init(&conf);
    else if (strcmp(argv[optind], "status") == 0)
        rc = cmd_status(&conf, json);
    else /* plan: command_args_ok() knows no other */
        rc = cmd_plan(&conf, add, remove, (uint32_t)weight, out);
    shardmap_conf_deinit(&conf);
    return rc;
}
