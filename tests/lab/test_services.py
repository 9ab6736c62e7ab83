"""Services on the backends bind the WireGuard address only, and come back by themselves.

After `inv lab.demo` + `inv deploy` on a bare lab: the demo's Docker ports (including those the
compose file publishes without an address) and native units listen on the WireGuard address
only; Docker's second guards cover ports published later without an address; rebooting a
backend or the hub brings every service back, bound there and reachable over the tunnel.
"""

from __future__ import annotations

import json
import shlex
import time

import pytest

from backhaul.facts.system import ListeningSockets
from backhaul.lab.demo import COMPOSE_FILE

from .labkit import LabHandle

WG = {"backend-1": "10.50.0.2", "backend-2": "10.50.0.3"}
DEMO_PORTS = {"backend-1": [8080], "backend-2": [8080, 8081, 9001]}
# (backend, port) of the demo's services in the network file (9001 is published, not a service)
SERVICES = [("backend-1", 8080), ("backend-2", 8080), ("backend-2", 8081)]
USER_DAEMON_SETTING = {"log-level": "warn"}


def listeners(lab: LabHandle, host: str, port: int) -> list[str]:
    """Addresses that listen on TCP ``port`` on ``host`` (``0.0.0.0``, ``::``, ``*``, or one)."""
    out = lab.ssh(host, ListeningSockets().command()).stdout.splitlines()
    assert out, f"no listening socket at all on {host}?"  # sshd at least: the parse must work
    sockets = ListeningSockets().process(out)
    return sorted(s["address"] for s in sockets if s["proto"] == "tcp" and s["port"] == port)


def wait_until(what: str, check, timeout: float = 60.0, every: float = 1.0):
    """Poll ``check()`` until it returns something true; fail with its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f}s (last: {value!r})")
        time.sleep(every)


def wait_bound(lab: LabHandle, host: str, port: int, timeout: float = 60.0) -> list[str]:
    # The demo app does a reverse DNS lookup before listen() (http.server's getfqdn), which
    # times out in the lab (no DNS): ~10 s from start to listening.
    return wait_until(f"{host}:{port} listening", lambda: listeners(lab, host, port), timeout)


def fetch_from_hub(lab: LabHandle, ip: str, port: int) -> str:
    """Status and body of http://ip:port/ fetched on the hub (over the tunnel), or the error."""
    code = (
        "import sys, urllib.request\n"
        "try:\n"
        f"    r = urllib.request.urlopen('http://{ip}:{port}/', timeout=4)\n"
        "    print(r.status, r.read(300).decode(errors='replace'))\n"
        "except Exception as e:\n"
        "    print('ERR', e)\n"
    )
    return lab.ssh("proxy", f"python3 -c {shlex.quote(code)}", check=False).stdout.strip()


def hub_gets(lab: LabHandle, host: str, port: int) -> str | None:
    """The body of http://<host's WG address>:port/ as the hub sees it, if it answers 200."""
    status, _, body = fetch_from_hub(lab, WG[host], port).partition(" ")
    return body if status == "200" else None


def uptime(lab: LabHandle, host: str) -> float:
    return float(lab.ssh(host, "cut -d' ' -f1 /proc/uptime").stdout)


def reboot(lab: LabHandle, host: str, timeout: float = 120.0) -> float:
    """`systemctl reboot` inside ``host``; wait until it booted again. Returns the seconds."""
    before = uptime(lab, host)
    t0 = time.monotonic()
    lab.ssh(host, "systemctl reboot", check=False, timeout=30)
    time.sleep(2)

    def booted():
        p = lab.ssh(
            host, "cut -d' ' -f1 /proc/uptime; systemctl is-system-running --wait", check=False, timeout=90
        )
        lines = p.stdout.split()
        if len(lines) == 2 and float(lines[0]) < before and lines[1] in ("running", "degraded"):
            return lines[1]
        return None

    state = wait_until(f"{host} back after reboot", booted, timeout, every=2)
    assert state == "running", f"{host} booted {state}: {lab.ssh(host, 'systemctl --failed').stdout}"
    return time.monotonic() - t0


@pytest.fixture(scope="module")
def deployed(lab: LabHandle):
    """lab.demo, then a user's own daemon.json setting, then two `inv deploy` runs (timed)."""
    if lab.lab.backends < 2:
        pytest.skip("the services tests need 2 backends (BACKHAUL_TEST_BACKENDS >= 2)")
    times = {}
    t0 = time.monotonic()
    lab.inv("lab.demo", "--name", lab.lab.name)
    times["lab.demo"] = time.monotonic() - t0
    before = {
        host: {port: listeners(lab, host, port) for port in ports} for host, ports in DEMO_PORTS.items()
    }
    units_before = {
        "backend-1": lab.ssh(
            "backend-1",
            "systemctl is-enabled backhaul-demo-app; systemctl is-active backhaul-demo-app",
            check=False,
        ).stdout.split(),
        "backend-2": lab.ssh(
            "backend-2",
            "systemctl is-enabled backhaul-demo-admin; systemctl is-active backhaul-demo-admin",
            check=False,
        ).stdout.split(),
    }
    lab.ssh("backend-2", f"echo '{json.dumps(USER_DAEMON_SETTING)}' > /etc/docker/daemon.json")
    original = lab.ssh("backend-2", f"cat {COMPOSE_FILE}").stdout

    t0 = time.monotonic()
    first = lab.inv("deploy", "--network", str(lab.network))
    times["first deploy"] = time.monotonic() - t0
    t0 = time.monotonic()
    second = lab.inv("deploy", "--network", str(lab.network))
    times["no-op deploy"] = time.monotonic() - t0
    print("\ntimings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()))
    (lab.files / "timings-services.json").write_text(json.dumps(times, indent=1) + "\n")
    for name, proc in (("first", first), ("second", second)):  # for a look after a failure
        (lab.files / f"services-deploy-{name}.log").write_text(proc.stdout + proc.stderr)
    return {
        "before": before,
        "units_before": units_before,
        "original": original,
        "first": first.stdout,
        "second": second.stdout,
        "times": times,
    }


def test_demo_binds_nothing_before_deploy(deployed):
    for host, ports in deployed["before"].items():
        assert ports == {p: [] for p in ports}, f"{host} listened before the deploy: {ports}"
    # enabled (so they come back after a reboot) but not started: their address did not exist
    assert deployed["units_before"]["backend-1"] == ["enabled", "inactive"]
    assert deployed["units_before"]["backend-2"] == ["enabled", "inactive"]


def test_compose_ports_on_the_wg_address_only(lab, deployed):
    for port in (8081, 9001):  # both published without an address in the demo's file
        assert wait_bound(lab, "backend-2", port) == [WG["backend-2"]], port
    assert '"8081:8080"' in deployed["original"] and '"9001:8080"' in deployed["original"]
    rewritten = lab.ssh("backend-2", f"cat {COMPOSE_FILE}").stdout
    assert '"10.50.0.3:8081:8080"' in rewritten and '"10.50.0.3:9001:8080"' in rewritten
    assert "com.docker.network.bridge.host_binding_ipv4" in rewritten
    # the customer's file is kept, once, as it was
    backup = lab.ssh("backend-2", f"cat {COMPOSE_FILE}.backhaul.bak").stdout
    assert backup == deployed["original"]


def test_docker_guards_bind_ports_published_later_without_an_address(lab, deployed):
    """A bare `-p` on the default bridge (daemon.json "ip") and on the compose project's
    network (host_binding_ipv4) binds the WireGuard address too."""
    net = lab.ssh("backend-2", "docker network ls --format '{{.Name}}' | grep _default$").stdout
    run = "docker run -d --rm --name {name} {net} -p {port}:8080 backhaul-demo-web:1"
    try:
        lab.ssh("backend-2", run.format(name="bh-guard-bridge", net="", port=9101))
        lab.ssh("backend-2", run.format(name="bh-guard-compose", net=f"--network {net.strip()}", port=9102))
        assert wait_bound(lab, "backend-2", 9101, 20) == [WG["backend-2"]]
        assert wait_bound(lab, "backend-2", 9102, 20) == [WG["backend-2"]]
    finally:
        lab.ssh("backend-2", "docker rm -f bh-guard-bridge bh-guard-compose", check=False)
    settings = json.loads(lab.ssh("backend-2", "cat /etc/docker/daemon.json").stdout)
    assert settings == {**USER_DAEMON_SETTING, "ip": WG["backend-2"]}  # the user's key is kept
    dropin = lab.ssh("backend-2", "systemctl show -p After,Wants docker.service").stdout
    assert dropin.count("wg-quick@wg0.service") == 2


def test_native_units_on_the_wg_address_only(lab, deployed):
    for host, unit in (("backend-1", "backhaul-demo-app"), ("backend-2", "backhaul-demo-admin")):
        assert wait_bound(lab, host, 8080) == [WG[host]], host
        deps = lab.ssh(host, f"systemctl show -p BindsTo,After,UnitFileState {unit}").stdout
        assert "BindsTo=wg-quick@wg0.service" in deps
        assert "wg-quick@wg0.service" in deps.split("After=")[1].splitlines()[0]
        assert "UnitFileState=enabled" in deps


def test_services_reachable_from_the_hub(lab, deployed):
    for host, port in SERVICES:
        wait_bound(lab, host, port)
        body = wait_until(f"hub -> {host}:{port}", lambda h=host, p=port: hub_gets(lab, h, p), 30)
        assert "backhaul" in body or host in body, body


def test_second_deploy_changes_nothing_here(deployed):
    rows = [
        line.split()
        for line in deployed["second"].splitlines()
        if line.strip().startswith(("deploys/docker_bind.py |", "deploys/units.py |"))
    ]
    assert len(rows) == 3, deployed["second"][-3000:]
    for row in rows:
        hosts, success, error, no_change = row[-4:]
        assert (success, error, no_change) == ("-", "-", hosts), " ".join(row)
    first = [ln for ln in deployed["first"].splitlines() if ln.strip().startswith("deploys/docker_bind")]
    assert first and all(line.split()[-3] != "-" for line in first)  # the first one did change


def test_tunnel_stop_and_start_takes_the_service_with_it(lab, deployed):
    host, unit = "backend-1", "backhaul-demo-app"
    lab.ssh(host, "systemctl stop wg-quick@wg0")
    try:
        assert lab.ssh(host, f"systemctl is-active {unit}", check=False).stdout.strip() == (
            "inactive"
        )  # BindsTo: no service left on an address that is gone
    finally:
        lab.ssh(host, "systemctl start wg-quick@wg0")
    # the tunnel wants its services: it starts them again, after itself
    assert lab.ssh(host, f"systemctl is-active {unit}", check=False).stdout.strip() == "active"
    assert wait_bound(lab, host, 8080) == [WG[host]]


def _all_bound_and_reachable(lab: LabHandle, host: str) -> None:
    for port in DEMO_PORTS[host]:
        assert wait_bound(lab, host, port) == [WG[host]], f"{host}:{port}"
    for port in [p for h, p in SERVICES if h == host]:
        wait_until(f"hub -> {host}:{port}", lambda p=port: hub_gets(lab, host, p), 45)


@pytest.mark.parametrize("host", ["backend-2", "backend-1"])
def test_backend_reboot_services_come_back_bound(lab, deployed, host):
    took = reboot(lab, host)
    print(f"\n{host} rebooted in {took:.1f}s")
    _all_bound_and_reachable(lab, host)


@pytest.fixture(scope="module")
def hub_rebooted(lab, deployed) -> float:
    """Reboot the hub; seconds from its boot until every backend handshook again."""
    took = reboot(lab, "proxy")
    t0 = time.monotonic()

    def handshakes():
        out = lab.ssh("proxy", "wg show wg0 latest-handshakes", check=False).stdout.split()
        stamps = [int(x) for x in out[1::2]]
        return len(stamps) == len(WG) and all(stamps)

    # The hub has an Endpoint and a keepalive for every backend: it says hello as soon as its
    # tunnel is up (without them only a spoke re-handshakes, ~100 s later when idle).
    wait_until("hub handshakes with every backend", handshakes, timeout=150, every=2)
    back = time.monotonic() - t0
    print(f"\nhub rebooted in {took:.1f}s, every tunnel back {back:.1f}s later")
    return back


def test_hub_reboot_tunnels_and_services_come_back(lab, hub_rebooted):
    for host in WG:
        _all_bound_and_reachable(lab, host)


def test_hub_reboot_the_hub_calls_every_backend_itself(lab, hub_rebooted):
    """After a boot the hub knows each backend's endpoint and keeps it alive, so tunnels come
    back at once instead of when a backend next speaks (benchmarks/network measures how fast)."""
    endpoints = dict(line.split() for line in lab.ssh("proxy", "wg show wg0 endpoints").stdout.splitlines())
    keepalive = dict(
        line.split() for line in lab.ssh("proxy", "wg show wg0 persistent-keepalive").stdout.splitlines()
    )
    assert len(endpoints) == len(WG)
    assert all(ep.endswith(":51820") for ep in endpoints.values()), endpoints
    assert set(keepalive.values()) == {"25"}, keepalive
