/*
 * api_json.c: JSON responses, errors, and strict checking of request bodies
 * and parameters. Every client mistake becomes a 4xx that names what was
 * wrong; a 500 is only ever the server's own fault.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api_int.h"

void api_reply_raw(struct api_req *req, int status, const char *type, const void *data,
                   size_t len)
{
    free(req->resp);
    req->resp = NULL;
    req->resp_len = 0;
    if (len > 0) {
        req->resp = malloc(len);
        if (req->resp == NULL) {
            req->status = 503;
            return;
        }
        memcpy(req->resp, data, len);
        req->resp_len = len;
    }
    req->status = status;
    req->resp_type = type;
}

void api_reply_json(struct api_req *req, int status, json_t *body)
{
    char *text;

    if (body == NULL) {
        static const char oom[] =
            "{\"error\":{\"code\":\"unavailable\",\"message\":\"out of memory\"}}";
        api_reply_raw(req, 503, "application/json", oom, sizeof(oom) - 1);
        return;
    }
    /* Odds and averages are two-decimal numbers: 10 digits print them exactly. */
    text = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(10));
    json_decref(body);
    free(req->resp);
    req->resp = text;
    req->resp_len = text ? strlen(text) : 0;
    req->status = text ? status : 503;
    req->resp_type = "application/json";
}

void api_add_header(struct api_req *req, const char *name, const char *fmt, ...)
{
    va_list ap;

    if (req->nheaders == (int)(sizeof(req->headers) / sizeof(req->headers[0])))
        return;
    req->headers[req->nheaders].name = name;
    va_start(ap, fmt);
    vsnprintf(req->headers[req->nheaders].value, sizeof(req->headers[0].value), fmt,
              ap);
    va_end(ap);
    req->nheaders++;
}

/*
 * Replaces with '?' every byte of s that is not part of a well-formed UTF-8
 * sequence (RFC 3629: no overlong forms, no surrogates, nothing above
 * U+10FFFF), in place. A message may quote what a client sent (the JSON
 * parser's error quotes the bytes near it) or be cut in the middle of a
 * character, and jansson refuses to make a string of anything else.
 */
void api_utf8_clean(char *s)
{
    unsigned char *p = (unsigned char *)s;

    while (*p != '\0') {
        unsigned c = *p;
        size_t n;
        int ok;

        if (c < 0x80) {
            p++;
            continue;
        }
        n = c >= 0xc2 && c <= 0xdf   ? 1
            : c >= 0xe0 && c <= 0xef ? 2
            : c >= 0xf0 && c <= 0xf4 ? 3
                                     : 0;
        ok = n > 0;
        /* Stops at the first byte that is not a continuation, the NUL included. */
        for (size_t i = 1; ok && i <= n; i++)
            ok = (p[i] & 0xc0) == 0x80;
        if (ok && ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] >= 0xa0) ||
                   (c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] >= 0x90)))
            ok = 0;
        if (!ok)
            *p++ = '?';
        else
            p += n + 1;
    }
}

void api_error(struct api_req *req, int status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    api_utf8_clean(msg);
    api_reply_json(req, status,
                   json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg));
}

/* Why a request got 503, at most one line a second (a host down fails many). */
static void unavailable_log(struct api_req *req, int rc)
{
    static _Atomic int64_t last_s;
    int64_t now = (int64_t)time(NULL), seen = atomic_load(&last_s);

    if (seen != now && atomic_compare_exchange_strong(&last_s, &seen, now))
        api_log("unavailable: %s %s: %s: %s", req->method, req->url, bc_strerror(rc),
                router_last_error());
}

void api_db_error(struct api_req *req, int rc)
{
    switch (rc) {
    case BC_ESHARD:
        /* An id whose shard bits name no shard of this cluster: it cannot exist. */
        api_error(req, 404, "not_found", "no such resource");
        break;
    case BC_EDOWN:
    case BC_ETIMEOUT:
    case BC_EPOOL:
    case BC_EMOVED:
    case BC_EREADONLY: /* a primary being switched, on the global host */
    case BC_ENOMAP:    /* started while the global host was down: none read yet */
    case BC_ENOTFOUND:
    case BC_ELOCKWAIT: /* a lock wait or deadlock that retries did not get past */
    case -ENOMEM:
        unavailable_log(req, rc);
        api_metrics_unavailable(api_server_metrics(req->srv), rc);
        api_add_header(req, "Retry-After", "1");
        api_error(req, 503, "unavailable",
                  "a database host is unavailable; retry shortly");
        break;
    default:
        api_log("error: %s %s: %s: %s", req->method, req->url, bc_strerror(rc),
                router_last_error());
        api_error(req, 500, "internal", "internal error");
    }
}

static const char *type_name(enum api_type t)
{
    switch (t) {
    case API_T_STR:
        return "a string";
    case API_T_INT:
        return "an integer (from -2^63 to 2^63 - 1)";
    case API_T_BOOL:
        return "a boolean";
    case API_T_NUM:
        return "a number";
    case API_T_OBJ:
        return "an object";
    case API_T_ID:
        return "an id (a string of digits, from 1 to 2^63 - 1)";
    default:
        return "a value";
    }
}

static int type_ok(json_t *v, enum api_type t)
{
    uint64_t id;

    switch (t) {
    case API_T_STR:
        return json_is_string(v);
    case API_T_INT:
        return json_is_integer(v);
    case API_T_BOOL:
        return json_is_boolean(v);
    case API_T_NUM:
        return json_is_number(v);
    case API_T_OBJ:
        return json_is_object(v);
    case API_T_ID:
        return json_is_string(v) && api_parse_id(json_string_value(v), &id) == 0;
    default:
        return 1;
    }
}

int api_body_parse(struct api_req *req)
{
    json_error_t jerr;
    json_t *obj;

    if (req->json != NULL)
        return 0; /* parsed on the event loop, which then left it to a worker */
    if (req->body == NULL || req->body_len == 0) {
        api_error(req, 400, "malformed_json", "a JSON object body is required");
        return -EINVAL;
    }
    obj = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (obj == NULL && json_error_code(&jerr) == json_error_numeric_overflow)
        /*
         * Well-formed JSON with an integer beyond 64 bits, positive or
         * negative (jansson words the two apart): read numbers as reals, so
         * the field checks answer with the field's own 4xx. A real beyond a
         * double overflows again, and is malformed as before.
         */
        obj = json_loadb(req->body, req->body_len,
                         JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &jerr);
    if (obj == NULL) {
        /* jansson names its own flag there; a client needs the rule. */
        const char *why = strstr(jerr.text, "JSON_ALLOW_NUL") != NULL
                              ? "\\u0000 (a NUL character) is not allowed in a string"
                              : jerr.text;
        api_error(req, 400, "malformed_json", "malformed JSON at line %d column %d: %s",
                  jerr.line, jerr.column, why);
        return -EINVAL;
    }
    if (!json_is_object(obj)) {
        json_decref(obj);
        api_error(req, 400, "malformed_json", "the body must be a JSON object");
        return -EINVAL;
    }
    req->json = obj;
    return 0;
}

int api_body_check(struct api_req *req, const struct api_field *spec)
{
    const char *key;
    json_t *v;

    json_object_foreach(req->json, key, v)
    {
        const struct api_field *f = spec;
        while (f->name != NULL && strcmp(f->name, key) != 0)
            f++;
        if (f->name == NULL) {
            api_error(req, 400, "unknown_field", "unknown field '%.64s'", key);
            return -EINVAL;
        }
        if (!(json_is_null(v) && f->nullable) && !type_ok(v, f->type)) {
            api_error(req, 400, "invalid_field", "field '%s' must be %s%s", f->name,
                      type_name(f->type), f->nullable ? " or null" : "");
            return -EINVAL;
        }
    }
    for (const struct api_field *f = spec; f->name != NULL; f++)
        if (f->required && json_object_get(req->json, f->name) == NULL) {
            api_error(req, 400, "invalid_field", "field '%s' is required (%s)", f->name,
                      type_name(f->type));
            return -EINVAL;
        }
    return 0;
}

/* Whether the bytes start as an image of this type does. */
static int image_magic_ok(const char *type, const unsigned char *b, size_t n)
{
    if (strcmp(type, "image/png") == 0)
        return n >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0;
    if (strcmp(type, "image/jpeg") == 0)
        return n >= 3 && memcmp(b, "\xff\xd8\xff", 3) == 0;
    return n >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0;
}

/*
 * Whether Content-Type ct is the media type (case-insensitive), alone or
 * with parameters: "image/png; q=1", not "image/pngx" or "image/png, text/html".
 */
static int media_type_is(const char *ct, const char *type)
{
    size_t n = strlen(type);

    if (ct == NULL || strncasecmp(ct, type, n) != 0)
        return 0;
    ct += n + strspn(ct + n, " \t");
    return *ct == '\0' || *ct == ';';
}

int api_body_image(struct api_req *req)
{
    static const char *const types[] = {"image/png", "image/jpeg", "image/webp"};
    const char *ct =
        MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Content-Type");
    const char *type = NULL;

    /* (A body over the limit was answered 413 before the access check.) */
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]) && type == NULL; i++)
        if (media_type_is(ct, types[i]))
            type = types[i];
    if (type == NULL) {
        api_error(req, 415, "unsupported_media_type",
                  "send image/png, image/jpeg or image/webp");
        return -EINVAL;
    }
    if (!image_magic_ok(type, (const unsigned char *)req->body, req->body_len)) {
        api_error(req, 422, "invalid_image", "the body is not a %s image", type + 6);
        return -EINVAL;
    }
    req->image_type = type;
    return 0;
}

const char *api_str(json_t *obj, const char *name, const char *dflt)
{
    json_t *v = json_object_get(obj, name);

    return json_is_string(v) ? json_string_value(v) : dflt;
}

int64_t api_int(json_t *obj, const char *name, int64_t dflt)
{
    json_t *v = json_object_get(obj, name);

    return json_is_integer(v) ? (int64_t)json_integer_value(v) : dflt;
}

uint64_t api_id(json_t *obj, const char *name, uint64_t dflt)
{
    json_t *v = json_object_get(obj, name);
    uint64_t id;

    if (json_is_string(v) && api_parse_id(json_string_value(v), &id) == 0)
        return id;
    return dflt;
}

int api_has(json_t *obj, const char *name)
{
    return json_object_get(obj, name) != NULL;
}

int api_odds_parse(json_t *v, int64_t *hundredths)
{
    double x, scaled;

    if (json_is_integer(v))
        x = (double)json_integer_value(v);
    else if (json_is_real(v))
        x = json_real_value(v);
    else
        return -EINVAL;
    if (!isfinite(x) || x < 1.005 || x > 1000.005)
        return -EINVAL;
    scaled = x * 100.0;
    /*
     * At most two decimals: x is the double nearest to a number of
     * hundredths (as "2.35" parses to; a division of two integers rounds to
     * the nearest too). 2.3000000000000003 is the next double, refused; text
     * that parses to the same double as 2.5 cannot be told from it.
     */
    if (fabs(scaled - round(scaled)) > 1e-6 || round(scaled) / 100.0 != x)
        return -EINVAL;
    if (round(scaled) < 101)
        return -EINVAL;
    *hundredths = (int64_t)round(scaled);
    return 0;
}

json_t *api_odds_json(int64_t hundredths)
{
    return json_real((double)hundredths / 100.0);
}

json_t *api_id_json(uint64_t id)
{
    char buf[24];

    snprintf(buf, sizeof(buf), "%" PRIu64, id);
    return json_string(buf);
}

json_t *api_str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

json_t *api_time_json(const char *db)
{
    char buf[32];

    if (db == NULL || strlen(db) < 19)
        return json_null();
    snprintf(buf, sizeof(buf), "%.10sT%.8sZ", db, db + 11);
    return json_string(buf);
}

int api_time_parse(const char *in, char *out, size_t size, int64_t *epoch_ms)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    struct tm tm = {0};
    int ms = 0, n = 0;
    const char *p;
    char frac[8] = {0};
    time_t t;

    if (in == NULL || strlen(in) < 20)
        return -EINVAL;
    /* sscanf's %d would also take white space and a sign: the shape first. */
    for (int i = 0; i < 19; i++)
        if (shape[i] == 'd' ? !isdigit((unsigned char)in[i]) : in[i] != shape[i])
            return -EINVAL;
    if (sscanf(in, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6 ||
        n != 19)
        return -EINVAL;
    p = in + 19;
    if (*p == '.') {
        int digits = 0;
        p++;
        while (isdigit((unsigned char)*p)) {
            if (digits < 3)
                frac[digits] = *p;
            digits++;
            p++;
        }
        if (digits == 0)
            return -EINVAL;
        while (strlen(frac) < 3)
            frac[strlen(frac)] = '0';
        ms = atoi(frac);
    }
    if (strcmp(p, "Z") != 0 && strcmp(p, "+00:00") != 0)
        return -EINVAL;
    if (tm.tm_year < 2000 || tm.tm_year > 2100 || tm.tm_mon < 1 || tm.tm_mon > 12 ||
        tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 ||
        tm.tm_sec > 59)
        return -EINVAL;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    {
        struct tm check = tm;
        t = timegm(&check);
        if (check.tm_mday != tm.tm_mday) /* 31 February */
            return -EINVAL;
    }
    if (epoch_ms != NULL)
        *epoch_ms = (int64_t)t * 1000 + ms;
    snprintf(out, size, "%04d-%02d-%02d %02d:%02d:%02d.%03d", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
    return 0;
}

/* A query parameter's first value and its decoded size, and how often it came. */
struct query_find {
    const char *name, *value;
    size_t size;
    unsigned n;
};

static enum MHD_Result query_each(void *cls, enum MHD_ValueKind kind, const char *key,
                                  size_t key_size, const char *value, size_t value_size)
{
    struct query_find *f = cls;

    (void)kind;
    if (key != NULL && key_size == strlen(f->name) &&
        memcmp(key, f->name, key_size) == 0 && f->n++ == 0) {
        /* "?limit" without '=' is an empty value, as "?limit=" is. */
        f->value = value != NULL ? value : "";
        f->size = value != NULL ? value_size : 0;
    }
    return MHD_YES;
}

int api_query(struct api_req *req, const char *name, const char **value)
{
    struct query_find f = {.name = name};

    *value = NULL;
    (void)MHD_get_connection_values_n(req->conn, MHD_GET_ARGUMENT_KIND, query_each, &f);
    if (f.n > 1) {
        api_error(req, 400, "invalid_parameter",
                  "%s is given %u times; give it at most once", name, f.n);
        return -EINVAL;
    }
    if (f.n == 1 && strlen(f.value) != f.size) {
        api_error(req, 400, "invalid_parameter", "%s holds a NUL byte (%%00)", name);
        return -EINVAL;
    }
    *value = f.value;
    return 0;
}

int api_parse_limit(const char *s, int *limit)
{
    int v = 0;

    /* Digits only: strtol would also take white space, a sign and "0x". */
    if (s[0] == '\0' || strlen(s) > 3)
        return -EINVAL;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return -EINVAL;
        v = v * 10 + (*s - '0');
    }
    if (v < 1 || v > 500)
        return -EINVAL;
    *limit = v;
    return 0;
}

int api_limit(struct api_req *req, int *limit)
{
    const char *s;

    *limit = 50;
    if (api_query(req, "limit", &s) < 0)
        return -EINVAL;
    if (s == NULL)
        return 0;
    if (api_parse_limit(s, limit) < 0) {
        api_error(req, 400, "invalid_parameter",
                  "limit must be an integer from 1 to 500");
        return -EINVAL;
    }
    return 0;
}

/*
 * Cursors are the last id seen, hex with a version letter: opaque to clients.
 * Only what api_cursor_json() can write is taken back: 'c' and 1..16 lower-case
 * hex digits without a leading 0, an id (1 to 2^63 - 1); strtoull would also
 * take white space, a sign and "0x". A list's position, not bound to the list:
 * another well-formed one is a position too (docs/api.md, "Lists").
 */
int api_parse_cursor(const char *s, uint64_t *cursor)
{
    uint64_t v = 0;
    size_t n;

    if (s[0] != 'c' || s[1] == '0')
        return -EINVAL;
    for (n = 1; s[n] != '\0'; n++) {
        if (n > 16)
            return -EINVAL;
        if (s[n] >= '0' && s[n] <= '9')
            v = v << 4 | (uint64_t)(s[n] - '0');
        else if (s[n] >= 'a' && s[n] <= 'f')
            v = v << 4 | (uint64_t)(s[n] - 'a' + 10);
        else
            return -EINVAL;
    }
    if (v == 0 || v > INT64_MAX)
        return -EINVAL;
    *cursor = v;
    return 0;
}

int api_cursor(struct api_req *req, uint64_t *cursor)
{
    const char *s;

    *cursor = 0;
    if (api_query(req, "cursor", &s) < 0)
        return -EINVAL;
    if (s == NULL || *s == '\0')
        return 0;
    if (api_parse_cursor(s, cursor) < 0) {
        api_error(req, 400, "invalid_parameter",
                  "cursor is not one this server gave out");
        return -EINVAL;
    }
    return 0;
}

json_t *api_cursor_json(uint64_t last_id, int more)
{
    char buf[24];

    if (!more)
        return json_null();
    snprintf(buf, sizeof(buf), "c%" PRIx64, last_id);
    return json_string(buf);
}

int api_parse_id_n(const char *s, size_t n, uint64_t *id)
{
    uint64_t v = 0;

    /* 19 digits cannot overflow 64 bits; INT64_MAX has 19. */
    if (n == 0 || n > 19)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v == 0 || v > (uint64_t)INT64_MAX)
        return -EINVAL;
    *id = v;
    return 0;
}

int api_parse_id(const char *s, uint64_t *id)
{
    return api_parse_id_n(s, strlen(s), id);
}
