/*
 * shardmap_err.h: the one status convention of the whole tree.
 *
 * Every function that can fail returns 0 on success or a negative code: either
 * -errno (system errors) or one of the BC_E* codes below, which sit above the
 * errno range. bc_strerror() turns any of them into a message and bc_errname()
 * into a stable snake_case name for logs and JSON.
 */
#ifndef SHARDMAP_ERR_H
#define SHARDMAP_ERR_H

/* X(name, code, message): codes are negative and never reused. */
#define BC_ERR_MAP(X)                                                                  \
    X(BC_ECONFIG, -10001, "invalid configuration")                                     \
    X(BC_ESHARD, -10002, "shard out of range")                                         \
    X(BC_EHOST, -10003, "unknown host")                                                \
    X(BC_EDOWN, -10004, "host unavailable")                                            \
    X(BC_ETIMEOUT, -10005, "operation timed out")                                      \
    X(BC_EQUERY, -10006, "query failed")                                               \
    X(BC_EMOVED, -10007, "shard moved")                                                \
    X(BC_EEXISTS, -10008, "already exists")                                            \
    X(BC_EMISMATCH, -10009, "cluster does not match configuration")                    \
    X(BC_ENOTFOUND, -10010, "not found")                                               \
    X(BC_EPOOL, -10011, "connection pool exhausted")                                   \
    X(BC_EDUPKEY, -10012, "duplicate key")                                             \
    X(BC_ENOSCHEMA, -10013, "schema or table missing")                                 \
    X(BC_EFENCED, -10014, "shard copy fenced")                                         \
    X(BC_ELOCKWAIT, -10015, "lock wait timed out")                                     \
    X(BC_EREADONLY, -10016, "host is read-only")                                       \
    X(BC_ENOMAP, -10017, "no shard map loaded")

enum bc_err {
#define BC_ERR_ENUM(name, code, msg) name = code,
    BC_ERR_MAP(BC_ERR_ENUM)
#undef BC_ERR_ENUM
};

/* Message for a status code (0, -errno or BC_E*); never NULL, static storage. */
const char *bc_strerror(int err);
/* Stable symbolic name of a status code ("ok", "BC_ETIMEOUT", "ENOENT"). */
const char *bc_errname(int err);

#endif
