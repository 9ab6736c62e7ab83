"""Key rotation with the shortest gap: stage the new key, tell the peer, activate, persist.

A WireGuard peer is its public key, so a new key means the other side must learn it before
the tunnel works again. The gap is the time between the two live changes; they run back to
back on SSH connections opened beforehand (tens of milliseconds), then a normal deploy writes
the configs, which already match the live state (the live peer update changes nothing). Private keys
never leave their hosts: only the new PUBLIC key is read back.

Cut short at any step (a command fails, SSH drops), a rotation leaves nothing a deploy does not
heal: the new key waits in ``<if>.key.next`` and becomes the key file only after the conf and
the live interface have it (``activate_key_command``), a peer is swapped in one ``wg set``,
and a deploy puts every conf and live interface back on its key file's key and its peers on
the other hosts' key files (``wireguard.config`` compares the public keys of all three).

With ``network.preshared_keys``, rotating a backend also gives its pair a new preshared key:
made on the hub, staged on the backend through the controller's memory (read over SSH, written
on stdin; never a file, an argument or a printed line here), and switched in by the same two
live changes as the key pair, so the gap does not grow. Rotating the hub leaves every pair's
preshared key as it is (they are per pair, and ``--all`` rotates each backend's anyway); a
peer re-made for a new public key keeps the live preshared key of the peer it replaces.
"""

from __future__ import annotations

import gevent
from pyinfra.api import StringCommand

from backhaul import plan, sshpath
from backhaul.errors import DeployError
from backhaul.facts.wireguard import psk_path
from backhaul.network import Host, Network
from backhaul.session import Hosts, as_root
from backhaul.wgcommands import (
    activate_key_command,
    commit_psk_command,
    read_psk_command,
    set_peer_command,
    stage_key_command,
    stage_psk_command,
    write_psk_command,
)


def _run(hosts: Hosts, name: str, command: str, stdin: str | None = None) -> str:
    host = hosts.by_name[name]
    extra = {"_stdin": stdin} if stdin is not None else {}
    extra.update(as_root(host))
    ok, output = host.run_shell_command(
        StringCommand(command), print_output=False, print_input=False, **extra
    )
    if not ok:
        raise DeployError(f"{name}: key rotation step failed: {' '.join(output.stderr_lines)[:300]}")
    return "\n".join(output.stdout_lines).strip()


def _current_key(hosts: Hosts, name: str, iface: str) -> str:
    return _run(hosts, name, f"cat /etc/wireguard/{iface}.pub")


def _stage_psk(hosts: Hosts, hub: str, backend: str) -> None:
    """A new key for the pair, staged (``.next``) on both ends; in memory only on the way."""
    _run(hosts, hub, stage_psk_command(psk_path(backend)))
    ok, output = hosts.by_name[hub].run_shell_command(
        StringCommand(read_psk_command(psk_path(backend) + ".next")),
        print_output=False,
        print_input=False,
        **as_root(hosts.by_name[hub]),
    )
    if not ok or not output.stdout_lines:
        raise DeployError(
            f"{hub}: cannot read the new preshared key for {backend} "
            "(nothing was switched: run rotate-keys again)"
        )
    _run(hosts, backend, write_psk_command(psk_path("hub") + ".next"), stdin=output.stdout_lines[0] + "\n")


def rotate_backend(net: Network, hosts: Hosts, backend: Host) -> str:
    iface, hub = net.interface, net.hub.name
    new_pub = _run(hosts, backend.name, stage_key_command(iface))
    if net.preshared_keys:
        _stage_psk(hosts, hub, backend.name)
    old_pub = _current_key(hosts, backend.name, iface)
    hub_pub = _current_key(hosts, hub, iface)
    if net.preshared_keys:
        hub_cmd = (
            commit_psk_command(psk_path(backend.name))
            + " && "
            + set_peer_command(
                iface, new_pub, [backend.wg_cidr], remove=old_pub, psk_file=psk_path(backend.name)
            )
        )
        backend_cmd = activate_key_command(iface, psk=(hub_pub, psk_path("hub")))
    else:
        hub_cmd = set_peer_command(iface, new_pub, [backend.wg_cidr], remove=old_pub, keep_psk=True)
        backend_cmd = activate_key_command(iface)
    hello = f" && (ping -c1 -W1 {net.hub.wg_ip} >/dev/null || true)"
    if sshpath.via_hub(backend):
        # This session to the backend rides the tunnel being re-keyed: once the hub has the
        # new key no command reaches the backend until it has switched. So the backend's
        # switch is scheduled first (answered over the old tunnel), the hub's follows.
        _run(hosts, backend.name, _later(backend_cmd + hello))
        _on_every_hub(net, hosts, hub_cmd)
        gevent.sleep(SWITCH_DELAY + 0.5)
        return new_pub
    # --- gap starts: the hubs route the backend's address to the new key ...
    _on_every_hub(net, hosts, hub_cmd)
    # ... and the backend switches to it, then says hello at once (no waiting for keepalive)
    _run(hosts, backend.name, backend_cmd + hello)
    return new_pub


def _on_every_hub(net: Network, hosts: Hosts, command: str) -> None:
    """The same peer swap on every hub, at once (each has a peer for the backend). Preshared
    keys are refused with more than one hub (schema), so the first hub's command fits all."""
    _all_at_once(hosts, {h.name: command for h in net.hubs})


# A via-hub backend's own switch runs this long after it was scheduled (see sshpath.later)
SWITCH_DELAY = 2


def _later(command: str) -> str:
    return sshpath.later(command, SWITCH_DELAY)


def rotate_hub(net: Network, hosts: Hosts, hub: Host | None = None) -> str:
    """A hub's new key (``hub``: the first by default), live on every host that peers with it:
    each backend and each other hub swaps its peer for the hub in one ``wg set`` at the moment
    the hub switches. Their peers for the other hubs are not touched: those tunnels run on."""
    iface, hub = net.interface, hub or net.hub
    new_pub = _run(hosts, hub.name, stage_key_command(iface))
    old_pub = _current_key(hosts, hub.name, iface)
    told = [h for h in (*net.backends, *net.hubs) if h.name != hub.name and h.name in hosts.by_name]
    # Via-hub backends are reached over the first hub's tunnel: when that hub is rotated their
    # switch is scheduled first (see rotate_backend); the hub's key and the others' peers change
    # right after, in parallel. A hub beside the first carries no SSH session: all at once.
    ridden = [b for b in told if hub.name == net.hub.name and sshpath.via_hub(b)]
    _all_at_once(hosts, {b.name: _later(_hub_peer_cmd(net, hub, b, new_pub, old_pub)) for b in ridden})
    now = {h.name: _hub_peer_cmd(net, hub, h, new_pub, old_pub) for h in told if h not in ridden}
    _all_at_once(hosts, {hub.name: activate_key_command(iface), **now})
    if ridden:
        gevent.sleep(SWITCH_DELAY + 0.5)
    return new_pub


def _all_at_once(hosts: Hosts, commands: dict[str, str]) -> None:
    """Each host's command, in parallel; a failed step is raised once all have answered."""
    jobs = [gevent.spawn(_run, hosts, name, cmd) for name, cmd in commands.items()]
    gevent.joinall(jobs)
    for job in jobs:
        job.get()


def _hub_peer_cmd(net: Network, hub: Host, on: Host, new_pub: str, old_pub: str) -> str:
    """Host ``on`` swaps its peer for ``hub`` to the new key, then says hello to it."""
    peer = plan.peer_for_hub(net, hub, new_pub, on)
    cmd = set_peer_command(
        net.interface,
        new_pub,
        list(peer.allowed_ips),
        peer.endpoint,
        peer.keepalive,
        remove=old_pub,
        keep_psk=True,
    )
    return cmd + f" && (ping -c1 -W1 {hub.wg_ip} >/dev/null || true)"
