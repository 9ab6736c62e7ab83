"""Two or more hubs (``proxies:`` beside ``proxy:``): the model, and what each host gets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from backhaul import flows, network, nginxconf, plan, session, tls
from backhaul.errors import ConfigError
from backhaul.network import load
from backhaul.render import render

TWO_HUBS = """\
network:
  subnet: 10.50.0.0/24
proxy:
  name: hub-a
  public_ip: 203.0.113.10
proxies:
  - name: hub-b
    public_ip: 203.0.113.11
    wg_ip: 10.50.0.3
backends:
  - name: web
    public_ip: 203.0.113.21
  - name: db
    public_ip: 203.0.113.22
services:
  - name: app
    backend: web
    port: 8080
    domains: [app.example.com]
  - name: pg
    backend: db
    port: 5432
tls:
  mode: self-signed
"""


@pytest.fixture
def net(tmp_path: Path):
    path = tmp_path / "network.yml"
    path.write_text(TWO_HUBS)
    return load(path)


def test_hubs_in_file_order_and_hub_is_the_first(net) -> None:
    assert [h.name for h in net.hubs] == ["hub-a", "hub-b"]
    assert net.hub.name == "hub-a"
    assert [h.role for h in net.hubs] == ["hub", "hub"]
    assert [h.name for h in net.backends] == ["web", "db"]
    assert [h.name for h in net.hosts] == ["hub-a", "hub-b", "web", "db"]


def test_allocation_skips_every_hub_address(net) -> None:
    # hub-a takes .1 by default, hub-b names .3: the backends get .2 and .4
    assert [str(h.wg_ip) for h in net.hosts] == ["10.50.0.1", "10.50.0.3", "10.50.0.2", "10.50.0.4"]


def test_one_hub_file_has_one_hub(tmp_path: Path) -> None:
    path = tmp_path / "network.yml"
    path.write_text(TWO_HUBS.split("proxies:")[0] + "backends: []\ntls:\n  mode: self-signed\n")
    n = load(path)
    assert n.hubs == (n.hub,) and n.other_hubs == ()


# -- WireGuard: every backend peers with every hub, the hubs with each other ------------------

KEYS = {"hub-a": "A" * 43 + "=", "hub-b": "B" * 43 + "=", "web": "W" * 43 + "=", "db": "D" * 43 + "="}


def test_each_hub_peers_with_every_backend_and_the_other_hubs(net) -> None:
    for me, other in (("hub-a", "hub-b"), ("hub-b", "hub-a")):
        peers, missing = plan.hub_peers(net, KEYS, hub=net.host(me))
        assert missing == []
        got = {p.name: (p.public_key, p.allowed_ips, p.endpoint) for p in peers}
        assert got == {
            "web": (KEYS["web"], ("10.50.0.2/32",), "203.0.113.21:51820"),
            "db": (KEYS["db"], ("10.50.0.4/32",), "203.0.113.22:51820"),
            other: (KEYS[other], (net.host(other).wg_cidr,), f"{net.host(other).public_ip}:51820"),
        }


def test_a_hub_whose_key_is_unreadable_keeps_its_peer(net) -> None:
    keys = dict(KEYS, **{"hub-b": None})
    peers, missing = plan.hub_peers(net, keys, {"10.50.0.3/32": "K" * 43 + "="}, hub=net.host("hub-a"))
    assert [p.public_key for p in peers if p.name == "hub-b"] == ["K" * 43 + "="]
    peers, missing = plan.hub_peers(net, keys, hub=net.host("hub-a"))
    assert missing == ["hub-b"]


def test_a_backend_peers_with_every_hub_each_carrying_its_own_address(net) -> None:
    web = net.host("web")
    first = plan.backend_hub_peer(net, KEYS["hub-a"], host=web)
    more = plan.other_hub_peers(net, {"hub-b": KEYS["hub-b"]}, web)
    assert first.allowed_ips == ("10.50.0.1/32",)
    assert [(p.name, p.allowed_ips, p.endpoint) for p in more] == [
        ("hub-b", ("10.50.0.3/32",), "203.0.113.11:51820")
    ]
    conf = render(
        "wg-backend.conf.j2",
        interface="wg0",
        address="10.50.0.2/24",
        listen_port=51820,
        hub=first,
        more_hubs=more,
        direct=[],
    )
    assert conf.count("[Peer]") == 2
    assert "# hub-b (a hub)\n[Peer]\nPublicKey = " + KEYS["hub-b"] in conf
    # AllowedIPs never overlap between the two peers
    assert conf.count("AllowedIPs = 10.50.0.1/32") == 1 and conf.count("AllowedIPs = 10.50.0.3/32") == 1


def test_backend_to_backend_routes_the_subnet_through_the_first_hub(net) -> None:
    b2b = dataclasses.replace(net, backend_to_backend=True)
    web = b2b.host("web")
    assert plan.backend_hub_peer(b2b, KEYS["hub-a"], host=web).allowed_ips == ("10.50.0.0/24",)
    # the second hub's /32 is longer than the subnet: its own traffic goes to it
    assert plan.other_hub_peers(b2b, {"hub-b": KEYS["hub-b"]}, web)[0].allowed_ips == ("10.50.0.3/32",)


# -- firewall ----------------------------------------------------------------------------------


def _rules(net, name):
    return {(r.port, r.proto, r.src, r.dst) for r in plan.firewall_rules(net, net.host(name))}


def test_a_backend_lets_in_wireguard_and_its_services_from_every_hub(net) -> None:
    rules = _rules(net, "web")
    assert (51820, "udp", "203.0.113.10", "any") in rules
    assert (51820, "udp", "203.0.113.11", "any") in rules
    assert (8080, "tcp", "10.50.0.1", "10.50.0.2") in rules
    assert (8080, "tcp", "10.50.0.3", "10.50.0.2") in rules


def test_each_hub_lets_in_wireguard_from_the_backends_and_the_other_hubs(net) -> None:
    for me, other in (("hub-a", "203.0.113.11"), ("hub-b", "203.0.113.10")):
        rules = _rules(net, me)
        assert {(51820, "udp", ip, "any") for ip in ("203.0.113.21", "203.0.113.22", other)} <= rules
        assert (80, "tcp", "any", "any") in rules and (443, "tcp", "any", "any") in rules


def test_the_isolation_guard_lets_every_hub_reach_a_published_port(net) -> None:
    allow = plan.isolation(net, net.host("web")).docker_allow
    assert {(a.src, a.port) for a in allow} == {("10.50.0.1/32", 8080), ("10.50.0.3/32", 8080)}


# -- nginx: every service on every hub; a challenge another hub's certbot wrote is fetched from it


NGINX_DEFAULTS = {
    "nginx_keepalive": 0,
    "nginx_keepalive_timeout": "60s",
    "nginx_connect_timeout": "5s",
    "nginx_read_timeout": "60s",
    "nginx_websocket_timeout": "1h",
    "nginx_client_max_body_size": "16m",
}


def _nginx(net, hub):
    net = dataclasses.replace(net, tls=dataclasses.replace(net.tls, mode="acme"))
    certs = tls.certificates(net)
    settings = nginxconf.ProxySettings.from_data(NGINX_DEFAULTS)
    return nginxconf.nginx_files(net, {c.name: c.final for c in certs}, settings, (1, 26, 3), False, hub=hub)


def test_every_hub_serves_every_service_and_forwards_challenges_it_lacks_to_the_others(net) -> None:
    a, b = (_nginx(net, net.host(n)) for n in ("hub-a", "hub-b"))
    assert a.keys() == b.keys() and nginxconf.site_file("app") in a
    assert a[nginxconf.site_file("app")] == b[nginxconf.site_file("app")]
    shared_a, shared_b = a[nginxconf.SHARED_CONF], b[nginxconf.SHARED_CONF]
    assert "upstream backhaul_acme_peers {\n    server 10.50.0.3:80;\n" in shared_a
    assert "upstream backhaul_acme_peers {\n    server 10.50.0.1:80;\n" in shared_b
    assert "try_files $uri @backhaul_acme_peers;" in shared_a
    # a forwarded request is never forwarded again (no loop between two hubs lacking it)
    assert "if ($http_x_backhaul_acme_forwarded) {\n            return 404;" in shared_a


def test_one_hub_forwards_no_challenge(tmp_path) -> None:
    path = tmp_path / "network.yml"
    path.write_text(
        TWO_HUBS.replace("proxies:\n  - name: hub-b\n    public_ip: 203.0.113.11\n    wg_ip: 10.50.0.3\n", "")
    )
    one = load(path)
    shared = _nginx(one, one.hub)[nginxconf.SHARED_CONF]
    assert "acme_peers" not in shared and "try_files $uri =404;" in shared


# -- day 2 on two hubs -------------------------------------------------------------------------


class _Connected(Exception):
    pass


@pytest.mark.parametrize("args", [{"host": "hub-b"}, {"host": "hub-a"}, {"all_hosts": True}])
def test_rotating_any_hub_or_all_connects_to_every_host(net, args, monkeypatch) -> None:
    """Every backend and every other hub peers with a hub: its rotation needs them all."""
    seen = []

    def connect(_net, names=None):  # the file's addresses are not ours to contact
        seen.append(names)
        raise _Connected

    monkeypatch.setattr(session, "connect", connect)
    with pytest.raises(_Connected):
        flows.rotate_keys(str(net.path), **args)
    assert seen == [None]


def test_a_backends_rotation_or_adding_touches_every_hub(net) -> None:
    assert flows.hubs_and(net, "web") == ["hub-a", "hub-b", "web"]


# -- rotate-keys of a hub: its new key reaches every backend and every other hub -----------------

OLD, NEW = "O" * 43 + "=", "N" * 43 + "="


class _Output:
    def __init__(self, stdout: str):
        self.stdout_lines, self.stderr_lines = [stdout] if stdout else [], []


class _RecordingHost:
    """Answers a rotation's commands as a host would (the staged key, the current key) and
    records each one: which host is told what, without SSH."""

    data = object()

    def __init__(self, name: str, log: list[tuple[str, str]]):
        self.name, self.log = name, log

    def run_shell_command(self, command, **_kw):
        text = str(command)
        self.log.append((self.name, text))
        if ".pub.next" in text and text.rstrip().endswith(".pub.next"):  # stage: prints the new key
            return True, _Output(NEW)
        if text.startswith("cat /etc/wireguard/wg0.pub"):
            return True, _Output(OLD)
        return True, _Output("")


def _rotate_hub(net, name):
    from backhaul import rotation

    log: list[tuple[str, str]] = []
    hosts = type("H", (), {"by_name": {h.name: _RecordingHost(h.name, log) for h in net.hosts}})()
    # the first hub by default, as with one hub
    key = rotation.rotate_hub(net, hosts, *([] if name == net.hub.name else [net.host(name)]))
    told = {}
    for host, cmd in log:
        if f"peer {OLD} remove peer {NEW}" in cmd:
            told[host] = cmd
    return key, log, told


@pytest.mark.parametrize("name, other", [("hub-b", "hub-a"), ("hub-a", "hub-b")])
def test_a_hubs_new_key_reaches_every_backend_and_the_other_hubs(net, name, other) -> None:
    key, log, told = _rotate_hub(net, name)
    assert key == NEW
    hub = net.host(name)
    # every host that has a peer for this hub swaps it (one `wg set`), and no other host is told
    assert sorted(told) == sorted(["web", "db", other])
    for host, cmd in told.items():
        assert f"allowed-ips {hub.wg_cidr} " in cmd, (host, cmd)
        assert f"endpoint {hub.public_ip}:51820" in cmd, (host, cmd)
        assert f"ping -c1 -W1 {hub.wg_ip} " in cmd, (host, cmd)  # hello to the rotated hub
    # only the rotated hub switches its own key
    assert [h for h, cmd in log if "private-key /etc/wireguard/wg0.key.next" in cmd] == [name]
    # the other hub is told that one swap and nothing else (its key and other peers stay)
    assert [cmd for h, cmd in log if h == other] == [told[other]]


# -- replace-hub of one of N hubs: --name says which ---------------------------------------------


def test_replace_hub_by_name_gives_that_hub_the_new_address_and_nothing_else(net) -> None:
    before = net.path.read_text()
    hub = network.set_hub_address(net.path, "203.0.113.40", name="hub-b")
    assert (hub.name, str(hub.public_ip), str(hub.wg_ip)) == ("hub-b", "203.0.113.40", "10.50.0.3")
    after = network.load(net.path)
    assert str(after.hub.public_ip) == "203.0.113.10"  # the first hub is left as it was
    assert after.path.read_text() == before.replace("203.0.113.11", "203.0.113.40")
    # a backend now dials the new server for hub-b, and the other hub too
    web = after.host("web")
    assert plan.peer_for_hub(after, hub, KEYS["hub-b"], web).endpoint == "203.0.113.40:51820"
    assert plan.peer_for_hub(after, hub, KEYS["hub-b"], after.hub).endpoint == "203.0.113.40:51820"
    # and the first hub, by its name too
    assert network.set_hub_address(net.path, "203.0.113.41", name="hub-a").name == "hub-a"
    assert str(network.load(net.path).hub.public_ip) == "203.0.113.41"


@pytest.mark.parametrize(
    "name, ip, message",
    [
        (None, "203.0.113.40", r"proxies: the file has 2 hubs \(hub-a, hub-b\); say which one .* --name"),
        ("web", "203.0.113.40", r"--name 'web' is not a hub; the hubs: hub-a, hub-b"),
        ("hub-b", "203.0.113.10", r"--host '203.0.113.10' is the public_ip of hub 'hub-a'"),
        ("hub-b", "203.0.113.21", r"the public_ip of backend 'web'"),
    ],
)
def test_replace_hub_refuses_an_unnamed_or_wrong_hub_before_any_change(net, name, ip, message) -> None:
    before = net.path.read_bytes()
    with pytest.raises(ConfigError, match=message):
        network.set_hub_address(net.path, ip, name=name)
    assert net.path.read_bytes() == before


def test_the_replace_hub_flow_refuses_an_unnamed_hub_before_any_host(net, monkeypatch) -> None:
    def no_host(*_a, **_k):
        raise AssertionError("a host was contacted")

    monkeypatch.setattr(flows, "run_pyinfra", no_host)
    with pytest.raises(ConfigError, match="hub-a, hub-b"):
        flows.replace_hub(str(net.path), "203.0.113.40")
