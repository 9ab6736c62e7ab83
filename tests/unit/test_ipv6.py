"""IPv6 in the model and the plan: a host's two public addresses, the family each tunnel runs
over, and the firewall rules of both families."""

from __future__ import annotations

from pathlib import Path

import pytest

from backhaul import network, plan
from backhaul.errors import ConfigError

DUAL = """\
network: {subnet: 10.50.0.0/24}
proxy: {public_ip: 198.51.100.10, public_ip6: "2001:db8::10"}
backends:
  - {name: b1, public_ip: 198.51.100.11, public_ip6: "2001:db8::11"}
  - {name: b2, public_ip: "2001:db8::12"}
  - {name: b3, public_ip: 198.51.100.13}
tls: {mode: self-signed}
"""


def _load(tmp_path: Path, text: str) -> network.Network:
    p = tmp_path / "network.yml"
    p.write_text(text)
    return network.load(p)


def test_a_dual_stack_hub_takes_an_ipv6_only_backend_and_an_ipv4_only_one(tmp_path):
    net = _load(tmp_path, DUAL)
    b1, b2, b3 = net.backends
    assert [str(a) for a in net.hub.public_ips] == ["198.51.100.10", "2001:db8::10"]
    assert (net.tunnel_family(b1), net.tunnel_family(b2), net.tunnel_family(b3)) == (4, 6, 4)
    assert b2.ssh_host == "2001:db8::12" and b1.ssh_host == "198.51.100.11"


def test_each_tunnel_dials_the_address_of_its_family(tmp_path):
    net = _load(tmp_path, DUAL)
    peers, _ = plan.hub_peers(net, {"b1": "K1=", "b2": "K2=", "b3": "K3="})
    assert [p.endpoint for p in peers] == [
        "198.51.100.11:51820",
        "[2001:db8::12]:51820",
        "198.51.100.13:51820",
    ]
    b2 = net.host("b2")
    assert plan.backend_hub_peer(net, "H=", host=b2).endpoint == "[2001:db8::10]:51820"
    assert plan.backend_hub_peer(net, "H=", host=net.host("b1")).endpoint == "198.51.100.10:51820"


def test_wireguard_is_let_in_from_the_peers_addresses_of_the_families_the_host_has(tmp_path):
    net = _load(tmp_path, DUAL)
    wg = [r.src for r in plan.firewall_rules(net, net.hub) if r.port == 51820]
    assert wg == ["198.51.100.11", "2001:db8::11", "2001:db8::12", "198.51.100.13"]
    # a backend lets in the hub's addresses of its own families only: an IPv4-only host never
    # gets an IPv6 rule (ufw with IPV6=no refuses those)
    assert [r.src for r in plan.firewall_rules(net, net.host("b3")) if r.port == 51820] == ["198.51.100.10"]
    assert [r.src for r in plan.firewall_rules(net, net.host("b2")) if r.port == 51820] == ["2001:db8::10"]
    assert [r.src for r in plan.firewall_rules(net, net.host("b1")) if r.port == 51820] == [
        "198.51.100.10",
        "2001:db8::10",
    ]


@pytest.mark.parametrize(
    "hub, backend, message",
    [
        (
            "{public_ip: 198.51.100.10}",
            '{name: b, public_ip: "2001:db8::12"}',
            "the backend has IPv6 only and the hub IPv4 only",
        ),
        (
            '{public_ip: "2001:db8::10"}',
            "{name: b, public_ip: 198.51.100.12}",
            "the backend has IPv4 only and the hub IPv6 only",
        ),
        (
            '{public_ip: "2001:db8::10", public_ip6: "2001:db8::11"}',
            "{name: b, public_ip: 198.51.100.12}",
            "public_ip 2001:db8::10 is IPv6 already",
        ),
        (
            "{public_ip: 198.51.100.10, public_ip6: 198.51.100.11}",
            "{name: b, public_ip: 198.51.100.12}",
            "is IPv4; public_ip6 is the host's IPv6 address",
        ),
        (
            '{public_ip: 198.51.100.10, public_ip6: "2001:db8::12"}',
            '{name: b, public_ip: "2001:db8::12"}',
            "is already the public_ip of backends[0]",
        ),
    ],
)
def test_bad_pairs_of_addresses_are_refused(tmp_path, hub, backend, message):
    text = (
        f"network: {{subnet: 10.50.0.0/24}}\nproxy: {hub}\nbackends: [{backend}]\n"
        "tls: {mode: self-signed}\n"
    )
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, text)
    assert message in str(e.value)


def test_add_backend_takes_an_ipv6_only_backend_beside_a_dual_stack_hub(tmp_path):
    p = tmp_path / "network.yml"
    p.write_text(
        "network: {subnet: 10.50.0.0/24}\n"
        'proxy: {public_ip: 198.51.100.10, public_ip6: "2001:db8::10"}\n'
        "backends: []\ntls: {mode: self-signed}\n"
    )
    host = network.add_backend(p, None, "2001:db8::30")
    assert str(host.public_ip) == "2001:db8::30"
    with pytest.raises(ConfigError, match="already the public_ip6 of 'proxy'"):
        network.add_backend(p, None, "2001:db8::10")


DUAL_HUB = (
    "network: {subnet: 10.50.0.0/24}\n"
    'proxy: {public_ip: 198.51.100.10, public_ip6: "2001:db8::10"}\n'
    "backends: []\ntls: {mode: self-signed}\n"
)


def test_add_backend_takes_a_dual_stack_backend_in_one_command(tmp_path):
    p = tmp_path / "network.yml"
    p.write_text(DUAL_HUB)
    host = network.add_backend(p, None, "198.51.100.30", public_ip6="2001:db8::30")
    assert (str(host.public_ip), str(host.public_ip6)) == ("198.51.100.30", "2001:db8::30")
    assert (
        "    public_ip: 198.51.100.30\n    public_ip6: 2001:db8::30\n    wg_ip: 10.50.0.2\n" in p.read_text()
    )
    assert network.load(p).host("backend-1") == host


@pytest.mark.parametrize(
    "ip6, message",
    [
        ("198.51.100.31", "public_ip6: '198.51.100.31' is IPv4; public_ip6 is the host's IPv6 address"),
        ("2001:db8:0:0::31", "public_ip6: '2001:db8:0:0::31' is not in canonical form; write 2001:db8::31"),
        ("fe80::31", "public_ip6: 'fe80::31' is a link-local address"),
        ("2001:db8::10", "public_ip6: '2001:db8::10' is already the public_ip6 of 'proxy'"),
        ("nonsense", "public_ip6: 'nonsense' is not an IP address; write e.g. 2001:db8::21"),
    ],
)
def test_add_backend_refuses_a_bad_ipv6_address_and_changes_nothing(tmp_path, ip6, message):
    p = tmp_path / "network.yml"
    p.write_text(DUAL_HUB)
    with pytest.raises(ConfigError) as e:
        network.add_backend(p, None, "198.51.100.31", public_ip6=ip6)
    assert message in str(e.value) and p.read_text() == DUAL_HUB


def test_verify_scans_every_family_and_flags_a_port_open_over_ipv6_only(tmp_path, monkeypatch):
    from backhaul import verify

    net = _load(tmp_path, DUAL)
    sockets = [{"proto": "tcp", "address": "::", "port": 8080, "interface": None, "process": "x"}]
    health = {h.name: {"sockets": sockets} for h in net.hosts}
    tried = []

    def answers(ip, port):
        tried.append((ip, port))
        return (
            port in (22, 80, 443)
            and not (ip == "198.51.100.10" and port == 80)
            or (ip == "2001:db8::11" and port == 8080)
        )

    monkeypatch.setattr(verify, "_tcp_open", answers)
    report = verify.Report("n")
    verify._external_checks(net, list(net.hosts), health, report)
    got = {c.host: (c.status, c.detail) for c in report.checks}
    assert ("2001:db8::10", 443) in tried and ("198.51.100.13", 8080) in tried
    assert got["b1"][0] == verify.FAIL and "[8080] over IPv6" in got["b1"][1]
    assert got["proxy"][0] == verify.FAIL and "the families differ" in got["proxy"][1]
    assert got["b2"] == (verify.OK, "from outside only [22] answer over IPv6 (2 ports tried)")
    assert got["b3"][0] == verify.OK
