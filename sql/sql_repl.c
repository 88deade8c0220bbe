/*
 * sql_repl.c: binlog positions and replication status as the server reports
 * them, and the host-account rule.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mysqld_error.h>

#include "sql/sql_int.h"

/*
 * MariaDB answers SHOW SLAVE 'x' STATUS for a connection it does not have
 * with error 1617, "There is no master connection 'x'" (checked against
 * 10.11; Connector/C's header calls the number WARN_NO_MASTER_INFO).
 */
#define ER_NO_MASTER_CONNECTION 1617

static int parse_pos(const char *file, const char *pos, struct sql_binlog_pos *out)
{
    char *end;

    if (file == NULL || file[0] == '\0' || pos == NULL)
        return BC_ENOTFOUND;
    snprintf(out->file, sizeof(out->file), "%s", file);
    errno = 0;
    out->pos = strtoull(pos, &end, 10);
    if (errno != 0 || end == pos || *end != '\0') {
        sql_set_error("bad binlog position '%.40s' of %.200s", pos, file);
        return BC_EQUERY;
    }
    return 0;
}

int sql_master_pos(struct sql_conn *c, struct sql_binlog_pos *pos)
{
    struct sql_rows rows = {0};
    int rc;

    rc = sql_exec(c, &rows, "SHOW MASTER STATUS");
    if (rc < 0)
        return rc;
    /* File, Position, Binlog_Do_DB, Binlog_Ignore_DB; no row without a binlog. */
    rc = rows.nrow == 1 && rows.ncol >= 2
             ? parse_pos(sql_cell(&rows, 0, 0), sql_cell(&rows, 0, 1), pos)
             : BC_ENOTFOUND;
    if (rc == BC_ENOTFOUND)
        sql_set_error("host %s writes no binlog", c->ep.name);
    sql_rows_free(&rows);
    return rc;
}

int sql_snapshot_pos(struct sql_conn *c, struct sql_binlog_pos *pos)
{
    struct sql_rows rows = {0};
    const char *file = NULL, *at = NULL;
    int rc;

    rc = sql_exec(c, &rows, "SHOW STATUS LIKE 'binlog_snapshot_%%'");
    if (rc < 0)
        return rc;
    for (uint32_t i = 0; i < rows.nrow && rows.ncol >= 2; i++) {
        const char *name = sql_cell(&rows, i, 0);
        if (name != NULL && strcasecmp(name, "binlog_snapshot_file") == 0)
            file = sql_cell(&rows, i, 1);
        else if (name != NULL && strcasecmp(name, "binlog_snapshot_position") == 0)
            at = sql_cell(&rows, i, 1);
    }
    /* An empty file name: the server writes no binlog. */
    rc = parse_pos(file, at, pos);
    if (rc == BC_ENOTFOUND)
        sql_set_error("host %s: no binlog position for the snapshot", c->ep.name);
    sql_rows_free(&rows);
    return rc;
}

struct replica_parse {
    struct sql_replica_status *st;
    int rows;
};

static int replica_row(void *arg, const struct sql_stream_row *row)
{
    struct replica_parse *p = arg;
    struct sql_replica_status *st = p->st;
    const char *file = NULL, *pos = NULL; /* refs into the row */

    p->rows++;
    for (uint32_t i = 0; i < row->ncol; i++) {
        const char *name = row->name[i], *v = row->cell[i];
        if (strcasecmp(name, "Relay_Master_Log_File") == 0)
            file = v;
        else if (strcasecmp(name, "Exec_Master_Log_Pos") == 0)
            pos = v;
        else if (strcasecmp(name, "Slave_IO_Running") == 0) {
            st->io_running = v != NULL && strcasecmp(v, "Yes") == 0;
            st->io_stopped = v != NULL && strcasecmp(v, "No") == 0;
        } else if (strcasecmp(name, "Slave_SQL_Running") == 0)
            st->sql_running = v != NULL && strcasecmp(v, "Yes") == 0;
        else if (strcasecmp(name, "Seconds_Behind_Master") == 0)
            st->behind_s = v != NULL ? strtol(v, NULL, 10) : -1;
        else if (strcasecmp(name, "Master_Host") == 0)
            snprintf(st->master_host, sizeof(st->master_host), "%s", v ? v : "");
        else if (strcasecmp(name, "Master_Port") == 0)
            st->master_port = (uint16_t)(v ? strtoul(v, NULL, 10) : 0);
        else if (strcasecmp(name, "Gtid_IO_Pos") == 0)
            snprintf(st->gtid_io_pos, sizeof(st->gtid_io_pos), "%s", v ? v : "");
        else if (strcasecmp(name, "Last_IO_Errno") == 0)
            st->last_io_errno = (unsigned)(v ? strtoul(v, NULL, 10) : 0);
        else if (strcasecmp(name, "Last_SQL_Errno") == 0)
            st->last_sql_errno = (unsigned)(v ? strtoul(v, NULL, 10) : 0);
        else if (strcasecmp(name, "Last_IO_Error") == 0)
            snprintf(st->last_io_error, sizeof(st->last_io_error), "%s", v ? v : "");
        else if (strcasecmp(name, "Last_SQL_Error") == 0)
            snprintf(st->last_sql_error, sizeof(st->last_sql_error), "%s", v ? v : "");
        else if (strcasecmp(name, "Replicate_Do_DB") == 0)
            snprintf(st->do_db, sizeof(st->do_db), "%s", v ? v : "");
    }
    snprintf(st->exec.file, sizeof(st->exec.file), "%s", file ? file : "");
    st->exec.pos = pos != NULL ? strtoull(pos, NULL, 10) : 0;
    return 0;
}

int sql_replica_status(struct sql_conn *c, const char *channel,
                       struct sql_replica_status *st)
{
    struct replica_parse p = {.st = st};
    int rc;

    memset(st, 0, sizeof(*st));
    st->behind_s = -1;
    if (channel == NULL || channel[0] == '\0') {
        rc = sql_stream(c, replica_row, &p, "SHOW SLAVE STATUS");
    } else if (!sql_ident_ok(channel)) {
        sql_set_error("not a valid replication connection name: '%.80s'", channel);
        return -EINVAL;
    } else {
        rc = sql_stream(c, replica_row, &p, "SHOW SLAVE %s STATUS", channel);
    }
    if (rc == BC_EQUERY && sql_conn_errno(c) == ER_NO_MASTER_CONNECTION)
        rc = BC_ENOTFOUND; /* the message is the server's */
    else if (rc == 0 && p.rows == 0) {
        sql_set_error("host %s: no replication connection '%s'", c->ep.name,
                      channel ? channel : "");
        rc = BC_ENOTFOUND;
    }
    return rc;
}

int sql_endpoint_of(const struct shardmap_conf *conf, const char *name,
                    const char *addr, uint16_t port, struct sql_endpoint *ep)
{
    int i = shardmap_conf_host(conf, name), acct = i;

    if (addr == NULL && i < 0) {
        sql_set_error("unknown host %s (not in the config)", name);
        return BC_EHOST;
    }
    /* A host only the catalog knows: the global host's account. */
    if (acct < 0 && conf->global_host[0] != '\0')
        acct = shardmap_conf_host(conf, conf->global_host);
    else if (acct < 0 && conf->nhost > 0)
        acct = 0; /* no global_host given: the first host holds the schema */
    if (acct < 0) {
        sql_set_error("no account for host %s: the config names no global host", name);
        return BC_EHOST;
    }
    memset(ep, 0, sizeof(*ep));
    snprintf(ep->name, sizeof(ep->name), "%s", name);
    if (addr != NULL) {
        snprintf(ep->addr, sizeof(ep->addr), "%s", addr);
        ep->port = port;
    } else {
        snprintf(ep->addr, sizeof(ep->addr), "%s", conf->hosts[i].addr);
        ep->port = conf->hosts[i].port;
    }
    if (conf->account == SHARDMAP_ACCOUNT_OPS) {
        snprintf(ep->user, sizeof(ep->user), "%s", conf->hosts[acct].ops_user);
        snprintf(ep->password, sizeof(ep->password), "%s",
                 conf->hosts[acct].ops_password);
    } else {
        snprintf(ep->user, sizeof(ep->user), "%s", conf->hosts[acct].user);
        snprintf(ep->password, sizeof(ep->password), "%s", conf->hosts[acct].password);
    }
    return 0;
}
