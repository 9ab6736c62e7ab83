"""One round trip that tells `inv verify` everything about a host's health.

Every fact is an SSH round trip; verify needs several per host, so this fact runs the commands
of the existing facts (ListeningSockets, WireguardState, WireguardPeers, IsolationGuard) plus pings and TCP
probes in one command, split by marker lines, and hands each section to that fact's own
``process()``: one parser per command, wherever it runs.
"""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra.api import FactBase

from backhaul.facts.isolation import IsolationGuard
from backhaul.facts.system import ListeningSockets
from backhaul.facts.wireguard import WireguardPeers, WireguardState

MARK = "@@backhaul-section "


def _section(name: str, command: str) -> str:
    return f"echo {shlex.quote(MARK + name)}; {{ {command} ; }} 2>/dev/null"


class HostHealth(FactBase[dict[str, Any]]):
    """
    Sockets, WireGuard state and live peers, and reachability of other hosts over the tunnel.

    + interface: the WireGuard interface
    + ping: addresses to ping (two echo requests, one second each at most)
    + tcp: ``"ip:port"`` targets to open a TCP connection to (two seconds at most)

    .. code:: python

        {"sockets": [...], "wireguard": {...}, "peers": {...}, "listen_port": 51820,
         "ping": {"10.50.0.1": True}, "tcp": {"10.50.0.2:8080": False},
         "isolation": {...}}   # IsolationGuard
    """

    def command(self, interface: str = "wg0", ping: tuple = (), tcp: tuple = ()) -> str:
        q_if = shlex.quote(interface)
        pings = " ".join(shlex.quote(p) for p in ping)
        tcps = " ".join(shlex.quote(t) for t in tcp)
        # The probes wait on the network (two pings 0.2 s apart), the reads on the CPU: the
        # probes start first, in the background, and their sections are printed at the end.
        probes = {
            # all targets at once (a hub with 20 backends must not ping them one by one)
            "ping": f"for t in {pings}; do (if ping -c2 -i0.2 -W1 -q $t >/dev/null; "
            'then echo "$t yes"; else echo "$t no"; fi) & done; wait',
            # bash's /dev/tcp: no extra package needed on the host
            "tcp": f"for t in {tcps}; do ("
            'if timeout 2 bash -c "exec 3<>/dev/tcp/${t%:*}/${t##*:}"; '
            'then echo "$t yes"; else echo "$t no"; fi) & done; wait',
        }
        reads = [
            _section("sockets", ListeningSockets().command()),
            _section("wireguard", WireguardState().command(interface=interface)),
            _section("peers", WireguardPeers().command(interface=interface)),
            _section("listen_port", f"wg show {q_if} listen-port"),
            _section("now", "date +%s"),  # handshake times are in the host's clock
            _section("isolation", IsolationGuard().command()),
        ]
        return "\n".join(  # one line each: "&" ends a command as ";" does
            [
                "d=$(mktemp -d) || exit 1",
                *(f'{{ {_section(name, cmd)} ; }} >"$d/{name}" &' for name, cmd in probes.items()),
                *reads,
                "wait",
                *(f'cat "$d/{name}"' for name in probes),
                'rm -rf "$d"',
            ]
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        sections: dict[str, list[str]] = {}
        current = None
        for line in output:
            if line.startswith(MARK):
                current = line[len(MARK) :].strip()
                sections[current] = []
            elif current:
                sections[current].append(line)
        port = (sections.get("listen_port") or [""])[0].strip()
        now = (sections.get("now") or [""])[0].strip()
        return {
            "sockets": ListeningSockets().process(sections.get("sockets", [])),
            "wireguard": WireguardState().process(sections.get("wireguard", [])) or {},
            "peers": WireguardPeers().process(sections.get("peers", [])),
            "listen_port": int(port) if port.isdigit() else None,
            "now": int(now) if now.isdigit() else None,
            "ping": _yes_no(sections.get("ping", [])),
            "tcp": _yes_no(sections.get("tcp", [])),
            "isolation": IsolationGuard().process(sections.get("isolation", [])),
        }


def _yes_no(lines: list[str]) -> dict[str, bool]:
    out = {}
    for line in lines:
        target, _, answer = line.rpartition(" ")
        if target:
            out[target] = answer == "yes"
    return out
