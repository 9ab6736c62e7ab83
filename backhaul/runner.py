"""Run the pinned pyinfra CLI for a network file, stream its output, and say what it did."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from backhaul import lock, pending, readlog
from backhaul.errors import DeployError

ROOT = Path(__file__).resolve().parent.parent
SITE = "deploys/site.py"
# how a flow starts the pinned pyinfra CLI
PYINFRA = [sys.executable, "-m", "backhaul.pyinfracli"]  # pyinfra, started sooner (see there)


@dataclass
class Run:
    """What one pyinfra run did: its exit code, the work it left pending, the hosts that failed."""

    rc: int
    pending: list[str]
    failed: dict[str, str]  # host -> first error line pyinfra printed for it
    # a deploy file refused while the run was prepared (e.g. a sudo that asks for a password):
    # pyinfra stops before any operation, so no host was changed
    refused: str | None = None
    # pyinfra's totals (its "Grand total" row): operations run, of them changed, failed
    ops: int = 0
    changed: int = 0
    errors: int = 0
    # a dry run: host -> the operations that would change something
    changes: dict[str, list[str]] = field(default_factory=dict)

    def summary(self, dry: bool = False) -> str:
        """What the run (or the runs of a flow, merged) did, or would do: one statement."""
        return plan_summary(self.changes) if dry else summary(self.ops, self.changed, self.errors)

    def check(self, what: str, advice: str) -> None:
        """Raise a DeployError naming the failed hosts (and what is pending), if any."""
        if self.rc == 0 and not self.pending:
            return
        if self.rc and self.refused:
            raise DeployError(f"{what} was refused before any change: {self.refused}")
        lines = [f"  {h}: {why}" for h, why in sorted(self.failed.items())]
        lines += [f"  {p}" for p in self.pending if p.split(":", 1)[0] not in self.failed]
        hosts = ", ".join(sorted(self.failed)) or "some hosts"
        head = f"{what} failed on {hosts} (pyinfra exit {self.rc})" if self.rc else f"{what} is not complete"
        raise DeployError("\n".join([head + ":", *lines, advice]))

    def advice(self, targets: list[str], limited: bool, dry: bool = False) -> str:
        """What is true of the run's hosts after a failure, and what to do (for ``check``)."""
        pending = {p.split(":", 1)[0] for p in self.pending}
        done = [t for t in targets if t not in self.failed and t not in pending]
        what, again = ("the plan", "inv plan") if dry else ("the deploy", "inv deploy")
        if not self.failed and not pending:
            state = f"pyinfra named no host; its output above says what failed in {what}"
        elif not done:
            state = f"No host completed {what}"
            if limited:
                state += " (the hosts outside --limit were not part of this run)"
        else:
            state = f"{', '.join(sorted(done))} completed {what}"
            if limited:
                state += " (the hosts outside --limit were not part of this run)"
        if dry:
            state += "; nothing was changed"
        return f"{state}. Fix the cause (or wait for the hosts to come back) and run {again} again."


# "    [backend-2] Could not connect (...)" / "    [proxy] Error: ..." / "[proxy] ERROR: ..." /
# "    [backend-1] Command socket/SSH error: LostConnection('the SSH connection to ...',)"
_FAILED = re.compile(
    r"^\s*\[([^\]]+)\]\s+(Could not connect.*|SSH error.*|Command socket/SSH error.*|Error.*|ERROR.*)$"
)
# a connection that died mid-run, an upload that stopped short (backhaul/connection.py): the
# error's own message says it all
_LOST = re.compile(r"(?:LostConnection|DiskFull)\(['\"](.*)['\"],?\)")
# what a command of ours says on stderr when it fails ("backhaul: could not write ..."): the
# cause, where pyinfra's own line for the host is "Error: executed 0 commands"
_OWN = re.compile(r"^\s*\[([^\]]+)\]\s+backhaul: (.*)$")
# what pyinfra writes into its working directory (here: the project) on an internal error
DEBUG_LOG = "pyinfra-debug.log"


def _reason(text: str) -> str:
    m = _LOST.search(text)
    return m.group(1) if m else text


def failures(lines: list[str]) -> dict[str, str]:
    """Each failed host's first error line pyinfra printed, or what a command of ours said of
    its cause, if one did."""
    failed: dict[str, str] = {}
    own: dict[str, str] = {}
    for line in lines:
        line = line.rstrip()
        if m := _FAILED.match(line):
            failed.setdefault(m.group(1), _reason(m.group(2)))
        elif m := _OWN.match(line):
            own.setdefault(m.group(1), m.group(2))
    return {host: own.get(host, why) for host, why in failed.items()}


def _move_debug_log(since: float) -> None:
    """pyinfra's traceback file, written into the project folder by this run: moved to the
    temp folder (the user's folder keeps no trace of a run) and named."""
    log = ROOT / DEBUG_LOG
    try:
        if log.stat().st_mtime < since:
            return  # not this run's
    except FileNotFoundError:
        return
    fd, kept = tempfile.mkstemp(prefix="backhaul-pyinfra-debug-", suffix=".log")
    os.close(fd)
    os.replace(log, kept)
    print(f"backhaul: pyinfra's full traceback is in {kept}", flush=True)


def run_pyinfra(
    network: str | Path,
    deploy_file: str = SITE,
    limit: list[str] | None = None,
    dry: bool = False,
    extra_env: dict | None = None,
    summarize: bool = True,
    reads: BinaryIO | None = None,
) -> Run:
    """Run the pinned pyinfra CLI (the stable interface) and stream its output; with
    ``summarize``, say what it did (a flow of several runs says it once, for them all)."""
    # what the run could not finish comes back through a file without a name (pending.py)
    sink = tempfile.TemporaryFile(prefix="backhaul-pending-")
    pending_env, pending_fds = pending.child_env(sink)
    # the child runs under this process's lock of the network (it inherits the locked file)
    lock_env, lock_fds = lock.child_env(network)
    # what the run asks each host, when the caller keeps it (backhaul/readlog.py)
    reads_env, reads_fds = readlog.child_env(reads) if reads else ({}, [])
    env = dict(
        os.environ,
        BACKHAUL_NETWORK=str(Path(network).resolve()),
        **pending_env,
        **lock_env,
        **reads_env,
        **(extra_env or {}),
    )
    # -y skips change detection, which is exactly what a dry run is for
    cmd = [*PYINFRA, *([] if dry else ["-y"]), "inventory.py", deploy_file]
    for name in limit or []:
        cmd += ["--limit", name]  # one flag per host: a comma list is one (unmatched) pattern
    if dry:
        cmd += ["--dry", "--diff"]
    started = time.time()
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            pass_fds=[*lock_fds, *pending_fds, *reads_fds],
        )
        lines = []
        for line in proc.stdout:  # stream pyinfra's progress as it comes
            sys.stdout.write(line)
            lines.append(line)
        rc = proc.wait()
        sys.stdout.flush()
        _move_debug_log(started)
        failed = failures(lines)
        refused = next((m.group(1) for m in map(_REFUSED.match, lines) if m), None)
        ops, changed, errors = totals(lines)
        run = Run(rc, pending.read(sink), failed, refused, ops, changed, errors, planned(lines))
        if rc == 0 and summarize:
            print(run.summary(dry), flush=True)
        return run
    finally:
        sink.close()


# "--> pyinfra error in deploys/site.py line 20: <the DeployError's message>"
_REFUSED = re.compile(r"^--> pyinfra error in \S+ line \d+: (.*)$")


def totals(lines: list[str]) -> tuple[int, int, int]:
    """(operations, changed, failed) from pyinfra's "Grand total  ops  success  error  no-change" row."""
    row = next((ln for ln in reversed(lines) if ln.strip().startswith("Grand total")), "")
    nums = [int(c) if c.isdigit() else 0 for c in row.split()[2:]]
    ops, changed, errors = (nums + [0, 0, 0])[:3]
    return ops, changed, errors


def summary(ops: int, changed: int, errors: int) -> str:
    if changed == 0 and errors == 0:
        return f"backhaul: no changes ({ops} operations checked, all hosts as described)"
    return f"backhaul: {changed} of {ops} operations changed something, {errors} failed"


def planned(lines: list[str]) -> dict[str, list[str]]:
    """Per host, the operations a --dry run would change (pyinfra's "Detected changes" table)."""
    per_host: dict[str, list[str]] = {}
    in_table = False
    for line in lines:
        if line.startswith("--> Detected changes"):
            in_table = True
            continue
        if in_table and not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        if not in_table or len(cells) < 2 or cells[0] == "Operation":
            continue
        op = cells[0].split(" | ")[-1]
        for cell in cells[1:]:
            m = re.match(r"\d+ \((.*)\)", cell)
            for name in m.group(1).split(", ") if m else []:
                per_host.setdefault(name.strip(), []).append(op)
    return per_host


def plan_summary(per_host: dict[str, list[str]]) -> str:
    """Per host, what `inv deploy` would change."""
    if not per_host:
        return "backhaul: plan: no changes: every host is as the network file describes"
    out = [f"backhaul: plan: changes on {len(per_host)} host(s) (nothing was changed):"]
    out += [f"  {name}: {'; '.join(ops)}" for name, ops in sorted(per_host.items())]
    return "\n".join(out)
