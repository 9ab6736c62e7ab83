"""Day-2 flows on a running network: add, remove, rotate, with no packet lost elsewhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from backhaul.lab.pinger import Pinger

from .labkit import ROOT, files_containing


@pytest.fixture(scope="module")
def net(lab):
    lab.inv("deploy")
    lab.wait_healthy()
    spare = next(h for h in lab.hosts if h.role == "spare")
    yield spare
    # leave the lab as the other modules expect it: the spare out of the file
    if spare.name in _backends(lab):
        lab.inv("remove-backend", "--name", spare.name, check=False)


def _backends(lab) -> list[str]:
    return [b["name"] for b in yaml.safe_load(lab.network.read_text())["backends"]]


def _pingers(lab, names: list[str]) -> dict[str, Pinger]:
    wg = {b["name"]: b["wg_ip"] for b in yaml.safe_load(lab.network.read_text())["backends"]}
    return {n: Pinger(lab.files / "ssh_config", "proxy", wg[n]).start() for n in names}


def _hub_state(lab) -> str:
    return lab.ssh("proxy", "sha256sum /etc/wireguard/wg0.conf; ufw status").stdout


def test_add_backend_loses_no_packet_on_the_other_tunnels(lab, net):
    before = _backends(lab)
    pingers = _pingers(lab, before)
    proc = lab.inv("add-backend", "--host", str(net.ip))
    lost = {n: p.stop() for n, p in pingers.items()}
    assert all(r.sent > 20 and r.lost == 0 for r in lost.values()), lost
    assert _backends(lab) == [*before, net.name]  # exactly one more, at the end
    assert "healthy" in proc.stdout
    assert str(net.ip) in lab.ssh("proxy", "ufw status").stdout  # its WireGuard rule


@pytest.mark.parametrize(
    "args, message",
    [
        (["--host", "300.1.1.1"], "is not an IP address"),
        (["--host", "__BACKEND1_IP__"], "198."),
        (["--host", "198.51.100.250", "--name", "backend-1"], "backend-1"),
        (["--host", "198.51.100.251", "--wg-ip", "10.99.0.5"], "10.99.0.5"),
    ],
)
def test_add_backend_rejects_bad_input_and_touches_nothing(lab, net, args, message):
    args = [a.replace("__BACKEND1_IP__", lab.ip("backend-1")) for a in args]
    text = lab.network.read_bytes()
    hub = _hub_state(lab)
    proc = lab.inv("add-backend", *args, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr, proc.stderr
    assert "Connecting" not in proc.stdout + proc.stderr  # no host was contacted
    assert lab.network.read_bytes() == text
    assert _hub_state(lab) == hub


def test_rotating_a_backend_key_keeps_other_tunnels_and_a_short_gap(lab, net):
    old = lab.ssh("backend-1", "cat /etc/wireguard/wg0.pub").stdout.strip()
    pingers = _pingers(lab, _backends(lab))
    proc = lab.inv("rotate-keys", "--host", "backend-1")
    results = {n: p.stop() for n, p in pingers.items()}
    new = lab.ssh("backend-1", "cat /etc/wireguard/wg0.pub").stdout.strip()
    assert new != old
    assert lab.ssh("proxy", "wg show wg0 peers").stdout.split().count(new) == 1
    assert results["backend-1"].gap_seconds < 1.0, results
    assert all(r.lost == 0 for n, r in results.items() if n != "backend-1"), results
    private = lab.ssh("backend-1", "cat /etc/wireguard/wg0.key").stdout.strip()
    assert private not in proc.stdout + proc.stderr
    assert files_containing([private], ROOT, lab.files) == []


def test_rotating_the_hub_key_brings_every_tunnel_back(lab, net):
    old = lab.ssh("proxy", "cat /etc/wireguard/wg0.pub").stdout.strip()
    proc = lab.inv("rotate-keys", "--host", "proxy")
    assert "healthy" in proc.stdout
    new = lab.ssh("proxy", "cat /etc/wireguard/wg0.pub").stdout.strip()
    assert new != old
    for b in _backends(lab):
        assert lab.ssh(b, "wg show wg0 peers").stdout.strip() == new


def test_remove_backend_takes_only_its_peer_and_rule(lab, net):
    others = [b for b in _backends(lab) if b != net.name]
    pingers = _pingers(lab, others)
    lab.inv("remove-backend", "--name", net.name)
    results = {n: p.stop() for n, p in pingers.items()}
    assert all(r.lost == 0 for r in results.values()), results
    assert _backends(lab) == others
    hub = lab.ssh("proxy", "wg show wg0 allowed-ips; ufw status").stdout
    assert str(net.ip) not in hub
    assert len([ln for ln in hub.splitlines() if "/32" in ln and "10.50.0." in ln]) == len(others)
    assert lab.ssh(net.name, "systemctl is-active wg-quick@wg0", check=False).stdout.strip() != "active"


def test_remove_backend_refuses_while_services_use_it(lab, net, tmp_path):
    variant = tmp_path / "network.yml"
    text = lab.network.read_text().replace(
        "services: []", "services:\n  - {name: api, backend: backend-2, port: 8080}"
    )
    variant.write_text(text)
    proc = lab.inv("remove-backend", "--name", "backend-2", network=variant, check=False)
    assert proc.returncode != 0 and "api" in proc.stderr and "--force" in proc.stderr
    assert variant.read_text() == text


def _add_backend_killed_after_the_file_write(lab, net) -> None:
    cmd = [sys.executable, "-m", "invoke", "add-backend", "--host", str(net.ip)]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=lab.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while net.name not in _backends(lab):  # killed right after the file write
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_an_interrupted_add_backend_is_finished_by_running_it_again(lab, net):
    before = _backends(lab)
    _add_backend_killed_after_the_file_write(lab, net)
    again = lab.inv("add-backend", "--host", str(net.ip))
    assert "finishing the interrupted add" in again.stdout and "healthy" in again.stdout
    assert _backends(lab) == [*before, net.name]


def test_an_interrupted_add_backend_is_ended_by_one_deploy(lab, net):
    """The other way to heal a cut add-backend: one `inv deploy`. It deploys the backend the
    add wrote into the file and ends the add (issue 26: its journal was left behind)."""
    if net.name in _backends(lab):
        lab.inv("remove-backend", "--name", net.name)
    journal = lab.network.with_name(f".{lab.network.name}.adding")
    _add_backend_killed_after_the_file_write(lab, net)
    assert journal.exists()
    healed = lab.inv("deploy")
    assert "interrupted add-backend" in healed.stdout
    assert not journal.exists()
    assert net.name in _backends(lab)
    assert lab.wait_healthy()["ok"]
