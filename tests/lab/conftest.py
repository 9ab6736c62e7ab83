"""The lab for tests: one session-wide lab of real Debian hosts, brought up from bare hosts.

It is named by $BACKHAUL_TEST_LAB (default "ci") so that two test runs, or a test run and a
user's demo lab, never collide. It is torn down at the end unless $BACKHAUL_KEEP_LAB=1.
Starting fresh also clears whatever a killed earlier run left behind (mounts, cgroups, bridge).
"""

from __future__ import annotations

import os

import pytest

from backhaul.lab import lab as labmod
from backhaul.lab.layout import Lab

from .labkit import ROOT, LabHandle


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/lab/" in str(item.fspath):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session")
def lab() -> LabHandle:
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (run ./dev test as root); use -m 'not lab' to skip")
    name = os.environ.get("BACKHAUL_TEST_LAB", "ci")
    backends = int(os.environ.get("BACKHAUL_TEST_BACKENDS", "2"))
    spares = int(os.environ.get("BACKHAUL_TEST_SPARES", "1"))  # for add-backend
    the_lab = Lab.make(name, backends, project_dir=ROOT, spares=spares)
    labmod.up(the_lab, fresh=True)
    yield LabHandle(the_lab)
    if os.environ.get("BACKHAUL_KEEP_LAB") != "1":
        labmod.down(the_lab, purge=True)
