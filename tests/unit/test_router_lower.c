/*
 * test_router_lower.c: where router_lower.c finds the cgroup v1 cpu
 * hierarchy (router__cpu_mount: the mount point of a "cgroup" line of
 * /proc/self/mountinfo whose super options name cpu, alone or with
 * cpuacct; never cpuset nor cpuacct alone nor cgroup2) and a thread's cpu
 * cgroup (router__cpu_cgroup: the path of the /proc/PID/task/TID/cgroup
 * line whose controllers name cpu), and that each says -ENOENT when there
 * is none (a machine under cgroup v2 alone).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "router/router_int.h"

/* parse (router__cpu_mount or router__cpu_cgroup) over text as a file. */
static int parse_text(int (*parse)(FILE *, char *, size_t), const char *text, char *out,
                      size_t size)
{
    FILE *f = fmemopen((void *)text, strlen(text), "r");
    int rc;

    assert_non_null(f);
    rc = parse(f, out, size);
    fclose(f);
    return rc;
}

#define mount_of(text, out, size) parse_text(router__cpu_mount, text, out, size)
#define group_of(text, out, size) parse_text(router__cpu_cgroup, text, out, size)

static void test_mount_cpu_alone(void **state)
{
    char out[128];
    (void)state;

    assert_int_equal(
        mount_of(
            "22 1 0:20 / /sys rw,nosuid - sysfs sysfs rw\n"
            "30 25 0:26 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n"
            "31 25 0:27 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup "
            "rw,cpuacct\n"
            "32 25 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n",
            out, sizeof(out)),
        0);
    assert_string_equal(out, "/sys/fs/cgroup/cpu");
}

static void test_mount_cpu_with_cpuacct_and_tags(void **state)
{
    char out[128];
    (void)state;

    /* Debian's systemd before cgroup v2: cpu and cpuacct together; optional tags. */
    assert_int_equal(mount_of("35 26 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev "
                              "shared:13 - cgroup cgroup rw,cpu,cpuacct\n",
                              out, sizeof(out)),
                     0);
    assert_string_equal(out, "/sys/fs/cgroup/cpu,cpuacct");
}

static void test_mount_none_under_cgroup2(void **state)
{
    char out[128] = "untouched";
    (void)state;

    assert_int_equal(mount_of("29 22 0:25 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 "
                              "rw,nsdelegate\n"
                              "30 25 0:26 / /sys/fs/cgroup/cpuset rw - cgroup cgroup "
                              "rw,cpuset\n"
                              "a line without its separator\n",
                              out, sizeof(out)),
                     -ENOENT);
    assert_int_equal(mount_of("", out, sizeof(out)), -ENOENT);
    /* Too long for out: said so, not cut. */
    assert_int_equal(
        mount_of("32 25 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n", out, 8),
        -ENAMETOOLONG);
}

static void test_thread_group(void **state)
{
    char out[128];
    (void)state;

    assert_int_equal(group_of("9:name=systemd:/\n"
                              "4:memory:/process_api/99\n"
                              "3:cpuset:/\n"
                              "2:cpuacct:/\n"
                              "1:cpu:/betcity-background\n"
                              "0::/\n",
                              out, sizeof(out)),
                     0);
    assert_string_equal(out, "/betcity-background");
    assert_int_equal(
        group_of("5:cpu,cpuacct:/system.slice/mariadb.service\n", out, sizeof(out)), 0);
    assert_string_equal(out, "/system.slice/mariadb.service");
    assert_int_equal(group_of("1:cpu:/\n", out, sizeof(out)), 0);
    assert_string_equal(out, "/");
}

static void test_thread_group_none(void **state)
{
    char out[128];
    (void)state;

    /* cgroup v2 alone: one line, no controller named. */
    assert_int_equal(group_of("0::/system.slice/mariadb.service\n", out, sizeof(out)),
                     -ENOENT);
    assert_int_equal(group_of("2:cpuacct:/\n3:cpuset:/\nbroken\n", out, sizeof(out)),
                     -ENOENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mount_cpu_alone),
        cmocka_unit_test(test_mount_cpu_with_cpuacct_and_tags),
        cmocka_unit_test(test_mount_none_under_cgroup2),
        cmocka_unit_test(test_thread_group),
        cmocka_unit_test(test_thread_group_none),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
