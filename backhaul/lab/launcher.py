"""Keeps one lab host running: ``python -m backhaul.lab.launcher SPEC.json``.

Joins the host's cgroups, then runs systemd-nspawn in a fresh time namespace (so the host's
uptime starts at zero: pyinfra's reboot detection reads /proc/uptime) and starts it again when
the host reboots itself (nspawn exits 133). SIGTERM is passed to nspawn, which powers the host
off cleanly; then the launcher exits.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from backhaul.lab import cgroups

CLONE_NEWTIME = 0x00000080
REBOOT_EXIT = 133


def _new_time_namespace_for_children() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWTIME) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWTIME): {os.strerror(err)}")
    up = int(float(Path("/proc/uptime").read_text().split()[0]))
    # Offsets may only be written before a process enters the namespace (our next child).
    Path("/proc/self/timens_offsets").write_text(f"boottime {-up} 0\nmonotonic {-up} 0\n")


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    cgroups.join([Path(d) for d in spec["cgroups"]])
    child: subprocess.Popen | None = None
    stopping = False

    def on_term(signum, frame):
        nonlocal stopping
        stopping = True
        if child and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    while True:
        _new_time_namespace_for_children()
        child = subprocess.Popen(spec["command"], stdin=subprocess.DEVNULL)
        rc = child.wait()
        if stopping or rc != REBOOT_EXIT:
            return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
