/*
 * fuzz_conn.c: a request's headers and query arguments without a socket,
 * for the harnesses that call the API's functions directly (fuzz_request,
 * fuzz_parsers). MHD_lookup_connection_value() and
 * MHD_get_connection_values_n() are defined here: they take the place of
 * libmicrohttpd's (the executable's definition wins over the
 * shared library's) and answer from the current struct fuzz_conn. A
 * harness that serves real connections (fuzz_http) must not link this file.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <microhttpd.h>

#include "tests/fuzz/fuzz.h"

static struct fuzz_conn *current;

void fuzz_conn_set(struct fuzz_conn *conn)
{
    current = conn;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/*
 * Decodes %XX and '+' in place, as libmicrohttpd does for query arguments;
 * returns the decoded size (a %00 decodes to a NUL byte, which counts).
 */
static size_t unescape(char *s)
{
    char *out = s, *start = s;

    for (; *s != '\0'; s++) {
        if (*s == '+') {
            *out++ = ' ';
        } else if (*s == '%' && hex_value(s[1]) >= 0 && hex_value(s[2]) >= 0) {
            *out++ = (char)(hex_value(s[1]) * 16 + hex_value(s[2]));
            s += 2;
        } else {
            *out++ = *s;
        }
    }
    *out = '\0';
    return (size_t)(out - start);
}

void fuzz_conn_query(struct fuzz_conn *conn, char *query)
{
    char *next;

    for (char *p = query; p != NULL && conn->narg < FUZZ_MAX_PAIRS; p = next) {
        char *eq;

        next = strchr(p, '&');
        if (next != NULL)
            *next++ = '\0';
        eq = strchr(p, '=');
        if (eq != NULL)
            *eq++ = '\0';
        unescape(p);
        conn->arg[conn->narg].value_len = eq != NULL ? unescape(eq) : 0;
        conn->arg[conn->narg].name = p;
        conn->arg[conn->narg].value = eq;
        conn->narg++;
    }
}

const char *MHD_lookup_connection_value(struct MHD_Connection *connection,
                                        enum MHD_ValueKind kind, const char *key)
{
    struct fuzz_conn *c = current;

    /* Only the harness's requests: nothing else ever connects to its server. */
    if (c == NULL || (void *)connection != (void *)c || key == NULL)
        return NULL;
    if (kind == MHD_HEADER_KIND) {
        for (int i = 0; i < c->nheader; i++)
            if (strcasecmp(c->header[i].name, key) == 0)
                return c->header[i].value;
    } else if (kind == MHD_GET_ARGUMENT_KIND) {
        for (int i = 0; i < c->narg; i++)
            if (strcmp(c->arg[i].name, key) == 0)
                return c->arg[i].value;
    }
    return NULL;
}

/* The query arguments, with their decoded sizes, as libmicrohttpd gives them. */
int MHD_get_connection_values_n(struct MHD_Connection *connection,
                                enum MHD_ValueKind kind, MHD_KeyValueIteratorN iterator,
                                void *iterator_cls)
{
    struct fuzz_conn *c = current;
    int n = 0;

    if (c == NULL || (void *)connection != (void *)c || kind != MHD_GET_ARGUMENT_KIND)
        return 0;
    for (int i = 0; i < c->narg; i++) {
        const char *v = c->arg[i].value;
        size_t len = v == NULL             ? 0
                     : c->arg[i].value_len ? c->arg[i].value_len
                                           : strlen(v);

        n++;
        if (iterator != NULL && iterator(iterator_cls, kind, c->arg[i].name,
                                         strlen(c->arg[i].name), v, len) != MHD_YES)
            break;
    }
    return n;
}
