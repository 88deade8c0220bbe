/*
 * router_sql.c: statement formatting with escaped values, and row helpers.
 *
 * Formats are the caller's constants; values are always escaped, so no client
 * input ever becomes SQL text unescaped. Statements are formatted before a
 * connection is chosen (a scatter formats for every host up front), so the
 * escaping is mysql_escape_string's: exact for the router's connections,
 * which are all utf8mb4 (no multi-byte charset in which a backslash can hide
 * inside a character) and never run with NO_BACKSLASH_ESCAPES. When a
 * connection is given, its own mysql_real_escape_string is used.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router/router_int.h"

static int sql_reserve(struct router_sql *sql, size_t more)
{
    size_t need = sql->len + more + 1;
    char *buf;

    if (need <= sql->cap)
        return 0;
    if (need < sql->cap * 2)
        need = sql->cap * 2;
    if (need < 256)
        need = 256;
    buf = realloc(sql->buf, need);
    if (buf == NULL)
        return -ENOMEM;
    sql->buf = buf;
    sql->cap = need;
    return 0;
}

int router__sql_append(struct router_sql *sql, const char *s, size_t n)
{
    if (sql_reserve(sql, n) < 0)
        return -ENOMEM;
    memcpy(sql->buf + sql->len, s, n);
    sql->len += n;
    sql->buf[sql->len] = '\0';
    return 0;
}

static int sql_escaped(struct router_sql *sql, MYSQL *mysql, const char *s, size_t n)
{
    if (sql_reserve(sql, n * 2 + 2) < 0)
        return -ENOMEM;
    sql->buf[sql->len++] = '\'';
    if (mysql != NULL)
        sql->len +=
            mysql_real_escape_string(mysql, sql->buf + sql->len, s, (unsigned long)n);
    else
        sql->len += mysql_escape_string(sql->buf + sql->len, s, (unsigned long)n);
    sql->buf[sql->len++] = '\'';
    sql->buf[sql->len] = '\0';
    return 0;
}

int router__sql_vformat(struct router_sql *sql, MYSQL *mysql, const char *schema,
                        uint32_t shard, const char *fmt, va_list ap)
{
    char num[32];
    int rc = 0;

    for (const char *p = fmt; *p != '\0' && rc == 0; p++) {
        const char *s;
        size_t n;
        int len;

        if (*p != '%') {
            const char *next = strchr(p, '%');
            n = next ? (size_t)(next - p) : strlen(p);
            rc = router__sql_append(sql, p, n);
            p += n - 1;
            continue;
        }
        switch (*++p) {
        case 'S':
            len = snprintf(num, sizeof(num), "`%s`", schema);
            rc = router__sql_append(sql, num, (size_t)len);
            break;
        case 'N':
            len = snprintf(num, sizeof(num), "%u", shard == ROUTER_GLOBAL ? 0 : shard);
            rc = router__sql_append(sql, num, (size_t)len);
            break;
        case 's':
            s = va_arg(ap, const char *);
            rc = s == NULL ? router__sql_append(sql, "NULL", 4)
                           : sql_escaped(sql, mysql, s, strlen(s));
            break;
        case 'b':
            s = va_arg(ap, const char *);
            n = va_arg(ap, size_t);
            rc = sql_escaped(sql, mysql, s, n);
            break;
        case 'd':
            len = snprintf(num, sizeof(num), "%" PRId64, va_arg(ap, int64_t));
            rc = router__sql_append(sql, num, (size_t)len);
            break;
        case 'u':
            len = snprintf(num, sizeof(num), "%" PRIu64, va_arg(ap, uint64_t));
            rc = router__sql_append(sql, num, (size_t)len);
            break;
        case '%':
            rc = router__sql_append(sql, "%", 1);
            break;
        default:
            router__set_error("bad conversion in statement format: %s", fmt);
            return -EINVAL;
        }
    }
    return rc;
}

void router__sql_deinit(struct router_sql *sql)
{
    free(sql->buf);
    memset(sql, 0, sizeof(*sql));
}
