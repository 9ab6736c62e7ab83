"""The hub's resolver for clients: dnsmasq under backhaul's own unit, bound to the WG address."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import operation

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
    stale = [k for k, text in wanted.items() if st["files"].get(k) != hostfile.sha256(text)]
    steps = [c for name in stale for c in hostfile.write(FILES[name], wanted[name], mkdir=True)]
    if "unit" in stale:
        steps.append("systemctl daemon-reload")
    if st["enabled"] != "enabled":
        steps.append(f"systemctl enable {UNIT}")
    if st["active"] != "active":
        steps.append(f"systemctl start {UNIT}")
    elif stale:
        steps.append(f"systemctl restart {UNIT}")
    if steps:
        yield from hostfile.joined(steps)
    else:
        host.noop("the resolver answers the clients on the tunnel")
