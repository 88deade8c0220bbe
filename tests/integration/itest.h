/*
 * itest.h: helpers for integration tests that run against the stack started
 * by tests/integration/run (BC_CLUSTER, BC_STACK_DIR, BUILD in the environment).
 */
#ifndef ITEST_H
#define ITEST_H

#include <stddef.h>
#include <stdint.h>

#include <mysql.h>

#include "shardmap/shardmap.h"

/*
 * Loads $BC_CLUSTER into conf, with the operator tools' account chosen
 * (conf->account); fails the test on error.
 */
void itest_conf(struct shardmap_conf *conf);
/*
 * A plain blocking connection to the named host (to ask MariaDB directly), as
 * the operator tools' account.
 */
MYSQL *itest_mysql(const struct shardmap_conf *conf, const char *host);
/* Runs a query on m and returns the first cell of the first row as a number. */
int64_t itest_scalar(MYSQL *m, const char *sql);
/* Pid of a stack server (db1, db2, mc1…), from its pid file. */
int itest_pid(const char *name);
/*
 * SIGSTOP pid and return once every thread of it is stopped (kill() returns
 * before: on a loaded machine another thread may answer a request first).
 */
void itest_sigstop(int pid);
/* Runs "$BUILD/shardctl ARGS" (ARGS unquoted, with -c $BC_CLUSTER unless the
 * args name one); output (stdout+stderr) into out; returns the exit code. */
int itest_shardctl(char *out, size_t size, const char *args_fmt, ...)
    __attribute__((format(printf, 3, 4)));
int64_t itest_now_ms(void);

#endif
