/*
 * sql_rows.c: result rows as the SQL layer hands them out.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sql/sql_int.h"

void sql_rows_free(struct sql_rows *rows)
{
    if (rows == NULL)
        return;
    for (uint64_t i = 0; i < (uint64_t)rows->nrow * rows->ncol; i++)
        free(rows->cell[i]);
    free(rows->cell);
    free(rows->len);
    memset(rows, 0, sizeof(*rows));
}

int sql_rows_append(struct sql_rows *dst, struct sql_rows *src)
{
    uint64_t a = (uint64_t)dst->nrow * dst->ncol, b = (uint64_t)src->nrow * src->ncol;
    char **cell;
    unsigned long *len;

    dst->affected += src->affected;
    if (b == 0) {
        if (dst->nrow == 0)
            dst->ncol = src->ncol;
        sql_rows_free(src);
        return 0;
    }
    if (dst->nrow != 0 && dst->ncol != src->ncol)
        return -EINVAL;
    cell = realloc(dst->cell, (a + b) * sizeof(*cell));
    if (cell == NULL)
        return -ENOMEM;
    dst->cell = cell;
    len = realloc(dst->len, (a + b) * sizeof(*len));
    if (len == NULL)
        return -ENOMEM;
    dst->len = len;
    memcpy(cell + a, src->cell, b * sizeof(*cell));
    memcpy(len + a, src->len, b * sizeof(*len));
    dst->ncol = src->ncol;
    dst->nrow += src->nrow;
    free(src->cell);
    free(src->len);
    memset(src, 0, sizeof(*src));
    return 0;
}

int sql__rows_add_row(struct sql_rows *rows, const char *const *row,
                      const unsigned long *lens)
{
    uint64_t base = (uint64_t)rows->nrow * rows->ncol;
    char **cell = rows->cell + base;
    uint32_t i;

    for (i = 0; i < rows->ncol; i++) {
        rows->len[base + i] = lens[i];
        cell[i] = NULL;
        if (row[i] == NULL)
            continue;
        cell[i] = malloc(lens[i] + 1);
        if (cell[i] == NULL)
            goto error;
        memcpy(cell[i], row[i], lens[i]);
        cell[i][lens[i]] = '\0';
    }
    rows->nrow++;
    return 0;
error:
    /* Not counted yet: sql_rows_free() would not see this row's cells. */
    while (i-- > 0) {
        free(cell[i]);
        cell[i] = NULL;
    }
    sql_set_error("out of memory copying a row of %u columns", rows->ncol);
    return -ENOMEM;
}
