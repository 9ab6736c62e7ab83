"""Grants: what a service's allow: list of backend, service and client names makes of each host.

Pure: the model and the plan. The lab (tests/lab/test_grants.py) proves the matrix on real hosts.
"""

from __future__ import annotations

import base64

from backhaul import etchosts, plan
from backhaul import network as netmod
from backhaul.render import render
from backhaul.wgconf import check_content

NET = """network: {{subnet: 10.50.0.0/24, paths: {paths}}}
proxy: {{name: proxy, public_ip: 203.0.113.10, public_ip6: "2001:db8::10"}}
backends:
  - {{name: b1, public_ip: 203.0.113.21, wg_ip: 10.50.0.2}}
  - {{name: b2, public_ip: 203.0.113.22, wg_ip: 10.50.0.3, public_ip6: "2001:db8::22"}}
  - {{name: b3, public_ip: 203.0.113.23, wg_ip: 10.50.0.4}}
  - {{name: b6, public_ip: "2001:db8::26", wg_ip: 10.50.0.5}}
services:
  - {{name: app, backend: b1, port: 8080, domains: [app.example.com], allow: [laptop]}}
  - {{name: db, backend: b2, port: 5432, allow: [app, b6, laptop]}}
clients:
  - {{name: laptop, public_key: "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=", wg_ip: 10.50.0.254}}
tls: {{mode: self-signed}}
"""


def _net(tmp_path, paths="direct"):
    p = tmp_path / "network.yml"
    p.write_text(NET.format(paths=paths))
    return netmod.load(p)


def test_allow_names_grant_the_backend_a_service_runs_on(tmp_path):
    net = _net(tmp_path)
    db = net.services[1]
    assert db.grants == ("b1", "b6")
    assert db.client_grants == ("laptop",)
    # a service with domains: its client names are nginx's list, no tunnel access
    assert net.services[0].client_grants == ()
    flows = [(f.src_name, f.service.name, f.direct, f.client) for f in plan.flows(net)]
    # b6 has IPv6 only and b2 both: a direct path over IPv6; a client always passes the hub
    assert flows == [("b1", "db", True, False), ("b6", "db", True, False), ("laptop", "db", False, True)]


def test_direct_partners_peer_with_each_other_on_their_common_family(tmp_path):
    net = _net(tmp_path)
    b1, b2, b3, b6 = (net.host(n) for n in ("b1", "b2", "b3", "b6"))
    assert [p.name for p in plan.direct_partners(net, b2)] == ["b1", "b6"]
    assert [p.name for p in plan.direct_partners(net, b1)] == ["b2"]
    assert plan.direct_partners(net, b3) == []
    assert plan.direct_peer(net, b1, b2, "K").endpoint == "203.0.113.22:51820"
    assert plan.direct_peer(net, b6, b2, "K").endpoint == "[2001:db8::22]:51820"
    assert plan.direct_peer(net, b2, b6, "K").allowed_ips == ("10.50.0.5/32",)


def test_the_destination_lets_in_exactly_the_granted_sources(tmp_path):
    net = _net(tmp_path)
    rules = plan.firewall_rules(net, net.host("b2"))
    to_db = sorted(r.src for r in rules if r.port == 5432)
    assert to_db == ["10.50.0.1", "10.50.0.2/32", "10.50.0.254/32", "10.50.0.5/32"]
    wg_from = sorted(r.src for r in rules if r.port == 51820)
    # the hub (both families), b1 over IPv4, b6 over IPv6: nobody else
    assert wg_from == ["2001:db8::10", "2001:db8::26", "203.0.113.10", "203.0.113.21"]
    # b3 is granted nothing: its services' rules name only the hub, and it peers with no one
    assert [r.src for r in plan.firewall_rules(net, net.host("b3")) if r.port == 51820] == ["203.0.113.10"]


def test_the_hub_forwards_only_flows_without_a_direct_path(tmp_path):
    direct = _net(tmp_path)
    routed = [(r.src, r.dst, r.port) for r in plan.firewall_rules(direct, direct.hub) if r.route]
    assert routed == [("10.50.0.254/32", "10.50.0.3/32", 5432)]  # the client only
    assert plan.hub_forwards(direct)
    via_hub = _net(tmp_path, paths="hub")
    routed = [(r.src, r.dst, r.port) for r in plan.firewall_rules(via_hub, via_hub.hub) if r.route]
    assert routed == [
        ("10.50.0.2/32", "10.50.0.3/32", 5432),
        ("10.50.0.5/32", "10.50.0.3/32", 5432),
        ("10.50.0.254/32", "10.50.0.3/32", 5432),
    ]
    assert plan.direct_partners(via_hub, via_hub.host("b2")) == []


def test_a_backends_hub_peer_carries_its_flows_through_the_hub(tmp_path):
    net = _net(tmp_path, paths="hub")
    assert plan.backend_hub_peer(net, "K", host=net.host("b2")).allowed_ips == (
        "10.50.0.1/32",
        "10.50.0.2/32",
        "10.50.0.5/32",
        "10.50.0.254/32",
    )
    assert plan.backend_hub_peer(net, "K", host=net.host("b1")).allowed_ips == (
        "10.50.0.1/32",
        "10.50.0.3/32",
    )
    assert plan.backend_hub_peer(net, "K", host=net.host("b3")).allowed_ips == ("10.50.0.1/32",)


def test_a_backend_conf_with_direct_peers_passes_the_conf_check(tmp_path):
    net = _net(tmp_path)
    b2 = net.host("b2")
    text = render(
        "wg-backend.conf.j2",
        interface="wg0",
        address=plan.wg_address(net, b2),
        listen_port=net.port,
        hub=plan.backend_hub_peer(net, "H" * 43 + "=", host=b2),
        direct=[plan.direct_peer(net, b2, p, "P" * 43 + "=") for p in plan.direct_partners(net, b2)],
    )
    check_content(text)
    assert text.count("[Peer]") == 3
    assert "Endpoint = [2001:db8::26]:51820" in text


def test_the_isolation_guard_lets_granted_sources_and_the_granted_client_through(tmp_path):
    net = _net(tmp_path)
    b2 = plan.isolation(net, net.host("b2"))
    assert sorted(a.src for a in b2.docker_allow) == [
        "10.50.0.1/32",
        "10.50.0.2/32",
        "10.50.0.254/32",
        "10.50.0.5/32",
    ]
    hub = plan.isolation(net, net.hub)
    assert [(f.src, f.dst, f.port) for f in hub.client_flows] == [("10.50.0.254/32", "10.50.0.3", 5432)]


def test_granted_services_have_names_on_the_backends_that_may_reach_them(tmp_path):
    net = _net(tmp_path)
    assert plan.names(net, net.host("b1")) == [("10.50.0.3", "db.internal")]
    assert plan.names(net, net.host("b3")) == []
    hosts = "127.0.0.1\tlocalhost\n"
    once = etchosts.with_names(hosts, plan.names(net, net.host("b1")))
    assert once.startswith(hosts) and "10.50.0.3\tdb.internal" in once
    assert etchosts.with_names(once, plan.names(net, net.host("b1"))) == once
    assert etchosts.with_names(once, []) == hosts


def test_backend_to_backend_keeps_its_meaning(tmp_path):
    p = tmp_path / "network.yml"
    p.write_text(NET.format(paths="direct").replace("paths: direct", "backend_to_backend: true"))
    net = netmod.load(p)
    assert plan.backend_hub_peer(net, "K", host=net.host("b3")).allowed_ips == ("10.50.0.0/24",)
    assert [r.src for r in plan.firewall_rules(net, net.host("b2")) if r.port == 5432] == [
        "10.50.0.0/24",
        "10.50.0.254/32",
    ]
    assert len(plan.names(net, net.host("b3"))) == 1 + 1  # app and db


def test_etc_hosts_is_read_byte_for_byte_and_left_alone_without_grants():
    from backhaul.facts.resolver import EtcHosts

    text = "127.0.0.1 localhost  \n\n# IPv6\n::1 localhost"  # blank line, trailing spaces, no final newline
    wire = base64.b64encode(text.encode()).decode()
    assert EtcHosts().process([wire]) == text
    assert EtcHosts().process([""]) == ""
    assert etchosts.with_names(text, []) == text  # no grant, no block: not a byte changes
    named = etchosts.with_names(text, [("10.50.0.3", "db.internal")])
    assert named.startswith("127.0.0.1 localhost  \n\n# IPv6\n::1 localhost\n# BEGIN backhaul")
    assert etchosts.with_names(named, []) == "127.0.0.1 localhost  \n\n# IPv6\n::1 localhost\n"
