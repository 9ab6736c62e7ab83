"""No packet to a lab address unless that lab's bridge is up on this machine and carries it.

A lab that is down has no bridge: the kernel then routes its old addresses through this
machine's default route, out to addresses that are not ours. Every lab helper that connects to
a lab host (status, SSH, the tests' and benchmarks' helpers) asks :func:`require` first.

The check is the kernel's own answer (``ip route get``: which device would carry the packet),
asked once per address and bridge instance (a bridge made again has a new ifindex) and cached;
whether the bridge exists and is up is read from sysfs on every call, so the guard costs
nothing measurable on a hot path.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from functools import lru_cache
from pathlib import Path

from backhaul.errors import LabError
from backhaul.lab.layout import DEFAULT_LAB, Lab

IFF_UP = 0x1
BRIDGE_PREFIX = "bh-"  # every lab's bridge is bh-<name> (layout.Lab.bridge)


def _ifindex(name: str) -> int | None:
    try:
        return int(Path("/sys/class/net", name, "ifindex").read_text())
    except (OSError, ValueError):
        return None


def _bridge_up(name: str) -> bool:
    try:
        return bool(int(Path("/sys/class/net", name, "flags").read_text(), 16) & IFF_UP)
    except (OSError, ValueError):
        return False


@lru_cache(maxsize=1024)
def _route_device(address: str, ifindex: int) -> str:
    """The device the kernel sends ``address``'s packets through ("lo" for its own addresses,
    then ``_local_device`` says which link holds it); "" when it has no route."""
    proc = subprocess.run(["ip", "-j", "route", "get", address], capture_output=True, text=True)
    if proc.returncode != 0:
        return ""
    route = json.loads(proc.stdout or "[]")
    if not route:
        return ""
    if route[0].get("type") == "local" or route[0].get("dev") == "lo":
        return _local_device(address)
    return route[0].get("dev", "")


def _local_device(address: str) -> str:
    proc = subprocess.run(["ip", "-j", "addr", "show", "to", address], capture_output=True, text=True)
    links = json.loads(proc.stdout or "[]") if proc.returncode == 0 else []
    return links[0]["ifname"] if links else ""


def _down(lab_name: str, bridge: str, address: str) -> LabError:
    return LabError(
        f"lab '{lab_name}' is down (no bridge {bridge} up on this machine): nothing was sent to "
        f"{address}, which would leave this machine by its default route; bring the lab up with "
        f"`inv lab.up --name {lab_name}`"
    )


def require_up(lab: Lab) -> None:
    """Raise unless the lab's bridge is up and carries the lab's own address (its gateway):
    before work that reaches the lab's hosts by other means (pyinfra, a namespace on the bridge)."""
    require(lab, str(lab.gateway))


def require(lab: Lab, address: str) -> None:
    """Raise unless a packet to ``address`` would stay on ``lab``'s bridge."""
    ip = ipaddress.ip_address(address)
    if ip not in lab.subnet and ip not in lab.subnet6:
        raise LabError(
            f"{address} is not an address of lab '{lab.name}' ({lab.subnet}, {lab.subnet6}): "
            "the lab's tools connect to its own hosts only"
        )
    _require_on(lab.name, lab.bridge, address)


def _require_on(lab_name: str, bridge: str, address: str) -> None:
    index = _ifindex(bridge)
    if index is None or not _bridge_up(bridge):
        raise _down(lab_name, bridge, address)
    dev = _route_device(address, index)
    if dev != bridge:
        raise LabError(
            f"{address} is not reached through lab '{lab_name}''s bridge {bridge} on this machine "
            f"(the kernel would send it through {dev or 'no device'}): nothing was sent"
        )


def ssh_config_address(config: Path, host: str) -> str:
    """The HostName the lab's ssh_config (files.write_ssh_config) gives ``host``."""
    current = None
    for line in Path(config).read_text().splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "Host":
            current = words[1]
        elif len(words) == 2 and words[0] == "HostName" and current == host:
            return words[1]
    raise LabError(f"{config} names no host {host!r}")


def require_ssh(config: Path, host: str) -> None:
    """Before ``ssh -F config host``: the host's address must be on a lab bridge that is up.

    The config sits in the lab's files dir (.lab or .lab-<name>), which names the lab."""
    address = ssh_config_address(config, host)
    folder = Path(config).resolve().parent.name
    name = folder.removeprefix(".lab-") if folder.startswith(".lab-") else DEFAULT_LAB
    _require_on(name, BRIDGE_PREFIX + name, address)
