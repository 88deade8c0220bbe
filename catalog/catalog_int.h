/*
 * catalog_int.h: what the catalog's own files share. Not part of the interface.
 */
#ifndef CATALOG_INT_H
#define CATALOG_INT_H

#include "catalog/catalog.h"

/*
 * Appends fmt, formatted with sql_vformat() (%S is the global schema), to b.
 * 0, -ENOMEM or -EINVAL (a bad format; the message is in sql_last_error()).
 */
int catalog__add(struct catalog *cat, struct sql_buf *b, const char *fmt, ...);
/* Formats one statement and runs it; rows may be NULL. */
int catalog__run(struct catalog *cat, struct sql_rows *rows, const char *fmt, ...);
/* Runs the text in b and frees b; rows may be NULL. */
int catalog__send(struct catalog *cat, struct sql_buf *b, struct sql_rows *rows);
/*
 * Runs b, which a caller began with "START TRANSACTION; ", as one
 * transaction: "; COMMIT" is appended. When the text fails, "ROLLBACK" is
 * sent on its own, so that a pooled connection is not left in an open
 * transaction; the first failure's message stays in sql_last_error().
 * b is freed.
 */
int catalog__commit(struct catalog *cat, struct sql_buf *b, struct sql_rows *rows);

/* Sets the message of a missing cluster; returns BC_ENOTFOUND. */
int catalog__no_cluster(struct catalog *cat);

/* A cell as a number; NULL and "" are 0. */
uint64_t catalog__u64(const char *cell);
/* Copies a cell into out (size bytes); NULL gives "". */
void catalog__str(char *out, size_t size, const char *cell);

#endif
