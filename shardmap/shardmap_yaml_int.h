/*
 * shardmap_yaml_int.h: the small YAML layer under the config, shard map and
 * plan files. Internal to libshardmap: not installed, not for callers.
 *
 * Reading loads one whole document with libyaml's document API, so each node
 * keeps the line it started on. Checks never stop at the first problem: each
 * one appends "path:line: message" to a list, and shardmap__yaml_close()
 * hands the joined text to the caller. Writing drives libyaml's emitter, which
 * quotes and escapes strings, into "path.tmp" and renames it over path.
 *
 * Helpers that check a value return 0 when it is good and -1 when they have
 * recorded an error; callers go on to the next value either way.
 */
#ifndef SHARDMAP_YAML_INT_H
#define SHARDMAP_YAML_INT_H

#include <stdint.h>
#include <stdio.h>

#include <yaml.h>

/* One document being read and the errors found in it so far. */
struct shardmap__yaml {
    const char *path; /* ref: the caller's path, used in messages */
    yaml_document_t doc;
    int loaded; /* doc must be deleted */
    char *err;  /* owned: errors so far, '\n' between them */
    size_t errlen;
    size_t errcap;
    uint32_t nerr;
    int nomem; /* an error message could not be stored */
};

/*
 * Reads and parses path. Returns 0 with the document loaded, -errno when the
 * file cannot be opened or read, BC_ECONFIG on a YAML syntax error (recorded
 * with its line) or -ENOMEM. Whatever it returns, y must be released with
 * shardmap__yaml_close().
 */
int shardmap__yaml_open(struct shardmap__yaml *y, const char *path);

/*
 * Frees the document. With no error recorded returns 0 and sets *err to NULL;
 * otherwise moves the error text to *err (the caller frees it; err may be
 * NULL) and returns rc when rc is negative, else BC_ECONFIG. -ENOMEM wins
 * when a message could not be stored.
 */
int shardmap__yaml_close(struct shardmap__yaml *y, int rc, char **err);

/* Records "path:line: <ctx>.<key>: <message>"; ctx and key may be NULL. */
void shardmap__yaml_error(struct shardmap__yaml *y, int line, const char *ctx,
                          const char *key, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* node, or NULL when it is NULL or a null scalar: an empty optional section. */
yaml_node_t *shardmap__yaml_opt(yaml_node_t *node);
/* Root node of the document, or NULL when it is empty. */
yaml_node_t *shardmap__yaml_root(struct shardmap__yaml *y);
/* The 1-based line a node starts on. */
int shardmap__yaml_line(const yaml_node_t *node);
/* The n-th item of a sequence node (n < shardmap__yaml_len()). */
yaml_node_t *shardmap__yaml_item(struct shardmap__yaml *y, yaml_node_t *seq, size_t n);
size_t shardmap__yaml_len(const yaml_node_t *seq);

/* One key a mapping may hold; fields value and line are filled in. */
struct shardmap__key {
    const char *name;
    int required;
    yaml_node_t *value; /* ref into the document, NULL when absent */
    int line;           /* of the key, 0 when absent */
};

/*
 * Matches the keys of a mapping node against keys[]. Records unknown and
 * duplicate keys, and missing required ones at line. Returns -1 (recorded)
 * when node is not a mapping; 0 otherwise, even if keys were wrong.
 */
int shardmap__yaml_fields(struct shardmap__yaml *y, yaml_node_t *node, int line,
                          const char *ctx, struct shardmap__key *keys, size_t nkey);
/* Checks that node is a sequence; records the error if not. */
int shardmap__yaml_seq(struct shardmap__yaml *y, yaml_node_t *node, int line,
                       const char *ctx, const char *key);
/* A decimal integer (plain scalar) in min..max. */
int shardmap__yaml_uint(struct shardmap__yaml *y, yaml_node_t *node, const char *ctx,
                        const char *key, uint64_t min, uint64_t max, uint64_t *out);
/* A shard count: a power of two in SHARDMAP_MIN_SHARDS..SHARDMAP_MAX_SHARDS. */
int shardmap__yaml_nshard(struct shardmap__yaml *y, yaml_node_t *node, const char *ctx,
                          const char *key, uint32_t *out);
/*
 * The text of a scalar, owned by the document; "" for a plain empty or null
 * scalar. NULL (recorded) for a mapping, a list or text holding a NUL.
 */
const char *shardmap__yaml_text(struct shardmap__yaml *y, yaml_node_t *node,
                                const char *ctx, const char *key);
/*
 * A scalar copied into buf (size bytes with the NUL), read as by
 * shardmap__yaml_text(). Empty is an error unless allow_empty.
 */
int shardmap__yaml_str(struct shardmap__yaml *y, yaml_node_t *node, const char *ctx,
                       const char *key, char *buf, size_t size, int allow_empty);
/* A host or cluster name: [A-Za-z0-9_-]{1,63}. */
int shardmap__yaml_name(struct shardmap__yaml *y, yaml_node_t *node, const char *ctx,
                        const char *key, char *buf);
/* True when s is a valid host or cluster name. */
int shardmap__valid_name(const char *s);

/* One file being written; any failure is kept in rc and ends the writing. */
struct shardmap__out {
    yaml_emitter_t em;
    FILE *f;
    char *tmp; /* owned: "path.tmp" */
    int rc;    /* 0 or the first -errno */
    int inited;
};

/* Opens "path.tmp" with mode and starts the document. Check o->rc. */
void shardmap__out_open(struct shardmap__out *o, const char *path, int mode);
/*
 * Ends the document, flushes and fsyncs the file and renames it over path.
 * Returns 0 or -errno; on failure path is untouched and the temporary gone.
 */
int shardmap__out_close(struct shardmap__out *o, const char *path);
void shardmap__out_map(struct shardmap__out *o, int flow);
void shardmap__out_seq(struct shardmap__out *o, int flow);
void shardmap__out_end_map(struct shardmap__out *o);
void shardmap__out_end_seq(struct shardmap__out *o);
/* A string, plain when it reads back the same, else quoted. */
void shardmap__out_str(struct shardmap__out *o, const char *s);
/* A string, always double-quoted (passwords, shard lists). */
void shardmap__out_quoted(struct shardmap__out *o, const char *s);
void shardmap__out_uint(struct shardmap__out *o, uint64_t v);

#endif
