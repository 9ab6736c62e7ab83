"""Key rotation with the shortest gap: stage the new key, tell the peer, activate, persist.

A WireGuard peer is its public key, so a new key means the other side must learn it before
the tunnel works again. The gap is the time between the two live changes; they run back to
back on SSH connections opened beforehand (tens of milliseconds), then a normal deploy writes
the configs, which already match the live state (wg syncconf changes nothing). Private keys
never leave their hosts: only the new PUBLIC key is read back.
"""

from __future__ import annotations

import gevent
from pyinfra.api import StringCommand

from backhaul import plan
from backhaul.errors import DeployError
from backhaul.network import Host, Network
from backhaul.operations.wireguard import (
    activate_key_command,
    set_peer_command,
    stage_key_command,
)
from backhaul.session import Hosts


def _run(hosts: Hosts, name: str, command: str) -> str:
    host = hosts.by_name[name]
    ok, output = host.run_shell_command(StringCommand(command), print_output=False,
                                        print_input=False)  # fmt: skip
    if not ok:
        raise DeployError(f"{name}: key rotation step failed: {' '.join(output.stderr_lines)[:300]}")
    return "\n".join(output.stdout_lines).strip()


def _current_key(hosts: Hosts, name: str, iface: str) -> str:
    return _run(hosts, name, f"cat /etc/wireguard/{iface}.pub")


def rotate_backend(net: Network, hosts: Hosts, backend: Host) -> str:
    iface = net.interface
    new_pub = _run(hosts, backend.name, stage_key_command(iface))
    old_pub = _current_key(hosts, backend.name, iface)
    # --- gap starts: the hub routes the backend's address to the new key ...
    _run(hosts, net.hub.name, set_peer_command(iface, new_pub, [backend.wg_cidr], remove=old_pub))
    # ... and the backend switches to it, then says hello at once (no waiting for keepalive)
    _run(hosts, backend.name, activate_key_command(iface)
         + f" && (ping -c1 -W1 {net.hub.wg_ip} >/dev/null || true)")  # fmt: skip
    return new_pub


def rotate_hub(net: Network, hosts: Hosts) -> str:
    iface = net.interface
    new_pub = _run(hosts, net.hub.name, stage_key_command(iface))
    old_pub = _current_key(hosts, net.hub.name, iface)
    # Every backend's peer and the hub's own key change at the same moment (in parallel).
    jobs = [gevent.spawn(_run, hosts, net.hub.name, activate_key_command(iface))]
    for b in net.backends:
        if b.name not in hosts.by_name:
            continue
        peer = plan.backend_hub_peer(net, new_pub)
        cmd = set_peer_command(iface, new_pub, list(peer.allowed_ips), peer.endpoint,
                               peer.keepalive, remove=old_pub)  # fmt: skip
        jobs.append(gevent.spawn(_run, hosts, b.name,
                                 cmd + f" && (ping -c1 -W1 {net.hub.wg_ip} >/dev/null || true)"))
    gevent.joinall(jobs)
    for job in jobs:
        job.get()  # re-raise a failed step
    return new_pub
