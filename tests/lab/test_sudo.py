"""Hosts as cloud providers hand them out: root login off, a user with passwordless sudo.

With `ssh.user: deploy` every flow works from bare hosts (the first deploy used to fail with
"dpkg: error: requested operation requires superuser privilege"); a user whose sudo asks for
a password is refused with the fix before anything changes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backhaul.lab.image import ASKING_USER, SUDO_USER

from .conftest import SUITE, fresh_lab, own_lab_name
from .labkit import LabHandle

pytestmark = pytest.mark.fleet


@pytest.fixture(scope="module")
def cloud():
    with fresh_lab(own_lab_name("s"), backends=2, spares=1, suite=SUITE) as lab:
        yield lab


def _as(lab: LabHandle, user: str) -> Path:
    """The lab's network file with another SSH user (beside it: its key paths stay valid)."""
    path = lab.files / f"network-{user}.yml"
    if not path.exists():
        path.write_text(re.sub(r"(?m)^  user: root$", f"  user: {user}", lab.network.read_text()))
    return path


def _bare(lab: LabHandle) -> list[str]:
    """Hosts with anything of backhaul's on them."""
    touched = []
    for h in lab.hosts:
        p = lab.ssh(
            h.name,
            "dpkg -s wireguard-tools ufw >/dev/null 2>&1 || ls /etc/wireguard/wg0.conf 2>/dev/null",
            check=False,
        )
        if p.returncode == 0:
            touched.append(h.name)
    return touched


def test_a_sudo_that_asks_for_a_password_is_refused_before_anything_changes(cloud):
    lab = cloud
    net = _as(lab, ASKING_USER)
    assert _bare(lab) == []
    for args in (["deploy"], ["rotate-keys", "--all"], ["verify"]):
        proc = lab.inv(*args, network=net, check=False, timeout=300)
        assert proc.returncode != 0, args
        assert "sudo asks it for a password" in proc.stderr, (args, proc.stderr[-2000:])
        assert f"{ASKING_USER} ALL=(ALL) NOPASSWD:ALL" in proc.stderr
        assert "sudo password:" not in proc.stdout + proc.stderr  # never a prompt
    assert _bare(lab) == []  # nothing installed, no tunnel conf


def test_every_flow_works_as_a_user_with_passwordless_sudo(cloud):
    lab = cloud
    net = _as(lab, SUDO_USER)
    first = lab.inv("deploy", network=net)
    assert "superuser privilege" not in first.stdout
    assert lab.wait_healthy(net)["ok"]
    assert "backhaul: no changes" in lab.inv("deploy", network=net).stdout
    # and the next, without pyinfra, asks each host again through sudo (backhaul/unchanged.py)
    assert "read as the last deploy left them" in lab.inv("deploy", network=net).stdout
    # what sudo made belongs to root, as when deploying as root
    for h in lab.lab.network_hosts:
        owned = lab.ssh(
            h.name,
            f"find /etc/wireguard /etc/systemd/system /etc/nginx -user {SUDO_USER} 2>/dev/null",
            check=False,
        ).stdout
        assert owned.strip() == "", (h.name, owned)
        mode = lab.ssh(h.name, "stat -c '%a %U' /etc/wireguard/wg0.key /etc/wireguard/wg0.conf")
        assert mode.stdout.split("\n")[:2] == ["600 root", "600 root"], h.name

    lab.inv("rotate-keys", "--host", "backend-1", network=net)
    assert lab.wait_healthy(net)["ok"]
    spare = next(h for h in lab.hosts if h.role == "spare")
    lab.inv("add-backend", "--host", str(spare.ip), "--name", spare.name, network=net)
    assert lab.wait_healthy(net)["ok"]
    lab.inv("remove-backend", "--name", spare.name, network=net)
    assert (
        lab.ssh(spare.name, "systemctl is-active wg-quick@wg0", check=False).stdout.strip() != "active"
    )  # its tunnel was stopped, through sudo
    report = lab.wait_healthy(net)
    assert report["ok"], [c for c in report["checks"] if c["status"] != "ok"]
