/*
 * bcadmin: operator commands of the game that are not HTTP.
 *
 *   bcadmin -c cluster.yaml create-admin --email E --password P [--display-name N]
 *   bcadmin -c cluster.yaml check-ledger
 *
 * check-ledger verifies, on every shard, that every user's balance equals
 * initial_balance + the sum of his ledger deltas and is not negative.
 * Exit codes: 0 ok, 1 violated or failed, 2 usage.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "router/router.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: bcadmin [-c CLUSTER.yaml] create-admin --email E --password P "
                 "[--display-name N]\n"
                 "       bcadmin [-c CLUSTER.yaml] check-ledger\n");
}

static int check_ledger(struct router *r)
{
    struct sql_rows bad = {0}, users = {0};
    uint64_t total = 0;
    int rc;

    rc = router_scatter(r, &users, "SELECT COUNT(*) FROM %S.users");
    if (rc == 0)
        rc = router_scatter(
            r, &bad,
            "SELECT %N, u.id, u.balance, u.initial_balance + COALESCE(l.d, 0) "
            "FROM %S.users u LEFT JOIN (SELECT user_id, SUM(delta) AS d FROM "
            "%S.ledger GROUP BY user_id) l ON l.user_id = u.id WHERE "
            "u.balance <> u.initial_balance + COALESCE(l.d, 0) OR u.balance < 0");
    if (rc < 0) {
        fprintf(stderr, "bcadmin: %s\n", router_last_error());
        goto out;
    }
    for (uint32_t i = 0; i < users.nrow; i++)
        total += strtoull(sql_cell(&users, i, 0), NULL, 10);
    for (uint32_t i = 0; i < bad.nrow && i < 20; i++)
        printf("VIOLATION shard %s user %s: balance %s, initial + ledger %s\n",
               sql_cell(&bad, i, 0), sql_cell(&bad, i, 1), sql_cell(&bad, i, 2),
               sql_cell(&bad, i, 3));
    printf("ledger: %" PRIu64 " users on %u shards checked, %u violations\n", total,
           router_nshard(r), bad.nrow);
    rc = bad.nrow == 0 ? 0 : 1;
out:
    sql_rows_free(&users);
    sql_rows_free(&bad);
    return rc < 0 ? 1 : rc;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"email", required_argument, NULL, 'e'},
                                         {"password", required_argument, NULL, 'p'},
                                         {"display-name", required_argument, NULL, 'd'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *path = getenv("BC_CLUSTER"), *email = NULL, *password = NULL;
    const char *display = "Platform Admin";
    struct shardmap_conf conf;
    struct router *r;
    char *err = NULL;
    uint64_t id = 0;
    int c, rc;

    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 'e':
            email = optarg;
            break;
        case 'p':
            password = optarg;
            break;
        case 'd':
            display = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    if (path == NULL)
        path = ".stack/cluster.yaml";
    if (shardmap_conf_load(path, &conf, &err) < 0) {
        fprintf(stderr, "bcadmin: %s\n", err ? err : "cannot load the cluster config");
        free(err);
        return 1;
    }
    conf.query_timeout_ms = 30000; /* scans of whole shards */
    if ((rc = router_create(&conf, &r)) < 0) {
        fprintf(stderr, "bcadmin: %s\n", bc_strerror(rc));
        shardmap_conf_deinit(&conf);
        return 1;
    }
    if (strcmp(argv[optind], "check-ledger") == 0) {
        rc = check_ledger(r);
    } else if (strcmp(argv[optind], "create-admin") == 0) {
        if (email == NULL || password == NULL) {
            usage(stderr);
            rc = 2;
        } else {
            rc = api_create_platform_admin(r, email, password, display, 1000, &id);
            if (rc == 0 || rc == BC_EEXISTS) {
                printf("platform admin %s: user %" PRIu64 "%s\n", email, id,
                       rc == BC_EEXISTS ? " (already there)" : " created");
                rc = 0;
            } else {
                fprintf(stderr, "bcadmin: create-admin: %s%s%s\n",
                        rc == -EINVAL ? "bad email or password shorter than 8"
                                      : bc_strerror(rc),
                        rc == -EINVAL ? "" : ": ",
                        rc == -EINVAL ? "" : router_last_error());
                rc = 1;
            }
        }
    } else {
        fprintf(stderr, "bcadmin: unknown command '%s'\n", argv[optind]);
        usage(stderr);
        rc = 2;
    }
    router_destroy(r);
    shardmap_conf_deinit(&conf);
    return rc;
}
