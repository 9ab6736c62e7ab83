"""The model's hosts as pyinfra inventory groups (used by ../inventory.py)."""

from __future__ import annotations

from backhaul import sshpath
from backhaul.network import Host, Network, load_current


def host_data(net: Network, host: Host, direct: set[str] | None = None) -> dict:
    data = {
        "ssh_hostname": host.ssh_host,
        "ssh_user": net.ssh.user,
        "ssh_port": net.ssh.port,
        # accept a new host's key once, refuse a changed one (a MITM or a rebuilt server)
        "ssh_strict_host_key_checking": "accept-new",
        "backhaul_role": host.role,
    }
    if net.ssh.user != "root":
        # a cloud image's user (admin, debian, ubuntu) with passwordless sudo: every operation
        # and fact runs through sudo (a sudo that asks for a password is refused up front:
        # backhaul.facts.system.SudoAccess)
        data["_sudo"] = True
    if net.ssh.key:
        data["ssh_key"] = str(net.ssh.key)
    if net.ssh.known_hosts:
        data["ssh_known_hosts_file"] = str(net.ssh.known_hosts)
    # a via-hub backend: its WireGuard address through the hub (ssh.via; backhaul/sshpath.py)
    data.update(sshpath.connection_data(net, host, direct))
    return data


def groups(net: Network | None = None) -> tuple[list, list]:
    """(hubs, backends) lists of (name, data) as pyinfra inventory files expect (inventory.py
    names the hub's group ``proxy``, like the file's section)."""
    net = net or load_current()
    hub = [(h.name, host_data(net, h)) for h in net.hubs]
    backends = [(b.name, host_data(net, b)) for b in net.backends]
    return hub, backends
