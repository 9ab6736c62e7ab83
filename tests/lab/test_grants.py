"""Grants on real hosts: a 1+3 lab where app (backend-1) is granted db (backend-2) and
backend-3 is granted nothing.

The whole matrix is what the file says, from every backend (and verify's neighbour finds
nothing); app reaches db by name on a direct path (a live handshake between the two, and the
hub carries none of the flow), which keeps working with the hub's tunnel down; revoking the
grant closes it in one deploy with no packet lost on the other tunnels.
"""

from __future__ import annotations

import re
import time

import pytest
import yaml

from backhaul.lab.pinger import Pinger

from .conftest import SUITE, fresh_lab, own_lab_name

pytestmark = pytest.mark.fleet

SERVICES = """services:
  - {name: app, backend: backend-1, port: 8080}
  - {name: db, backend: backend-2, port: 5432, allow: [app]}
  - {name: other, backend: backend-3, port: 9000}
"""


def _wg(lab) -> dict[str, str]:
    net = yaml.safe_load(lab.network.read_text())
    return {b["name"]: b["wg_ip"] for b in net["backends"]} | {
        "proxy": net["proxy"].get("wg_ip", "10.50.0.1")
    }


def _serve(lab, host: str, port: int) -> None:
    """A small HTTP server on the backend's tunnel address (a service bound to the tunnel)."""
    lab.ssh(
        host,
        f"systemd-run --unit=svc{port} python3 -m http.server {port} --bind {_wg(lab)[host]} "
        "--directory /usr/share/doc && for i in $(seq 600); do "
        f"ss -Hltn 'sport = :{port}' | grep -q . && exit 0; sleep 0.05; done; exit 1",
    )


def _opens(lab, host: str, target: str, port: int) -> bool:
    """Whether ``host`` opens a TCP connection to ``target``:``port`` over the tunnel."""
    cmd = f"timeout 3 bash -c 'exec 3<>/dev/tcp/{target}/{port}' && echo open"
    return lab.ssh(host, cmd, check=False).stdout.strip() == "open"


def _get(lab, host: str, url: str) -> str:
    """The HTTP status of ``url`` from ``host`` (python3 is on every host; curl is not)."""
    cmd = f"python3 -c \"import urllib.request as u; print(u.urlopen('{url}', timeout=5).status)\""
    return lab.ssh(host, cmd, check=False).stdout.strip()


def _pings(lab, host: str, target: str) -> bool:
    return (
        lab.ssh(host, f"ping -c1 -W1 -q {target} >/dev/null && echo yes", check=False).stdout.strip() == "yes"
    )


@pytest.fixture(scope="module")
def lab():
    # hosts with backhaul's packages in (packaged): this module is not about installing them;
    # the session labs deploy from bare hosts
    with fresh_lab(own_lab_name("gr"), backends=3, spares=0, suite=SUITE, packaged=True) as lab:
        text = re.sub(r"services:.*?\n(?=\S|\Z)", "", lab.network.read_text(), flags=re.S)
        lab.network.write_text(text + SERVICES)
        lab.inv("deploy")
        for host, port in (("backend-1", 8080), ("backend-2", 5432), ("backend-3", 9000)):
            _serve(lab, host, port)
        yield lab


def test_the_matrix_is_exactly_what_the_file_grants(lab):
    wg = _wg(lab)
    # app -> db by name, over the tunnel
    assert _get(lab, "backend-1", "http://db.internal:5432/") == "200"
    assert lab.ssh("backend-1", "getent hosts db.internal").stdout.split()[0] == wg["backend-2"]
    # nothing else between backends: no other port, no ping, and no name for what is not granted
    assert not _opens(lab, "backend-3", wg["backend-2"], 5432)
    assert not _opens(lab, "backend-2", wg["backend-1"], 8080)
    assert not _opens(lab, "backend-1", wg["backend-3"], 9000)
    assert not _opens(lab, "backend-3", wg["backend-1"], 8080)
    assert not _pings(lab, "backend-3", wg["backend-2"])
    assert not _pings(lab, "backend-3", wg["backend-1"])
    assert lab.ssh("backend-3", "getent hosts db.internal", check=False).returncode != 0
    # the hub still reaches every service (nginx's path)
    for host, port in (("backend-1", 8080), ("backend-2", 5432), ("backend-3", 9000)):
        assert _opens(lab, "proxy", wg[host], port)
    # verify shows the grant and finds nothing else answering (its neighbour included)
    report = lab.wait_healthy()
    rows = [(c["check"], c["host"], c["status"], c["detail"]) for c in report["checks"]]
    grant = [r for r in rows if r[0] == "grant"]
    assert grant == [
        ("grant", "backend-1", "ok", f"backend-1 -> db.internal ({wg['backend-2']}:5432, direct)")
    ]
    assert {r[1] for r in rows if r[0] == "grants" and r[2] == "ok"} == {
        "backend-1",
        "backend-2",
        "backend-3",
    }


def test_app_and_db_peer_directly_and_the_hub_carries_none_of_it(lab):
    wg = _wg(lab)
    assert "backhaul: no changes" in lab.inv("deploy").stdout  # grants, names and all
    peers = lab.ssh("backend-1", "wg show wg0 allowed-ips").stdout
    assert f"{wg['backend-2']}/32" in peers
    assert f"{wg['backend-3']}/32" not in peers  # granted nothing: no peer either way

    def hub_bytes() -> int:
        out = lab.ssh("proxy", "wg show wg0 transfer").stdout.split()
        return sum(int(x) for x in out[1::3]) + sum(int(x) for x in out[2::3])

    before = hub_bytes()
    for _ in range(5):
        assert _get(lab, "backend-1", "http://db.internal:5432/") == "200"
    # 5 directory listings (tens of KB) passed; the hub saw only keepalives and verify's reads
    assert hub_bytes() - before < 20_000
    hs = lab.ssh("backend-1", "wg show wg0 latest-handshakes").stdout.split()
    pub2 = lab.ssh("backend-2", "wg show wg0 public-key").stdout.strip()
    assert int(hs[hs.index(pub2) + 1]) > time.time() - 180


def test_the_direct_path_survives_the_hub(lab):
    lab.ssh("proxy", "systemctl stop wg-quick@wg0")
    try:
        assert _get(lab, "backend-1", "http://db.internal:5432/") == "200"
    finally:
        lab.ssh("proxy", "systemctl start wg-quick@wg0")
    lab.wait_healthy()


def test_with_paths_hub_the_flow_passes_the_hub_which_forwards_only_that_port(lab):
    wg = _wg(lab)
    pinger = Pinger(lab.files / "ssh_config", "proxy", wg["backend-3"]).start()
    text = lab.network.read_text()
    lab.network.write_text(text.replace("network:\n", "network:\n  paths: hub\n", 1))
    try:
        lab.inv("deploy")
        assert pinger.stop().lost == 0
        # no direct peer any more: backend-1's hub peer carries db's address
        peers = lab.ssh("backend-1", "wg show wg0 allowed-ips").stdout
        assert f"10.50.0.1/32 {wg['backend-2']}/32" in peers
        assert _get(lab, "backend-1", "http://db.internal:5432/") == "200"
        # the hub forwards that port only (backend-2's SSH answers every address, but not
        # through the hub), and nothing for backend-3
        assert not _opens(lab, "backend-1", wg["backend-2"], 22)
        assert not _opens(lab, "backend-3", wg["backend-2"], 5432)
        report = lab.wait_healthy()
        grant = [c["detail"] for c in report["checks"] if c["check"] == "grant"]
        assert grant == [f"backend-1 -> db.internal ({wg['backend-2']}:5432, through the hub)"]
    finally:
        lab.network.write_text(text)
    lab.inv("deploy")  # back to the direct path


def test_revoking_closes_it_in_one_deploy_and_no_other_tunnel_loses_a_packet(lab):
    wg = _wg(lab)
    pingers = [Pinger(lab.files / "ssh_config", "proxy", wg[b]).start() for b in ("backend-3", "backend-1")]
    lab.network.write_text(lab.network.read_text().replace(", allow: [app]}", "}"))
    lab.inv("deploy")
    assert all(p.stop().lost == 0 for p in pingers)
    assert not _opens(lab, "backend-1", wg["backend-2"], 5432)
    assert lab.ssh("backend-1", "getent hosts db.internal", check=False).returncode != 0
    assert f"{wg['backend-1']}/32" not in lab.ssh("backend-2", "wg show wg0 allowed-ips").stdout
    report = lab.wait_healthy()
    assert not [c for c in report["checks"] if c["check"] == "grant"]
