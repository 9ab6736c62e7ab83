"""Continuous pings over a tunnel during a flow, counting exactly which replies never came.

Used by the day-2 lab tests and the benchmarks: `inv add-backend` must not lose a single packet
on the other tunnels, and a rotated tunnel's gap is measured in lost 50 ms pings.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from backhaul.lab import guard

INTERVAL = 0.05  # seconds between echo requests (root may go below 0.2)
WAIT = 1  # seconds a reply may take (ping -W)
# The requests of the last WAIT seconds before ping is stopped may still get their reply:
# they are not judged (stop() first waits longer than that after the flow).
IN_FLIGHT = round(WAIT / INTERVAL)


@dataclass
class PingResult:
    sent: int
    lost: int
    lost_seqs: list[int] = field(default_factory=list)  # which requests (icmp_seq) never got one

    @property
    def gap_seconds(self) -> float:
        return self.lost * INTERVAL


class Pinger:
    """``ping -O -i 0.05`` from ``host`` to ``target`` over SSH until stop()."""

    def __init__(self, ssh_config: Path, host: str, target: str):
        self.config, self.host, self.target = ssh_config, host, target
        self.ssh = ["ssh", "-F", str(ssh_config), host]
        self.pidfile = f"/tmp/backhaul-pinger-{target}.pid"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Pinger:
        guard.require_ssh(self.config, self.host)
        cmd = f"ping -n -O -i {INTERVAL} -W {WAIT} {self.target} & echo $! > {self.pidfile}; wait"
        self.proc = subprocess.Popen(
            [*self.ssh, cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        time.sleep(0.5)  # let it start and settle
        return self

    def stop(self) -> PingResult:
        time.sleep(WAIT + 0.3)  # every request made during the flow gets its reply time
        guard.require_ssh(self.config, self.host)
        subprocess.run(
            [*self.ssh, f"kill -INT $(cat {self.pidfile}); rm -f {self.pidfile}"], capture_output=True
        )
        out, _ = self.proc.communicate(timeout=15)
        return parse(out)


def parse(output: str) -> PingResult:
    """Lost = requests that never got a reply (late ones count as got), except those of the last
    ``WAIT`` seconds, which may still be in flight when ping is stopped."""
    m = re.search(r"(\d+) packets transmitted", output)
    sent = int(m.group(1)) if m else 0
    replied = {int(n) for n in re.findall(r"bytes from .*?icmp_seq=(\d+)", output)}
    lost = [seq for seq in range(1, sent - IN_FLIGHT + 1) if seq not in replied]
    return PingResult(sent=sent, lost=len(lost), lost_seqs=lost)
