"""One SSH connection to the hub for every jump of a run (``ssh.via: hub``).

pyinfra's SSH connector follows an ssh_config ProxyJump by opening a new SSH connection to the
jump host for each target. With every via-hub backend jumping at once, the hub's sshd sees one
unauthenticated connection per backend in the same instant, and past its ``MaxStartups``
(OpenSSH's default begins dropping at 10) it resets some: at 1 hub + 38 backends, 9 backends
failed with "Error reading SSH protocol banner". Each of those connections is also a full key
exchange and login, CPU on the controller and on the hub.

Here a process keeps one connection to the hub (opened by the first backend that needs it,
the others wait for it) and each backend's SSH runs in a ``direct-tcpip`` channel of it: the
hub's sshd sees two connections per run (this one and pyinfra's own to the hub) whatever the
fleet's size, and nothing of its configuration changes for the rest of the world.

pyinfra is handed the channel as paramiko's ``sock`` (host data ``ssh_paramiko_connect_kwargs``),
a :class:`Jump` that opens it when paramiko first touches it, in the greenlet connecting that
backend, so the backends still connect in parallel. The hub's address, user, key and known
hosts come from the generated ssh_config (``sshpath.jump_config_file``) and are checked exactly
as an OpenSSH ProxyJump would (pyinfra's own SSH client reads them).

With several hubs (``proxies:``) every hub is in that ssh_config, in the file's order, and the
connection goes to the first that answers: the first hub first, the next after a short bounded
connect failure (``FAILOVER_TIMEOUT``), the last with the full ``CONNECT_TIMEOUT``. The choice is
made once per process, like the connection: a dead first hub costs one short wait for the run,
not one per backend. (Every hub can carry the jump: each has a peer for every backend, and a
via-hub backend's SSH answers every hub's tunnel address, ``sshpath.ssh_sources``.)
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # (imported where used: `inv deploy`'s own process never loads paramiko)
    from paramiko import Channel

HUB_ALIAS = "backhaul-hub"  # a hub's name in the generated ssh_config: this, "-", its name
CONNECT_TIMEOUT = 10  # seconds, for the last (or only) hub and for each channel through it
# seconds for a hub that another follows: a dead server (no ARP answer) never refuses, it only
# times out; an answering sshd sends its banner within this even on a loaded 2-core lab
FAILOVER_TIMEOUT = 4

log = logging.getLogger("pyinfra")  # where pyinfra's CLI shows a warning

_hubs: dict[str, object] = {}  # ssh_config file -> the connected client
_failures: dict[str, tuple[float, Exception]] = {}  # ssh_config file -> (when, why) of the last try


@functools.cache
def _hub_lock():
    from gevent.lock import Semaphore  # the backends connect in greenlets

    return Semaphore()


def _hub(config_file: str, hubs: Sequence[str]):
    """This process's SSH connection to a hub (the first caller connects, the rest wait).

    A failed attempt is raised to every backend that was waiting for it (each would otherwise
    try the dead hubs again, one after the other, a timeout each); a connect that starts later
    tries again (a flow that waits for a hub to come back, in one process)."""
    asked = time.monotonic()
    with _hub_lock():
        hub = _hubs.get(config_file)
        if hub is not None:
            return hub
        failed = _failures.get(config_file)
        if failed and failed[0] >= asked:
            raise failed[1]
        try:
            client = _first_answering(config_file, hubs)
        except Exception as e:
            _failures[config_file] = (time.monotonic(), e)
            raise
        _hubs[config_file] = client
        return client


def _first_answering(config_file: str, hubs: Sequence[str]):
    """The connection to the first of ``hubs`` (ssh_config aliases) that answers."""
    if len(hubs) == 1:
        return _connect(config_file, hubs[0], CONNECT_TIMEOUT)  # its own error, as before
    failures: list[str] = []
    for n, alias in enumerate(hubs):
        last = n == len(hubs) - 1
        try:
            client = _connect(config_file, alias, CONNECT_TIMEOUT if last else FAILOVER_TIMEOUT)
        except Exception as e:
            failures.append(f"{_name(alias)}: {e or type(e).__name__}")
            continue
        if failures:
            log.warning(f"backhaul: jumping through the hub {_name(alias)} ({'; '.join(failures)})")
        return client
    raise NoHubAnswered(f"no hub answered SSH for the jump ({'; '.join(failures)})")


class NoHubAnswered(OSError):
    """Every hub failed to connect (an OSError: pyinfra reports "Could not connect", and the
    flows then try the backend directly)."""


def _name(alias: str) -> str:
    return alias.removeprefix(HUB_ALIAS + "-")


def _connect(config_file: str, alias: str, timeout: float):
    """pyinfra's SSH client, connected to one hub of the ssh_config. A hub that another
    follows has its banner bounded too (a hung sshd is as dead as a dead server)."""
    from pyinfra.connectors.sshuserclient.client import SSHClient

    bounds = {"timeout": timeout}
    if timeout < CONNECT_TIMEOUT:
        bounds["banner_timeout"] = timeout
    client = SSHClient()
    try:
        client.connect(alias, _pyinfra_ssh_config_file=config_file, **bounds)
    except Exception:
        client.close()
        raise
    return client


def _forget(config_file: str, hub) -> None:
    """A hub connection that died mid-run: the next backend connects again."""
    with _hub_lock():
        if _hubs.get(config_file) is hub:
            del _hubs[config_file]


def open_channel(config_file: str, hubs: Sequence[str], address: str, port: int) -> Channel:
    """A channel from a hub to ``address:port``, over this process's connection to it."""
    hub = _hub(config_file, hubs)
    transport = hub.get_transport()
    if transport is None or not transport.is_active():
        _forget(config_file, hub)
        transport = _hub(config_file, hubs).get_transport()
    return transport.open_channel("direct-tcpip", (address, port), ("127.0.0.1", 0), timeout=CONNECT_TIMEOUT)


class Jump:
    """paramiko's ``sock`` for one backend: its channel through a hub, opened on first use.

    ``hubs``: the hubs' aliases in the ssh_config, in the order they are tried. One object
    serves one connection (pyinfra connects each host once per run): once the channel is open
    every attribute is the channel's."""

    def __init__(self, config_file: str, address: str, port: int, hubs: Sequence[str]):
        self.hubs = tuple(hubs)
        self._where = (config_file, self.hubs, address, port)
        self._channel: Channel | None = None

    def __getattr__(self, name: str):
        if name.startswith("__"):  # copy, pickle and friends probe these: no channel for them
            raise AttributeError(name)
        if self._channel is None:
            self._channel = open_channel(*self._where)
        return getattr(self._channel, name)

    def __repr__(self) -> str:  # pyinfra logs its connect arguments at debug level
        return f"<jump through a hub to {self._where[2]}:{self._where[3]}>"
