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
if __package__ in (None, ""):  # run as `python tests/lanes.py`
    sys.path.insert(0, str(ROOT))

from tests import releases  # noqa: E402

LAB_TESTS = ROOT / "tests" / "lab"


@dataclass(frozen=True)
class Lane:
    name: str
    suite: str  # trixie (Debian 13) | bookworm (Debian 12)
    # The lane's session lab is the run's stem ($BACKHAUL_TEST_LAB, default ci) + this suffix;
    # the `fleet` modules' own labs are named after the stem (+ m, gr, cl, 6, ...: cim, ci6),
    # whichever lane runs them, so that each keeps its warm apt cache.
    lab_suffix: str
    # test_*.py under tests/lab: the session lab's modules and fleet modules (labs of their
    # own, Debian 13 lanes only)
    modules: tuple[str, ...] = ()
    rest: bool = False  # and every session module of its release that no other lane names
    env: dict[str, str] = field(default_factory=dict)

    def env_for_run(self, trace_dir: Path | None = None) -> dict[str, str]:
        stem = os.environ.get("BACKHAUL_TEST_LAB", "ci")[:4]
        return {
            **os.environ,
            "BACKHAUL_TEST_SUITE": self.suite,
            "BACKHAUL_TEST_LAB": stem + self.lab_suffix,
            "BACKHAUL_TEST_STEM": stem,
            # the fleet's in-place upgrade of a backend 12 -> 13 (minutes of apt): on unless 0
            "BACKHAUL_TEST_UPGRADE": os.environ.get("BACKHAUL_TEST_UPGRADE", "1"),
            **({releases.TRACE_DIR_ENV: str(trace_dir)} if trace_dir else {}),
            **self.env,
        }


# The session modules that cut backhaul's own flows at chosen points: they test the
# controller's sequencing of commands that the other modules prove on both releases, and run
# on Debian 13 only while the two releases' deploys are shown identical (tests/releases.py,
# checked at the end of every run). Together about 700 s of a lane.
ON_13_ONLY = ("test_day2.py", "test_faults.py", "test_tunnel_safety.py")

# Five lanes of about the same length (wall seconds in the full run of 2026-12-07 night, each
# lane beside the other four): the flows on 13's session lab (ci: about 910) with the sudo
# users' fleet (190); the other session modules on a second 13 lab (cin: about 920); the same
# on 12 (ci12: about 1080); ssh.via (500) with the clients (340) and two hubs (285); the mixed
# fleet and its in-place upgrade (470) with IPv6 (360) and grants (290).
LANES = (
    Lane("flows13", "trixie", "", modules=(*ON_13_ONLY, "test_sudo.py")),
    Lane("debian13", "trixie", "n", rest=True),
    Lane("debian12", "bookworm", "12", rest=True),
    Lane("fleet", "trixie", "f", modules=("test_sshvia.py", "test_clients.py", "test_hubs.py")),
    Lane("fleet2", "trixie", "f2", modules=("test_fleet.py", "test_ipv6.py", "test_grants.py")),
)


def modules() -> list[str]:
    return sorted(p.name for p in LAB_TESTS.glob("test_*.py"))


def fleet(module: str) -> bool:
    """A module marked `fleet` brings up labs of its own, whatever the suite: it runs on 13 only."""
    return "pytestmark = pytest.mark.fleet" in (LAB_TESTS / module).read_text()


def releases_of(module: str) -> set[str]:
    """The releases a module runs on."""
    return {"trixie"} if fleet(module) or module in ON_13_ONLY else {"trixie", "bookworm"}


def plan() -> list[tuple[Lane, list[str]]]:
    """Each lane with the modules it runs: those it names, and the rest of its release's
    session modules for the lane that takes them."""
    out = []
    for lane in LANES:
        wanted = [m for m in modules() if lane.suite in releases_of(m)]
        named = {m for other in LANES if other.suite == lane.suite for m in other.modules}
        mine = [m for m in wanted if m in lane.modules]
        if lane.rest:
            mine += [m for m in wanted if not fleet(m) and m not in named]
        out.append((lane, sorted(mine)))
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
        out.append(
            (lane.name, f"Debian {_release(lane.suite)}: {' '.join(mods)}", cmd, lane.env_for_run(reports))
        )
    return [(n, what, [*cmd, f"--junitxml={reports / n}.xml"], env) for n, what, cmd, env in out]


def machine_cpu() -> float:
    """Seconds of CPU this machine spent (user + system, every process) since it booted: the
    run's difference is its whole cost, lab hosts included, on a machine that runs nothing else."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system = (int(v) for v in fields[:3])
    return (user + nice + system) / os.sysconf("SC_CLK_TCK")


def run(extra: list[str]) -> int:
    # the lanes' logs and reports: printed at the end, then gone (no run leaves files behind)
    with tempfile.TemporaryDirectory(prefix="backhaul-lanes-") as reports:
        return _run(Path(reports), extra)


def _run(reports: Path, extra: list[str]) -> int:
    started, cpu0 = time.monotonic(), machine_cpu()
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
    held, line = releases.check(reports)
    print(f"\n==> {line}")
    rc |= not held and not extra  # a run of chosen tests (pytest arguments) may skip a deploy
    wall, cpu = time.monotonic() - started, machine_cpu() - cpu0
    cores = os.cpu_count() or 1
    print(
        f"==> every lane ended after {wall:.0f}s; this machine's CPU meanwhile {cpu / 60:.1f} min "
        f"(user + system, {cpu / (wall * cores):.0%} of {cores} cores; anything else running counts too)"
    )
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
