/*
 * fuzz_http.c: libFuzzer harness of the API server as a client meets it:
 * the input's bytes are sent as they are over a loopback connection to a
 * real server (api_server_create(), libmicrohttpd, the connection limits,
 * the header-time checks, X-Forwarded-For, the dispatcher, the handlers),
 * whose router is a cluster with every host down (fuzz_api_fake.c).
 *
 * The server is the one of `make run` (loopback is its trusted proxy, so
 * X-Forwarded-For is read) with its header, body and idle timeouts cut to
 * 200 ms. Per input: connect, send the bytes, close the sending side, read
 * what the server answers until it closes. What must hold: the server
 * closes the connection within 2 s of the input's end (a request left
 * unfinished ends at its phase's timeout); every answer starts
 * "HTTP/1.x NNN" with NNN a status of 200..599 other than 500; and nothing
 * in the server's threads crashes, overflows or leaks (ASan, UBSan).
 * libmicrohttpd's own parsing is not instrumented: what it refuses is
 * covered for the answer it gives, not for its branches.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api/api_int.h"
#include "tests/fuzz/fuzz.h"

#define CLOSE_WAIT_MS 2000

static struct api_server *srv;
static struct sockaddr_in addr = {.sin_family = AF_INET};

/* A loopback port nobody listens on now. */
static uint16_t free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        fuzz_fail("no free port: %s", strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct api_conf conf;
    char err[256];
    (void)argc;
    (void)argv;

    api_conf_init(&conf);
    /* Short phases, so that a request the client left unfinished ends soon. */
    if (api_conf_set(&conf, "header_timeout_ms", "200", err, sizeof(err)) < 0 ||
        api_conf_set(&conf, "body_timeout_ms", "200", err, sizeof(err)) < 0 ||
        api_conf_set(&conf, "idle_timeout_ms", "200", err, sizeof(err)) < 0)
        fuzz_fail("%s", err);
    conf.port = free_port();
    conf.threads = 1;
    memset(conf.secret, 7, sizeof(conf.secret));
    if (api_server_create(&conf, NULL, &srv) < 0)
        fuzz_fail("api_server_create failed on port %u", conf.port);
    addr.sin_port = htons(conf.port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Each "HTTP/1.x NNN" of the answer (pipelined requests get several): a
 * final status from 200 to 599 but 500, or an interim 100 (Continue, for a
 * request that said "Expect: 100-continue", RFC 9110 15.2.1) with a final
 * one after it.
 */
static void check_answer(const char *resp, size_t len)
{
    const char *p = resp;
    int interim = 0;

    if (len == 0)
        return; /* closed without an answer: allowed for garbage */
    if (len < 12 || strncmp(resp, "HTTP/1.", 7) != 0)
        fuzz_fail("the answer does not start with a status line: '%.40s'", resp);
    while ((p = strstr(p, "HTTP/1.")) != NULL && p + 12 <= resp + len) {
        int status = atoi(p + 9);
        if (p == resp || p[-1] == '\n') {
            if (status == 100)
                interim = 1;
            else if (status < 200 || status > 599 || status == 500)
                fuzz_fail("status %d", status);
            else
                interim = 0;
        }
        p += 7;
    }
    if (interim)
        fuzz_fail("a 100 (Continue) with no final status after it");
}

/*
 * connect(), through a signal: libFuzzer's timers interrupt blocking calls
 * (EINTR), and an interrupted connect goes on in the background. 0 or -1.
 */
static int connect_loopback(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    socklen_t len = sizeof(int);
    int err = 0, n;

    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0)
        return 0;
    if (errno != EINTR)
        return -1;
    while ((n = poll(&pfd, 1, 5000)) < 0 && errno == EINTR)
        ;
    if (n <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return -1;
    errno = err;
    return err == 0 ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char resp[1 << 16];
    size_t sent = 0, got = 0;
    int64_t deadline;
    int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0)
        fuzz_fail("socket: %s", strerror(errno));
    /* No 40 ms delayed ACKs between the server's header and body writes. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect_loopback(fd) < 0)
        fuzz_fail("connect: %s", strerror(errno));
    while (sent < size) {
        ssize_t n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* the server closed early: it may */
        sent += (size_t)n;
    }
    shutdown(fd, SHUT_WR);
    deadline = now_ms() + CLOSE_WAIT_MS;
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int64_t left = deadline - now_ms();
        ssize_t n;

        if (left <= 0)
            fuzz_fail("the connection is still open %d ms after the input ended",
                      CLOSE_WAIT_MS);
        if (poll(&pfd, 1, (int)left) <= 0)
            continue;
        setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
        if (got < sizeof(resp) - 1) {
            n = recv(fd, resp + got, sizeof(resp) - 1 - got, 0);
        } else {
            char rest[4096]; /* beyond 64 KiB: read and dropped */
            n = recv(fd, rest, sizeof(rest), 0);
            if (n > 0)
                continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* closed (or reset) */
        got += (size_t)n;
    }
    resp[got] = '\0';
    close(fd);
    check_answer(resp, got);
    return 0;
}
