/*
 * shardmap_id.c: 64-bit ids that carry their logical shard.
 *
 *   bits 63..23 : milliseconds since SHARDMAP_ID_EPOCH_MS (41 bits)
 *   bits 22..10 : logical shard (13 bits, up to 8192 shards)
 *   bits  9..0  : sequence (10 bits)
 *
 * Ids are stored in signed BIGINT columns, so the top bit must stay 0: that
 * holds for 2^40 ms (until 2060) and pack refuses anything later.
 *
 * Only the layout lives here; uniqueness across API servers comes from where
 * the sequence is taken (the shard's own database, see router_next_id()).
 */
#include <errno.h>

#include "shardmap/shardmap.h"

#define TIME_SHIFT (SHARDMAP_ID_SHARD_BITS + SHARDMAP_ID_SEQ_BITS)

int shardmap_id_pack(const struct shardmap_id *parts, uint64_t *id)
{
    if (parts->ms >= (1ULL << SHARDMAP_ID_TIME_BITS) ||
        parts->shard >= (1u << SHARDMAP_ID_SHARD_BITS) ||
        parts->seq >= (1u << SHARDMAP_ID_SEQ_BITS) ||
        (parts->ms >> (SHARDMAP_ID_TIME_BITS - 1)) != 0)
        return -ERANGE;
    *id = (parts->ms << TIME_SHIFT) | ((uint64_t)parts->shard << SHARDMAP_ID_SEQ_BITS) |
          parts->seq;
    return 0;
}

int shardmap_id_unpack(uint64_t id, struct shardmap_id *parts)
{
    if (id == 0 || (id >> 63) != 0)
        return -EINVAL;
    parts->ms = id >> TIME_SHIFT;
    parts->shard = shardmap_id_shard(id);
    parts->seq = (uint32_t)(id & ((1u << SHARDMAP_ID_SEQ_BITS) - 1));
    return 0;
}
