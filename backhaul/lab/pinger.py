"""Continuous pings over a tunnel during a flow, counting exactly which replies never came.

Used by the day-2 lab tests and the benchmarks: `inv add-backend` must not lose a single packet
on the other tunnels, and a rotated tunnel's gap is measured in lost 50 ms pings.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

INTERVAL = 0.05  # seconds between echo requests (root may go below 0.2)


@dataclass
class PingResult:
    sent: int
    lost: int

    @property
    def gap_seconds(self) -> float:
        return self.lost * INTERVAL


class Pinger:
    """``ping -O -i 0.05`` from ``host`` to ``target`` over SSH until stop()."""

    def __init__(self, ssh_config: Path, host: str, target: str):
        self.host, self.target = host, target
        self.ssh = ["ssh", "-F", str(ssh_config), host]
        self.pidfile = f"/tmp/backhaul-pinger-{target}.pid"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Pinger:
        cmd = f"ping -n -O -i {INTERVAL} -W 1 {self.target} & echo $! > {self.pidfile}; wait"
        self.proc = subprocess.Popen(
            [*self.ssh, cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        time.sleep(0.5)  # let it start and settle
        return self

    def stop(self) -> PingResult:
        time.sleep(0.3)  # the last requests get their replies
        subprocess.run(
            [*self.ssh, f"kill -INT $(cat {self.pidfile}); rm -f {self.pidfile}"], capture_output=True
        )
        out, _ = self.proc.communicate(timeout=15)
        return parse(out)


def parse(output: str) -> PingResult:
    """Lost = requests sent before the last one that never got a reply (late ones count as got)."""
    m = re.search(r"(\d+) packets transmitted", output)
    sent = int(m.group(1)) if m else 0
    replied = {int(n) for n in re.findall(r"bytes from .*?icmp_seq=(\d+)", output)}
    # the final request may still be in flight when ping is stopped: it is not judged
    lost = sum(1 for seq in range(1, sent) if seq not in replied)
    return PingResult(sent=sent, lost=lost)
