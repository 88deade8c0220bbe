/*
 * shardmap_err.c: names and messages of the tree-wide status codes.
 */
#include <string.h>

#include "shardmap/shardmap_err.h"

const char *bc_strerror(int err)
{
    if (err == 0)
        return "success";
    switch (err) {
#define BC_ERR_MSG(name, code, msg)                                                    \
    case code:                                                                         \
        return msg;
        BC_ERR_MAP(BC_ERR_MSG)
#undef BC_ERR_MSG
    }
    if (err < 0 && err > -4096)
        return strerror(-err);
    return "unknown error";
}

const char *bc_errname(int err)
{
    if (err == 0)
        return "ok";
    switch (err) {
#define BC_ERR_NAME(name, code, msg)                                                   \
    case code:                                                                         \
        return #name;
        BC_ERR_MAP(BC_ERR_NAME)
#undef BC_ERR_NAME
    }
    if (err < 0 && err > -4096) {
        const char *n = strerrorname_np(-err);
        return n ? n : "errno";
    }
    return "unknown";
}
