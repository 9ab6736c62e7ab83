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


# -- replace-hub on every hub shape: the new hub's addresses of each family the old one had ---
V6_HUB = """\
network: {subnet: 10.50.0.0/24}
proxy: {public_ip: "2001:db8::10"}
backends:
  - {name: b2, public_ip: "2001:db8::12"}
tls: {mode: self-signed}
"""


def test_replace_hub_on_a_dual_stack_hub_takes_both_new_addresses(tmp_path):
    net = _load(tmp_path, DUAL)
    hub = network.set_hub_address(net.path, "198.51.100.20", public_ip6="2001:db8::20")
    assert [str(a) for a in hub.public_ips] == ["198.51.100.20", "2001:db8::20"]
    net = network.load(net.path)
    assert plan.backend_hub_peer(net, "H=", host=net.host("b2")).endpoint == "[2001:db8::20]:51820"
    assert 'proxy: {public_ip: 198.51.100.20, public_ip6: "2001:db8::20"}' in net.path.read_text()


@pytest.mark.parametrize(
    "text, ip, ip6, message",
    [
        # the old hub had IPv6 too: the IPv6-only backend b2 would keep dialling the dead one
        (DUAL, "198.51.100.20", None, r"proxy.public_ip6: the hub has an IPv6 address too.*--host6"),
        (DUAL, "2001:db8::20", None, r"--host is its IPv4 address.*--host6"),
        (DUAL, "198.51.100.20", "198.51.100.21", r"--host6 '198.51.100.21' is not an IPv6 address"),
        (DUAL, "198.51.100.20", "2001:db8::11", r"the public_ip6 of backend 'b1'"),
        (V6_HUB, "198.51.100.20", None, r"proxy.public_ip: the hub is IPv6-only.*IPv6 address"),
    ],
)
def test_replace_hub_refuses_a_missing_family_before_any_change(tmp_path, text, ip, ip6, message):
    net = _load(tmp_path, text)
    before = net.path.read_bytes()
    with pytest.raises(ConfigError, match=message):
        network.set_hub_address(net.path, ip, public_ip6=ip6)
    assert net.path.read_bytes() == before


def test_replace_hub_on_an_ipv6_only_hub_takes_an_ipv6_address(tmp_path):
    net = _load(tmp_path, V6_HUB)
    hub = network.set_hub_address(net.path, "2001:db8::20")
    assert [str(a) for a in hub.public_ips] == ["2001:db8::20"]


def test_the_replace_hub_flow_refuses_a_missing_family_before_any_host(tmp_path, monkeypatch):
    from backhaul import flows

    def no_host(*a, **k):
        raise AssertionError("a host was contacted")

    monkeypatch.setattr(flows, "run_pyinfra", no_host)
    net = _load(tmp_path, DUAL)
    with pytest.raises(ConfigError, match="--host6"):
        flows.replace_hub(str(net.path), "198.51.100.20")


def test_the_closing_hint_names_what_is_really_wrong(tmp_path):
    from backhaul.flows import replace_hub_problem
    from backhaul.verify import Report

    net = _load(
        tmp_path,
        DUAL.replace(
            "tls:", "services:\n  - {name: app, backend: b1, port: 8080, domains: [app.example.com]}\ntls:"
        ),
    )
    report = Report("n")
    report.add("handshake", "b2", "fail", "no handshake with the hub for 200 s")
    report.add("https", "app", "fail", "certificate for app.example.com not valid")
    hint = replace_hub_problem(net, report)
    assert "handshake b2: no handshake with the hub" in hint
    assert "app.example.com" in hint and "198.51.100.10" in hint and "2001:db8::10" in hint
    report = Report("n")
    report.add("handshake", "b2", "fail", "no handshake with the hub for 200 s")
    assert "DNS" not in replace_hub_problem(net, report)
