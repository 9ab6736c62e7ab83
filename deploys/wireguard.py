"""WireGuard hub and spoke: packages, a key pair made on each host, wg0.conf, wg-quick@wg0.

    pyinfra inventory.py deploys/wireguard.py [--limit HOST]

Configs are rendered when their operation runs, after every host's key pair exists, so one run
takes bare hosts to a working network. A partial run never drops a peer: a peer whose key this
run cannot read (its host does not answer SSH) keeps what this host's conf and live interface
have, on the hub for a backend as on a backend for the hub. Peer changes are applied live with
one `wg set` that leaves the peers which did not change as they are, so other tunnels do not
lose a packet; only an [Interface] change restarts.

With `network.preshared_keys`, the order of operations is what keeps each pair in agreement:
the hub makes one key per backend, each backend copies its key from the hub (through the
controller's memory, only when the hashes differ), the hub's conf is written (it decides which
pairs use their key, see backhaul.plan.hub_uses_psk), then the backends' (they follow the
hub's), and keys nothing uses any more are removed last.
"""

import gevent
from pyinfra import host, inventory, logger
from pyinfra.api import StringCommand, deploy
from pyinfra.api.exceptions import PyinfraError
from pyinfra.operations import server

from backhaul import clients, connection, pending, plan, software
from backhaul.facts import other_hosts, snapshot
from backhaul.facts.wireguard import (
    WireguardConfigPeers,
    WireguardPresharedKeys,
    WireguardState,
    psk_path,
)
from backhaul.network import Host, Network, load_current
from backhaul.operations import packages, wireguard
from backhaul.render import render
from backhaul.wgcommands import read_psk_command


def _public_key(name: str, interface: str, asker: str) -> str | None:
    """A host's public key, read from that host now; None if it has none or cannot be reached.

    ``asker`` names the host whose conf needs the key: the hub asks in greenlets of its own,
    where pyinfra's ``host`` is not set (reading it there raised instead of warning)."""
    try:
        # by the time configs are written every key pair exists: read each host's once
        state = other_hosts.read(name, WireguardState, memo=True, interface=interface) or {}
    except (PyinfraError, OSError) as e:
        logger.warning(f"{asker}: cannot read {name}'s public key ({e})")
        return None
    return state.get("public_key") or state.get("public_key_file")


def _psk_facts(name: str, interface: str) -> dict | None:
    """A host's preshared key files and conf use, read now; None if it cannot be reached."""
    try:
        return other_hosts.read(name, WireguardPresharedKeys, interface=interface)
    except (PyinfraError, OSError) as e:
        logger.warning(f"{host.name}: cannot read {name}'s preshared keys ({e})")
        return None


def _psk_sha(facts: dict, psk_name: str) -> str | None:
    """sha256 of a host's copy of a pair's key, None if it has no usable one."""
    mine = (facts.get("files") or {}).get(psk_name) or {}
    return mine.get("sha256") if mine.get("valid") else None


def _in_this_run(name: str) -> bool:
    """The host is in this run (--limit) and has not failed: its later operations will run."""
    return inventory.get_host(name) in host.state.active_hosts


def _hub_psk_files(net: Network) -> dict[str, str]:
    """Backend name -> the pair's key file on the hub, for the pairs whose confs use it."""
    iface = net.interface
    mine = snapshot.get(WireguardPresharedKeys, interface=iface)
    if not net.preshared_keys and not mine.get("in_conf"):
        return {}  # off, and no pair uses a key: nothing to decide (and no backend to ask)
    out: dict[str, str] = {}
    for b in net.backends:
        hub = plan.PskEnd(_psk_sha(mine, b.name), b.wg_cidr in mine.get("in_conf", {}))
        theirs = _psk_facts(b.name, iface)
        backend = (
            None if theirs is None else plan.PskEnd(_psk_sha(theirs, "hub"), bool(theirs.get("in_conf")))
        )
        if plan.hub_uses_psk(net, hub, backend, _in_this_run(b.name)):
            out[b.name] = psk_path(b.name)
    return out


def _backend_psk_file(net: Network, name: str) -> str | None:
    """The pair's key file on this backend, if its conf is to use it (as the hub's does)."""
    iface = net.interface
    mine = snapshot.get(WireguardPresharedKeys, interface=iface)
    if not net.preshared_keys and not mine.get("in_conf"):
        return None
    hub = _psk_facts(net.hub.name, iface)
    hub_in_conf = None if hub is None else net.host(name).wg_cidr in hub.get("in_conf", {})
    me = plan.PskEnd(_psk_sha(mine, "hub"), bool(mine.get("in_conf")))
    return psk_path("hub") if plan.backend_uses_psk(me, hub_in_conf) else None


def _hub_psk_sha256(net: Network, name: str) -> str | None:
    """sha256 of the hub's key for backend ``name`` (None: none yet, or the hub unreachable)."""
    facts = _psk_facts(net.hub.name, net.interface)
    theirs = ((facts or {}).get("files") or {}).get(name) or {}
    if not theirs.get("valid"):
        if facts is not None and not host.state.is_executing and _in_this_run(net.hub.name):
            return "made by this run"  # a plan (dry run): the hub's operation has not run
        why = "the hub is unreachable" if facts is None else "the hub has none for it yet"
        msg = f"{name}: no preshared key to copy ({why})"
        pending.record(msg)
        logger.warning(f"{msg}: a deploy that reaches the hub makes it")
        return None
    return theirs["sha256"]


def _read_hub_psk(net: Network, name: str) -> str:
    """The hub's key for backend ``name``, into memory only (never printed, never on disk)."""
    ok, out = other_hosts.run(net.hub.name, StringCommand(read_psk_command(psk_path(name))))
    return out.stdout_lines[0] if ok and out.stdout_lines else ""


def _kept_peers(interface: str) -> dict[str, str]:
    """This host's peers as it has them, allowed IP -> public key: its conf, and over it its
    live interface (what runs now, e.g. a key switched by a rotation the conf has not caught
    up with). What a peer whose key cannot be read in this run keeps."""
    kept = dict(snapshot.get(WireguardConfigPeers, interface=interface) or {})
    live = (snapshot.get(WireguardState, interface=interface) or {}).get("live_peers") or {}
    for public_key, ips in live.items():
        kept.update(dict.fromkeys(ips, public_key))
    return kept


def _hub_conf(net: Network, me: Host, psk_in_use: bool) -> str:
    iface = net.interface
    # every backend (and other hub) at once: one round trip for the lot, not one per host
    others = [h for h in net.hubs if h.name != me.name]
    jobs = {b.name: gevent.spawn(_public_key, b.name, iface, host.name) for b in (*net.backends, *others)}
    gevent.joinall(list(jobs.values()))
    keys = {name: job.value for name, job in jobs.items()}
    unread = [name for name, key in keys.items() if not key]
    current = _kept_peers(iface) if unread else {}
    psk_files = _hub_psk_files(net) if psk_in_use else {}
    peers, missing = plan.hub_peers(net, keys, current, psk_files, hub=me)
    kept = [n for n in unread if n not in missing]
    if kept:
        # Only a warning: a backend that does not answer fails its own part of the run (or is
        # simply out of it, --limit), and e.g. add-backend must not fail for another backend.
        logger.warning(
            f"{host.name}: cannot read the public key of {', '.join(kept)} (no answer): kept the peer it has"
        )
    if missing:
        msg = f"{host.name}: no public key for {', '.join(missing)} (unreachable, never deployed)"
        pending.record(msg)
        logger.warning(f"{msg}: their peers wait for a deploy that reaches them")
    # clients: peers of the (first) hub only, dropped from the day they expire (deploy says so)
    today = clients.today()
    if me.name == net.hub.name:
        peers += plan.client_peers(net, today)
        for c in clients.expired(net, today):
            logger.warning(f"{host.name}: client {c.name} expired on {c.expires}: no peer for it")
    return render(
        "wg-hub.conf.j2",
        interface=iface,
        address=plan.wg_address(net, me),
        listen_port=net.port,
        peers=peers,
    )


def _backend_conf(net: Network, name: str, psk_in_use: bool) -> str:
    iface = net.interface
    hub_key = _public_key(net.hub.name, iface, name)
    if not hub_key:
        # Never drop the hub for want of its key: keep the peer this backend has (a hub that
        # does not answer SSH still forwards every tunnel).
        hub_key = plan.kept_key(_kept_peers(iface), plan.hub_peer_ips(net))
        what = "kept the peer it has" if hub_key else "no peer for it yet (never deployed?)"
        msg = f"{name}: cannot read the public key of the hub {net.hub.name} (no answer): {what}"
        pending.record(msg)
        logger.warning(msg)
    return render(
        "wg-backend.conf.j2",
        interface=iface,
        address=plan.wg_address(net, net.host(name)),
        listen_port=net.port,
        hub=plan.backend_hub_peer(
            net, hub_key, _backend_psk_file(net, name) if psk_in_use else None, net.host(name)
        ),
        more_hubs=_other_hub_peers(net, name),
        direct=_direct_peers(net, name),
    )


def _other_hub_peers(net: Network, name: str) -> list[plan.Peer]:
    """This backend's peers for the hubs beside the first, each with the key read from it now;
    a hub that cannot be read keeps the peer this backend has for its address (a dead hub's
    peer stays, so its tunnel comes back by itself with the hub)."""
    if not net.other_hubs:
        return []
    jobs = {h.name: gevent.spawn(_public_key, h.name, net.interface, name) for h in net.other_hubs}
    gevent.joinall(list(jobs.values()))
    kept = _kept_peers(net.interface)
    keys = {}
    for h in net.other_hubs:
        keys[h.name] = jobs[h.name].value or kept.get(h.wg_cidr)
        if not jobs[h.name].value:
            what = "kept the peer it has" if keys[h.name] else "no peer for it yet (never deployed?)"
            msg = f"{name}: cannot read the public key of the hub {h.name} (no answer): {what}"
            pending.record(msg)
            logger.warning(msg)
    return plan.other_hub_peers(net, keys, net.host(name))


def _direct_peers(net: Network, name: str) -> list[plan.Peer]:
    """This backend's direct partners (grants), each with the key read from it now; one that
    cannot be read keeps the peer this backend has for its address (never a dropped path)."""
    me = net.host(name)
    partners = plan.direct_partners(net, me)
    if not partners:
        return []
    jobs = {p.name: gevent.spawn(_public_key, p.name, net.interface, name) for p in partners}
    gevent.joinall(list(jobs.values()))
    kept = _kept_peers(net.interface)
    peers = []
    for p in partners:
        key = jobs[p.name].value or kept.get(p.wg_cidr)
        if key:
            peers.append(plan.direct_peer(net, me, p, key))
        else:
            msg = f"{name}: no public key for its direct partner {p.name} (unreachable, never deployed)"
            pending.record(msg)
            logger.warning(f"{msg}: the path waits for a deploy that reaches it")
    return peers


@deploy("WireGuard")
def wireguard_network(packages_installed: bool):
    net = load_current()
    me = net.host(host.name)
    iface = net.interface
    state = snapshot.get(WireguardState, interface=iface) or {}

    # No kernel module (containers, some provider kernels): wg-quick falls back to wireguard-go.
    if not packages_installed:
        packages.installed(name="WireGuard packages", packages=software.wireguard(state.get("kernel_module")))
    wireguard.keypair(name="WireGuard key pair (made on the host)", interface=iface)
    if me.role == "hub" and plan.hub_forwards(net):
        # Only ever turned on: other software on the hub (Docker) may rely on it, and ufw's
        # routed policy (deny) already stops every flow that no rule grants.
        server.sysctl(
            name="IP forwarding (granted flows through the hub)",
            key="net.ipv4.ip_forward",
            value=1,
            persist=True,
            persist_file="/etc/sysctl.d/60-backhaul.conf",
        )
    # The content below is a function, rendered when its operation runs, not now: the key
    # pairs and preshared keys it names are made by the operations above, on every host of
    # this run, and read then (backhaul/facts/other_hosts.py).
    # Preshared keys: made on the hub, then copied to the backends, before any conf uses them.
    # Off and none on the host (what most runs see): no preshared key fact is read at all.
    psk_in_use = net.preshared_keys or bool(state.get("psk_dir"))
    if me.role == "hub" and net.preshared_keys:
        wireguard.preshared_keys(
            name="preshared keys, one per backend (made on the hub)",
            names=[b.name for b in net.backends],
            interface=iface,
        )
    if me.role == "backend" and net.preshared_keys:
        wireguard.preshared_key_copy(
            name="preshared key from the hub (through memory only)",
            psk_name="hub",
            sha256=lambda: _hub_psk_sha256(net, me.name),
            content=lambda: _read_hub_psk(net, me.name),
            interface=iface,
        )
    # Two operations, the hub's first: it knows every peer before a backend's tunnel comes up
    # and says hello, so the first handshake succeeds (else WireGuard retries after 5 s).
    if me.role == "hub":
        wireguard.config(
            name=f"hub {iface}.conf and wg-quick@{iface}",
            interface=iface,
            content=lambda: _hub_conf(net, me, psk_in_use),
        )
    else:
        wireguard.config(
            name=f"backend {iface}.conf and wg-quick@{iface}",
            interface=iface,
            content=lambda: _backend_conf(net, me.name, psk_in_use),
        )
    # After the confs, so that a key a new conf still uses (a backend out of this run) stays.
    if psk_in_use:
        keep = (
            [] if not net.preshared_keys else [b.name for b in net.backends] if me.role == "hub" else ["hub"]
        )
        wireguard.preshared_keys_pruned(name="preshared keys no longer used", keep=keep, interface=iface)


connection.fail_alone_when_lost(host)  # run alone too (rotate-keys): see site.py
wireguard_network(software.installed_by_site())
