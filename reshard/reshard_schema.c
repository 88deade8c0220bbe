/*
 * reshard_schema.c: a shard schema as this version of the code knows it
 * (etc/schema/shard.sql and shard_fence.sql, built in with .incbin so a
 * tool applies exactly the schema of its own version wherever it runs).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "reshard/reshard_int.h"

extern const char reshard_shard_sql[];
extern const char reshard_fence_sql[];

/* .incbin paths are relative to the repository root, where make runs. */
__asm__(".section .rodata\n"
        ".global reshard_shard_sql\n"
        "reshard_shard_sql:\n"
        ".incbin \"etc/schema/shard.sql\"\n"
        ".byte 0\n"
        ".global reshard_fence_sql\n"
        "reshard_fence_sql:\n"
        ".incbin \"etc/schema/shard_fence.sql\"\n"
        ".byte 0\n"
        ".previous\n");

/*
 * Appends tmpl with every {schema} replaced by the back-quoted name's
 * inside, and with replace set every "CREATE TRIGGER IF NOT EXISTS" by
 * "CREATE OR REPLACE TRIGGER".
 */
static int render(struct sql_buf *b, const char *tmpl, const char *schema, int replace)
{
    static const char keep[] = "CREATE TRIGGER IF NOT EXISTS",
                      over[] = "CREATE OR REPLACE TRIGGER";
    size_t sl = strlen(schema);
    int rc = 0;

    for (const char *p = tmpl; *p != '\0' && rc == 0;) {
        const char *at = strstr(p, "{schema}"), *ct = replace ? strstr(p, keep) : NULL;
        int is_ct = ct != NULL && (at == NULL || ct < at);
        const char *next = is_ct ? ct : at;
        size_t n = next ? (size_t)(next - p) : strlen(p);

        rc = sql_buf_add(b, p, n);
        if (next == NULL)
            break;
        if (rc == 0)
            rc = is_ct ? sql_buf_add(b, over, sizeof(over) - 1)
                       : sql_buf_add(b, schema, sl);
        p = next + (is_ct ? sizeof(keep) - 1 : 8);
    }
    return rc;
}

/*
 * 1 when a trigger of the schema still calls fence_check() (the form before
 * the check was inline), 0 when none does, or negative.
 */
static int fence_calls_left(struct sql_conn *c, const char *schema)
{
    struct sql_rows rows = {0};
    int rc = sql_exec(c, &rows,
                      "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE "
                      "TRIGGER_SCHEMA = %s AND ACTION_STATEMENT LIKE '%%fence_check%%'",
                      schema);

    if (rc == 0)
        rc = rows.nrow == 1 && strcmp(sql_cell(&rows, 0, 0), "0") != 0;
    sql_rows_free(&rows);
    return rc;
}

int reshard_shard_install(struct sql_conn *c, const char *schema, uint32_t shard,
                          int fenced)
{
    struct sql_buf b = {0};
    int rc, replace;

    /* The templates quote {schema} themselves: only a plain name may go in. */
    if (!sql_ident_ok(schema)) {
        sql_set_error("bad schema name '%s'", schema);
        return -EINVAL;
    }
    rc = fence_calls_left(c, schema);
    if (rc < 0)
        return rc;
    replace = rc;
    rc = render(&b, reshard_shard_sql, schema, 0);
    if (rc == 0)
        rc =
            sql_format(&b, schema, shard,
                       "\nINSERT IGNORE INTO %S.shard_state (id, shard, fenced) VALUES "
                       "(1, %N, %d);\n",
                       (int64_t)(fenced != 0));
    if (rc == 0)
        rc = render(&b, reshard_fence_sql, schema, replace);
    if (rc == 0)
        rc = sql_query(c, b.buf, b.len, NULL);
    sql_buf_deinit(&b);
    return rc;
}
