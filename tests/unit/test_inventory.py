"""Host data from the model: a non-root SSH user runs everything through sudo."""

from __future__ import annotations

from backhaul.inventory import host_data
from backhaul.network import load

NETWORK = """\
network: {subnet: 10.50.0.0/24}
ssh: {user: USER}
proxy: {public_ip: 203.0.113.10}
backends:
  - {name: backend-1, public_ip: 203.0.113.21, wg_ip: 10.50.0.2}
tls: {mode: self-signed}
"""


def _data(tmp_path, user: str) -> dict:
    path = tmp_path / "network.yml"
    path.write_text(NETWORK.replace("USER", user))
    net = load(path)
    return host_data(net, net.host("backend-1"))


def test_root_runs_without_sudo(tmp_path):
    data = _data(tmp_path, "root")
    assert data["ssh_user"] == "root" and "_sudo" not in data


def test_a_cloud_images_user_runs_everything_through_sudo(tmp_path):
    """With `ssh.user: deploy` the first apt run failed: "dpkg: error: requested operation
    requires superuser privilege". pyinfra applies host data's `_sudo` to every operation and
    fact (backhaul.session.as_root does it for the direct commands of the day-2 flows)."""
    data = _data(tmp_path, "deploy")
    assert data["ssh_user"] == "deploy" and data["_sudo"] is True
