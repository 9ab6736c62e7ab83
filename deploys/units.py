"""Native services on the backends start after the tunnel and with it (systemd drop-ins).

    pyinfra inventory.py deploys/units.py [--limit HOST]

For each service with `unit: NAME.service`: a drop-in ordering it after wg-quick@<if> and
binding it to it, the tunnel wanting it back, the unit enabled and running. Runs on every
backend, so that the drop-ins of services removed from the network file are removed too.
"""

from pyinfra import host
from pyinfra.api import deploy

from backhaul.network import load_current
from backhaul.operations import units
from backhaul.render import render


@deploy("Services after the tunnel")
def tunnel_bound_services():
    net = load_current()
    if net.host(host.name).role != "backend":
        return
    names = sorted({s.unit for s in net.services_on(host.name) if s.unit})
    units.tunnel_bound(
        name="Services start after the tunnel, and with it",
        units=names,
        interface=net.interface,
        dropin=render("systemd-unit-wg.conf.j2", interface=net.interface),
        tunnel_dropin_content=render("systemd-tunnel-wants.conf.j2", units=names),
    )


tunnel_bound_services()
