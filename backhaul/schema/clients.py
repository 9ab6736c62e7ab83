"""The clients (admins' devices): their fields, addresses and expiry, and the client names in
services' allow lists replaced by their addresses."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode

from backhaul.fields import (
    check_host_name,
    hub_key_error,
    public_key_error,
)
from backhaul.model import (
    ALL_CLIENTS,
    Client,
    Service,
)
from backhaul.schema.hosts import Draft, read_wg_ip
from backhaul.schema.keys import CLIENT_KEYS
from backhaul.yamlcheck import BAD, Checker
from backhaul.yamledit import TAG as _TAG
from backhaul.yamledit import describe as _describe
from backhaul.yamledit import show as _show


@dataclass
class ClientDraft:
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


def read_clients(ck: Checker, node: Node | None, hosts: list[Draft]) -> list[ClientDraft]:
    host_names = {d.name for d in hosts if isinstance(d.name, str)}
    out: list[ClientDraft] = []
    names: dict[str, str] = {}
    keys: dict[str, str] = {}
    for i, item in enumerate(ck.items(node, "clients", "clients")):
        path = f"clients[{i}]"
        m = ck.mapping(
            item,
            path,
            CLIENT_KEYS,
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
        wg_ip = read_wg_ip(ck, m, path, "10.50.0.254", "remove this wg_ip to get one")
        expires = _expires(ck, m, f"{path}.expires")
        hub_key = ck.matching(m, "hub_key", f"{path}.hub_key", hub_key_error)
        out.append(ClientDraft(path, item, name, key, wg_ip, m.get("wg_ip"), expires, hub_key))
    return out


def allocate_client_addresses(
    ck: Checker,
    clients: list[ClientDraft],
    subnet: ipaddress.IPv4Network,
    hosts: list[Draft],
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


def resolve_allow(service: Service, clients: dict[str, Client]) -> Service:
    """A service's allow list with client names (and `clients`) replaced by their addresses."""
    if not service.allow_names:
        return service
    out = list(service.allow)
    for a in service.allow_names:
        for c in clients.values() if a == ALL_CLIENTS else [clients[a]]:
            if c.wg_cidr not in out:
                out.append(c.wg_cidr)
    return dataclasses.replace(service, allow=tuple(out))
