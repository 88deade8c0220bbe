/*
 * shardctl_db.c: plain Connector/C connections and the output of shardctl.
 *
 * A move holds snapshots, waits on replication and copies for minutes: it
 * uses its own blocking connections with long timeouts, not the router's
 * pools and their millisecond deadlines.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tools/shardctl.h"

int64_t sc_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_err(struct sc_conn *c)
{
    snprintf(c->err, sizeof(c->err), "%s: %s (%u)", c->name, mysql_error(c->m),
             mysql_errno(c->m));
}

int sc_connect(struct sc_conn *c, const struct sc_host *h, unsigned timeout_s)
{
    unsigned connect_s = 5;

    snprintf(c->name, sizeof(c->name), "%s", h->name);
    c->m = mysql_init(NULL);
    if (c->m == NULL) {
        snprintf(c->err, sizeof(c->err), "%s: out of memory", h->name);
        return -1;
    }
    mysql_options(c->m, MYSQL_OPT_CONNECT_TIMEOUT, &connect_s);
    mysql_options(c->m, MYSQL_OPT_READ_TIMEOUT, &timeout_s);
    mysql_options(c->m, MYSQL_OPT_WRITE_TIMEOUT, &timeout_s);
    mysql_options(c->m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    if (mysql_real_connect(c->m, h->addr, h->user, h->password, NULL, h->port, NULL,
                           CLIENT_MULTI_STATEMENTS) == NULL) {
        snprintf(c->err, sizeof(c->err), "%s (%s:%u): %s", h->name, h->addr, h->port,
                 mysql_error(c->m));
        mysql_close(c->m);
        c->m = NULL;
        return -1;
    }
    return 0;
}

void sc_close(struct sc_conn *c)
{
    if (c->m != NULL)
        mysql_close(c->m);
    c->m = NULL;
}

static char *vsql(const char *fmt, va_list ap)
{
    char *sql = NULL;

    if (vasprintf(&sql, fmt, ap) < 0)
        return NULL;
    return sql;
}

int sc_exec(struct sc_conn *c, const char *fmt, ...)
{
    va_list ap;
    char *sql;
    int rc = 0, more;

    va_start(ap, fmt);
    sql = vsql(fmt, ap);
    va_end(ap);
    if (sql == NULL) {
        snprintf(c->err, sizeof(c->err), "%s: out of memory", c->name);
        return -1;
    }
    if (mysql_real_query(c->m, sql, strlen(sql)) != 0) {
        set_err(c);
        free(sql);
        return -1;
    }
    free(sql);
    do {
        MYSQL_RES *res = mysql_store_result(c->m);
        if (res != NULL)
            mysql_free_result(res);
        more = mysql_next_result(c->m);
        if (more > 0) {
            set_err(c);
            rc = -1;
        }
    } while (more == 0);
    return rc;
}

MYSQL_RES *sc_query(struct sc_conn *c, const char *fmt, ...)
{
    MYSQL_RES *res;
    va_list ap;
    char *sql;

    va_start(ap, fmt);
    sql = vsql(fmt, ap);
    va_end(ap);
    if (sql == NULL) {
        snprintf(c->err, sizeof(c->err), "%s: out of memory", c->name);
        return NULL;
    }
    if (mysql_real_query(c->m, sql, strlen(sql)) != 0) {
        set_err(c);
        free(sql);
        return NULL;
    }
    free(sql);
    res = mysql_store_result(c->m);
    if (res == NULL) {
        if (mysql_errno(c->m) != 0)
            set_err(c);
        else
            snprintf(c->err, sizeof(c->err), "%s: the statement returned no rows",
                     c->name);
    }
    return res;
}

int sc_value(struct sc_conn *c, char *out, size_t size, const char *fmt, ...)
{
    MYSQL_RES *res;
    MYSQL_ROW row;
    va_list ap;
    char *sql;
    int found = 0;

    va_start(ap, fmt);
    sql = vsql(fmt, ap);
    va_end(ap);
    if (sql == NULL)
        return -1;
    res = sc_query(c, "%s", sql);
    free(sql);
    if (res == NULL)
        return -1;
    if ((row = mysql_fetch_row(res)) != NULL && mysql_num_fields(res) > 0 &&
        row[0] != NULL) {
        snprintf(out, size, "%s", row[0]);
        found = 1;
    }
    mysql_free_result(res);
    return found;
}

const char *sc_col(MYSQL_RES *res, MYSQL_ROW row, const char *name)
{
    MYSQL_FIELD *f = mysql_fetch_fields(res);
    unsigned n = mysql_num_fields(res);

    for (unsigned i = 0; i < n; i++)
        if (strcasecmp(f[i].name, name) == 0)
            return row[i];
    return NULL;
}

void sc_escape(struct sc_conn *c, char *out, const char *s)
{
    mysql_real_escape_string(c->m, out, s, strlen(s));
}

/* ---- output --------------------------------------------------------------- */

void sc_event(struct sc_out *o, const char *name, const char *fields_fmt, ...)
{
    va_list ap;

    if (!o->json)
        return;
    pthread_mutex_lock(&o->lock);
    printf("{\"event\":\"%s\"", name);
    if (fields_fmt != NULL && *fields_fmt != '\0') {
        putchar(',');
        va_start(ap, fields_fmt);
        vprintf(fields_fmt, ap);
        va_end(ap);
    }
    printf("}\n");
    fflush(stdout);
    pthread_mutex_unlock(&o->lock);
}

void sc_say(struct sc_out *o, const char *fmt, ...)
{
    va_list ap;

    if (o->json)
        return;
    pthread_mutex_lock(&o->lock);
    if (o->tty)
        fprintf(stderr, "\r\033[K");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
    pthread_mutex_unlock(&o->lock);
}

void sc_progress(struct sc_out *o, int final, const char *fmt, ...)
{
    static int64_t last_ms;
    va_list ap;

    if (o->json || o->no_progress)
        return;
    pthread_mutex_lock(&o->lock);
    if (o->tty || final || sc_now_ms() - last_ms >= 2000) {
        last_ms = sc_now_ms();
        fputs(o->tty ? "\r\033[K" : "", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        if (!o->tty || final)
            fputc('\n', stderr);
        fflush(stderr);
    }
    pthread_mutex_unlock(&o->lock);
}

void sc_json_str(char *out, size_t size, const char *s)
{
    size_t j = 0;

    for (const char *p = s; *p && j + 7 < size; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '"' || ch == '\\') {
            out[j++] = '\\';
            out[j++] = (char)ch;
        } else if (ch < 0x20) {
            j += (size_t)snprintf(out + j, size - j, "\\u%04x", ch);
        } else {
            out[j++] = (char)ch;
        }
    }
    out[j] = '\0';
}

void sc_error(struct sc_out *o, const char *fmt, ...)
{
    char msg[1024], esc[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!o->json) {
        pthread_mutex_lock(&o->lock);
        fprintf(stderr, "%sshardctl: %s\n", o->tty ? "\r\033[K" : "", msg);
        pthread_mutex_unlock(&o->lock);
        return;
    }
    sc_json_str(esc, sizeof(esc), msg);
    sc_event(o, "error", "\"message\":\"%s\"", esc);
}
