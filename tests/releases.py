"""Debian 12 and 13 get the same deploy: the proof that lets the flow modules run on 13 only.

backhaul's code never asks which release a host runs (it reads facts: a package's presence, a
program's version), so what a release can change is what the hosts' own programs do with the
same commands (nginx, ufw, wg-quick, systemd, docker). The modules that prove those run on both
releases (tests/lanes.py); the modules that cut backhaul's flows at chosen points (day-2 flows,
faults, tunnel safety) test the controller's sequencing of those same commands and run on 13
only, as long as this holds: the first deploy from bare hosts of the same network runs the same
operations, in the same order, with the same outcome, on every host of both releases.

Each release's session lab writes its deploy's trace (`write`, from test_network); the lanes
compare the two when both ran (`compare`), and a difference fails the run.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from pathlib import Path

TRACE_DIR_ENV = "BACKHAUL_TRACE_DIR"  # set by tests/lanes.py; unset, no trace is written

# pyinfra's output: "--> Starting operation: wireguard | Install WireGuard" then one line per
# host: "    [backend-1] Success" / "No changes" / "Skipped" / "Error ..."
_OP = re.compile(r"^--> Starting operation: (.*?)\s*$")
_HOST = re.compile(r"^\s+\[([^\]]+)\]\s+(Success|No changes|Skipped|Error)\b")
_ADDRESS = re.compile(r"[0-9a-fA-F:.]*[:.][0-9a-fA-F:.]+(?:/\d+)?")


def _neutral(text: str) -> str:
    """An operation's name with the lab's own addresses (each lab has its subnet) neutral."""

    def one(m: re.Match) -> str:
        try:
            ipaddress.ip_interface(m.group(0))
        except ValueError:
            return m.group(0)
        return "<addr>"

    return _ADDRESS.sub(one, text)


def trace(output: str) -> dict[str, list[str]]:
    """Per host, the operations of a run in order, each with its outcome."""
    per_host: dict[str, list[str]] = {}
    op = None
    for line in output.splitlines():
        if m := _OP.match(line):
            op = _neutral(m.group(1))
        elif op and (m := _HOST.match(line)):
            per_host.setdefault(m.group(1), []).append(f"{op}: {m.group(2)}")
    return per_host


def write(suite: str, output: str) -> None:
    """Keep this release's first deploy's trace for the lanes' comparison (when they ask)."""
    where = os.environ.get(TRACE_DIR_ENV)
    if where:
        Path(where, f"trace-{suite}.json").write_text(json.dumps(trace(output), indent=1))


def compare(a: dict[str, list[str]], b: dict[str, list[str]]) -> list[str]:
    """What differs between two traces (hosts, then each host's first differing operation)."""
    problems = []
    if sorted(a) != sorted(b):
        problems.append(f"hosts differ: {sorted(a)} vs {sorted(b)}")
    for host in sorted(set(a) & set(b)):
        ops_a, ops_b = a[host], b[host]
        for i, (x, y) in enumerate(zip(ops_a, ops_b, strict=False)):
            if x != y:
                problems.append(f"{host}, operation {i + 1}: {x!r} vs {y!r}")
                break
        else:
            if len(ops_a) != len(ops_b):
                problems.append(f"{host}: {len(ops_a)} operations vs {len(ops_b)}")
    return problems


def check(trace_dir: Path, suites: tuple[str, str] = ("trixie", "bookworm")) -> tuple[bool, str]:
    """(held, one line to print) for the two releases' traces in ``trace_dir``."""
    paths = [trace_dir / f"trace-{s}.json" for s in suites]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        return False, f"Debian 12 and 13 not compared: no {', '.join(missing)} (test_network did not deploy)"
    a, b = (json.loads(p.read_text()) for p in paths)
    problems = compare(a, b)
    if problems:
        return False, "Debian 12 and 13 deployed differently: " + "; ".join(problems)
    n = sum(len(ops) for ops in a.values())
    return (
        True,
        f"Debian 12 and 13: the same {n} operations on {len(a)} hosts, in order, with the same outcome",
    )
