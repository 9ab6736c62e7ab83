"""Read-only access to the hosts through pyinfra's Python API (facts only, never operations).

Deploys go through the pinned pyinfra CLI (the stable interface); reading facts through the API
is what STYLE.md allows, and it lets `inv verify` gather every host's state in parallel with a
single SSH connection per host.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import gevent
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.facts import get_fact
from pyinfra.context import ctx_host, ctx_state

from backhaul.errors import BackhaulError
from backhaul.facts.system import SudoAccess, sudo_problem
from backhaul.inventory import host_data
from backhaul.network import Network


class Hosts:
    """Connected hosts of a network, by name; ``unreachable`` names those that did not answer."""

    def __init__(self, state: State, net: Network):
        self.state, self.net = state, net
        self.by_name = {h.name: h for h in state.inventory if h.connected}
        self.unreachable = sorted(h.name for h in state.inventory if not h.connected)

    def facts(self, wanted: dict[str, tuple[type, dict]]) -> dict[str, object]:
        """Gather one fact per host, all hosts in parallel: {host: (FactClass, kwargs)}."""

        def one(name: str, cls: type, kwargs: dict):
            host = self.by_name[name]
            with ctx_state.use(self.state), ctx_host.use(host):
                try:
                    return get_fact(self.state, host, cls, kwargs=kwargs)
                except PyinfraError as e:
                    return e

        jobs = {
            name: self.state.pool.spawn(one, name, cls, kw)
            for name, (cls, kw) in wanted.items()
            if name in self.by_name
        }
        gevent.joinall(list(jobs.values()))
        return {name: job.get() for name, job in jobs.items()}


def as_root(host) -> dict:
    """Arguments for ``host.run_shell_command`` that run the command as root: pyinfra applies
    host data's ``_sudo`` to facts and operations, but not to a direct command."""
    return {"_sudo": True} if getattr(host.data, "_sudo", False) else {}


def sudo_problems(hosts: Hosts) -> list[str]:
    """Hosts whose SSH user is not root and cannot use sudo without a password."""
    sudoers = {name: (SudoAccess, {"_sudo": False}) for name, h in hosts.by_name.items() if as_root(h)}
    problems = []
    for name, access in sorted(hosts.facts(sudoers).items()):
        if isinstance(access, Exception):
            problems.append(f"{name}: could not check sudo ({access})")
        elif problem := sudo_problem(name, access):
            problems.append(problem)
    return problems


@contextlib.contextmanager
def connect(net: Network, names: list[str] | None = None) -> Iterator[Hosts]:
    names = names or [h.name for h in net.hosts]
    inventory = Inventory(
        ([(h.name, host_data(net, h)) for h in net.hosts if h.name in names], {}),
    )
    config = Config(CONNECT_TIMEOUT=10, FAIL_PERCENT=100)
    state = State(inventory, config)
    # pyinfra logs connection errors itself; the report says it better
    logging.getLogger("pyinfra").setLevel(logging.CRITICAL)
    with ctx_state.use(state):
        try:
            connect_all(state)
        except PyinfraError:
            pass  # every host failed: Hosts.unreachable says which
        try:
            hosts = Hosts(state, net)
            problems = sudo_problems(hosts)
            if problems:  # before any command as root: nothing has changed
                raise BackhaulError(
                    "cannot run as root on every host (nothing was changed):\n"
                    + "\n".join(f"  - {p}" for p in problems)
                )
            yield hosts
        finally:
            disconnect_all(state)
