"""The hub and the backends: each host's fields, what must differ between hosts, and the
tunnel addresses allocated to those that have none."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from yaml.nodes import MappingNode, Node

from backhaul.fields import (
    ADDRESS_TYPES,
    check_host_name,
    check_ssh_host,
    check_ssh_via,
    family_names,
    parse_ip,
    unroutable_reason,
)
from backhaul.schema.keys import HOST_KEYS
from backhaul.yamlcheck import BAD, Checker, plural
from backhaul.yamledit import show as _show


@dataclass
class Draft:
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


def read_host(
    ck: Checker, node: Node, path: str, role: str, required: tuple[str, ...] | None = None
) -> Draft | None:
    if required is None:
        required = ("name", "public_ip") if role == "backend" else ("public_ip",)
    what = "a mapping with name and public_ip" if role == "backend" else "a mapping"
    if role == "hub" and "wg_ip" in required:
        what = "a mapping with name, public_ip and wg_ip"
    m = ck.mapping(node, path, HOST_KEYS, required=required, what=what)
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
    wg_ip = read_wg_ip(ck, m, path, "10.50.0.2", "remove this wg_ip to get one allocated")
    ssh_host = ck.matching(m, "ssh_host", f"{path}.ssh_host", check_ssh_host)
    public_ip6 = _public_ip6(ck, m, path, public_ip)
    return Draft(
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


def read_wg_ip(ck: Checker, m: dict[str, Node], path: str, example: str, hint: str) -> Any:
    """A host's or a client's ``wg_ip``: an IPv4 address (the tunnel carries IPv4 only)."""
    wg_ip = ck.text(m, "wg_ip", f"{path}.wg_ip", ip_like=True)
    if not isinstance(wg_ip, str):
        return wg_ip
    addr, error = parse_ip(wg_ip, v4_only=True)
    if addr is None:
        ck.add(
            m["wg_ip"],
            f"{path}.wg_ip",
            error or f"{_show(wg_ip)} is not an IPv4 address; write e.g. {example}, or {hint}",
        )
        return BAD
    return addr


def read_other_hubs(ck: Checker, node: Node | None) -> list[Draft]:
    """``proxies:``, the hubs beside ``proxy:`` (each serves every service: two or more hubs
    keep the sites up when one dies). Each names its own tunnel address: an allocated one would
    be written back, and a hub's address is what every backend's peer for it carries."""
    out = []
    for i, item in enumerate(ck.items(node, "proxies", "hubs")):
        draft = read_host(ck, item, f"proxies[{i}]", "hub", required=("name", "public_ip", "wg_ip"))
        if draft is not None:
            out.append(draft)
    return out


def check_hub_families(ck: Checker, drafts: list[Draft]) -> None:
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


def check_hubs_without_psk(ck: Checker, drafts: list[Draft], nm: dict[str, Node], psk: Any) -> None:
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


def check_unique(ck: Checker, drafts: list[Draft], attr: str, what: str) -> None:
    first: dict[Any, Draft] = {}
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


def check_public_ip6_not_a_public_ip(ck: Checker, drafts: list[Draft]) -> None:
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


def check_routes(ck: Checker, drafts: list[Draft], subnet: Any) -> None:
    """Addresses that are fine one by one but cannot work together: a backend's public address
    of another family than the hub's, a public address or an SSH target inside the tunnel
    subnet, two hosts that SSH would reach on one address."""
    tunnel = subnet if isinstance(subnet, ipaddress.IPv4Network) else None
    targets: dict[str, tuple[Draft, str]] = {}
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


def allocate_addresses(
    ck: Checker,
    drafts: list[Draft],
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
    owner: dict[ipaddress.IPv4Address, Draft] = {}
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


def _free_address_hint(d: Draft) -> str:
    """A further hub names its own wg_ip (``read_other_hubs``): it cannot be allocated one."""
    if d.role == "hub":
        return "write a free address of network.subnet, e.g. 10.50.0.3"
    return "remove this wg_ip to get a free one allocated"


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
