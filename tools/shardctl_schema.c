/*
 * shardctl_schema.c: the shard schema SQL of etc/schema, built into shardctl so
 * the tool applies exactly the schema of its own version wherever it runs.
 * The global schema's SQL belongs to the catalog (catalog_install()).
 */
#include "tools/shardctl.h"

/* .incbin paths are relative to the repository root, where make runs. */
__asm__(".section .rodata\n"
        ".global shardctl_shard_sql\n"
        "shardctl_shard_sql:\n"
        ".incbin \"etc/schema/shard.sql\"\n"
        ".byte 0\n"
        ".global shardctl_fence_sql\n"
        "shardctl_fence_sql:\n"
        ".incbin \"etc/schema/shard_fence.sql\"\n"
        ".byte 0\n"
        ".previous\n");
