/*
 * rtest.h: the router integration suites' fixture (tests/integration/run's
 * stack): a router over $BC_CLUSTER after `shardctl init`, and users of a
 * company no other test uses, removed before and after the suite.
 */
#ifndef RTEST_H
#define RTEST_H

#include <stdint.h>

#include "router/router.h"

#define NSHARD 64
/* The suites' users belong to a company no other test uses. */
#define TEST_COMPANY ((uint64_t)999999)

struct fixture {
    struct shardmap_conf conf;
    struct router *router;
};

/* cmocka group setup and teardown: *state is a struct fixture. */
int rtest_setup(void **state);
int rtest_teardown(void **state);
/* The suite's users on shard. */
int64_t rtest_count_users(struct router *r, uint32_t shard);
/* One user of the suite's company, on the shard its id names. */
void rtest_insert_user(struct router *r, uint64_t id, const char *email,
                       int64_t points);

#endif
