"""Faults to cut a flow with, one unit each, callable from tests and from `inv lab.chaos`.

Every fault here reaches the lab hosts through their console (nsenter into the host's
namespaces) or acts on this machine's own processes: none sends a packet anywhere, so none
needs the lab guard, and each works while SSH is what it broke.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from backhaul.errors import LabError
from backhaul.lab.hosts import HostRunner, pythonpath_env
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


# --- a host frozen --------------------------------------------------------------------------
def _freeze_file(lab: Lab, name: str) -> tuple[Path, str, str]:
    """The host's freezer switch: cgroup v2's ``cgroup.freeze`` (in the unified hierarchy of a
    hybrid machine), else v1's ``freezer.state``; with the values that freeze and thaw."""
    dirs = _runner(lab, name).cgroup_dirs()
    for d in dirs:
        if (d / "cgroup.freeze").exists():
            return d / "cgroup.freeze", "1", "0"
    for d in dirs:
        if (d / "freezer.state").exists():
            return d / "freezer.state", "FROZEN", "THAWED"
    raise LabError(f"{name}: no cgroup freezer found under {[str(d) for d in dirs]}")


def is_frozen(lab: Lab, name: str) -> bool:
    switch, on, _ = _freeze_file(lab, name)
    if switch.name == "cgroup.freeze":  # cgroup.freeze is the wish, cgroup.events the fact
        return "frozen 1" in (switch.parent / "cgroup.events").read_text()
    return switch.read_text().strip() == on


def freeze(lab: Lab, name: str, timeout: float = 10.0) -> None:
    """Every process of the host stopped where it is (systemd, sshd, wireguard-go, nginx...), as
    a hung VM: its kernel side (addresses, sockets' backlogs) still answers."""
    switch, on, _ = _freeze_file(lab, name)
    switch.write_text(on)
    deadline = time.monotonic() + timeout
    while not is_frozen(lab, name):
        if time.monotonic() > deadline:
            thaw(lab, name)
            raise LabError(f"{name} did not freeze within {timeout:.0f} s")
        time.sleep(0.05)


def thaw(lab: Lab, name: str) -> None:
    """The host's processes run on (a no-op on a host that is not frozen)."""
    switch, _, off = _freeze_file(lab, name)
    switch.write_text(off)


@contextlib.contextmanager
def host_frozen(lab: Lab, name: str, seconds: float | None = None) -> Iterator[None]:
    """The host frozen for the block, or for ``seconds`` if that ends first (a timer thaws it
    while the block goes on: a flow that waits on the host must get it back to end)."""
    freeze(lab, name)
    timer = threading.Timer(seconds, thaw, (lab, name)) if seconds is not None else None
    if timer:
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer:
            timer.cancel()
        thaw(lab, name)


# --- a host's link: packets lost, packets delayed ---------------------------------------------
# Rules of ours go to the host's mangle table (ufw rewrites filter, never mangle), tagged so
# that undoing them removes exactly them. The host's own iptables sets them, in its namespace.
TAG = "backhaul-chaos"
LINK = "host0"  # nspawn's name for the host's end of its veth: its one link to the "internet"
DELAY_QUEUE = 2626


def _iptables(lab: Lab, name: str, action: str, rules: list[str]) -> None:
    script = "; ".join(f"iptables -w -t mangle {action} {r} -m comment --comment {TAG}" for r in rules)
    proc = console(lab, name, script)
    if proc.returncode != 0 and action != "-D":
        raise LabError(f"{name}: iptables refused a fault's rule: {proc.stderr.strip()[-300:]}")


def chaos_rules(lab: Lab, name: str) -> list[str]:
    """The fault rules now on the host (``iptables -S`` lines): none once a fault is undone."""
    out = console(lab, name, "iptables -w -t mangle -S").stdout
    return [line for line in out.splitlines() if TAG in line]


@contextlib.contextmanager
def link_lossy(lab: Lab, name: str, loss: float = 0.2) -> Iterator[None]:
    """Each packet in or out of the host's link dropped with probability ``loss`` (netem's
    loss, which this kernel lacks, from iptables' statistic match), for the block."""
    p = f"{loss:.4f}"
    rules = [
        f"PREROUTING -i {LINK} -m statistic --mode random --probability {p} -j DROP",
        f"POSTROUTING -o {LINK} -m statistic --mode random --probability {p} -j DROP",
    ]
    _iptables(lab, name, "-I", rules)
    try:
        yield
    finally:
        _iptables(lab, name, "-D", rules)


@contextlib.contextmanager
def link_delayed(lab: Lab, name: str, ms: float = 150.0) -> Iterator[None]:
    """Every packet leaving the host's link held ``ms`` (netem's delay, which this kernel
    lacks: see backhaul/lab/delayer.py), for the block. The rule bypasses the queue whenever
    the delayer is not there, so a delayer that dies lets packets through, never drops them."""
    pid = _runner(lab, name).init_pid()
    if not pid:
        raise LabError(f"{name} is not running")
    delayer = subprocess.Popen(
        [
            "nsenter",
            "-t",
            str(pid),
            "-n",
            sys.executable,
            "-m",
            "backhaul.lab.delayer",
            str(DELAY_QUEUE),
            str(ms),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=pythonpath_env(),
    )
    rules = [f"POSTROUTING -o {LINK} -j NFQUEUE --queue-num {DELAY_QUEUE} --queue-bypass"]
    try:
        if delayer.stdout.readline().strip() != "ready":
            raise LabError(f"{name}: the delayer did not start: {delayer.stderr.read().strip()[-300:]}")
        _iptables(lab, name, "-I", rules)
        yield
    finally:
        _iptables(lab, name, "-D", rules)
        delayer.terminate()  # lets what it holds go
        try:
            delayer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            delayer.kill()
            delayer.wait()


# --- a host's disk full -----------------------------------------------------------------------
# The hosts' disks are overlay upper dirs on this machine's own disk, which must not fill. So a
# full disk is played where a flow writes: each directory gets a tmpfs over it holding a copy of
# its files, sized to exactly what they use, so that any new data written there fails with
# ENOSPC (as on a full disk, creating an empty file or removing one still works). When the
# fault ends, what the flow changed under the tmpfs is carried down to the real directory
# (a freed disk keeps what was written while it was full) and the tmpfs goes.
FULL_DIRS = ("/etc",)  # the conf and keys, ufw's and nginx's files; pyinfra uploads to /tmp, then mv
_FILL = """set -e
d={d}; m=$(mktemp -d /mnt/backhaul-full.XXXXXX)
trap 'umount "$m" 2>/dev/null; rmdir "$m"' EXIT
mount -t tmpfs -o size=256m tmpfs "$m"
cp -a "$d"/. "$m"/
used=$(df --output=used -B4096 "$m" | tail -n 1)
mount -o remount,size=$((used * 4096)) "$m"
mount --bind "$m" "$d"
"""


def is_full(lab: Lab, name: str, directory: str) -> bool:
    """A block written in ``directory`` fails for want of space (and nothing is left of it)."""
    probe = f"{directory}/.backhaul-chaos-probe"
    out = console(lab, name, f"{{ head -c 4096 /dev/zero > {probe}; }} 2>&1; rm -f {probe}").stdout
    return "No space left" in out


def _carry_down(src: Path, dst: Path) -> None:
    """Make ``dst`` hold what ``src`` holds: files written, changed or removed under ``src``
    since it was copied from ``dst`` (a copy kept modes, owners and times, so unchanged files
    compare equal and stay untouched). Symlinks are copied as links, never followed."""
    for root, dirs, files in os.walk(src):
        for n in dirs + files:
            s, d = Path(root, n), dst / Path(root, n).relative_to(src)
            st = s.lstat()
            try:
                dt = d.lstat()
            except FileNotFoundError:
                dt = None
            same_kind = dt is not None and stat.S_IFMT(st.st_mode) == stat.S_IFMT(dt.st_mode)
            if same_kind and stat.S_ISDIR(st.st_mode):
                pass
            elif same_kind and stat.S_ISLNK(st.st_mode) and os.readlink(s) == os.readlink(d):
                continue
            elif same_kind and (st.st_size, st.st_mtime_ns) == (dt.st_size, dt.st_mtime_ns):
                pass
            else:
                if dt is not None:
                    shutil.rmtree(d) if stat.S_ISDIR(dt.st_mode) else d.unlink()
                if stat.S_ISDIR(st.st_mode):
                    d.mkdir()
                else:
                    shutil.copy2(s, d, follow_symlinks=False)
            os.chown(d, st.st_uid, st.st_gid, follow_symlinks=False)
            if not stat.S_ISLNK(st.st_mode):
                os.chmod(d, stat.S_IMODE(st.st_mode))
    for root, dirs, files in os.walk(dst):
        for n in dirs + files:
            d = Path(root, n)
            if not os.path.lexists(src / d.relative_to(dst)):
                shutil.rmtree(d) if d.is_dir() and not d.is_symlink() else d.unlink()
                if n in dirs:
                    dirs.remove(n)


@contextlib.contextmanager
def disk_full(lab: Lab, name: str, dirs: tuple[str, ...] = FULL_DIRS) -> Iterator[None]:
    """The host's disk full where a flow writes (``dirs``) for the block; see FULL_DIRS."""
    runner = _runner(lab, name)
    pid = runner.init_pid()
    if not pid:
        raise LabError(f"{name} is not running")
    done: list[str] = []
    try:
        for d in dirs:
            proc = console(lab, name, _FILL.format(d=shlex.quote(d)))
            if proc.returncode != 0:
                raise LabError(f"{name}: could not fill {d}: {proc.stderr.strip()[-300:]}")
            done.append(d)
        yield
    finally:
        for d in reversed(done):
            _carry_down(Path(f"/proc/{pid}/root{d}"), runner.merged / d.lstrip("/"))
            console(lab, name, f"umount -l {shlex.quote(d)}")


# --- a host's clock off -----------------------------------------------------------------------
# The containers share this machine's kernel clock, and a time namespace cannot shift
# CLOCK_REALTIME: setting a host's date would set this machine's. So the skew comes from
# libfaketime (Debian's package, installed on the host when first needed), preloaded into
# every program the host starts while the fault lasts (/etc/ld.so.preload, the offset in
# /etc/faketimerc): every SSH session and what it runs (pyinfra's commands and facts, wg, apt,
# certbot, date, python) sees the skewed time. Not skewed: processes already running (systemd,
# sshd's listener, nginx's master) and programs that read the clock without libc (Go's
# wireguard-go). A process started during the fault keeps the skew until it exits.
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
_SKEW_ON = f"""set -e
export DEBIAN_FRONTEND=noninteractive
[ -e {FAKETIME_LIB} ] || apt-get install -y -q --no-install-recommends libfaketime >/dev/null
echo '{{offset}}' > /etc/faketimerc
echo {FAKETIME_LIB} > /etc/ld.so.preload
"""


def clock_offset(lab: Lab, name: str) -> float:
    """Seconds the host's clock (as a program it starts sees it) is ahead of this machine's."""
    before = time.time()
    seen = float(console(lab, name, "date +%s.%N").stdout.strip())
    return seen - (before + time.time()) / 2


@contextlib.contextmanager
def clock_off(lab: Lab, name: str, seconds: int = 600) -> Iterator[None]:
    """The host's clock ``seconds`` ahead (or behind, if negative) for the block; see above."""
    proc = console(lab, name, _SKEW_ON.format(offset=f"{seconds:+d}"))
    try:
        if proc.returncode != 0:
            raise LabError(f"{name}: could not skew its clock: {proc.stderr.strip()[-300:]}")
        yield
    finally:
        console(lab, name, "rm -f /etc/ld.so.preload /etc/faketimerc")
