/*
 * catalog_move.c: the records of shard moves, the map flip of a cut-over,
 * and the per-shard move lock.
 *
 * A move's row keeps its phase and what a resumed run needs (the snapshot's
 * binlog position); the generated column `active` is the shard while the
 * move is unfinished and NULL after, and its unique key lets the database
 * itself refuse a second unfinished move of a shard.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog/catalog_int.h"

/* catalog_lock_move_create(): other tools hold it for a check and an insert. */
#define MOVE_CREATE_WAIT_S 10

/* The columns move_from_row() reads, in its order. */
#define MOVE_COLS                                                                      \
    "id, shard, src_host, dst_host, phase, keep_source, binlog_file, binlog_pos, "     \
    "snapshot_gtid, rows_copied, pause_ms, verify_diffs, started_at, finished_at"

static int64_t i64_or(const char *cell, int64_t none)
{
    return cell == NULL ? none : strtoll(cell, NULL, 10);
}

static void move_from_row(const struct sql_rows *rows, uint32_t r,
                          struct catalog_move *mv)
{
    memset(mv, 0, sizeof(*mv));
    mv->id = catalog__u64(sql_cell(rows, r, 0));
    mv->shard = (uint32_t)catalog__u64(sql_cell(rows, r, 1));
    catalog__str(mv->src, sizeof(mv->src), sql_cell(rows, r, 2));
    catalog__str(mv->dst, sizeof(mv->dst), sql_cell(rows, r, 3));
    catalog__str(mv->phase, sizeof(mv->phase), sql_cell(rows, r, 4));
    mv->keep_source = catalog__u64(sql_cell(rows, r, 5)) != 0;
    catalog__str(mv->binlog_file, sizeof(mv->binlog_file), sql_cell(rows, r, 6));
    mv->binlog_pos = catalog__u64(sql_cell(rows, r, 7));
    catalog__str(mv->snapshot_gtid, sizeof(mv->snapshot_gtid), sql_cell(rows, r, 8));
    mv->rows_copied = catalog__u64(sql_cell(rows, r, 9));
    mv->pause_ms = i64_or(sql_cell(rows, r, 10), -1);
    mv->verify_diffs = i64_or(sql_cell(rows, r, 11), -1);
    catalog__str(mv->started_at, sizeof(mv->started_at), sql_cell(rows, r, 12));
    catalog__str(mv->finished_at, sizeof(mv->finished_at), sql_cell(rows, r, 13));
}

static int shard_ok(struct catalog *cat, uint32_t shard)
{
    if (shard < cat->nshard)
        return 0;
    sql_set_error("shard %u out of range (0..%u)", shard, cat->nshard - 1);
    return BC_ESHARD;
}

int catalog_move_create(struct catalog *cat, struct catalog_move *mv)
{
    struct sql_rows rows = {0};
    struct sql_buf b = {0};
    int rc;

    if ((rc = shard_ok(cat, mv->shard)) < 0)
        return rc;
    if (mv->phase[0] == '\0')
        snprintf(mv->phase, sizeof(mv->phase), "prepare");
    rc = catalog__add(cat, &b,
                      "START TRANSACTION; "
                      "INSERT INTO %S.moves (shard, src_host, dst_host, phase, "
                      "keep_source) VALUES (%u, %s, %s, %s, %u); "
                      "SELECT LAST_INSERT_ID(); "
                      "UPDATE %S.shard_map SET state = %u WHERE shard = %u",
                      (uint64_t)mv->shard, mv->src, mv->dst, mv->phase,
                      (uint64_t)(mv->keep_source != 0), (uint64_t)SHARDMAP_STATE_MOVING,
                      (uint64_t)mv->shard);
    if (rc < 0) {
        sql_buf_deinit(&b);
        return rc;
    }
    rc = catalog__commit(cat, &b, &rows);
    if (rc == BC_EDUPKEY) {
        /* The unique key `active`: the shard has an unfinished move. */
        sql_set_error("shard %u has an unfinished move already", mv->shard);
        rc = BC_EEXISTS;
    } else if (rc == 0 && rows.nrow == 1) {
        mv->id = catalog__u64(sql_cell(&rows, 0, 0));
    } else if (rc == 0) {
        sql_set_error("recording the move of shard %u: no id came back", mv->shard);
        rc = BC_EQUERY;
    }
    sql_rows_free(&rows);
    return rc;
}

int catalog_move_active(struct catalog *cat, uint32_t shard, struct catalog_move *out)
{
    struct sql_rows rows = {0};
    int rc;

    if ((rc = shard_ok(cat, shard)) < 0)
        return rc;
    rc =
        catalog__run(cat, &rows, "SELECT " MOVE_COLS " FROM %S.moves WHERE active = %u",
                     (uint64_t)shard);
    if (rc == 0 && rows.nrow > 0) {
        move_from_row(&rows, 0, out);
        rc = 1;
    }
    sql_rows_free(&rows);
    return rc;
}

int catalog_move_save(struct catalog *cat, const struct catalog_move *mv,
                      unsigned fields)
{
    struct sql_buf b = {0};
    int rc;

    rc = catalog__add(cat, &b, "UPDATE %S.moves SET phase = %s", mv->phase);
    if (rc == 0 && (fields & CATALOG_MOVE_COPY))
        rc = catalog__add(cat, &b,
                          ", binlog_file = %s, binlog_pos = %u, snapshot_gtid = %s, "
                          "rows_copied = %u",
                          mv->binlog_file, mv->binlog_pos, mv->snapshot_gtid,
                          mv->rows_copied);
    if (rc == 0 && (fields & CATALOG_MOVE_VERIFY))
        rc = mv->verify_diffs < 0
                 ? catalog__add(cat, &b, ", verify_diffs = NULL")
                 : catalog__add(cat, &b, ", verify_diffs = %d", mv->verify_diffs);
    if (rc == 0 && (fields & CATALOG_MOVE_FINISHED))
        rc = catalog__add(cat, &b, ", finished_at = NOW(3)");
    if (rc == 0)
        rc = catalog__add(cat, &b, " WHERE id = %u", mv->id);
    if (rc < 0) {
        sql_buf_deinit(&b);
        return rc;
    }
    return catalog__send(cat, &b, NULL);
}

int catalog_move_flip(struct catalog *cat, const struct catalog_move *mv)
{
    struct sql_buf b = {0};
    int rc;

    if ((rc = shard_ok(cat, mv->shard)) < 0)
        return rc;
    rc = catalog__add(cat, &b,
                      "START TRANSACTION; "
                      "UPDATE %S.shard_map SET host = %s, state = %u, version = "
                      "(SELECT version + 1 FROM %S.map_version WHERE id = 1) "
                      "WHERE shard = %u; "
                      "UPDATE %S.map_version SET version = version + 1 WHERE id = 1; "
                      "UPDATE %S.moves SET phase = 'switched', pause_ms = ",
                      mv->dst, (uint64_t)SHARDMAP_STATE_ACTIVE, (uint64_t)mv->shard);
    if (rc == 0)
        rc = mv->pause_ms < 0 ? catalog__add(cat, &b, "NULL")
                              : catalog__add(cat, &b, "%d", mv->pause_ms);
    if (rc == 0)
        rc = catalog__add(cat, &b, " WHERE id = %u", mv->id);
    if (rc < 0) {
        sql_buf_deinit(&b);
        return rc;
    }
    return catalog__commit(cat, &b, NULL);
}

int catalog_moves_list(struct catalog *cat, uint32_t max, struct catalog_move **out,
                       uint32_t *n)
{
    struct sql_rows rows = {0};
    int rc;

    *out = NULL;
    *n = 0;
    rc = catalog__run(cat, &rows,
                      "SELECT " MOVE_COLS " FROM %S.moves ORDER BY id DESC LIMIT %u",
                      (uint64_t)max);
    if (rc < 0)
        return rc;
    *out = calloc(rows.nrow ? rows.nrow : 1, sizeof(**out));
    if (*out == NULL) {
        sql_rows_free(&rows);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < rows.nrow; i++)
        move_from_row(&rows, i, &(*out)[i]);
    *n = rows.nrow;
    sql_rows_free(&rows);
    return 0;
}

int catalog_move_kept_source(struct catalog *cat, uint32_t shard,
                             char host[SHARDMAP_NAME_MAX])
{
    struct sql_rows rows = {0};
    int rc;

    if ((rc = shard_ok(cat, shard)) < 0)
        return rc;
    /*
     * A later move into the kept copy's host replaced it (or dropped it, if
     * aborted), and the live host's copy is no other copy: neither counts.
     */
    rc = catalog__run(cat, &rows,
                      "SELECT m.src_host FROM %S.moves m JOIN %S.shard_map s ON "
                      "s.shard = m.shard WHERE m.shard = %u AND m.phase = 'done' AND "
                      "m.keep_source = 1 AND m.src_host <> s.host AND NOT EXISTS "
                      "(SELECT 1 FROM %S.moves l WHERE l.shard = m.shard AND l.id > "
                      "m.id AND l.dst_host = m.src_host) ORDER BY m.id DESC LIMIT 1",
                      (uint64_t)shard);
    if (rc == 0 && rows.nrow > 0) {
        catalog__str(host, SHARDMAP_NAME_MAX, sql_cell(&rows, 0, 0));
        rc = 1;
    }
    sql_rows_free(&rows);
    return rc;
}

int catalog_move_between(struct catalog *cat, const char *src, const char *dst,
                         uint32_t not_shard, struct catalog_move *out)
{
    struct sql_rows rows = {0};
    int rc;

    /* Past "switched" the move's connection is gone (checked before "verified"). */
    rc = catalog__run(cat, &rows,
                      "SELECT " MOVE_COLS " FROM %S.moves WHERE active IS NOT NULL AND "
                      "active <> %u AND src_host = %s AND dst_host = %s AND phase NOT "
                      "IN ('verified', 'cleanup') ORDER BY id LIMIT 1",
                      (uint64_t)not_shard, src, dst);
    if (rc == 0 && rows.nrow > 0) {
        move_from_row(&rows, 0, out);
        rc = 1;
    }
    sql_rows_free(&rows);
    return rc;
}

/* "<prefix>_move_<what>": the prefix is the global schema's name but "_global". */
static void lock_name(const struct catalog *cat, char *out, size_t size,
                      const char *what)
{
    size_t plen = strlen(cat->schema) - strlen("_global");

    snprintf(out, size, "%.*s_move_%s", (int)plen, cat->schema, what);
}

int catalog_lock_shard(struct catalog *cat, uint32_t shard, int *got)
{
    char name[sizeof(cat->schema) + 16], num[16];
    struct sql_rows rows = {0};
    int rc;

    *got = 0;
    if ((rc = shard_ok(cat, shard)) < 0)
        return rc;
    /* "<prefix>_move_NNNN": the name shardctl's moves have always locked. */
    snprintf(num, sizeof(num), "%04u", shard);
    lock_name(cat, name, sizeof(name), num);
    rc = catalog__run(cat, &rows, "SELECT GET_LOCK(%s, 0)", name);
    if (rc == 0 && rows.nrow == 1 && sql_cell(&rows, 0, 0) != NULL)
        *got = strcmp(sql_cell(&rows, 0, 0), "1") == 0;
    sql_rows_free(&rows);
    return rc;
}

int catalog_lock_move_create(struct catalog *cat, int take)
{
    char name[sizeof(cat->schema) + 16];
    struct sql_rows rows = {0};
    const char *got;
    int rc;

    lock_name(cat, name, sizeof(name), "create");
    if (!take)
        return catalog__run(cat, NULL, "DO RELEASE_LOCK(%s)", name);
    rc = catalog__run(cat, &rows, "SELECT GET_LOCK(%s, %u)", name,
                      (uint64_t)MOVE_CREATE_WAIT_S);
    got = rc == 0 && rows.nrow == 1 ? sql_cell(&rows, 0, 0) : NULL;
    if (rc == 0 && (got == NULL || strcmp(got, "1") != 0)) {
        sql_set_error("another tool held the lock %s for %d s", name,
                      MOVE_CREATE_WAIT_S);
        rc = BC_ELOCKWAIT;
    }
    sql_rows_free(&rows);
    return rc;
}
