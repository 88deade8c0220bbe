/*
 * yaml_fix.h: helpers of the unit tests of libshardmap's YAML files
 * (test_shardmap_conf.c, test_shardmap_files.c): temporary files, loads that
 * must fail with "path:line: message", and comparisons of what was loaded.
 *
 * Run from tests/unit: the examples are found as ../../etc/NAME.yaml.
 */
#ifndef YAML_FIX_H
#define YAML_FIX_H

#include <stddef.h>

#include "shardmap/shardmap.h"

#define EXAMPLES "../../etc/*.yaml"

enum kind { KIND_CONF, KIND_MAP, KIND_PLAN };

/* Writes text to a new temporary file; path must hold 64 bytes. */
void write_tmp(char *path, const char *text);
/* A path for a file to save to (an empty file made); the caller unlinks it. */
void tmp_name(char *path);
/* The whole file, NUL-terminated (free()). */
char *slurp(const char *path);
int all_zero(const void *p, size_t n);
/*
 * Loads text as a file of the given kind, which must fail with BC_ECONFIG,
 * leave its output zeroed, and give an error text. Returns the text; path
 * gets the (removed) file's name for expect_err().
 */
char *load_bad(enum kind kind, const char *text, char *path);
/* Asserts that err holds the line "path:line: msg" (msg may be a prefix). */
void expect_err(const char *err, const char *path, int line, const char *msg);
unsigned count_lines(const char *err);
/* One error only: err is one line, "path:line: msg" (msg may be a prefix). */
void expect_only(enum kind kind, const char *text, int line, const char *msg);
void assert_maps_equal(const struct shardmap *a, const struct shardmap *b);
void assert_confs_equal(const struct shardmap_conf *a, const struct shardmap_conf *b);
void assert_plans_equal(const struct shardmap_plan *a, const struct shardmap_plan *b);
/* The first top-level key of a YAML file: "cluster", "shard_map" or "plan". */
enum kind kind_of(const char *path);
/* Loads path, saves it elsewhere, loads that, and compares. */
void round_trip_file(const char *path, enum kind kind);

#endif
