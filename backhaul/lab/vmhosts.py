"""One lab host as a QEMU VM: Debian's own kernel (kernel WireGuard), on the lab's bridge.

The same host as a container (hosts.py), other machinery: its disk is an ext4 image made from
an overlay of the VM image with the host's identity written in (the same `_write_identity` as a
container's), its network a tap on the lab's bridge, its launcher QEMU itself. Nested KVM
hangs on this machine, so QEMU emulates the CPU (TCG): one virtual CPU each, slow but real.

Files in the host's directory: disk.raw (the whole machine's state, kept by down, deleted by
purge), vm.json (how it was started: marks a VM host for down/destroy), qemu.pid,
monitor.sock (QEMU's monitor: `system_powerdown` for a clean poweroff), console.log (serial),
ssh_host_ed25519_key.pub (for the lab's known_hosts; the private keys live only in the disk).
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

from backhaul.errors import LabError
from backhaul.lab import system, vmimage
from backhaul.lab.hosts import HostRunner
from backhaul.lab.layout import Lab, LabHost

DISK_SIZE = "3G"  # sparse: the image is ~300 MB, a deployed hub adds ~150 MB
MEMORY_MB = 512
# A clean poweroff under emulation: systemd stops every unit, then QEMU exits.
POWEROFF_TIMEOUT = 45.0


def tap_name(host: LabHost) -> str:
    return f"vt-{host.machine}"  # "vt-" + at most 9 characters: fits IFNAMSIZ (15)


def mac_address(host: LabHost) -> str:
    """Stable per address: QEMU's locally administered prefix and the IPv4 address's last three
    bytes (hosts of one lab differ in the last byte)."""
    return "52:54:00:" + ":".join(f"{b:02x}" for b in host.ip.packed[1:])


class VmRunner(HostRunner):
    """Start/stop one VM host. All state lives in ``lab.host_dir(host)``."""

    def __init__(self, lab: Lab, host: LabHost, rootfs: Path, pubkey: str):
        super().__init__(lab, host, rootfs, pubkey)
        self.disk = self.dir / "disk.raw"
        self.pidfile = self.dir / "qemu.pid"
        self.monitor = self.dir / "monitor.sock"
        self.tap = tap_name(host)

    @property
    def network_match(self) -> str:  # type: ignore[override]
        return f"MACAddress={mac_address(self.host)}"

    # --- state ------------------------------------------------------------------------------
    def is_running(self) -> bool:
        return system.pid_alive(self.pid)

    def cgroup_dirs(self) -> list[Path]:
        return []  # QEMU is one process of ours: its pid is all there is to stop

    # --- start ------------------------------------------------------------------------------
    def start(self) -> None:
        """Make the disk (first start only: it keeps the host's state), plug a tap into the
        bridge, boot QEMU."""
        self.stop()
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.disk.exists():
            self._make_disk()
        system.run(["ip", "tuntap", "add", "dev", self.tap, "mode", "tap"])
        system.run(["ip", "link", "set", self.tap, "master", self.lab.bridge, "up"])
        command = self._qemu_command()
        (self.dir / "vm.json").write_text(json.dumps({"command": command, "tap": self.tap}, indent=1))
        system.spawn_daemon(command, log=self.dir / "console.log", pidfile=self.pidfile)

    def _make_disk(self) -> None:
        """The VM image with this host's identity, written into a new ext4 disk image (no
        loop mount: `mkfs.ext4 -d` copies a directory tree in)."""
        self._mount_overlay()
        try:
            self._write_identity()
            pub = (self.merged / "etc/ssh/ssh_host_ed25519_key.pub").read_text()
            partial = self.disk.with_suffix(".partial")
            partial.unlink(missing_ok=True)
            system.run(
                ["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(self.merged), str(partial), DISK_SIZE]
            )
            partial.rename(self.disk)
            (self.dir / "ssh_host_ed25519_key.pub").write_text(pub)
        finally:
            system.umount(str(self.merged))
            for d in ("upper", "work", "merged"):  # the private host keys stay in the disk only
                shutil.rmtree(self.dir / d, ignore_errors=True)

    def _qemu_command(self) -> list[str]:
        kernel, initrd = vmimage.boot_files(self.host.suite)
        return [
            "qemu-system-x86_64",
            "-name",
            self.host.machine,
            # nested KVM hangs here; -cpu max: the kernel's SSSE3/AVX crypto (chacha) needs it
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-smp",
            "1",
            "-m",
            str(MEMORY_MB),
            "-nodefaults",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            f"unix:{self.monitor},server,nowait",
            "-kernel",
            str(kernel),
            "-initrd",
            str(initrd),
            "-append",
            "root=/dev/vda rw console=ttyS0",
            "-drive",
            f"file={self.disk},format=raw,if=virtio",
            "-netdev",
            f"tap,id=n0,ifname={self.tap},script=no,downscript=no",
            "-device",
            f"virtio-net-pci,netdev=n0,mac={mac_address(self.host)}",
            "-device",
            "virtio-rng-pci",
        ]

    def host_key(self) -> str:
        return (self.dir / "ssh_host_ed25519_key.pub").read_text().split()[1]

    def init_pid(self) -> int | None:
        return None

    def console(self, command: list[str]):
        raise LabError(f"{self.host.name} is a VM: no shell without SSH (nsenter reaches containers only)")

    # --- stop -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Power off cleanly (ACPI power button), QEMU killed if the guest does not finish;
        then the tap goes. The disk stays."""
        pid = self.pid
        if system.pid_alive(pid):
            self._monitor("system_powerdown")
            deadline = time.monotonic() + POWEROFF_TIMEOUT
            while system.pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            system.terminate([pid], timeout=5)
        if system.link_exists(self.tap):
            system.run(["ip", "link", "del", self.tap], check=False)
        self.pidfile.unlink(missing_ok=True)
        self.monitor.unlink(missing_ok=True)

    def _monitor(self, command: str) -> None:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(str(self.monitor))
                s.sendall(command.encode() + b"\n")
                s.recv(4096)
        except OSError:
            pass  # no monitor: terminate() below ends QEMU

    def purge(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def is_vm_dir(d: Path) -> bool:
    return (d / "vm.json").exists() or (d / "disk.raw").exists()
