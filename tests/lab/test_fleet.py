"""A mixed fleet (the hub on Debian 13, the backends on Debian 12, as in the middle of a fleet's
upgrade), and a backend upgraded in place from 12 to 13.

The in-place upgrade (apt full-upgrade through the lab's cache, then a reboot) takes minutes:
it runs only when $BACKHAUL_TEST_UPGRADE=1.
"""

from __future__ import annotations

import os
import time

import pytest

from backhaul.lab.pinger import Pinger

from .conftest import fresh_lab, own_lab_name
from .labkit import LabHandle
from .test_services import DEMO_PORTS, WG, listeners, reboot, wait_bound

pytestmark = pytest.mark.fleet

HUB_SUITE, BACKEND_SUITE = "trixie", "bookworm"
UPGRADED = "backend-2"  # Docker (compose v1 -> the v2 program) and a native unit


@pytest.fixture(scope="module")
def mixed():
    with fresh_lab(
        own_lab_name("m"), backends=2, spares=0, suite=HUB_SUITE, backend_suite=BACKEND_SUITE
    ) as lab:
        lab.inv("lab.demo", "--name", lab.lab.name)
        yield lab


def _release(lab: LabHandle, host: str) -> str:
    return lab.ssh(host, ". /etc/os-release; echo $VERSION_CODENAME").stdout.strip()


def test_a_mixed_fleet_deploys_verifies_and_a_second_deploy_changes_nothing(mixed):
    lab = mixed
    assert [_release(lab, h) for h in ("proxy", "backend-1", "backend-2")] == [
        HUB_SUITE,
        BACKEND_SUITE,
        BACKEND_SUITE,
    ]
    lab.inv("deploy")
    report = lab.wait_healthy()
    assert report["ok"], [c for c in report["checks"] if c["status"] != "ok"]
    again = lab.inv("deploy")
    assert "backhaul: no changes" in again.stdout, again.stdout[-3000:]
    for host, ports in DEMO_PORTS.items():
        for port in ports:
            assert listeners(lab, host, port) == [WG[host]], (host, port)


@pytest.mark.skipif(
    os.environ.get("BACKHAUL_TEST_UPGRADE") != "1",
    reason="minutes of apt full-upgrade: set BACKHAUL_TEST_UPGRADE=1",
)
def test_a_backend_upgraded_in_place_to_debian_13_keeps_its_services_on_the_tunnel(mixed):
    """apt full-upgrade 12 -> 13 and a reboot: the services come back bound to the tunnel
    before any deploy; one deploy converges (a second changes nothing); the other tunnel
    loses no packet throughout."""
    lab = mixed
    lab.inv("deploy")
    assert lab.wait_healthy()["ok"]
    other = Pinger(lab.files / "ssh_config", "proxy", WG["backend-1"]).start()
    t0 = time.monotonic()
    lab.ssh(
        UPGRADED,
        "sed -i 's/bookworm/trixie/g' /etc/apt/sources.list && "
        "export DEBIAN_FRONTEND=noninteractive && apt-get update -qq && "
        "apt-get full-upgrade -y -q -o Dpkg::Options::=--force-confdef "
        "-o Dpkg::Options::=--force-confold >/tmp/upgrade.log 2>&1 || "
        "{ tail -30 /tmp/upgrade.log; exit 1; }",
        timeout=3600,
    )
    upgraded = time.monotonic() - t0
    reboot(lab, UPGRADED, timeout=300)
    assert _release(lab, UPGRADED) == "trixie"
    # back from the reboot, before any deploy: every service on the tunnel address only
    for port in DEMO_PORTS[UPGRADED]:
        assert wait_bound(lab, UPGRADED, port, timeout=120) == [WG[UPGRADED]], port
    converge = lab.inv("deploy")
    again = lab.inv("deploy")
    lost = other.stop()
    print(
        f"upgrade {upgraded:.0f}s, total {time.monotonic() - t0:.0f}s; "
        f"converge: {converge.stdout.strip().splitlines()[-1]}"
    )
    assert "backhaul: no changes" in again.stdout, again.stdout[-3000:]
    report = lab.wait_healthy()
    assert report["ok"], [c for c in report["checks"] if c["status"] != "ok"]
    for port in DEMO_PORTS[UPGRADED]:
        assert listeners(lab, UPGRADED, port) == [WG[UPGRADED]], port
    assert lost.sent > 100 and lost.lost == 0, lost
