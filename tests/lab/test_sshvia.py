"""Backends with no public port (ssh.via hub), and a dead hub replaced by a spare.

One lab of its own, the tests in order: a via-hub network deploys (public SSH goes only once
SSH through the hub works) and a stranger's full port scan finds nothing on a backend; a no-op
deploy, add-backend, rotate-keys (the hub's key too, while the backends are reached through
it) and remove-backend pass; the hub's server is destroyed with its disk and a spare takes its
place through `inv replace-hub`, with ssh.via hub (the backends reached through
ssh.allow_from meanwhile) and then without it.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from backhaul.lab import neighbour

from .conftest import fresh_lab, own_lab_name
from .labkit import LabHandle

pytestmark = pytest.mark.fleet

# backends 1-2 in the file; spares: backend-3 (add-backend), backend-4 and -5 (new hubs)
SPARES = 3


@pytest.fixture(scope="module")
def via():
    # hosts with backhaul's packages in (packaged): this module is not about installing them;
    # the session labs deploy from bare hosts
    with fresh_lab(own_lab_name("v"), backends=2, spares=SPARES, packaged=True) as lab:
        lab.inv("lab.demo", "--name", lab.lab.name)
        text = lab.network.read_text()
        # the controller (the lab's bridge address) is the admin on the allow list; the
        # neighbour namespace on the same bridge plays a stranger
        text = re.sub(
            r"(\n  known_hosts: .*\n)", rf"\1  via: hub\n  allow_from: [{lab.lab.gateway}]\n", text, count=1
        )
        path = lab.files / "network-via.yml"
        path.write_text(text)
        yield lab, path


def _ok(report: dict) -> bool:
    return report["ok"]


def _failing(report: dict) -> list:
    return [c for c in report["checks"] if c["status"] != "ok"]


def _jumped(lab: LabHandle, backend: str, hub_wg: str = "10.50.0.1") -> bool:
    """The backend's sshd saw backhaul arrive from the hub's tunnel address (the jump)."""
    log = lab.ssh(backend, "journalctl --no-pager -o cat | grep 'Accepted publickey' | tail -n 50")
    return f"from {hub_wg} " in log.stdout


def _hub_logins(lab: LabHandle) -> int:
    """SSH logins the hub accepted from the controller so far (this query's own included)."""
    log = lab.ssh(
        "proxy",
        f"journalctl --no-pager -o cat | grep -c 'Accepted publickey.* from {lab.lab.gateway} ' || true",
    )
    return int(log.stdout.strip() or 0)


def test_a_via_hub_network_shows_a_stranger_no_open_port_on_a_backend(via):
    lab, net = via
    lab.inv("deploy", network=net)  # a first deploy: directly, then closed over the hub
    report = lab.wait_healthy(net)
    assert _ok(report), _failing(report)
    before = _hub_logins(lab)
    again = lab.inv("deploy", network=net)
    assert "backhaul: no changes" in again.stdout, again.stdout[-3000:]
    assert _jumped(lab, "backend-1") and _jumped(lab, "backend-2")
    # every jump of a run rides one SSH connection to the hub, beside pyinfra's own to the hub
    # (a connection per backend made the hub's sshd drop some at scale: MaxStartups)
    logins = _hub_logins(lab) - before - 1  # (minus the second query's own login)
    assert logins == 2, f"a no-op deploy through the hub logged in to the hub {logins} times"
    # after a no-op the next asks every host again without pyinfra (backhaul/unchanged.py):
    # through the hub too, on one connection to it (beside the hub's own read)
    before = _hub_logins(lab)
    fast = lab.inv("deploy", network=net)
    assert "read as the last deploy left them" in fast.stdout, fast.stdout[-3000:]
    logins = _hub_logins(lab) - before - 1
    assert logins == 2, f"a no-op deploy without pyinfra logged in to the hub {logins} times"
    neighbour.up(lab.lab)
    with ThreadPoolExecutor(2) as pool:
        backend, hub = pool.map(lambda h: neighbour.scan(lab.lab, lab.ip(h)), ["backend-1", "proxy"])
    assert backend == [], f"a stranger finds {backend} open on backend-1"
    assert hub == [22, 80, 443]  # the scanner does find what is open
    external = {c["host"]: c["detail"] for c in report["checks"] if c["check"] == "external"}
    assert "no public port" in external["backend-1"], external


def test_add_backend_rotate_keys_and_remove_backend_work_through_the_hub(via):
    lab, net = via
    new_ip = lab.ip("backend-3")
    lab.inv("add-backend", "--host", new_ip, network=net)
    assert neighbour.knock(lab.lab, [(new_ip, 22)])[f"{new_ip}:22"] == "silent"
    status = lab.ssh("backend-3", "ufw status").stdout
    assert not re.search(r"^22/tcp\s+ALLOW\s+Anywhere", status, re.M), status
    lab.inv("rotate-keys", "--host", "backend-1", network=net)
    # the hub's new key while every backend is reached through the hub
    lab.inv("rotate-keys", "--host", "proxy", network=net)
    report = lab.wait_healthy(net)
    assert _ok(report), _failing(report)
    lab.inv("remove-backend", "--name", "backend-3", network=net)
    again = lab.inv("deploy", network=net)
    assert "backhaul: no changes" in again.stdout, again.stdout[-3000:]


def _replace_hub(lab: LabHandle, net, dead: str, spare: str) -> dict:
    lab.inv("lab.destroy", "--name", lab.lab.name, "--host", dead)
    # the operator's DNS change: the services' names now point at the new hub
    lab.inv("lab.dns", "--name", lab.lab.name, "--ip", lab.ip(spare))
    out = lab.inv("replace-hub", "--host", lab.ip(spare), network=net)
    assert "point these names at" in out.stdout
    return lab.wait_healthy(net)


def test_a_dead_hub_is_replaced_by_a_spare_with_ssh_via_hub(via):
    lab, net = via
    report = _replace_hub(lab, net, "proxy", "backend-4")
    assert _ok(report), _failing(report)
    new_hub = f"{lab.ip('backend-4')}:51820"
    assert new_hub in lab.ssh("backend-1", "wg show wg0 endpoints").stdout
    # the backends stayed closed to the world while the new hub was built
    assert neighbour.knock(lab.lab, [(lab.ip("backend-2"), 22)]) == {f"{lab.ip('backend-2')}:22": "silent"}
    again = lab.inv("deploy", network=net)
    assert "backhaul: no changes" in again.stdout, again.stdout[-3000:]
    assert _jumped(lab, "backend-2")


def test_a_dead_hub_is_replaced_by_a_spare_without_ssh_via_hub(via):
    lab, net = via
    text = re.sub(r"  via: hub\n  allow_from: \[.*\]\n", "", net.read_text())
    net.write_text(text)
    lab.inv("deploy", network=net)  # back to public SSH on the backends
    report = _replace_hub(lab, net, "backend-4", "backend-5")
    assert _ok(report), _failing(report)
    assert f"{lab.ip('backend-5')}:51820" in lab.ssh("backend-2", "wg show wg0 endpoints").stdout
