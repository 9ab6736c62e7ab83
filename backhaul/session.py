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

        jobs = {name: self.state.pool.spawn(one, name, cls, kw)
                for name, (cls, kw) in wanted.items() if name in self.by_name}  # fmt: skip
        gevent.joinall(list(jobs.values()))
        return {name: job.get() for name, job in jobs.items()}


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
            yield Hosts(state, net)
        finally:
            disconnect_all(state)
