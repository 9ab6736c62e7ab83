"""A neighbour on the lab's "provider network": a network namespace with a veth on the bridge.

Every VPS provider puts other customers' machines on the same L2 segment as a host. Such a
neighbour can route a host's WireGuard address via the host's public address and try it:

    n = neighbour.up(lab)                         # idempotent; lab.down removes it too
    neighbour.route(lab, "10.50.0.2/32", "198.51.100.11")
    neighbour.knock(lab, [("10.50.0.2", 8080), ("10.50.0.2", None)])   # None = ping
    neighbour.down(lab)
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import sys
from pathlib import Path

from backhaul.lab import guard, system
from backhaul.lab.layout import Lab

ROOT = Path(__file__).resolve().parents[2]
INSIDE = "nb0"


def netns(lab: Lab) -> str:
    return f"bh-{lab.name}-nb"


def veth(lab: Lab) -> str:
    return f"vn-{lab.name}"  # the bridge side; at most 9 characters


def address(lab: Lab) -> ipaddress.IPv4Address:
    """A spare bridge address (tests use .200 as a stranger on the outer machine itself)."""
    return lab.subnet.network_address + 201


def exists(lab: Lab) -> bool:
    return Path("/run/netns", netns(lab)).exists()


def up(lab: Lab) -> str:
    """The neighbour's namespace, made when missing: ``nb0`` with an address of the lab's
    subnet on the lab's bridge, no routes beyond its own link."""
    ns = netns(lab)
    if exists(lab) and system.link_exists(veth(lab)):
        return ns
    down(lab)
    system.run(["ip", "netns", "add", ns])
    system.run(["ip", "link", "add", veth(lab), "type", "veth", "peer", "name", INSIDE, "netns", ns])
    system.run(["ip", "link", "set", veth(lab), "master", lab.bridge, "up"])
    inside = ["ip", "netns", "exec", ns, "ip"]
    system.run([*inside, "addr", "add", f"{address(lab)}/{lab.subnet.prefixlen}", "dev", INSIDE])
    system.run([*inside, "link", "set", INSIDE, "up"])
    system.run([*inside, "link", "set", "lo", "up"])
    return ns


def route(lab: Lab, destination: str, via: str, source: str | None = None) -> None:
    """In the neighbour: ``destination`` (an address or network) via a host's public address;
    ``source`` makes its packets claim that address (a forged one, e.g. inside the tunnel's
    subnet: what a neighbour can write into a packet is up to it)."""
    inside = ["ip", "netns", "exec", netns(lab), "ip"]
    extra = []
    if source:
        system.run([*inside, "addr", "replace", f"{source}/32", "dev", INSIDE])
        extra = ["src", source]
    system.run([*inside, "route", "replace", destination, "via", via, *extra])


def knock(lab: Lab, targets: list[tuple[str, int | None]]) -> dict[str, str]:
    """From the neighbour: every ``(ip, port)`` (TCP) and ``(ip, None)`` (ping) at once.
    Returns ``{"ip:port" | "ip:ping": "open" | "refused" | "silent" | "unreachable"}``."""
    guard.require_up(lab)  # the namespace's veth hangs on the bridge: no bridge, no knock
    proc = system.run(
        ["ip", "netns", "exec", netns(lab), sys.executable, "-m", "backhaul.probe", json.dumps(targets)],
        cwd=ROOT,
    )
    return json.loads(proc.stdout)


def scan(lab: Lab, ip: str) -> list[int]:
    """From the neighbour: every TCP port of ``ip`` that accepts a connection, all 65535 tried
    with nmap (a connect scan, as any stranger can run it), or, where nmap is not installed,
    with backhaul/lab/portscan.py, which finds the same."""
    guard.require_up(lab)
    where = ["ip", "netns", "exec", netns(lab)]
    if shutil.which("nmap"):
        # -Pn: a host that drops pings is scanned anyway; 5000 probes/s, one retry: a dropped
        # port costs its timeout once, so 65535 filtered ports take seconds, not an hour. The
        # round trip on the bridge is under a millisecond, yet nmap's own estimate climbs while
        # every probe goes unanswered: capped at 100 ms and with 1000 probes in flight, a scan
        # of a host that drops everything took 13.5 s and 12 s of CPU (130 s and 120 s of CPU
        # uncapped, measured on a lab backend). An open port answers in a millisecond: the cap
        # still finds it (the hub's 22, 80 and 443, every time).
        cmd = [
            *("nmap", "-Pn", "-n", "-sT", "-p-", "--open", "--min-rate", "5000", "--max-retries", "1"),
            *("--max-rtt-timeout", "100ms", "--min-parallelism", "1000"),
        ]
        out = system.run([*where, *cmd, "-oG", "-", ip]).stdout
        return sorted(int(m) for m in re.findall(r"(\d+)/open/tcp", out))
    proc = system.run([*where, sys.executable, "-m", "backhaul.lab.portscan", ip], cwd=ROOT)
    return json.loads(proc.stdout)


def down(lab: Lab) -> None:
    """Remove the namespace and its veth (deleting the namespace deletes the pair)."""
    if exists(lab):
        system.run(["ip", "netns", "del", netns(lab)], check=False)
    if system.link_exists(veth(lab)):
        system.run(["ip", "link", "del", veth(lab)], check=False)
