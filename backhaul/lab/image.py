"""The base image: one debootstrapped Debian 12 root filesystem shared (read-only) by every host.

Built once and cached under CACHE_DIR/base/<recipe hash>; any change to the recipe below gives a
new hash and so a rebuild. Host identity (hostname, machine-id, SSH host keys, addresses, the
lab's SSH key) is NOT in the image: each host gets its own in its overlay (see hosts.py).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

from backhaul.errors import LabError
from backhaul.lab.layout import CACHE_DIR

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = "systemd,systemd-sysv,dbus,openssh-server,iproute2,iputils-ping,python3,sudo"

# Docker inside a host needs its v1 cgroup controllers writable (LAB.md): remounted by this unit
# before containerd/docker start. Harmless on hosts without Docker.
CGROUP_UNIT = """\
[Unit]
Description=Make cgroup v1 controllers writable for Docker (backhaul lab)
DefaultDependencies=no
Before=containerd.service docker.service
After=local-fs.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for c in /sys/fs/cgroup/*/; do case $c in */systemd/|*/unified/) ;; \
*) mount -o remount,bind,rw $c || true;; esac; done'

[Install]
WantedBy=multi-user.target
"""

# Steps run in the chroot after debootstrap; part of the recipe hash.
CUSTOMIZE = [
    "systemctl enable systemd-networkd",
    # apt's timers grab the dpkg lock in the middle of a deploy
    "systemctl mask apt-daily.timer apt-daily-upgrade.timer",
    "systemctl enable backhaul-lab-cgroups.service",
]


def recipe_hash() -> str:
    h = hashlib.sha256()
    for part in (SUITE, MIRROR, PACKAGES, CGROUP_UNIT, *CUSTOMIZE, "v1"):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:12]


def base_dir() -> Path:
    return CACHE_DIR / "base" / recipe_hash()


def rootfs() -> Path:
    return base_dir() / "rootfs"


def is_built() -> bool:
    return (base_dir() / "complete").exists()


def ensure_built(log=print) -> tuple[Path, float | None]:
    """Return the cached rootfs, building it first if needed (and the build time, if built)."""
    if is_built():
        return rootfs(), None
    start = time.monotonic()
    build_root = base_dir()
    if build_root.exists():  # a build that was interrupted: start over
        shutil.rmtree(build_root)
    tmp = build_root / "rootfs.tmp"
    tmp.mkdir(parents=True)
    log(f"building the base image ({SUITE}, debootstrap minbase; about a minute, once)")
    _run(
        ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(tmp), MIRROR],
        "debootstrap",
    )
    (tmp / "etc/systemd/system/backhaul-lab-cgroups.service").write_text(CGROUP_UNIT)
    for step in CUSTOMIZE:
        _run(["chroot", str(tmp), "sh", "-c", step], step)
    # Identity must be per host: an empty machine-id makes systemd treat the first boot as such.
    (tmp / "etc/machine-id").write_text("")
    (tmp / "etc/hostname").unlink(missing_ok=True)
    for key in (tmp / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    shutil.rmtree(tmp / "var/cache/apt/archives", ignore_errors=True)
    (tmp / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    tmp.rename(rootfs())
    (build_root / "complete").write_text(f"{time.time()}\n")
    # Other images stay: a running lab of another recipe (or suite) has its overlays on them.
    return rootfs(), time.monotonic() - start


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise LabError(
            f"building the base image failed at '{what}' (exit {proc.returncode}):\n{tail}"
        )


if __name__ == "__main__":  # python -m backhaul.lab.image: build only
    path, took = ensure_built()
    print(path, f"built in {took:.1f}s" if took else "cached", file=sys.stderr)
