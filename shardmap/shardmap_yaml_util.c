/*
 * shardmap_yaml_util.c: the YAML layer that cluster configs, shard maps and
 * plans share: documents loaded with line numbers, errors collected as
 * "path:line: message", and typed field readers (the writer is
 * shardmap_yaml_out.c). Internal: see shardmap_yaml_int.h.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shardmap.h"
#include "shardmap_yaml_int.h"

/* ---- errors --------------------------------------------------------------- */

static void append(struct shardmap__yaml *y, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void vappend(struct shardmap__yaml *y, const char *fmt, va_list ap)
{
    va_list aq;
    int n;

    if (y->nomem) {
        return;
    }
    va_copy(aq, ap);
    n = vsnprintf(NULL, 0, fmt, aq);
    va_end(aq);
    if (n < 0) {
        y->nomem = 1;
        return;
    }
    if (y->errlen + (size_t)n + 1 > y->errcap) {
        size_t cap = y->errcap ? y->errcap : 256;
        char *p;

        while (cap < y->errlen + (size_t)n + 1) {
            cap *= 2;
        }
        p = realloc(y->err, cap);
        if (p == NULL) {
            y->nomem = 1;
            return;
        }
        y->err = p;
        y->errcap = cap;
    }
    vsnprintf(y->err + y->errlen, y->errcap - y->errlen, fmt, ap);
    y->errlen += (size_t)n;
}

static void append(struct shardmap__yaml *y, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vappend(y, fmt, ap);
    va_end(ap);
}

void shardmap__yaml_error(struct shardmap__yaml *y, int line, const char *ctx,
                          const char *key, const char *fmt, ...)
{
    va_list ap;

    if (y->nerr > 0) {
        append(y, "\n");
    }
    y->nerr++;
    if (line > 0) {
        append(y, "%s:%d: ", y->path, line);
    } else {
        append(y, "%s: ", y->path);
    }
    if (ctx != NULL && key != NULL) {
        append(y, "%s.%s: ", ctx, key);
    } else if (ctx != NULL || key != NULL) {
        append(y, "%s: ", ctx != NULL ? ctx : key);
    }
    size_t from = y->errlen;

    va_start(ap, fmt);
    vappend(y, fmt, ap);
    va_end(ap);
    /* Whatever of the file a message quotes, it stays one line of the report. */
    for (size_t i = from; !y->nomem && i < y->errlen; i++) {
        if ((unsigned char)y->err[i] < 0x20 || y->err[i] == 0x7f) {
            y->err[i] = '?';
        }
    }
}

/* True for the plain scalars YAML reads as null. */
static int is_null(const yaml_node_t *node)
{
    const char *s = (const char *)node->data.scalar.value;

    return node->type == YAML_SCALAR_NODE &&
           node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
           (s[0] == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
            strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0);
}

/*
 * A scalar as messages show it: at most 40 bytes, control characters as '?',
 * so that a hostile file cannot forge lines in the report.
 */
static const char *show(const yaml_node_t *node, char *buf, size_t size)
{
    size_t i, n = 0;

    if (node->type != YAML_SCALAR_NODE) {
        snprintf(buf, size, "%s",
                 node->type == YAML_MAPPING_NODE ? "a mapping" : "a list");
        return buf;
    }
    if (is_null(node)) {
        snprintf(buf, size, "nothing");
        return buf;
    }
    buf[n++] = '\'';
    for (i = 0; i < node->data.scalar.length && n + 5 < size && i < 40; i++) {
        unsigned char c = node->data.scalar.value[i];

        buf[n++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (i < node->data.scalar.length) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n++] = '\'';
    buf[n] = '\0';
    return buf;
}

/* ---- reading ------------------------------------------------------------- */

/* 1-based line of byte offset off in f, for errors libyaml gives no line. */
static int line_of_offset(FILE *f, size_t off)
{
    int line = 1, c;

    if (fseek(f, 0, SEEK_SET) != 0) {
        return 0;
    }
    while (off-- > 0 && (c = getc(f)) != EOF) {
        line += c == '\n';
    }
    return line;
}

static void syntax_error(struct shardmap__yaml *y, yaml_parser_t *parser, FILE *f)
{
    const char *problem = parser->problem ? parser->problem : "unknown error";

    if (parser->error == YAML_READER_ERROR) {
        shardmap__yaml_error(y, line_of_offset(f, parser->problem_offset), NULL, NULL,
                             "invalid input: %s", problem);
    } else if (parser->context != NULL) {
        shardmap__yaml_error(y, (int)parser->problem_mark.line + 1, NULL, NULL,
                             "YAML syntax error: %s (%s on line %d)", problem,
                             parser->context, (int)parser->context_mark.line + 1);
    } else {
        shardmap__yaml_error(y, (int)parser->problem_mark.line + 1, NULL, NULL,
                             "YAML syntax error: %s", problem);
    }
}

/*
 * Deeper collections are no config, and libyaml's time grows with the square
 * of the depth (100,000 '[' took 33 s): a first pass over a regular file's
 * events refuses them. Syntax errors are left to the loader, which names them.
 */
#define YAML_DEPTH_MAX 64

static int depth_check(struct shardmap__yaml *y, FILE *f)
{
    yaml_parser_t parser;
    yaml_event_t ev;
    int depth = 0, rc = 0, more = 1;

    if (!yaml_parser_initialize(&parser))
        return -ENOMEM;
    yaml_parser_set_input_file(&parser, f);
    while (more && yaml_parser_parse(&parser, &ev)) {
        const yaml_char_t *tag =
            ev.type == YAML_SCALAR_EVENT           ? ev.data.scalar.tag
            : ev.type == YAML_SEQUENCE_START_EVENT ? ev.data.sequence_start.tag
            : ev.type == YAML_MAPPING_START_EVENT  ? ev.data.mapping_start.tag
                                                   : NULL;

        /*
         * The loaded document cannot tell "!!str 5" from a plain 5 (both
         * are tagged str): a tag would be ignored, so none is taken.
         */
        if (tag != NULL) {
            shardmap__yaml_error(y, (int)ev.start_mark.line + 1, NULL, NULL,
                                 "the tag %.40s is not read: write the value plainly "
                                 "(a quoted number is a string)",
                                 (const char *)tag);
            rc = BC_ECONFIG;
        }
        if (ev.type == YAML_SEQUENCE_START_EVENT ||
            ev.type == YAML_MAPPING_START_EVENT) {
            if (++depth > YAML_DEPTH_MAX) {
                shardmap__yaml_error(y, (int)ev.start_mark.line + 1, NULL, NULL,
                                     "nested deeper than %d levels", YAML_DEPTH_MAX);
                rc = BC_ECONFIG;
                more = 0;
            }
        } else if (ev.type == YAML_SEQUENCE_END_EVENT ||
                   ev.type == YAML_MAPPING_END_EVENT) {
            depth--;
        } else if (ev.type == YAML_STREAM_END_EVENT) {
            more = 0;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    rewind(f);
    return rc;
}

int shardmap__yaml_open(struct shardmap__yaml *y, const char *path)
{
    yaml_parser_t parser;
    yaml_document_t extra;
    yaml_node_t *root;
    struct stat st;
    FILE *f = NULL;
    int rc = 0, fd;

    memset(y, 0, sizeof(*y));
    y->path = path;
    /*
     * Without O_NONBLOCK, opening a FIFO waits for a writer, for good if none
     * comes; cleared after the open, a FIFO without one reads as empty.
     */
    fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0 || fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0 ||
        (f = fdopen(fd, "rb")) == NULL) {
        rc = -errno;
        shardmap__yaml_error(y, 0, NULL, NULL, "cannot open: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return rc;
    }
    if (fstat(fileno(f), &st) < 0)
        st.st_mode = 0;
    if (S_ISDIR(st.st_mode)) {
        shardmap__yaml_error(y, 0, NULL, NULL, "cannot open: %s", strerror(EISDIR));
        fclose(f);
        return -EISDIR;
    }
    if (S_ISREG(st.st_mode) && (rc = depth_check(y, f)) < 0) {
        fclose(f);
        return rc;
    }
    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        return -ENOMEM;
    }
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &y->doc)) {
        goto error;
    }
    y->loaded = 1;
    /* A second document would be silently ignored: refuse it instead. */
    if (yaml_document_get_root_node(&y->doc) != NULL) {
        if (!yaml_parser_load(&parser, &extra)) {
            goto error;
        }
        root = yaml_document_get_root_node(&extra);
        if (root != NULL) {
            shardmap__yaml_error(y, shardmap__yaml_line(root), NULL, NULL,
                                 "only one YAML document is allowed");
            rc = BC_ECONFIG;
        }
        yaml_document_delete(&extra);
    }
    goto out;

error:
    if (parser.error == YAML_MEMORY_ERROR) {
        rc = -ENOMEM;
    } else if (parser.error == YAML_READER_ERROR && ferror(f)) {
        rc = -EIO;
        shardmap__yaml_error(y, 0, NULL, NULL, "read error: %s", strerror(EIO));
    } else {
        rc = BC_ECONFIG;
        syntax_error(y, &parser, f);
    }
out:
    yaml_parser_delete(&parser);
    fclose(f);
    return rc;
}

int shardmap__yaml_close(struct shardmap__yaml *y, int rc, char **err)
{
    if (y->loaded) {
        yaml_document_delete(&y->doc);
        y->loaded = 0;
    }
    if (y->nomem) {
        rc = -ENOMEM;
    } else if (y->nerr > 0 && rc >= 0) {
        rc = BC_ECONFIG;
    }
    if (rc < 0 && err != NULL && !y->nomem) {
        *err = y->err;
        y->err = NULL;
    } else if (err != NULL) {
        *err = NULL;
    }
    free(y->err);
    y->err = NULL;
    return rc < 0 ? rc : 0;
}

yaml_node_t *shardmap__yaml_opt(yaml_node_t *node)
{
    return node != NULL && is_null(node) ? NULL : node;
}

yaml_node_t *shardmap__yaml_root(struct shardmap__yaml *y)
{
    return y->loaded ? yaml_document_get_root_node(&y->doc) : NULL;
}

int shardmap__yaml_line(const yaml_node_t *node)
{
    return (int)node->start_mark.line + 1;
}

size_t shardmap__yaml_len(const yaml_node_t *seq)
{
    return (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
}

yaml_node_t *shardmap__yaml_item(struct shardmap__yaml *y, yaml_node_t *seq, size_t n)
{
    return yaml_document_get_node(&y->doc, seq->data.sequence.items.start[n]);
}

int shardmap__yaml_fields(struct shardmap__yaml *y, yaml_node_t *node, int line,
                          const char *ctx, struct shardmap__key *keys, size_t nkey)
{
    yaml_node_pair_t *pair;
    char buf[48];
    size_t i;

    for (i = 0; i < nkey; i++) {
        keys[i].value = NULL;
        keys[i].line = 0;
    }
    if (node->type != YAML_MAPPING_NODE) {
        shardmap__yaml_error(y, shardmap__yaml_line(node), ctx, NULL,
                             "expected a mapping, got %s",
                             show(node, buf, sizeof(buf)));
        return -1;
    }
    for (pair = node->data.mapping.pairs.start; pair < node->data.mapping.pairs.top;
         pair++) {
        yaml_node_t *k = yaml_document_get_node(&y->doc, pair->key);
        yaml_node_t *v = yaml_document_get_node(&y->doc, pair->value);
        int kline = shardmap__yaml_line(k);

        if (k->type != YAML_SCALAR_NODE) {
            shardmap__yaml_error(y, kline, ctx, NULL, "keys must be strings, not %s",
                                 show(k, buf, sizeof(buf)));
            continue;
        }
        for (i = 0; i < nkey; i++) {
            if (strlen(keys[i].name) == k->data.scalar.length &&
                memcmp(keys[i].name, k->data.scalar.value, k->data.scalar.length) ==
                    0) {
                break;
            }
        }
        if (i == nkey) {
            shardmap__yaml_error(y, kline, ctx, NULL, "unknown key %s",
                                 show(k, buf, sizeof(buf)));
        } else if (keys[i].value != NULL) {
            shardmap__yaml_error(y, kline, ctx, NULL,
                                 "duplicate key '%s' (first on line %d)", keys[i].name,
                                 keys[i].line);
        } else {
            keys[i].value = v;
            keys[i].line = kline;
        }
    }
    for (i = 0; i < nkey; i++) {
        if (keys[i].required && keys[i].value == NULL) {
            shardmap__yaml_error(y, line, ctx, NULL, "missing required key '%s'",
                                 keys[i].name);
        }
    }
    return 0;
}

int shardmap__yaml_seq(struct shardmap__yaml *y, yaml_node_t *node, int line,
                       const char *ctx, const char *key)
{
    char buf[48];

    if (node->type == YAML_SEQUENCE_NODE) {
        return 0;
    }
    if (node->type == YAML_SCALAR_NODE) {
        line = shardmap__yaml_line(node);
    }
    shardmap__yaml_error(y, line, ctx, key, "expected a list, got %s",
                         show(node, buf, sizeof(buf)));
    return -1;
}

/*
 * Parses a plain decimal scalar: 0 with *out set, -1 when it is no integer,
 * -2 when it is negative or does not fit 64 bits.
 */
static int parse_uint(const yaml_node_t *node, uint64_t *out)
{
    const char *s = (const char *)node->data.scalar.value;
    int neg = s[0] == '-', big = 0;
    uint64_t v = 0;
    size_t i = (size_t)neg;

    /* Leading zeros would be octal to YAML 1.1 readers: refuse them. */
    if (!isdigit((unsigned char)s[i]) || (s[i] == '0' && s[i + 1] != '\0')) {
        return -1;
    }
    for (; s[i] != '\0'; i++) {
        if (!isdigit((unsigned char)s[i])) {
            return -1;
        }
        if (v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10) {
            big = 1;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (i != node->data.scalar.length) {
        return -1; /* a NUL inside */
    }
    if (big || (neg && v != 0)) {
        return -2;
    }
    *out = v;
    return 0;
}

int shardmap__yaml_uint(struct shardmap__yaml *y, yaml_node_t *node, const char *ctx,
                        const char *key, uint64_t min, uint64_t max, uint64_t *out)
{
    int line = shardmap__yaml_line(node), rc;
    const char *s;
    uint64_t v = 0;
    char buf[48];

    if (node->type != YAML_SCALAR_NODE) {
        shardmap__yaml_error(y, line, ctx, key, "expected a decimal integer, got %s",
                             show(node, buf, sizeof(buf)));
        return -1;
    }
    if (node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
        shardmap__yaml_error(y, line, ctx, key,
                             "expected a decimal integer, got the string %s",
                             show(node, buf, sizeof(buf)));
        return -1;
    }
    rc = parse_uint(node, &v);
    if (rc == -1) {
        shardmap__yaml_error(y, line, ctx, key, "expected a decimal integer, got %s",
                             show(node, buf, sizeof(buf)));
        return -1;
    }
    if (rc == 0 && v >= min && v <= max) {
        *out = v;
        return 0;
    }
    s = (const char *)node->data.scalar.value;
    if (max == UINT64_MAX) {
        shardmap__yaml_error(y, line, ctx, key,
                             "%.40s is out of range, must be >= %" PRIu64, s, min);
    } else {
        shardmap__yaml_error(y, line, ctx, key,
                             "%.40s is out of range %" PRIu64 "..%" PRIu64, s, min,
                             max);
    }
    return -1;
}

int shardmap__yaml_nshard(struct shardmap__yaml *y, yaml_node_t *node, const char *ctx,
                          const char *key, uint32_t *out)
{
    uint64_t v = 0;
    int rc;

    if (node->type != YAML_SCALAR_NODE ||
        node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE ||
        (rc = parse_uint(node, &v)) == -1) {
        /* Not an integer at all: the generic message says so. */
        return shardmap__yaml_uint(y, node, ctx, key, 0, UINT64_MAX, &v);
    }
    if (rc != 0 || v > UINT32_MAX || !shardmap_valid_nshard((uint32_t)v)) {
        shardmap__yaml_error(y, shardmap__yaml_line(node), ctx, key,
                             "%.40s is not a power of two in %u..%u",
                             (const char *)node->data.scalar.value, SHARDMAP_MIN_SHARDS,
                             SHARDMAP_MAX_SHARDS);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

const char *shardmap__yaml_text(struct shardmap__yaml *y, yaml_node_t *node,
                                const char *ctx, const char *key)
{
    int line = shardmap__yaml_line(node);

    if (node->type != YAML_SCALAR_NODE) {
        char buf[48];

        shardmap__yaml_error(y, line, ctx, key, "expected a string, got %s",
                             show(node, buf, sizeof(buf)));
        return NULL;
    }
    if (is_null(node)) {
        return "";
    }
    if (strlen((const char *)node->data.scalar.value) != node->data.scalar.length) {
        shardmap__yaml_error(y, line, ctx, key, "contains a NUL character");
        return NULL;
    }
    return (const char *)node->data.scalar.value;
}

int shardmap__yaml_str(struct shardmap__yaml *y, yaml_node_t *node, const char *ctx,
                       const char *key, char *buf, size_t size, int allow_empty)
{
    const char *s = shardmap__yaml_text(y, node, ctx, key);
    size_t len;

    if (s == NULL) {
        return -1;
    }
    len = strlen(s);
    if (len == 0 && !allow_empty) {
        shardmap__yaml_error(y, shardmap__yaml_line(node), ctx, key,
                             "must not be empty");
        return -1;
    }
    if (len >= size) {
        shardmap__yaml_error(y, shardmap__yaml_line(node), ctx, key,
                             "is %zu bytes long, at most %zu allowed", len, size - 1);
        return -1;
    }
    memcpy(buf, s, len + 1);
    return 0;
}

int shardmap__valid_name(const char *s)
{
    size_t n;

    for (n = 0; s[n] != '\0'; n++) {
        if (!isalnum((unsigned char)s[n]) && s[n] != '_' && s[n] != '-') {
            return 0;
        }
    }
    return n >= 1 && n < SHARDMAP_NAME_MAX;
}

int shardmap__yaml_name(struct shardmap__yaml *y, yaml_node_t *node, const char *ctx,
                        const char *key, char *buf)
{
    const char *s = shardmap__yaml_text(y, node, ctx, key);
    char shown[48];

    if (s == NULL) {
        return -1;
    }
    if (!shardmap__valid_name(s)) {
        shardmap__yaml_error(y, shardmap__yaml_line(node), ctx, key,
                             "%s is not a valid name: 1..%d characters of "
                             "A-Z a-z 0-9 _ -",
                             show(node, shown, sizeof(shown)), SHARDMAP_NAME_MAX - 1);
        return -1;
    }
    memcpy(buf, s, strlen(s) + 1);
    return 0;
}
