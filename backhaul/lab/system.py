"""Thin, checked wrappers over the outer machine's tools (ip, mount, kill): one place for each."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from backhaul.errors import LabError


def run(cmd: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)} failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return proc


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def is_mounted(path: Path) -> bool:
    target = str(path.resolve()) if path.exists() else str(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == target for line in f)


def mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as f:
        found = [line.split()[1] for line in f if line.split()[1].startswith(prefix)]
    return sorted(found, key=len, reverse=True)  # deepest first


def umount(path: str) -> None:
    if run(["umount", path], check=False).returncode != 0:
        run(["umount", "-l", path], check=False)  # busy (a dying process): detach lazily


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is dead for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def terminate(pids: list[int], timeout: float = 8.0) -> None:
    """TERM, wait up to ``timeout`` seconds, then KILL what is left."""
    live = [p for p in pids if pid_alive(p)]
    for p in live:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while live and time.monotonic() < deadline:
        for p in live:
            try:
                os.waitpid(p, os.WNOHANG)
            except ChildProcessError:
                pass
        live = [p for p in live if pid_alive(p)]
        time.sleep(0.05)
    for p in live:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def spawn_daemon(cmd: list[str], log: Path, pidfile: Path, env: dict | None = None) -> int:
    """Start ``cmd`` detached (own session, no stdin) and record its pid."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    pidfile.write_text(f"{proc.pid}\n")
    return proc.pid
