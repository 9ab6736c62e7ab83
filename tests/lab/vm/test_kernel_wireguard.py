"""VM hosts on Debian's own kernel: the path every real user runs, kernel WireGuard.

A lab of QEMU VMs (`inv lab.up --vm`; emulated, so slow: docs/lab.md has the figures) of 1 hub
+ 1 backend with the demo's `app` + 1 spare. From hosts with backhaul's packages but nothing
configured (backhaul/lab/vmimage.py: why the VM images carry them): deploy, verify green, and
WireGuard is the kernel's (the module loaded, `wg0` a `wireguard` link, no wireguard-go
installed or running); a second deploy changes nothing; add-backend and rotate-keys lose no
ping on the other tunnel; each VM rebooted (a real boot: the module loaded at boot, wg0 and the
service started in the unit order) comes back by itself with the network green. Not in a lane
of `./dev test` (tests/lanes.py reads tests/lab/test_*.py only): `./dev test --vm` runs it.
"""

from __future__ import annotations

import shutil
import time

import pytest
import yaml

from backhaul.lab.pinger import Pinger

from ..conftest import SUITE, fresh_lab, own_lab_name

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(
        not shutil.which("qemu-system-x86_64"), reason="no QEMU: apt-get install qemu-system-x86"
    ),
]

# Everything is slower under emulation: a flow's own bound, and a reboot's (measured boots of
# a 512 MB VM to SSH: 60-180 s on a busy machine).
FLOW_TIMEOUT = 1800
BOOT_TIMEOUT = 600


@pytest.fixture(scope="module")
def vm_lab():
    with fresh_lab(own_lab_name("v"), backends=1, spares=1, suite=SUITE, vm=True) as handle:
        handle.inv("lab.demo", "--name", handle.lab.name, timeout=FLOW_TIMEOUT)
        yield handle


def _wg_ip(lab, name: str) -> str:
    hosts = yaml.safe_load(lab.network.read_text())["backends"]
    return next(b["wg_ip"] for b in hosts if b["name"] == name)


def _kernel_wireguard(lab, name: str) -> str:
    """What the host says of its kernel and its WireGuard (asserted by the callers)."""
    return lab.ssh(
        name,
        "uname -r; ip -d -o link show wg0; test -d /sys/module/wireguard && echo module=loaded; "
        "dpkg-query -W -f '${Status}' wireguard-go 2>/dev/null | grep -q installed "
        "&& echo wireguard-go=installed; pgrep -x wireguard-go >/dev/null && echo wireguard-go=running; "
        "true",
    ).stdout


def _assert_kernel_wireguard(lab, name: str) -> None:
    out = _kernel_wireguard(lab, name)
    assert "cloud-amd64" in out, out  # Debian's own kernel, not this machine's
    assert " wireguard " in out.splitlines()[1], out  # a kernel link, not wireguard-go's tun
    assert "module=loaded" in out and "wireguard-go" not in out, out


def test_a_deploy_on_vm_hosts_runs_kernel_wireguard_and_verifies_green(vm_lab):
    vm_lab.inv("deploy", timeout=FLOW_TIMEOUT)
    report = vm_lab.wait_healthy(timeout=120)
    assert report["ok"], [c for c in report["checks"] if c["status"] != "ok"]
    for h in vm_lab.lab.network_hosts:
        _assert_kernel_wireguard(vm_lab, h.name)


def test_a_second_deploy_changes_nothing(vm_lab):
    again = vm_lab.inv("deploy", timeout=FLOW_TIMEOUT)
    assert "backhaul: no changes" in again.stdout, again.stdout[-3000:]


def test_add_backend_loses_no_ping_on_the_other_tunnel(vm_lab):
    lab = vm_lab
    spare = next(h for h in lab.hosts if h.role == "spare")
    pinger = Pinger(lab.files / "ssh_config", "proxy", _wg_ip(lab, "backend-1")).start()
    proc = lab.inv("add-backend", "--host", str(spare.ip), timeout=FLOW_TIMEOUT)
    result = pinger.stop()
    assert result.sent > 20 and result.lost == 0, result
    assert "healthy" in proc.stdout, proc.stdout[-3000:]
    _assert_kernel_wireguard(lab, spare.name)


def test_rotate_keys_loses_no_ping_on_the_other_tunnel(vm_lab):
    lab = vm_lab
    spare = next(h for h in lab.hosts if h.role == "spare")
    old = lab.ssh("backend-1", "cat /etc/wireguard/wg0.pub").stdout
    pinger = Pinger(lab.files / "ssh_config", "proxy", _wg_ip(lab, spare.name)).start()
    lab.inv("rotate-keys", "--host", "backend-1", timeout=FLOW_TIMEOUT)
    result = pinger.stop()
    assert result.sent > 20 and result.lost == 0, result
    assert lab.ssh("backend-1", "cat /etc/wireguard/wg0.pub").stdout != old


def _boot_id(lab, name: str) -> str | None:
    proc = lab.ssh(name, "cat /proc/sys/kernel/random/boot_id", check=False, timeout=30)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _reboot(lab, name: str) -> None:
    """A clean reboot from inside (systemd stops every unit, the kernel restarts), then back on
    SSH with another boot id, within BOOT_TIMEOUT."""
    before = _boot_id(lab, name)
    lab.ssh(name, "systemd-run --on-active=1 systemctl reboot")  # after this command answered
    deadline = time.monotonic() + BOOT_TIMEOUT
    while _boot_id(lab, name) in (before, None):
        assert time.monotonic() < deadline, f"{name} is not back {BOOT_TIMEOUT}s after its reboot"
        time.sleep(3)


@pytest.mark.parametrize("name", ["backend-1", "proxy"])
def test_a_rebooted_vm_brings_its_tunnel_and_services_back_by_itself(vm_lab, name):
    """The unit order of a real boot: the module loads, wg0 comes up, the service bound to the
    tunnel address starts after it (a bind before wg0 fails), nginx serves; no deploy runs."""
    _reboot(vm_lab, name)
    report = vm_lab.wait_healthy(timeout=180)  # the spokes' keepalive (25 s) finds the hub again
    assert report["ok"], [c for c in report["checks"] if c["status"] != "ok"]
    _assert_kernel_wireguard(vm_lab, name)
    units = vm_lab.ssh(name, "systemctl --failed --no-legend --plain").stdout
    assert not units.strip(), units
