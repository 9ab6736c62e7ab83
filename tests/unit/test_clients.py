"""Admin clients (road-warrior peers): the model, the hub's peers, allow lists by name, expiry."""

from __future__ import annotations

import datetime
import textwrap
from pathlib import Path

import pytest

from backhaul import fields, nginxconf, schema
from backhaul import network as netmod
from backhaul.errors import ConfigError

K1 = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
K2 = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="

BASE = """\
network: {subnet: 10.50.0.0/24}
proxy: {public_ip: 203.0.113.10}
backends:
  - {name: backend-1, public_ip: 203.0.113.21, wg_ip: 10.50.0.2}
services:
  - {name: admin, backend: backend-1, port: 8080, domains: [admin.example.com], allow: %s}
tls: {mode: self-signed}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "network.yml"
    p.write_text(textwrap.dedent(text))
    return p


def test_clients_get_the_highest_free_address_written_back(tmp_path):
    p = write(
        tmp_path,
        BASE % "[clients]"
        + f"""\
clients:
  - name: laptop
    public_key: {K1}
  - {{name: phone, public_key: {K2}, expires: 2030-01-31}}
""",
    )
    net = netmod.load(p, write_back=True)
    laptop, phone = net.clients
    assert (laptop.name, str(laptop.wg_ip), laptop.expires) == ("laptop", "10.50.0.254", None)
    assert (str(phone.wg_ip), phone.expires) == ("10.50.0.253", datetime.date(2030, 1, 31))
    text = p.read_text()
    assert "    wg_ip: 10.50.0.254\n" in text and "wg_ip: 10.50.0.253" in text
    # a backend allocated later never takes a client's address, nor the other way round
    assert str(netmod.next_free_wg_ip(net)) == "10.50.0.3"


def test_allow_by_client_name_and_all_clients(tmp_path):
    p = write(
        tmp_path,
        (BASE % "[clients, 198.51.100.7]").replace(
            "tls:",
            f"""\
  - {{name: ops, backend: backend-1, port: 8081, domains: [ops.example.com], allow: [laptop]}}
clients:
  - {{name: laptop, public_key: {K1}, wg_ip: 10.50.0.200}}
  - {{name: phone, public_key: {K2}, wg_ip: 10.50.0.201}}
tls:""",
        ),
    )
    net = netmod.load(p)
    admin, ops = net.services
    assert admin.allow == ("198.51.100.7/32", "10.50.0.200/32", "10.50.0.201/32")
    assert ops.allow == ("10.50.0.200/32",)
    assert ops.restricted and admin.restricted


def test_allow_clients_with_no_client_still_denies_everyone(tmp_path):
    net = netmod.load(write(tmp_path, BASE % "[clients]"))
    assert net.services[0].allow == () and net.services[0].restricted


def test_a_backend_cannot_take_a_clients_explicit_address(tmp_path):
    p = write(
        tmp_path,
        BASE.replace("wg_ip: 10.50.0.2", "wg_ip: 10.50.0.2}\n  - {name: b2, public_ip: 203.0.113.22") % "[]"
        + f"""\
clients:
  - {{name: laptop, public_key: {K1}, wg_ip: 10.50.0.3}}
""",
    )
    net = netmod.load(p, write_back=True)
    assert str(net.host("b2").wg_ip) == "10.50.0.4"


def test_add_and_remove_client_edit_only_their_entry(tmp_path):
    p = write(tmp_path, BASE % "[]")
    c = netmod.add_client(p, "laptop", K1)
    assert (c.name, str(c.wg_ip)) == ("laptop", "10.50.0.254")
    assert netmod.load(p).clients == (c,)
    with pytest.raises(ConfigError, match="already a client"):
        netmod.add_client(p, "laptop", K2)
    with pytest.raises(ConfigError, match="already the public key of 'laptop'"):
        netmod.add_client(p, "phone", K1)
    with pytest.raises(ConfigError, match="not a WireGuard public key"):
        netmod.add_client(p, "phone", "hello")
    with pytest.raises(ConfigError, match="is a host"):
        netmod.add_client(p, "backend-1", K2)
    before = p.read_text()
    with pytest.raises(ConfigError, match="no client 'phone'"):
        netmod.remove_client(p, "phone")
    assert p.read_text() == before
    assert netmod.remove_client(p, "laptop") == c
    assert netmod.load(p).clients == ()


def test_remove_client_refuses_while_an_allow_list_names_it(tmp_path):
    p = write(tmp_path, BASE % "[laptop]" + f"clients:\n  - {{name: laptop, public_key: {K1}}}\n")
    before = p.read_text()
    with pytest.raises(ConfigError) as e:
        netmod.remove_client(p, "laptop")
    # the service by its name, located at its allow list in the file
    assert (e.value.problems[0].line, e.value.problems[0].field) == (6, "services[0].allow")
    assert "service 'admin' allows 'laptop' by name" in str(e.value)
    assert p.read_text() == before


def test_the_example_file_shows_every_client_field(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh/id_ed25519").write_text("a key\n")
    example = Path(__file__).resolve().parents[2] / "network.example.yml"
    net = netmod.load(example)
    assert [(c.name, str(c.wg_ip)) for c in net.clients] == [("laptop", "10.50.0.254")]
    text = example.read_text()
    for key in (*schema.keys.CLIENT_KEYS, "client_warn_days"):
        assert f"{key}:" in text


# -- the hub's side: peers, firewall, isolation, DNS -------------------------------------------

TWO = (
    BASE % "[clients]"
    + f"""\
clients:
  - {{name: laptop, public_key: {K1}}}
  - {{name: phone, public_key: {K2}, expires: 2030-01-31}}
"""
)
BEFORE = datetime.date(2030, 1, 30)
ON = datetime.date(2030, 1, 31)


def test_clients_are_hub_peers_without_endpoint_until_they_expire(tmp_path):
    from backhaul import plan
    from backhaul.render import render

    net = netmod.load(write(tmp_path, TWO))
    peers = plan.client_peers(net, BEFORE)
    assert [(p.name, p.public_key, p.allowed_ips, p.endpoint) for p in peers] == [
        ("laptop (client)", K1, ("10.50.0.254/32",), None),
        ("phone (client)", K2, ("10.50.0.253/32",), None),
    ]
    assert [p.name for p in plan.client_peers(net, ON)] == ["laptop (client)"]
    conf = render("wg-hub.conf.j2", interface="wg0", address="10.50.0.1/24", listen_port=51820, peers=peers)
    assert "# phone (client)\n[Peer]\nPublicKey = " + K2 + "\nAllowedIPs = 10.50.0.253/32\n" in conf
    assert "Endpoint = None" not in conf and conf.count("Endpoint") == 0


def test_with_clients_the_hub_takes_wireguard_from_anywhere_and_dns_from_the_tunnel(tmp_path):
    from backhaul import plan

    net = netmod.load(write(tmp_path, TWO))
    rules = plan.firewall_rules(net, net.hub)
    wg = [r for r in rules if r.port == 51820]
    assert [r.src for r in wg] == ["203.0.113.21", "any"]  # clients roam: any address
    dns = [r for r in rules if r.port == 53]
    assert [(r.proto, r.src, r.dst, r.interface) for r in dns] == [(None, "10.50.0.0/24", "10.50.0.1", "wg0")]
    none = netmod.load(write(tmp_path, BASE % "[]"))
    assert not [
        r for r in plan.firewall_rules(none, none.hub) if r.port == 53 or r.src == "any" and r.port == 51820
    ]


def test_the_hub_forwards_nothing_from_or_to_a_client(tmp_path):
    from backhaul import plan
    from backhaul.operations.isolation import guard_files

    net = netmod.load(write(tmp_path, TWO))
    rules = guard_files(plan.isolation(net, net.hub))["rules4"]
    for ip in ("10.50.0.254", "10.50.0.253"):
        assert f"-A backhaul-forward -s {ip}/32 -j DROP" in rules
        assert f"-A backhaul-forward -d {ip}/32 -j DROP" in rules
    # a backend's guard knows nothing of clients (they never reach it)
    assert "10.50.0.254" not in guard_files(plan.isolation(net, net.backends[0]))["rules4"]


def test_the_hub_resolver_answers_the_services_domains_with_its_wg_address(tmp_path):
    from backhaul import clients

    net = netmod.load(write(tmp_path, TWO))
    conf = clients.resolver_conf(net)
    assert "listen-address=10.50.0.1\n" in conf and "bind-dynamic\n" in conf
    assert "host-record=admin.example.com,10.50.0.1\n" in conf
    # answered here for every type (no AAAA): else an AAAA query goes to the hub's resolvers,
    # hangs or returns the public IPv6, and the client goes round the tunnel (and gets 403)
    assert "local=/admin.example.com/\n" in conf
    assert "interface=" not in conf and "127.0.0.1" not in conf


def test_the_client_config_peers_with_the_hub_only_and_names_its_resolver(tmp_path):
    from backhaul import clients

    net = netmod.load(write(tmp_path, TWO))
    priv, pub = clients.keypair()
    assert len(priv) == 44 and fields.public_key_error(pub) is None and priv != pub
    text = clients.config_text(net, net.client("laptop"), "HUBKEY=", priv)
    lines = text.splitlines()
    assert lines[1:4] == ["[Interface]", f"PrivateKey = {priv}", "Address = 10.50.0.254/32"]
    assert lines[lines.index("DNS = 10.50.0.1") + 1] == ""
    # a stock Debian client has no resolvconf, which wg-quick needs for DNS =: the config
    # itself says what to install (or what to do instead), right above the line
    note = "\n".join(lines[4 : lines.index("DNS = 10.50.0.1")])
    assert note.startswith("# ") and "apt install openresolv" in note and "nameserver 10.50.0.1" in note
    assert "Endpoint = 203.0.113.10:51820\n" in text and "AllowedIPs = 10.50.0.1/32\n" in text
    mine = clients.config_text(net, net.client("laptop"), "HUBKEY=", None)
    assert "PrivateKey" not in mine.replace("# PrivateKey", "") and "# PrivateKey" in mine
    qr = clients.qr_text(text)
    assert qr.count("\n") > 20 and priv not in qr


def test_expiry_warns_within_the_set_days_and_fails_from_the_day(tmp_path):
    from backhaul import clients

    net = netmod.load(write(tmp_path, TWO))
    assert clients.expiry(net, datetime.date(2030, 1, 16)) == []
    assert clients.expiry(net, datetime.date(2030, 1, 17)) == [
        ("phone", "warn", "expires on 2030-01-31 (in 14 days): renew its expires: or remove it")
    ]
    assert clients.expiry(net, ON) == [
        (
            "phone",
            "fail",
            "expired on 2030-01-31: the hub has no peer for it after a deploy; "
            "inv remove-client phone (or move its expires:)",
        )
    ]


def test_nginx_allows_the_named_clients_and_an_empty_name_list_denies_all(tmp_path):
    from backhaul import tls

    net = netmod.load(write(tmp_path, TWO))
    paths = {s.name: tls.self_signed_paths(s.name) for s in net.services}
    from tests.unit.test_nginx import DEFAULTS

    settings = nginxconf.ProxySettings.from_data(DEFAULTS)
    vhost = nginxconf.nginx_files(net, paths, settings, (1, 26), False)[nginxconf.site_file("admin")]
    assert "allow 10.50.0.254/32;\n    allow 10.50.0.253/32;\n    deny all;" in vhost
    # every address of the hub, its WireGuard address included: a client gets there too
    assert "    listen 443 ssl;\n" in vhost
    alone = netmod.load(write(tmp_path, BASE % "[clients]"))
    vhost = nginxconf.nginx_files(alone, paths, settings, (1, 26), False)[nginxconf.site_file("admin")]
    assert "deny all;" in vhost and "allow " not in vhost


def test_verify_checks_the_hubs_client_peers_and_expiry(tmp_path):
    from backhaul.verify import Report, client_checks

    net = netmod.load(write(tmp_path, TWO))
    hub = {
        "peers": {
            K1: {"allowed_ips": ["10.50.0.254/32"], "latest_handshake": 0},
            K2: {"allowed_ips": ["10.50.0.253/32"], "latest_handshake": 0},
        }
    }
    report = Report("n")
    client_checks(net, {"proxy": hub}, datetime.date(2030, 1, 20), report)
    assert [(c.check, c.host, c.status) for c in report.checks] == [
        ("client", "laptop", "ok"),
        ("client", "phone", "warn"),
    ]
    report = Report("n")
    client_checks(net, {"proxy": hub}, ON, report)
    assert [(c.host, c.status) for c in report.checks] == [("laptop", "ok"), ("phone", "fail")]
    assert "still a peer of the hub" in report.checks[1].detail
    report = Report("n")
    client_checks(net, {"proxy": {"peers": {}}}, BEFORE, report)
    assert [c.status for c in report.checks] == ["fail", "fail"]
    assert "the hub has no peer for laptop" in report.checks[0].detail


# -- the flows: bad input changes nothing and contacts no host ---------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "laptop", "public_key": "short"}, "not a WireGuard public key"),
        ({"name": "backend-1"}, "is a host"),
        ({"name": "Laptop"}, "not a valid client name"),
        ({"name": "laptop", "expires": "31/01/2030"}, "not a date"),
        # the day the hub drops it has come: a config shown now could never work
        ({"name": "laptop", "expires": "2020-01-31"}, "2020-01-31 is past"),
        ({"name": "laptop", "expires": "today"}, "not a date"),
    ],
)
def test_add_client_refuses_bad_input_before_any_host_or_file_change(tmp_path, kwargs, message, monkeypatch):
    from backhaul import flows, session
    from backhaul.errors import BackhaulError

    def no_host(*a, **k):
        raise AssertionError("a host was contacted")

    monkeypatch.setattr(session, "connect", no_host)
    monkeypatch.setattr(flows, "run_pyinfra", no_host)
    p = write(tmp_path, BASE % "[]")
    before = p.read_bytes()
    shown = []
    with pytest.raises(BackhaulError, match=message):
        flows.add_client(str(p), show=shown.append, **kwargs)
    assert p.read_bytes() == before and shown == []


def test_remove_client_refuses_an_unknown_name_before_any_host(tmp_path, monkeypatch):
    from backhaul import flows
    from backhaul.errors import BackhaulError

    monkeypatch.setattr(
        flows, "run_pyinfra", lambda *a, **k: (_ for _ in ()).throw(AssertionError("a host was contacted"))
    )
    p = write(tmp_path, BASE % "[]")
    with pytest.raises(BackhaulError, match="no client 'laptop'"):
        flows.remove_client(str(p), "laptop")


def test_client_config_of_an_unknown_client_contacts_no_host(tmp_path, monkeypatch):
    from backhaul import flows, session
    from backhaul.errors import BackhaulError

    monkeypatch.setattr(
        session, "connect", lambda *a, **k: (_ for _ in ()).throw(AssertionError("a host was contacted"))
    )
    with pytest.raises(BackhaulError, match="no client 'laptop'.*clients: none"):
        flows.client_config(str(write(tmp_path, BASE % "[]")), "laptop")


# -- which hub key a client's config names (after a hub key rotation or replace-hub) ----------
HUB_OLD = "SFdNeDpx0RMMlAsw5kT2K+oweYGOlUgYSRO4nsPV1RE="


def test_verify_warns_for_every_client_whose_config_names_another_hub_key(tmp_path):
    from backhaul.verify import Report, client_checks

    text = TWO.replace(f"public_key: {K1}}}", f"public_key: {K1}, hub_key: '{HUB_OLD}'}}")
    net = netmod.load(write(tmp_path, text))
    assert net.client("laptop").hub_key == HUB_OLD and net.client("phone").hub_key is None
    peers = {
        K1: {"allowed_ips": ["10.50.0.254/32"], "latest_handshake": 0},
        K2: {"allowed_ips": ["10.50.0.253/32"], "latest_handshake": 0},
    }
    report = Report("n")
    client_checks(
        net,
        {"proxy": {"peers": peers, "wireguard": {"public_key": HUB_OLD}}},
        BEFORE - datetime.timedelta(days=30),
        report,
    )
    assert [(c.host, c.status) for c in report.checks] == [("laptop", "ok"), ("phone", "warn")]
    assert "inv client-config phone" in report.checks[1].detail
    # the hub's key changed (rotate-keys, replace-hub): every config naming the old one is stale
    report = Report("n")
    client_checks(
        net,
        {"proxy": {"peers": peers, "wireguard": {"public_key": K2}}},
        BEFORE - datetime.timedelta(days=30),
        report,
    )
    assert [(c.host, c.status) for c in report.checks] == [("laptop", "warn"), ("phone", "warn")]
    assert "names the hub's old key" in report.checks[0].detail
    assert "inv client-config laptop" in report.checks[0].detail


def test_add_client_and_client_config_record_the_hub_key_they_show(tmp_path, monkeypatch):
    from backhaul import flows

    p = write(tmp_path, BASE % "[]")
    monkeypatch.setattr(flows, "_hub_public_key", lambda net: HUB_OLD)
    monkeypatch.setattr(flows, "run_pyinfra", lambda *a, **k: flows.Run(0, [], {}))
    shown = []
    flows.add_client(str(p), "laptop", public_key=K1, show=shown.append)
    assert netmod.load(p).client("laptop").hub_key == HUB_OLD
    assert f"PublicKey = {HUB_OLD}" in shown[0]
    monkeypatch.setattr(flows, "_hub_public_key", lambda net: K2)  # the hub's key rotated
    flows.client_config(str(p), "laptop", show=shown.append)
    assert f"PublicKey = {K2}" in shown[1]
    assert netmod.load(p).client("laptop").hub_key == K2
    assert "hub_key:" in p.read_text()


def test_the_clients_to_give_a_new_config_after_a_hub_change(tmp_path):
    from backhaul import clients

    text = TWO.replace(f"public_key: {K1}}}", f"public_key: {K1}, hub_key: '{HUB_OLD}'}}")
    net = netmod.load(write(tmp_path, text))
    assert [c.name for c in clients.stale(net, HUB_OLD)] == ["phone"]
    assert [c.name for c in clients.stale(net, K2)] == ["laptop", "phone"]
    assert clients.stale_advice(net, K2) == [
        "backhaul: client laptop's config names the hub's old key: run inv client-config laptop "
        "and load the new config on that device",
        "backhaul: client phone's config may name an old hub key (which one was not recorded: "
        "it predates hub_key): run inv client-config phone and load the new config on that device",
    ]


def test_a_new_hub_makes_every_active_clients_config_stale(tmp_path):
    from backhaul import clients

    text = TWO.replace(f"public_key: {K1}}}", f"public_key: {K1}, hub_key: '{HUB_OLD}'}}")
    net = netmod.load(write(tmp_path, text))
    assert [c.name for c in clients.stale(net, None)] == ["laptop", "phone"]
