/*
 * test_api_log.c: the per-thread access log buffers: lines from many
 * threads reach the file whole, each once, nothing before a flush (short
 * of a full buffer), everything after it, and a full buffer goes out by
 * itself. libmicrohttpd's messages, at most 10 a second.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "api/api_int.h"

#define THREADS 8
#define LINES 3000

static FILE *out;

static void *writer(void *arg)
{
    int t = (int)(intptr_t)arg;

    for (int i = 0; i < LINES; i++)
        api_access_log(out, "api t%d line %05d GET /v1/matches/%d/odds 200 0.1ms\n", t,
                       i, i);
    return NULL;
}

static long file_size(void)
{
    struct stat st;

    assert_int_equal(fstat(fileno(out), &st), 0);
    return (long)st.st_size;
}

static void test_lines_whole_and_once(void **state)
{
    pthread_t th[THREADS];
    static char seen[THREADS][LINES];
    char line[256];
    int n = 0;
    (void)state;

    out = tmpfile();
    assert_non_null(out);
    /* One short line waits in its buffer until a flush. */
    api_access_log(out, "first\n");
    assert_int_equal(file_size(), 0);
    api_access_log_flush();
    assert_int_equal(file_size(), 6);

    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, writer, (void *)(intptr_t)t), 0);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    /* 3,000 lines of ~50 bytes a thread fill its 16 KiB buffer several times. */
    assert_true(file_size() > 6 + THREADS * 16384L);
    api_access_log_flush();

    rewind(out);
    assert_non_null(fgets(line, sizeof(line), out));
    assert_string_equal(line, "first\n");
    while (fgets(line, sizeof(line), out) != NULL) {
        int t, i, m;
        char tail[64];
        if (sscanf(line, "api t%d line %d GET /v1/matches/%d/odds %63[^\n]", &t, &i, &m,
                   tail) != 4 ||
            t < 0 || t >= THREADS || i < 0 || i >= LINES || m != i ||
            strcmp(tail, "200 0.1ms") != 0)
            fail_msg("a broken line: %s", line);
        if (seen[t][i]++)
            fail_msg("line %d of thread %d twice", i, t);
        n++;
    }
    assert_int_equal(n, THREADS * LINES);
    fclose(out);
    api_access_log_release();
}

static void mhd_line(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    api_log_mhd(NULL, fmt, ap);
    va_end(ap);
}

/*
 * libmicrohttpd's messages are written at most 10 a second: 1,000 of them
 * at once (a connection flood) give 10 lines, and the next second's first
 * line says how many were not written.
 */
static void test_mhd_messages_bounded(void **state)
{
    char line[1024];
    int saved = dup(STDERR_FILENO), n = 0, told = 0;
    FILE *f = tmpfile();
    struct timespec ts;

    (void)state;
    assert_non_null(f);
    assert_true(saved >= 0);
    fflush(stderr);
    assert_true(dup2(fileno(f), STDERR_FILENO) >= 0);
    /* at the start of a second, so that the 1,000 fall in one */
    do
        clock_gettime(CLOCK_MONOTONIC, &ts);
    while (ts.tv_nsec > 500000000);
    for (int i = 0; i < 1000; i++)
        mhd_line("Server reached connection limit. Closing inbound connection.\n");
    sleep(1);
    mhd_line("one more\n");
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(f);
    while (fgets(line, sizeof(line), f) != NULL) {
        n++;
        assert_non_null(strstr(line, "libmicrohttpd: "));
        if (strstr(line, "one more (and 990 lines like it not written)") != NULL)
            told = 1;
    }
    fclose(f);
    assert_int_equal(n, 11);
    assert_true(told);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_whole_and_once),
        cmocka_unit_test(test_mhd_messages_bounded),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
