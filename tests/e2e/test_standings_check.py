"""Standings aggregates (issue 10 part 3): after settlements, signups and team
changes across shards, `bcadmin check-standings` finds every shard's
standings_company and standings_team rows equal to a full recomputation from
its users (exit 0), the served team and company standings equal a
recomputation from the rows, and one corrupted aggregate row makes the check
exit 1. The settlements leave standings_points alone (no longer written)."""

import subprocess
import time
import unittest

import stack
from fixtures import (admin, new_company, new_match, new_team, new_users, parallel, place_bet, settle, signup,
                      wait_past_kickoff)


def check_standings():
    """(exit status, output) of bcadmin -c CLUSTER check-standings."""
    s = stack.get()
    p = subprocess.run([s.bcadmin, "-c", s.cluster, "check-standings"], capture_output=True, text=True, timeout=300)
    return p.returncode, (p.stdout + p.stderr).strip()


def set_team(user, team):
    """PATCH /v1/me {team_id}: team is a team dict or None (leave)."""
    j = user.client.patch("/v1/me", {"team_id": team["id"] if team else None}).expect_json(200, msg="team change")
    assert j["team_id"] == (team["id"] if team else None), j


class TestStandingsCheck(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        s = stack.get()
        s.require_dir()
        cls.cos = [new_company() for _ in range(3)]
        cls.teams = {co["id"]: [new_team(co), new_team(co), new_team(co)] for co in cls.cos}
        cls.users = []
        for co in cls.cos:
            t1, t2, _ = cls.teams[co["id"]]
            cls.users += new_users(co, 4, team_id=t1["id"]) + new_users(co, 3, team_id=t2["id"]) + new_users(co, 2)
        m1, m2, m3 = (new_match(kickoff_in=3, odds=(2.10, 3.35, 3.05)) for _ in range(3))
        picks = ("home", "draw", "away")
        bets = []
        for i, u in enumerate(cls.users):
            bets.append((u, m1, picks[i % 3], 10 + 7 * i))
            if i % 2 == 0:
                bets.append((u, m2, picks[(i // 2) % 3], 25 + i))
            if i % 3 == 0:
                bets.append((u, m3, "home", 5 + i))
        parallel(lambda b: place_bet(*b), bets)
        wait_past_kickoff(m1, m2, m3)
        settle(m1, {"home_goals": 2, "away_goals": 1})
        # Team changes of users with points: move, leave, join, the same team
        # again, and a name change only; then signups into a team.
        for co in cls.cos:
            t1, t2, t3 = cls.teams[co["id"]]
            mine = [u for u in cls.users if u.company["id"] == co["id"]]
            set_team(mine[0], t2)
            set_team(mine[1], None)
            set_team(mine[7], t1)
            set_team(mine[4], t3)
            set_team(mine[4], t3)
            set_team(mine[8], t3)
            set_team(mine[8], None)
            mine[2].client.patch("/v1/me", {"display_name": "Renamed"}).expect_json(200)
            cls.users += [signup(co, team_id=t3["id"]), signup(co)]
        settle(m2, {"home_goals": 0, "away_goals": 0})
        # More changes after the second settlement, then the last one, after
        # which the stored standings are recomputed from all of it.
        for co in cls.cos:
            t1, t2, _ = cls.teams[co["id"]]
            mine = [u for u in cls.users if u.company["id"] == co["id"]]
            set_team(mine[5], t1)
            set_team(mine[1], t2)
        before = cls.get_json("/v1/standings/companies")["generation"]
        settle(m3, {"cancelled": True})
        deadline = time.time() + 30
        while cls.get_json("/v1/standings/companies")["generation"] <= before:
            if time.time() > deadline:
                raise AssertionError("standings not recomputed 30 s after the last settlement")
            time.sleep(0.2)
        rows = s.sql_all_shards("SELECT id, company_id, team_id, points, role FROM {s}.users"
                                " WHERE company_id IN (%s)" % ",".join(co["id"] for co in cls.cos))
        cls.rows = [r for r in rows if r[4] != "platform_admin"]

    @classmethod
    def get_json(cls, path, company=None):
        # the platform admin may read every company's standings
        return admin().get(path, query={"company": company}).expect_json(200, msg=path)

    def sums(self, key):
        out = {}
        for r in self.rows:
            k = r[key]
            if k is None:
                continue
            m, p = out.get(k, (0, 0))
            out[k] = (m + 1, p + int(r[3]))
        return out

    def test_check_standings_is_clean(self):
        rc, out = check_standings()
        self.assertEqual(rc, 0, "bcadmin check-standings after settlements and team changes:\n" + out)
        self.assertIn("0 companies, 0 teams, 0 users differ", out)

    def test_points_moved_with_the_users(self):
        self.assertNotEqual({r[3] for r in self.rows}, {"0"}, "the settlements gave points")
        teams = self.sums(2)
        for co in self.cos:
            got = self.get_json("/v1/standings/teams", co["id"])["items"]
            self.assertEqual(len(got), 3)
            for x in got:
                self.assertEqual((x["members"], x["points"]), teams.get(x["team_id"], (0, 0)),
                                 "team %s of company %s against its users' rows" % (x["team_id"], co["id"]))

    def test_companies_equal_their_users(self):
        companies = self.sums(1)
        got = {x["company_id"]: x for x in self.get_json("/v1/standings/companies")["items"]}
        for co in self.cos:
            if co["id"] in got:  # the list is the top 500
                self.assertEqual((got[co["id"]]["members"], got[co["id"]]["points"]), companies[co["id"]])
        self.assertEqual({co["id"]: companies[co["id"]][0] for co in self.cos}, {co["id"]: 11 for co in self.cos})

    def test_corrupted_aggregate_is_found(self):
        s = stack.get()
        team = self.teams[self.cos[0]["id"]][0]["id"]
        found = s.sql_all_shards("SELECT {n}, team_id FROM {s}.standings_team WHERE team_id = %s AND members > 0"
                                 % team)
        self.assertTrue(found, "team %s has aggregate rows" % team)
        shard = int(found[0][0])
        s.sql_shard(shard, "UPDATE {s}.standings_team SET points = points + 3 WHERE team_id = %s" % team)
        try:
            rc, out = check_standings()
            self.assertEqual(rc, 1, "a corrupted standings_team row:\n" + out)
            self.assertIn("DIFF shard %d team %s" % (shard, team), out)
            self.assertIn("1 teams", out)
        finally:
            s.sql_shard(shard, "UPDATE {s}.standings_team SET points = points - 3 WHERE team_id = %s" % team)
        rc, out = check_standings()
        self.assertEqual(rc, 0, "after the row was put back:\n" + out)

    def test_settlements_leave_the_old_points_counts_alone(self):
        # standings_points is no longer written (the cuts come from the
        # users' index): after this class's settlements and signups it is
        # as shard.sql made it, empty, on every shard.
        rows = stack.get().sql_all_shards("SELECT COUNT(*) FROM {s}.standings_points")
        self.assertEqual(sum(int(r[0]) for r in rows), 0)


if __name__ == "__main__":
    unittest.main()


class TestNoMapSaysWhy(unittest.TestCase):
    """A tool whose config does not fit the cluster's shard map says why (the
    map's own error), not "no shard map yet (run shardctl init)", which sent
    operators to initialise a cluster that was."""

    def test_config_of_another_shard_count(self):
        import re
        import tempfile
        s = stack.get()
        with open(s.cluster) as f:
            text = f.read()
        shards = int(re.search(r"shards: (\d+)", text).group(1))
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(re.sub(r"shards: \d+", "shards: %d" % (shards * 2), text, count=1))
        try:
            p = subprocess.run([s.bcadmin, "-c", f.name, "check-ledger"], capture_output=True, text=True,
                               timeout=60)
        finally:
            import os
            os.unlink(f.name)
        out = (p.stdout + p.stderr).strip()
        self.assertNotEqual(p.returncode, 0, out)
        self.assertIn("does not fit the config", out)
        self.assertIn("the config says %d shards" % (shards * 2), out)
        self.assertNotIn("run shardctl init", out)
