"""Host facts that are not about WireGuard or ufw."""

from __future__ import annotations

import ipaddress
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


class SshSession(FactBase[dict[str, Any] | None]):
    """
    Returns the SSH connection this fact runs over, as the host sees it (``$SSH_CONNECTION``):
    the addresses and the server-side port. ``None`` outside an SSH session.

    The firewall must keep exactly this port open, and for this address family (``version``):
    a session over IPv6 is cut by ``ufw enable`` while /etc/default/ufw says ``IPV6=no``.

    .. code:: python

        {"client": "198.51.100.1", "server": "198.51.100.10", "port": 22, "version": 4}
    """

    def command(self) -> str:
        # Through sudo (a non-root SSH user) the variable is gone (sudo resets the environment):
        # it is read from the nearest ancestor process that has it (sudo itself, or the shell).
        return (
            'c="${SSH_CONNECTION:-}"; p=$PPID; '
            'while [ -z "$c" ] && [ "${p:-1}" -gt 1 ] && [ -r /proc/$p/environ ]; do '
            "c=$(tr '\\0' '\\n' < /proc/$p/environ | sed -n 's/^SSH_CONNECTION=//p'); "
            "p=$(sed 's/.*) //' /proc/$p/stat | cut -d' ' -f2); done; "
            # without the client's port: new with every connection, and an unchanged host
            # must read the same each time (backhaul/unchanged.py)
            'set -- $c; [ $# -eq 4 ] && echo "$1 - $3 $4"; true'
        )

    def process(self, output: list[str]) -> dict[str, Any] | None:
        fields = " ".join(output).split()
        if len(fields) != 4 or not fields[3].isdigit():
            return None
        server = fields[2].partition("%")[0]
        try:
            version = ipaddress.ip_address(server).version
        except ValueError:
            return None
        # an IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d: that is IPv4 traffic
        mapped = ipaddress.ip_address(server).ipv4_mapped if version == 6 else None
        return {
            "client": fields[0],
            "server": str(mapped or server),
            "port": int(fields[3]),
            "version": 4 if mapped else version,
        }


class KernelModule(FactBase[str]):
    """
    Whether the kernel has a module: ``"loaded"``, ``"available"`` (loadable) or ``"missing"``.

    + module: the module, e.g. ``wireguard``
    """

    def command(self, module: str) -> str:
        q = shlex.quote(module)
        return (
            f"if [ -d /sys/module/{q} ]; then echo loaded; "
            f"elif modprobe -n {q} >/dev/null 2>&1; then echo available; else echo missing; fi"
        )

    def process(self, output: list[str]) -> str:
        return (output or ["missing"])[0].strip()


class SudoAccess(FactBase[dict[str, Any]]):
    """
    Whether the SSH user may run commands as root without being asked for a password.

    Read with ``_sudo=False`` (as the user itself): it is what decides whether the rest can run
    under sudo at all. ``sudo`` is ``"root"`` (the user is root), ``"passwordless"``,
    ``"password"`` (sudo asks for one, or the user may not use sudo at all: sudo cannot tell
    which without the password) or ``"missing"`` (no sudo command).

    .. code:: python

        {"user": "deploy", "sudo": "passwordless"}
    """

    def command(self) -> str:
        return (
            'echo "user=$(id -un)"; '
            'if [ "$(id -u)" = 0 ]; then echo sudo=root; '
            "elif ! command -v sudo >/dev/null 2>&1; then echo sudo=missing; "
            # -n: never prompt (a prompt would hang, or make pyinfra ask on the terminal)
            "elif sudo -n true >/dev/null 2>&1; then echo sudo=passwordless; "
            "else echo sudo=password; fi"
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        raw = dict(line.partition("=")[::2] for line in output if "=" in line)
        sudo = raw.get("sudo", "").strip()
        return {
            "user": raw.get("user", "").strip() or None,
            "sudo": sudo if sudo in ("root", "passwordless", "password", "missing") else "password",
        }


def sudo_problem(host_name: str, access: dict[str, Any]) -> str | None:
    """What is wrong with a host's root access for backhaul, as a message to act on; None
    when it can run everything (as root, or through passwordless sudo)."""
    user, sudo = access.get("user") or "the SSH user", access.get("sudo")
    if sudo in ("root", "passwordless"):
        return None
    fix = (
        f"let it use sudo without a password (a line `{user} ALL=(ALL) NOPASSWD:ALL` in "
        f"/etc/sudoers.d/{user}, made with visudo), or connect as root (ssh.user: root)"
    )
    if sudo == "missing":
        return f"{host_name}: ssh.user {user!r} is not root and the host has no sudo: {fix}"
    return (
        f"{host_name}: ssh.user {user!r} is not root, and sudo asks it for a password "
        f"(or it may not use sudo): backhaul runs unattended, so {fix}"
    )


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
        return (
            f'for k in {" ".join(keys)}; do echo "value=$k=$(sysctl -n $k 2>/dev/null)"; '
            f'done; [ -f {q} ] && echo "file=$(sha256sum < {q} | cut -c1-64)"; true'
        )

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
