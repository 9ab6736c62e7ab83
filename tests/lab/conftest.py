"""The lab for tests: one session-wide lab of real Debian hosts, brought up from bare hosts.

It is named by $BACKHAUL_TEST_LAB (default "ci") so that two test runs, or a test run and a
user's demo lab, never collide, and boots the Debian release $BACKHAUL_TEST_SUITE (trixie =
Debian 13, the default, or bookworm = Debian 12). It is torn down at the end unless
$BACKHAUL_KEEP_LAB=1. Starting fresh also clears whatever a killed earlier run left behind
(mounts, cgroups, bridge, processes).

Modules marked ``fleet`` bring up labs of their own (a mixed fleet, cloud-image users), named
after the session's lab plus a suffix; `./dev test` runs them once, not once per release.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backhaul.lab import cgroups
from backhaul.lab import lab as labmod
from backhaul.lab.layout import DEFAULT_SUITE, Lab

from .labkit import CALLS, ROOT, LabHandle

SUITE = os.environ.get("BACKHAUL_TEST_SUITE", DEFAULT_SUITE)
LOCK_DIR = "/run/lock"  # a lock dies with its holder: a killed run frees it


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/lab/" in str(item.fspath):
            item.add_marker(pytest.mark.lab)


def _name() -> str:
    return os.environ.get("BACKHAUL_TEST_LAB", "ci")


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (run ./dev test as root); use -m 'not lab' to skip")


@contextlib.contextmanager
def _in_use(name: str) -> Iterator[None]:
    """One test session per lab name at a time: lanes side by side (tests/lanes.py) share a
    stem, and a second `fresh_lab` of the same name would tear the first one's hosts down."""
    path = Path(LOCK_DIR, f"backhaul-lab-{name}.lock")
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pytest.fail(f"lab '{name}' is in use by another test run on this machine (lock {path})")
        yield


@contextlib.contextmanager
def fresh_lab(name: str, **kw) -> Iterator[LabHandle]:
    """A lab up from bare hosts (after clearing what a killed run left), down at the end."""
    _need_root()
    the_lab = Lab.make(name, project_dir=ROOT, **kw)
    with _in_use(name):
        _LIVE_LABS.add(the_lab.cgroup_name)
        labmod.up(the_lab, fresh=True)
        try:
            yield LabHandle(the_lab)
        finally:
            _LIVE_LABS.discard(the_lab.cgroup_name)
            _HOSTS_GONE[0] += cgroups.cpu_seconds(the_lab.cgroup_name)
            if os.environ.get("BACKHAUL_KEEP_LAB") != "1":
                labmod.down(the_lab, purge=True)


def own_lab_name(suffix: str) -> str:
    """A module's own lab: the run's stem (tests/lanes.py: the same whichever lane runs the
    module, so its apt cache stays warm; else the session lab's name), cut to fit 6
    characters, + ``suffix``."""
    stem = os.environ.get("BACKHAUL_TEST_STEM") or _name()
    return stem[: 6 - len(suffix)] + suffix


@pytest.fixture(scope="session")
def lab() -> Iterator[LabHandle]:
    backends = int(os.environ.get("BACKHAUL_TEST_BACKENDS", "2"))
    spares = int(os.environ.get("BACKHAUL_TEST_SPARES", "1"))  # for add-backend
    with fresh_lab(_name(), backends=backends, spares=spares, suite=SUITE) as handle:
        handle.trace_suite = SUITE
        yield handle


# --- what each module costs: wall time, the controller's CPU and the lab hosts' ---------------
# The controller: pytest, inv, pyinfra, ssh, nmap (every process the tests start and wait for;
# a lab's launcher too, so part of a lab's CPU comes back here when it is torn down). The
# hosts: the labs' cgroups (every process in every host of the labs this run brought up).
# Printed at the end of the run: the suite's budget is read from it.
_COST: dict[str, list[float]] = {}
_CALLS: dict[str, collections.Counter] = {}
_LIVE_LABS: set[str] = set()
_HOSTS_GONE = [0.0]  # the hosts' CPU of the labs already torn down


def _hosts_cpu() -> float:
    return _HOSTS_GONE[0] + sum(cgroups.cpu_seconds(g) for g in _LIVE_LABS)


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if "tests/lab/" not in str(item.fspath):  # this conftest also sees the unit tests
        yield
        return
    wall, cpu, hosts, calls = time.monotonic(), _cpu(), _hosts_cpu(), collections.Counter(CALLS)
    yield
    name = Path(str(item.fspath)).name
    cost = _COST.setdefault(name, [0.0, 0.0, 0.0])
    cost[0] += time.monotonic() - wall
    cost[1] += _cpu() - cpu
    cost[2] += _hosts_cpu() - hosts
    _CALLS.setdefault(name, collections.Counter()).update(CALLS - calls)


def pytest_terminal_summary(terminalreporter):
    if not _COST:
        return
    terminalreporter.section("lab modules: wall time, CPU of the controller and of the lab hosts, commands")
    for name, (wall, cpu, hosts) in sorted(_COST.items(), key=lambda kv: -kv[1][0]):
        n = _CALLS.get(name, collections.Counter())
        invs = sum(v for k, v in n.items() if k.startswith("inv "))
        terminalreporter.write_line(
            f"{name:<24} {wall:7.1f} s wall {cpu:6.1f} s CPU + hosts {hosts:6.1f} s  inv {invs:4} "
            f"(verify {n['inv verify']:3}, deploy {n['inv deploy']:3})  ssh {n['ssh']:4}"
        )
    wall, cpu, hosts = (sum(c[i] for c in _COST.values()) for i in (0, 1, 2))
    terminalreporter.write_line(f"{'all':<24} {wall:7.1f} s wall {cpu:6.1f} s CPU + hosts {hosts:6.1f} s")
