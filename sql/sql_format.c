/*
 * sql_format.c: statement text with escaped values and checked identifiers,
 * and the thread's last error message.
 *
 * Formats are the caller's constants; values are always escaped, so no
 * input ever becomes SQL text unescaped. Statements are formatted before a
 * connection is chosen (a scatter formats for every host up front), so the
 * escaping is mysql_escape_string's, which needs no connection. It is exact
 * for this layer's connections: all are utf8mb4 (no multi-byte charset in
 * which a backslash can hide inside a character) and none runs with
 * NO_BACKSLASH_ESCAPES.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sql/sql_int.h"

static __thread char last_error[512];

const char *sql_last_error(void)
{
    return last_error;
}

void sql_set_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(last_error, sizeof(last_error), fmt, ap);
    va_end(ap);
}

/*
 * Connector/C's global state: mysql_init() would set it up on first use, but
 * not thread-safely, and mysql_escape_string() needs its default charset
 * before any connection exists.
 */
static pthread_once_t lib_once = PTHREAD_ONCE_INIT;

static void lib_init(void)
{
    mysql_library_init(0, NULL, NULL);
}

void sql__lib_init(void)
{
    pthread_once(&lib_once, lib_init);
}

static int buf_reserve(struct sql_buf *b, size_t more)
{
    size_t need = b->len + more + 1;
    char *buf;

    if (need <= b->cap)
        return 0;
    if (need < b->cap * 2)
        need = b->cap * 2;
    if (need < 256)
        need = 256;
    buf = realloc(b->buf, need);
    if (buf == NULL)
        return -ENOMEM;
    b->buf = buf;
    b->cap = need;
    return 0;
}

void sql_buf_deinit(struct sql_buf *b)
{
    free(b->buf);
    memset(b, 0, sizeof(*b));
}

int sql_buf_add(struct sql_buf *b, const char *s, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return -ENOMEM;
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
    return 0;
}

int sql_buf_add_str(struct sql_buf *b, const char *s, size_t n)
{
    /* Each byte escapes to at most two, plus the quotes. */
    if (buf_reserve(b, n * 2 + 2) < 0)
        return -ENOMEM;
    sql__lib_init();
    b->buf[b->len++] = '\'';
    b->len += mysql_escape_string(b->buf + b->len, s, (unsigned long)n);
    b->buf[b->len++] = '\'';
    b->buf[b->len] = '\0';
    return 0;
}

int sql_buf_add_hex(struct sql_buf *b, const char *s, size_t n)
{
    static const char digit[] = "0123456789ABCDEF";

    if (buf_reserve(b, n * 2 + 3) < 0)
        return -ENOMEM;
    b->buf[b->len++] = 'X';
    b->buf[b->len++] = '\'';
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        b->buf[b->len++] = digit[ch >> 4];
        b->buf[b->len++] = digit[ch & 15];
    }
    b->buf[b->len++] = '\'';
    b->buf[b->len] = '\0';
    return 0;
}

int sql_ident_ok(const char *name)
{
    size_t n;
    int digits = 1;

    if (name == NULL)
        return 0;
    for (n = 0; name[n] != '\0'; n++) {
        char ch = name[n];
        if (ch >= '0' && ch <= '9')
            continue;
        digits = 0;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' ||
              ch == '$'))
            return 0;
    }
    return n >= 1 && n <= 64 && !digits;
}

int sql_buf_add_ident(struct sql_buf *b, const char *name)
{
    size_t n;

    if (!sql_ident_ok(name)) {
        sql_set_error("not a valid identifier: '%.80s'", name ? name : "(null)");
        return -EINVAL;
    }
    n = strlen(name);
    if (buf_reserve(b, n + 2) < 0)
        return -ENOMEM;
    b->buf[b->len++] = '`';
    memcpy(b->buf + b->len, name, n);
    b->len += n;
    b->buf[b->len++] = '`';
    b->buf[b->len] = '\0';
    return 0;
}

static int add_num(struct sql_buf *b, const char *fmt, ...)
{
    char num[32];
    va_list ap;
    int len;

    va_start(ap, fmt);
    len = vsnprintf(num, sizeof(num), fmt, ap);
    va_end(ap);
    return sql_buf_add(b, num, (size_t)len);
}

/*
 * One conversion of sql_vformat. %b and %x given a NULL pointer write NULL,
 * as %s does: a value that is absent, whatever its length argument.
 */
static int convert(struct sql_buf *b, const char *schema, uint32_t shard, char conv,
                   const char *fmt, va_list *ap)
{
    const char *s;
    size_t n;

    switch (conv) {
    case 'S':
        if (schema == NULL) {
            sql_set_error("%%S without a schema in statement format: %.200s", fmt);
            return -EINVAL;
        }
        return sql_buf_add_ident(b, schema);
    case 'N':
        return add_num(b, "%" PRIu32, shard);
    case 's':
        s = va_arg(*ap, const char *);
        return s == NULL ? sql_buf_add(b, "NULL", 4) : sql_buf_add_str(b, s, strlen(s));
    case 'b':
    case 'x':
        s = va_arg(*ap, const char *);
        n = va_arg(*ap, size_t);
        if (s == NULL)
            return sql_buf_add(b, "NULL", 4);
        return conv == 'b' ? sql_buf_add_str(b, s, n) : sql_buf_add_hex(b, s, n);
    case 'I':
        return sql_buf_add_ident(b, va_arg(*ap, const char *));
    case 'R':
        s = va_arg(*ap, const char *);
        if (s == NULL) {
            sql_set_error("%%R given NULL in statement format: %.200s", fmt);
            return -EINVAL;
        }
        return sql_buf_add(b, s, strlen(s));
    case 'd':
        return add_num(b, "%" PRId64, va_arg(*ap, int64_t));
    case 'u':
        return add_num(b, "%" PRIu64, va_arg(*ap, uint64_t));
    case '%':
        return sql_buf_add(b, "%", 1);
    default:
        sql_set_error("bad conversion %%%c in statement format: %.200s",
                      conv ? conv : '0', fmt);
        return -EINVAL;
    }
}

int sql_vformat(struct sql_buf *b, const char *schema, uint32_t shard, const char *fmt,
                va_list ap)
{
    va_list copy;
    int rc = 0;

    /* A copy, so that convert() can take its arguments through a pointer. */
    va_copy(copy, ap);
    for (const char *p = fmt; *p != '\0' && rc == 0; p++) {
        if (*p != '%') {
            const char *next = strchr(p, '%');
            size_t n = next ? (size_t)(next - p) : strlen(p);
            rc = sql_buf_add(b, p, n);
            p += n - 1;
            continue;
        }
        p++;
        rc = convert(b, schema, shard, *p, fmt, &copy);
        if (*p == '\0')
            break;
    }
    va_end(copy);
    return rc;
}

int sql_format(struct sql_buf *b, const char *schema, uint32_t shard, const char *fmt,
               ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = sql_vformat(b, schema, shard, fmt, ap);
    va_end(ap);
    return rc;
}
