"""The WireGuard address answers only through the tunnel, whatever Docker publishes on it.

    pyinfra inventory.py deploys/isolation.py [--limit HOST]

On every host: packets to its WireGuard address that did not arrive on the tunnel (or come
from the host itself) are dropped; on the hub nothing is forwarded into the tunnel that did not
come out of it; on a backend a port published on the WireGuard address answers only the
sources a declared service allows (the hub; the subnet with backend_to_backend), and nothing
published over IPv6 answers. See backhaul/operations/isolation.py for how it holds.
"""

from pyinfra import host
from pyinfra.api import deploy

from backhaul import plan, software
from backhaul.network import load_current
from backhaul.operations import isolation, packages


@deploy("Isolation")
def isolation_guard(packages_installed: bool):
    net = load_current()
    g = plan.isolation(net, net.host(host.name))
    if not packages_installed:
        packages.installed(name="ufw (and with it iptables)", packages=software.FIREWALL)
    isolation.guard(
        name="isolation guard: the WireGuard address answers only through the tunnel",
        **isolation.guard_files(g),
    )


isolation_guard(software.installed_by_site())
