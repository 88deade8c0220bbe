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

/* Appends tmpl with every {schema} replaced by the back-quoted name's inside. */
static int render(struct sql_buf *b, const char *tmpl, const char *schema)
{
    size_t sl = strlen(schema);
    int rc = 0;

    for (const char *p = tmpl; *p != '\0' && rc == 0;) {
        const char *at = strstr(p, "{schema}");
        size_t n = at ? (size_t)(at - p) : strlen(p);
        rc = sql_buf_add(b, p, n);
        if (at == NULL)
            break;
        if (rc == 0)
            rc = sql_buf_add(b, schema, sl);
        p = at + 8;
    }
    return rc;
}

int reshard_shard_install(struct sql_conn *c, const char *schema, uint32_t shard,
                          int fenced)
{
    struct sql_buf b = {0};
    int rc;

    /* The templates quote {schema} themselves: only a plain name may go in. */
    if (!sql_ident_ok(schema)) {
        sql_set_error("bad schema name '%s'", schema);
        return -EINVAL;
    }
    rc = render(&b, reshard_shard_sql, schema);
    if (rc == 0)
        rc =
            sql_format(&b, schema, shard,
                       "\nINSERT IGNORE INTO %S.shard_state (id, shard, fenced) VALUES "
                       "(1, %N, %d);\n",
                       (int64_t)(fenced != 0));
    if (rc == 0)
        rc = render(&b, reshard_fence_sql, schema);
    if (rc == 0)
        rc = sql_query(c, b.buf, b.len, NULL);
    sql_buf_deinit(&b);
    return rc;
}
