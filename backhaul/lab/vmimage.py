"""The VM images: the container base image of a suite (image.py) plus what a machine with a
kernel of its own needs, booted by QEMU.

A container shares this machine's kernel; a VM boots Debian's own cloud kernel
(`linux-image-cloud-amd64`, which ships WireGuard as a module), so the image gets that kernel
and its initramfs (which loads the virtio disk driver before the root is mounted), `kmod`
(wg-quick's `ip link add ... type wireguard` makes the kernel load the module through
/sbin/modprobe), and `udev` (without it no device unit appears: the serial console's getty
waits 90 s for ttyS0). Everything else is the container recipe, so both kinds of host run the
same packages, users and settings.

Each role's image also has backhaul's packages for that role installed (a hub's: WireGuard's
tools, ufw, nginx, certbot; a backend's: the first two), installed natively when the image is
built. Under emulation dpkg is the slow part of a first deploy (31.7 min measured, 22 of them
the hub's install: certbot's Python byte-compiled, the CA store rebuilt, on an emulated CPU);
what the VMs are for is the kernel (its WireGuard, a real boot's unit order), and installing
from bare hosts is what the container lanes prove, on both releases. wireguard-go is never in
an image: whether a deploy installs it is the point of the VM tests.

Cached beside the base images under CACHE_DIR/vm/<hash of the base recipe and this one>
(``rootfs``, and ``packages/<hash of a role's packages>/rootfs``); the kernel and initramfs
QEMU boots are read from the image's /boot.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import time
from pathlib import Path

from backhaul import software
from backhaul.errors import LabError
from backhaul.lab import image
from backhaul.lab.layout import CACHE_DIR, DEFAULT_SUITE

VM_PACKAGES = ["linux-image-cloud-amd64", "initramfs-tools", "kmod", "udev"]
# The cloud kernel builds virtio-blk and virtio-net as modules (ext4 is built in): the
# initramfs must bring the root disk up; the rest loads from the root filesystem.
INITRAMFS_MODULES = ["virtio_pci", "virtio_blk", "virtio_net"]


# What each role's image has installed beyond the VM image (a spare may become a backend).
_KERNEL_WIREGUARD = software.wireguard("loaded")  # the tools alone: the kernel has the module
ROLE_PACKAGES = {
    "hub": _KERNEL_WIREGUARD + software.FIREWALL + software.NGINX + software.ACME,
    "backend": _KERNEL_WIREGUARD + software.FIREWALL,
}
ROLE_PACKAGES["spare"] = ROLE_PACKAGES["backend"]
# In the chroot no service may start: with no systemd there, invoke-rc.d would run nginx's init
# script in this machine's own network namespace. 101 = "action forbidden by policy".
POLICY_RC_D = "#!/bin/sh\nexit 101\n"


def recipe_hash(suite: str = DEFAULT_SUITE) -> str:
    h = hashlib.sha256()
    for part in (image.recipe_hash(suite), *VM_PACKAGES, *INITRAMFS_MODULES, "vm2"):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:12]


def vm_dir(suite: str = DEFAULT_SUITE) -> Path:
    return CACHE_DIR / "vm" / recipe_hash(suite)


def rootfs(suite: str = DEFAULT_SUITE) -> Path:
    return vm_dir(suite) / "rootfs"


def is_built(suite: str = DEFAULT_SUITE) -> bool:
    return (vm_dir(suite) / "complete").exists()


def boot_files(suite: str = DEFAULT_SUITE) -> tuple[Path, Path]:
    """The kernel and initramfs of the image (the newest, if the image holds several)."""
    boot = rootfs(suite) / "boot"
    kernels = sorted(boot.glob("vmlinuz-*"))
    if not kernels:
        raise LabError(f"the VM image {vm_dir(suite)} has no kernel: remove it and bring the lab up again")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    return kernels[-1], boot / f"initrd.img-{version}"


def ensure_built(suite: str = DEFAULT_SUITE, log=print) -> tuple[Path, float | None]:
    """The suite's cached VM rootfs, built first from the base image if needed (and the build
    time, if built). Two labs coming up at once build it once (a lock file)."""
    if is_built(suite):
        return rootfs(suite), None
    base, base_took = image.ensure_built(suite, log=log)
    root = vm_dir(suite)
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_built(suite):
            return rootfs(suite), None
        return rootfs(suite), _build(suite, base, root, log) + (base_took or 0.0)


def role_rootfs(suite: str, role: str, log=print) -> Path:
    """The role's image (the VM image plus its packages), built first if needed: one lock
    for every image of the suite, so two labs build each once."""
    root = vm_dir(suite)
    packages = ROLE_PACKAGES[role]
    digest = hashlib.sha256(" ".join(packages).encode()).hexdigest()[:12]
    path = root / "packages" / digest  # one image per list (a spare's is a backend's)
    if (path / "complete").exists():
        return path / "rootfs"
    base, _ = ensure_built(suite, log=log)
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / "complete").exists():
            _build_role(role, packages, base, path, log)
    return path / "rootfs"


def _build_role(role: str, packages: list[str], base: Path, path: Path, log) -> None:
    log(f"building the VM image of a {role} (with {' '.join(packages)}; once)")
    shutil.rmtree(path, ignore_errors=True)  # an interrupted build: start over
    path.mkdir(parents=True)
    tmp = path / "rootfs.tmp"
    _run(["cp", "-a", str(base), str(tmp)], f"copy the VM image for a {role}")
    policy = tmp / "usr/sbin/policy-rc.d"
    policy.write_text(POLICY_RC_D)
    policy.chmod(0o755)
    _chroot_install(tmp, packages, f"install a {role}'s packages")
    policy.unlink()
    tmp.rename(path / "rootfs")
    (path / "complete").write_text(f"{time.time()}\n")


def _chroot_install(tmp: Path, packages: list[str], what: str) -> None:
    """apt-get install in the image, with /proc, /sys and /dev for the packages' scripts, in a
    mount namespace of its own: nothing stays mounted when the build ends, however it ends."""
    script = (
        f"mount -t proc proc {tmp}/proc && mount -t sysfs sys {tmp}/sys && "
        f"mount --rbind /dev {tmp}/dev && "
        f"chroot {tmp} sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive "
        f"apt-get install -y -q --no-install-recommends {' '.join(packages)} && apt-get clean'"
    )
    _run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], what)


def _build(suite: str, base: Path, root: Path, log) -> float:
    start = time.monotonic()
    if root.exists():  # an interrupted build: start over
        shutil.rmtree(root)
    tmp = root / "rootfs.tmp"
    root.mkdir(parents=True)
    log(f"building the VM image ({suite}: the base image + Debian's cloud kernel; once)")
    _run(["cp", "-a", str(base), str(tmp)], "copy the base image")
    (tmp / "etc/initramfs-tools").mkdir(parents=True, exist_ok=True)
    (tmp / "etc/initramfs-tools/modules").write_text("\n".join(INITRAMFS_MODULES) + "\n")
    _chroot_install(tmp, VM_PACKAGES, "install the kernel")  # update-initramfs needs /proc...
    # The apt lists stay, as in the container image: a deploy reads nginx's candidate version
    # from them before it installs nginx (without them the first deploy writes a config for an
    # unknown nginx and the second rewrites it: not the no-op a container host shows).
    tmp.rename(root / "rootfs")
    (root / "complete").write_text(f"{time.time()}\n")
    return time.monotonic() - start


def _run(cmd: list[str], what: str) -> None:
    image._run(cmd, what, "the VM image")


if __name__ == "__main__":  # python -m backhaul.lab.vmimage [SUITE]: build only
    import sys

    path, took = ensure_built(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_SUITE)
    print(path, f"built in {took:.1f}s" if took else "cached", file=sys.stderr)
