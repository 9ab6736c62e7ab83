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

from backhaul.errors import LabError
from backhaul.lab import image
from backhaul.lab.layout import CACHE_DIR, DEFAULT_SUITE

VM_PACKAGES = ["linux-image-cloud-amd64", "initramfs-tools", "kmod", "udev"]
# The cloud kernel builds virtio-blk and virtio-net as modules (ext4 is built in): the
# initramfs must bring the root disk up; the rest loads from the root filesystem.
INITRAMFS_MODULES = ["virtio_pci", "virtio_blk", "virtio_net"]


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
    """The role's VM image: the VM image plus the role's packages (image.with_packages)."""
    base, _ = ensure_built(suite, log=log)
    return image.with_packages(base, vm_dir(suite), role, "the VM image", log)


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
    image.chroot_install(tmp, VM_PACKAGES, "install the kernel", "the VM image")
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
