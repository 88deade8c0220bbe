/*
 * shardctl.h: what shardctl's files share.
 */
#ifndef SHARDCTL_H
#define SHARDCTL_H

/* etc/schema/global.sql and shard.sql, NUL-terminated ({schema} placeholders). */
extern const char shardctl_global_sql[];
extern const char shardctl_shard_sql[];

#endif
