"""Admin clients on the tunnel (issue 15): a lab host plays the admin's laptop.

It joins with the config `inv add-client` shows, resolves an allow-listed service's domain
with the hub's resolver and gets a 200 over the tunnel, while the same URL from outside gets
403; it reaches the hub, never a backend behind it; remove-client and expiry take its peer off
the hub with no packet lost on the backends' tunnels.
"""

from __future__ import annotations

import datetime
import re
import subprocess
import time
import warnings

import pytest
import yaml

from backhaul import clients
from backhaul.lab.pinger import Pinger

from .conftest import SUITE, fresh_lab, own_lab_name

pytestmark = pytest.mark.fleet

PORT = 8090


@pytest.fixture(scope="module")
def lab():
    # hosts with backhaul's packages in (packaged): this module is not about installing them;
    # the session labs deploy from bare hosts
    with fresh_lab(own_lab_name("cl"), backends=1, spares=1, suite=SUITE, packaged=True) as lab:
        text = lab.network.read_text()
        domain = f"ops.{lab.lab.domain}"
        # backend_to_backend on: the subnet is routed through the hub, so only the hub's guard
        # stands between a client and the backends
        text = text.replace("network:\n", "network:\n  backend_to_backend: true\n", 1)
        text = re.sub(r"services:.*?\n(?=\S|\Z)", "", text, flags=re.S)
        text += (
            f"services:\n  - {{name: ops, backend: backend-1, port: {PORT}, "
            f"domains: [{domain}], allow: [clients]}}\n"
        )
        lab.network.write_text(text)
        lab.inv("deploy")
        lab.ssh(
            "backend-1",
            f"systemd-run --unit=ops python3 -m http.server {PORT} --bind "
            f"$(ip -4 -o addr show wg0 | awk '{{print $4}}' | cut -d/ -f1)",
        )
        laptop = next(h for h in lab.hosts if h.role == "spare").name
        lab.ssh(
            laptop,
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
            # openresolv: what the config says wg-quick needs for its DNS line on Debian
            "--no-install-recommends wireguard-tools wireguard-go curl openresolv >/dev/null",
            timeout=300,
        )
        lab.domain, lab.laptop = domain, laptop
        yield lab


def _pingers(lab) -> list[Pinger]:
    wg = [b["wg_ip"] for b in yaml.safe_load(lab.network.read_text())["backends"]]
    return [Pinger(lab.files / "ssh_config", "proxy", ip).start() for ip in wg]


def _hub_peers(lab) -> list[str]:
    return lab.ssh("proxy", "wg show wg0 peers").stdout.split()


def _curl(lab, host: str, url: str, resolve: str = "") -> str:
    cmd = f"curl -sk -o /dev/null -w '%{{http_code}}' --max-time 5 {resolve} {url}"
    return lab.ssh(host, cmd, check=False).stdout.strip()


def _first_200(lab, host: str, url: str, within: float = 10.0) -> str:
    """The status of ``url`` from ``host``, asked again for up to ``within`` seconds while it
    is not 200. Seen once in CI (1 run in 5, not reproduced in 3 more): a 502 on the laptop's
    first request right after add-client. Any answer that is not a 200 at once is reported as
    a warning, with the hub's nginx error log, so the next look has what it needs."""
    first = status = _curl(lab, host, url)
    deadline = time.monotonic() + within
    while status != "200" and time.monotonic() < deadline:
        time.sleep(1)
        status = _curl(lab, host, url)
    if first != "200":
        log = lab.ssh("proxy", "tail -n 5 /var/log/nginx/error.log", check=False).stdout
        warnings.warn(f"first answer {first}, then {status}; the hub's nginx error log:\n{log}", stacklevel=2)
    return status


def test_a_laptop_joins_with_add_client_and_reaches_an_allow_listed_service_by_name(lab):
    pingers = _pingers(lab)
    proc = lab.inv("add-client", "--name", "laptop")
    assert all(p.stop().lost == 0 for p in pingers)
    out = proc.stdout
    conf = out[out.index("[Interface]") : out.index("The same as a QR code")].strip() + "\n"
    private = re.search(r"^PrivateKey = (\S+)$", conf, re.M).group(1)
    assert "█" in out  # the QR code
    net = yaml.safe_load(lab.network.read_text())
    client = next(c for c in net["clients"] if c["name"] == "laptop")
    assert private not in lab.network.read_text() and client["wg_ip"] == "10.50.0.254"
    assert "DNS = 10.50.0.1\n" in conf and "apt install openresolv" in conf
    # the config as shown, on a Debian laptop with what the config asks for (openresolv):
    # wg-quick itself points the laptop's resolver at the hub
    lab.ssh(lab.laptop, f"umask 077; cat > /etc/wireguard/wg0.conf <<'EOF'\n{conf}EOF\nwg-quick up wg0")
    resolved = lab.ssh(lab.laptop, f"getent hosts {lab.domain}").stdout.split()[0]
    assert resolved == "10.50.0.1"
    assert _first_200(lab, lab.laptop, f"https://{lab.domain}/") == "200"
    # the same URL from the internet (the laptop's own public address, off the tunnel)
    hub_ip = lab.ip("proxy")
    outside = subprocess.run(
        [
            "curl",
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            "--resolve",
            f"{lab.domain}:443:{hub_ip}",
            f"https://{lab.domain}/",
        ],
        capture_output=True,
        text=True,
    )
    assert outside.stdout == "403"
    report = lab.verify()
    rows = {(c["check"], c["host"]): c["status"] for c in report["checks"]}
    assert report["ok"] and rows[("client", "laptop")] == "ok", report
    assert "backhaul: no changes" in lab.inv("deploy").stdout  # with clients too
    # ... and it still reads the hub once: the resolver's state is in the bundled read
    proc = lab.pyinfra("deploys/site.py", "-vv")
    loaded = re.findall(r"^\s*\[(\S+)\]\s+Loaded fact (\S+)", proc.stdout + proc.stderr, re.M)
    # (server.sysctl of backend_to_backend, on in this lab, reads two facts of pyinfra's own
    # on every run, clients or not: not bundled yet)
    b2b = {"server.Sysctl", "files.FindInFile"}
    assert {f for h, f in loaded if h == "proxy"} - b2b == {"backhaul.facts.bundle.FactBundle"}, loaded
    again = lab.inv("client-config", "laptop").stdout
    hub_key = lab.ssh("proxy", "cat /etc/wireguard/wg0.pub").stdout.strip()
    assert f"PublicKey = {hub_key}" in again and private not in again and "# PrivateKey" in again


def test_after_a_hub_key_rotation_verify_names_the_stale_client_and_the_fix(lab):
    old_key = lab.ssh("proxy", "cat /etc/wireguard/wg0.pub").stdout.strip()
    proc = lab.inv("rotate-keys", "--host", "proxy")
    fix = "inv client-config laptop"
    assert f"backhaul: client laptop's config names the hub's old key: run {fix}" in proc.stdout
    rows = {c["host"]: c for c in lab.verify()["checks"] if c["check"] == "client"}
    assert rows["laptop"]["status"] == "warn" and fix in rows["laptop"]["detail"], rows
    assert _curl(lab, lab.laptop, f"https://{lab.domain}/") == "000"  # cut off, as verify says
    # the fix verify names: the new config's peer on the device; it works again, verify is quiet
    new = lab.inv("client-config", "laptop").stdout
    new_key = re.search(r"^PublicKey = (\S+)$", new, re.M).group(1)
    assert new_key != old_key
    lab.ssh(
        lab.laptop,
        f"sed -i 's|^PublicKey = .*|PublicKey = {new_key}|' /etc/wireguard/wg0.conf && "
        "wg-quick down wg0 && wg-quick up wg0",
    )
    assert _first_200(lab, lab.laptop, f"https://{lab.domain}/", within=30) == "200"
    rows = {c["host"]: c for c in lab.verify()["checks"] if c["check"] == "client"}
    assert rows["laptop"]["status"] == "ok", rows


def test_a_client_reaches_the_hub_never_a_backend_behind_it(lab):
    backend = yaml.safe_load(lab.network.read_text())["backends"][0]["wg_ip"]
    hub_key = lab.ssh("proxy", "cat /etc/wireguard/wg0.pub").stdout.strip()
    # the laptop sends the whole subnet into its tunnel: the hub still forwards nothing
    # (seen: with the hub's client rules deleted by hand, this curl got 200)
    lab.ssh(
        lab.laptop, f"wg set wg0 peer {hub_key} allowed-ips 10.50.0.0/24 && ip route add 10.50.0.0/24 dev wg0"
    )
    try:
        assert lab.ssh(lab.laptop, f"ip route get {backend}").stdout.split()[2] == "wg0"
        assert _curl(lab, lab.laptop, f"http://{backend}:{PORT}/") == "000"
        assert lab.ssh(lab.laptop, f"ping -c 2 -W 1 {backend}", check=False).returncode != 0
        assert lab.ssh(lab.laptop, "ping -c 2 -W 1 10.50.0.1", check=False).returncode == 0
        fetch = f"import urllib.request as u; print(u.urlopen('http://{backend}:{PORT}/', timeout=5).status)"
        assert lab.ssh("proxy", f'python3 -c "{fetch}"').stdout.strip() == "200"  # the hub does
    finally:
        lab.ssh(
            lab.laptop,
            f"ip route del 10.50.0.0/24 dev wg0; wg set wg0 peer {hub_key} allowed-ips 10.50.0.1/32",
        )


def test_a_client_granted_a_tunnel_only_service_reaches_it_and_nothing_else(lab):
    backend = yaml.safe_load(lab.network.read_text())["backends"][0]["wg_ip"]
    before = lab.network.read_text()
    vault = f"  - {{name: vault, backend: backend-1, port: {PORT + 1}, allow: [laptop]}}\n"
    lab.network.write_text(re.sub(r"(\n  - \{name: ops, [^\n]*\n)", lambda m: m.group(1) + vault, before))
    lab.inv("deploy")
    lab.ssh(
        "backend-1",
        f"systemd-run --unit=vault python3 -m http.server {PORT + 1} --bind {backend} && "
        f"for i in $(seq 600); do ss -Hltn 'sport = :{PORT + 1}' | grep -q . && exit 0; sleep 0.05; done",
    )
    conf = lab.inv("client-config", "laptop").stdout
    allowed = re.search(r"^AllowedIPs = (.+)$", conf, re.M).group(1)
    assert allowed == f"10.50.0.1/32, {backend}/32"  # the hub, and the granted service's backend
    hub_key = lab.ssh("proxy", "cat /etc/wireguard/wg0.pub").stdout.strip()
    lab.ssh(
        lab.laptop, f"wg set wg0 peer {hub_key} allowed-ips '{allowed}' && ip route add {backend}/32 dev wg0"
    )
    try:
        assert _curl(lab, lab.laptop, f"http://{backend}:{PORT + 1}/") == "200"
        # nothing else of that backend: not ops' port (nginx's, by its domain), not a ping
        assert _curl(lab, lab.laptop, f"http://{backend}:{PORT}/") == "000"
        assert lab.ssh(lab.laptop, f"ping -c 2 -W 1 {backend}", check=False).returncode != 0
    finally:
        lab.ssh(
            lab.laptop,
            f"ip route del {backend}/32 dev wg0; wg set wg0 peer {hub_key} allowed-ips 10.50.0.1/32",
        )
        lab.ssh("backend-1", "systemctl stop vault", check=False)
        lab.network.write_text(before)
        lab.inv("deploy")


def test_remove_client_takes_only_its_peer_off_the_hub(lab):
    key = next(c["public_key"] for c in yaml.safe_load(lab.network.read_text())["clients"])
    assert key in _hub_peers(lab)
    pingers = _pingers(lab)
    lab.inv("remove-client", "laptop")
    assert all(p.stop().lost == 0 for p in pingers)
    assert key not in _hub_peers(lab) and len(_hub_peers(lab)) == 1
    assert "laptop" not in lab.network.read_text()
    assert _curl(lab, lab.laptop, f"https://{lab.domain}/") == "000"


def test_expiry_warns_then_fails_and_deploy_drops_the_peer(lab):
    _, public = clients.keypair()
    soon = clients.today() + datetime.timedelta(days=3)
    lab.inv("add-client", "--name", "phone", "--public-key", public, "--expires", soon.isoformat())
    assert public in _hub_peers(lab)
    rows = {c["host"]: c for c in lab.verify()["checks"] if c["check"] == "client"}
    assert rows["phone"]["status"] == "warn" and "in 3 days" in rows["phone"]["detail"]
    # the day comes (written into the file, as a calendar would)
    lab.network.write_text(
        lab.network.read_text().replace(
            f"expires: {soon.isoformat()}", f"expires: {clients.today().isoformat()}"
        )
    )
    pingers = _pingers(lab)
    proc = lab.inv("deploy")
    assert all(p.stop().lost == 0 for p in pingers)
    assert "client phone expired on" in proc.stdout
    assert public not in _hub_peers(lab)
    report = lab.verify()
    rows = {c["host"]: c for c in report["checks"] if c["check"] == "client"}
    assert rows["phone"]["status"] == "fail" and not report["ok"]
    assert "still a peer" not in rows["phone"]["detail"]
    lab.inv("remove-client", "phone")
    assert lab.verify()["ok"]
