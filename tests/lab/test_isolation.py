"""A neighbour on the provider's network reaches nothing through a host's WireGuard address.

The neighbour is a network namespace on the lab's bridge (backhaul/lab/neighbour.py): it routes
a host's WireGuard address via the host's public address, as any machine on the same L2 segment
can, and knocks on every port published or bound there, SSH, and ping. Nothing may answer:
not directly, not from another backend with backend_to_backend off, not through the hub with
backend_to_backend on or off, and not after a Docker restart, a ufw reload, ports published
later, Docker's chains made again, or a reboot. The control: the hub gets through.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from backhaul import probe
from backhaul.facts.system import ListeningSockets
from backhaul.lab import demo, files, services
from backhaul.lab import neighbour as nb

from .labkit import LabHandle
from .test_services import reboot, wait_bound, wait_until

WG = {"proxy": "10.50.0.1", "backend-1": "10.50.0.2", "backend-2": "10.50.0.3"}
UNDECLARED = ("backend-2", 9001)  # the demo's compose file publishes it; no service declares it
DECLARED = [("backend-1", 8080), ("backend-2", 8080), ("backend-2", 8081)]
PROBE_SOURCE = Path(probe.__file__).read_text()


def _answered(answers: dict[str, str]) -> dict[str, str]:
    """Whatever was not silence (a refusal is an answer too: the packet got there)."""
    return {t: a for t, a in answers.items() if a != probe.SILENT}


def wg_ports(lab: LabHandle, host: str) -> set[int]:
    """TCP ports that listen on ``host``'s WireGuard address (or on every address)."""
    out = lab.ssh(host, ListeningSockets().command()).stdout.splitlines()
    sockets = ListeningSockets().process(out)
    return {
        s["port"] for s in sockets if s["proto"] == "tcp" and s["address"] in (WG[host], "0.0.0.0", "*", "::")
    }


def targets(lab: LabHandle, hosts=("proxy", "backend-1", "backend-2")) -> list:
    """Every port published or bound on each host's WG address, services, SSH, and ping."""
    out: list = []
    for host in hosts:
        ports = wg_ports(lab, host) | {22} | {p for h, p in DECLARED if h == host}
        if host == UNDECLARED[0]:
            ports.add(UNDECLARED[1])
        out += [(WG[host], p) for p in sorted(ports)] + [(WG[host], None)]
    return out


def knock_from(lab: LabHandle, host: str, what: list) -> dict[str, str]:
    """backhaul.probe run on a lab host (its python3; root, for ping's raw socket)."""
    cmd = f"python3 -c {shlex.quote(PROBE_SOURCE)} {shlex.quote(json.dumps(what))}"
    return json.loads(lab.ssh(host, cmd).stdout)


@pytest.fixture(scope="module")
def deployed(lab: LabHandle):
    """The demo services (Docker on backend-2) and one deploy; every service bound. At the
    end the lab is as before: test modules after this one (test_services above all) expect
    the demo not installed yet."""
    if lab.lab.backends < 2:
        pytest.skip("the isolation tests need 2 backends (BACKHAUL_TEST_BACKENDS >= 2)")
    had_demo = demo.installed(lab.lab)
    lab.inv("lab.demo", "--name", lab.lab.name)
    lab.inv("deploy", "--network", str(lab.network))
    for host, port in [*DECLARED, UNDECLARED]:
        wait_bound(lab, host, port)
    yield lab
    if not had_demo:
        _demo_removed(lab)


def _demo_removed(lab: LabHandle) -> None:
    """Undo lab.demo: services out of network.yml (a deploy then removes backhaul's vhosts,
    rules and drop-ins for them), the demo stopped, its compose file as lab.demo wrote it."""
    (lab.lab.state_dir / demo.MARKER).unlink(missing_ok=True)
    lab.network.write_text(files.network_yaml(lab.lab, services.acme_directory(lab.lab)))
    lab.inv("deploy", "--network", str(lab.network))
    for host in ("backend-1", "backend-2"):
        lab.ssh(host, "systemctl disable --now backhaul-demo-app backhaul-demo-admin 2>/dev/null; true")
    lab.ssh(
        "backend-2",
        f"cd /opt/demo && docker-compose -f docker-compose.yml down"
        f" && mv -f {demo.COMPOSE_FILE}.backhaul.bak {demo.COMPOSE_FILE}",
    )


@pytest.fixture
def neighbour(lab: LabHandle, deployed):
    nb.up(lab.lab)
    yield lab.lab
    nb.down(lab.lab)


def _variant(lab: LabHandle, tmp_path: Path, **network_keys) -> Path:
    text = lab.network.read_text()
    extra = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in network_keys.items())
    path = tmp_path / "network.yml"
    path.write_text(text.replace("network:\n", "network:\n" + extra, 1))
    return path


def _hub_reaches_the_services(lab: LabHandle) -> None:
    for host, port in DECLARED:
        wait_until(
            f"hub -> {host}:{port}",
            lambda h=host, p=port: knock_from(lab, "proxy", [(WG[h], p)])[f"{WG[h]}:{p}"] == probe.OPEN,
            45,
        )


def test_the_hub_gets_through(lab, deployed):
    """The control: the hub reaches every declared service, SSH and ping on every backend."""
    _hub_reaches_the_services(lab)
    wanted = [(WG[b], 22) for b in ("backend-1", "backend-2")]
    wanted += [(WG[b], None) for b in ("backend-1", "backend-2")]
    answers = knock_from(lab, "proxy", wanted)
    assert set(answers.values()) == {probe.OPEN}, answers


def test_a_published_port_no_service_declares_answers_no_one(lab, deployed):
    host, port = UNDECLARED
    assert wait_bound(lab, host, port) == [WG[host]]  # published, on the WG address
    assert knock_from(lab, "proxy", [(WG[host], port)]) == {f"{WG[host]}:{port}": probe.SILENT}


def test_a_neighbour_reaches_nothing_on_any_wireguard_address(lab, neighbour):
    for host, ip in WG.items():
        nb.route(neighbour, f"{ip}/32", lab.ip(host))
    # the neighbour does talk to the hosts: their public SSH answers it
    public = nb.knock(neighbour, [(lab.ip(h), 22) for h in WG])
    assert set(public.values()) == {probe.OPEN}, public
    everything = targets(lab)
    # Docker's (8081, and 9001 that no service declares), native services (8080: ufw already
    # dropped those before the guard), SSH and ping, on every WG address
    for host, port in [*DECLARED, UNDECLARED, ("proxy", 22), ("backend-1", None)]:
        assert (WG[host], port) in everything, (host, port)
    assert _answered(nb.knock(neighbour, everything)) == {}


def test_another_backend_reaches_nothing_with_backend_to_backend_off(lab, deployed):
    for me, other in (("backend-1", "backend-2"), ("backend-2", "backend-1")):
        theirs = targets(lab, (other,))
        # over the tunnel: the hub's peer on `me` carries the hub's address only
        assert _answered(knock_from(lab, me, theirs)) == {}, (me, other)
        # as a neighbour: WG address via the other's public address
        lab.ssh(me, f"ip route replace {WG[other]}/32 via {lab.ip(other)} dev host0")
        try:
            assert _answered(knock_from(lab, me, theirs)) == {}, (me, other, "neighbour")
        finally:
            lab.ssh(me, f"ip route del {WG[other]}/32 via {lab.ip(other)} dev host0", check=False)


@pytest.mark.parametrize("b2b", [False, True], ids=["b2b-off", "b2b-on"])
def test_a_neighbour_of_the_hub_reaches_nothing_through_it(lab, neighbour, tmp_path, b2b):
    network = _variant(lab, tmp_path, backend_to_backend=True) if b2b else lab.network
    try:
        if b2b:
            lab.inv("deploy", "--network", str(network))
            # the hub forwards now: backend-1 reaches backend-2's declared Docker service,
            # and still not the port that no service declares
            wait_until(
                "backend-1 -> backend-2:8081 with b2b",
                lambda: (
                    knock_from(lab, "backend-1", [(WG["backend-2"], 8081)])["10.50.0.3:8081"] == probe.OPEN
                ),
                45,
            )
            assert knock_from(lab, "backend-1", [(WG["backend-2"], UNDECLARED[1])]) == {
                f"{WG['backend-2']}:{UNDECLARED[1]}": probe.SILENT
            }
            assert lab.ssh("proxy", "sysctl -n net.ipv4.ip_forward").stdout.strip() == "1"
        nb.route(neighbour, "10.50.0.0/24", lab.ip("proxy"))
        assert _answered(nb.knock(neighbour, targets(lab))) == {}
        # Forged as coming from inside the tunnel (10.50.0.99), a packet forwarded by the hub
        # would pass a backend's WireGuard (with b2b its hub peer carries the subnet): the
        # answer goes elsewhere, but the backend got it. The hub must not forward it at all.
        nb.route(neighbour, "10.50.0.0/24", lab.ip("proxy"), source="10.50.0.99")
        before = _echo_requests_in(lab, "backend-1")
        assert _answered(nb.knock(neighbour, [(WG["backend-1"], None)] * 3)) == {}
        assert _echo_requests_in(lab, "backend-1") == before, "the hub forwarded a forged ping"
    finally:
        if b2b:
            lab.inv("deploy", "--network", str(lab.network))


def _echo_requests_in(lab: LabHandle, host: str) -> int:
    snmp = lab.ssh(host, "cat /proc/net/snmp").stdout.splitlines()
    names, values = [line.split() for line in snmp if line.startswith("Icmp:")][:2]
    return int(values[names.index("InEchos")])


COMPOSE_UP = "cd /opt/demo && docker-compose -f docker-compose.yml up -d"
LATE_PORT = '      - "9303:8080"'


def _published_later(lab: LabHandle) -> list[int]:
    """Ports published after the deploy, without an address: a `compose up` of the demo's file
    with a port added to it, and `docker run -p` on the default bridge and on the compose
    project's network (Docker's guards put them all on the WG address)."""
    lab.ssh("backend-2", f"sed -i '/9001:8080\"/a\\{LATE_PORT}' {demo.COMPOSE_FILE} && {COMPOSE_UP}")
    net = lab.ssh("backend-2", "docker network ls --format '{{.Name}}' | grep _default$").stdout
    run = "docker run -d --restart unless-stopped --name {name} {net} -p {port}:8080 backhaul-demo-web:1"
    lab.ssh("backend-2", "docker rm -f bh-late-bridge bh-late-compose", check=False)
    lab.ssh("backend-2", run.format(name="bh-late-bridge", net="", port=9301))
    lab.ssh("backend-2", run.format(name="bh-late-compose", net=f"--network {net.strip()}", port=9302))
    for port in (9301, 9302, 9303):
        assert wait_bound(lab, "backend-2", port, 30) == [WG["backend-2"]]
    return [9301, 9302, 9303]


def _unpublish(lab: LabHandle) -> None:
    lab.ssh("backend-2", "docker rm -f bh-late-bridge bh-late-compose", check=False)
    lab.ssh("backend-2", f"sed -i '/9303:8080/d' {demo.COMPOSE_FILE} && {COMPOSE_UP}", check=False)


def _nothing_answers_the_neighbour(lab: LabHandle, extra: list[int]) -> None:
    nb.up(lab.lab)
    try:
        for host, ip in WG.items():
            nb.route(lab.lab, f"{ip}/32", lab.ip(host))
        wanted = targets(lab) + [(WG["backend-2"], p) for p in extra]
        assert _answered(nb.knock(lab.lab, wanted)) == {}
    finally:
        nb.down(lab.lab)
    # and the hub: declared services yes, ports published later (undeclared) no
    _hub_reaches_the_services(lab)
    later = knock_from(lab, "proxy", [(WG["backend-2"], p) for p in extra])
    assert set(later.values()) == {probe.SILENT}, later


def test_isolation_holds_after_docker_ufw_new_ports_and_a_reboot(lab, deployed):
    """Ports published later (compose up, docker run), ufw reload, ufw disable + enable,
    Docker's chains flushed and made again by a restart, a reboot: each time, nothing."""
    extra = _published_later(lab)
    try:
        _nothing_answers_the_neighbour(lab, extra)
        lab.ssh("backend-2", "ufw reload")
        _nothing_answers_the_neighbour(lab, extra)
        lab.ssh("backend-2", "ufw --force disable && ufw --force enable")
        _nothing_answers_the_neighbour(lab, extra)
        # Docker makes its chains again (DOCKER, DOCKER-USER, isolation) on a restart
        lab.ssh(
            "backend-2",
            "iptables -t nat -F DOCKER; iptables -F DOCKER-USER; "
            "systemctl reset-failed docker; systemctl restart docker",
        )
        for port in [8081, UNDECLARED[1], *extra]:
            wait_bound(lab, "backend-2", port)
        _nothing_answers_the_neighbour(lab, extra)
        reboot(lab, "backend-2")
        for port in [8080, 8081, UNDECLARED[1], *extra]:
            wait_bound(lab, "backend-2", port)
        _nothing_answers_the_neighbour(lab, extra)
        # IPv6: the guard is loaded there too (no port published over IPv6 answers anyone)
        six = lab.ssh("backend-2", "ip6tables -t mangle -S backhaul-forward").stdout
        assert "--ctstate DNAT -j DROP" in six, six
    finally:
        _unpublish(lab)


def _isolation_rows(report: dict) -> dict[str, dict]:
    return {c["host"]: c for c in report["checks"] if c["check"] == "isolation"}


def test_verify_knocks_like_the_neighbour_and_a_deploy_restores_the_guard(lab, deployed):
    report = lab.wait_healthy()
    rows = _isolation_rows(report)
    assert set(rows) == set(WG), report["checks"]
    assert all(r["status"] == "ok" for r in rows.values()), rows
    lab.ssh("backend-2", "systemctl stop backhaul-isolation")  # as on a host before this fix
    try:
        rows = _isolation_rows(lab.verify())
        bad = rows["backend-2"]
        assert bad["status"] == "fail", bad
        for answered in ("8081", str(UNDECLARED[1]), "22", "ping"):
            assert answered in bad["detail"], bad
        assert rows["backend-1"]["status"] == "ok", rows
    finally:
        lab.inv("deploy", "--network", str(lab.network))
    assert _isolation_rows(lab.verify())["backend-2"]["status"] == "ok"
    # flushed by hand: the deploy sees it and loads the rules again
    lab.ssh("backend-1", "iptables -t raw -F backhaul-guard")
    assert _isolation_rows(lab.verify())["backend-1"]["status"] == "fail"
    deploy = lab.inv("deploy", "--network", str(lab.network)).stdout
    assert "no changes" not in deploy
    assert _isolation_rows(lab.verify())["backend-1"]["status"] == "ok"
    assert "backhaul: no changes" in lab.inv("deploy", "--network", str(lab.network)).stdout
