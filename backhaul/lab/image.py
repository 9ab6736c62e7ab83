"""The base images: one debootstrapped Debian root filesystem per suite (bookworm = Debian 12,
trixie = Debian 13), each shared (read-only) by every host of that suite.

Built once and cached under CACHE_DIR/base/<recipe hash>; the suite is part of the recipe, and
any change to the recipe gives a new hash and so a rebuild. Images of other recipes are never
deleted (a running lab may sit on them). Host identity (hostname, machine-id, SSH host keys,
addresses, the lab's SSH key) is NOT in the image: each host gets its own in its overlay
(see hosts.py).
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

from backhaul import software
from backhaul.errors import LabError
from backhaul.lab.layout import CACHE_DIR, DEFAULT_SUITE, SUITES

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

SUDO_USER = "deploy"  # passwordless sudo, like `admin` on Debian's cloud images
ASKING_USER = "asker"  # sudo that asks for a password: backhaul must refuse it up front

# Steps run in the chroot after debootstrap; part of the recipe hash.
CUSTOMIZE = [
    "systemctl enable systemd-networkd",
    # apt's timers grab the dpkg lock in the middle of a deploy
    "systemctl mask apt-daily.timer apt-daily-upgrade.timer",
    "systemctl enable backhaul-lab-cgroups.service",
    # Users as cloud images hand them out (root login off, a sudo user instead): `deploy` has
    # passwordless sudo; `asker`'s sudo asks for a password (which no one knows). Their SSH key
    # is the lab's, put in per host (hosts.py).
    f"useradd -m -s /bin/bash {SUDO_USER} && echo '{SUDO_USER} ALL=(ALL) NOPASSWD:ALL' "
    f"> /etc/sudoers.d/{SUDO_USER} && chmod 440 /etc/sudoers.d/{SUDO_USER}",
    f"useradd -m -s /bin/bash {ASKING_USER} && echo '{ASKING_USER} ALL=(ALL) ALL' "
    f"> /etc/sudoers.d/{ASKING_USER} && chmod 440 /etc/sudoers.d/{ASKING_USER}",
]


def check_suite(suite: str) -> str:
    if suite not in SUITES:
        raise LabError(f"suite {suite!r} is not one the lab builds: use one of {', '.join(SUITES)}")
    return suite


def recipe_hash(suite: str = DEFAULT_SUITE) -> str:
    h = hashlib.sha256()
    for part in (check_suite(suite), MIRROR, PACKAGES, CGROUP_UNIT, *CUSTOMIZE, "v1"):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:12]


def base_dir(suite: str = DEFAULT_SUITE) -> Path:
    return CACHE_DIR / "base" / recipe_hash(suite)


def rootfs(suite: str = DEFAULT_SUITE) -> Path:
    return base_dir(suite) / "rootfs"


def is_built(suite: str = DEFAULT_SUITE) -> bool:
    return (base_dir(suite) / "complete").exists()


def ensure_built(suite: str = DEFAULT_SUITE, log=print) -> tuple[Path, float | None]:
    """Return the suite's cached rootfs, building it first if needed (and the build time, if
    built). Two labs coming up at once build it once: the second waits on a lock file."""
    if is_built(suite):
        return rootfs(suite), None
    build_root = base_dir(suite)
    build_root.parent.mkdir(parents=True, exist_ok=True)
    with open(build_root.parent / f"{build_root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_built(suite):  # built by the other one meanwhile
            return rootfs(suite), None
        return rootfs(suite), _build(suite, build_root, log)


def _build(suite: str, build_root: Path, log) -> float:
    start = time.monotonic()
    if build_root.exists():  # a build that was interrupted: start over
        shutil.rmtree(build_root)
    tmp = build_root / "rootfs.tmp"
    tmp.mkdir(parents=True)
    log(f"building the base image ({suite}, debootstrap minbase; about a minute, once)")
    _run(
        ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", suite, str(tmp), MIRROR],
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
    tmp.rename(build_root / "rootfs")
    (build_root / "complete").write_text(f"{time.time()}\n")
    # Other images stay: a running lab of another recipe (or suite) has its overlays on them.
    return time.monotonic() - start


# --- an image with backhaul's packages in (VM hosts; container labs that ask for it) --------
# What each role gets: what a deploy installs there (a spare may become a backend). Never
# wireguard-go: whether a deploy installs it (the kernel has no WireGuard) is its own to decide.
_TOOLS = software.wireguard("loaded")
ROLE_PACKAGES = {
    "hub": _TOOLS + software.FIREWALL + software.NGINX + software.ACME,
    "backend": _TOOLS + software.FIREWALL,
}
ROLE_PACKAGES["spare"] = ROLE_PACKAGES["backend"]
# In the chroot no service may start: with no systemd there, invoke-rc.d would run nginx's init
# script in this machine's own network namespace. 101 = "action forbidden by policy".
POLICY_RC_D = "#!/bin/sh\nexit 101\n"


def with_packages(base: Path, cache: Path, role: str, label: str, log=print) -> Path:
    """``base`` (an image's rootfs) plus the role's packages, installed natively: cached under
    ``cache``/packages/<hash of the list>, built once (a lock: two labs build it once)."""
    packages = ROLE_PACKAGES[role]
    digest = hashlib.sha256(" ".join(packages).encode()).hexdigest()[:12]
    path = cache / "packages" / digest  # one image per list (a spare's is a backend's)
    if not (path / "complete").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / "build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (path / "complete").exists():
                _build_with(packages, base, path, f"{label} of a {role}", log)
    return path / "rootfs"


def _build_with(packages: list[str], base: Path, path: Path, label: str, log) -> None:
    log(f"building {label} (with {' '.join(packages)}; once)")
    shutil.rmtree(path, ignore_errors=True)  # an interrupted build: start over
    path.mkdir(parents=True)
    tmp = path / "rootfs.tmp"
    _run(["cp", "-a", str(base), str(tmp)], "copy the image", label)
    policy = tmp / "usr/sbin/policy-rc.d"
    policy.write_text(POLICY_RC_D)
    policy.chmod(0o755)
    chroot_install(tmp, packages, "install the packages", label)
    policy.unlink()
    tmp.rename(path / "rootfs")
    (path / "complete").write_text(f"{time.time()}\n")


def chroot_install(tmp: Path, packages: list[str], what: str, label: str) -> None:
    """apt-get install in an image, with /proc, /sys and /dev for the packages' scripts, in a
    mount namespace of its own: nothing stays mounted when the build ends, however it ends."""
    script = (
        f"mount -t proc proc {tmp}/proc && mount -t sysfs sys {tmp}/sys && "
        f"mount --rbind /dev {tmp}/dev && "
        f"chroot {tmp} sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive "
        f"apt-get install -y -q --no-install-recommends {' '.join(packages)} && apt-get clean'"
    )
    _run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], what, label)


def _run(cmd: list[str], what: str, image: str = "the base image") -> None:
    """One step of building an image; a failure names the step and shows its last lines."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise LabError(f"building {image} failed at '{what}' (exit {proc.returncode}):\n{tail}")


if __name__ == "__main__":  # python -m backhaul.lab.image [SUITE]: build only
    path, took = ensure_built(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_SUITE)
    print(path, f"built in {took:.1f}s" if took else "cached", file=sys.stderr)
