"""
Manage ufw: rules owned by backhaul (comment ``backhaul``), default policies, enabling.

A rule is "ours" when its ufw comment is ``backhaul``; ``remove_stale`` deletes only those, so
rules an operator added by hand are never touched. ufw applies a rule to IPv4 and/or IPv6 by
its addresses: a rule naming an IPv4 address exists only in ``user.rules``, an ``any``/``any``
rule exists in both files when ``IPV6=yes`` in ``/etc/default/ufw``. ``UfwRule.tuples`` predicts
exactly what ufw stores so presence checks compare like with like.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from pyinfra import host
from pyinfra.api import OperationError, OperationValueError, operation
from pyinfra.context import ctx_host

from backhaul.facts import snapshot
from backhaul.facts.ufw import UfwState

COMMENT = "backhaul"
ANY4 = "0.0.0.0/0"
ANY6 = "::/0"

_ACTIONS = ("allow", "deny", "reject", "limit")
_PROTOS = ("any", "tcp", "udp", "ah", "esp", "gre", "ipv6", "igmp")
_PORTS = re.compile(r"^\d{1,5}(:\d{1,5})?(,\d{1,5}(:\d{1,5})?)*$")
_IFACE = re.compile(r"^[a-zA-Z0-9_.+-]{1,15}$")

# Rules that ufw.rule saw present or yielded, per host, during this pyinfra run: lets
# ufw.enable know that the SSH rule will exist by then even though, while the deploy is being
# prepared, the facts cannot show it yet.
_PLANNED: WeakKeyDictionary[Any, list[dict[str, Any]]] = WeakKeyDictionary()

# The fields that identify a stored rule (the comment is not one of them: ufw itself treats
# a rule that differs only by comment as the same rule).
_KEY_FIELDS = (
    "action", "route", "log", "direction", "interface", "out_interface", "proto",
    "from_ip", "from_port", "to_ip", "to_port", "from_app", "to_app", "v6",
)  # fmt: skip


def _rule_key(rule: dict[str, Any]) -> tuple:
    return tuple(rule.get(field) for field in _KEY_FIELDS)


def _normalize_port(port: int | str | None, what: str) -> str:
    if port is None or port == "any":
        return "any"
    text = str(port).replace(" ", "")
    if not _PORTS.match(text) or any(not 1 <= int(p) <= 65535 for p in re.split("[,:]", text)):
        raise OperationValueError(
            f"ufw.rule: {what} {port!r} is not a port; write e.g. 22, '80,443' or '8000:8010'"
        )
    return text


def _normalize_address(value: str | None, what: str) -> str | None:
    """``any``/None -> None; else the address as ufw stores it (host bits cleared, no /32)."""
    if value is None or value == "any":
        return None
    try:
        network = ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise OperationValueError(
            f"ufw.rule: {what} {value!r} is not an IP address or network; "
            "write e.g. 198.51.100.11, 10.50.0.0/24 or any"
        ) from None
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


@dataclass(frozen=True)
class UfwRule:
    """A wanted ufw rule, in the terms of ``ufw [route] ACTION DIR on IF proto P from A to B``.

    ``port`` is the destination port (``22``, ``"80,443"``, ``"8000:8010"``, None = any),
    ``src``/``dst`` an address, network or ``any``; ``interface`` gives ``<direction> on IF``;
    ``route=True`` makes a forwarding rule (``out_interface`` gives ``out on IF``).
    """

    port: int | str | None = None
    proto: str = "any"
    action: str = "allow"
    src: str = "any"
    dst: str = "any"
    src_port: int | str | None = None
    interface: str | None = None
    direction: str = "in"
    route: bool = False
    out_interface: str | None = None

    def __post_init__(self) -> None:
        if self.action not in _ACTIONS:
            raise OperationValueError(
                f"ufw.rule: action {self.action!r} must be one of {', '.join(_ACTIONS)}"
            )
        if self.proto not in _PROTOS:
            raise OperationValueError(
                f"ufw.rule: proto {self.proto!r} must be one of {', '.join(_PROTOS)}"
            )
        if self.direction not in ("in", "out"):
            raise OperationValueError(f"ufw.rule: direction {self.direction!r} must be in or out")
        for name in ("interface", "out_interface"):
            value = getattr(self, name)
            if value is not None and not _IFACE.match(value):
                raise OperationValueError(f"ufw.rule: {name} {value!r} is not an interface name")
        if self.out_interface and not self.route:
            raise OperationValueError("ufw.rule: out_interface needs route=True")
        ports = [_normalize_port(self.port, "port"), _normalize_port(self.src_port, "src_port")]
        if any(p != "any" for p in ports):
            if self.proto not in ("tcp", "udp", "any"):
                raise OperationValueError(
                    f"ufw.rule: ports need proto tcp, udp or any (got proto {self.proto!r})"
                )
            if self.proto == "any" and any(set(p) & set(",:") for p in ports):
                raise OperationValueError("ufw.rule: port lists and ranges need proto tcp or udp")
        families = {
            ipaddress.ip_network(a).version
            for a in (
                _normalize_address(self.src, "src"),
                _normalize_address(self.dst, "dst"),
            )
            if a is not None
        }
        if len(families) > 1:
            raise OperationValueError(
                f"ufw.rule: src {self.src!r} and dst {self.dst!r} mix IPv4 and IPv6"
            )

    @classmethod
    def of(cls, spec: UfwRule | dict[str, Any]) -> UfwRule:
        return spec if isinstance(spec, UfwRule) else cls(**spec)

    def tuples(self, ipv6: bool) -> list[dict[str, Any]]:
        """The rule(s) ufw stores for this spec: one per IP family it applies to."""
        src = _normalize_address(self.src, "src")
        dst = _normalize_address(self.dst, "dst")
        named = [ipaddress.ip_network(a).version for a in (src, dst) if a is not None]
        versions = [named[0]] if named else ([4, 6] if ipv6 else [4])
        out = []
        for version in versions:
            if version == 6 and not ipv6:
                continue  # ufw refuses v6 addresses with IPV6=no; nothing would be stored
            anyaddr = ANY6 if version == 6 else ANY4
            out.append(
                {
                    "action": self.action,
                    "route": self.route,
                    "log": None,
                    "direction": self.direction,
                    "interface": self.interface,
                    "out_interface": self.out_interface,
                    "proto": self.proto,
                    "from_ip": src or anyaddr,
                    "from_port": _normalize_port(self.src_port, "src_port"),
                    "to_ip": dst or anyaddr,
                    "to_port": _normalize_port(self.port, "port"),
                    "from_app": None,
                    "to_app": None,
                    "v6": version == 6,
                }
            )
        return out

    def describe(self) -> str:
        """The rule in ufw syntax, addresses as ufw stores them (no ``ufw``, no comment)."""
        return _spec_words(
            {
                **self.tuples(ipv6=True)[0],
                "from_ip": _normalize_address(self.src, "src") or "any",
                "to_ip": _normalize_address(self.dst, "dst") or "any",
            }
        )

    def command(self) -> str:
        return f"ufw {self.describe()} comment {COMMENT}"


def _spec_words(rule: dict[str, Any]) -> str:
    """A stored-rule dict -> the ufw rule syntax that adds or deletes it."""
    words = []
    if rule["route"]:
        words.append("route")
    words += [rule["action"], rule["direction"]]
    if rule["interface"]:
        words += ["on", rule["interface"]]
    if rule.get("out_interface"):
        words += ["out", "on", rule["out_interface"]]
    if rule.get("log"):
        words.append(rule["log"])
    if rule["proto"] != "any":
        words += ["proto", rule["proto"]]
    words += ["from", rule["from_ip"]]
    if rule["from_port"] != "any":
        words += ["port", rule["from_port"]]
    words += ["to", rule["to_ip"]]
    if rule["to_port"] != "any":
        words += ["port", rule["to_port"]]
    return " ".join(shlex.quote(str(w)) for w in words)


def _port_in(port: int, ports: str) -> bool:
    if ports == "any":
        return True
    for part in ports.split(","):
        low, _, high = part.partition(":")
        if int(low) <= port <= int(high or low):
            return True
    return False


def _allows_ssh(rule: dict[str, Any], port: int) -> bool:
    return (
        rule["action"] in ("allow", "limit")
        and not rule["route"]
        and rule["direction"] == "in"
        and rule["interface"] is None
        and rule["proto"] in ("tcp", "any")
        and rule["from_ip"] in (ANY4, ANY6)
        and rule.get("from_app") is None
        and rule.get("to_app") is None
        and _port_in(port, rule["to_port"])
    )


# IPV6=no is an admin's explicit choice (Debian ships yes): say how to change it, never flip it
_KEEP_CHOICE = ("Set IPV6=yes in /etc/default/ufw on this host (backhaul does not change that "
                "choice for you)")


def _ipv6_guard(st: dict[str, Any], specs: Iterable[UfwRule], ssh_family: int | None) -> None:
    """Refuse what ``IPV6=no`` in /etc/default/ufw would silently break: ufw then drops all IPv6
    but loopback (so ``ufw enable`` cuts an SSH session over IPv6, and a reboot does it later
    for an active ufw) and skips every rule that names an IPv6 address."""
    if st.get("ipv6", True):
        return
    if ssh_family == 6:
        raise OperationError(
            "refusing to change the firewall: this SSH session runs over IPv6, but "
            "/etc/default/ufw says IPV6=no, so ufw drops all IPv6 but loopback and would cut "
            f"this session and every later one. {_KEEP_CHOICE}, or set ssh_host to its IPv4 "
            "address"
        )
    for spec in specs:
        named = [_normalize_address(a, "address") for a in (spec.src, spec.dst)]
        if any(a is not None and ipaddress.ip_network(a).version == 6 for a in named):
            raise OperationError(
                f"refusing to change the firewall: the rule {spec.describe()!r} is for IPv6, but "
                "/etc/default/ufw says IPV6=no, so ufw would skip it and the peer could not "
                f"connect. {_KEEP_CHOICE}, or give the peer an IPv4 public_ip"
            )


def _allows_ssh_over(rule: dict[str, Any], port: int, ssh_family: int | None) -> bool:
    """``_allows_ssh``, for the session's address family when it is known."""
    return _allows_ssh(rule, port) and (ssh_family is None or rule["v6"] == (ssh_family == 6))


@operation()
def rule(
    port: int | str | None = None,
    proto: str = "any",
    action: str = "allow",
    src: str = "any",
    dst: str = "any",
    src_port: int | str | None = None,
    interface: str | None = None,
    direction: str = "in",
    route: bool = False,
    out_interface: str | None = None,
):
    """
    Add a ufw rule owned by backhaul (ufw comment ``backhaul``) unless it exists.

    + port: destination port, port list or range (``22``, ``"80,443"``, ``"8000:8010"``);
      None = any
    + proto: ``tcp``, ``udp`` or ``any``
    + action: ``allow``, ``deny``, ``reject`` or ``limit``
    + src: source address or network, or ``any``
    + dst: destination address or network, or ``any``
    + src_port: source port (rarely needed)
    + interface: only traffic ``<direction> on`` this interface (e.g. ``wg0``)
    + direction: ``in`` or ``out``
    + route: a forwarding rule (``ufw route ...``), e.g. backend to backend via the hub
    + out_interface: with ``route``, the interface the traffic leaves by

    A rule that exists with another comment (added by hand) counts as present and is left
    alone. A rule that exists for IPv4 but not yet IPv6 (``IPV6=yes`` set later) is added:
    ufw then adds only the missing half.

    **Examples:**

    .. code:: python

        from backhaul.operations import ufw
        ufw.rule(name="SSH", port=22, proto="tcp")
        ufw.rule(name="WireGuard from backend-1", port=51820, proto="udp",
                 src="198.51.100.11")
        ufw.rule(name="app over the tunnel", port=8080, proto="tcp",
                 src="10.50.0.1", interface="wg0")
    """

    spec = UfwRule(
        port=port,
        proto=proto,
        action=action,
        src=src,
        dst=dst,
        src_port=src_port,
        interface=interface,
        direction=direction,
        route=route,
        out_interface=out_interface,
    )
    st = snapshot.get(UfwState) or {}
    _ipv6_guard(st, [spec], None)
    wanted = spec.tuples(ipv6=st.get("ipv6", True))
    real_host = ctx_host.get()
    if real_host is not None:
        _PLANNED.setdefault(real_host, []).extend(wanted)

    present = {_rule_key(r) for r in st.get("rules", [])}
    if all(_rule_key(t) in present for t in wanted):
        host.noop(f"ufw rule present: {spec.describe()}")
        return
    yield spec.command()


def _stale_commands(st: dict[str, Any], wanted: list[UfwRule]) -> list[str]:
    """``ufw delete`` commands for the rules commented backhaul that are not wanted."""
    ipv6 = st.get("ipv6", True)
    keep = {_rule_key(t) for spec in wanted for t in spec.tuples(ipv6=ipv6)}
    ours = [r for r in st.get("rules", []) if r.get("comment") == COMMENT]
    stale = [r for r in ours if _rule_key(r) not in keep and r.get("from_app") is None]
    stale = [r for r in stale if r.get("to_app") is None]

    def as_any(r: dict[str, Any]) -> dict[str, Any]:
        anyaddr = ANY6 if r["v6"] else ANY4
        return {
            **r,
            "from_ip": "any" if r["from_ip"] == anyaddr else r["from_ip"],
            "to_ip": "any" if r["to_ip"] == anyaddr else r["to_ip"],
            "v6": None,
        }

    # An any-to-any rule stored twice (v4 and v6) is deleted by one "from any to any"
    # command; anything else by its exact addresses (ufw then deletes just that family).
    commands: list[str] = []
    for r in stale:
        merged = as_any(r)
        both = merged["from_ip"] == merged["to_ip"] == "any" and any(
            o is not r and o["v6"] != r["v6"] and _rule_key(as_any(o)) == _rule_key(merged)
            for o in stale
        )
        words = _spec_words(merged if both else r)
        # ufw's grammar: "ufw route delete allow ...", never "ufw delete route allow ..."
        command = ("ufw route delete " + words[len("route "):] if words.startswith("route ")
                   else "ufw delete " + words)  # fmt: skip
        if command not in commands:
            commands.append(command)
    return commands


@operation()
def remove_stale(wanted: Iterable[UfwRule | dict[str, Any]]):
    """
    Delete the ufw rules commented ``backhaul`` that are not in ``wanted``.

    + wanted: every rule backhaul wants on this host, as ``UfwRule`` or dicts of
      ``ufw.rule``'s arguments

    Rules without the ``backhaul`` comment are never touched. Deletion is by rule syntax, not
    number, so the order of the commands does not matter. Run it after the ``ufw.rule`` calls
    so a rule is never missing in between.

    **Example:**

    .. code:: python

        from backhaul.operations import ufw
        wanted = [dict(port=22, proto="tcp"), dict(port=51820, proto="udp")]
        for r in wanted:
            ufw.rule(**r)
        ufw.remove_stale(name="Remove old backhaul rules", wanted=wanted)
    """

    st = snapshot.get(UfwState) or {}
    commands = _stale_commands(st, [UfwRule.of(spec) for spec in wanted])
    if not commands:
        ours = [r for r in st.get("rules", []) if r.get("comment") == COMMENT]
        host.noop(f"no stale backhaul ufw rules ({len(ours)} owned, all wanted)")
        return
    yield from commands


@operation()
def defaults(incoming: str = "deny", outgoing: str = "allow", routed: str | None = None):
    """
    Set ufw's default policies.

    + incoming: ``allow``, ``deny`` or ``reject`` for incoming traffic
    + outgoing: the same for outgoing traffic
    + routed: the same for forwarded traffic; None leaves it as it is

    **Example:**

    .. code:: python

        from backhaul.operations import ufw
        ufw.defaults(name="Deny incoming", incoming="deny", outgoing="allow")
    """

    st = snapshot.get(UfwState) or {}
    current = st.get("defaults", {})
    changed = False
    wanted = (("incoming", incoming), ("outgoing", outgoing), ("routed", routed))
    for direction, policy in wanted:
        if policy is None:
            continue
        if policy not in ("allow", "deny", "reject"):
            raise OperationValueError(
                f"ufw.defaults: {direction}={policy!r} must be allow, deny or reject"
            )
        if current.get(direction) != policy:
            changed = True
            yield f"ufw default {policy} {direction}"
    if not changed:
        host.noop(
            "ufw default policies already "
            + ", ".join(f"{policy} {direction}" for direction, policy in wanted if policy)
        )


@operation()
def enable(ssh_port: int = 22, ssh_family: int | None = None):
    """
    Enable ufw (``ufw --force enable``), but only when SSH stays reachable.

    + ssh_port: the port the controller's SSH uses; an ``allow``/``limit`` rule for it from
      any address, on no particular interface, must exist or have been added by an earlier
      ``ufw.rule`` in this deploy, else OperationError (nothing is changed)
    + ssh_family: 4 or 6, the address family of the SSH session (``SshSession`` fact's
      ``version``); the rule must cover it, and ``IPV6=no`` with a session over IPv6 is
      refused. None: not known (any family's rule will do)

    **Example:**

    .. code:: python

        from backhaul.operations import ufw
        ufw.rule(name="SSH", port=22, proto="tcp")
        ufw.enable(name="Enable ufw", ssh_port=22)
    """

    st = snapshot.get(UfwState) or {}
    _ipv6_guard(st, [], ssh_family)
    if st.get("active"):
        host.noop("ufw is already active")
        return
    real_host = ctx_host.get()
    planned = _PLANNED.get(real_host, []) if real_host is not None else []
    rules = list(st.get("rules", [])) + planned
    if not any(_allows_ssh_over(r, int(ssh_port), ssh_family) for r in rules):
        raise OperationError(
            f"refusing to enable ufw: no rule allows SSH on tcp port {ssh_port} from anywhere, "
            "so enabling would cut this connection. Add "
            f"ufw.rule(port={ssh_port}, proto='tcp') before ufw.enable (or fix ssh.port "
            "in the network file)"
        )
    yield "ufw --force enable"


@operation()
def firewall(
    rules: Iterable[UfwRule | dict[str, Any]],
    ssh_port: int = 22,
    incoming: str = "deny",
    outgoing: str = "allow",
    ssh_family: int | None = None,
):
    """
    Bring ufw to exactly this host's firewall, from ONE read of its state.

    + rules: every rule backhaul wants on this host (``UfwRule`` or dicts of ``rule``'s
      arguments), the SSH rule first
    + ssh_port: the SSH port; ufw is only enabled when a rule allows it from anywhere
    + ssh_family: 4 or 6, the address family of the SSH session, as for ``enable``

    With ``IPV6=no`` in /etc/default/ufw, a session over IPv6 or a rule naming an IPv6 address
    is refused before anything changes: ufw would cut the one and silently skip the other.
    + incoming, outgoing: default policies

    The same steps as ``rule`` (for each) + ``remove_stale`` + ``defaults`` + ``enable``, in that
    order (so SSH is allowed before anything else happens and a wanted rule is never missing in
    between), but one operation and one fact: every no-op operation costs a round trip per host.

    **Example:**

    .. code:: python

        from backhaul.operations import ufw
        ufw.firewall(name="Firewall", rules=[dict(port=22, proto="tcp")], ssh_port=22)
    """
    st = snapshot.get(UfwState) or {}
    ipv6 = st.get("ipv6", True)
    specs = [UfwRule.of(r) for r in rules]
    _ipv6_guard(st, specs, ssh_family)
    present = {_rule_key(r) for r in st.get("rules", [])}
    commands: list[str] = []
    for spec in specs:
        if not all(_rule_key(t) in present for t in spec.tuples(ipv6=ipv6)):
            commands.append(spec.command())
    # stale removal and defaults: reuse the single-purpose operations' logic on the same fact
    commands += _stale_commands(st, specs)
    current = st.get("defaults", {})
    for direction, policy in (("incoming", incoming), ("outgoing", outgoing)):
        if current.get(direction) != policy:
            commands.append(f"ufw default {policy} {direction}")
    if not st.get("active"):
        wanted = [t for spec in specs for t in spec.tuples(ipv6=ipv6)] + list(st.get("rules", []))
        if not any(_allows_ssh_over(r, int(ssh_port), ssh_family) for r in wanted):
            raise OperationError(
                f"refusing to enable ufw: no rule allows SSH on tcp port {ssh_port} from "
                "anywhere, so enabling would cut this connection (fix ssh.port in the network file)"
            )
        commands.append("ufw --force enable")
    if not commands:
        host.noop(f"ufw active with the {len(specs)} backhaul rules, nothing stale")
        return
    yield from commands
