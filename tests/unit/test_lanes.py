"""The lanes of `./dev test` (tests/lanes.py) leave no lab module out and never share a lab."""

from __future__ import annotations

import collections

from tests import lanes


def test_every_lab_module_runs_once_per_release_and_the_fleet_and_flow_ones_once():
    ran = collections.Counter((lane.suite, m) for lane, mods in lanes.plan() for m in mods)
    assert set(ran.values()) == {1}, ran
    for m in lanes.modules():
        suites = {suite for suite, mod in ran if mod == m}
        one = lanes.fleet(m) or m in lanes.ON_13_ONLY
        assert suites == ({"trixie"} if one else {"trixie", "bookworm"}), m


def test_both_releases_run_the_module_that_deploys_from_bare_hosts():
    """The lanes compare the two releases' first deploys (tests/releases.py): both must run
    the session lab's modules in the same order, so that the same module deploys first."""
    session = {
        lane.suite: [m for m in mods if not lanes.fleet(m)] for lane, mods in lanes.plan() if lane.rest
    }
    assert session["trixie"] == session["bookworm"]
    assert "test_network.py" in session["bookworm"]


def test_fleet_modules_run_on_debian_13_lanes_only():
    for lane, mods in lanes.plan():
        if lane.suite != "trixie":
            assert not [m for m in mods if lanes.fleet(m)], lane.name


def test_lanes_that_share_a_lab_name_use_its_session_lab_in_one_lane_at_most():
    users = collections.defaultdict(list)
    for lane, mods in lanes.plan():
        if any(not lanes.fleet(m) for m in mods):  # a module on the session lab
            users[lane.env_for_run()["BACKHAUL_TEST_LAB"]].append(lane.name)
    assert all(len(names) == 1 for names in users.values()), dict(users)


def test_no_lane_is_empty():
    assert all(mods for _, mods in lanes.plan()), lanes.plan()
