"""Make a docker-compose file publish its ports on the backend's WireGuard address only.

Docker's published ports bypass ufw, so a compose file that says ``"8080:80"`` exposes the
service on every interface of the backend, whatever the firewall says. Two guards close that:

1. every entry of ``services.*.ports`` names the host IP explicitly (``10.50.0.2:8080:80``);
2. every network compose creates carries the bridge option
   ``com.docker.network.bridge.host_binding_ipv4``, so a port published without an IP (a file
   edited later by hand, an ``override`` file) still binds the WireGuard address. The daemon-wide
   ``"ip"`` setting does not cover compose's own networks (shown in the lab), this option does.

The file belongs to the customer: it is rewritten by small text edits placed with the marks of
pyyaml's node tree, never re-dumped, so comments, order, quoting and indentation survive, and a
second run changes nothing. The module is pure: text in, text out.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import NamedTuple

import yaml

from backhaul import yamledit
from backhaul.errors import BackhaulError
from backhaul.yamledit import describe as _describe
from backhaul.yamledit import is_null as _is_null

HOST_BINDING_OPT = "com.docker.network.bridge.host_binding_ipv4"

_SHORT_SYNTAX = '"[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]"'
_PORT_RE = re.compile(r"(\d+)(?:-(\d+))?")
_PROTOCOLS = ("tcp", "udp", "sctp")
_TRUE = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON", "y", "Y"}
# Drivers that publish ports through the bridge code (and so honour HOST_BINDING_OPT).
_BRIDGE_DRIVERS = {"", "bridge"}


class ComposeError(BackhaulError):
    """The compose file cannot be read or one of its ports cannot be understood."""

    exit_code = 2


class PublishedPort(NamedTuple):
    """One published port after the rewrite, as compose will publish it."""

    service: str
    host_ip: str  # bind_ip, or the loopback address that was left alone
    host_port: str | None  # "8080", "8000-8005", "${PORT}"; None: Docker picks a random port
    container_port: str  # "80", "8000-8005", "${PORT}"
    protocol: str  # "tcp" unless the file says otherwise


@dataclass(frozen=True)
class RewriteResult:
    text: str
    changed: bool
    ports: list[PublishedPort] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def rewrite_compose(text: str, bind_ip: str) -> RewriteResult:
    """Return ``text`` with every published port and compose network bound to ``bind_ip``.

    Loopback binds (127.0.0.1, ::1, localhost) are kept: they are not reachable from outside.
    ``expose:`` is not publishing and is left alone. Raises :class:`ComposeError` for a file
    that is not a compose file or a port that cannot be parsed.
    """
    ip = _check_bind_ip(bind_ip)
    plan = _Planner(text, ip)
    plan.run()
    new_text = yamledit.apply(text, plan.out.edits)
    if new_text != text:
        # Cheap insurance that the edits are right: the result must parse and need no edit.
        again = _Planner(new_text, ip)
        try:
            again.run()
        except ComposeError as exc:
            raise AssertionError(f"compose rewrite broke the file (a bug in backhaul): {exc}") from exc
        if again.out.edits:
            raise AssertionError(
                f"compose rewrite is not idempotent (a bug in backhaul): {again.out.edits[:3]}"
            )
    return RewriteResult(text=new_text, changed=new_text != text, ports=plan.ports, warnings=plan.warnings)


def _check_bind_ip(bind_ip: str) -> str:
    try:
        addr = ipaddress.ip_address(bind_ip)
    except ValueError:
        raise ComposeError(
            f"bind address {bind_ip!r} is not an IP address; pass the backend's WireGuard "
            "address, e.g. 10.50.0.2"
        ) from None
    if addr.version != 4 or addr.is_unspecified or addr.is_loopback:
        raise ComposeError(
            f"bind address {bind_ip!r} cannot be used: it must be the backend's IPv4 WireGuard "
            "address (e.g. 10.50.0.2); Docker's host_binding_ipv4 option takes IPv4 only"
        )
    return str(addr)


# --- reading the node tree -----------------------------------------------------------------


def _where(node: yaml.Node) -> str:
    return f"line {node.start_mark.line + 1}, column {node.start_mark.column + 1}"


def _entries(mapping: yaml.MappingNode) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """Key -> (key node, value node), with ``<<`` merge keys resolved (own keys win)."""
    own: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    merged: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key, value in mapping.value:
        if key.tag == "tag:yaml.org,2002:merge":
            sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
            for src in sources:
                if isinstance(src, yaml.MappingNode):
                    for k, kv in _entries(src).items():
                        merged.setdefault(k, kv)
        elif isinstance(key, yaml.ScalarNode):
            own[key.value] = (key, value)
    return {**merged, **own}


def _own_keys(mapping: yaml.MappingNode) -> set[str]:
    return {k.value for k, _ in mapping.value if isinstance(k, yaml.ScalarNode)}


# --- short syntax --------------------------------------------------------------------------


@dataclass
class _Short:
    ip: str | None  # as written, brackets included; None when absent
    host: str | None  # None when the spec is the container port alone
    container: str
    proto: str  # as written, with its slash ("/udp"), or ""


def _split_colons(spec: str) -> list[str]:
    """Split on ':' outside ``${...}`` and ``[...]``, as compose sees it after interpolation."""
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(spec):
        if spec.startswith("$$", i):
            cur.append("$$")
            i += 2
        elif spec.startswith("${", i):
            j = _closing_brace(spec, i)
            cur.append(spec[i : j + 1])
            i = j + 1
        elif spec[i] == "[":
            j = spec.find("]", i)
            if j < 0:
                raise ValueError("a '[' is not closed by ']'")
            cur.append(spec[i : j + 1])
            i = j + 1
        elif spec[i] == ":":
            parts.append("".join(cur))
            cur = []
            i += 1
        else:
            cur.append(spec[i])
            i += 1
    parts.append("".join(cur))
    return parts


def _closing_brace(spec: str, start: int) -> int:
    """The index of the '}' that closes the ``${`` at ``start`` (variables nest: ``${A:-${B}}``)."""
    depth, j = 0, start
    while j < len(spec):
        if spec.startswith("${", j):
            depth += 1
            j += 2
            continue
        if spec[j] == "}":
            depth -= 1
            if depth == 0:
                return j
        j += 1
    raise ValueError("a '${' is not closed by '}'")


def _has_var(s: str) -> bool:
    return "$" in s.replace("$$", "")


def _check_port(s: str, what: str) -> None:
    if _has_var(s):
        return
    m = _PORT_RE.fullmatch(s)
    if not m:
        raise ValueError(f"{what} {s!r} is not a port number or a range like 8000-8005")
    lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
    if not (1 <= lo <= hi <= 65535):
        raise ValueError(f"{what} {s!r} is outside 1-65535 or its range is reversed")


def _parse_short(spec: str) -> _Short:
    parts = _split_colons(spec)
    last = parts[-1]
    proto = ""
    slash = last.rfind("/")
    if slash >= 0 and "}" not in last[slash:]:
        proto = last[slash:]
        last = last[:slash]
        if proto[1:].lower() not in _PROTOCOLS:
            raise ValueError(f"protocol {proto[1:]!r} is not one of {', '.join(_PROTOCOLS)}")
    if len(parts) == 1:
        ip, host = None, None
    elif len(parts) == 2:
        ip, host = None, parts[0]
    else:
        ip, host = ":".join(parts[:-2]), parts[-2]
    _check_port(last, "container port")
    if host:
        _check_port(host, "host port")
    if ip:
        _ip_kind(ip)  # raises ValueError when it is not an address
    return _Short(ip=ip or None, host=host, container=last, proto=proto)


def _unbracket(ip: str) -> str:
    return ip[1:-1] if ip.startswith("[") and ip.endswith("]") else ip


def _ip_kind(ip: str) -> str:
    """'var', 'loopback', 'unspecified' or 'address' for a host IP as written."""
    bare = _unbracket(ip)
    if _has_var(bare):
        return "var"
    if bare == "localhost":
        return "loopback"
    try:
        addr = ipaddress.ip_address(bare)
    except ValueError:
        raise ValueError(f"host IP {ip!r} is not an IP address") from None
    if addr.is_loopback:
        return "loopback"
    if addr.is_unspecified:
        return "unspecified"
    return "address"


# --- the planner ---------------------------------------------------------------------------


class _Planner:
    """Walks the node tree once and collects text edits, published ports and warnings."""

    def __init__(self, text: str, bind_ip: str):
        self.text = text
        self.bind_ip = bind_ip
        self.out = yamledit.TextEdits(text)  # the edits, each in the file's own style
        self.ports: list[PublishedPort] = []
        self.warnings: list[str] = []

    # entry point

    def run(self) -> None:
        try:
            root = yaml.compose(self.text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            raise ComposeError(
                f"the compose file is not valid YAML ({exc}); fix the syntax and retry"
            ) from None
        if root is None:
            raise ComposeError("the compose file is empty; it needs a `services:` mapping")
        if not isinstance(root, yaml.MappingNode):
            raise ComposeError(
                f"the compose file must be a mapping with a `services:` key, found a "
                f"{type(root).__name__.removesuffix('Node').lower()} at {_where(root)}"
            )
        top = _entries(root)
        if "services" not in top:
            raise ComposeError(
                "the compose file has no `services:` key (compose file format v1, or not a "
                "compose file); put the services under a top-level `services:` mapping"
            )
        skey, services = top["services"]
        if not isinstance(services, yaml.MappingNode):
            raise ComposeError(
                f"`services:` must be a mapping of service names to their settings, found "
                f"{_describe(services)} at {_where(services)}; write `services:` then one "
                "indented `name:` per service"
            )
        if services.value and not services.flow_style:
            self.out.unit = max(1, services.value[0][0].start_mark.column - skey.start_mark.column)

        uses_default = False
        for name_node, svc in services.value:
            name = name_node.value
            if _is_null(svc):
                uses_default = True  # a service with no settings joins the default network
                continue
            if not isinstance(svc, yaml.MappingNode):
                raise ComposeError(
                    f"service {name!r} must be a mapping of settings, found {_describe(svc)} "
                    f"at {_where(svc)}; indent its settings (image:, ports:, ...) under it"
                )
            uses_default |= self._service(name, svc)

        self._networks(root, top.get("networks"), uses_default)

    # services

    def _service(self, name: str, svc: yaml.MappingNode) -> bool:
        """Rewrite one service's ports; return whether it is on the default network."""
        entries = _entries(svc)
        mode_node = entries.get("network_mode", (None, None))[1]
        mode = mode_node.value if isinstance(mode_node, yaml.ScalarNode) else ""
        if mode == "host":
            self.warnings.append(
                f"service {name!r} uses network_mode: host: Docker publishes nothing for it "
                "(its ports: are ignored) and ufw does not see its sockets either, so whatever "
                "its program binds (often 0.0.0.0) is reachable from the internet; make the "
                f"program listen on {self.bind_ip} or 127.0.0.1, or drop network_mode: host"
            )
        if "ports" in entries:
            self._ports(name, entries["ports"][1])
        if mode:
            return False
        nets = entries.get("networks", (None, None))[1]
        if nets is None or _is_null(nets):
            return True
        if isinstance(nets, yaml.SequenceNode):
            return any(getattr(n, "value", None) == "default" for n in nets.value)
        if isinstance(nets, yaml.MappingNode):
            return "default" in _own_keys(nets)
        return False

    def _ports(self, name: str, ports: yaml.Node) -> None:
        if _is_null(ports):
            return
        if not isinstance(ports, yaml.SequenceNode):
            raise ComposeError(
                f"service {name!r}: `ports:` must be a list, found {_describe(ports)} at "
                f'{_where(ports)}; write one `- "8080:80"` line per port'
            )
        for i, item in enumerate(ports.value):
            where = f"service {name!r}: ports[{i}] ({_where(item)})"
            if isinstance(item, yaml.ScalarNode) and not _is_null(item):
                self._short(name, where, item, flow=bool(ports.flow_style))
            elif isinstance(item, yaml.MappingNode):
                self._long(name, where, item, flow=bool(ports.flow_style or item.flow_style))
            else:
                raise ComposeError(
                    f"{where}: {_describe(item)} is not a port; write {_SHORT_SYNTAX} "
                    "or a mapping with target:/published:"
                )

    def _short(self, name: str, where: str, node: yaml.ScalarNode, flow: bool) -> None:
        raw = node.value  # the source text: `22:22` is this string, not YAML 1.1's 1342
        try:
            spec = _parse_short(raw)
        except ValueError as exc:
            raise ComposeError(
                f"{where}: cannot parse port {raw!r}: {exc}; write it as {_SHORT_SYNTAX}, "
                f'e.g. "{self.bind_ip}:8080:80" (quoted)'
            ) from None
        if spec.host is None and _has_var(spec.container):
            self.warnings.append(
                f"service {name!r}: port {raw!r} is one variable, read as a container port and "
                f"bound to {self.bind_ip}; if it holds HOST:CONTAINER, write "
                f'"{self.bind_ip}:${{HOST_PORT}}:${{CONTAINER_PORT}}" instead'
            )
        new_ip = self._decide_ip(name, f"port {raw!r}", spec.ip)
        protocol = spec.proto[1:].lower() or "tcp"
        if new_ip is None:  # kept as written
            ip_out = _unbracket(spec.ip or "")
        else:
            ip_out = new_ip
            new = f"{new_ip}:{spec.host or ''}:{spec.container}{spec.proto}"
            start = yamledit.text_start(self.text, node)
            self.out.add(start, node.end_mark.index, self.out.scalar(new, node, flow))
        self.ports.append(PublishedPort(name, ip_out, spec.host or None, spec.container, protocol))

    def _long(self, name: str, where: str, node: yaml.MappingNode, flow: bool) -> None:
        entries = _entries(node)
        values = {k: v for k, (_, v) in entries.items()}
        target = values.get("target")
        if not isinstance(target, yaml.ScalarNode) or _is_null(target):
            raise ComposeError(
                f"{where}: a long-syntax port needs `target:` (the container port); add e.g. `target: 80`"
            )
        published = values.get("published")
        pub = None if published is None or _is_null(published) else str(published.value)
        try:
            _check_port(target.value, "target")
            if pub:
                _check_port(pub, "published")
        except ValueError as exc:
            raise ComposeError(f"{where}: {exc}; fix the value") from None
        proto_node = values.get("protocol")
        protocol = proto_node.value.lower() if isinstance(proto_node, yaml.ScalarNode) else ""
        label = f"port (target {target.value}{', published ' + pub if pub else ''})"

        host_ip = values.get("host_ip")
        if host_ip is None:
            new_ip = self.bind_ip
            self.out.insert_entry(node, "host_ip", self.bind_ip, flow=flow)
        elif not isinstance(host_ip, yaml.ScalarNode):
            raise ComposeError(
                f"{where}: host_ip must be an address, found {_describe(host_ip)}; "
                f"write host_ip: {self.bind_ip}"
            )
        elif _is_null(host_ip):
            new_ip = self.bind_ip
            self.out.replace_value(host_ip, self.bind_ip, flow=flow)
        else:
            try:
                new_ip = self._decide_ip(name, label, host_ip.value)
            except ValueError as exc:
                raise ComposeError(f"{where}: {exc}; write host_ip: {self.bind_ip}") from None
            if new_ip is not None:
                self.out.add(
                    yamledit.text_start(self.text, host_ip),
                    host_ip.end_mark.index,
                    self.out.scalar(new_ip, host_ip, flow),
                )
        ip_out = new_ip if new_ip is not None else _unbracket(host_ip.value)
        short = f"{ip_out}:{pub or ''}:{target.value}"
        if protocol and protocol != "tcp":
            short += f"/{protocol}"
        # Said on every run: it stays true of the file after the rewrite.
        self.warnings.append(
            f"service {name!r}: long-syntax {label} has host_ip: {ip_out}, which "
            "docker-compose 1.x (Debian's 1.29) rejects as an unknown key and would ignore "
            f'anyway; for it, write the short form "{short}" instead'
        )
        self.ports.append(PublishedPort(name, ip_out, pub, target.value, protocol or "tcp"))

    def _decide_ip(self, name: str, label: str, ip: str | None) -> str | None:
        """The IP to write, or None to keep the one written. Warns on every rebind."""
        if not ip:
            return self.bind_ip
        kind = _ip_kind(ip)
        if kind == "loopback":
            return None
        if kind == "var":
            self.warnings.append(
                f"service {name!r}: {label}: host IP {ip!r} is a variable and could expose the "
                f"port on every interface; replaced by {self.bind_ip}"
            )
            return self.bind_ip
        if ipaddress.ip_address(_unbracket(ip)) == ipaddress.ip_address(self.bind_ip):
            return None
        why = "every interface" if kind == "unspecified" else "a non-WireGuard address"
        self.warnings.append(
            f"service {name!r}: {label} was bound to {_unbracket(ip)} ({why}); rebound to {self.bind_ip}"
        )
        return self.bind_ip

    # networks

    def _networks(
        self,
        root: yaml.MappingNode,
        networks: tuple[yaml.Node, yaml.Node] | None,
        uses_default: bool,
    ) -> None:
        opts = {HOST_BINDING_OPT: f'"{self.bind_ip}"'}
        if networks is None:
            if uses_default:
                self.out.insert_entry(root, "networks", {"default": {"driver_opts": opts}})
            return
        key, nets = networks
        if _is_null(nets):
            if uses_default:
                self.out.fill_null(key, nets, {"default": {"driver_opts": opts}}, flow=False)
            return
        if not isinstance(nets, yaml.MappingNode):
            raise ComposeError(
                f"top-level `networks:` must be a mapping of network names, found "
                f"{_describe(nets)} at {_where(nets)}"
            )
        for knode, net in nets.value:
            if isinstance(knode, yaml.ScalarNode):
                self._network(knode, net, opts, flow=bool(nets.flow_style))
        if uses_default and "default" not in _own_keys(nets):
            self.out.insert_entry(nets, "default", {"driver_opts": opts}, flow=bool(nets.flow_style))

    def _network(self, key: yaml.ScalarNode, net: yaml.Node, opts: dict, flow: bool) -> None:
        name = key.value
        if _is_null(net):
            self.out.fill_null(key, net, {"driver_opts": opts}, flow=flow)
            return
        if not isinstance(net, yaml.MappingNode):
            raise ComposeError(
                f"network {name!r} must be a mapping (driver:, driver_opts:, ...), found "
                f"{_describe(net)} at {_where(net)}"
            )
        flow = flow or bool(net.flow_style)
        values = {k: v for k, (_, v) in _entries(net).items()}
        external = values.get("external")
        if isinstance(external, yaml.MappingNode) or (
            isinstance(external, yaml.ScalarNode) and external.value in _TRUE
        ):
            return  # not created by compose: its owner decides how it binds
        driver = values.get("driver")
        driver_name = driver.value if isinstance(driver, yaml.ScalarNode) else ""
        if driver_name not in _BRIDGE_DRIVERS and not _has_var(driver_name):
            self.warnings.append(
                f"network {name!r} uses driver {driver_name!r}, which does not take "
                f"{HOST_BINDING_OPT}; left as is: ports on it rely on their explicit host IP"
            )
            return
        dopts = values.get("driver_opts")
        if dopts is None:
            self.out.insert_entry(net, "driver_opts", opts, flow=flow)
        elif _is_null(dopts):
            dkey = _entries(net)["driver_opts"][0]
            self.out.fill_null(dkey, dopts, opts, flow=flow)
        elif not isinstance(dopts, yaml.MappingNode):
            raise ComposeError(
                f"network {name!r}: driver_opts must be a mapping, found {_describe(dopts)} "
                f"at {_where(dopts)}"
            )
        else:
            dflow = flow or bool(dopts.flow_style)
            current = {k: v for k, (_, v) in _entries(dopts).items()}.get(HOST_BINDING_OPT)
            if current is None:
                self.out.insert_entry(dopts, HOST_BINDING_OPT, opts[HOST_BINDING_OPT], flow=dflow)
            elif getattr(current, "value", None) != self.bind_ip:
                self.warnings.append(
                    f"network {name!r}: {HOST_BINDING_OPT} was "
                    f"{getattr(current, 'value', '?')!r}; set to {self.bind_ip}"
                )
                self.out.replace_value(current, self.bind_ip, flow=dflow)
