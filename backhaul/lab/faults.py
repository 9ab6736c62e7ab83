"""Faults to cut a flow with, one unit each, callable from tests and from `inv lab.chaos`.

Every fault here reaches the lab hosts through their console (nsenter into the host's
namespaces) or acts on this machine's own processes: none sends a packet anywhere, so none
needs the lab guard, and each works while SSH is what it broke.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from backhaul.errors import LabError
from backhaul.lab.hosts import HostRunner
from backhaul.lab.layout import Lab

# Every SSH session's processes, of any user, but not the listener: "sshd: root@notty" up to
# OpenSSH 9 (Debian 12), "sshd-session: root@notty" from OpenSSH 10 on (Debian 13).
SSH_SESSIONS = "'^sshd(-session)?: [a-z]'"


def _runner(lab: Lab, name: str) -> HostRunner:
    host = next((h for h in lab.hosts if h.name == name), None)
    if host is None:
        raise LabError(f"lab {lab.name} has no host {name}")
    return HostRunner(lab, host, Path("/"), "")


def console(lab: Lab, name: str, command: str) -> subprocess.CompletedProcess:
    """``command`` in a shell on the host, without SSH."""
    return _runner(lab, name).console(["sh", "-c", command])


def boot_id(lab: Lab, name: str) -> str | None:
    """The id of the host's current boot (None while it is between boots): systemd-nspawn
    gives each boot of a container its own, although the hosts share this machine's kernel."""
    try:
        proc = console(lab, name, "cat /proc/sys/kernel/random/boot_id")
    except (LabError, subprocess.SubprocessError, OSError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def reboot(lab: Lab, name: str, timeout: float = 120.0) -> float:
    """Reboot the host and wait until it is up again (systemd done booting, sshd listening);
    returns the seconds it took. The lab's launcher restarts a host that rebooted itself."""
    t0 = time.monotonic()
    before = boot_id(lab, name)
    console(lab, name, "systemctl reboot")
    wait_booted(lab, name, before, timeout)
    return time.monotonic() - t0


def wait_booted(lab: Lab, name: str, before: str | None, timeout: float = 120.0) -> None:
    """Until the host runs a boot other than ``before`` (its boot_id then), done booting,
    with sshd active."""
    deadline = time.monotonic() + timeout
    while True:
        now = boot_id(lab, name)
        if now and now != before:
            done = console(
                lab, name, "systemctl is-system-running --wait >/dev/null; systemctl is-active ssh"
            )
            if done.returncode == 0:
                return
        if time.monotonic() > deadline:
            raise LabError(f"{name} did not come back from a reboot within {timeout:.0f} s")
        time.sleep(0.3)


def stop_ssh(lab: Lab, name: str) -> None:
    """sshd stopped (no new session gets in) and every session it had cut."""
    console(lab, name, "systemctl stop ssh; systemctl stop ssh.socket 2>/dev/null; true")
    cut_ssh(lab, name)


def start_ssh(lab: Lab, name: str) -> None:
    console(lab, name, "systemctl start ssh")


def cut_ssh(lab: Lab, name: str) -> None:
    """Every SSH session to the host dies (sshd itself keeps listening)."""
    console(lab, name, f"pkill -f {SSH_SESSIONS} || true")


def children(pid: int) -> list[int]:
    """The process ids of ``pid``'s children (e.g. the pyinfra an `inv` runs)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """The process stopped (SIGSTOP) for the length of the block, then let go: a controller
    held at a chosen point while a fault happens under it."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
