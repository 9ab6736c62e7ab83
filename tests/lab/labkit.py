"""Helpers for lab tests: run commands on lab hosts, run backhaul's commands against the lab."""

from __future__ import annotations

import collections
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from backhaul.lab import guard
from backhaul.lab.layout import Lab
from tests import releases

ROOT = Path(__file__).resolve().parents[2]


def files_containing(secrets: list[str], *bases: Path) -> list[str]:
    """Files under ``bases`` (the working tree, .lab, ...) holding any of ``secrets``: their
    paths only, so that a failing test never prints a secret."""
    wanted = [s.encode() for s in secrets]
    found = []
    for base in bases:
        for path in base.rglob("*"):
            if ".venv" in path.parts or ".git" in path.parts or not path.is_file():
                continue
            if path.stat().st_size < 2_000_000 and any(w in path.read_bytes() for w in wanted):
                found.append(str(path))
    return found


# How many commands the tests ran against labs (printed per module by conftest: the suite's
# budget is spent on these)
CALLS: collections.Counter = collections.Counter()


@dataclass
class LabHandle:
    lab: Lab
    # the session lab keeps its first deploy's trace (tests/releases.py: 12 and 13 compared)
    trace_suite: str | None = None

    @property
    def files(self) -> Path:
        return self.lab.files_dir

    @property
    def network(self) -> Path:
        return self.files / "network.yml"

    @property
    def hosts(self):
        return self.lab.hosts

    def ip(self, name: str) -> str:
        return next(str(h.ip) for h in self.lab.hosts if h.name == name)

    def guard(self, address: str | None = None) -> None:
        """Refuse (send nothing) unless the lab's bridge is up and carries ``address`` (every
        host's address when None): a down lab's addresses route out of this machine."""
        for a in [address] if address else [h.address for h in self.lab.hosts]:
            guard.require(self.lab, a)

    def tcp_open(self, ip: str, port: int, timeout: float = 2) -> bool:
        self.guard(ip)
        try:
            socket.create_connection((ip, port), timeout=timeout).close()
            return True
        except OSError:
            return False

    def ssh(self, host: str, command: str, check: bool = True, timeout: float = 120):
        guard.require_ssh(self.files / "ssh_config", host)
        CALLS["ssh"] += 1
        proc = subprocess.run(
            ["ssh", "-F", str(self.files / "ssh_config"), host, command],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"on {host}: {command!r} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def console(self, host: str, command: str):
        """A shell on the host without SSH (for when SSH is what a test broke)."""
        from backhaul.lab.hosts import HostRunner

        h = next(h for h in self.lab.hosts if h.name == host)
        return HostRunner(self.lab, h, Path("/"), "").console(["sh", "-c", command])

    def env(self, network: Path | None = None) -> dict:
        return dict(os.environ, BACKHAUL_NETWORK=str(network or self.network))

    def inv(self, *args: str, network: Path | None = None, check: bool = True, timeout=900):
        """Run `inv ARGS` as a user would (cwd = the project), against the lab's network file."""
        self.guard()
        CALLS["inv " + args[0]] += 1
        proc = subprocess.run(
            [sys.executable, "-m", "invoke", *args],
            cwd=ROOT,
            env=self.env(network),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if self.trace_suite and args[0] == "deploy" and network is None and proc.returncode == 0:
            releases.write(self.trace_suite, proc.stdout)
            self.trace_suite = None  # the first deploy from bare hosts only
        if check and proc.returncode != 0:
            raise AssertionError(
                f"inv {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}"
            )
        return proc

    def verify(self, network: Path | None = None) -> dict:
        import json

        return json.loads(self.inv("verify", "--json", network=network, check=False).stdout)

    def wait_healthy(self, network: Path | None = None, timeout: float = 40) -> dict:
        """Handshakes can take seconds after a (re)start (a spoke's keepalive comes every 25 s):
        verify again until it is green or ``timeout``. While the hub still waits for a backend's
        handshake, it is watched with one cheap `wg show` a second instead of a verify every 2 s
        (a verify costs the hosts 0.7 s of CPU and this machine 1 s; the suite waits this way
        after every restart of a tunnel)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            report = self.verify(network)
            if report["ok"] or time.monotonic() > deadline:
                return report
            if not self._wait_for_handshakes(report, network, deadline):
                time.sleep(2)

    def _wait_for_handshakes(self, report: dict, network: Path | None, deadline: float) -> bool:
        """Until the hub shows a handshake from every backend whose handshake check failed (or
        ``deadline``); False at once when there is nothing of the kind to wait for."""
        import time

        import yaml

        pending = {c["host"] for c in report["checks"] if c["check"] == "handshake" and c["status"] == "fail"}
        doc = yaml.safe_load((network or self.network).read_text())
        hub = next((h.name for h in self.lab.hosts if h.address == str(doc["proxy"]["public_ip"])), None)
        wg = {b["name"]: f"{b.get('wg_ip')}/32" for b in doc.get("backends") or []}
        if not pending or hub is None or not pending <= wg.keys():
            return False
        iface = (doc.get("network") or {}).get("interface", "wg0")
        # public data only: `wg show dump` would print the hub's private key
        cmd = f"wg show {iface} allowed-ips; echo --; wg show {iface} latest-handshakes"
        while time.monotonic() < deadline:
            ips, _, stamps = self.ssh(hub, cmd, check=False, timeout=15).stdout.partition("--\n")
            when = dict(line.split("\t", 1) for line in stamps.splitlines() if "\t" in line)
            shaken = {
                ip
                for line in ips.splitlines()
                if "\t" in line and when.get(line.split("\t")[0], "0").strip() != "0"
                for ip in line.split("\t")[1].split()
            }
            if all(wg[h] in shaken for h in pending):
                return True
            time.sleep(1)
        return True

    def pyinfra(self, *args: str, network: Path | None = None, check: bool = True):
        self.guard()
        CALLS["pyinfra"] += 1
        proc = subprocess.run(
            [sys.executable, "-m", "pyinfra", "-y", "inventory.py", *args],
            cwd=ROOT,
            env=self.env(network),
            capture_output=True,
            text=True,
            timeout=900,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"pyinfra {' '.join(args)} exited {proc.returncode}\n"
                f"{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}"
            )
        return proc
