"""Two hubs (`proxies:`): no single server carries the front door.

One lab of its own, small: two hubs, one backend (the demo's `app`) and two spares. Both hubs
get their own certificate by HTTP-01 while the lab's DNS names both (a challenge that lands on
the other hub is fetched from it over the tunnel); a second deploy changes nothing; a backend's
new key, an added and a removed backend reach both hubs; the second hub's new key reaches every
host while the first hub's tunnels lose nothing, and `rotate-keys --all` leaves every peer on
its host's new key; then the hub DNS lists first dies while a client keeps sending requests
through the name, and every request is answered through the other hub; `inv verify` names the
dead hub and still checks the other; `inv replace-hub --name proxy` puts the first spare in
its place and the network verifies green (opt-in: the second spare replaces proxy-2 too).
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time

import pytest

from backhaul.lab import lab as labmod
from backhaul.lab import services
from backhaul.lab.pinger import Pinger
from backhaul.network import load

from .conftest import fresh_lab, own_lab_name

pytestmark = pytest.mark.fleet

APP = "app"  # the demo's service on backend-1
# curl --connect-timeout. curl 7.88 tries a name's addresses in turn; with the first one dead
# (no ARP answer) it moves on after about half of this plus 1 s, measured: 2 s -> every request
# timed out, 3 s -> 2.5 s, 4 s -> 3.0 s, 6 s -> 4.0 s (docs/two-hubs.md)
CONNECT_TIMEOUT = 4


# Replacing the second hub too builds one more hub (85 s on a loaded machine): a drill run on
# demand, off in `./dev test` for the suite's time budget (replace-hub of the first hub runs).
REPLACE_SECOND = os.environ.get("BACKHAUL_TEST_REPLACE_SECOND") == "1"


@pytest.fixture(scope="module")
def hubs():
    # a spare replaces the first hub; with REPLACE_SECOND a second one replaces the second hub
    # hosts with backhaul's packages in (packaged): this module is not about installing them;
    # the session labs deploy from bare hosts
    with fresh_lab(
        own_lab_name("h"), backends=1, spares=2 if REPLACE_SECOND else 1, hubs=2, packaged=True
    ) as lab:
        lab.inv("lab.demo", "--name", lab.lab.name)
        lab.inv("deploy")
        yield lab


def _domain(lab) -> str:
    return f"{APP}.{lab.lab.domain}"


def _curl(lab, addresses: list[str], max_time: float = 15) -> tuple[int, float, str]:
    """(status, seconds, curl's complaint) of one GET through the name, resolved to
    ``addresses`` in that order (curl tries them in turn, as it does with a DNS answer)."""
    for a in addresses:
        lab.guard(a)
    t0 = time.monotonic()
    proc = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--connect-timeout",
            str(CONNECT_TIMEOUT),
            "--max-time",
            str(max_time),
            "--cacert",
            str(lab.files / "acme-root.pem"),
            "--resolve",
            f"{_domain(lab)}:443:{','.join(addresses)}",
            f"https://{_domain(lab)}/",
        ],
        capture_output=True,
        text=True,
        timeout=max_time + 5,
    )
    status = int(proc.stdout or 0) if proc.returncode == 0 else 0
    return status, time.monotonic() - t0, proc.stderr.strip()


def test_the_dns_names_both_hubs_and_each_serves_with_its_own_valid_certificate(hubs):
    lab = hubs
    both = [lab.ip("proxy"), lab.ip("proxy-2")]
    assert services.lookup(lab.lab, _domain(lab)) == both
    for hub in both:
        assert _curl(lab, [hub])[0] == 200, hub  # pebble's root: a valid certificate
    # each hub made its own key: the two certificates differ
    keys = {
        lab.ssh(h, f"openssl pkey -pubout -in /etc/letsencrypt/live/{APP}/privkey.pem | sha256sum").stdout
        for h in ("proxy", "proxy-2")
    }
    assert len(keys) == 2


def test_a_second_deploy_with_two_hubs_changes_nothing(hubs):
    again = hubs.inv("deploy")
    assert "backhaul: no changes" in again.stdout, again.stdout[-3000:]
    report = hubs.wait_healthy()
    assert report["ok"], [c for c in report["checks"] if c["status"] != "ok"]


def _peers(lab, hub: str) -> str:
    """The hub's live peers: public key and allowed IPs, one per line."""
    return lab.ssh(hub, "wg show wg0 allowed-ips").stdout


def test_a_backends_new_key_reaches_both_hubs(hubs):
    lab = hubs
    old = lab.ssh("backend-1", "cat /etc/wireguard/wg0.pub").stdout.strip()
    lab.inv("rotate-keys", "--host", "backend-1")
    new = lab.ssh("backend-1", "cat /etc/wireguard/wg0.pub").stdout.strip()
    assert new != old
    for hub in ("proxy", "proxy-2"):
        assert f"{new}\t10.50.0.2/32" in _peers(lab, hub), hub
        assert old not in _peers(lab, hub), hub
        assert lab.ssh(hub, "ping -c1 -W2 10.50.0.2", check=False).returncode == 0, hub


def test_add_and_remove_backend_reach_both_hubs(hubs):
    lab = hubs
    spare = next(h for h in lab.hosts if h.role == "spare")
    lab.inv("add-backend", "--host", str(spare.ip))
    wg_ip = lab.ssh(spare.name, "ip -4 -br addr show wg0").stdout.split()[2].split("/")[0]
    for hub in ("proxy", "proxy-2"):
        assert f"{wg_ip}/32" in _peers(lab, hub), hub
        assert lab.ssh(hub, f"ping -c1 -W2 {wg_ip}", check=False).returncode == 0, hub
    lab.inv("remove-backend", "--name", spare.name)
    for hub in ("proxy", "proxy-2"):
        assert f"{wg_ip}/32" not in _peers(lab, hub), hub
        assert str(spare.ip) not in lab.ssh(hub, "ufw status").stdout, hub


def _pub(lab, host: str) -> str:
    return lab.ssh(host, "cat /etc/wireguard/wg0.pub").stdout.strip()


def test_the_second_hubs_new_key_reaches_every_host_and_the_first_hubs_tunnel_loses_nothing(hubs):
    lab = hubs
    second = "10.50.0.202"  # proxy-2's tunnel address (the lab's file)
    old = _pub(lab, "proxy-2")
    config = lab.files / "ssh_config"
    untouched = Pinger(config, "backend-1", "10.50.0.1").start()  # the first hub's tunnel
    rotated = Pinger(config, "backend-1", second).start()
    lab.inv("rotate-keys", "--host", "proxy-2")  # ends with a verify that must pass
    kept, gap = untouched.stop(), rotated.stop()
    new = _pub(lab, "proxy-2")
    assert new != old
    for host in ("proxy", "backend-1"):  # a backend and the other hub: the new key, live
        assert f"{new}\t{second}/32" in _peers(lab, host), host
        assert old not in _peers(lab, host), host
    assert lab.ssh("proxy", f"ping -c1 -W2 {second}", check=False).returncode == 0
    print(f"\nrotate proxy-2: {gap.lost} pings lost to it ({gap.gap_seconds:.2f}s), {kept.lost} to proxy")
    assert kept.sent > 20 and kept.lost == 0, kept
    assert gap.gap_seconds < 1.0, gap


def test_rotate_keys_all_with_two_hubs_leaves_every_peer_on_its_hosts_new_key(hubs):
    """The first hub's new key reaches the other hub too (not only the backends)."""
    lab = hubs
    names = ("proxy", "proxy-2", "backend-1")
    old = {h: _pub(lab, h) for h in names}
    lab.inv("rotate-keys", "--all")  # ends with a verify that must pass
    new = {h: _pub(lab, h) for h in names}
    assert all(new[h] != old[h] for h in names), (old, new)
    for host in names:
        live = _peers(lab, host)
        assert all(new[h] in live for h in names if h != host), (host, live)
        assert not any(old[h] in live for h in names), (host, live)


# ssh.via hub with two hubs: backend-1, switched to via: hub in a copy of the lab's file (the
# controller on ssh.allow_from, as an operator keeps a way in; the other tests keep the file
# they have), is reached through the first hub while it lives and through proxy-2 once it died
VIA = "network-via.yml"


def _sshd_logins_from(lab, backend: str, address: str) -> int:
    """Logins the backend's sshd accepted from this address (a hub's tunnel address: a jump)."""
    log = lab.ssh(
        backend,
        f"journalctl --no-pager -o cat | grep -c 'Accepted publickey.* from {address} ' || true",
    )
    return int(log.stdout.strip() or 0)


def test_a_via_hub_backend_answers_ssh_from_every_hub_on_the_tunnel(hubs):
    lab = hubs
    text = re.sub(
        r"(\n  known_hosts: .*\n)",
        rf"\1  via: hub\n  allow_from: [{lab.lab.gateway}]\n",
        lab.network.read_text(),
        count=1,
    )
    (lab.files / VIA).write_text(text)
    net = load(lab.files / VIA)
    lab.inv("deploy", "--limit", "backend-1", network=lab.files / VIA)  # directly, then closed over the hub
    assert _sshd_logins_from(lab, "backend-1", str(net.hub.wg_ip)) > 0  # the jump through the first hub
    rules = lab.ssh("backend-1", "ufw status").stdout
    for hub in net.hubs:
        assert re.search(rf"{net.host('backend-1').wg_ip} 22/tcp on wg0 +ALLOW +{hub.wg_ip}\b", rules), (
            hub.name,
            rules,
        )
    assert not re.search(r"^22/tcp( \(v6\))? +ALLOW +Anywhere", rules, re.M), rules  # public SSH closed


def test_one_hub_dies_and_every_request_is_answered_through_the_other(hubs):
    """A client sends requests through the name without a pause while the first hub DNS names
    dies (the lab kills its processes, then its network goes). Every request made before its
    death, and every request made once it is gone, is answered. The one request the death
    catches in flight on that hub may fail (seen: curl's TLS handshake reset by the dying hub,
    `SSL_ERROR_SYSCALL`, 0.02 s into the request); a browser retries such a request, curl does
    not. It is counted and printed, not hidden."""
    lab = hubs
    addresses = services.lookup(lab.lab, _domain(lab))  # the first hub first, as DNS answers
    results: list[tuple[float, float, int, str]] = []  # start, end, status, curl's words
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            start = time.monotonic()
            status, _took, complaint = _curl(lab, addresses)
            results.append((start, time.monotonic(), status, complaint))
            time.sleep(0.1)

    worker = threading.Thread(target=client)
    worker.start()
    try:
        time.sleep(3)
        died = time.monotonic()
        labmod.destroy(lab.lab, "proxy", log=lambda *_: None)  # powered off, its disk gone
        gone = time.monotonic()
        time.sleep(10)
    finally:
        stop.set()
        worker.join()
    before = [r for r in results if r[1] < died]
    after = [r for r in results if r[0] > gone]
    dying = [r for r in results if r not in before and r not in after]
    longest = max(end - start for start, end, _, _ in results)
    lost = [r for r in dying if r[2] != 200]
    print(
        f"\nfailover: {len(results)} requests: {len(before)} before the hub died, {len(dying)} "
        f"while it went ({gone - died:.1f}s; {len(lost)} failed), {len(after)} after; longest "
        f"{longest:.2f}s (curl --connect-timeout {CONNECT_TIMEOUT})"
    )
    for start, _end, status, complaint in lost:
        print(f"  in flight at {start - died:+.2f}s: {status} {complaint}")

    def failures(rows):  # when (from the death), status and curl's words
        return [(f"{a - died:+.2f}s", status, words) for a, _b, status, words in rows if status != 200]

    assert before and not failures(before), failures(before)
    assert after and not failures(after), failures(after)
    # one client, one request at a time: at most the one the death caught in flight
    assert len(lost) <= 1, failures(dying)
    # the survivor's tunnel to the backend is intact
    assert lab.ssh("backend-1", "ping -c1 -W2 10.50.0.202", check=False).returncode == 0
    # verify fails, names the dead hub, and still checks the survivor
    report = lab.verify()
    assert not report["ok"]
    rows = {(c["check"], c["host"]): c for c in report["checks"]}
    assert rows[("hub", "proxy")]["status"] == "fail", report["checks"]
    assert rows[("https", f"{APP} {_domain(lab)} via proxy-2")]["status"] == "ok"
    assert rows[("wireguard", "proxy-2")]["status"] == "ok"


def test_with_the_first_hub_dead_a_via_hub_backend_is_reached_through_the_other(hubs):
    """The jump tries the dead first hub once (a short bounded try), then goes through
    proxy-2: not directly (this machine is on ssh.allow_from, and the flow would fall back to
    that had no hub carried the jump)."""
    lab = hubs
    net = load(lab.files / VIA)
    second = str(net.host("proxy-2").wg_ip)
    before = _sshd_logins_from(lab, "backend-1", second)
    proc = lab.inv("deploy", "--limit", "backend-1", network=lab.files / VIA, check=False)
    out = proc.stdout + proc.stderr
    assert "no SSH that way" not in out, out[-3000:]
    assert _sshd_logins_from(lab, "backend-1", second) > before, out[-3000:]
    assert "jumping through the hub proxy-2 (proxy: " in out, out[-3000:]  # the run says why
    # what is left is the dead hub's own part: its key cannot be read (the peer is kept)
    assert "cannot read the public key of the hub proxy " in out, out[-3000:]
    assert "backend-1: Could not connect" not in out and "SSH error" not in out, out[-3000:]


def test_the_dead_hub_is_replaced_by_a_new_server_and_the_network_is_green(hubs):
    """`inv replace-hub` with a second hub alive: the spare (a bare-ish server now) takes the
    dead first hub's place; DNS names it beside proxy-2 first, as the operator would."""
    lab = hubs
    spare = next(h for h in lab.hosts if h.role == "spare")
    second = next(h for h in lab.hosts if h.name == "proxy-2")
    services.name_addresses(
        lab.lab, lab.network, [str(spare.ip), str(second.ip)], [str(spare.ip6), str(second.ip6)]
    )
    proc = lab.inv("replace-hub", "--name", "proxy", "--host", str(spare.ip))
    assert "healthy" in proc.stdout, proc.stdout[-3000:]
    assert _curl(lab, [str(spare.ip)])[0] == 200
    assert _curl(lab, [lab.ip("proxy-2")])[0] == 200


@pytest.mark.skipif(
    not REPLACE_SECOND, reason="a drill on demand: BACKHAUL_TEST_REPLACE_SECOND=1 (85 s more)"
)
def test_a_hub_under_proxies_is_replaced_by_name_while_the_first_serves(hubs):
    """`inv replace-hub --name proxy-2`: the second spare takes the place of proxy-2, which
    dies first, while the first hub (the first spare since the drill above) serves."""
    lab = hubs
    first, fresh = [h for h in lab.hosts if h.role == "spare"]
    labmod.destroy(lab.lab, "proxy-2", log=lambda *_: None)
    services.name_addresses(
        lab.lab, lab.network, [str(first.ip), str(fresh.ip)], [str(first.ip6), str(fresh.ip6)]
    )
    proc = lab.inv("replace-hub", "--name", "proxy-2", "--host", str(fresh.ip))
    assert "healthy" in proc.stdout, proc.stdout[-3000:]
    assert _curl(lab, [str(fresh.ip)])[0] == 200
    assert _curl(lab, [str(first.ip)])[0] == 200
    # the first hub and the backend peer with the new server's key, at proxy-2's address
    new = _pub(lab, fresh.name)
    for host in (first.name, "backend-1"):
        assert f"{new}\t10.50.0.202/32" in _peers(lab, host), host
