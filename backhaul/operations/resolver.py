"""The hub's resolver for clients: dnsmasq under backhaul's own unit, bound to the WG address."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import operation

from backhaul import etchosts, ownunit
from backhaul.facts import snapshot
from backhaul.facts.resolver import FILES, UNIT, EtcHosts, ResolverState
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


@operation()
def names(names: list[tuple[str, str]]):
    """
    The granted services' names in /etc/hosts, in backhaul's block (and no block when there is
    none); the host's own lines are left as they are, and a file edited meanwhile fails the run
    rather than being overwritten.

    + names: ``(WireGuard address, name)`` pairs, e.g. ``[("10.50.0.3", "db.internal")]``

    **Example:**

    .. code:: python

        resolver.names(name="names of the granted services", names=[("10.50.0.3", "db.internal")])
    """
    current = snapshot.get(EtcHosts) or ""
    wanted = etchosts.with_names(current, names)
    if wanted == current:
        host.noop(f"/etc/hosts names {len(names)} granted service(s)")
        return
    yield from hostfile.write(etchosts.PATH, wanted, expect=current)
