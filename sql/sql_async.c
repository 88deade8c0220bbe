/*
 * sql_async.c: one statement driven by the caller's event loop instead of
 * poll().
 *
 * sql_query() drives Connector/C's non-blocking calls itself, waiting in
 * poll() on the calling thread. An event loop cannot wait there: it starts
 * the statement, puts the connection's socket in its own epoll set for the
 * events the call asked for, and continues the call when they come, with
 * every other socket it serves in between. The steps are those of
 * sql_query() (send, read each result, the next result), and so are the
 * statuses, the rows and the rule that a missed deadline breaks the
 * connection; only who waits differs.
 */
#include <errno.h>

#include "sql/sql_int.h"

enum { OP_QUERY, OP_STORE, OP_NEXT, OP_DONE };

_Static_assert(SQL_WAIT_READ == MYSQL_WAIT_READ && SQL_WAIT_WRITE == MYSQL_WAIT_WRITE &&
                   SQL_WAIT_EXCEPT == MYSQL_WAIT_EXCEPT &&
                   SQL_WAIT_TIMEOUT == MYSQL_WAIT_TIMEOUT,
               "SQL_WAIT_* are Connector/C's bits");

/* The statement ended (error or not): its status, as sql_query() gives it. */
static int op_finish(struct sql_op *op)
{
    struct sql_conn *c = op->conn;

    if (mysql_errno(&c->mysql) != 0) {
        op->status = sql__conn_error(c);
    } else {
        c->last_errno = 0;
        op->status = op->err;
    }
    if (op->status < 0 && op->rows != NULL)
        sql_rows_free(op->rows);
    op->state = OP_DONE;
    op->wait = 0;
    return 0;
}

/*
 * Goes on from what the last call returned (status: the events it waits
 * for, 0 when it ended) until a call has to wait or the statement ends.
 */
static int op_step(struct sql_op *op, int status)
{
    MYSQL *m = &op->conn->mysql;
    MYSQL_RES *res;

    for (;;) {
        if (status != 0) {
            op->wait = status;
            if (status & MYSQL_WAIT_TIMEOUT)
                op->lib_due_ms = sql_now_ms() + mysql_get_timeout_value_ms(m);
            return status;
        }
        switch (op->state) {
        case OP_QUERY:
            if (op->ret != 0)
                return op_finish(op); /* server or client error */
            op->state = OP_STORE;
            status = mysql_store_result_start(&op->res, m);
            break;
        case OP_STORE:
            res = op->res;
            op->res = NULL;
            if (res != NULL) {
                if (op->rows != NULL && op->err == 0)
                    op->err = sql__rows_take(op->rows, res);
                mysql_free_result(res);
            } else if (mysql_field_count(m) != 0) {
                return op_finish(op); /* a result expected, not read: error set */
            } else if (op->rows != NULL) {
                op->rows->affected += mysql_affected_rows(m);
                op->rows->insert_id = mysql_insert_id(m);
            }
            if (!mysql_more_results(m))
                return op_finish(op);
            op->state = OP_NEXT;
            status = mysql_next_result_start(&op->more, m);
            break;
        case OP_NEXT:
            if (op->more > 0)
                return op_finish(op); /* error in a later statement */
            op->state = OP_STORE;
            status = mysql_store_result_start(&op->res, m);
            break;
        default:
            return 0;
        }
    }
}

int sql_op_start(struct sql_op *op, struct sql_conn *c, const char *sql, size_t len,
                 struct sql_rows *rows)
{
    *op = (struct sql_op){.conn = c, .rows = rows, .state = OP_QUERY};
    op->deadline_ms = sql_now_ms() + c->query_timeout_ms;
    if (c->broken) {
        sql_set_error("host %s: the connection is broken by an earlier failure",
                      c->ep.name);
        op->status = BC_EDOWN;
        op->state = OP_DONE;
        if (rows != NULL)
            sql_rows_free(rows);
        return 0;
    }
    return op_step(
        op, mysql_real_query_start(&op->ret, &c->mysql, sql, (unsigned long)len));
}

int sql_op_cont(struct sql_op *op, int events)
{
    MYSQL *m = &op->conn->mysql;
    int status;

    switch (op->state) {
    case OP_QUERY:
        status = mysql_real_query_cont(&op->ret, m, events);
        break;
    case OP_STORE:
        status = mysql_store_result_cont(&op->res, m, events);
        break;
    case OP_NEXT:
        status = mysql_next_result_cont(&op->more, m, events);
        break;
    default:
        return 0;
    }
    return op_step(op, status);
}

int sql_op_tick(struct sql_op *op, int64_t now_ms)
{
    if (op->state == OP_DONE)
        return 0;
    if (now_ms >= op->deadline_ms) {
        /* The call is abandoned half-way: the connection goes with it. */
        if (op->res != NULL) {
            mysql_free_result(op->res);
            op->res = NULL;
        }
        op->status = sql__conn_timeout(op->conn);
        if (op->rows != NULL)
            sql_rows_free(op->rows);
        op->state = OP_DONE;
        op->wait = 0;
        return 0;
    }
    if ((op->wait & MYSQL_WAIT_TIMEOUT) && now_ms >= op->lib_due_ms)
        return sql_op_cont(op, MYSQL_WAIT_TIMEOUT);
    return op->wait;
}

int64_t sql_op_due_ms(const struct sql_op *op)
{
    if ((op->wait & MYSQL_WAIT_TIMEOUT) && op->lib_due_ms < op->deadline_ms)
        return op->lib_due_ms;
    return op->deadline_ms;
}

int sql_conn_fd(struct sql_conn *c)
{
    return (int)mysql_get_socket(&c->mysql);
}
