/*
 * sql_int.h: what the SQL layer's own files share. Not part of the interface.
 */
#ifndef SQL_INT_H
#define SQL_INT_H

#include <mysql.h>

#include "sql/sql.h"

struct sql_conn {
    MYSQL mysql; /* non-blocking; must not move after mysql_init() */
    struct sql_endpoint ep;
    uint32_t connect_timeout_ms;
    uint32_t query_timeout_ms;
    int multi_statements;
    unsigned last_errno; /* mysql_errno() of the last failed call, else 0 */
    int broken;          /* the last failure left the connection unusable */
};

/*
 * Appends one row of rows->ncol cells to rows, copying each cell (row[i] of
 * lens[i] bytes, NULL for SQL NULL) into the rows' blocks. The caller has
 * made room in rows->cell and rows->len for it. A row is added whole or not
 * at all: on -ENOMEM (no block for its bytes) rows is as it was (sql_rows.c).
 */
int sql__rows_add_row(struct sql_rows *rows, const char *const *row,
                      const unsigned long *lens);

/* Copies a result's rows into rows (appending). 0, -EINVAL or -ENOMEM. */
int sql__rows_take(struct sql_rows *rows, MYSQL_RES *res);

/* Initialises Connector/C once per process (sql_format.c). */
void sql__lib_init(void);

/*
 * Waits for the socket events a non-blocking call asked for. Returns the
 * MYSQL_WAIT_* bits that happened, or -1 when the deadline passed first.
 */
int sql__wait_io(MYSQL *mysql, int status, int64_t deadline);

/*
 * Drives a non-blocking call to its end: `status` is what the _start call
 * returned, `cont` the matching _cont call written with ev_ as its event
 * argument. Makes the enclosing function return -1 if `deadline` (evaluated
 * before each wait, so it may be "now + per-wait timeout") passed first.
 */
#define SQL_DRIVE(status, mysql, deadline, cont)                                       \
    while ((status) != 0) {                                                            \
        int ev_ = sql__wait_io((mysql), (status), (deadline));                         \
        if (ev_ < 0)                                                                   \
            return -1;                                                                 \
        (status) = (cont);                                                             \
    }

/*
 * After a failed call: records the errno and whether the connection is
 * broken, sets the message and returns the status (see sql_query()).
 */
int sql__conn_error(struct sql_conn *c);
/* After a missed deadline: the connection is broken; BC_ETIMEOUT. */
int sql__conn_timeout(struct sql_conn *c);

#endif
