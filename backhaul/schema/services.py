"""The services: each one's fields, and who its `allow:` grants (addresses, clients, backends)."""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
from typing import Any

from yaml.nodes import Node

from backhaul.fields import (
    HOST_NAME_RE,
    allow_error,
    check_domain,
    check_service_name,
    check_unit,
    hub_path,
)
from backhaul.model import (
    ALL_CLIENTS,
    Service,
)
from backhaul.schema.clients import ClientDraft
from backhaul.schema.keys import SERVICE_KEYS
from backhaul.yamlcheck import BAD, Checker, is_str
from backhaul.yamledit import describe as _describe
from backhaul.yamledit import show as _show


def _a_hub(hub_names: set[str]) -> str:
    return "the hub" if len(hub_names) == 1 else "a hub"


def read_services(
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
            SERVICE_KEYS,
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
                allow_names.append(anode.value)  # resolved to addresses by resolve_allow
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


def check_client_names_not_services(ck: Checker, clients: list[ClientDraft], services: list[Service]) -> None:
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
