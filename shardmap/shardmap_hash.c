/*
 * shardmap_hash.c: key -> logical shard, and canonical keys.
 *
 * The mapping is stable forever: XXH3-64 with seed 0 of the canonical bytes,
 * mod N. Test vectors are pinned in tests/unit/test_shardmap.c and printed in
 * docs/shardmap.md.
 */
#include <ctype.h>
#include <errno.h>
#include <string.h>

#include <xxhash.h>

#include "shardmap/shardmap.h"

uint64_t shardmap_hash(const void *key, size_t len)
{
    return XXH3_64bits_withSeed(key, len, 0);
}

uint32_t shardmap_shard_of_key(const void *key, size_t len, uint32_t nshard)
{
    /* nshard is a power of two, so mod is a mask. */
    return (uint32_t)(shardmap_hash(key, len) & (uint64_t)(nshard - 1));
}

int shardmap_valid_nshard(uint32_t n)
{
    return n >= SHARDMAP_MIN_SHARDS && n <= SHARDMAP_MAX_SHARDS && (n & (n - 1)) == 0;
}

static int is_ascii_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

int shardmap_canonical_email(const char *email, char *out, size_t outsz)
{
    size_t len = strlen(email);
    size_t start = 0;

    while (start < len && is_ascii_space((unsigned char)email[start]))
        start++;
    while (len > start && is_ascii_space((unsigned char)email[len - 1]))
        len--;
    if (len == start)
        return -EINVAL;
    if (len - start + 1 > outsz)
        return -ENAMETOOLONG;
    for (size_t i = start; i < len; i++) {
        unsigned char c = (unsigned char)email[i];
        /* ASCII only: bytes of UTF-8 sequences are kept as they are. */
        out[i - start] = (char)(c < 0x80 ? tolower(c) : c);
    }
    out[len - start] = '\0';
    return (int)(len - start);
}
