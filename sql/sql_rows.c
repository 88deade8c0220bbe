/*
 * sql_rows.c: result rows as the SQL layer hands them out.
 *
 * A row's cells are copied into the rows' current block, one after another
 * with their NUL: a result of thousands of rows costs a few allocations
 * (blocks double from 1 KiB up to 64 KiB, a larger row gets a block of its
 * own), and its bytes are about what the cells hold, not a heap chunk each.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sql/sql_int.h"

#define BLOCK_FIRST 1024
#define BLOCK_MAX (64 * 1024)

struct sql_block {
    struct sql_block *next;
    size_t used, size;
    char data[];
};

static void blocks_free(struct sql_block *b)
{
    while (b != NULL) {
        struct sql_block *next = b->next;
        free(b);
        b = next;
    }
}

void sql_rows_free(struct sql_rows *rows)
{
    if (rows == NULL)
        return;
    blocks_free(rows->blocks);
    free(rows->cell);
    free(rows->len);
    memset(rows, 0, sizeof(*rows));
}

void sql_rows_adopt(struct sql_rows *dst, struct sql_rows *src)
{
    struct sql_block *last = src->blocks;

    if (last == NULL)
        return;
    /* src's blocks go behind dst's first, which keeps filling. */
    while (last->next != NULL)
        last = last->next;
    if (dst->blocks == NULL) {
        dst->blocks = src->blocks;
    } else {
        last->next = dst->blocks->next;
        dst->blocks->next = src->blocks;
    }
    src->blocks = NULL;
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
    sql_rows_adopt(dst, src);
    free(src->cell);
    free(src->len);
    memset(src, 0, sizeof(*src));
    return 0;
}

/* need bytes in the rows' first block, a new one if it has not room. */
static char *block_take(struct sql_rows *rows, size_t need)
{
    struct sql_block *b = rows->blocks;
    size_t size;

    if (b == NULL || b->size - b->used < need) {
        size = b == NULL ? BLOCK_FIRST : b->size < BLOCK_MAX ? b->size * 2 : BLOCK_MAX;
        if (size < need)
            size = need;
        b = malloc(sizeof(*b) + size);
        if (b == NULL)
            return NULL;
        b->used = 0;
        b->size = size;
        b->next = rows->blocks;
        rows->blocks = b;
    }
    b->used += need;
    return b->data + b->used - need;
}

int sql__rows_add_row(struct sql_rows *rows, const char *const *row,
                      const unsigned long *lens)
{
    uint64_t base = (uint64_t)rows->nrow * rows->ncol;
    char **cell = rows->cell + base, *to = NULL;
    size_t need = 0;
    uint32_t i;

    for (i = 0; i < rows->ncol; i++)
        if (row[i] != NULL)
            need += lens[i] + 1;
    if (need > 0 && (to = block_take(rows, need)) == NULL) {
        sql_set_error("out of memory copying a row of %u columns", rows->ncol);
        return -ENOMEM;
    }
    for (i = 0; i < rows->ncol; i++) {
        rows->len[base + i] = lens[i];
        cell[i] = NULL;
        if (row[i] == NULL)
            continue;
        memcpy(to, row[i], lens[i]);
        to[lens[i]] = '\0';
        cell[i] = to;
        to += lens[i] + 1;
    }
    rows->nrow++;
    return 0;
}
