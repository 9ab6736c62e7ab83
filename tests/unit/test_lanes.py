"""The lanes of `./dev test` (tests/lanes.py) leave no lab module out and never share a lab."""

from __future__ import annotations

import collections

from tests import lanes


def test_every_lab_module_runs_once_per_release_and_the_fleet_ones_once():
    ran = collections.Counter((lane.suite, m) for lane, mods in lanes.plan() for m in mods)
    assert set(ran.values()) == {1}, ran
    for m in lanes.modules():
        suites = {suite for suite, mod in ran if mod == m}
        assert suites == ({"trixie"} if lanes.fleet(m) else {"trixie", "bookworm"}), m


def test_lanes_that_share_a_lab_name_use_its_session_lab_in_one_lane_at_most():
    users = collections.defaultdict(list)
    for lane, mods in lanes.plan():
        if any(not lanes.fleet(m) for m in mods):  # a module on the session lab
            users[lane.env_for_run()["BACKHAUL_TEST_LAB"]].append(lane.name)
    assert all(len(names) == 1 for names in users.values()), dict(users)


def test_no_lane_is_empty():
    assert all(mods for _, mods in lanes.plan()), lanes.plan()
