"""The private network (issue: WireGuard hub and spoke + ufw), proven on real hosts.

One deploy from bare hosts serves the module; tests that change the network restore it.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .labkit import ROOT, files_containing

OUTPUTS: list[str] = []  # every command output of this module, searched for key material


def _run(lab, *args, **kw):
    proc = lab.inv(*args, **kw)
    OUTPUTS.append(proc.stdout + proc.stderr)
    return proc


@pytest.fixture(scope="module")
def deployed(lab):
    """One `inv deploy` from bare hosts."""
    t0 = time.monotonic()
    proc = _run(lab, "deploy")
    return {"proc": proc, "seconds": time.monotonic() - t0}


def _verify(lab, network=None) -> dict:
    proc = lab.inv("verify", "--json", network=network, check=False)
    OUTPUTS.append(proc.stdout + proc.stderr)
    return json.loads(proc.stdout)


def _wait_healthy(lab, network=None) -> dict:
    report = lab.wait_healthy(network)
    OUTPUTS.append(json.dumps(report))
    return report


def _failed(report: dict) -> list:
    return [c for c in report["checks"] if c["status"] not in ("ok", "warn")]


def _variant(lab, tmp_path: Path, **network_keys) -> Path:
    """The lab's network file with extra keys under `network:`."""
    text = lab.network.read_text()
    extra = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in network_keys.items())
    path = tmp_path / "network.yml"
    path.write_text(text.replace("network:\n", "network:\n" + extra, 1))
    return path


@pytest.mark.smoke
def test_deploy_from_bare_hosts_gives_a_working_network(lab, deployed):
    assert "backhaul: " in deployed["proc"].stdout
    report = _wait_healthy(lab)
    assert report["ok"], _failed(report)
    backends = [h.name for h in lab.hosts if h.role == "backend"]
    for check in ("handshake", "ping", "exposure"):
        assert {c["host"] for c in report["checks"] if c["check"] == check} == set(backends)
    # pings both ways over the tunnel, from the hosts themselves
    for i, name in enumerate(backends, start=2):
        lab.ssh("proxy", f"ping -c1 -W2 10.50.0.{i}")
        lab.ssh(name, "ping -c1 -W2 10.50.0.1")


@pytest.mark.smoke
def test_second_deploy_changes_nothing(lab, deployed):
    proc = _run(lab, "deploy")
    assert "backhaul: no changes" in proc.stdout, proc.stdout[-3000:]
    plan = _run(lab, "plan")
    assert "plan: no changes" in plan.stdout


def test_a_no_op_deploy_reads_each_host_once(lab, deployed):
    """What keeps a no-op fast (benchmarks/network has the figures): after a full deploy, the
    next reads every fact of a host in one round trip, and no operation reads again."""
    _run(lab, "deploy")  # records what a run that changes nothing asks
    proc = lab.pyinfra("deploys/site.py", "-vv")
    loaded = re.findall(r"^\s*\[(\S+)\]\s+Loaded fact (\S+)", proc.stdout + proc.stderr, re.M)
    assert sorted(loaded) == sorted(
        (h.name, "backhaul.facts.bundle.FactBundle") for h in lab.lab.network_hosts
    ), loaded


def test_after_a_no_op_a_deploy_asks_each_host_again_without_pyinfra_and_sees_any_drift(lab, deployed):
    """A complete deploy that changed nothing is kept (backhaul/unchanged.py): the next asks
    every host the same again, in one SSH round, and starts no pyinfra when each answers the
    same. A host changed by hand since answers differently: the whole deploy runs, repairs
    it, and the deploy after that runs in full again (its run changed something)."""
    assert "operations checked" in _run(lab, "deploy", "--full").stdout  # pyinfra, no change
    fast = _run(lab, "deploy")
    assert "all 3 hosts read as the last deploy left them" in fast.stdout, fast.stdout[-3000:]
    assert "--> Loading config" not in fast.stdout  # pyinfra never started
    # hands at work: backend-1's rule for the hub's WireGuard packets gone (the tunnel holds
    # meanwhile: its own keepalives keep the flow open), the hub's TCP retries setting changed
    hub = lab.ip("proxy")
    lab.ssh("backend-1", f"ufw delete allow from {hub} to any port 51820 proto udp")
    lab.ssh("proxy", "sysctl -qw net.ipv4.tcp_retries2=15")
    repaired = _run(lab, "deploy")
    for host in ("proxy", "backend-1"):
        assert f"{host} reads differently from the last deploy" in repaired.stdout, repaired.stdout[-3000:]
    assert "2 of " in repaired.stdout, repaired.stdout[-3000:]
    assert f"51820/udp                  ALLOW       {hub}" in lab.ssh("backend-1", "ufw status").stdout
    assert lab.ssh("proxy", "sysctl -n net.ipv4.tcp_retries2").stdout.strip() == "5"
    assert "operations checked" in _run(lab, "deploy").stdout  # in full: the last one changed
    assert "read as the last deploy left them" in _run(lab, "deploy").stdout


def test_wireguard_keys_stay_on_their_hosts(lab, deployed):
    for h in lab.lab.network_hosts:
        out = lab.ssh(h.name, "stat -c '%a %U' /etc/wireguard/wg0.key /etc/wireguard/wg0.conf").stdout
        assert out.split("\n")[:2] == ["600 root", "600 root"]


def test_backends_do_not_reach_each_other_unless_asked(lab, deployed, tmp_path):
    assert lab.ssh("backend-1", "ping -c1 -W2 10.50.0.3", check=False).returncode != 0
    on = _variant(lab, tmp_path, backend_to_backend=True)
    try:
        _run(lab, "deploy", network=on)
        deadline = time.monotonic() + 30
        while lab.ssh("backend-1", "ping -c1 -W2 10.50.0.3", check=False).returncode != 0:
            assert time.monotonic() < deadline, "backend-1 cannot reach backend-2 with b2b on"
        assert lab.ssh("proxy", "sysctl -n net.ipv4.ip_forward").stdout.strip() == "1"
    finally:
        _run(lab, "deploy")  # back to the lab's own file: b2b off
    assert lab.ssh("backend-1", "ping -c1 -W2 10.50.0.3", check=False).returncode != 0
    assert _wait_healthy(lab)["ok"]


def _udp_in(lab, host: str) -> int:
    snmp = lab.ssh(host, "cat /proc/net/snmp").stdout.splitlines()
    names, values = [ln.split() for ln in snmp if ln.startswith("Udp:")][:2]
    return int(values[names.index("InDatagrams")])


def _send_udp(lab, source_ip: str, dest: tuple[str, int], count: int = 40) -> None:
    lab.guard(dest[0])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source_ip, 0))
        for _ in range(count):
            s.sendto(b"not a wireguard packet", dest)
            time.sleep(0.005)


def test_hub_wireguard_port_is_closed_to_strangers(lab, deployed):
    """UDP 51820 on the hub: datagrams from a non-backend address never reach the socket;
    the same datagrams from a backend's public address do (the control)."""
    hub = (lab.ip("proxy"), 51820)
    stranger = str(lab.lab.outsider_ip())
    subprocess.run(["ip", "addr", "add", f"{stranger}/32", "dev", lab.lab.bridge], check=True)
    try:
        before = _udp_in(lab, "proxy")
        _send_udp(lab, stranger, hub, 40)
        time.sleep(0.3)
        stranger_delta = _udp_in(lab, "proxy") - before
    finally:
        subprocess.run(["ip", "addr", "del", f"{stranger}/32", "dev", lab.lab.bridge], check=False)
    # the control: the same from backend-2's public address (the hub's ufw allows it)
    before = _udp_in(lab, "proxy")
    lab.ssh(
        "backend-2",
        f'python3 -c "import socket,time\ns=socket.socket(2,2)\n'
        f"[(s.sendto(b'x',('{hub[0]}',51820)),time.sleep(0.005)) for _ in range(40)]\"",
    )
    time.sleep(0.3)
    backend_delta = _udp_in(lab, "proxy") - before
    assert backend_delta >= 40, backend_delta
    assert stranger_delta < 10, f"{stranger_delta} datagrams from a stranger reached the hub"


def test_backend_ports_are_closed_on_the_public_address(lab, deployed):
    # something listening on every address of backend-1: reachable only through the tunnel
    lab.ssh("backend-1", "systemd-run --unit bh-test-listener python3 -m http.server 9099")
    try:
        time.sleep(0.5)
        assert not lab.tcp_open(lab.ip("backend-1"), 9099), "public port 9099 answered"
        assert lab.tcp_open(lab.ip("backend-1"), 22), "SSH must stay open"
        report = _verify(lab)
        exposure = next(c for c in report["checks"] if c["check"] == "exposure" and c["host"] == "backend-1")
        assert exposure["status"] == "fail" and "9099" in exposure["detail"]
        assert report["exit_code"] == 1
    finally:
        lab.ssh("backend-1", "systemctl stop bh-test-listener", check=False)


def test_a_rule_added_by_hand_survives_a_deploy(lab, deployed):
    lab.ssh("backend-1", "ufw allow from 198.51.100.99 to any port 4444 proto tcp")
    try:
        _run(lab, "deploy")
        rules = lab.ssh("backend-1", "ufw status").stdout
        assert "4444/tcp" in rules and "198.51.100.99" in rules
    finally:
        lab.ssh("backend-1", "ufw delete allow from 198.51.100.99 to any port 4444 proto tcp")


def test_partial_runs_never_drop_peers(lab, deployed):
    def hub_peers() -> set[str]:
        out = lab.ssh("proxy", "wg show wg0 allowed-ips").stdout
        return set(re.findall(r"10\.50\.0\.\d+/32", out))

    before = hub_peers()
    assert len(before) == lab.lab.backends
    proc = lab.pyinfra("deploys/wireguard.py", "--limit", "backend-1")
    OUTPUTS.append(proc.stdout + proc.stderr)
    assert hub_peers() == before
    # the hub alone, with backend-2 unreachable: its peer is kept from the hub's own config
    lab.ssh("backend-2", "systemctl stop ssh.socket ssh.service 2>/dev/null; true", check=False)
    try:
        proc = lab.pyinfra("deploys/wireguard.py", "--limit", "proxy", check=False)
        OUTPUTS.append(proc.stdout + proc.stderr)
        assert hub_peers() == before
    finally:
        lab.console("backend-2", "systemctl start ssh")  # SSH is back, via a shell without it
    assert _wait_healthy(lab)["ok"]


def test_verify_at_once_after_a_deploy_waits_for_a_restarted_tunnel(lab, deployed):
    """A deploy that (re)starts a backend's tunnel can end before the tunnel's first handshake:
    when its first tries are lost (add-backend: the hub's ufw learns the new address only after
    the tunnel started), WireGuard tries again 5 s later. Here the hub drops backend-1's
    WireGuard packets while the deploy restarts that tunnel, and until verify (run at once, no
    wait_healthy) has pinged backend-1: verify watches the tunnel, within the bound it states,
    instead of failing it."""
    drop = f"INPUT -p udp -s {lab.ip('backend-1')} --dport 51820 -j DROP"
    seen = "OUTPUT -o wg0 -p icmp --icmp-type echo-request -d 10.50.0.2"  # counts, lets through
    lab.ssh("backend-1", "systemctl stop wg-quick@wg0")
    lab.ssh("proxy", f"iptables -I {drop}; iptables -I {seen}")
    try:
        assert "0 failed" in _run(lab, "deploy").stdout
        lab.guard()
        verify = subprocess.Popen(
            [sys.executable, "-m", "invoke", "verify", "--json"],
            cwd=ROOT,
            env=lab.env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        # the loss ends once verify's hub has pinged backend-1 (the iptables counter of `seen`)
        deadline = time.monotonic() + 60
        while int(lab.ssh("proxy", "iptables -nvxL OUTPUT 1").stdout.split()[0]) == 0:
            assert time.monotonic() < deadline, "verify never pinged backend-1"
    finally:
        lab.ssh("proxy", f"iptables -D {drop}; iptables -D {seen}", check=False)
    out, _ = verify.communicate(timeout=120)
    OUTPUTS.append(out)
    report = json.loads(out)
    assert report["ok"], _failed(report)
    settle = report["settle"]
    assert settle["bound_seconds"] >= 10 and settle["waited_for"] == ["backend-1"], settle


def test_no_private_key_ever_reaches_the_controller(lab, deployed):
    """Read each host's private key here, in memory only, to look for it everywhere else."""
    secrets = []
    for h in lab.lab.network_hosts:
        key = lab.ssh(h.name, "cat /etc/wireguard/wg0.key").stdout.strip()
        assert len(key) == 44
        secrets.append(key)
    for text in OUTPUTS:
        for key in secrets:
            assert key not in text, "a private key appeared in a command's output"
    assert files_containing(secrets, ROOT, lab.files) == []
