"""VM hosts on Debian's own kernel: the path every real user runs, kernel WireGuard.

A lab of QEMU VMs (`inv lab.up --vm`; emulated, so slow: see the README's figures) of 1 hub
+ 1 backend, from bare hosts: deploy, verify green, and WireGuard is the kernel's (the module
loaded, `wg0` a `wireguard` link, no wireguard-go installed or running). Not in a lane of
`./dev test` (tests/lanes.py reads tests/lab/test_*.py only): run it with
`BACKHAUL_TEST_LAB=<stem> python -m pytest tests/lab/vm -m vm`.
"""

from __future__ import annotations

import shutil

import pytest

from ..conftest import SUITE, fresh_lab, own_lab_name

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(
        not shutil.which("qemu-system-x86_64"), reason="no QEMU: apt-get install qemu-system-x86"
    ),
]


@pytest.fixture(scope="module")
def vm_lab():
    with fresh_lab(own_lab_name("v"), backends=1, spares=0, suite=SUITE, vm=True) as handle:
        yield handle


# A first deploy under emulation: 31.7 min measured on a busy machine (the hub's apt install
# alone 22 min), more than labkit's default of 15 min.
DEPLOY_TIMEOUT = 3600


def test_a_deploy_on_vm_hosts_runs_kernel_wireguard_and_verifies_green(vm_lab):
    vm_lab.inv("deploy", timeout=DEPLOY_TIMEOUT)
    report = vm_lab.wait_healthy(timeout=60)
    assert report["ok"], [c for c in report["checks"] if c["status"] != "ok"]
    for h in vm_lab.lab.network_hosts:
        out = vm_lab.ssh(
            h.name,
            "uname -r; ip -d -o link show wg0; test -d /sys/module/wireguard && echo module=loaded; "
            "dpkg-query -W -f '${Status}' wireguard-go 2>/dev/null | grep -q installed "
            "&& echo wireguard-go=installed; pgrep -x wireguard-go >/dev/null && echo wireguard-go=running; "
            "true",
        ).stdout
        assert "cloud-amd64" in out, out  # Debian's own kernel, not this machine's
        assert " wireguard " in out.splitlines()[1], out  # a kernel link, not wireguard-go's tun
        assert "module=loaded" in out and "wireguard-go" not in out, out


def test_a_second_deploy_changes_nothing(vm_lab):
    again = vm_lab.inv("deploy", timeout=DEPLOY_TIMEOUT)
    assert "backhaul: no changes" in again.stdout, again.stdout[-3000:]
