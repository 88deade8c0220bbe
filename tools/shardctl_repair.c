/*
 * shardctl_repair.c: the guard's repairs of a host left half-way by a tool
 * that died or a server that restarted: a catalog flip (shared with the
 * failover and the switchover), and a primary left read-only with no
 * switchover under way.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tools/shardctl_guard.h"

/* Whether p's binlog has every transaction of GTID list pos. */
static int binlog_has_all_of(const struct guard_server *p, const char *pos)
{
    for (const char *q = pos; q != NULL && *q != '\0';) {
        char *end;
        uint32_t domain = (uint32_t)strtoul(q, &end, 10);
        const char *seq = *end == '-' ? strchr(end + 1, '-') : NULL;

        if (seq != NULL &&
            guard_gtid_seq(p->binlog_pos, domain) < strtoull(seq + 1, NULL, 10))
            return 0;
        if ((q = strchr(q, ',')) != NULL)
            q++;
    }
    return 1;
}

int guard_flip(struct guard *g, struct guard_group *gr, struct guard_server *s,
               enum catalog_role old_role, const char *note)
{
    struct catalog cat;
    int rc;

    rc = guard_catalog(g, &cat);
    if (rc == 0)
        rc = catalog_promote(&cat, gr->host, s->name, old_role, note);
    if (rc == 0)
        rc = catalog_map_version(&cat, &g->version);
    return rc;
}

/*
 * A switchover killed after it made replica s writable with the primary p
 * its replica, before the catalog's flip (the last step): its flip, by the
 * guard. 0, or a status (the roles stay as they were).
 */
static int finish_switchover(struct guard *g, struct guard_group *gr,
                             struct guard_server *p, struct guard_server *s)
{
    int rc;

    gr->primary = (uint32_t)(s - gr->srv);
    s->role = CATALOG_ROLE_PRIMARY;
    p->role = CATALOG_ROLE_REPLICA;
    rc = guard_flip(g, gr, s, CATALOG_ROLE_REPLICA,
                    "switched over (finished by the guard)");
    if (rc < 0) {
        gr->primary = (uint32_t)(p - gr->srv);
        s->role = CATALOG_ROLE_REPLICA;
        p->role = CATALOG_ROLE_PRIMARY;
        return rc;
    }
    guard_log(
        "%s: a switchover to %s was left unfinished (%s writable, %s its replica): "
        "finished, map version %" PRIu64,
        gr->host, s->name, s->name, p->name, g->version);
    return 0;
}

/*
 * A primary read-only with no switchover under way: one killed half-way,
 * or a primary restarted within down_after_ms (servers start read-only),
 * so never failed over. Its host's writes would fail until someone
 * restarted the guard. A switchover killed after its replica took writes
 * is finished (its flip); one killed before is undone, and a restarted
 * primary made writable, as at the guard's start: replication of its own
 * stopped (a switchover makes it its replica's replica before the
 * replica takes writes), then writable. Never beside another writable
 * server that it does not replicate from, and never when a replica has a
 * transaction it lacks (writing then would fork the group): said once.
 */
void guard_restore_writable(struct guard *g, struct guard_group *gr)
{
    struct guard_server *p = &gr->srv[gr->primary];
    const char *why = NULL;

    if (p->c == NULL || !p->read_only)
        return;
    for (uint32_t k = 0; k < gr->nsrv && why == NULL; k++) {
        struct guard_server *s = &gr->srv[k];

        if (s == p || s->c == NULL)
            continue;
        if (!s->read_only && guard_replicates_from(p, s) &&
            binlog_has_all_of(s, p->binlog_pos) &&
            finish_switchover(g, gr, p, s) == 0) {
            gr->restore_refused = 0;
            return;
        }
        if (!s->read_only)
            why = "another server of the host is writable";
        else if (s->role == CATALOG_ROLE_REPLICA &&
                 !binlog_has_all_of(p, s->binlog_pos))
            why = "a replica has transactions it lacks";
    }
    if (why == NULL && p->replicating &&
        guard_exec(p, NULL, "STOP SLAVE; RESET SLAVE ALL") == 0)
        p->replicating = 0;
    if (why == NULL &&
        (p->replicating || guard_exec(p, NULL, "SET GLOBAL read_only = 0") < 0))
        why = sql_last_error();
    if (why != NULL) {
        if (!gr->restore_refused)
            guard_log("%s: primary %s is read-only and stays so: %s", gr->host, p->name,
                      why);
        gr->restore_refused = 1;
        return;
    }
    p->read_only = 0;
    gr->restore_refused = 0;
    guard_log(
        "%s: primary %s (%s:%u) was read-only with no switchover under way: writable "
        "again",
        gr->host, p->name, p->addr, p->port);
}
