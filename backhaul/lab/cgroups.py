"""Per-host cgroups on a hybrid cgroup v1 machine with no systemd as PID 1.

nspawn with --keep-unit expects to already sit in a cgroup of its own; Docker inside a host needs
one in every v1 controller (cpuset with cpus/mems filled in). Hosts of one lab are grouped under
one parent so that teardown can find and remove them depth-first.
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _own_paths() -> dict[str, str]:
    """Controller mount dir name -> this process's cgroup path in it (from /proc/self/cgroup)."""
    out: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if ctrls == "":
            out["unified"] = path
        else:
            for c in ctrls.split(","):
                out["systemd" if c == "name=systemd" else c] = path
    return out


def hierarchies() -> list[tuple[Path, str]]:
    """(mount dir, our path inside it) for each mounted hierarchy we can nest under."""
    own = _own_paths()
    found = []
    for d in sorted(CGROUP_ROOT.iterdir()):
        if d.is_symlink() or not d.is_dir() or not (d / "cgroup.procs").exists():
            continue
        found.append((d, own.get(d.name, "/")))
    return found


def host_cgroup_dirs(group: str, machine: str) -> list[Path]:
    return [mount / parent.lstrip("/") / group / machine for mount, parent in hierarchies()]


def group_dirs(group: str) -> list[Path]:
    return [mount / parent.lstrip("/") / group for mount, parent in hierarchies()]


def cpu_seconds(group: str) -> float:
    """CPU the group's processes have used (the cpuacct hierarchy's count; 0 when it is gone)."""
    for d in group_dirs(group):
        usage = d / "cpuacct.usage"
        if usage.exists():
            return int(usage.read_text()) / 1e9
    return 0.0


def create(group: str, machine: str) -> list[Path]:
    dirs = host_cgroup_dirs(group, machine)
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        if d.parts[len(CGROUP_ROOT.parts)] == "cpuset":
            # cpuset children start empty and refuse tasks until cpus/mems are copied down
            for level in (d.parent, d):
                for f in ("cpuset.cpus", "cpuset.mems"):
                    if not (level / f).read_text().strip():
                        (level / f).write_text((level.parent / f).read_text())
    return dirs


def join(dirs: list[Path], pid: int | None = None) -> None:
    pid = pid or os.getpid()
    for d in dirs:
        (d / "cgroup.procs").write_text(f"{pid}\n")


def pids_in(dirs: list[Path]) -> set[int]:
    pids: set[int] = set()
    for d in dirs:
        for procs in d.rglob("cgroup.procs") if d.exists() else []:
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except OSError:
                pass
    return pids


def kill_all(dirs: list[Path], timeout: float = 10.0) -> None:
    """SIGKILL every process in the cgroups until they are empty (a host whose launcher died)."""
    import signal
    import time

    deadline = time.monotonic() + timeout
    while (pids := pids_in(dirs)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def remove(dirs: list[Path]) -> list[Path]:
    """Remove cgroup dirs depth-first (nspawn makes payload/ and supervisor/ inside).

    Returns the dirs that could not be removed (still holding processes)."""
    left = []
    for d in dirs:
        if not d.exists():
            continue
        for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            try:
                sub.rmdir()
            except OSError:
                left.append(sub)
        try:
            d.rmdir()
        except OSError:
            left.append(d)
    return left
