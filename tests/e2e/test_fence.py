"""The fence of a shard's copy (etc/schema/shard_fence.sql) on every table a
request or a settlement writes: with shard_state.fenced = 1 (a move's
cut-over), an INSERT, UPDATE or DELETE of any row is refused with SQLSTATE
45000 "bc: shard moved"; with @bc_fence_held (a settlement batch that took
the fence's share lock first) or @bc_move_copy (a move's copy) the rows pass;
unfenced, they pass. A table added without its triggers, or a trigger whose
check is wrong, fails here on a real shard. And `shardctl init` brings a
shard made before the check was inline (triggers that CALL fence_check())
to the inline triggers, and puts back a trigger that is missing."""

import os
import subprocess
import unittest

import stack
from fixtures import new_company, new_match, place_bet, png, signup, uniq

FAKE_MATCH = 9000000000000000001  # no match has this id: a settled_matches row of the test's own

# table: (the test's rows, a column to set to itself)
TABLES = {
    "users": ("id = {u}", "balance"),
    "bets": ("user_id = {u}", "stake"),
    "ledger": ("user_id = {u}", "delta"),
    "idempotency": ("user_id = {u}", "bet_id"),
    "avatars": ("user_id = {u}", "etag"),
    "settled_matches": ("match_id = %d" % FAKE_MATCH, "bets_settled"),
}


class TestFenceOnEveryTable(unittest.TestCase):
    def setUp(self):
        self.s = stack.get()
        self.s.require_dir()

    def run_sql(self, host, sql):
        """(exit status, stderr) of sql on host, in one session."""
        p = subprocess.run(["mariadb", "--defaults-file=" + self.s.host_cnfs()[host], "-N", "-B", "-e", sql],
                           capture_output=True, timeout=60)
        return p.returncode, p.stderr.decode("utf-8", "replace").strip()

    def statements(self, schema, uid):
        for table, (where, col) in TABLES.items():
            w = where.format(u=uid)
            t = "`%s`.%s" % (schema, table)
            yield table, "INSERT", "INSERT INTO %s SELECT * FROM %s WHERE %s LIMIT 1" % (t, t, w)
            yield table, "UPDATE", "UPDATE %s SET %s = %s WHERE %s" % (t, col, col, w)
            yield table, "DELETE", "DELETE FROM %s WHERE %s" % (t, w)

    def test_every_table_refuses_rows_while_fenced(self):
        u = signup(new_company())
        m = new_match()
        place_bet(u, m, "home", 10, key=uniq("fence-key"))
        u.client.put("/v1/me/avatar", raw=png(), content_type="image/png").expect(204)
        shard = stack.shard_of(u.id)
        host = self.s.shard_map()[shard]
        schema = self.s.schema(shard)
        # The fence and the test's own row are not binlogged: a replica never sees them.
        quiet = "SET SESSION sql_log_bin = 0; "
        rc, err = self.run_sql(host, quiet + "SET @bc_move_copy = 1; INSERT INTO `%s`.settled_matches "
                               "(match_id, result, bets_settled) VALUES (%d, 'cancelled', 0)" % (schema, FAKE_MATCH))
        self.assertEqual(rc, 0, err)
        try:
            for table, (where, _) in TABLES.items():
                n = self.s.sql(host, "SELECT COUNT(*) FROM `%s`.%s WHERE %s" % (schema, table, where.format(u=u.id)))
                self.assertGreater(int(n[0][0]), 0, "no row of the test's in %s to write" % table)
            rc, err = self.run_sql(host, quiet + "UPDATE `%s`.shard_state SET fenced = 1 WHERE id = 1" % schema)
            self.assertEqual(rc, 0, err)
            try:
                problems = []
                for table, op, sql in self.statements(schema, u.id):
                    for mark in ("", "SET @bc_fence_held = 1; ", "SET @bc_move_copy = 1; "):
                        rc, err = self.run_sql(host, "START TRANSACTION; %s%s; ROLLBACK" % (mark, sql))
                        refused = rc != 0 and "45000" in err and "bc: shard moved" in err
                        if not mark and not refused:
                            problems.append("fenced, %s on %s was not refused: exit %d %s" % (op, table, rc, err))
                        if mark and refused:
                            problems.append("fenced, with %s%s on %s was refused" % (mark, op, table))
                self.assertEqual(problems, [])
            finally:
                rc, err = self.run_sql(host, quiet + "UPDATE `%s`.shard_state SET fenced = 0 WHERE id = 1" % schema)
                self.assertEqual(rc, 0, "unfence: " + err)
            for table, op, sql in self.statements(schema, u.id):
                rc, err = self.run_sql(host, "START TRANSACTION; %s; ROLLBACK" % sql)
                self.assertFalse("45000" in err, "unfenced, %s on %s was refused: %s" % (op, table, err))
        finally:
            self.run_sql(host, quiet + "SET @bc_move_copy = 1; DELETE FROM `%s`.settled_matches WHERE match_id = %d"
                         % (schema, FAKE_MATCH))
        # The user's bet is still his, and the API still writes to the shard.
        self.assertEqual(u.me()["id"], u.id)
        place_bet(u, m, "away", 5)

    def triggers(self, host, schema):
        """{name: body} of the schema's triggers."""
        rows = self.s.sql(host, "SELECT TRIGGER_NAME, ACTION_STATEMENT FROM information_schema.TRIGGERS "
                                "WHERE TRIGGER_SCHEMA = '%s'" % schema)
        return {name: body for name, body in rows}

    def test_init_brings_old_triggers_to_the_inline_check(self):
        if not os.access(self.s.shardctl, os.X_OK) or not self.s.cluster:
            self.skipTest("no shardctl (%s) or cluster config" % self.s.shardctl)
        shard = max(self.s.shard_map())
        host = self.s.shard_map()[shard]
        schema = self.s.schema(shard)
        before = self.triggers(host, schema)
        self.assertEqual(len(before), 3 * len(TABLES), sorted(before))
        self.assertEqual([n for n, body in before.items() if "fence_check" in body], [])
        # The form before 2026-12-05 on one trigger, and another one missing.
        self.s.sql(host, "DROP TRIGGER `{s}`.users_fence_u; CREATE TRIGGER `{s}`.users_fence_u BEFORE UPDATE ON "
                         "`{s}`.users FOR EACH ROW CALL `{s}`.fence_check(); DROP TRIGGER `{s}`.bets_fence_d"
                         .format(s=schema))
        old = self.triggers(host, schema)
        self.assertIn("fence_check", old["users_fence_u"])
        self.assertNotIn("bets_fence_d", old)
        p = subprocess.run([self.s.shardctl, "-c", self.s.cluster, "init"], capture_output=True, text=True,
                           timeout=300)
        self.assertEqual(p.returncode, 0, "shardctl init: %s" % (p.stdout + p.stderr)[-2000:])
        self.assertEqual(self.triggers(host, schema), before)


if __name__ == "__main__":
    unittest.main()
