"""The whole proof (`./dev test`), run as lanes side by side: every lab test on both releases.

A lab test waits much of its time (a handshake, a reboot, a timeout it proves, a certificate
issued), so one pytest at a time left the two cores idle half the run. Here each lane is one
pytest process with labs of its own (its own names, subnets and bridges: `BACKHAUL_TEST_LAB`),
and the lanes run at once. Which module runs in which lane is the table below; a module that no
lane names runs in the release's last lane, so a new module is never left out
(tests/unit/test_lanes.py checks that every module runs once per release).

    python tests/lanes.py            # every lane; prints each lane's output when it ends
    python tests/lanes.py --list     # the lanes and their modules
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAB_TESTS = ROOT / "tests" / "lab"


@dataclass(frozen=True)
class Lane:
    name: str
    suite: str  # trixie (Debian 13) | bookworm (Debian 12)
    # The lab's name is the run's stem ($BACKHAUL_TEST_LAB, default ci) + this suffix: it names
    # the session lab and is the stem of the modules' own labs (+ cl, 6, ...: cicl, ci6). Two
    # lanes may share one only when at most one of them runs a module on the session lab
    # (conftest locks a lab's name while a run uses it).
    lab_suffix: str
    # test_*.py under tests/lab; () = every module that no other lane of the suite names
    modules: tuple[str, ...] = ()
    fleet: bool = False  # the modules marked `fleet` (labs of their own), not the session lab's
    env: dict[str, str] = field(default_factory=dict)

    def env_for_run(self) -> dict[str, str]:
        return {
            **os.environ,
            "BACKHAUL_TEST_SUITE": self.suite,
            "BACKHAUL_TEST_LAB": os.environ.get("BACKHAUL_TEST_LAB", "ci")[:4] + self.lab_suffix,
            # the fleet's in-place upgrade of a backend 12 -> 13 (minutes of apt): on unless 0
            "BACKHAUL_TEST_UPGRADE": os.environ.get("BACKHAUL_TEST_UPGRADE", "1"),
            **self.env,
        }


# Three lanes of about the same length (measured, one at a time: the Debian 13 modules on the
# session lab 801 s, the fleet modules 826 s before their scan was cut to 13 s, the Debian 12
# pass about 780 s). The fleet modules (labs of their own: a mixed fleet, cloud-image users, a
# laptop, IPv6, ssh.via) run once, on 13, beside the session lab of the same stem.
LANES = (
    Lane("debian13", "trixie", ""),
    # the fleet modules in two lanes: with grants, clients' hub keys and the IPv6 replace-hub
    # drill they grew past the other lanes (about 1550 s in one)
    Lane("fleet", "trixie", "", fleet=True, modules=("test_fleet.py", "test_sudo.py", "test_grants.py")),
    Lane("fleet2", "trixie", "", fleet=True),
    Lane("debian12", "bookworm", "12"),
)


def modules() -> list[str]:
    return sorted(p.name for p in LAB_TESTS.glob("test_*.py"))


def fleet(module: str) -> bool:
    """A module marked `fleet` brings up labs of its own, whatever the suite: it runs on 13 only."""
    return "pytestmark = pytest.mark.fleet" in (LAB_TESTS / module).read_text()


def plan() -> list[tuple[Lane, list[str]]]:
    """Each lane with the modules it runs."""
    out = []
    for lane in LANES:
        same = [other for other in LANES if other.suite == lane.suite]
        # the fleet modules run on Debian 13 only, in the lane that asks for them
        wanted = [m for m in modules() if fleet(m) == lane.fleet and (lane.suite == "trixie" or not fleet(m))]
        if lane.modules:
            mine = [m for m in wanted if m in lane.modules]
        else:
            named = {m for other in same if other is not lane for m in other.modules}
            mine = [m for m in wanted if m not in named]
        out.append((lane, mine))
    return out


def _counts(xml: Path) -> dict[str, int]:
    n = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if xml.exists():
        for suite in ET.parse(xml).getroot().iter("testsuite"):
            for k in n:
                n[k] += int(suite.get(k, 0))
    return n


def _commands(reports: Path, extra: list[str]) -> list[tuple[str, str, list[str], dict]]:
    """(name, what, pytest command, environment) of the unit tests and of every lane."""
    pytest = [sys.executable, "-m", "pytest"]
    out = [("unit", "the unit tests", [*pytest, "-m", "not lab", "-q"], dict(os.environ))]
    for lane, mods in plan():
        cmd = [*pytest, *[str(LAB_TESTS / m) for m in mods], *extra]
        out.append((lane.name, f"Debian {_release(lane.suite)}: {' '.join(mods)}", cmd, lane.env_for_run()))
    return [(n, what, [*cmd, f"--junitxml={reports / n}.xml"], env) for n, what, cmd, env in out]


def run(extra: list[str]) -> int:
    reports = Path(tempfile.mkdtemp(prefix="backhaul-lanes-"))
    started = time.monotonic()
    procs = {}
    for name, what, cmd, env in _commands(reports, extra):
        with open(reports / f"{name}.log", "w") as log:
            procs[name] = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        print(f"==> {name}: {what}", flush=True)
    rc = 0
    pending = dict(procs)
    while pending:
        time.sleep(1)
        for name, proc in list(pending.items()):
            if proc.poll() is None:
                continue
            del pending[name]
            n = _counts(reports / f"{name}.xml")
            rc |= proc.returncode != 0
            print(f"==> {name} ended after {time.monotonic() - started:.0f}s: {_line(n)}", flush=True)
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for name in procs:
        print(f"\n==> {name}: its output\n", flush=True)
        sys.stdout.write((reports / f"{name}.log").read_text(errors="replace"))
        for k, v in _counts(reports / f"{name}.xml").items():
            total[k] += v
    print(f"\n==> every lane ended after {time.monotonic() - started:.0f}s")
    print(f"all: {_line(total)}")
    return rc


def _line(n: dict[str, int]) -> str:
    failed = n["failures"] + n["errors"]
    return f"{n['tests'] - failed - n['skipped']} passed, {failed} failed, {n['skipped']} skipped"


def _release(suite: str) -> str:
    return {"trixie": "13", "bookworm": "12"}[suite]


if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        for lane, mods in plan():
            print(f"{lane.name:5} Debian {_release(lane.suite)}: {' '.join(mods)}")
        sys.exit(0)
    sys.exit(run(sys.argv[1:]))
