/*
 * shardmap_yaml_out.c: atomic writes of shard maps and plans through
 * libyaml's emitter (a temporary file, fsync, rename, the directory's
 * fsync). Internal: see shardmap_yaml_int.h.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shardmap.h"
#include "shardmap_yaml_int.h"

/* ---- writing ------------------------------------------------------------- */

static void out_emit(struct shardmap__out *o, yaml_event_t *ev)
{
    /* yaml_emitter_emit() owns the event from here, even when it fails. */
    errno = 0;
    if (yaml_emitter_emit(&o->em, ev)) {
        return;
    }
    if (o->em.error == YAML_MEMORY_ERROR) {
        o->rc = -ENOMEM;
    } else if (o->em.error == YAML_WRITER_ERROR) {
        o->rc = errno ? -errno : -EIO;
    } else {
        o->rc = -EINVAL;
    }
}

void shardmap__out_open(struct shardmap__out *o, const char *path, int mode)
{
    yaml_event_t ev;
    size_t len = strlen(path);
    int fd;

    memset(o, 0, sizeof(*o));
    o->tmp = malloc(len + sizeof(".tmp"));
    if (o->tmp == NULL) {
        o->rc = -ENOMEM;
        return;
    }
    memcpy(o->tmp, path, len);
    memcpy(o->tmp + len, ".tmp", sizeof(".tmp"));
    fd = open(o->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        o->rc = -errno;
        return;
    }
    o->f = fdopen(fd, "w");
    if (o->f == NULL) {
        o->rc = -errno;
        close(fd);
        unlink(o->tmp);
        return;
    }
    if (!yaml_emitter_initialize(&o->em)) {
        o->rc = -ENOMEM;
        return;
    }
    o->inited = 1;
    yaml_emitter_set_output_file(&o->em, o->f);
    yaml_emitter_set_unicode(&o->em, 1);
    yaml_emitter_set_indent(&o->em, 2);
    yaml_emitter_set_width(&o->em, -1); /* never fold long strings */
    yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING);
    out_emit(o, &ev);
    if (o->rc == 0) {
        yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1);
        out_emit(o, &ev);
    }
}

/* fsync of the directory makes the rename itself durable. */
static void sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    int fd;

    if (slash == NULL) {
        dir = strdup(".");
    } else {
        dir = strndup(path, slash == path ? 1 : (size_t)(slash - path));
    }
    if (dir == NULL) {
        return;
    }
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        /*
         * Best effort: the new file is already in place, and a failure here
         * only weakens durability across a crash; reporting it would make the
         * caller believe the old file is still there.
         */
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

int shardmap__out_close(struct shardmap__out *o, const char *path)
{
    yaml_event_t ev;
    int rc;

    if (o->rc == 0) {
        yaml_document_end_event_initialize(&ev, 1);
        out_emit(o, &ev);
    }
    if (o->rc == 0) {
        yaml_stream_end_event_initialize(&ev);
        out_emit(o, &ev);
    }
    if (o->rc == 0 && !yaml_emitter_flush(&o->em)) {
        o->rc = errno ? -errno : -EIO;
    }
    if (o->inited) {
        yaml_emitter_delete(&o->em);
    }
    if (o->f != NULL) {
        if (o->rc == 0 && (fflush(o->f) != 0 || fsync(fileno(o->f)) != 0)) {
            o->rc = -errno;
        }
        if (fclose(o->f) != 0 && o->rc == 0) {
            o->rc = -errno;
        }
        if (o->rc == 0 && rename(o->tmp, path) != 0) {
            o->rc = -errno;
        }
        if (o->rc != 0) {
            unlink(o->tmp);
        } else {
            sync_dir(path);
        }
    }
    rc = o->rc;
    free(o->tmp);
    memset(o, 0, sizeof(*o));
    return rc;
}

static void out_scalar(struct shardmap__out *o, const char *s,
                       yaml_scalar_style_t style)
{
    yaml_event_t ev;

    if (o->rc != 0) {
        return;
    }
    /* Fails on invalid UTF-8, which no YAML file can hold. */
    if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)strlen(s),
                                      1, 1, style)) {
        o->rc = -EINVAL;
        return;
    }
    out_emit(o, &ev);
}

void shardmap__out_map(struct shardmap__out *o, int flow)
{
    yaml_event_t ev;

    if (o->rc == 0) {
        yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
                                            flow ? YAML_FLOW_MAPPING_STYLE
                                                 : YAML_BLOCK_MAPPING_STYLE);
        out_emit(o, &ev);
    }
}

void shardmap__out_seq(struct shardmap__out *o, int flow)
{
    yaml_event_t ev;

    if (o->rc == 0) {
        yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
                                             flow ? YAML_FLOW_SEQUENCE_STYLE
                                                  : YAML_BLOCK_SEQUENCE_STYLE);
        out_emit(o, &ev);
    }
}

void shardmap__out_end_map(struct shardmap__out *o)
{
    yaml_event_t ev;

    if (o->rc == 0) {
        yaml_mapping_end_event_initialize(&ev);
        out_emit(o, &ev);
    }
}

void shardmap__out_end_seq(struct shardmap__out *o)
{
    yaml_event_t ev;

    if (o->rc == 0) {
        yaml_sequence_end_event_initialize(&ev);
        out_emit(o, &ev);
    }
}

/* True when s, written plain, reads back as s for any YAML 1.1 or 1.2 reader. */
static int plain_safe(const char *s)
{
    static const char *const words[] = {"y",   "n", "yes",  "no",    "on",
                                        "off", "~", "true", "false", "null"};
    int letter = 0;
    size_t i;

    if (!isalnum((unsigned char)s[0]) && s[0] != '_') {
        return 0;
    }
    for (i = 0; s[i] != '\0'; i++) {
        if (!isalnum((unsigned char)s[i]) && strchr("_.-", s[i]) == NULL) {
            return 0;
        }
        /* e/E can be an exponent and x/o/b a radix: they do not make a word. */
        letter |= isalpha((unsigned char)s[i]) && strchr("eExXoObB", s[i]) == NULL;
    }
    for (i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        if (strcasecmp(s, words[i]) == 0) {
            return 0;
        }
    }
    /* Without a letter it may read as a number, unless it has several dots. */
    return letter || (strchr(s, '.') != NULL && strchr(s, '.') != strrchr(s, '.'));
}

void shardmap__out_str(struct shardmap__out *o, const char *s)
{
    out_scalar(o, s,
               plain_safe(s) ? YAML_PLAIN_SCALAR_STYLE
                             : YAML_DOUBLE_QUOTED_SCALAR_STYLE);
}

void shardmap__out_quoted(struct shardmap__out *o, const char *s)
{
    out_scalar(o, s, YAML_DOUBLE_QUOTED_SCALAR_STYLE);
}

void shardmap__out_uint(struct shardmap__out *o, uint64_t v)
{
    char buf[24];

    snprintf(buf, sizeof(buf), "%" PRIu64, v);
    out_scalar(o, buf, YAML_PLAIN_SCALAR_STYLE);
}
