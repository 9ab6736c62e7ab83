"""ufw facts: the whole firewall state in one command, rules parsed from ufw's own files."""

from __future__ import annotations

from typing import Any

from pyinfra.api import FactBase

# ufw writes one `### tuple ###` comment per rule into /etc/ufw/user.rules (IPv4) and
# /etc/ufw/user6.rules (IPv6):
#   ### tuple ### <action> <proto> <to_port> <to_ip> <from_port> <from_ip> [<to_app> <from_app>]
#                 <direction>[_<iface>|in_<iface>!out_<iface>] [comment=<hex>]
# where action is [route:]allow|deny|reject|limit[_log|_log-all]. Those files are what
# `ufw allow/delete` edit, so they are exact even while ufw is inactive (`ufw status` then
# prints nothing but "Status: inactive").
_POLICIES = {"ACCEPT": "allow", "DROP": "deny", "REJECT": "reject"}
_DEFAULT_KEYS = {
    "DEFAULT_INPUT_POLICY": "incoming",
    "DEFAULT_OUTPUT_POLICY": "outgoing",
    "DEFAULT_FORWARD_POLICY": "routed",
}


def decode_comment(value: str) -> str:
    """ufw stores comments hex-encoded (``6261636b6861756c`` is ``backhaul``)."""
    try:
        return bytes.fromhex(value).decode("utf-8")
    except ValueError:
        return value


def parse_tuple(line: str, v6: bool) -> dict[str, Any] | None:
    """One ``### tuple ###`` line (prefix already removed) -> a rule dict, None if malformed."""
    comment = None
    fields = line.split()
    if fields and fields[-1].startswith("comment="):
        comment = decode_comment(fields.pop()[len("comment=") :])
    if len(fields) == 7:
        action, proto, to_port, to_ip, from_port, from_ip, ifaces = fields
        to_app = from_app = None
    elif len(fields) == 9:
        action, proto, to_port, to_ip, from_port, from_ip, to_app, from_app, ifaces = fields
        to_app = None if to_app == "-" else to_app.replace("%20", " ")
        from_app = None if from_app == "-" else from_app.replace("%20", " ")
    else:
        return None

    route = action.startswith("route:")
    if route:
        action = action[len("route:") :]
    action, _, log = action.partition("_")

    out_interface = None
    if "!" in ifaces:  # in_<if>!out_<if>
        inside, _, outside = ifaces.partition("!")
        direction, _, interface = inside.partition("_")
        out_interface = outside.partition("_")[2] or None
    else:
        direction, _, interface = ifaces.partition("_")

    return {
        "action": action,
        "route": route,
        "log": log or None,
        "direction": direction,
        "interface": interface or None,
        "out_interface": out_interface,
        "proto": proto,
        "from_ip": from_ip,
        "from_port": from_port,
        "to_ip": to_ip,
        "to_port": to_port,
        "from_app": from_app,
        "to_app": to_app,
        "v6": v6,
        "comment": comment,
    }


class UfwState(FactBase[dict[str, Any] | None]):
    """
    Returns ufw's state: active or not, default policies, logging, IPv6 and all rules.

    ``None`` when ufw is not installed. ``defaults``/``logging``/``ipv6`` are read from
    ``/etc/default/ufw`` and ``/etc/ufw/ufw.conf`` (what ``ufw default``/``ufw logging`` write;
    ``ufw status verbose`` shows them only while active). ``rules`` keep ufw's own spelling
    (``any`` ports, ``0.0.0.0/0``/``::/0`` addresses) and ``number`` is the one
    ``ufw status numbered`` shows (IPv4 rules first, then IPv6). ``out_interface`` is set for
    ``out on X`` rules (then ``interface`` is None) and for route rules ``in on X out on Y``.

    .. code:: python

        {
            "active": True,
            "enabled": True,            # ENABLED=yes: started at boot
            "logging": "low",
            "ipv6": True,
            "defaults": {"incoming": "deny", "outgoing": "allow", "routed": "deny"},
            "rules": [
                {
                    "number": 1, "v6": False,
                    "action": "allow", "route": False, "log": None, "direction": "in",
                    "interface": None, "out_interface": None, "proto": "udp",
                    "from_ip": "198.51.100.11", "from_port": "any",
                    "to_ip": "0.0.0.0/0", "to_port": "51820",
                    "from_app": None, "to_app": None, "comment": "backhaul",
                },
            ],
        }
    """

    def requires_command(self) -> str:
        return "ufw"

    def command(self) -> str:
        return "; ".join(
            [
                # "active" = ufw's chains are loaded, as `ufw status` itself decides; asked of
                # iptables directly: `ufw status` is a Python program (~60 ms of CPU per host)
                "if iptables -w -n -L ufw-user-input >/dev/null 2>&1; then echo 'status=Status: active';"
                " else echo 'status=Status: inactive'; fi",
                "grep -h -E '^(ENABLED|LOGLEVEL|IPV6|DEFAULT_(INPUT|OUTPUT|FORWARD)_POLICY)=' "
                "/etc/ufw/ufw.conf /etc/default/ufw 2>/dev/null",
                "sed -n 's/^### tuple ### /rule4 /p' /etc/ufw/user.rules 2>/dev/null",
                "sed -n 's/^### tuple ### /rule6 /p' /etc/ufw/user6.rules 2>/dev/null",
                "true",
            ]
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        settings: dict[str, str] = {}
        rules4: list[dict[str, Any]] = []
        rules6: list[dict[str, Any]] = []
        for line in output:
            if line.startswith(("rule4 ", "rule6 ")):
                v6 = line.startswith("rule6")
                rule = parse_tuple(line[len("rule4 ") :], v6=v6)
                if rule is not None:
                    (rules6 if v6 else rules4).append(rule)
                continue
            key, sep, value = line.partition("=")
            if sep:
                settings[key.strip()] = value.strip().strip("\"'")

        status = settings.get("status", "").lower()
        rules = []
        for number, rule in enumerate(rules4 + rules6, 1):
            rules.append({"number": number, **rule})
        return {
            "active": status.endswith(": active"),
            "enabled": settings.get("ENABLED", "no").lower() == "yes",
            "logging": settings.get("LOGLEVEL", "off").lower() or "off",
            "ipv6": settings.get("IPV6", "no").lower() == "yes",
            "defaults": {
                name: _POLICIES.get(settings[key].upper(), settings[key].lower())
                for key, name in _DEFAULT_KEYS.items()
                if key in settings
            },
            "rules": rules,
        }
