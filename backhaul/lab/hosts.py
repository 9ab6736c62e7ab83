"""One lab host: its overlay filesystem, its identity, its boot and its teardown."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from backhaul.errors import LabError
from backhaul.lab import cgroups, files, guard, image, system
from backhaul.lab.layout import Lab, LabHost

HOST_KEY_TYPES = ("ed25519", "ecdsa")


class HostRunner:
    """Start/stop one host of a lab. All state lives in ``lab.host_dir(host)``."""

    def __init__(self, lab: Lab, host: LabHost, rootfs: Path, pubkey: str):
        self.lab, self.host, self.rootfs, self.pubkey = lab, host, rootfs, pubkey
        self.dir = lab.host_dir(host)
        self.merged = self.dir / "merged"
        self.pidfile = self.dir / "launcher.pid"

    network_match = "Name=host0"  # nspawn's name for the host's end of its veth

    # --- state ------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return system.read_pid(self.pidfile)

    def is_running(self) -> bool:
        return system.pid_alive(self.pid) and system.is_mounted(self.merged)

    def cgroup_dirs(self) -> list[Path]:
        return cgroups.host_cgroup_dirs(self.lab.cgroup_name, self.host.machine)

    # --- start ------------------------------------------------------------------------------
    def _mount_overlay(self, *extra_dirs: str) -> None:
        """The base image with this host's own writable layer on top, at ``merged``."""
        for d in ("upper", "work", "merged", *extra_dirs):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
        system.run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={self.rootfs},upperdir={self.dir}/upper,workdir={self.dir}/work",
                str(self.merged),
            ]
        )

    def start(self) -> None:
        """Mount, personalise and boot the host (after clearing what a dead run left)."""
        self.stop()  # no-op when clean; recovers a half-torn or dead host
        self._mount_overlay("docker")
        self._write_identity()
        spec = {
            "cgroups": [str(d) for d in cgroups.create(self.lab.cgroup_name, self.host.machine)],
            "command": self._nspawn_command(),
        }
        spec_path = self.dir / "launcher.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        system.spawn_daemon(
            [sys.executable, "-m", "backhaul.lab.launcher", str(spec_path)],
            log=self.dir / "console.log",
            pidfile=self.pidfile,
            env=pythonpath_env(),
        )

    def _nspawn_command(self) -> list[str]:
        return [
            "systemd-nspawn",
            "-D",
            str(self.merged),
            "-M",
            self.host.machine,
            "--boot",
            # no systemd on the outer machine: nothing to register with, stay in our cgroup
            "--register=no",
            "--keep-unit",
            "--link-journal=no",
            "--resolv-conf=off",
            "--timezone=off",
            f"--network-bridge={self.lab.bridge}",
            # Docker inside the host: session keyrings, and overlay2 on a real-disk directory
            "--system-call-filter=@keyring",
            f"--bind={self.dir}/docker:/var/lib/docker",
        ]

    def _write_identity(self) -> None:
        m = self.merged
        if (m / "etc/machine-id").read_text().strip() == "":
            new_id = system.run(["systemd-id128", "new"]).stdout.strip()
            (m / "etc/machine-id").write_text(new_id + "\n")
        # Host keys of the types this lab's clients use (OpenSSH and paramiko both offer
        # ed25519 first), not `ssh-keygen -A`: its 3072-bit RSA key cost a second of CPU per host,
        # 45 hosts a suite, and no client here ever asks for it
        for kind in HOST_KEY_TYPES:
            key = m / f"etc/ssh/ssh_host_{kind}_key"
            if not key.exists():
                system.run(
                    ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"root@{self.host.name}", "-f", str(key)]
                )
        (m / "etc/hostname").write_text(self.host.name + "\n")
        (m / "etc/hosts").write_text(
            f"127.0.0.1 localhost\n127.0.1.1 {self.host.name}\n::1 localhost ip6-localhost\n"
        )
        (m / "etc/systemd/network/10-host0.network").write_text(
            host_network(self.lab, self.host, self.network_match)
        )
        for home, uid, gid in _login_homes(m):
            ssh = m / home.lstrip("/") / ".ssh"
            ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
            (ssh / "authorized_keys").write_text(self.pubkey.strip() + "\n")
            (ssh / "authorized_keys").chmod(0o600)
            for p in (ssh, ssh / "authorized_keys"):
                os.chown(p, uid, gid)
        cache = f"[{self.lab.gateway6}]" if self.host.v6_only else str(self.lab.gateway)
        (m / "etc/apt/apt.conf.d/01backhaul-lab-proxy").write_text(
            f'Acquire::http::Proxy "http://{cache}:3142";\n'
        )

    def init_pid(self) -> int | None:
        """The host's systemd (PID 1 inside), seen from outside: the launcher's grandchild."""

        def children(pid: int) -> list[int]:
            out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
            return [int(p) for p in out.stdout.split()]

        for nspawn in children(self.pid or 0):
            for init in children(nspawn):
                return init
        return None

    def console(self, command: list[str]) -> subprocess.CompletedProcess:
        """Run a command in the host without SSH (as `machinectl shell` would; it has no
        systemd outside to ask): nsenter into every namespace of the host's PID 1."""
        pid = self.init_pid()
        if not pid:
            raise LabError(f"{self.host.name} is not running")
        return subprocess.run(
            ["nsenter", "-t", str(pid), "-a", *command], capture_output=True, text=True, timeout=120
        )

    def host_key(self) -> str:
        return (self.merged / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[1]

    # --- stop -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Power off (TERM to the launcher), then remove every trace but the disk state."""
        system.terminate([p for p in [self.pid] if p], timeout=15)
        dirs = self.cgroup_dirs()
        # a launcher that died (e.g. killed with the session) leaves its host running: no clean
        # poweroff is possible without nspawn, so end it hard; its disk state is kept
        cgroups.kill_all(dirs)
        for path in system.mounts_under(self.merged):
            system.umount(path)
        if system.is_mounted(self.merged):
            system.umount(str(self.merged))
        left = cgroups.remove(dirs)
        if left:
            raise LabError(f"{self.host.name}: cgroups still busy after stop: {left[0]}")
        self.pidfile.unlink(missing_ok=True)

    def purge(self) -> None:
        """Gone for good: no poweroff first (its disk is thrown away, as a dead server's is);
        a clean one cost each host a second or more of CPU in systemd's shutdown."""
        cgroups.kill_all(self.cgroup_dirs())
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def host_network(lab: Lab, host: LabHost, match: str = "Name=host0") -> str:
    """host0's networkd file: static addresses and gateways, IPv4 unless the host is IPv6-only,
    IPv6 always. No link-local addressing or router advertisements: the addresses are the lab's
    to give; no duplicate address detection either (nothing else on the bridge takes them, and
    a tentative address would refuse SSH for a second after boot). A VM's interface is matched
    by its MAC address instead (``match``): udev names it after its PCI slot."""
    v4 = "" if host.v6_only else (f"Address={host.ip}/{lab.subnet.prefixlen}\nGateway={lab.gateway}\n")
    return (
        f"[Match]\n{match}\n\n[Network]\n"
        + v4
        + f"Address={host.ip6}/{lab.subnet6.prefixlen}\nGateway={lab.gateway6}\n"
        "LinkLocalAddressing=no\nIPv6AcceptRA=no\nIPv6DuplicateAddressDetection=0\n"
    )


def _login_homes(root: Path) -> list[tuple[str, int, int]]:
    """(home, uid, gid) of root and of the image's sudo users: the lab's key opens each."""
    wanted = {"root", image.SUDO_USER, image.ASKING_USER}
    out = []
    for line in (root / "etc/passwd").read_text().splitlines():
        f = line.split(":")
        if len(f) >= 6 and f[0] in wanted:
            out.append((f[5], int(f[2]), int(f[3])))
    return out


def pythonpath_env() -> dict:
    """This environment with the project importable (for our own helpers run in a host's namespaces)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


SYSTEM_STATES = {"initializing", "starting", "running", "degraded", "maintenance", "stopping"}


def ssh_ready(lab: Lab, ip: str, key: Path, known_hosts: Path, timeout: float = 90.0) -> str:
    """Wait until SSH answers and systemd finished booting; return is-system-running's word.

    Many hosts booting at once on two cores can be slow to send sshd's banner: every failed
    attempt (refused, timed out) is tried again until ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        guard.require(lab, ip)
        proc = subprocess.run(
            [
                "ssh",
                "-i",
                str(key),
                "-o",
                f"UserKnownHostsFile={known_hosts}",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=5",
                "-o",
                f"KexAlgorithms={files.KEX}",
                f"root@{ip}",
                "systemctl is-system-running --wait",
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        word = proc.stdout.strip()
        if word in SYSTEM_STATES:
            return word
        last = proc.stderr.strip() or word
        time.sleep(0.3)
    return last
