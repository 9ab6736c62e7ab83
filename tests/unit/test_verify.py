"""verify's judgement of gathered facts (the lab tests prove the gathering)."""

from __future__ import annotations

from backhaul import network as netmod
from backhaul.settle import settle, unsettled
from backhaul.verify import Report, _exposure, _tunnel_checks, hub_checks

NET = """network: {subnet: 10.50.0.0/24}
proxy: {name: proxy, public_ip: 203.0.113.10}
backends:
  - {name: b1, public_ip: 203.0.113.21, wg_ip: 10.50.0.2}
tls: {mode: self-signed}
"""
KEY = "B" * 43 + "="


def _net(tmp_path):
    p = tmp_path / "network.yml"
    p.write_text(NET)
    return netmod.load(p)


def _health(handshake_age=10, peer_key=KEY, sockets=(), ping=True):
    now = 1_800_000_000
    hub = {
        "wireguard": {"service_active": True, "link_up": True},
        "listen_port": 51820,
        "now": now,
        "ping": {"10.50.0.2": ping},
        "tcp": {},
        "sockets": [],
        "peers": {
            peer_key: {
                "allowed_ips": ["10.50.0.2/32"],
                "latest_handshake": now - handshake_age if handshake_age else 0,
            }
        },
    }
    b1 = {
        "wireguard": {"public_key": KEY, "service_active": True},
        "listen_port": 51820,
        "now": now,
        "ping": {"10.50.0.1": ping},
        "tcp": {},
        "peers": {},
        "sockets": [
            {"proto": "tcp", "address": "0.0.0.0", "port": 22, "interface": None, "process": "sshd"},
            *sockets,
        ],
    }
    return {"proxy": hub, "b1": b1}


def _statuses(report: Report) -> dict[tuple[str, str], str]:
    return {(c.check, c.host): c.status for c in report.checks}


def test_a_healthy_tunnel(tmp_path):
    net = _net(tmp_path)
    report = Report("n")
    _tunnel_checks(net, list(net.backends), _health(), report)
    got = _statuses(report)
    assert got[("handshake", "b1")] == got[("ping", "b1")] == got[("exposure", "b1")] == "ok"
    assert report.ok and report.exit_code == 0


def test_a_stale_handshake_a_foreign_key_and_a_lost_ping_fail(tmp_path):
    net = _net(tmp_path)
    for health, check in (
        (_health(handshake_age=400), "handshake"),
        (_health(handshake_age=0), "handshake"),
        (_health(peer_key="C" * 43 + "="), "handshake"),
        (_health(ping=False), "ping"),
    ):
        report = Report("n")
        _tunnel_checks(net, list(net.backends), health, report)
        assert _statuses(report)[(check, "b1")] == "fail"
        assert report.exit_code == 1


def test_exposure_names_what_listens_beyond_the_tunnel(tmp_path):
    net = _net(tmp_path)
    wide = {"proto": "tcp", "address": "*", "port": 5432, "interface": None, "process": "postgres"}
    ok = [
        {"proto": "tcp", "address": "10.50.0.2", "port": 8080, "interface": None, "process": "x"},
        {"proto": "tcp", "address": "127.0.0.1", "port": 6379, "interface": None, "process": "r"},
        {"proto": "udp", "address": "0.0.0.0", "port": 51820, "interface": None, "process": None},
    ]
    report = Report("n")
    _exposure(net, net.backends[0], _health(sockets=[wide, *ok])["b1"], report)
    [check] = report.checks
    assert check.status == "fail" and "*:5432 (postgres)" in check.detail and "8080" not in check.detail


def test_an_unreachable_host_means_could_not_check(tmp_path):
    report = Report("n")
    report.add("ssh", "b1", "unknown", "no SSH connection")
    assert report.exit_code == 2 and report.to_json()["summary"]["unknown"] == 1


def test_ubuntu_24_04s_socket_activated_sshd_is_ssh_not_an_exposure(tmp_path):
    """Ubuntu 24.04 starts sshd per connection from ssh.socket: port 22 belongs to systemd
    (pid 1) in `ss`, not to sshd (a fixture of ListeningSockets from such a host)."""
    import json
    from pathlib import Path

    fixture = Path(__file__).parents[1] / "data/facts/system.ListeningSockets"
    sockets = json.loads((fixture / "ubuntu24_sshd_socket_activated.json").read_text())["expected"]
    assert {s["process"] for s in sockets if s["port"] == 22} == {"systemd"}
    net = _net(tmp_path)
    health = _health()["b1"] | {"sockets": sockets}
    report = Report("n")
    _exposure(net, net.backends[0], health, report)
    [check] = report.checks
    assert check.status == "ok", check.detail


GRANTS = """network: {subnet: 10.50.0.0/24}
proxy: {name: proxy, public_ip: 203.0.113.10}
backends:
  - {name: b1, public_ip: 203.0.113.21, wg_ip: 10.50.0.2}
  - {name: b2, public_ip: 203.0.113.22, wg_ip: 10.50.0.3}
  - {name: b3, public_ip: 203.0.113.23, wg_ip: 10.50.0.4}
services:
  - {name: app, backend: b1, port: 8080}
  - {name: db, backend: b2, port: 5432, allow: [app]}
tls: {mode: self-signed}
"""


def _grant_health(tcp: dict[str, dict[str, bool]], ping: dict[str, dict[str, bool]], handshake_age=10):
    now = 1_800_000_000
    peers = {KEY: {"allowed_ips": ["10.50.0.3/32"], "latest_handshake": now - handshake_age}}
    return {
        b: {"now": now, "tcp": tcp.get(b, {}), "ping": ping.get(b, {}), "peers": peers if b == "b1" else {}}
        for b in ("b1", "b2", "b3")
    }


def test_verify_reads_the_grant_matrix(tmp_path):
    from backhaul.verify import grant_checks

    p = tmp_path / "network.yml"
    p.write_text(GRANTS)
    net = netmod.load(p)
    good = _grant_health(
        {"b1": {"10.50.0.3:5432": True}}, {"b1": {"10.50.0.3": True}, "b2": {"10.50.0.2": True}}
    )
    report = Report("n")
    grant_checks(net, list(net.backends), good, report)
    assert [(c.check, c.host, c.status) for c in report.checks] == [
        ("grant", "b1", "ok"),
        ("grants", "b1", "ok"),
        ("grants", "b2", "ok"),
        ("grants", "b3", "ok"),
    ]
    # b3 reaching db, or pinging b1, is an answer without a grant; a stale direct path fails
    bad = _grant_health(
        {"b1": {"10.50.0.3:5432": True}, "b3": {"10.50.0.3:5432": True}},
        {"b3": {"10.50.0.2": True}},
        handshake_age=600,
    )
    report = Report("n")
    grant_checks(net, list(net.backends), bad, report)
    rows = {(c.check, c.host): (c.status, c.detail) for c in report.checks}
    assert rows[("grant", "b1")][0] == "fail" and "no recent handshake" in rows[("grant", "b1")][1]
    assert rows[("grants", "b3")] == (
        "fail",
        "answers without a grant: b1 10.50.0.2 (ping), db 10.50.0.3:5432: run inv deploy",
    )


TWO_HUBS = NET.replace(
    "backends:", "proxies:\n  - {name: proxy-2, public_ip: 203.0.113.11, wg_ip: 10.50.0.202}\nbackends:"
)


def _two_hubs(tmp_path):
    p = tmp_path / "network.yml"
    p.write_text(TWO_HUBS)
    return netmod.load(p)


def _with_second_hub(health: dict, age_from_b1: int) -> dict:
    now = health["b1"]["now"]

    def peer(ip: str, age: int) -> dict:
        return {"allowed_ips": [ip], "latest_handshake": now - age if age else 0}

    health["b1"]["peers"] = {
        "A" * 43 + "=": peer("10.50.0.1/32", 10),
        "H" * 43 + "=": peer("10.50.0.202/32", age_from_b1),
    }
    return health


def test_every_hub_is_checked_and_a_dead_one_is_named(tmp_path):
    net = _two_hubs(tmp_path)
    report = Report("n")
    hub_checks(net, list(net.backends), _with_second_hub(_health(), 10), report)
    assert [(c.check, c.host, c.status) for c in report.checks] == [("hub-link", "b1", "ok")] * 2
    assert "hub proxy-2 (10.50.0.202)" in report.checks[1].detail
    # proxy-2 is gone: no SSH (no health), and b1 has not heard from it for 10 minutes
    health = _with_second_hub(_health(), 600)
    report = Report("n")
    hub_checks(net, list(net.backends), health, report)
    rows = {(c.check, c.host): c for c in report.checks}  # the last row of each: proxy-2's
    assert rows[("hub", "proxy-2")].status == "fail" and "proxy-2" in rows[("hub", "proxy-2")].detail
    assert rows[("hub-link", "b1")].status == "fail" and "proxy-2" in rows[("hub-link", "b1")].detail
    assert report.exit_code == 1


def test_one_hub_has_no_hub_rows(tmp_path):
    net = _net(tmp_path)
    report = Report("n")
    hub_checks(net, list(net.backends), _health(), report)
    assert report.checks == []


def test_verify_watches_a_tunnel_until_it_shakes_hands(tmp_path):
    """A tunnel just restarted (ping lost, the hub's handshake from before the restart) is read
    again until it answers; the report states the wait and its bound."""
    net = _net(tmp_path)
    health = _health(ping=False)
    reads = []

    def read(names):
        reads.append(names)
        return _health() if len(reads) == 2 else _health(ping=False)

    settled = settle(read, net, list(net.backends), health, bound=30)
    assert reads == [["proxy", "b1"], ["proxy", "b1"]]
    assert settled["waited_for"] == ["b1"] and settled["bound_seconds"] == 30
    report = Report("n", settle=settled)
    _tunnel_checks(net, list(net.backends), health, report)
    assert report.ok and report.to_json()["settle"] == settled
    assert "waited" in report.to_table() and "at most 30s" in report.to_table()


def test_a_tunnel_that_never_shakes_hands_fails_after_the_bound(tmp_path):
    net = _net(tmp_path)
    health = _health(handshake_age=0, ping=False)
    settled = settle(lambda names: _health(handshake_age=0, ping=False), net, list(net.backends), health, 1.5)
    assert settled["waited_for"] == ["b1"] and 1.5 <= settled["waited_seconds"] < 3
    assert unsettled(net, list(net.backends), health) == ["b1"]


def test_what_no_wait_can_mend_fails_at_once(tmp_path):
    """A wrong key, a missing peer or a stopped tunnel is not settling: no wait for it."""
    net = _net(tmp_path)
    stopped = _health(ping=False)
    stopped["b1"]["wireguard"]["service_active"] = False
    for health in (_health(peer_key="C" * 43 + "=", ping=False), stopped, _health()):
        assert unsettled(net, list(net.backends), health) == []
