/*
 * fuzz.h: what the libFuzzer harnesses of tests/fuzz share (docs/fuzzing.md).
 *
 *  - (fuzz_util.c) a file for loaders that take a path: the input is written
 *    to a memfd and read back through /proc/self/fd, so no disk is touched;
 *  - for the API harnesses (fuzz_api_fake.c): a router whose every host is
 *    down, and password hashing that answers at once;
 *  - for those that call the API without a socket (fuzz_conn.c): a
 *    request's headers and query arguments behind
 *    MHD_lookup_connection_value().
 *
 * A harness checks what must hold for every input and calls fuzz_fail()
 * (which aborts, so libFuzzer keeps the input) when it does not.
 */
#ifndef FUZZ_H
#define FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* The harness's entry point, as libFuzzer calls it. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Prints "fuzz: <message>" and aborts. */
void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/*
 * Replaces the contents of the harness's memfd with data and returns a path
 * that opens it ("/proc/self/fd/N"), valid until the next call.
 */
const char *fuzz_file(const uint8_t *data, size_t size);
/* A scratch directory of this process for files a harness saves (mkdtemp). */
const char *fuzz_dir(void);

/* Every byte of the fuzzed API server's token secret. */
#define FUZZ_SECRET_BYTE 7
struct api_server;
/*
 * (fuzz_api_fake.c) An API server with no router and no listener in use
 * (port 0, one thread), its secret FUZZ_SECRET_BYTE repeated; fails the
 * harness if it cannot be made.
 */
struct api_server *fuzz_api_server(void);

struct shardmap;
/* Fails unless the two maps are the same value (what: for the message). */
void fuzz_map_same(const struct shardmap *a, const struct shardmap *b,
                   const char *what);

/* ---- a request's connection (fuzz_conn.c) ---- */

#define FUZZ_MAX_PAIRS 16

struct fuzz_pair {
    const char *name; /* ref into the request's text */
    const char *value;
    size_t value_len; /* decoded size (a %00 counts); 0: strlen(value) */
};

/*
 * What MHD_lookup_connection_value() answers while this connection is the
 * current one: headers by case-insensitive name, query arguments by name.
 */
struct fuzz_conn {
    struct fuzz_pair header[FUZZ_MAX_PAIRS];
    int nheader;
    struct fuzz_pair arg[FUZZ_MAX_PAIRS];
    int narg;
};

/* Makes conn the one the lookups answer from (NULL: none). */
void fuzz_conn_set(struct fuzz_conn *conn);
/*
 * Cuts a query string "a=1&b=2" in place into conn's arguments, %XX and '+'
 * decoded as libmicrohttpd does; an argument without '=' has no value (its
 * lookup answers NULL, as libmicrohttpd's does).
 */
void fuzz_conn_query(struct fuzz_conn *conn, char *query);

#endif
