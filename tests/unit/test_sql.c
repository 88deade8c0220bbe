/*
 * test_sql.c: unit tests of libsql that need no server: the statement
 * formatter and its escaping, identifiers, rows, the host-account rule, the
 * status codes it adds, and a connect that must fail fast and cleanly.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <mysql.h>

#include "sql/sql.h"
#include "sql/sql_int.h"

/* ---- helpers ------------------------------------------------------------- */

/* Formats into a fresh buffer; returns the status, text in *out (caller frees). */
static int fmt(char **out, const char *schema, uint32_t shard, const char *f, ...)
{
    struct sql_buf b = {0};
    va_list ap;
    int rc;

    va_start(ap, f);
    rc = sql_vformat(&b, schema, shard, f, ap);
    va_end(ap);
    *out = b.len > 0 ? strndup(b.buf, b.len) : strdup("");
    sql_buf_deinit(&b);
    return rc;
}

static void check(const char *want, const char *schema, uint32_t shard, const char *f,
                  ...)
{
    struct sql_buf b = {0};
    va_list ap;
    int rc;

    va_start(ap, f);
    rc = sql_vformat(&b, schema, shard, f, ap);
    va_end(ap);
    assert_int_equal(rc, 0);
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(b.buf, want, b.len);
    sql_buf_deinit(&b);
}

/* ---- the formatter --------------------------------------------------------- */

static void test_format_plain_and_numbers(void **state)
{
    (void)state;
    check("SELECT 1", NULL, 0, "SELECT 1");
    check("a % b", NULL, 0, "a %% b");
    check("x = -42 AND y = 18446744073709551615", NULL, 0, "x = %d AND y = %u",
          (int64_t)-42, (uint64_t)UINT64_MAX);
    check("x = 9223372036854775807", NULL, 0, "x = %d", (int64_t)INT64_MAX);
}

static void test_format_schema_and_shard(void **state)
{
    (void)state;
    check("SELECT 7 FROM `bc_0007`.t", "bc_0007", 7, "SELECT %N FROM %S.t");
    check("`bc_global_with_a_longer_prefix_x_global`",
          "bc_global_with_a_longer_prefix_x_global", 0, "%S");
}

static void test_format_schema_missing_or_bad(void **state)
{
    char *out;

    (void)state;
    assert_int_equal(fmt(&out, NULL, 0, "SELECT * FROM %S.t"), -EINVAL);
    assert_non_null(strstr(sql_last_error(), "%S"));
    free(out);
    assert_int_equal(fmt(&out, "bad schema", 0, "%S"), -EINVAL);
    free(out);
}

/* Runs before any connection exists: escaping must not need one. */
static void test_format_strings_escaped(void **state)
{
    (void)state;
    check("'it\\'s'", NULL, 0, "%s", "it's");
    check("'a\\\\b'", NULL, 0, "%s", "a\\b");
    check("'say \\\"hi\\\"'", NULL, 0, "%s", "say \"hi\"");
    check("'line\\nnext'", NULL, 0, "%s", "line\nnext");
    check("''", NULL, 0, "%s", "");
    check("NULL", NULL, 0, "%s", (const char *)NULL);
    check("x IN (NULL, 'b')", NULL, 0, "x IN (%s, %s)", (const char *)NULL, "b");
}

static void test_format_bytes_with_nul(void **state)
{
    static const char bytes[] = {'a', '\0', 'b', '\'', '\\'};

    (void)state;
    check("'a\\0b\\'\\\\'", NULL, 0, "%b", bytes, sizeof(bytes));
    check("''", NULL, 0, "%b", bytes, (size_t)0);
    check("'a'", NULL, 0, "%b", "abc", (size_t)1);
    check("NULL", NULL, 0, "%b", (const char *)NULL, (size_t)3);
}

static void test_format_hex(void **state)
{
    static const char bytes[] = {'\x00', '\x01', '\x7f', '\x80', '\xff', 'A'};

    (void)state;
    check("X'00017F80FF41'", NULL, 0, "%x", bytes, sizeof(bytes));
    check("X''", NULL, 0, "%x", bytes, (size_t)0);
    check("NULL", NULL, 0, "%x", (const char *)NULL, (size_t)0);
}

static void test_format_ident(void **state)
{
    char name64[65], name65[66], *out;

    (void)state;
    memset(name64, 'a', 64);
    name64[64] = '\0';
    memset(name65, 'a', 65);
    name65[65] = '\0';
    check("SELECT `col_1`, `$x`, `1a` FROM `t`", NULL, 0, "SELECT %I, %I, %I FROM %I",
          "col_1", "$x", "1a", "t");
    check("`Ab9`", NULL, 0, "%I", "Ab9");
    {
        char want[80];
        snprintf(want, sizeof(want), "`%s`", name64);
        check(want, NULL, 0, "%I", name64);
    }
    const char *bad[] = {"a`b", "a b",         "",  name65, "123", "a-b",
                         "a;b", "caf\xc3\xa9", NULL};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(fmt(&out, NULL, 0, "SELECT %I", bad[i]), -EINVAL);
        assert_non_null(strstr(sql_last_error(), "identifier"));
        free(out);
    }
}

static void test_format_raw(void **state)
{
    char *out;

    (void)state;
    check("SELECT a, b FROM t ORDER BY a DESC", NULL, 0, "SELECT %R FROM t ORDER BY %R",
          "a, b", "a DESC");
    assert_int_equal(fmt(&out, NULL, 0, "%R", (const char *)NULL), -EINVAL);
    free(out);
}

static void test_format_bad_conversion(void **state)
{
    char *out;

    (void)state;
    assert_int_equal(fmt(&out, NULL, 0, "SELECT %q", 1), -EINVAL);
    assert_non_null(strstr(sql_last_error(), "%q"));
    free(out);
    assert_int_equal(fmt(&out, NULL, 0, "SELECT 100%"), -EINVAL);
    free(out);
    assert_int_equal(fmt(&out, NULL, 0, "%lld", (long long)1), -EINVAL);
    free(out);
}

static void test_format_appends(void **state)
{
    struct sql_buf b = {0};

    (void)state;
    assert_int_equal(sql_format(&b, "bc_0001", 1, "SELECT %s", "a"), 0);
    assert_int_equal(sql_buf_add(&b, "; ", 2), 0);
    assert_int_equal(sql_format(&b, "bc_0001", 1, "SELECT %N FROM %S.t", "a"), 0);
    assert_string_equal(b.buf, "SELECT 'a'; SELECT 1 FROM `bc_0001`.t");
    assert_int_equal(b.len, strlen(b.buf));
    sql_buf_deinit(&b);
    assert_null(b.buf);
    assert_int_equal(b.len, 0);
}

static void test_buf_direct(void **state)
{
    struct sql_buf b = {0};
    char big[5000];

    (void)state;
    memset(big, '\'', sizeof(big));
    assert_int_equal(sql_buf_add_str(&b, big, sizeof(big)), 0);
    assert_int_equal(b.len, 2 * sizeof(big) + 2);
    assert_int_equal(sql_buf_add_hex(&b, "\xab", 1), 0);
    assert_string_equal(b.buf + b.len - 5, "X'AB'");
    assert_int_equal(sql_buf_add_ident(&b, "ok_name"), 0);
    assert_int_equal(sql_buf_add_ident(&b, "not ok"), -EINVAL);
    assert_string_equal(b.buf + b.len - 9, "`ok_name`");
    sql_buf_deinit(&b);
}

/* ---- identifiers ---------------------------------------------------------- */

static void test_ident_ok(void **state)
{
    char name[70];

    (void)state;
    assert_true(sql_ident_ok("bc_0001"));
    assert_true(sql_ident_ok("a"));
    assert_true(sql_ident_ok("_"));
    assert_true(sql_ident_ok("$"));
    assert_true(sql_ident_ok("0x"));
    assert_true(sql_ident_ok("Relay_1"));
    memset(name, 'z', 64);
    name[64] = '\0';
    assert_true(sql_ident_ok(name));
    name[64] = 'z';
    name[65] = '\0';
    assert_false(sql_ident_ok(name));
    memset(name, '9', 64);
    name[64] = '\0';
    assert_false(sql_ident_ok(name));
    assert_false(sql_ident_ok(""));
    assert_false(sql_ident_ok(NULL));
    assert_false(sql_ident_ok("0"));
    assert_false(sql_ident_ok("12345"));
    assert_false(sql_ident_ok("a`"));
    assert_false(sql_ident_ok(" a"));
    assert_false(sql_ident_ok("a.b"));
    assert_false(sql_ident_ok("a'b"));
    assert_false(sql_ident_ok("a\\b"));
    assert_false(sql_ident_ok("\xc3\xa9"));
}

/* ---- rows ------------------------------------------------------------------- */

/* Rows of ncol columns whose cells are "r<row>c<col>" (NULL where col == 1). */
static void make_rows(struct sql_rows *rows, uint32_t nrow, uint32_t ncol, int base)
{
    memset(rows, 0, sizeof(*rows));
    rows->ncol = ncol;
    rows->cell = calloc((size_t)nrow * ncol + 1, sizeof(*rows->cell));
    rows->len = calloc((size_t)nrow * ncol + 1, sizeof(*rows->len));
    assert_non_null(rows->cell);
    assert_non_null(rows->len);
    for (uint32_t r = 0; r < nrow; r++) {
        char text[8][32];
        const char *row[8];
        unsigned long len[8];
        assert_true(ncol <= 8);
        for (uint32_t c = 0; c < ncol; c++) {
            snprintf(text[c], sizeof(text[c]), "r%dc%u", base + (int)r, c);
            row[c] = c == 1 ? NULL : text[c];
            len[c] = c == 1 ? 0 : strlen(text[c]);
        }
        assert_int_equal(sql__rows_add_row(rows, row, len), 0);
    }
    rows->affected = nrow;
}

static void test_rows_append(void **state)
{
    struct sql_rows a, b, c = {0};

    (void)state;
    make_rows(&a, 2, 3, 0);
    make_rows(&b, 3, 3, 2);
    assert_int_equal(sql_rows_append(&a, &b), 0);
    assert_int_equal(a.nrow, 5);
    assert_int_equal(a.ncol, 3);
    assert_int_equal(a.affected, 5);
    assert_string_equal(sql_cell(&a, 0, 0), "r0c0");
    assert_string_equal(sql_cell(&a, 4, 2), "r4c2");
    assert_null(sql_cell(&a, 3, 1));
    assert_int_equal(a.len[4 * 3 + 2], 4);
    assert_int_equal(b.nrow, 0);
    assert_null(b.cell);

    /* Into empty rows: the columns come with the rows. */
    assert_int_equal(sql_rows_append(&c, &a), 0);
    assert_int_equal(c.nrow, 5);
    assert_int_equal(c.ncol, 3);

    /* An empty source changes nothing but the affected count. */
    make_rows(&b, 0, 3, 0);
    b.affected = 7;
    assert_int_equal(sql_rows_append(&c, &b), 0);
    assert_int_equal(c.nrow, 5);
    assert_int_equal(c.affected, 12);

    /* Different widths do not mix. */
    make_rows(&b, 1, 2, 0);
    assert_int_equal(sql_rows_append(&c, &b), -EINVAL);
    sql_rows_free(&b);
    sql_rows_free(&c);
    sql_rows_free(&a);
    assert_int_equal(c.nrow, 0);
    sql_rows_free(NULL);
}

/*
 * The binary is linked with -Wl,--wrap=malloc (Makefile): every malloc of the
 * SQL layer and of this file comes here, and the malloc_fail_in-th one from
 * when it is set fails.
 */
void *__real_malloc(size_t size);
void *__wrap_malloc(size_t size);
static unsigned malloc_fail_in;

void *__wrap_malloc(size_t size)
{
    if (malloc_fail_in > 0 && --malloc_fail_in == 0)
        return NULL;
    return __real_malloc(size);
}

/*
 * Out of memory for a row's bytes: the row is not added, the rows before it
 * stay whole, and nothing leaks (valgrind and ASan). Rows are copied into
 * shared blocks: a row that fits in the current block allocates nothing, a
 * larger one asks for one new block.
 */
static void test_rows_add_row_out_of_memory(void **state)
{
    static const char *const first[] = {"a", NULL, "ccc"};
    static const char *const second[] = {"xx", "y", "z\0z"};
    static const unsigned long first_len[] = {1, 0, 3}, second_len[] = {2, 1, 3};
    static char big[3000];
    const char *const third[] = {big, NULL, "w"};
    const unsigned long third_len[] = {sizeof(big), 0, 1};
    struct sql_rows rows = {.ncol = 3};

    (void)state;
    memset(big, 'b', sizeof(big));
    rows.cell = calloc(9, sizeof(*rows.cell));
    rows.len = calloc(9, sizeof(*rows.len));
    assert_non_null(rows.cell);
    assert_non_null(rows.len);
    assert_int_equal(sql__rows_add_row(&rows, first, first_len), 0);
    /* In the first row's block: no allocation to fail. */
    malloc_fail_in = 1;
    assert_int_equal(sql__rows_add_row(&rows, second, second_len), 0);
    malloc_fail_in = 0;
    assert_int_equal(rows.nrow, 2);
    assert_int_equal(rows.len[5], 3);
    assert_memory_equal(sql_cell(&rows, 1, 2), "z\0z", 4);
    /* Larger than what is left: a block of its own, refused here. */
    malloc_fail_in = 1;
    assert_int_equal(sql__rows_add_row(&rows, third, third_len), -ENOMEM);
    malloc_fail_in = 0;
    assert_int_equal(rows.nrow, 2);
    assert_string_equal(sql_cell(&rows, 0, 0), "a");
    assert_null(sql_cell(&rows, 0, 1));
    assert_string_equal(sql_cell(&rows, 0, 2), "ccc");
    assert_string_equal(sql_cell(&rows, 1, 0), "xx");
    /* And taken when memory is back. */
    assert_int_equal(sql__rows_add_row(&rows, third, third_len), 0);
    assert_int_equal(rows.nrow, 3);
    assert_int_equal(rows.len[6], sizeof(big));
    assert_memory_equal(sql_cell(&rows, 2, 0), big, sizeof(big));
    assert_int_equal(sql_cell(&rows, 2, 0)[sizeof(big)], '\0');
    assert_string_equal(sql_cell(&rows, 2, 2), "w");
    sql_rows_free(&rows);
}

/*
 * Cells moved by hand from one rows to another (as the router's top-K merge
 * does) stay valid once their blocks are adopted, after the source is freed.
 */
static void test_rows_adopt(void **state)
{
    struct sql_rows a, b, dst = {0};

    (void)state;
    make_rows(&a, 300, 3, 0); /* more than one block */
    make_rows(&b, 2, 3, 1000);
    dst.ncol = 3;
    dst.cell = calloc(6, sizeof(*dst.cell));
    dst.len = calloc(6, sizeof(*dst.len));
    assert_non_null(dst.cell);
    assert_non_null(dst.len);
    for (uint32_t c = 0; c < 3; c++) {
        dst.cell[c] = a.cell[299 * 3 + c];
        dst.len[c] = a.len[299 * 3 + c];
        dst.cell[3 + c] = b.cell[3 + c];
        dst.len[3 + c] = b.len[3 + c];
    }
    dst.nrow = 2;
    sql_rows_adopt(&dst, &a);
    sql_rows_adopt(&dst, &b);
    assert_null(a.blocks);
    assert_null(b.blocks);
    sql_rows_free(&a);
    sql_rows_free(&b);
    assert_string_equal(sql_cell(&dst, 0, 0), "r299c0");
    assert_null(sql_cell(&dst, 0, 1));
    assert_string_equal(sql_cell(&dst, 1, 2), "r1001c2");
    sql_rows_free(&dst);
}

/* ---- endpoints ---------------------------------------------------------------- */

static void conf_make(struct shardmap_conf *conf, const char *global)
{
    static struct shardmap_host_conf hosts[2] = {
        {.name = "db1",
         .addr = "10.0.0.1",
         .port = 3306,
         .user = "u1",
         .password = "p1",
         .weight = 1,
         .ops_user = "ops1",
         .ops_password = "q1"},
        {.name = "db2",
         .addr = "10.0.0.2",
         .port = 3307,
         .user = "u2",
         .password = "p2",
         .weight = 1,
         .ops_user = "ops2",
         .ops_password = "q2"},
    };

    memset(conf, 0, sizeof(*conf));
    conf->hosts = hosts;
    conf->nhost = 2;
    snprintf(conf->global_host, sizeof(conf->global_host), "%s", global);
}

static void test_endpoint_own_account(void **state)
{
    struct shardmap_conf conf;
    struct sql_endpoint ep;

    (void)state;
    conf_make(&conf, "db2");
    assert_int_equal(sql_endpoint_of(&conf, "db1", NULL, 0, &ep), 0);
    assert_string_equal(ep.name, "db1");
    assert_string_equal(ep.addr, "10.0.0.1");
    assert_int_equal(ep.port, 3306);
    assert_string_equal(ep.user, "u1");
    assert_string_equal(ep.password, "p1");
    /* The catalog's address wins; the account stays the host's own. */
    assert_int_equal(sql_endpoint_of(&conf, "db1", "10.9.9.9", 4000, &ep), 0);
    assert_string_equal(ep.addr, "10.9.9.9");
    assert_int_equal(ep.port, 4000);
    assert_string_equal(ep.user, "u1");
}

static void test_endpoint_global_account(void **state)
{
    struct shardmap_conf conf;
    struct sql_endpoint ep;

    (void)state;
    conf_make(&conf, "db2");
    assert_int_equal(sql_endpoint_of(&conf, "db9", "10.0.0.9", 3309, &ep), 0);
    assert_string_equal(ep.name, "db9");
    assert_string_equal(ep.addr, "10.0.0.9");
    assert_int_equal(ep.port, 3309);
    assert_string_equal(ep.user, "u2");
    assert_string_equal(ep.password, "p2");
    /* No global_host in a conf built in code: the first host holds it. */
    conf_make(&conf, "");
    assert_int_equal(sql_endpoint_of(&conf, "db9", "10.0.0.9", 3309, &ep), 0);
    assert_string_equal(ep.user, "u1");
}

/*
 * The operator tools connect with each host's ops account, the API server
 * (the default) with its user: a program picks one and every endpoint,
 * also of a host only the catalog knows, follows it.
 */
static void test_endpoint_account_chosen_by_the_program(void **state)
{
    struct shardmap_conf conf;
    struct sql_endpoint ep;

    (void)state;
    conf_make(&conf, "db2");
    assert_int_equal(conf.account, SHARDMAP_ACCOUNT_API);
    assert_int_equal(sql_endpoint_of(&conf, "db1", NULL, 0, &ep), 0);
    assert_string_equal(ep.user, "u1");
    assert_string_equal(ep.password, "p1");
    conf.account = SHARDMAP_ACCOUNT_OPS;
    assert_int_equal(sql_endpoint_of(&conf, "db1", NULL, 0, &ep), 0);
    assert_string_equal(ep.user, "ops1");
    assert_string_equal(ep.password, "q1");
    assert_int_equal(sql_endpoint_of(&conf, "db9", "10.0.0.9", 3309, &ep), 0);
    assert_string_equal(ep.user, "ops2");
    assert_string_equal(ep.password, "q2");
}

static void test_endpoint_unknown_host(void **state)
{
    struct shardmap_conf conf;
    struct sql_endpoint ep;

    (void)state;
    conf_make(&conf, "db2");
    assert_int_equal(sql_endpoint_of(&conf, "db9", NULL, 0, &ep), BC_EHOST);
    assert_non_null(strstr(sql_last_error(), "db9"));
}

/* ---- status codes ------------------------------------------------------------- */

static void test_new_status_codes(void **state)
{
    (void)state;
    assert_int_equal(BC_ENOSCHEMA, -10013);
    assert_int_equal(BC_EFENCED, -10014);
    assert_int_equal(BC_ELOCKWAIT, -10015);
    assert_string_equal(bc_errname(BC_ENOSCHEMA), "BC_ENOSCHEMA");
    assert_string_equal(bc_strerror(BC_EFENCED), "shard copy fenced");
    assert_string_equal(bc_strerror(BC_ELOCKWAIT), "lock wait timed out");
    assert_int_equal(BC_EREADONLY, -10016);
    assert_string_equal(bc_errname(BC_EREADONLY), "BC_EREADONLY");
    assert_int_equal(BC_ENOMAP, -10017);
    assert_string_equal(bc_errname(BC_ENOMAP), "BC_ENOMAP");
}

/* ---- connections ---------------------------------------------------------------- */

/* A loopback port nobody listens on: bound once, then closed. */
static uint16_t closed_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static void test_conn_open_refused(void **state)
{
    struct sql_endpoint ep = {.name = "dbx", .addr = "127.0.0.1", .user = "nobody"};
    struct sql_conn_opts opts = {.connect_timeout_ms = 2000};
    struct sql_conn *c = NULL;
    int64_t t0;

    (void)state;
    ep.port = closed_port();
    t0 = sql_now_ms();
    assert_int_equal(sql_conn_open(&ep, &opts, &c), BC_EDOWN);
    assert_true(sql_now_ms() - t0 < 1000);
    assert_null(c);
    assert_non_null(strstr(sql_last_error(), "dbx"));
    assert_non_null(strstr(sql_last_error(), "127.0.0.1"));
    sql_conn_close(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_plain_and_numbers),
        cmocka_unit_test(test_format_schema_and_shard),
        cmocka_unit_test(test_format_schema_missing_or_bad),
        cmocka_unit_test(test_format_strings_escaped),
        cmocka_unit_test(test_format_bytes_with_nul),
        cmocka_unit_test(test_format_hex),
        cmocka_unit_test(test_format_ident),
        cmocka_unit_test(test_format_raw),
        cmocka_unit_test(test_format_bad_conversion),
        cmocka_unit_test(test_format_appends),
        cmocka_unit_test(test_buf_direct),
        cmocka_unit_test(test_ident_ok),
        cmocka_unit_test(test_rows_append),
        cmocka_unit_test(test_rows_add_row_out_of_memory),
        cmocka_unit_test(test_rows_adopt),
        cmocka_unit_test(test_endpoint_own_account),
        cmocka_unit_test(test_endpoint_global_account),
        cmocka_unit_test(test_endpoint_account_chosen_by_the_program),
        cmocka_unit_test(test_endpoint_unknown_host),
        cmocka_unit_test(test_new_status_codes),
        cmocka_unit_test(test_conn_open_refused),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);

    /* Connector/C's global state, so that valgrind sees every block freed. */
    mysql_library_end();
    return failed;
}
