/*
 * fuzz_util.c: failing, and files for the loaders, for every harness.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <string.h>
#include <unistd.h>

#include "shardmap/shardmap.h"

#include "tests/fuzz/fuzz.h"

void fuzz_fail(const char *fmt, ...)
{
    va_list ap;

    fputs("fuzz: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

const char *fuzz_file(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];

    if (fd < 0) {
        fd = memfd_create("fuzz", 0);
        if (fd < 0)
            fuzz_fail("memfd_create failed");
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
        fuzz_fail("cannot write the input to the memfd");
    return path;
}

static char scratch[64];

static void scratch_remove(void)
{
    rmdir(scratch); /* harnesses unlink what they save */
}

const char *fuzz_dir(void)
{
    if (scratch[0] == '\0') {
        snprintf(scratch, sizeof(scratch), "/tmp/bc-fuzz-XXXXXX");
        if (mkdtemp(scratch) == NULL)
            fuzz_fail("mkdtemp failed");
        atexit(scratch_remove);
    }
    return scratch;
}

void fuzz_map_same(const struct shardmap *a, const struct shardmap *b, const char *what)
{
    if (a->version != b->version || a->nshard != b->nshard || a->nnode != b->nnode)
        fuzz_fail("%s: version, shards or hosts differ", what);
    for (uint32_t i = 0; i < a->nnode; i++)
        if (strcmp(a->nodes[i].name, b->nodes[i].name) != 0 ||
            a->nodes[i].weight != b->nodes[i].weight)
            fuzz_fail("%s: host %u differs", what, i);
    for (uint32_t i = 0; i < a->nshard; i++)
        if (a->node_of[i] != b->node_of[i] || a->state[i] != b->state[i])
            fuzz_fail("%s: shard %u differs", what, i);
}
