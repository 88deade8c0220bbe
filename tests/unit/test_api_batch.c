/*
 * test_api_batch.c: the statement of a loop's batched reads (api_batch_text)
 * tags each read's SELECT with its place and joins them with UNION ALL, and
 * refuses a text that is not a SELECT; each read's rows (api_batch_rows) are
 * its own row of the batch's without the tag, none when the host found none,
 * and BC_EQUERY when a read got more than one.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "api/api_int.h"

static void text_of(struct sql_buf *b, const char *s)
{
    memset(b, 0, sizeof(*b));
    assert_int_equal(sql_buf_add(b, s, strlen(s)), 0);
}

static void test_text_tags_and_joins(void **state)
{
    struct sql_buf r[3], out = {0};
    const struct sql_buf *reads[3] = {&r[0], &r[1], &r[2]};
    (void)state;

    text_of(&r[0], "SELECT u.id FROM `bc_0001`.users u WHERE u.id = 7");
    text_of(&r[1], "SELECT u.id FROM `bc_0004`.users u WHERE u.id = 9");
    text_of(&r[2], "SELECT u.id FROM `bc_0001`.users u WHERE u.id = 'a''b'");
    assert_int_equal(api_batch_text(&out, reads, 3), 0);
    assert_string_equal(
        out.buf, "(SELECT 0, u.id FROM `bc_0001`.users u WHERE u.id = 7)"
                 " UNION ALL (SELECT 1, u.id FROM `bc_0004`.users u WHERE u.id = 9)"
                 " UNION ALL (SELECT 2, u.id FROM `bc_0001`.users u WHERE u.id = "
                 "'a''b')");
    assert_int_equal(out.len, strlen(out.buf));
    sql_buf_deinit(&out);
    for (int i = 0; i < 3; i++)
        sql_buf_deinit(&r[i]);
}

static void test_text_refuses_what_is_not_a_select(void **state)
{
    const char *bad[] = {"UPDATE users SET balance = 0", "SELECT", "select 1",
                         "SELECT "};
    struct sql_buf good, b, out = {0};
    const struct sql_buf *reads[2] = {&good, &b};
    (void)state;

    text_of(&good, "SELECT 1");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        text_of(&b, bad[i]);
        assert_int_equal(api_batch_text(&out, reads, 2), -EINVAL);
        sql_buf_deinit(&b);
        sql_buf_deinit(&out);
    }
    sql_buf_deinit(&good);
}

/* Rows of 3 columns (tag, id, name) from row-major cells. */
static void rows_of(struct sql_rows *rows, char **cell, unsigned long *len,
                    uint32_t nrow)
{
    memset(rows, 0, sizeof(*rows));
    rows->nrow = nrow;
    rows->ncol = 3;
    rows->cell = cell;
    rows->len = len;
    for (uint32_t i = 0; i < nrow * 3; i++)
        len[i] = cell[i] == NULL ? 0 : strlen(cell[i]);
}

static void test_rows_each_read_its_own(void **state)
{
    /* Reads 0..11; 10 answered in the middle, 1 found nothing. */
    char *cell[] = {"2", "22", "bob", "10", "110", NULL,
                    "0", "7",  "ann", "11", "111", "eve"};
    unsigned long len[12];
    struct sql_rows all, v;
    (void)state;

    rows_of(&all, cell, len, 4);
    assert_int_equal(api_batch_rows(&all, 0, &v), 0);
    assert_int_equal(v.nrow, 1);
    assert_int_equal(v.ncol, 2);
    assert_string_equal(sql_cell(&v, 0, 0), "7");
    assert_string_equal(sql_cell(&v, 0, 1), "ann");
    assert_int_equal(v.len[1], 3);
    assert_int_equal(api_batch_rows(&all, 1, &v), 0);
    assert_int_equal(v.nrow, 0);
    assert_int_equal(v.ncol, 2);
    assert_int_equal(api_batch_rows(&all, 2, &v), 0);
    assert_string_equal(sql_cell(&v, 0, 0), "22");
    /* "1" is not a prefix match of "10" or "11", nor "10" of "1". */
    assert_int_equal(api_batch_rows(&all, 10, &v), 0);
    assert_int_equal(v.nrow, 1);
    assert_string_equal(sql_cell(&v, 0, 0), "110");
    assert_null(sql_cell(&v, 0, 1));
    assert_int_equal(api_batch_rows(&all, 11, &v), 0);
    assert_string_equal(sql_cell(&v, 0, 1), "eve");
}

static void test_rows_more_than_one_is_an_error(void **state)
{
    char *cell[] = {"1", "5", "x", "0", "6", "y", "1", "8", "z"};
    unsigned long len[9];
    struct sql_rows all, v;
    (void)state;

    rows_of(&all, cell, len, 3);
    assert_int_equal(api_batch_rows(&all, 1, &v), BC_EQUERY);
    assert_int_equal(v.nrow, 0);
    assert_int_equal(api_batch_rows(&all, 0, &v), 0);
    assert_string_equal(sql_cell(&v, 0, 2 - 1), "y");
    memset(&all, 0, sizeof(all)); /* no result set at all: nothing found */
    assert_int_equal(api_batch_rows(&all, 0, &v), 0);
    assert_int_equal(v.nrow, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_tags_and_joins),
        cmocka_unit_test(test_text_refuses_what_is_not_a_select),
        cmocka_unit_test(test_rows_each_read_its_own),
        cmocka_unit_test(test_rows_more_than_one_is_an_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
