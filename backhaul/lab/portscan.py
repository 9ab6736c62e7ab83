"""A TCP connect scan of every port of one address (what nmap -p- -sT finds open), for the lab.

    python -m backhaul.lab.portscan 198.51.100.11        # prints the open ports as JSON

Run inside the lab's neighbour namespace (backhaul/lab/neighbour.py: ``scan``), a host that is
on no allow list. Non-blocking connects in large batches: a dropped port costs the batch's
timeout once, so 65535 ports take seconds, not hours. A port counts as open only when the
connection is accepted (a RST means the host answered but nothing listens: closed).
"""

from __future__ import annotations

import errno
import json
import resource
import select
import socket
import sys
import time


def scan(ip: str, ports: range = range(1, 65536), batch: int = 8000, timeout: float = 1.5) -> list[int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < batch + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, batch + 64), hard))
        batch = min(batch, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 64)
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    found: list[int] = []
    todo = list(ports)
    for start in range(0, len(todo), batch):
        ep = select.epoll()
        socks: dict[int, tuple[socket.socket, int]] = {}
        for port in todo[start : start + batch]:
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex((ip, port))
            if err not in (0, errno.EINPROGRESS):
                s.close()
                continue
            socks[s.fileno()] = (s, port)
            ep.register(s.fileno(), select.EPOLLOUT | select.EPOLLERR)
        deadline = time.monotonic() + timeout
        while socks and time.monotonic() < deadline:
            for fd, _ev in ep.poll(max(0.0, deadline - time.monotonic())):
                s, port = socks.pop(fd)
                ep.unregister(fd)
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    found.append(port)
                s.close()
        for s, _port in socks.values():  # silent: dropped by a firewall
            s.close()
        ep.close()
    return sorted(found)


if __name__ == "__main__":
    print(json.dumps(scan(sys.argv[1])))
