"""The binlog's row images: every MariaDB host of the stack logs row events
with the primary key and the changed columns only (binlog_row_image =
MINIMAL, etc/mariadb/devstack.cnf.in and production.cnf.in: a settlement
batch logs a fifth of what full images take, docs/benchmarks.md runs 69-72).
Replicas and shard moves find each row they apply by its primary key then,
so every table of every schema on every host must have one: a table added
without one would replicate wrong or stop a move."""

import unittest

import stack

SYSTEM = ("mysql", "information_schema", "performance_schema", "sys")


class TestBinlogRowImage(unittest.TestCase):
    def setUp(self):
        self.s = stack.get()
        self.s.require_dir()
        self.hosts = sorted(set(self.s.shard_map().values()) | {"db1"})

    def test_every_host_logs_minimal_row_events(self):
        for h in self.hosts:
            rows = self.s.sql(h, "SELECT @@binlog_format, @@binlog_row_image, @@log_bin")
            self.assertEqual(rows[0], ["ROW", "MINIMAL", "1"], "host %s: binlog_format, row image, log_bin" % h)

    def test_every_table_has_a_primary_key(self):
        checked = 0
        for h in self.hosts:
            rows = self.s.sql(
                h, "SELECT t.TABLE_SCHEMA, t.TABLE_NAME, COUNT(c.CONSTRAINT_NAME) FROM information_schema.TABLES t "
                   "LEFT JOIN information_schema.TABLE_CONSTRAINTS c ON c.TABLE_SCHEMA = t.TABLE_SCHEMA AND "
                   "c.TABLE_NAME = t.TABLE_NAME AND c.CONSTRAINT_TYPE = 'PRIMARY KEY' WHERE t.TABLE_TYPE = "
                   "'BASE TABLE' AND t.TABLE_SCHEMA NOT IN (%s) GROUP BY t.TABLE_SCHEMA, t.TABLE_NAME"
                   % ", ".join("'%s'" % s for s in SYSTEM))
            missing = ["%s.%s" % (r[0], r[1]) for r in rows if r[2] == "0"]
            self.assertEqual(missing, [], "host %s: tables without a primary key" % h)
            checked += len(rows)
        # The global schema's and the shards' tables were there to be checked.
        self.assertGreater(checked, len(self.s.shard_map()), "too few tables found: %d" % checked)


if __name__ == "__main__":
    unittest.main()
