"""What each host should look like, derived from the model: WireGuard peers and firewall rules.

Pure functions over the validated model (and, for peers, the public keys read from the hosts).
The deploys render these; templates only loop over them. This is where a newcomer finds who
peers with whom and why a ufw rule exists.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from backhaul import sshpath
from backhaul.model import ALL_CLIENTS
from backhaul.network import Client, Host, Network, Service


@dataclass(frozen=True)
class Peer:
    name: str
    public_key: str
    allowed_ips: tuple[str, ...]
    endpoint: str | None = None
    keepalive: int = 0
    psk_file: str | None = None  # the pair's preshared key, a file ON THE HOST (never its key)


@dataclass(frozen=True)
class PskEnd:
    """One end of a hub<->backend pair, as far as the pair's preshared key goes (from facts)."""

    sha256: str | None  # of its usable copy of the pair's key; None: it has none
    in_conf: bool  # its WireGuard conf gives the peer a PresharedKey now


@dataclass(frozen=True)
class Rule:
    """One ufw rule: ``ufw [route] allow [in on IFACE] [proto P] from SRC to DST port PORT``.

    The one rule type: ``operations.ufw.firewall`` takes these as they are.
    """

    port: int | str | None = None  # 22, or a list / range ("80,443", "8000:8010") with a proto
    proto: str | None = None  # "tcp" | "udp" | None (both)
    src: str = "any"
    dst: str = "any"
    interface: str | None = None  # "in on <interface>"
    route: bool = False  # a forwarding rule (ufw route ...), e.g. backend to backend on the hub
    out_interface: str | None = None
    why: str = ""  # shown in plans and errors, not part of the rule


def wg_address(net: Network, host: Host) -> str:
    """The [Interface] Address: the host's WG address with the subnet's prefix length."""
    return f"{host.wg_ip}/{net.subnet.prefixlen}"


def hub_peers(
    net: Network,
    keys: dict[str, str | None],
    current: dict[str, str] | None = None,
    psk_files: dict[str, str] | None = None,
    hub: Host | None = None,
) -> tuple[list[Peer], list[str]]:
    """A hub's [Peer] list, and the backends (and hubs) left out for want of a public key.

    ``keys``: backend name -> public key read from that backend (None: not readable now).
    ``current``: the hub's configured peers, allowed IP (e.g. "10.50.0.2/32") -> public key.
    A backend whose key cannot be read in this run keeps the peer the hub already has for its
    address, so a partial run (``--limit``) or an unreachable backend never drops a tunnel.
    Peers are only ever removed by removing the backend from the network file.
    ``psk_files``: backend name -> the pair's preshared key file on the hub, for the pairs
    that use one (see ``hub_uses_psk``).
    ``hub``: the hub whose conf this is (None: the first); it peers with the other hubs too,
    each by its own address (``keys`` holds theirs), so a hub can reach the others' nginx.
    """
    current, psk_files = current or {}, psk_files or {}
    hub = hub or net.hub
    peers, missing = [], []
    for b in net.backends:
        key = keys.get(b.name) or current.get(b.wg_cidr)
        if key:
            # Endpoint + keepalive on the hub's side too: after the hub restarts it says hello
            # at once, instead of waiting up to two minutes for each backend's next handshake.
            peers.append(
                Peer(
                    b.name,
                    key,
                    (b.wg_cidr,),
                    _endpoint(net, b, b),
                    net.keepalive,
                    psk_file=psk_files.get(b.name),
                )
            )
        else:
            missing.append(b.name)
    for h in net.hubs:
        key = keys.get(h.name) or current.get(h.wg_cidr)
        if h.name == hub.name:
            continue
        if key:
            peers.append(peer_for_hub(net, h, key, hub))
        else:
            missing.append(h.name)
    return peers, missing


def backend_hub_peer(
    net: Network, hub_key: str | None, psk_file: str | None = None, host: Host | None = None
) -> Peer | None:
    """A backend's peer the hub: the hub's address, and the addresses of the granted flows that
    pass it (``via_hub``); with backend_to_backend the whole subnet routes via it.

    ``host``: the backend, whose tunnel family picks the hub's address to dial (None: the
    hub's public_ip, for networks of one family)."""
    if not hub_key:
        return None
    if net.backend_to_backend:
        allowed: tuple[str, ...] = (str(net.subnet),)
    else:
        allowed = (net.hub.wg_cidr, *(via_hub(net, host) if host else ()))
    endpoint = _endpoint(net, host, net.hub) if host else _format(net.hub.public_ip, net.port)
    return Peer(net.hub.name, hub_key, allowed, endpoint, net.keepalive, psk_file)


def other_hub_peers(net: Network, keys: dict[str, str | None], host: Host) -> list[Peer]:
    """A backend's peers for the hubs beside the first: each carries only its hub's own address
    (AllowedIPs never overlap between peers). Flows through a hub (clients, grants without a
    direct path, backend_to_backend) stay with the first hub: cryptokey routing sends an
    address to one peer only, and the first is the one a one-hub network already uses.
    ``keys``: hub name -> its public key (read now, or kept; None: no peer for it yet)."""
    return [peer_for_hub(net, h, key, host) for h in net.other_hubs if (key := keys.get(h.name))]


def peer_for_hub(net: Network, hub: Host, key: str, on: Host) -> Peer:
    """The peer host ``on`` (a backend, or another hub) has for ``hub``, whose public key is
    ``key``: what a deploy writes, and what a rotation of ``hub`` swaps live on every host."""
    if on.role == "backend" and hub.name == net.hub.name:
        peer = backend_hub_peer(net, key, host=on)
        assert peer is not None, "a key was given"
        return peer
    # a hub beside the first (on a backend), or any hub on another hub: its own address only.
    # Between two hubs, the family is the one the first hub would use with the dialled hub.
    dialling = on if on.role == "backend" else hub
    return Peer(hub.name, key, (hub.wg_cidr,), _endpoint(net, dialling, hub), net.keepalive)


def hub_peer_ips(net: Network) -> tuple[str, ...]:
    """The allowed IPs by which a backend's kept hub peer is found: the hub's address (always
    among them), or the whole subnet (with backend_to_backend, which may have been switched)."""
    return (net.hub.wg_cidr, str(net.subnet))


def kept_key(have: dict[str, str], allowed_ips: tuple[str, ...]) -> str | None:
    """The public key a host already has for a peer (``have``: allowed IP -> public key),
    for when that peer's key cannot be read in this run."""
    return next((have[ip] for ip in allowed_ips if have.get(ip)), None)


def _endpoint(net: Network, backend: Host, dialed: Host) -> str:
    """Where one end of a backend's tunnel dials the other (``dialed``): its address of the
    family the pair's tunnel runs over (``Network.tunnel_family``)."""
    ip = dialed.public_address(net.tunnel_family(backend))
    assert ip is not None, "validation guarantees a family both ends have"
    return _format(ip, net.port)


def _format(ip, port: int) -> str:
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


# -- grants: which backend (or client) may reach which service, and by which path -------------
# A service's allow: list names the backends (by their name or a service they run) and, for a
# tunnel-only service, the clients that may reach its port over the tunnel; nothing else may.
# Two backends with a grant between them peer with each other (a direct path: one hop, and the
# flow survives the hub) when network.paths is direct and they share an address family; other
# flows, and every client's, pass the hub, which forwards exactly those.


@dataclass(frozen=True)
class Flow:
    src_name: str  # a backend's or a client's name
    src_cidr: str  # its WG address /32
    service: Service
    dst: Host  # the service's backend
    direct: bool  # the two backends peer with each other
    client: bool = False


def flows(net: Network) -> list[Flow]:
    """Every granted flow of the network file (backend_to_backend's blanket grant aside)."""
    out = []
    for s in net.services:
        dst = net.host(s.backend)
        for name in s.grants:
            src = net.host(name)
            out.append(Flow(name, src.wg_cidr, s, dst, direct(net, src, dst)))
        for c in _granted_clients(net, s):
            out.append(Flow(c.name, c.wg_cidr, s, dst, False, client=True))
    return out


def _granted_clients(net: Network, s: Service) -> list[Client]:
    names = s.client_grants
    return [c for c in net.clients if c.name in names or ALL_CLIENTS in names]


def direct(net: Network, a: Host, b: Host) -> bool:
    """Whether two backends peer with each other: paths direct and a family both have."""
    return net.paths == "direct" and pair_family(a, b) is not None


def pair_family(a: Host, b: Host) -> int | None:
    """The family a direct pair's tunnel runs over: IPv4 when both have it, else IPv6."""
    common = set(a.families) & set(b.families)
    return 4 if 4 in common else 6 if 6 in common else None


def direct_partners(net: Network, host: Host) -> list[Host]:
    """The backends this backend peers with directly (a grant either way), in file order."""
    names = {f.src_name for f in flows(net) if f.direct and f.dst.name == host.name}
    names |= {f.dst.name for f in flows(net) if f.direct and f.src_name == host.name}
    return [b for b in net.backends if b.name in names]


def direct_peer(net: Network, host: Host, partner: Host, key: str) -> Peer:
    """A backend's peer for a direct partner: its address only, dialled on its public address
    (both ends dial, so whichever comes up first opens the path), kept alive like the hub's."""
    ip = partner.public_address(pair_family(host, partner) or 4)
    assert ip is not None, "direct() guarantees a family both have"
    return Peer(partner.name, key, (partner.wg_cidr,), _format(ip, net.port), net.keepalive)


def via_hub(net: Network, host: Host) -> tuple[str, ...]:
    """The addresses this backend exchanges granted traffic with through the hub (its hub
    peer's allowed IPs besides the hub's own): partners without a direct path, and clients."""
    out: list[str] = []
    for f in flows(net):
        if f.direct:
            continue
        if f.src_name == host.name:
            out.append(f.dst.wg_cidr)
        elif f.dst.name == host.name:
            out.append(f.src_cidr)
    return tuple(dict.fromkeys(out))


def hub_forwards(net: Network) -> bool:
    """The hub forwards between tunnel addresses: backend_to_backend, or a flow through it."""
    return net.backend_to_backend or any(not f.direct for f in flows(net))


def service_sources(net: Network, s: Service) -> list[tuple[str, str]]:
    """Who may reach a service's port over the tunnel: (address or CIDR, who) pairs."""
    if net.backend_to_backend:
        out = [(str(net.subnet), "the hub and every backend (backend_to_backend)")]
    else:
        out = [(str(h.wg_ip), _the_hub(net, h)) for h in net.hubs]
    out += [
        (f.src_cidr, f.src_name)
        for f in flows(net)
        if f.service.name == s.name and (f.client or not net.backend_to_backend)
    ]
    return out


def _the_hub(net: Network, hub: Host) -> str:
    return "the hub" if len(net.hubs) == 1 else f"the hub {hub.name}"


def names(net: Network, host: Host) -> list[tuple[str, str]]:
    """(WG address, name) of every service this backend may reach: ``<service>.<domain>``."""
    granted = [
        s
        for s in net.services
        if s.backend != host.name and (net.backend_to_backend or host.name in s.grants)
    ]
    return [(str(net.host(s.backend).wg_ip), f"{s.name}.{net.domain}") for s in granted]


# -- preshared keys ----------------------------------------------------------------------------
# A pair whose two ends disagree (one has a PresharedKey, the other not, or not the same) fails
# its next handshake, so both ends switch in the same run: the hub's conf is written first and
# decides, the backend's conf (written right after) follows the hub's. The hub leads only for a
# backend that is in the run; otherwise it matches what that backend has, and with a backend it
# cannot read it keeps what it has. So `--limit` never breaks a pair, and turning
# `preshared_keys` on or off takes one `inv deploy`.


def hub_uses_psk(net: Network, hub: PskEnd, backend: PskEnd | None, backend_in_run: bool) -> bool:
    """Whether the hub's peer for a backend gets the pair's preshared key.

    ``backend``: None when the backend cannot be read now. ``backend_in_run``: its config is
    written later in this run (its copy of the key was made earlier in the run)."""
    if hub.sha256 is None:
        return False  # nothing to embed
    if backend is None:
        return hub.in_conf
    if not backend_in_run:
        return backend.in_conf
    return net.preshared_keys and backend.sha256 == hub.sha256


def backend_uses_psk(backend: PskEnd, hub_in_conf: bool | None) -> bool:
    """Whether a backend's hub peer gets the pair's key: as the hub's conf does (written first
    in a run); ``hub_in_conf`` None (the hub cannot be read): keep what the backend has."""
    if backend.sha256 is None:
        return False
    return backend.in_conf if hub_in_conf is None else hub_in_conf


def firewall_rules(net: Network, host: Host, ssh_closed: bool = False) -> list[Rule]:
    """Every ufw rule this host needs, SSH first (it is allowed before ufw is ever enabled).

    ``ssh_closed``: a via-hub backend's SSH answers only the tunnel and ssh.allow_from
    (``sshpath.closes_ssh`` decides per run)."""
    rules = ssh_rules(net, host, ssh_closed)
    if host.role == "hub":
        for b in (*net.backends, *(h for h in net.hubs if h.name != host.name)):
            rules += [
                Rule(net.port, "udp", src=str(ip), why=f"WireGuard from {b.name} only")
                for ip in _shared_addresses(b, host)
            ]
        rules.append(Rule(80, "tcp", why="HTTP: ACME challenges and the redirect to HTTPS"))
        rules.append(Rule(443, "tcp", why="HTTPS for the services"))
        if host.name != net.hub.name:
            return rules  # clients and flows through a hub: the first hub's (other_hub_peers)
        rules += client_rules(net)
        rules += [
            Rule(
                f.service.port,
                "tcp",
                src=f.src_cidr,
                dst=f.dst.wg_cidr,
                interface=net.interface,
                route=True,
                out_interface=net.interface,
                why=f"{f.src_name} -> {f.service.name} through the hub (granted)",
            )
            for f in flows(net)
            if not f.direct and (f.client or not net.backend_to_backend)
        ]
        if net.backend_to_backend:
            rules.append(
                Rule(
                    None,
                    None,
                    src=str(net.subnet),
                    dst=str(net.subnet),
                    interface=net.interface,
                    route=True,
                    out_interface=net.interface,
                    why="backend to backend through the hub",
                )
            )
    else:
        # Service ports answer the hub (and, with backend_to_backend, the other backends) over
        # the tunnel only; nothing is opened on the public interface.
        # WireGuard from the hub only (backends listen on the same fixed port): lets the hub
        # re-open a tunnel itself, e.g. right after it rebooted.
        rules += [
            Rule(net.port, "udp", src=str(ip), why=f"WireGuard from {_the_hub(net, h)} only")
            for h in net.hubs
            for ip in _shared_addresses(h, host)
        ]
        for partner in direct_partners(net, host):
            rules += [
                Rule(net.port, "udp", src=str(ip), why=f"WireGuard from {partner.name} (a direct path)")
                for ip in _shared_addresses(partner, host)
            ]
        for s in net.services_on(host.name):
            for src, who in service_sources(net, s):
                rules.append(
                    Rule(
                        s.port,
                        "tcp",
                        src=src,
                        dst=str(host.wg_ip),
                        interface=net.interface,
                        why=f"service {s.name} from {who} over the tunnel",
                    )
                )
    return rules


def _shared_addresses(peer: Host, host: Host) -> list:
    """The peer's public addresses of the families ``host`` has too: the WireGuard port is let
    in from each (a dual-stack pair may roam from one family to the other), and never for a
    family the host has no address of (ufw with IPV6=no refuses such a rule). Over IPv6 it is
    thus open to exactly the peers it is open to over IPv4."""
    return [ip for ip in peer.public_ips if ip.version in host.families]


def ssh_rules(net: Network, host: Host, closed: bool = False) -> list[Rule]:
    """SSH from anywhere, or closed (ssh.via hub): from the hub on the tunnel and from
    ``ssh.allow_from`` only (see backhaul/sshpath.py)."""
    if not closed:
        return [Rule(net.ssh.port, "tcp", why="SSH: never lock the operator out")]
    return [
        Rule(net.ssh.port, "tcp", src=src, dst=str(host.wg_ip) if iface else "any", interface=iface, why=why)
        for src, iface, why in sshpath.ssh_sources(net, host)
    ]


# -- isolation: the tunnel address answers only through the tunnel ---------------------------
# ufw's `in on wg0` rules see only what reaches INPUT. Two paths miss them: Docker's DNAT
# (a published port is forwarded to a container, and Docker accepts it before ufw's chains),
# and ufw's own before-rules (ICMP echo, and SSH allowed on every address). A neighbour on the
# provider's network that routes a host's WireGuard address via its public address takes
# those paths. So every host gets a guard of its own, outside ufw and Docker (see
# backhaul/operations/isolation.py for where it lives and why it holds).


@dataclass(frozen=True)
class DockerAllow:
    """A port published on the WireGuard address that answers: a declared service's."""

    src: str  # the hub's WG address, or the tunnel subnet with backend_to_backend
    port: int
    why: str = ""


@dataclass(frozen=True)
class Isolation:
    """What the guard on one host holds (rendered to iptables-restore files by templates).

    - ``wg_ip`` is dropped unless the packet arrived on ``interface`` or from the host itself;
    - ``forward_into_tunnel_only_from_tunnel`` (the hub): nothing is forwarded into the tunnel
      that did not come out of it (a neighbour of the hub routing the subnet via the hub);
    - ``docker_allow`` (backends): the only new connections to a port published on ``wg_ip``
      that are forwarded to a container. A published port that no service declares answers no
      one, not even the hub: the network file is the one list of what the tunnel carries, and
      ufw treats an undeclared native port the same way.
    - over IPv6 the tunnel carries nothing, so on a backend no published port answers at all.
    """

    interface: str
    wg_ip: str
    forward_into_tunnel_only_from_tunnel: bool
    docker_allow: tuple[DockerAllow, ...]
    # the hub: the clients' addresses, to and from which nothing is forwarded (a client
    # reaches the hub, never a backend through it) but the flows granted to them
    no_forward: tuple[str, ...] = ()
    client_flows: tuple[ClientFlow, ...] = ()


@dataclass(frozen=True)
class ClientFlow:
    """A client granted a tunnel-only service: the hub forwards that port, and only that."""

    src: str  # the client's WG address /32
    dst: str  # the service's backend's WG address
    port: int
    why: str = ""


def isolation(net: Network, host: Host) -> Isolation:
    if host.role == "hub":
        granted = tuple(
            ClientFlow(f.src_cidr, str(f.dst.wg_ip), f.service.port, f"{f.src_name} -> {f.service.name}")
            for f in flows(net)
            if f.client
        )
        return Isolation(
            net.interface, str(host.wg_ip), True, (), tuple(c.wg_cidr for c in net.clients), granted
        )
    allow = tuple(
        DockerAllow(src if "/" in src else f"{src}/32", s.port, f"service {s.name} from {who}")
        for s in net.services_on(host.name)
        for src, who in service_sources(net, s)
    )
    return Isolation(net.interface, str(host.wg_ip), False, allow)


# -- clients: admins' devices, peers of the hub only ---------------------------------------
# A client dials the hub from wherever it is (no Endpoint on the hub's side, no keepalive: the
# client keeps its own NAT open), reaches the hub's own addresses over the tunnel (nginx, the
# resolver) and nothing behind it: the isolation guard drops whatever the hub would forward
# from or to a client, whatever backend_to_backend says.


def active_clients(net: Network, today: datetime.date) -> list[Client]:
    """The clients whose peer the hub has: those not expired on ``today`` (UTC)."""
    return [c for c in net.clients if c.expires is None or today < c.expires]


def client_peers(net: Network, today: datetime.date) -> list[Peer]:
    return [Peer(f"{c.name} (client)", c.public_key, (c.wg_cidr,)) for c in active_clients(net, today)]


DNS_PORT = 53  # the clients' resolver on the hub's WG address (backhaul/clients.py)


def client_rules(net: Network) -> list[Rule]:
    """The hub's ufw rules for clients: WireGuard from anywhere (a laptop roams; WireGuard
    answers no packet that does not carry a known key, so a scan still finds nothing), and
    the resolver on the hub's WG address from the tunnel."""
    if not net.clients:
        return []
    return [
        Rule(net.port, "udp", why="WireGuard from the clients (any address: they roam)"),
        Rule(
            DNS_PORT,
            None,
            src=str(net.subnet),
            dst=str(net.hub.wg_ip),
            interface=net.interface,
            why="DNS for the clients: the services' domains -> the hub's WG address",
        ),
    ]
