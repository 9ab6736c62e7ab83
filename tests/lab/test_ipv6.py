"""IPv6 on real hosts: a dual-stack hub and backend, and one backend with no IPv4 at all.

One lab covers the issue's three topologies: (a) every dual-stack host deploys, verifies and
answers over both families; (b) the IPv6-only backend's tunnel runs over IPv6; (c) a client that
reaches the hub over IPv6 only gets HTTPS with a valid certificate, and pebble's HTTP-01
validation reached the hub over IPv6. And the firewall: a scan over IPv6 finds exactly what a
scan over IPv4 finds, Docker-published ports included. Last, the hub dies: `inv replace-hub
--host --host6` puts the spare in its place and every backend, the IPv6-only one included,
follows it to a green verify.
"""

from __future__ import annotations

import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from .conftest import SUITE, fresh_lab, own_lab_name
from .labkit import LabHandle

pytestmark = pytest.mark.fleet

V6_ONLY = "backend-2"  # the demo's Docker services (admin, web) live there
# a server on every address of both families (a dual-stack socket on [::])
STRAY = "python3 -m http.server --bind :: 9098"


@pytest.fixture(scope="module")
def dual():
    # hosts with backhaul's packages in (packaged): this module is not about installing them;
    # the session labs deploy from bare hosts
    # (wireguard-go, never in those images, is still installed: apt over IPv6 on the v6-only host)
    with fresh_lab(
        own_lab_name("6"), backends=2, spares=1, suite=SUITE, v6_only=[V6_ONLY], packaged=True
    ) as lab:
        lab.inv("lab.demo", "--name", lab.lab.name)
        lab.inv("deploy")
        yield lab


def _host(lab: LabHandle, name: str):
    return next(h for h in lab.hosts if h.name == name)


def _listening_ports(lab: LabHandle, host: str) -> set[int]:
    """Every TCP port anything listens on, on any address (Docker's proxies and DNAT too:
    the ports it publishes are in its iptables, not always in ss)."""
    out = lab.ssh(
        host,
        "ss -Hltn | awk '{print $4}' | sed 's/.*://'; "
        "command -v docker >/dev/null && docker ps --format '{{.Ports}}' || true",
    ).stdout
    ports = set()
    for word in out.replace(",", " ").split():
        tail = word.rsplit(":", 1)[-1].split("->")[0]
        if tail.isdigit():
            ports.add(int(tail))
    return ports


def _scan(lab: LabHandle, ips_ports: list[tuple[str, int]]) -> set[tuple[str, int]]:
    with ThreadPoolExecutor(max_workers=64) as pool:
        answers = list(pool.map(lambda ip_port: lab.tcp_open(*ip_port, timeout=1.5), ips_ports))
    return {t for t, ok in zip(ips_ports, answers, strict=True) if ok}


def test_every_host_deploys_and_verifies_and_a_second_deploy_changes_nothing(dual):
    """(a) and (b): verify is all green (handshakes, https over each family, the scans)."""
    report = dual.wait_healthy(timeout=60)
    assert report["ok"], [c for c in report["checks"] if c["status"] != "ok"]
    again = dual.inv("deploy")
    assert "backhaul: no changes" in again.stdout, again.stdout[-3000:]


def _wireguard_rule_sources(lab: LabHandle) -> list[str]:
    rules = lab.ssh("proxy", "ufw status").stdout
    return sorted(
        line.split("#")[0].split()[-1] for line in rules.splitlines() if line.startswith("51820/udp")
    )


def test_add_backend_with_host6_brings_a_dual_stack_backend_in_with_one_command(dual):
    """`inv add-backend --host <IPv4> --host6 <IPv6>`: the file gets both addresses, the hub's
    WireGuard port opens to both, the network verifies; removed again after. (Before the
    scans below, which leave stray servers that verify rightly flags.)"""
    spare = next(h for h in dual.hosts if h.role == "spare")
    before = _wireguard_rule_sources(dual)
    try:
        dual.inv("add-backend", "--name", spare.name, "--host", str(spare.ip), "--host6", str(spare.ip6))
        entry = next(
            b for b in yaml.safe_load(dual.network.read_text())["backends"] if b["name"] == spare.name
        )
        assert (entry["public_ip"], entry["public_ip6"]) == (str(spare.ip), str(spare.ip6)), entry
        assert _wireguard_rule_sources(dual) == sorted([*before, str(spare.ip), str(spare.ip6)])
        report = dual.wait_healthy(timeout=60)
        assert report["ok"], [c for c in report["checks"] if c["status"] != "ok"]
    finally:
        dual.inv("remove-backend", "--name", spare.name, check=False)
    assert _wireguard_rule_sources(dual) == before


def test_the_v6_only_backends_tunnel_runs_over_ipv6(dual):
    """(b) the hub dials the IPv6-only backend at its IPv6 address and the backend the hub at
    the hub's IPv6 address; the dual-stack backend keeps IPv4."""
    b1, b2, hub = _host(dual, "backend-1"), _host(dual, V6_ONLY), _host(dual, "proxy")
    dual.wait_healthy(timeout=60)
    endpoints = dual.ssh("proxy", "wg show wg0 endpoints").stdout
    assert f"[{b2.ip6}]:51820" in endpoints, endpoints
    assert f"{b1.ip}:51820" in endpoints, endpoints
    assert f"[{hub.ip6}]:51820" in dual.ssh(V6_ONLY, "wg show wg0 endpoints").stdout
    dual.ssh("proxy", "ping -c 2 -W 3 10.50.0.3")
    handshake = dual.ssh(V6_ONLY, "wg show wg0 latest-handshakes").stdout.split()
    assert int(handshake[-1]) > time.time() - 180, handshake


def test_a_client_over_ipv6_only_gets_https_with_a_valid_certificate(dual):
    """(c) connect to the hub's IPv6 address, check the certificate against pebble's root; the
    certificate's HTTP-01 challenge was fetched from the hub over IPv6 (pebble's DNS answers
    AAAA, and pebble prefers it)."""
    hub = _host(dual, "proxy")
    domain = f"app.{dual.lab.domain}"
    ctx = ssl.create_default_context(cafile=str(dual.files / "acme-root.pem"))
    dual.guard(str(hub.ip6))
    with socket.create_connection((str(hub.ip6), 443), timeout=5) as raw:
        assert raw.family == socket.AF_INET6
        with ctx.wrap_socket(raw, server_hostname=domain) as tls:
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {domain}\r\nConnection: close\r\n\r\n".encode())
            head = tls.recv(4096).decode(errors="replace").split("\r\n", 1)[0]
    assert head.startswith("HTTP/1.1 200"), head
    log = dual.ssh("proxy", "cat /var/log/nginx/access.log").stdout
    fetched = [line for line in log.splitlines() if "/.well-known/acme-challenge/" in line]
    assert fetched and all(line.startswith(str(dual.lab.gateway6)) for line in fetched), fetched


def test_a_scan_over_ipv6_finds_exactly_what_a_scan_over_ipv4_finds(dual):
    """Every port anything listens on (Docker's published ports included), tried over both
    families: the dual-stack hosts answer the same ports on each, and the IPv6-only backend
    answers over IPv6 what the dual-stack backend answers over IPv4 (SSH only). Strays a
    careless admin leaves: a server on every address of both families on each host, and on the
    IPv6-only backend a container published without an address on a user-defined network
    (Docker publishes it on [::] too, past ufw)."""
    for name in ("proxy", "backend-1"):
        dual.ssh(name, f"systemd-run --unit stray {STRAY}")
    dual.ssh(
        V6_ONLY,
        "docker network inspect stray >/dev/null 2>&1 || docker network create "
        "stray >/dev/null; docker rm -f stray >/dev/null 2>&1; docker run -d --name stray "
        "--network stray -p 9096:8080 backhaul-demo-web:1 >/dev/null",
    )
    assert 9096 in _listening_ports(dual, V6_ONLY)
    for name in ("proxy", "backend-1"):
        assert 9098 in _listening_ports(dual, name), name
        h = _host(dual, name)
        ports = sorted(_listening_ports(dual, name) | {22, 80, 443})
        v4 = {p for _, p in _scan(dual, [(str(h.ip), p) for p in ports])}
        v6 = {p for _, p in _scan(dual, [(str(h.ip6), p) for p in ports])}
        assert v6 == v4, (name, v4, v6)
        assert v4 == ({22, 80, 443} if name == "proxy" else {22}), (name, v4)
    b2 = _host(dual, V6_ONLY)
    ports = sorted(_listening_ports(dual, V6_ONLY) | {22})
    assert {p for _, p in _scan(dual, [(str(b2.ip6), p) for p in ports])} == {22}, ports


def test_wireguard_is_open_only_to_the_backends_addresses_of_either_family(dual):
    b1, b2 = _host(dual, "backend-1"), _host(dual, V6_ONLY)
    assert _wireguard_rule_sources(dual) == sorted([str(b1.ip), str(b1.ip6), str(b2.ip6)])


def test_a_dead_dual_stack_hub_is_replaced_and_every_backend_follows(dual):
    """replace-hub on a dual-stack hub with an IPv6-only backend: without the new hub's IPv6
    address it is refused before anything changes; with --host and --host6 the spare takes
    the dead hub's place and the network verifies green with that one command (plus the DNS
    change); the IPv6-only backend dials the new hub's IPv6 address. Last: the hub is gone."""
    for name in ("proxy", "backend-1"):  # the scans' strays, which verify rightly flags
        dual.ssh(name, "systemctl stop stray", check=False)
    dual.ssh(V6_ONLY, "docker rm -f stray >/dev/null 2>&1; docker network rm stray >/dev/null 2>&1; true")
    spare = next(h for h in dual.hosts if h.role == "spare")
    before = dual.network.read_text()
    refused = dual.inv("replace-hub", "--host", str(spare.ip), check=False)
    assert refused.returncode != 0 and "--host6" in refused.stderr, refused.stderr
    assert dual.network.read_text() == before
    dual.inv("lab.destroy", "--name", dual.lab.name, "--host", "proxy")
    dual.inv("lab.dns", "--name", dual.lab.name, "--ip", str(spare.ip))  # the operator's DNS change
    out = dual.inv("replace-hub", "--host", str(spare.ip), "--host6", str(spare.ip6)).stdout
    assert f"point these names at {spare.ip} (A) and {spare.ip6} (AAAA)" in out, out[-3000:]
    report = dual.wait_healthy(timeout=60)
    assert report["ok"], [c for c in report["checks"] if c["status"] != "ok"]
    assert f"[{spare.ip6}]:51820" in dual.ssh(V6_ONLY, "wg show wg0 endpoints").stdout
    assert f"{spare.ip}:51820" in dual.ssh("backend-1", "wg show wg0 endpoints").stdout
