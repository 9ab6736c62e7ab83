"""The model of a network: what backhaul knows about hosts, services, clients, SSH and TLS.

Frozen dataclasses, built only by the schema (``backhaul/schema/``) from a network file that
passed every check, read through ``backhaul.network.load``. Nothing here reads a file or
contacts a host.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# what nginx on the hub listens on (HTTP for ACME and redirects, HTTPS): sshd cannot share them
HUB_WEB_PORTS = (80, 443)


ALL_CLIENTS = "clients"  # in a service's allow: every client of the file


@dataclass(frozen=True)
class Host:
    name: str
    role: str  # "hub" | "backend"
    public_ip: IPAddress  # its IPv4 address, or its IPv6 one when it has no IPv4
    wg_ip: ipaddress.IPv4Address
    ssh_host: str  # what SSH connects to; defaults to str(public_ip)
    public_ip6: ipaddress.IPv6Address | None = None  # a dual-stack host's IPv6 address
    # "hub": SSH answers only the tunnel (and ssh.allow_from); backhaul jumps through the hub
    ssh_via: str = "direct"

    @property
    def wg_cidr(self) -> str:
        return f"{self.wg_ip}/32"

    @property
    def public_ips(self) -> tuple[IPAddress, ...]:
        """Every public address, public_ip first."""
        return (self.public_ip,) + ((self.public_ip6,) if self.public_ip6 else ())

    @property
    def families(self) -> tuple[int, ...]:
        return tuple(a.version for a in self.public_ips)

    def public_address(self, version: int) -> IPAddress | None:
        """Its public address of that family (4 or 6), or None when it has none."""
        return next((a for a in self.public_ips if a.version == version), None)


@dataclass(frozen=True)
class Service:
    name: str
    backend: str
    port: int
    domains: tuple[str, ...] = ()
    websocket: bool = False
    allow: tuple[str, ...] = ()
    hsts: bool = False
    compose: str | None = None
    unit: str | None = None
    # the client names (and `clients`) of allow:, whose addresses ``allow`` also holds. An
    # allow list of names that resolves to no address (no client yet) still denies everyone.
    allow_names: tuple[str, ...] = ()
    # grants: the backends that may reach this service's port over the tunnel (named in allow:
    # by backend name or by the name of a service they run), besides the hub
    grants: tuple[str, ...] = ()

    @property
    def restricted(self) -> bool:
        return bool(self.allow or self.allow_names)

    @property
    def tunnel_only(self) -> bool:
        """No domain: nginx does not serve it; only the tunnel reaches it."""
        return not self.domains

    @property
    def client_grants(self) -> tuple[str, ...]:
        """The client names (or `clients`) that reach a tunnel-only service through the hub;
        a service with domains gives its clients nginx's list only."""
        return self.allow_names if self.tunnel_only else ()


@dataclass(frozen=True)
class Client:
    """An admin's device (road-warrior peer): a peer of the hub only, never of a backend."""

    name: str
    public_key: str
    wg_ip: ipaddress.IPv4Address
    expires: datetime.date | None = None  # from this day (UTC) on, the hub drops its peer
    # the hub's public key its config names (public): a config naming another key than the
    # hub's is stale (the hub's key was rotated, or the hub replaced)
    hub_key: str | None = None

    @property
    def wg_cidr(self) -> str:
        return f"{self.wg_ip}/32"


@dataclass(frozen=True)
class Ssh:
    user: str = "root"
    port: int = 22
    key: Path | None = None
    known_hosts: Path | None = None
    via: str = "direct"  # the backends' default: "direct" (public SSH) or "hub" (see sshpath)
    # admin addresses/CIDRs a via-hub backend still accepts SSH from: the way in without the hub
    allow_from: tuple[str, ...] = ()


@dataclass(frozen=True)
class Tls:
    mode: str
    acme_server: str
    acme_directory: str | None  # the resolved ACME directory URL; None unless mode is acme
    email: str | None
    acme_ca_bundle: Path | None
    cert: str | None
    key: str | None
    # CA bundle `inv verify` trusts for the services' certificates (None: the system's)
    verify_ca_bundle: Path | None = None


@dataclass(frozen=True)
class Network:
    path: Path
    subnet: ipaddress.IPv4Network
    port: int
    interface: str
    keepalive: int
    backend_to_backend: bool
    preshared_keys: bool
    key_max_age_days: int
    hub: Host
    backends: tuple[Host, ...]
    services: tuple[Service, ...]
    ssh: Ssh
    tls: Tls
    clients: tuple[Client, ...] = ()
    client_warn_days: int = 14  # `inv verify` warns this many days before a client expires
    # granted flows between two backends: "direct" (the two peer with each other) or "hub"
    # (every flow through the hub: providers that block UDP between customers)
    paths: str = "direct"
    # the granted services' names on a backend: <service>.<domain> (backhaul/plan.py names)
    domain: str = "internal"
    # the hubs of `proxies:`, beside the first (``hub``): each serves every service
    other_hubs: tuple[Host, ...] = ()

    @property
    def hubs(self) -> tuple[Host, ...]:
        """Every hub, the first (``proxy:``, which clients and via-hub flows use) first."""
        return (self.hub, *self.other_hubs)

    @property
    def hosts(self) -> tuple[Host, ...]:
        return (*self.hubs, *self.backends)

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def services_on(self, name: str) -> tuple[Service, ...]:
        return tuple(s for s in self.services if s.backend == name)

    def client(self, name: str) -> Client:
        for c in self.clients:
            if c.name == name:
                return c
        raise KeyError(name)

    def tunnel_family(self, backend: Host) -> int:
        """The address family a backend's tunnel to the hub runs over: the family of the
        backend's public_ip when the hub has one of it (so a dual-stack pair keeps IPv4, as
        before public_ip6 existed), else its other family. Validation guarantees one."""
        return next(v for v in backend.families if v in self.hub.families)
