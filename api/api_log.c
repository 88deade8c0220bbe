/*
 * api_log.c: the access log, buffered per thread.
 *
 * Every thread that completes requests (an event loop) writes its lines
 * into a buffer of its own, under a lock that only the flusher ever
 * contends: no two loops share a lock, a buffer or a cache line per line
 * logged. A buffer goes to the file in one write() when it is nearly full,
 * and every buffer when api_access_log_flush() runs (the server's main
 * flushes four times a second, and at exit), so a line is at most about
 * 250 ms late and lines never interleave within one another. Buffers are
 * registered once per thread and kept until api_access_log_release(), which
 * runs when no thread logs any more: a loop that stopped may still hold
 * lines until then.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api/api_int.h"

#define LOGBUF_SIZE 16384
/* A line is formatted in place when this much room is left: lines are shorter. */
#define LINE_MAX_LEN 1024

struct logbuf {
    pthread_mutex_t lock;
    struct logbuf *next; /* in the registry, under its lock */
    int fd;
    size_t len;
    char buf[LOGBUF_SIZE];
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct logbuf *registry;
static _Thread_local struct logbuf *mine;

/* Writes b out; its lock is held. A failed write drops the lines. */
static void logbuf_out(struct logbuf *b)
{
    size_t off = 0;

    while (off < b->len) {
        ssize_t n = write(b->fd, b->buf + off, b->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    b->len = 0;
}

static struct logbuf *logbuf_mine(void)
{
    struct logbuf *b = mine;

    if (b != NULL)
        return b;
    if ((b = calloc(1, sizeof(*b))) == NULL)
        return NULL;
    pthread_mutex_init(&b->lock, NULL);
    b->fd = -1;
    pthread_mutex_lock(&registry_lock);
    b->next = registry;
    registry = b;
    pthread_mutex_unlock(&registry_lock);
    mine = b;
    return b;
}

void api_access_log(FILE *f, const char *fmt, ...)
{
    struct logbuf *b = logbuf_mine();
    va_list ap;
    int n;

    if (b == NULL)
        return; /* no memory: the line is lost, the request is not */
    pthread_mutex_lock(&b->lock);
    if (b->fd != fileno(f) || LOGBUF_SIZE - b->len < LINE_MAX_LEN) {
        if (b->fd >= 0)
            logbuf_out(b);
        b->fd = fileno(f);
    }
    va_start(ap, fmt);
    n = vsnprintf(b->buf + b->len, LOGBUF_SIZE - b->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        b->len +=
            (size_t)n < LOGBUF_SIZE - b->len ? (size_t)n : LOGBUF_SIZE - b->len - 1;
    pthread_mutex_unlock(&b->lock);
}

void api_access_log_flush(void)
{
    pthread_mutex_lock(&registry_lock);
    for (struct logbuf *b = registry; b != NULL; b = b->next) {
        pthread_mutex_lock(&b->lock);
        if (b->fd >= 0)
            logbuf_out(b);
        pthread_mutex_unlock(&b->lock);
    }
    pthread_mutex_unlock(&registry_lock);
}

void api_access_log_release(void)
{
    struct logbuf *b;

    api_access_log_flush();
    pthread_mutex_lock(&registry_lock);
    b = registry;
    registry = NULL;
    pthread_mutex_unlock(&registry_lock);
    while (b != NULL) {
        struct logbuf *next = b->next;
        pthread_mutex_destroy(&b->lock);
        free(b);
        b = next;
    }
    mine = NULL;
}

/* A line of the server's log on stderr, with its UTC time. */
void api_log(const char *fmt, ...)
{
    char buf[1024];
    struct timespec ts;
    struct tm tm;
    va_list ap;
    size_t n;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, ".%03ldZ ", ts.tv_nsec / 1000000);
    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof(buf) - n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", buf);
}

/*
 * libmicrohttpd's own messages, through api_log(), at most MHD_LINES_PER_S
 * a second: a flood of connections past the limit made it write one line
 * each (199,000 in 20 s, 12 MB of log). The lines dropped are counted, and
 * their number written with the next line that passes.
 */
#define MHD_LINES_PER_S 10

void api_log_mhd(void *cls, const char *fmt, va_list ap)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static time_t second;
    static unsigned lines, dropped;
    unsigned before = 0;
    struct timespec ts;
    char msg[512];
    size_t n;

    (void)cls;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    pthread_mutex_lock(&lock);
    if (ts.tv_sec != second) {
        second = ts.tv_sec;
        lines = 0;
    }
    if (lines >= MHD_LINES_PER_S) {
        dropped++;
        pthread_mutex_unlock(&lock);
        return;
    }
    lines++;
    before = dropped;
    dropped = 0;
    pthread_mutex_unlock(&lock);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    if (before > 0)
        api_log("libmicrohttpd: %s (and %u lines like it not written)", msg, before);
    else
        api_log("libmicrohttpd: %s", msg);
}

void api_log_escape(const char *in, char *out, size_t size)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;

    for (const unsigned char *p = (const unsigned char *)in; *p != '\0'; p++) {
        if (*p > ' ' && *p < 0x7f && *p != '\\') {
            if (n + 1 >= size)
                break;
            out[n++] = (char)*p;
        } else {
            if (n + 4 >= size)
                break;
            out[n++] = '\\';
            out[n++] = 'x';
            out[n++] = hex[*p >> 4];
            out[n++] = hex[*p & 15];
        }
    }
    out[n] = '\0';
}
