"""A lab that is down has no bridge: a packet to one of its old addresses would leave this
machine through its default route, to addresses that are not ours. No lab command sends one.

The first test counts packets in the kernel (an iptables rule that drops and counts everything
addressed to the down lab's subnets, so that even a failing run sends nothing out); the others
show the guard's answers without root.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from backhaul.errors import LabError
from backhaul.lab import guard
from backhaul.lab import lab as labmod
from backhaul.lab.layout import Lab

ROOT = Path(__file__).resolve().parents[2]
DOWN_LAB = "gdown"  # a name no other test or lab uses: its derived subnet is its own


def _record_down_lab(state_root: Path, lab: Lab) -> None:
    """What a lab that was up and is now down leaves: its record, no bridge."""
    (state_root / lab.name).mkdir(parents=True)
    (state_root / lab.name / "lab.json").write_text(
        json.dumps({"name": lab.name, "subnet": str(lab.subnet), "backends": 2, "suite": lab.suite})
    )


class _Counter:
    """An iptables/ip6tables chain in OUTPUT that drops and counts packets to the lab's subnets."""

    CHAIN = "BH-GUARD-TEST"

    def __init__(self, lab: Lab):
        self.rules = [("iptables", str(lab.subnet)), ("ip6tables", str(lab.subnet6))]

    def __enter__(self):
        for tool, net in self.rules:
            subprocess.run([tool, "-w", "-N", self.CHAIN], capture_output=True)
            subprocess.run([tool, "-w", "-F", self.CHAIN], check=True)
            subprocess.run([tool, "-w", "-A", self.CHAIN, "-d", net, "-j", "DROP"], check=True)
            subprocess.run([tool, "-w", "-I", "OUTPUT", "-j", self.CHAIN], check=True)
        return self

    def packets(self) -> int:
        total = 0
        for tool, _ in self.rules:
            out = subprocess.run(
                [tool, "-w", "-L", self.CHAIN, "-n", "-v", "-x"], capture_output=True, text=True, check=True
            ).stdout
            total += sum(int(line.split()[0]) for line in out.splitlines()[2:] if line.strip())
        return total

    def __exit__(self, *exc):
        for tool, _ in self.rules:
            subprocess.run([tool, "-w", "-D", "OUTPUT", "-j", self.CHAIN], capture_output=True)
            subprocess.run([tool, "-w", "-F", self.CHAIN], capture_output=True)
            subprocess.run([tool, "-w", "-X", self.CHAIN], capture_output=True)


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("iptables"), reason="counts packets with iptables: needs root"
)
def test_lab_status_of_a_lab_that_is_down_sends_no_packet(tmp_path):
    lab = Lab.make(DOWN_LAB, 2, project_dir=tmp_path)
    assert not Path("/sys/class/net", lab.bridge).exists()
    env = dict(os.environ, BACKHAUL_LAB_ROOT=str(tmp_path / "labs"))
    _record_down_lab(tmp_path / "labs", lab)
    with _Counter(lab) as counter:
        proc = subprocess.run(
            [sys.executable, "-m", "invoke", "lab.status", "--name", DOWN_LAB],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        sent = counter.packets()
    assert sent == 0, f"lab.status sent {sent} packets to a lab that is down:\n{proc.stdout}"
    assert proc.returncode == 0, proc.stderr
    assert f"lab '{DOWN_LAB}' is down" in proc.stdout, proc.stdout


def test_status_of_a_down_lab_connects_to_nothing(tmp_path, monkeypatch):
    tried = []

    def no_connect(self, address):
        tried.append(address)
        raise OSError("this test allows no connection")

    monkeypatch.setattr(socket.socket, "connect", no_connect)
    monkeypatch.setattr(labmod, "STATE_ROOT", tmp_path)
    lab = Lab.make(DOWN_LAB, 2, project_dir=tmp_path)
    _record_down_lab(tmp_path, lab)
    rows = labmod.status(lab)
    assert tried == []
    assert [r["ssh"] for r in rows] == ["lab down"] * 3


def test_an_address_of_a_lab_that_is_down_is_refused_with_what_to_do():
    lab = Lab.make(DOWN_LAB, 2)
    with pytest.raises(LabError, match=rf"lab '{DOWN_LAB}' is down.*nothing was sent.*inv lab.up --name"):
        guard.require(lab, lab.hosts[0].address)


def test_an_address_outside_the_lab_is_refused_even_when_its_bridge_is_up(monkeypatch):
    lab = Lab.make(DOWN_LAB, 2)
    monkeypatch.setattr(guard, "_bridge_up", lambda name: True)
    for outside in ("192.0.2.7", "203.0.113.5", "2001:db8:ffff::1"):
        with pytest.raises(LabError, match="not an address of lab"):
            guard.require(lab, outside)


def test_ssh_to_a_host_of_a_down_lab_is_refused_before_ssh_runs(tmp_path):
    lab = Lab.make(DOWN_LAB, 2, project_dir=tmp_path)
    from backhaul.lab.files import write_ssh_config

    lab.files_dir.mkdir(parents=True)
    config = write_ssh_config(lab)
    assert guard.ssh_config_address(config, "backend-1") == str(lab.hosts[1].ip)
    with pytest.raises(LabError, match="is down"):
        guard.require_ssh(config, "backend-1")
