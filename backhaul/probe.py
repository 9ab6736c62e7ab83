"""Knock on a host's WireGuard address from outside the tunnel: does anything answer?

A neighbour on the provider's network can route a host's WireGuard address via the host's
public address (same L2 segment) and connect. ``inv verify`` plays that neighbour from the
controller when it can: as root, with the host's public address on a link of this machine, it
routes each WireGuard address via the host's public address in a routing table of its own that
only its marked probe sockets use (``routed``), so no other traffic of this machine changes
way. The lab's neighbour (backhaul/lab/neighbour.py) runs ``python -m backhaul.probe`` in a
network namespace with plain routes instead.

An answer is a TCP connection accepted or refused (a RST: the packet reached the host's
stack) or an ICMP echo reply; only silence counts as closed.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

OPEN, REFUSED, SILENT, UNREACHABLE = "open", "refused", "silent", "unreachable"
# How long silence must last to count as closed. An answer through a hole would come from the
# same kernel over the same segment as the host's answer on its public SSH port, so the wait is
# that answer's time, many times over, within these bounds (a loaded host answers slower).
MIN_SILENCE, MAX_SILENCE, SILENCE_FACTOR = 0.25, 1.5, 8
SO_MARK = getattr(socket, "SO_MARK", 36)


class ProbeUnavailable(Exception):
    """This machine cannot play the neighbour (the message says why)."""


def tcp(ip: str, port: int, timeout: float = 1.5, mark: int | None = None) -> str:
    """OPEN, REFUSED (the host answered with a RST), SILENT (dropped) or UNREACHABLE (no route
    here: nothing was tried)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        if mark is not None:
            s.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        s.settimeout(timeout)
        try:
            s.connect((ip, port))
            return OPEN
        except ConnectionRefusedError:
            return REFUSED
        except TimeoutError:
            return SILENT
        except OSError as e:
            if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EINVAL):
                return UNREACHABLE
            return SILENT


def silence_window(control_times: list[float]) -> float:
    """The silence that counts as closed, from the times the hosts took to answer a connect
    on their public SSH port (none answered: the longest wait)."""
    if not control_times:
        return MAX_SILENCE
    return min(MAX_SILENCE, max(MIN_SILENCE, SILENCE_FACTOR * max(control_times)))


def answer_time(ip: str, port: int, timeout: float = MAX_SILENCE) -> float | None:
    """Seconds a plain connect to ``ip:port`` took to be answered (accepted or refused)."""
    t0 = time.monotonic()
    if tcp(ip, port, timeout) in (OPEN, REFUSED):
        return time.monotonic() - t0
    return None


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping(ip: str, timeout: float = 1.5, mark: int | None = None, tries: int = 2) -> str:
    """OPEN when an ICMP echo reply comes back from ``ip``, else SILENT (or UNREACHABLE)."""
    ident = (os.getpid() ^ int(ipaddress.IPv4Address(ip))) & 0xFFFF
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        if mark is not None:
            s.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        for seq in range(1, tries + 1):
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            payload = b"backhaul-probe"
            packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload
            try:
                s.sendto(packet, (ip, 0))
            except OSError as e:
                if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EINVAL):
                    return UNREACHABLE
                return SILENT
            deadline = time.monotonic() + timeout / tries
            while (left := deadline - time.monotonic()) > 0:
                if not select.select([s], [], [], left)[0]:
                    break
                data, (source, _) = s.recvfrom(2048)
                icmp = data[(data[0] & 0x0F) * 4 :]
                if source == ip and icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident:
                    return OPEN
    return SILENT


def knock(
    targets: list[tuple[str, int | None]], mark: int | None = None, timeout: float = 1.5
) -> dict[str, str]:
    """Every target at once: ``(ip, port)`` for TCP, ``(ip, None)`` for ping.
    Returns ``{"ip:port" | "ip:ping": answer}``."""

    def one(t: tuple[str, int | None]) -> str:
        ip, port = t
        return ping(ip, timeout, mark) if port is None else tcp(ip, port, timeout, mark)

    with ThreadPoolExecutor(max_workers=max(1, min(64, len(targets)))) as pool:
        answers = list(pool.map(one, targets))
    return {
        f"{ip}:{'ping' if port is None else port}": a for (ip, port), a in zip(targets, answers, strict=True)
    }


# --- routing the WireGuard addresses via public addresses, for marked sockets only -----------
def _ip_batch(lines: list[str], force: bool = False) -> subprocess.CompletedProcess:
    """One `ip` process for every change (each `ip` start costs ~10-20 ms)."""
    return subprocess.run(
        ["ip", "-4", *(["-force"] if force else []), "-batch", "-"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
    )


@contextlib.contextmanager
def routed(routes: dict[str, str], slot: int = 0) -> Iterator[int]:
    """Route each address (key) via a gateway on a local link (value), for sockets marked with
    the yielded mark only. Raises ProbeUnavailable when this machine cannot (not root, or a
    gateway is not on a link of this machine). Removes its rule and table on the way out.
    ``slot`` (0-3) tells apart the tables of one process."""
    if os.geteuid() != 0:
        raise ProbeUnavailable("needs root on this machine (a routing table of its own)")
    mark = table = 0x6268_0000 + (os.getpid() % 0x3FFF) * 4 + slot
    lines = [f"route add {dest}/32 via {via} table {table}" for dest, via in routes.items()]
    lines.append(f"rule add fwmark {mark} lookup {table} priority 1000")
    try:
        p = _ip_batch(lines)
        if p.returncode != 0:
            why = " ".join(p.stderr.split()) or "ip failed"
            raise ProbeUnavailable(f"a public address is not on a link of this machine ({why})")
        yield mark
    finally:
        _ip_batch([f"rule del fwmark {mark} lookup {table}", f"route flush table {table}"], force=True)


def main(argv: list[str]) -> int:
    """``python -m backhaul.probe '[["10.50.0.2", 8080], ["10.50.0.2", null]]'`` -> JSON."""
    targets = [(str(ip), None if port is None else int(port)) for ip, port in json.loads(argv[0])]
    print(json.dumps(knock(targets)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
