"""Rows land on the host the shard map says: a user's shard is in bits 10..22 of
his id; bc_global.shard_map names the host; the row is in bc_NNNN.users on
exactly that host and in no other schema on any host. The same for his bets
and ledger rows."""

import re
import unittest

import stack
from fixtures import new_company, new_match, new_users, parallel, place_bet

N_USERS = 24


class TestPlacement(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        s = stack.get()
        s.require_dir()
        cls.co = new_company()
        cls.users = new_users(cls.co, N_USERS)
        cls.m = new_match()
        cls.bets = parallel(lambda u: place_bet(u, cls.m, "home", 3), cls.users)

    def locate(self, table, ids):
        """{id: [(host, schema)]} for every shard schema on every host of the map."""
        s = stack.get()
        found = {i: [] for i in ids}
        idlist = ",".join(str(int(i)) for i in ids)
        pat = re.compile(r"^%s_[0-9]{4,}$" % re.escape(s.prefix))
        for host in sorted(s.host_cnfs()):
            schemas = [r[0] for r in s.sql(host, "SELECT schema_name FROM information_schema.schemata")
                       if pat.match(r[0])]
            if not schemas:
                continue
            q = " UNION ALL ".join("(SELECT '%s', id FROM `%s`.%s WHERE id IN (%s))" % (sc, sc, table, idlist)
                                   for sc in schemas)
            for sc, ident in s.sql(host, q):
                found[ident].append((host, sc))
        return found

    def test_users_on_their_shard_host_only(self):
        s = stack.get()
        m = s.shard_map()
        self.assertEqual(sorted(m), list(range(len(m))), "the shard map covers 0..N-1")
        found = self.locate("users", [u.id for u in self.users])
        wrong = []
        for u in self.users:
            shard = stack.shard_of(u.id)
            self.assertLess(shard, len(m), "shard %d of id %s is outside the map" % (shard, u.id))
            want = [(m[shard], s.schema(shard))]
            if found[u.id] != want:
                wrong.append("user %s (shard %d): found in %s, map says %s" % (u.id, shard, found[u.id], want))
        if wrong:
            self.fail("\n".join(wrong))
        # the e-mail, too, lives only there
        for u in self.users[:4]:
            rows = s.sql_shard(stack.shard_of(u.id), "SELECT email FROM {s}.users WHERE id = %d" % int(u.id))
            self.assertEqual(rows, [[u.email]])

    def test_users_spread_over_hosts(self):
        m = stack.get().shard_map()
        hosts = {m[stack.shard_of(u.id)] for u in self.users}
        if len(set(m.values())) > 1:
            self.assertGreater(len(hosts), 1, "%d users all on one host: ids do not carry the e-mail's shard?"
                               % len(self.users))

    def test_bets_in_their_users_shard(self):
        s = stack.get()
        m = s.shard_map()
        found = self.locate("bets", [b["id"] for b in self.bets])
        wrong = []
        for u, b in zip(self.users, self.bets):
            shard = stack.shard_of(u.id)
            want = [(m[shard], s.schema(shard))]
            if stack.shard_of(b["id"]) != shard or found[b["id"]] != want:
                wrong.append("bet %s of user %s: id shard %d, found in %s, want %s"
                             % (b["id"], u.id, stack.shard_of(b["id"]), found[b["id"]], want))
        if wrong:
            self.fail("\n".join(wrong))

    def test_ledger_rows_in_users_shard(self):
        s = stack.get()
        for u in self.users[:6]:
            rows = s.sql_all_shards("SELECT '{n}', COUNT(*) FROM {s}.ledger WHERE user_id = %d" % int(u.id))
            where = {int(n): int(c) for n, c in rows if int(c) > 0}
            self.assertEqual(set(where), {stack.shard_of(u.id)}, "ledger rows of user %s by shard: %s" % (u.id, where))


if __name__ == "__main__":
    unittest.main()
