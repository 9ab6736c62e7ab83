"""The rules of the network file: every field's checks, the cross-field checks, the addresses
allocated, and the model built from a file that passes them all (``check``).

``check`` reads the YAML *node tree* (``yaml.compose``) rather than plain Python objects, so
every problem can point at the exact line and column it comes from. All problems are collected
and returned together; nothing here reads a file, writes one or contacts a host.

Each value is judged by its check in ``backhaul/fields.py`` (names, addresses, paths, domains,
units, e-mail, URLs, keys: strict patterns, so nothing hostile gets past the model); this module
says which field gets which check, and what must hold between fields.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from backhaul.errors import Problem
from backhaul.fields import (
    ACME_SERVERS,
    ADDRESS_TYPES,
    HOST_NAME_RE,
    UNROUTABLE_V4,
    allow_error,
    check_acme_server,
    check_domain,
    check_email,
    check_host_name,
    check_interface,
    check_mode,
    check_name_domain,
    check_paths,
    check_service_name,
    check_ssh_host,
    check_ssh_via,
    check_unit,
    check_user,
    controller_file,
    controller_path,
    family_names,
    hub_key_error,
    hub_path,
    parse_ip,
    public_key_error,
    unroutable_reason,
)
from backhaul.model import (
    ALL_CLIENTS,
    HUB_WEB_PORTS,
    Client,
    Host,
    Network,
    Service,
    Ssh,
    Tls,
)
from backhaul.yamlcheck import BAD, Checker, is_str, plural
from backhaul.yamledit import TAG as _TAG
from backhaul.yamledit import describe as _describe
from backhaul.yamledit import show as _show

_SECTIONS = {"network": "subnet", "proxy": "public_ip"}


_EXAMPLES = {
    "subnet": "10.50.0.0/24",
    "public_ip": "203.0.113.21",
    "name": "backend-1",
    "backend": "backend-1",
    "port": "8080",
    # a hub of proxies: names its tunnel address (a free one of network.subnet)
    "wg_ip": "10.50.0.3",
    # a client's: `wg pubkey` of the key pair made on the device (or `inv add-client`)
    "public_key": "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=",
}


_TOP_KEYS = ("network", "ssh", "proxy", "proxies", "backends", "services", "tls", "clients")


_NETWORK_KEYS = (
    "subnet",
    "port",
    "interface",
    "keepalive",
    "backend_to_backend",
    "preshared_keys",
    "key_max_age_days",
    "client_warn_days",
    "paths",
    "domain",
)


_SSH_KEYS = ("user", "port", "key", "known_hosts", "via", "allow_from")


_HOST_KEYS = ("name", "public_ip", "public_ip6", "wg_ip", "ssh_host", "ssh_via")


_SERVICE_KEYS = (
    "name",
    "backend",
    "port",
    "domains",
    "websocket",
    "allow",
    "hsts",
    "compose",
    "unit",
)


_CLIENT_KEYS = ("name", "public_key", "wg_ip", "expires", "hub_key")


_TLS_KEYS = ("mode", "acme_server", "email", "acme_ca_bundle", "verify_ca_bundle", "cert", "key")


@dataclass
class _Draft:
    """A host as read, before addresses are allocated."""

    path: str
    node: MappingNode
    role: str
    name: Any
    name_node: Node | None
    public_ip: Any
    public_ip_node: Node | None
    wg_ip: Any
    wg_ip_node: Node | None
    ssh_host: Any
    ssh_host_node: Node | None = None
    ssh_via: Any = None  # the host's own `ssh_via:` (None: the network's ssh.via)
    public_ip6: Any = None
    public_ip6_node: Node | None = None

    def families(self) -> set[int]:
        return {a.version for a in (self.public_ip, self.public_ip6) if isinstance(a, ADDRESS_TYPES)}


@dataclass
class Result:
    network: Network | None
    problems: list[Problem]
    allocated: list[tuple[MappingNode, ipaddress.IPv4Address]]


def _example(key: str) -> str:
    if key in _SECTIONS:
        return f"a `{key}:` section with at least `{_SECTIONS[key]}:` (see network.example.yml)"
    return f"e.g. `{key}: {_EXAMPLES[key]}`"


# -- field checks: return an error message, or None when fine ---------------------------------


# -- the whole file ----------------------------------------------------------------------------


def check(text: str, file: str, path: Path) -> Result:
    """Validate ``text`` (the content of ``file``) and build the model when it is valid."""
    ck = Checker(file, _example, _SECTIONS)
    allocated: list[tuple[MappingNode, ipaddress.IPv4Address]] = []
    net = None
    try:
        doc = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "invalid YAML"
        if isinstance(exc, yaml.composer.ComposerError) and "another document" in what:
            what = "found a second document ('---'); keep the whole network in one document"
        elif exc.context and exc.problem:
            line = f" on line {exc.context_mark.line + 1}" if exc.context_mark else ""
            what = f"{what} ({exc.context}{line}); check the indentation and quoting here"
        else:
            what += "; check the indentation and quoting here"
        ck.add(mark, "(yaml)", f"YAML syntax error: {what}")
        doc = BAD
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        ck.problems.append(
            Problem(
                file,
                before.count("\n") + 1,
                len(before) - (before.rfind("\n") + 1) + 1,
                "(yaml)",
                f"character {chr(exc.character)!r} is not allowed in YAML; remove it",
            )
        )
        doc = BAD
    except yaml.YAMLError as exc:  # pragma: no cover - every pyyaml error above carries a mark
        ck.add(None, "(yaml)", f"YAML error: {exc}")
        doc = BAD
    if doc is None:
        ck.problems.append(Problem(file, 1, 1, "(file)", "the file is empty; start from network.example.yml"))
    elif doc is not BAD:
        if not isinstance(doc, MappingNode):
            ck.add(
                doc,
                "(top level)",
                f"expected a mapping with the sections network, proxy, "
                f"backends, services, ssh, tls; got {_describe(doc)}",
            )
        else:
            net, allocated = _check_network(ck, doc, path)
    problems = sorted(ck.problems, key=lambda p: (p.line or 0, p.column or 0))
    return Result(net if not problems else None, problems, allocated if not problems else [])


def _check_network(
    ck: Checker, doc: MappingNode, path: Path
) -> tuple[Network | None, list[tuple[MappingNode, ipaddress.IPv4Address]]]:
    top = ck.mapping(doc, "", _TOP_KEYS, required=("network", "proxy")) or {}
    base = Path(os.path.abspath(path)).parent  # relative controller paths: to the file

    # network:
    nm = ck.mapping(top.get("network"), "network", _NETWORK_KEYS, required=("subnet",)) or {}
    subnet = _subnet(ck, nm)
    port = ck.integer(nm, "port", "network.port", 1, 65535, 51820, "use e.g. 51820")
    interface = ck.matching(nm, "interface", "network.interface", check_interface) or "wg0"
    keepalive = ck.integer(
        nm, "keepalive", "network.keepalive", 0, 65535, 25, "use seconds, e.g. 25 (0 = off)"
    )
    b2b = ck.boolean(nm, "backend_to_backend", "network.backend_to_backend")
    psk = ck.boolean(nm, "preshared_keys", "network.preshared_keys")
    max_age = ck.integer(
        nm, "key_max_age_days", "network.key_max_age_days", 1, 36500, 180, "use days, e.g. 180"
    )
    warn_days = ck.integer(
        nm,
        "client_warn_days",
        "network.client_warn_days",
        0,
        3650,
        14,
        "use days, e.g. 14 (0 = no warning before a client expires)",
    )

    paths = ck.matching(nm, "paths", "network.paths", check_paths) or "direct"
    domain = ck.matching(nm, "domain", "network.domain", check_name_domain) or "internal"

    # ssh:
    sm = ck.mapping(top.get("ssh"), "ssh", _SSH_KEYS) or {}
    ssh_user = ck.matching(sm, "user", "ssh.user", check_user) or "root"
    ssh_port = ck.integer(sm, "port", "ssh.port", 1, 65535, 22, "use e.g. 22")
    if ssh_port in HUB_WEB_PORTS:
        ck.add(
            sm["port"],
            "ssh.port",
            f"{ssh_port} is where nginx on the hub serves HTTP and "
            "HTTPS (80 and 443), so sshd cannot listen there; write the port sshd uses, e.g. 22",
        )
        ssh_port = BAD
    ssh_key = ck.matching(sm, "key", "ssh.key", controller_file(base, "key"))
    known_hosts = ck.matching(sm, "known_hosts", "ssh.known_hosts", controller_file(base, "known_hosts"))
    ssh_via, allow_from = _ssh_access(ck, sm)

    # proxy: and backends:
    drafts: list[_Draft] = []
    hub_node = top.get("proxy")
    if hub_node is not None:
        hub = _host(ck, hub_node, "proxy", "hub")
        if hub is not None:
            drafts.append(hub)
    drafts += _other_hubs(ck, top.get("proxies"))
    backends_node = top.get("backends")
    for i, item in enumerate(ck.items(backends_node, "backends", "backends")):
        draft = _host(ck, item, f"backends[{i}]", "backend")
        if draft is not None:
            drafts.append(draft)
    backend_names = {d.name for d in drafts if d.role == "backend" and isinstance(d.name, str)}
    hub_names = {d.name for d in drafts if d.role == "hub" and isinstance(d.name, str)}
    _check_unique(ck, drafts, "name", "names")
    _check_unique(ck, drafts, "public_ip", "public IPs")
    _check_unique(ck, drafts, "public_ip6", "public IPs")
    _check_public_ip6_not_a_public_ip(ck, drafts)
    _check_hub_families(ck, drafts)
    _check_hubs_without_psk(ck, drafts, nm, psk)

    # clients: (their addresses after the hosts')
    client_drafts = _client_drafts(ck, top.get("clients"), drafts)
    client_names = {c.name for c in client_drafts if isinstance(c.name, str)}

    # services:
    services = _services(ck, top.get("services"), backend_names, hub_names, ssh_port, client_names)
    _check_client_names_not_services(ck, client_drafts, services)

    # tls:
    tls = _tls(ck, top.get("tls"), doc, base)

    # addresses
    allocated: list[tuple[MappingNode, ipaddress.IPv4Address]] = []
    wg: dict[int, ipaddress.IPv4Address] = {}
    if isinstance(subnet, ipaddress.IPv4Network):
        reserved = frozenset(c.wg_ip for c in client_drafts if isinstance(c.wg_ip, ipaddress.IPv4Address))
        wg, allocated = _addresses(ck, drafts, subnet, nm.get("subnet"), reserved)
        allocated += _client_addresses(ck, client_drafts, subnet, drafts, wg)
    _check_routes(ck, drafts, subnet)

    if ck.problems:
        return None, []
    hosts = []
    for i, d in enumerate(drafts):
        hosts.append(
            Host(
                d.name,
                d.role,
                d.public_ip,
                wg[i],
                d.ssh_host or str(d.public_ip),
                d.public_ip6,
                "direct" if d.role == "hub" else d.ssh_via or ssh_via,
            )
        )
    network = Network(
        path=path,
        subnet=subnet,
        port=port,
        interface=interface,
        keepalive=keepalive,
        backend_to_backend=b2b,
        preshared_keys=psk,
        key_max_age_days=max_age,
        hub=hosts[0],
        backends=tuple(h for h in hosts if h.role == "backend"),
        other_hubs=tuple(h for h in hosts[1:] if h.role == "hub"),
        services=tuple(services),
        ssh=Ssh(
            ssh_user,
            ssh_port,
            controller_path(ssh_key, base),
            controller_path(known_hosts, base),
            ssh_via,
            allow_from,
        ),
        tls=tls,
        clients=tuple(Client(c.name, c.public_key, c.wg_ip, c.expires, c.hub_key) for c in client_drafts),
        client_warn_days=warn_days,
        paths=paths,
        domain=domain,
    )
    clients = {c.name: c for c in network.clients}
    network = dataclasses.replace(
        network, services=tuple(_resolve_allow(s, clients) for s in network.services)
    )
    return network, allocated


def _ssh_access(ck: Checker, sm: dict[str, Node]) -> tuple[str, tuple[str, ...]]:
    """``ssh.via`` (default direct) and ``ssh.allow_from`` (admin addresses or CIDRs)."""
    via = ck.matching(sm, "via", "ssh.via", check_ssh_via)
    allow: list[str] = []
    for i, item in enumerate(ck.items(sm.get("allow_from"), "ssh.allow_from", "addresses")):
        path = f"ssh.allow_from[{i}]"
        value = ck.text({"x": item}, "x", path, ip_like=True)
        if not isinstance(value, str):
            if value is None:
                ck.add(item, path, "is empty; write an address or CIDR, e.g. 198.51.100.7")
            continue
        if error := allow_error(value):
            ck.add(item, path, error)
        elif value in allow:
            ck.add(item, path, f"{_show(value)} is listed twice; keep one")
        else:
            allow.append(value)
    return (via if isinstance(via, str) else "direct"), tuple(allow)


def _host_ssh_via(ck: Checker, m: dict[str, Node], path: str, role: str) -> Any:
    """A backend's own ``ssh_via`` (overrides ssh.via); the hub is always reached directly."""
    via = ck.matching(m, "ssh_via", f"{path}.ssh_via", check_ssh_via)
    if role == "hub" and via == "hub":
        ck.add(
            m["ssh_via"],
            f"{path}.ssh_via",
            "the hub is what via-hub backends are reached "
            "through, so it keeps its own SSH: remove ssh_via here",
        )
        return BAD
    return via if isinstance(via, str) else None


def _subnet(ck: Checker, nm: dict[str, Node]) -> Any:
    value = ck.text(nm, "subnet", "network.subnet")
    if value is None or value is BAD:
        return BAD
    node = nm["subnet"]
    try:
        loose = ipaddress.ip_network(value, strict=False)
    except ValueError:
        ck.add(node, "network.subnet", f"{_show(value)} is not a subnet; write e.g. 10.50.0.0/24")
        return BAD
    if loose.version != 4:
        ck.add(
            node,
            "network.subnet",
            f"{_show(value)} is IPv6; the WireGuard subnet must be IPv4, e.g. 10.50.0.0/24",
        )
        return BAD
    if "/" not in value:
        ck.add(node, "network.subnet", f"{_show(value)} has no prefix length; write e.g. {value}/24")
        return BAD
    if str(loose.network_address) != value.split("/")[0]:
        ck.add(node, "network.subnet", f"{_show(value)} has host bits set; write {loose}")
        return BAD
    if value != str(loose):
        ck.add(node, "network.subnet", f"{_show(value)} is not in canonical form; write {loose}")
        return BAD
    clash = next((what for block, what in UNROUTABLE_V4 if loose.overlaps(block)), None)
    if clash:
        ck.add(
            node,
            "network.subnet",
            f"{_show(value)} overlaps {clash}; the hosts cannot "
            "route it as a tunnel subnet: use a private range, e.g. 10.50.0.0/24",
        )
        return BAD
    return loose


def _host(
    ck: Checker, node: Node, path: str, role: str, required: tuple[str, ...] | None = None
) -> _Draft | None:
    if required is None:
        required = ("name", "public_ip") if role == "backend" else ("public_ip",)
    what = "a mapping with name and public_ip" if role == "backend" else "a mapping"
    if role == "hub" and "wg_ip" in required:
        what = "a mapping with name, public_ip and wg_ip"
    m = ck.mapping(node, path, _HOST_KEYS, required=required, what=what)
    if m is None:
        return None
    assert isinstance(node, MappingNode)
    if role == "hub":
        name = ck.matching(m, "name", f"{path}.name", check_host_name) or "proxy"
    else:
        name = ck.matching(m, "name", f"{path}.name", check_host_name)
    public_ip = ck.text(m, "public_ip", f"{path}.public_ip", ip_like=True)
    if isinstance(public_ip, str):
        addr, error = parse_ip(public_ip)
        if addr is None:
            ck.add(
                m["public_ip"],
                f"{path}.public_ip",
                error or f"{_show(public_ip)} is not an IP address; write e.g. 203.0.113.21",
            )
            public_ip = BAD
        elif why := unroutable_reason(addr):
            ck.add(
                m["public_ip"],
                f"{path}.public_ip",
                f"{_show(public_ip)} is {why}; no other host can reach it: write the host's public address",
            )
            public_ip = BAD
        else:
            public_ip = addr
    wg_ip = ck.text(m, "wg_ip", f"{path}.wg_ip", ip_like=True)
    if isinstance(wg_ip, str):
        addr, error = parse_ip(wg_ip, v4_only=True)
        if addr is None:
            ck.add(
                m["wg_ip"],
                f"{path}.wg_ip",
                error
                or f"{_show(wg_ip)} is not an IPv4 "
                "address; write e.g. 10.50.0.2, or remove this wg_ip to get one allocated",
            )
            wg_ip = BAD
        else:
            wg_ip = addr
    ssh_host = ck.matching(m, "ssh_host", f"{path}.ssh_host", check_ssh_host)
    public_ip6 = _public_ip6(ck, m, path, public_ip)
    return _Draft(
        path,
        node,
        role,
        name,
        m.get("name"),
        public_ip,
        m.get("public_ip"),
        wg_ip,
        m.get("wg_ip"),
        ssh_host,
        m.get("ssh_host"),
        ssh_via=_host_ssh_via(ck, m, path, role),
        public_ip6=public_ip6,
        public_ip6_node=m.get("public_ip6"),
    )


def _other_hubs(ck: Checker, node: Node | None) -> list[_Draft]:
    """``proxies:``, the hubs beside ``proxy:`` (each serves every service: two or more hubs
    keep the sites up when one dies). Each names its own tunnel address: an allocated one would
    be written back, and a hub's address is what every backend's peer for it carries."""
    out = []
    for i, item in enumerate(ck.items(node, "proxies", "hubs")):
        draft = _host(ck, item, f"proxies[{i}]", "hub", required=("name", "public_ip", "wg_ip"))
        if draft is not None:
            out.append(draft)
    return out


def _check_hub_families(ck: Checker, drafts: list[_Draft]) -> None:
    """Every hub has the first hub's address families, so each backend's tunnel runs over the
    same family to every hub (the first hub's, checked against each backend)."""
    hubs = [d for d in drafts if d.role == "hub" and isinstance(d.public_ip, ADDRESS_TYPES)]
    if len(hubs) < 2 or hubs[0].path != "proxy" or hubs[0].public_ip6 is BAD:
        return
    want = hubs[0].families()
    for d in hubs[1:]:
        if d.public_ip6 is not BAD and d.families() != want:
            ck.add(
                d.public_ip_node,
                f"{d.path}.public_ip",
                f"{_show(str(d.public_ip))}: this hub has {family_names(d.families())} and the "
                f"first hub (proxy:) {family_names(want)}; every hub needs the same address "
                "families, so each backend reaches every hub the same way: give it an address "
                "of each family the first hub has (public_ip, public_ip6)",
            )


def _check_hubs_without_psk(ck: Checker, drafts: list[_Draft], nm: dict[str, Node], psk: Any) -> None:
    """Preshared keys are per hub<->backend pair, and a backend keeps one copy (``hub.psk``):
    with two hubs that copy would have to be two. Not done yet: say so rather than half-work."""
    if psk is True and sum(d.role == "hub" for d in drafts) > 1:
        ck.add(
            nm["preshared_keys"],
            "network.preshared_keys",
            "preshared keys do not work with more than one hub (proxies:) yet; "
            "set preshared_keys: false, or keep one hub",
        )


def _public_ip6(ck: Checker, m: dict[str, Node], path: str, public_ip: Any) -> Any:
    """A dual-stack host's second address: IPv6, beside an IPv4 public_ip."""
    value = ck.text(m, "public_ip6", f"{path}.public_ip6", ip_like=True)
    if not isinstance(value, str):
        return value
    node, field = m["public_ip6"], f"{path}.public_ip6"
    addr, error = parse_ip(value)
    if addr is None:
        ck.add(
            node,
            field,
            error or f"{_show(value)} is not an IP address; write the host's IPv6 address, e.g. 2001:db8::21",
        )
        return BAD
    if addr.version != 6:
        ck.add(
            node,
            field,
            f"{_show(value)} is IPv4; public_ip6 is the host's IPv6 address "
            "(its IPv4 address goes in public_ip)",
        )
        return BAD
    if why := unroutable_reason(addr):
        ck.add(
            node,
            field,
            f"{_show(value)} is {why}; no other host can reach it: write the host's public IPv6 address",
        )
        return BAD
    if isinstance(public_ip, ADDRESS_TYPES) and public_ip.version == 6:
        ck.add(
            node,
            field,
            f"{_show(value)} is a second IPv6 address, but public_ip "
            f"{public_ip} is IPv6 already: a host has one address per family; write its "
            "IPv4 address as public_ip and this one as public_ip6, or remove public_ip6",
        )
        return BAD
    return addr


def _check_unique(ck: Checker, drafts: list[_Draft], attr: str, what: str) -> None:
    first: dict[Any, _Draft] = {}
    for d in drafts:
        value = getattr(d, attr)
        if value is None or value is BAD:
            continue
        if value in first:
            other = first[value]
            where = getattr(other, f"{attr}_node") or other.node
            ck.add(
                getattr(d, f"{attr}_node") or d.node,
                f"{d.path}.{attr}",
                f"{_show(str(value))} is already used by {other.path} (line "
                f"{where.start_mark.line + 1}); {what} must be unique",
            )
        else:
            first[value] = d


def _check_public_ip6_not_a_public_ip(ck: Checker, drafts: list[_Draft]) -> None:
    owners = {d.public_ip: d for d in drafts if isinstance(d.public_ip, ADDRESS_TYPES)}
    for d in drafts:
        other = owners.get(d.public_ip6) if isinstance(d.public_ip6, ADDRESS_TYPES) else None
        if other is not None:
            ck.add(
                d.public_ip6_node,
                f"{d.path}.public_ip6",
                f"{_show(str(d.public_ip6))} is "
                f"already the public_ip of {other.path}; public IPs must be unique",
            )


def _check_routes(ck: Checker, drafts: list[_Draft], subnet: Any) -> None:
    """Addresses that are fine one by one but cannot work together: a backend's public address
    of another family than the hub's, a public address or an SSH target inside the tunnel
    subnet, two hosts that SSH would reach on one address."""
    tunnel = subnet if isinstance(subnet, ipaddress.IPv4Network) else None
    targets: dict[str, tuple[_Draft, str]] = {}
    hub = next((d for d in drafts if d.role == "hub"), None)
    hub_ip = hub.public_ip if hub and isinstance(hub.public_ip, ADDRESS_TYPES) else None
    hub_families = hub.families() if hub and hub_ip and hub.public_ip6 is not BAD else set()
    for d in drafts:
        public = d.public_ip if isinstance(d.public_ip, ADDRESS_TYPES) else None
        if (
            hub_families
            and public
            and d.role == "backend"
            and d.public_ip6 is not BAD
            and not d.families() & hub_families
        ):
            ck.add(
                d.public_ip_node,
                f"{d.path}.public_ip",
                f"{_show(str(public))}: the "
                f"backend has {family_names(d.families())} only and the hub "
                f"{family_names(hub_families)} only, and the tunnel runs over a family both "
                "ends have, so it could never start. Give both an address of one family "
                "(a host's IPv4 address goes in public_ip, its IPv6 one in public_ip6)",
            )
        if tunnel and public is not None and public in tunnel:
            ck.add(
                d.public_ip_node,
                f"{d.path}.public_ip",
                f"{_show(str(public))} is inside "
                f"network.subnet {tunnel}, the tunnel's own addresses: the tunnel would take "
                "over the route to the address it runs over. Write the host's public address,"
                " or choose a subnet that does not hold it",
            )
        ssh_host = d.ssh_host if isinstance(d.ssh_host, str) else None
        if ssh_host and tunnel:
            try:
                inside = ipaddress.ip_address(ssh_host) in tunnel
            except ValueError:
                inside = False
            if inside:
                ck.add(
                    d.ssh_host_node,
                    f"{d.path}.ssh_host",
                    f"{_show(ssh_host)} is inside "
                    f"network.subnet {tunnel}: SSH would need the tunnel that the deploy sets "
                    "up over SSH. Write the host's public address or name",
                )
        field = "ssh_host" if ssh_host else "public_ip"
        target = ssh_host.lower().rstrip(".") if ssh_host else str(public) if public else None
        if target is None:
            continue
        if target in targets:
            other, other_field = targets[target]
            if field == other_field == "public_ip":
                continue  # two equal public_ips: reported as such
            node = d.ssh_host_node if ssh_host else d.public_ip_node
            ck.add(
                node,
                f"{d.path}.{field}",
                f"{_show(target)} is where SSH already reaches "
                f"{other.path} (its {other_field}); the deploy of one host would land on the "
                "other: give each host its own ssh_host",
            )
        else:
            targets[target] = (d, field)


def _addresses(
    ck: Checker,
    drafts: list[_Draft],
    subnet: ipaddress.IPv4Network,
    subnet_node: Node | None,
    reserved: frozenset[ipaddress.IPv4Address] = frozenset(),
) -> tuple[dict[int, ipaddress.IPv4Address], list[tuple[MappingNode, ipaddress.IPv4Address]]]:
    """Check explicit wg_ips, then give each host without one the lowest free address
    (``reserved``: the clients' explicit addresses, never given to a host)."""
    usable = max(subnet.num_addresses - 2, 0)
    if len(drafts) > usable:
        need = 32 - (len(drafts) + 1).bit_length()
        ck.add(
            subnet_node,
            "network.subnet",
            f"{str(subnet)!r} has room for {usable} hosts but the file has {len(drafts)} "
            f"(the hub and {plural(len(drafts) - 1, 'backend')}); use a /{need} or larger",
        )
        return {}, []
    hub_default = subnet.network_address + 1
    wg: dict[int, ipaddress.IPv4Address] = {}
    owner: dict[ipaddress.IPv4Address, _Draft] = {}
    for i, d in enumerate(drafts):
        addr = d.wg_ip
        if d.role == "hub" and addr is None:
            wg[i] = hub_default
            owner[hub_default] = d
            continue
        if not isinstance(addr, ipaddress.IPv4Address):
            continue
        field = f"{d.path}.wg_ip"
        if addr not in subnet:
            ck.add(
                d.wg_ip_node,
                field,
                f"{_show(str(addr))} is outside network.subnet "
                f"{subnet}; use an address in it, or remove this wg_ip to get one allocated",
            )
        elif addr in (subnet.network_address, subnet.broadcast_address):
            kind = "network" if addr == subnet.network_address else "broadcast"
            ck.add(
                d.wg_ip_node,
                field,
                f"{_show(str(addr))} is the {kind} address of {subnet}; "
                "use a host address, or remove this wg_ip to get one allocated",
            )
        elif addr in owner:
            other = owner[addr]
            if other.path == "proxy":
                which = (
                    "proxy.wg_ip"
                    if other.wg_ip_node
                    else "by default the hub takes the subnet's first host address"
                )
                ck.add(
                    d.wg_ip_node,
                    field,
                    f"{_show(str(addr))} is the hub's address ({which}); " + _free_address_hint(d),
                )
            else:
                assert other.wg_ip_node is not None
                ck.add(
                    d.wg_ip_node,
                    field,
                    f"{_show(str(addr))} is already used by {other.path} "
                    f"(line {other.wg_ip_node.start_mark.line + 1}); wg_ips must be unique",
                )
        else:
            wg[i] = addr
            owner[addr] = d
    allocated = []
    free = (a for a in subnet.hosts() if a not in owner and a not in reserved)
    for i, d in enumerate(drafts):
        if d.wg_ip is None and i not in wg:
            wg[i] = next(free)
            allocated.append((d.node, wg[i]))
    return wg, allocated


def _free_address_hint(d: _Draft) -> str:
    """A further hub names its own wg_ip (``_other_hubs``): it cannot be allocated one."""
    if d.role == "hub":
        return "write a free address of network.subnet, e.g. 10.50.0.3"
    return "remove this wg_ip to get a free one allocated"


def _a_hub(hub_names: set[str]) -> str:
    return "the hub" if len(hub_names) == 1 else "a hub"


def _services(
    ck: Checker,
    node: Node | None,
    backends: set[str],
    hub_names: set[str],
    ssh_port: Any,
    clients: set[str] | None = None,
) -> list[Service]:
    out: list[Service] = []
    names: dict[str, str] = {}
    domains: dict[str, str] = {}
    ports: dict[tuple[str, int], str] = {}
    # allow: entries that name a backend or a service, resolved once every service is read
    wanted: dict[str, list[tuple[Node, str]]] = {}
    for i, item in enumerate(ck.items(node, "services", "services")):
        path = f"services[{i}]"
        m = ck.mapping(
            item,
            path,
            _SERVICE_KEYS,
            required=("name", "backend", "port"),
            what="a mapping with name, backend and port",
        )
        if m is None:
            continue
        ok = True
        name = ck.matching(m, "name", f"{path}.name", check_service_name)
        if isinstance(name, str):
            if name in names:
                ck.add(
                    m["name"],
                    f"{path}.name",
                    f"{_show(name)} is already used by {names[name]}; service names must be unique",
                )
                ok = False
            names.setdefault(name, path)
        backend = ck.text(m, "backend", f"{path}.backend")
        if isinstance(backend, str) and backend not in backends:
            known = ", ".join(sorted(backends)) or "none yet"
            if backend in hub_names:
                msg = f"{_show(backend)} is {_a_hub(hub_names)}; services run on backends (known: {known})"
            else:
                close = difflib.get_close_matches(backend, sorted(backends), n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                msg = f"{_show(backend)} is not a backend; {hint}known backends: {known}"
            ck.add(m["backend"], f"{path}.backend", msg)
            backend = BAD
        port = ck.integer(m, "port", f"{path}.port", 1, 65535, 0, "use the backend's port, e.g. 8080")
        if isinstance(port, int) and port and port == ssh_port:
            ck.add(
                m["port"],
                f"{path}.port",
                f"{port} is the SSH port (ssh.port); a service "
                "cannot use it: write the port the service itself listens on",
            )
            port = BAD
        if isinstance(port, int) and port and isinstance(backend, str):
            if (backend, port) in ports:
                ck.add(
                    m["port"],
                    f"{path}.port",
                    f"{port} on {backend!r} is already used by "
                    f"{ports[(backend, port)]}; each (backend, port) serves one service",
                )
                ok = False
            ports.setdefault((backend, port), path)
        doms = []
        for j, dnode in enumerate(ck.items(m.get("domains"), f"{path}.domains", "domain names")):
            dpath = f"{path}.domains[{j}]"
            if not is_str(dnode):
                ck.add(dnode, dpath, f"expected a domain name, got {_describe(dnode)}")
                ok = False
                continue
            error = check_domain(dnode.value)
            if error:
                ck.add(dnode, dpath, error)
                ok = False
                continue
            dom = dnode.value.lower().rstrip(".")
            if dom in domains:
                ck.add(
                    dnode,
                    dpath,
                    f"{_show(dnode.value)} is already used by {domains[dom]}; "
                    "a domain can point at one service only",
                )
                ok = False
                continue
            domains[dom] = dpath
            doms.append(dom)
        allow, allow_names = [], []
        for j, anode in enumerate(ck.items(m.get("allow"), f"{path}.allow", "IPs or CIDRs")):
            apath = f"{path}.allow[{j}]"
            if not is_str(anode):
                ck.add(anode, apath, f"expected an IP or CIDR, got {_describe(anode)}")
                ok = False
                continue
            if clients is not None and (anode.value in clients or anode.value == ALL_CLIENTS):
                allow_names.append(anode.value)  # resolved to addresses by _resolve_allow
                continue
            error = allow_error(anode.value)
            if error and HOST_NAME_RE.fullmatch(anode.value):
                # a backend's or a service's name (a grant): checked once all services are read
                wanted.setdefault(name if isinstance(name, str) else path, []).append((anode, apath))
                continue
            if error:
                ck.add(anode, apath, error)
                ok = False
            else:
                allow.append(str(ipaddress.ip_network(anode.value)))
        websocket = ck.boolean(m, "websocket", f"{path}.websocket")
        hsts = ck.boolean(m, "hsts", f"{path}.hsts")
        compose = ck.matching(m, "compose", f"{path}.compose", hub_path("/srv/app/compose.yml"))
        unit = ck.matching(m, "unit", f"{path}.unit", check_unit)
        values = (name, backend, port, websocket, hsts, compose, unit)
        if ok and not any(v is BAD for v in values) and name and backend and port:
            out.append(
                Service(
                    name,
                    backend,
                    port,
                    tuple(doms),
                    websocket,
                    tuple(allow),
                    hsts,
                    compose,
                    unit,
                    tuple(allow_names),
                )
            )
    return _grants(ck, out, wanted, backends, hub_names, clients or set())


def _grants(
    ck: Checker,
    services: list[Service],
    wanted: dict[str, list[tuple[Node, str]]],
    backends: set[str],
    hub_names: set[str],
    clients: set[str],
) -> list[Service]:
    """Each service with the backends its allow: list grants (by backend or service name).

    ``wanted``: service name (or path, for a service whose name is bad) -> its allow: entries
    that are names; each is checked, whether its service passed its other checks or not."""
    runs = {s.name: s.backend for s in services}
    granted: dict[str, list[str]] = {}
    for owner, entries in wanted.items():
        own_backend = runs.get(owner)
        for anode, apath in entries:
            value = anode.value
            backend = value if value in backends else runs.get(value)
            error = None
            if value in hub_names:
                error = (
                    f"{_show(value)} is {_a_hub(hub_names)}, which reaches every service already; "
                    "remove it (allow: names backends, services and clients)"
                )
            elif backend is None:
                error = (
                    f"{_show(value)} is neither an IP address or CIDR nor a name of this network "
                    f"(backends: {_names(backends)}; services: {_names(runs)}; clients: "
                    f"{_names(clients)}); write e.g. 198.51.100.7, a backend's, service's or "
                    f"client's name, or {ALL_CLIENTS} for every client"
                )
            elif backend == own_backend:
                what = (
                    "the service itself"
                    if value == owner
                    else f"its own backend {backend!r}"
                    if value == backend
                    else f"another service on its backend {backend!r}"
                )
                error = f"{_show(value)} is {what}: a service needs no grant on its own backend; remove it"
            if error:
                ck.add(anode, apath, error)
            elif backend not in granted.setdefault(owner, []):
                granted[owner].append(backend)
    return [dataclasses.replace(s, grants=tuple(granted.get(s.name, ()))) for s in services]


def _names(names: Any) -> str:
    return ", ".join(sorted(names)) or "none"


def _check_client_names_not_services(
    ck: Checker, clients: list[_ClientDraft], services: list[Service]
) -> None:
    """allow: lists name clients and services alike: one name may mean one thing only."""
    names = {s.name for s in services}
    for c in clients:
        if isinstance(c.name, str) and c.name in names:
            ck.add(
                c.node,
                f"{c.path}.name",
                f"{_show(c.name)} is also a service's name, and allow lists name both; "
                "give this client another name",
            )


def _tls(ck: Checker, node: Node | None, doc: MappingNode, base: Path) -> Any:
    m = ck.mapping(node, "tls", _TLS_KEYS)
    if m is None:
        return BAD
    mode = ck.matching(m, "mode", "tls.mode", check_mode) or "acme"
    server = ck.matching(m, "acme_server", "tls.acme_server", check_acme_server) or "letsencrypt"
    email = ck.matching(m, "email", "tls.email", check_email)
    bundle = ck.matching(m, "acme_ca_bundle", "tls.acme_ca_bundle", controller_file(base, "ca"))
    roots = ck.matching(m, "verify_ca_bundle", "tls.verify_ca_bundle", controller_file(base, "ca"))
    cert = ck.matching(m, "cert", "tls.cert", hub_path("/etc/ssl/certs/site.pem"))
    key = ck.matching(m, "key", "tls.key", hub_path("/etc/ssl/private/site.key"))
    parent = node if isinstance(node, MappingNode) else doc
    if mode == "acme" and email is None:
        ck.add(
            parent,
            "tls.email",
            "missing; ACME (tls.mode acme, the default) needs a contact "
            "address: add `email: ops@example.com` under tls, or set `mode: self-signed`",
        )
    if mode == "provided":
        for k, v in (("cert", cert), ("key", key)):
            if v is None:
                example = "/etc/ssl/certs/site.pem" if k == "cert" else "/etc/ssl/private/site.key"
                ck.add(
                    parent,
                    f"tls.{k}",
                    f"missing; mode provided needs the path of the {k} "
                    f"file on the hub, e.g. `{k}: {example}`",
                )
    elif mode is not BAD:
        for k, v in (("cert", cert), ("key", key)):
            if v is not None and v is not BAD:
                ck.add(
                    m[k],
                    f"tls.{k}",
                    f"is only used with mode provided (mode is {mode!r}); remove it or set `mode: provided`",
                )
    if any(v is BAD for v in (mode, server, email, bundle, roots, cert, key)):
        return BAD
    directory = ACME_SERVERS.get(server, server) if mode == "acme" else None
    return Tls(
        mode,
        server,
        directory,
        email,
        controller_path(bundle, base),
        cert,
        key,
        controller_path(roots, base),
    )


# -- clients: admins' devices on the tunnel (road-warrior peers of the hub) --------------------


@dataclass
class _ClientDraft:
    path: str
    node: MappingNode
    name: Any
    public_key: Any
    wg_ip: Any
    wg_ip_node: Node | None
    expires: Any
    hub_key: Any


def _expires(ck: Checker, m: dict[str, Node], path: str) -> Any:
    node = ck.present(m, "expires", path)
    if node is None:
        return None
    value = node.value if isinstance(node, ScalarNode) else None
    if isinstance(node, ScalarNode) and node.tag in (_TAG + "timestamp", _TAG + "str"):
        try:
            if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
                return datetime.date.fromisoformat(value)
        except ValueError:
            ck.add(
                node,
                path,
                f"{_show(value)} is not a day of the calendar; write a real "
                "date as YYYY-MM-DD, e.g. 2027-01-31",
            )
            return BAD
    ck.add(
        node,
        path,
        f"expected a date, got {_describe(node)}; write YYYY-MM-DD, e.g. "
        "2027-01-31 (the day the client stops working, UTC)",
    )
    return BAD


def _client_drafts(ck: Checker, node: Node | None, hosts: list[_Draft]) -> list[_ClientDraft]:
    host_names = {d.name for d in hosts if isinstance(d.name, str)}
    out: list[_ClientDraft] = []
    names: dict[str, str] = {}
    keys: dict[str, str] = {}
    for i, item in enumerate(ck.items(node, "clients", "clients")):
        path = f"clients[{i}]"
        m = ck.mapping(
            item,
            path,
            _CLIENT_KEYS,
            required=("name", "public_key"),
            what="a mapping with name and public_key",
        )
        if m is None:
            continue
        assert isinstance(item, MappingNode)
        name = ck.matching(m, "name", f"{path}.name", check_host_name)
        if isinstance(name, str):
            if name == ALL_CLIENTS:
                ck.add(
                    m["name"],
                    f"{path}.name",
                    f"{_show(name)} means every client in allow lists; give this client another name",
                )
                name = BAD
            elif name in host_names:
                ck.add(
                    m["name"],
                    f"{path}.name",
                    f"{_show(name)} is a host of this network; "
                    "allow lists name clients, so give this client another name",
                )
                name = BAD
            elif name in names:
                ck.add(
                    m["name"],
                    f"{path}.name",
                    f"{_show(name)} is already used by {names[name]}; client names must be unique",
                )
                name = BAD
            else:
                names[name] = path
        key = ck.matching(m, "public_key", f"{path}.public_key", public_key_error)
        if isinstance(key, str):
            if key in keys:
                ck.add(
                    m["public_key"],
                    f"{path}.public_key",
                    f"is already the public key of {keys[key]}; each client has a key pair of its own",
                )
                key = BAD
            else:
                keys[key] = path
        wg_ip = ck.text(m, "wg_ip", f"{path}.wg_ip", ip_like=True)
        if isinstance(wg_ip, str):
            addr, error = parse_ip(wg_ip, v4_only=True)
            if addr is None:
                ck.add(
                    m["wg_ip"],
                    f"{path}.wg_ip",
                    error
                    or f"{_show(wg_ip)} is not an IPv4 "
                    "address; write e.g. 10.50.0.254, or remove this wg_ip to get one",
                )
                wg_ip = BAD
            else:
                wg_ip = addr
        expires = _expires(ck, m, f"{path}.expires")
        hub_key = ck.matching(m, "hub_key", f"{path}.hub_key", hub_key_error)
        out.append(_ClientDraft(path, item, name, key, wg_ip, m.get("wg_ip"), expires, hub_key))
    return out


def _client_addresses(
    ck: Checker,
    clients: list[_ClientDraft],
    subnet: ipaddress.IPv4Network,
    hosts: list[_Draft],
    host_ips: dict[int, ipaddress.IPv4Address],
) -> list[tuple[MappingNode, ipaddress.IPv4Address]]:
    """Check the clients' explicit addresses against the hosts' and each other's, then give
    each client without one the highest free address."""
    owner: dict[ipaddress.IPv4Address, str] = {a: hosts[i].path for i, a in host_ips.items()}
    for c in clients:
        addr = c.wg_ip
        if not isinstance(addr, ipaddress.IPv4Address):
            continue
        field = f"{c.path}.wg_ip"
        if addr not in subnet or addr in (subnet.network_address, subnet.broadcast_address):
            ck.add(
                c.wg_ip_node,
                field,
                f"{_show(str(addr))} is not a host address of "
                f"network.subnet {subnet}; remove this wg_ip to get one allocated",
            )
            c.wg_ip = BAD
        elif addr in owner:
            who = "the hub" if owner[addr] == "proxy" else owner[addr]
            ck.add(
                c.wg_ip_node,
                field,
                f"{_show(str(addr))} is already used by {who}; remove this wg_ip to get a free one allocated",
            )
            c.wg_ip = BAD
        else:
            owner[addr] = c.path
    allocated = []
    top = int(subnet.broadcast_address) - 1
    for c in clients:
        if c.wg_ip is not None:
            continue
        while top > int(subnet.network_address) and ipaddress.IPv4Address(top) in owner:
            top -= 1
        if top <= int(subnet.network_address):
            ck.add(c.node, f"{c.path}.wg_ip", f"network.subnet {subnet} is full; use a larger subnet")
            c.wg_ip = BAD
            continue
        c.wg_ip = ipaddress.IPv4Address(top)
        owner[c.wg_ip] = c.path
        allocated.append((c.node, c.wg_ip))
    return allocated


def _resolve_allow(service: Service, clients: dict[str, Client]) -> Service:
    """A service's allow list with client names (and `clients`) replaced by their addresses."""
    if not service.allow_names:
        return service
    out = list(service.allow)
    for a in service.allow_names:
        for c in clients.values() if a == ALL_CLIENTS else [clients[a]]:
            if c.wg_cidr not in out:
                out.append(c.wg_cidr)
    return dataclasses.replace(service, allow=tuple(out))
