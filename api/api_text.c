/*
 * api_text.c: the rules of the text clients name things with (display, team
 * and company names, match teams and stages; docs/api.md, "Text"): lengths
 * in characters, no control or bidirectional control character, no white
 * space or invisible character at either end, e-mails with nothing unseen.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "api/api_int.h"

/* What utf8_at() reads where the bytes are no UTF-8: no character. */
#define NOT_UTF8 0x110000u

/*
 * The code point at s[i] of a string of len bytes, and its length. JSON
 * strings are valid UTF-8 (jansson checks them); other text (a command
 * line's) may not be: a byte that starts no sequence, or a sequence cut
 * short or broken, is one byte of NOT_UTF8, never read past.
 */
static uint32_t utf8_at(const unsigned char *s, size_t len, size_t i, size_t *n)
{
    size_t need = s[i] < 0x80             ? 1
                  : (s[i] & 0xe0) == 0xc0 ? 2
                  : (s[i] & 0xf0) == 0xe0 ? 3
                  : (s[i] & 0xf8) == 0xf0 ? 4
                                          : 0;

    for (size_t k = 1; need > 0 && k < need; k++)
        if (i + k >= len || (s[i + k] & 0xc0) != 0x80)
            need = 0;
    if (need == 0) {
        *n = 1;
        return NOT_UTF8;
    }
    if (s[i] < 0x80) {
        *n = 1;
        return s[i];
    }
    if ((s[i] & 0xe0) == 0xc0) {
        *n = 2;
        return (uint32_t)(s[i] & 0x1f) << 6 | (s[i + 1] & 0x3f);
    }
    if ((s[i] & 0xf0) == 0xe0) {
        *n = 3;
        return (uint32_t)(s[i] & 0x0f) << 12 | (uint32_t)(s[i + 1] & 0x3f) << 6 |
               (s[i + 2] & 0x3f);
    }
    *n = 4;
    return (uint32_t)(s[i] & 0x07) << 18 | (uint32_t)(s[i + 1] & 0x3f) << 12 |
           (uint32_t)(s[i + 2] & 0x3f) << 6 | (s[i + 3] & 0x3f);
}

/*
 * Unicode's Default_Ignorable_Code_Point (15.1; the bidirectional controls
 * are refused apart), and the blank-looking U+2800: nothing to see.
 * Variation selectors and tags (is_mark) end emoji and flags.
 */
static int ignorable(uint32_t c, int *is_mark)
{
    *is_mark = (c >= 0xfe00 && c <= 0xfe0f) || (c >= 0xe0020 && c <= 0xe007f) ||
               (c >= 0xe0100 && c <= 0xe01ef);
    return *is_mark || c == 0xad || c == 0x34f || c == 0x61c || c == 0x115f ||
           c == 0x1160 || c == 0x17b4 || c == 0x17b5 || (c >= 0x180b && c <= 0x180f) ||
           (c >= 0x200b && c <= 0x200f) || (c >= 0x2060 && c <= 0x206f) ||
           c == 0x2800 || c == 0x3164 || c == 0xfeff || c == 0xffa0 ||
           (c >= 0xfff0 && c <= 0xfff8) || (c >= 0x1bca0 && c <= 0x1bca3) ||
           (c >= 0x1d173 && c <= 0x1d17a) || (c >= 0xe0000 && c <= 0xe0fff);
}

/*
 * Unicode's White_Space, and the invisible characters a name must not end
 * in: every ignorable one but the marks that end an emoji or a flag.
 */
static int blank(uint32_t c)
{
    int mark;

    if ((c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 ||
        c == 0x1680 || (c >= 0x2000 && c <= 0x200f) || c == 0x2028 || c == 0x2029 ||
        c == 0x202f || c == 0x205f || c == 0x3000)
        return 1;
    return ignorable(c, &mark) && !mark;
}

/* The bidirectional embeddings, overrides and isolates: they reorder what follows. */
static int bidi_control(uint32_t c)
{
    return (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

static int control(uint32_t c)
{
    return c < 0x20 || (c >= 0x7f && c <= 0x9f);
}

size_t api_text_chars(const char *s, size_t len)
{
    size_t chars = 0;

    for (size_t i = 0; i < len; i++)
        chars += ((unsigned char)s[i] & 0xc0) != 0x80;
    return chars;
}

/*
 * The marks that end an emoji or a flag count only after what they end: a
 * visible character or marks after one. So a name neither starts with them
 * nor is made only of them, and none after white space ends it.
 */
size_t api_text_trim(const char *s, size_t *start)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, end = 0, n, len = strlen(s);
    int inner = 0, attached = 0, mark;

    *start = len;
    while (i < len) {
        uint32_t c = utf8_at(u, len, i, &n);

        if (ignorable(c, &mark) && mark) {
            if (attached)
                end = i + n;
        } else if (!blank(c)) {
            if (!inner)
                *start = i;
            inner = attached = 1;
            end = i + n;
        } else {
            attached = 0;
        }
        i += n;
    }
    return inner ? end - *start : 0;
}

const char *api_text_problem(const char *s, size_t max)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t start, n, len = strlen(s);

    if (len == 0)
        return "is empty";
    for (size_t i = 0; i < len; i += n) {
        uint32_t c = utf8_at(u, len, i, &n);

        if (c == NOT_UTF8)
            return "holds bytes that are no UTF-8";
        if (control(c))
            return "holds a control character";
        if (bidi_control(c))
            return "holds a bidirectional control character (U+202A-U+202E, "
                   "U+2066-U+2069)";
    }
    if (api_text_trim(s, &start) != len)
        return "starts or ends with white space or an invisible character";
    if (api_text_chars(s, len) > max)
        return "is too long";
    return NULL;
}

int api_text_unseen(const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n, len = strlen(s);
    int mark;

    for (size_t i = 0; i < len; i += n) {
        uint32_t c = utf8_at(u, len, i, &n);

        if (c == NOT_UTF8 || control(c) || blank(c) || ignorable(c, &mark) ||
            bidi_control(c))
            return 1;
    }
    return 0;
}

int api_valid_text(const char *s, size_t max)
{
    return api_text_problem(s, max) == NULL;
}

void api_text_refuse(struct api_req *req, const char *code, const char *field,
                     const char *problem, size_t max)
{
    api_error(req, 422, code,
              "%s %s: it must have 1 to %zu characters, no control character, and "
              "no white space or invisible character at either end",
              field, problem, max);
}

int api_text_check(struct api_req *req, const char *code, const char *field,
                   const char *s, size_t max)
{
    const char *problem = api_text_problem(s, max);

    if (problem == NULL)
        return 0;
    api_text_refuse(req, code, field, problem, max);
    return -EINVAL;
}
