"""
Manage ufw: the rules owned by backhaul (comment ``backhaul``), the default policies, enabling,
in one operation (``firewall``) from one read of the host's state.

A rule is "ours" when its ufw comment is ``backhaul``; only those are ever deleted, so rules an
operator added by hand are never touched. ufw applies a rule to IPv4 and/or IPv6 by its
addresses: a rule naming an IPv4 address exists only in ``user.rules``, an ``any``/``any`` rule
exists in both files when ``IPV6=yes`` in ``/etc/default/ufw``. ``_stored`` predicts exactly
what ufw stores, so presence checks compare like with like. The rules themselves are decided in
``backhaul.plan.firewall_rules``.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Iterable
from typing import Any

from pyinfra import host
from pyinfra.api import OperationError, OperationValueError, operation

from backhaul import ufwbatch
from backhaul.facts import snapshot
from backhaul.facts.ufw import UfwState
from backhaul.plan import Rule

COMMENT = "backhaul"  # every ufw rule backhaul makes carries it: that is how we know ours
ANY4 = "0.0.0.0/0"
ANY6 = "::/0"

_PORTS = re.compile(r"^\d{1,5}(:\d{1,5})?(,\d{1,5}(:\d{1,5})?)*$")
_IFACE = re.compile(r"^[a-zA-Z0-9_.+-]{1,15}$")

# The fields that identify a stored rule (the comment is not one of them: ufw itself treats
# a rule that differs only by comment as the same rule).
_KEY_FIELDS = (
    "action",
    "route",
    "log",
    "direction",
    "interface",
    "out_interface",
    "proto",
    "from_ip",
    "from_port",
    "to_ip",
    "to_port",
    "from_app",
    "to_app",
    "v6",
)


def _rule_key(rule: dict[str, Any]) -> tuple:
    return tuple(rule.get(field) for field in _KEY_FIELDS)


def _normalize_port(port: int | str | None, what: str) -> str:
    if port is None or port == "any":
        return "any"
    text = str(port).replace(" ", "")
    if not _PORTS.match(text) or any(not 1 <= int(p) <= 65535 for p in re.split("[,:]", text)):
        raise OperationValueError(
            f"ufw.firewall: {what} {port!r} is not a port; write e.g. 22, '80,443' or '8000:8010'"
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
            f"ufw.firewall: {what} {value!r} is not an IP address or network; "
            "write e.g. 198.51.100.11, 10.50.0.0/24 or any"
        ) from None
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def _check(rule: Rule) -> None:
    """Refuse a rule ufw would reject or misread, before anything changes."""
    for name in ("interface", "out_interface"):
        value = getattr(rule, name)
        if value is not None and not _IFACE.match(value):
            raise OperationValueError(f"ufw.firewall: {name} {value!r} is not an interface name")
    if rule.out_interface and not rule.route:
        raise OperationValueError("ufw.firewall: out_interface needs route=True")
    if rule.proto not in (None, "tcp", "udp"):
        raise OperationValueError(f"ufw.firewall: proto {rule.proto!r} must be tcp, udp or None")
    port = _normalize_port(rule.port, "port")
    if rule.proto is None and set(port) & set(",:"):
        raise OperationValueError("ufw.firewall: port lists and ranges need proto tcp or udp")
    named = [_normalize_address(a, what) for a, what in ((rule.src, "src"), (rule.dst, "dst"))]
    if len({ipaddress.ip_network(a).version for a in named if a is not None}) > 1:
        raise OperationValueError(f"ufw.firewall: src {rule.src!r} and dst {rule.dst!r} mix IPv4 and IPv6")


def _stored(rule: Rule, ipv6: bool) -> list[dict[str, Any]]:
    """The rule(s) ufw stores for ``rule``: one per IP family it applies to."""
    src = _normalize_address(rule.src, "src")
    dst = _normalize_address(rule.dst, "dst")
    named = [ipaddress.ip_network(a).version for a in (src, dst) if a is not None]
    versions = [named[0]] if named else ([4, 6] if ipv6 else [4])
    out = []
    for version in versions:
        if version == 6 and not ipv6:
            continue  # ufw refuses v6 addresses with IPV6=no; nothing would be stored
        anyaddr = ANY6 if version == 6 else ANY4
        out.append(
            {
                "action": "allow",
                "route": rule.route,
                "log": None,
                "direction": "in",
                "interface": rule.interface,
                "out_interface": rule.out_interface,
                "proto": rule.proto or "any",
                "from_ip": src or anyaddr,
                "from_port": "any",
                "to_ip": dst or anyaddr,
                "to_port": _normalize_port(rule.port, "port"),
                "from_app": None,
                "to_app": None,
                "v6": version == 6,
            }
        )
    return out


def _words(rule: Rule) -> str:
    """The rule in ufw syntax, addresses as ufw stores them (no ``ufw``, no comment)."""
    return _spec_words(
        {
            **_stored(rule, ipv6=True)[0],
            "from_ip": _normalize_address(rule.src, "src") or "any",
            "to_ip": _normalize_address(rule.dst, "dst") or "any",
        }
    )


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
_KEEP_CHOICE = "Set IPV6=yes in /etc/default/ufw on this host (backhaul does not change that choice for you)"


def _ipv6_guard(st: dict[str, Any], rules: Iterable[Rule], ssh_family: int | None) -> None:
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
    for rule in rules:
        named = [_normalize_address(a, "address") for a in (rule.src, rule.dst)]
        if any(a is not None and ipaddress.ip_network(a).version == 6 for a in named):
            raise OperationError(
                f"refusing to change the firewall: the rule {_words(rule)!r} is for IPv6, but "
                "/etc/default/ufw says IPV6=no, so ufw would skip it and the peer could not "
                f"connect. {_KEEP_CHOICE}, or give the peer an IPv4 public_ip"
            )


def _allows_ssh_over(rule: dict[str, Any], port: int, ssh_family: int | None) -> bool:
    """``_allows_ssh``, for the session's address family when it is known."""
    return _allows_ssh(rule, port) and (ssh_family is None or rule["v6"] == (ssh_family == 6))


def _stale_commands(st: dict[str, Any], wanted: list[Rule]) -> list[str]:
    """``ufw delete`` commands for the rules commented backhaul that are not wanted.

    Deletion is by rule syntax, not number, so the order of the commands does not matter.
    """
    ipv6 = st.get("ipv6", True)
    keep = {_rule_key(t) for rule in wanted for t in _stored(rule, ipv6)}
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
            o is not r and o["v6"] != r["v6"] and _rule_key(as_any(o)) == _rule_key(merged) for o in stale
        )
        words = _spec_words(merged if both else r)
        # ufw's grammar: "ufw route delete allow ...", never "ufw delete route allow ..."
        command = (
            "ufw route delete " + words[len("route ") :]
            if words.startswith("route ")
            else "ufw delete " + words
        )
        if command not in commands:
            commands.append(command)
    return commands


@operation()
def firewall(
    rules: Iterable[Rule | dict[str, Any]],
    ssh_port: int = 22,
    ssh_family: int | None = None,
):
    """
    Bring ufw to exactly this host's firewall, from ONE read of its state.

    + rules: every rule backhaul wants on this host (``backhaul.plan.Rule``, or dicts of its
      fields), the SSH rule first
    + ssh_port: the SSH port; ufw is only enabled when a rule allows it from anywhere
    + ssh_family: 4 or 6, the address family of the SSH session (``SshSession`` fact's
      ``version``); the rule must cover it. None: not known (any family's rule will do)

    In this order: the missing wanted rules are added (SSH first, so it is allowed before
    anything else happens), the rules commented ``backhaul`` that are no longer wanted are
    deleted (a wanted rule is never missing in between; rules without the comment are never
    touched), the default policies become deny incoming / allow outgoing, and ufw is enabled.
    A rule that exists with another comment (added by hand) counts as present. A rule that
    exists for IPv4 but not yet IPv6 (``IPV6=yes`` set later) is added: ufw adds the missing half.
    With ``IPV6=no`` in /etc/default/ufw, a session over IPv6 or a rule naming an IPv6 address
    is refused before anything changes: ufw would cut the one and silently skip the other.
    One operation and one fact: every no-op operation costs a round trip per host. The
    changes run in one ufw process (``backhaul.ufwbatch``), each as its ufw command makes it.

    **Example:**

    .. code:: python

        from backhaul.operations import ufw
        from backhaul.plan import Rule
        ufw.firewall(name="Firewall", rules=[Rule(22, "tcp")], ssh_port=22)
    """
    st = snapshot.get(UfwState) or {}
    ipv6 = st.get("ipv6", True)
    wanted = [r if isinstance(r, Rule) else Rule(**r) for r in rules]
    for rule in wanted:
        _check(rule)
    _ipv6_guard(st, wanted, ssh_family)
    present = {_rule_key(r) for r in st.get("rules", [])}
    commands: list[str] = []
    for rule in wanted:
        if not all(_rule_key(t) in present for t in _stored(rule, ipv6)):
            commands.append(f"ufw {_words(rule)} comment {COMMENT}")
    commands += _stale_commands(st, wanted)
    current = st.get("defaults", {})
    for direction, policy in (("incoming", "deny"), ("outgoing", "allow")):
        if current.get(direction) != policy:
            commands.append(f"ufw default {policy} {direction}")
    if not st.get("active"):
        stored = [t for rule in wanted for t in _stored(rule, ipv6)] + list(st.get("rules", []))
        if not any(_allows_ssh_over(r, int(ssh_port), ssh_family) for r in stored):
            raise OperationError(
                f"refusing to enable ufw: no rule allows SSH on tcp port {ssh_port} from "
                "anywhere, so enabling would cut this connection (fix ssh.port in the network file)"
            )
        commands.append("ufw --force enable")
    if not commands:
        host.noop(f"ufw active with the {len(wanted)} backhaul rules, nothing stale")
        return
    # in this order, in one ufw process: each ufw command's own start costs ~0.2-0.3 s
    yield ufwbatch.command([c.removeprefix("ufw ") for c in commands])
