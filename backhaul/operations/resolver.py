"""The hub's resolver for clients: dnsmasq under backhaul's own unit, bound to the WG address."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import operation

from backhaul import ownunit
from backhaul.facts import snapshot
from backhaul.facts.resolver import FILES, UNIT, ResolverState
from backhaul.operations import hostfile


@operation()
def resolver(conf: str, unit: str):
    """
    Install the resolver's config and unit, enabled and running; restart it when they changed
    (dnsmasq reads its config at start only).

    + conf: ``/etc/backhaul/dns.conf`` (dnsmasq's options, rendered from the network file)
    + unit: ``/etc/systemd/system/backhaul-dns.service``

    **Example:**

    .. code:: python

        resolver.resolver(name="Resolver for clients", conf=c, unit=u)
    """
    st = snapshot.get(ResolverState) or ResolverState().default()
    wanted = {"conf": conf, "unit": unit}
    # dnsmasq reads its config at start only: a change is a restart
    steps = ownunit.install_steps(st, FILES, wanted, UNIT, "restart")
    if steps:
        yield from hostfile.joined(steps)
    else:
        host.noop("the resolver answers the clients on the tunnel")
