"""`shardctl switchover` of the global host (db1, whose primary holds the
catalog the switchover flips) under load, with the checks of
test_switchover.py. Last in the suite: a switchover that cannot record its
flip leaves the global host without a primary the catalog agrees on.
"""

import unittest

import fo
from fo import h
from test_switchover import switchover_under_load


class TestSwitchoverGlobalUnderLoad(unittest.TestCase):
    def setUp(self):
        self.addCleanup(fo.recover)

    def test_switchover_global_host_under_load(self):
        switchover_under_load(self, h.global_host())


if __name__ == "__main__":
    unittest.main()
