"""Host facts that are not about WireGuard or ufw."""

from __future__ import annotations

import re
import shlex
from typing import Any

from pyinfra.api import FactBase

_PROCESS = re.compile(r'users:\(\("([^"]+)"')


def split_address(local: str) -> tuple[str, str | None, int | None]:
    """``0.0.0.0:22`` / ``[::]:80`` / ``*:8080`` / ``127.0.0.53%lo:53`` -> (address, scope, port).

    ``*`` and ``[::]`` stay as ss prints them (``*`` = every address of both families).
    """
    address, _, port = local.rpartition(":")
    address, _, scope = address.partition("%")  # ss prints [fe80::1]%eth0:546
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    return address, scope or None, int(port) if port.isdigit() else None


class ListeningSockets(FactBase[list[dict[str, Any]]]):
    """
    Returns the listening TCP sockets and bound UDP sockets (``ss -H -tulnp``).

    ``address`` is ``0.0.0.0``, ``::`` or ``*`` for "every address"; ``interface`` is set for
    sockets bound to a device (``127.0.0.53%lo``); ``process`` is the first process name ss
    shows (None for kernel sockets such as WireGuard's).

    .. code:: python

        [
            {"proto": "tcp", "address": "0.0.0.0", "port": 22, "interface": None,
             "process": "sshd"},
            {"proto": "udp", "address": "0.0.0.0", "port": 51820, "interface": None,
             "process": None},
        ]
    """

    default = list

    def requires_command(self) -> str:
        return "ss"

    def command(self) -> str:
        return "ss -H -tulnp"

    def process(self, output: list[str]) -> list[dict[str, Any]]:
        sockets = []
        for line in output:
            fields = line.split()
            if len(fields) < 5 or fields[0] not in ("tcp", "udp"):
                continue
            address, scope, port = split_address(fields[4])
            match = _PROCESS.search(line)
            sockets.append(
                {
                    "proto": fields[0],
                    "address": address,
                    "port": port,
                    "interface": scope,
                    "process": match.group(1) if match else None,
                }
            )
        return sockets


class SshSessionPort(FactBase[int | None]):
    """
    Returns the server-side port of the SSH connection this fact runs over (``$SSH_CONNECTION``).

    What the host sees can differ from what the controller dialled (a provider's port forward,
    a NAT): the firewall must keep exactly this port open, or the next connection fails.
    """

    def command(self) -> str:
        return 'echo "${SSH_CONNECTION:-}"'

    def process(self, output: list[str]) -> int | None:
        fields = " ".join(output).split()
        return int(fields[3]) if len(fields) == 4 and fields[3].isdigit() else None


class KernelModule(FactBase[str]):
    """
    Whether the kernel has a module: ``"loaded"``, ``"available"`` (loadable) or ``"missing"``.

    + module: the module, e.g. ``wireguard``
    """

    def command(self, module: str) -> str:
        q = shlex.quote(module)
        return (f"if [ -d /sys/module/{q} ]; then echo loaded; "
                f"elif modprobe -n {q} >/dev/null 2>&1; then echo available; else echo missing; fi")

    def process(self, output: list[str]) -> str:
        return (output or ["missing"])[0].strip()


_SYSCTL_KEY = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)+")


class KernelSettings(FactBase[dict[str, Any]]):
    """
    Returns kernel settings (sysctl) as they are now, and the file that keeps them at boot.

    + keys: sysctl keys, e.g. ``net.ipv4.tcp_retries2``
    + file: the ``/etc/sysctl.d`` file backhaul writes them to

    .. code:: python

        {"values": {"net.ipv4.tcp_retries2": "15"}, "file": "9f86d0..."}  # file: None if absent
    """

    def command(self, keys: list[str], file: str) -> str:
        for k in keys:
            if not _SYSCTL_KEY.fullmatch(k):
                raise ValueError(f"KernelSettings: {k!r} is not a sysctl key")
        q = shlex.quote(file)
        return (f"for k in {' '.join(keys)}; do echo \"value=$k=$(sysctl -n $k 2>/dev/null)\"; "
                f"done; [ -f {q} ] && echo \"file=$(sha256sum < {q} | cut -c1-64)\"; true")

    def process(self, output: list[str]) -> dict[str, Any]:
        values: dict[str, str] = {}
        digest = None
        for line in output:
            kind, _, rest = line.partition("=")
            if kind == "value":
                key, _, value = rest.partition("=")
                values[key] = value.strip()
            elif kind == "file":
                digest = rest.strip() or None
        return {"values": values, "file": digest}

    def default(self) -> dict[str, Any]:
        return {"values": {}, "file": None}
