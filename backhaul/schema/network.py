"""The network and ssh sections, and the whole file put together from its parts."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode, Node

from backhaul.fields import (
    UNROUTABLE_V4,
    allow_error,
    check_interface,
    check_name_domain,
    check_paths,
    check_ssh_via,
    check_user,
    controller_file,
    controller_path,
)
from backhaul.model import (
    HUB_WEB_PORTS,
    Client,
    Host,
    Network,
    Ssh,
)
from backhaul.schema.clients import allocate_client_addresses, read_clients, resolve_allow
from backhaul.schema.hosts import (
    Draft,
    allocate_addresses,
    check_hub_families,
    check_hubs_without_psk,
    check_public_ip6_not_a_public_ip,
    check_routes,
    check_unique,
    read_host,
    read_other_hubs,
)
from backhaul.schema.keys import NETWORK_KEYS, SSH_KEYS, TOP_KEYS
from backhaul.schema.services import check_client_names_not_services, read_services
from backhaul.schema.tls import read_tls
from backhaul.yamlcheck import BAD, Checker
from backhaul.yamledit import show as _show


def read_network(
    ck: Checker, doc: MappingNode, path: Path
) -> tuple[Network | None, list[tuple[MappingNode, ipaddress.IPv4Address]]]:
    top = ck.mapping(doc, "", TOP_KEYS, required=("network", "proxy")) or {}
    base = Path(os.path.abspath(path)).parent  # relative controller paths: to the file

    # network:
    nm = ck.mapping(top.get("network"), "network", NETWORK_KEYS, required=("subnet",)) or {}
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
    sm = ck.mapping(top.get("ssh"), "ssh", SSH_KEYS) or {}
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
    drafts: list[Draft] = []
    hub_node = top.get("proxy")
    if hub_node is not None:
        hub = read_host(ck, hub_node, "proxy", "hub")
        if hub is not None:
            drafts.append(hub)
    drafts += read_other_hubs(ck, top.get("proxies"))
    backends_node = top.get("backends")
    for i, item in enumerate(ck.items(backends_node, "backends", "backends")):
        draft = read_host(ck, item, f"backends[{i}]", "backend")
        if draft is not None:
            drafts.append(draft)
    backend_names = {d.name for d in drafts if d.role == "backend" and isinstance(d.name, str)}
    hub_names = {d.name for d in drafts if d.role == "hub" and isinstance(d.name, str)}
    check_unique(ck, drafts, "name", "names")
    check_unique(ck, drafts, "public_ip", "public IPs")
    check_unique(ck, drafts, "public_ip6", "public IPs")
    check_public_ip6_not_a_public_ip(ck, drafts)
    check_hub_families(ck, drafts)
    check_hubs_without_psk(ck, drafts, nm, psk)

    # clients: (their addresses after the hosts')
    client_drafts = read_clients(ck, top.get("clients"), drafts)
    client_names = {c.name for c in client_drafts if isinstance(c.name, str)}

    # services:
    services = read_services(ck, top.get("services"), backend_names, hub_names, ssh_port, client_names)
    check_client_names_not_services(ck, client_drafts, services)

    # tls:
    tls = read_tls(ck, top.get("tls"), doc, base)

    # addresses
    allocated: list[tuple[MappingNode, ipaddress.IPv4Address]] = []
    wg: dict[int, ipaddress.IPv4Address] = {}
    if isinstance(subnet, ipaddress.IPv4Network):
        reserved = frozenset(c.wg_ip for c in client_drafts if isinstance(c.wg_ip, ipaddress.IPv4Address))
        wg, allocated = allocate_addresses(ck, drafts, subnet, nm.get("subnet"), reserved)
        allocated += allocate_client_addresses(ck, client_drafts, subnet, drafts, wg)
    check_routes(ck, drafts, subnet)

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
        network, services=tuple(resolve_allow(s, clients) for s in network.services)
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
