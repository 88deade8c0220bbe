"""SIGKILL of the global host's primary (db1's, which holds the catalog)
under bet load: the checks of test_kill.py (bets back within 5 s, every
acknowledged bet on the new primary once, ledger, roles, the old primary
back as a read-only replica that wrote nothing of its own), and each API
server, asked directly, writes the global schema (creates a match) within 5 s
of the kill: the API servers find the new global primary by themselves.
"""

import unittest

import fo
from fo import h
from test_kill import kill_primary_under_load


class TestKillGlobalPrimary(unittest.TestCase):
    def setUp(self):
        self.addCleanup(fo.recover)

    def test_kill_primary_of_the_global_host(self):
        kill_primary_under_load(self, h.global_host(), global_check=True)


if __name__ == "__main__":
    unittest.main()
