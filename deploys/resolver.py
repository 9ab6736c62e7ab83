"""Names. On the hub, DNS for clients on the tunnel: it answers the services' domains with its
WireGuard address (dnsmasq from dnsmasq-base, bound to that address only), when the network
file has clients. On a backend, the services it is granted by name (`db.internal`) in its
/etc/hosts (why there: backhaul/etchosts.py).

    pyinfra inventory.py deploys/resolver.py

Why dnsmasq-base: the daemon alone (no service, no config of its own, nothing that starts on
install), and one file says everything (`host-record=` + `local=` per domain, the rest
forwarded to the hub's own resolvers). The `dnsmasq` package or `unbound` start a resolver on
every address at install and bring a config of their own that can clash with systemd-resolved
(127.0.0.53); here the only listener is the WireGuard address, under backhaul's own unit.
"""

from pyinfra import host
from pyinfra.api import deploy

from backhaul import clients, plan, software
from backhaul.network import load_current
from backhaul.operations import packages
from backhaul.operations import resolver as ops


@deploy("Resolver for clients")
def resolver(packages_installed: bool):
    net = load_current()
    if not packages_installed:
        packages.installed(name="dnsmasq-base", packages=software.RESOLVER)
    ops.resolver(
        name="resolver on the WG address: the services' domains -> the hub",
        conf=clients.resolver_conf(net),
        unit=clients.resolver_unit(net),
    )


@deploy("Names of the granted services")
def granted_names():
    net = load_current()
    ops.names(
        name="names of the granted services (/etc/hosts)",
        names=plan.names(net, net.host(host.name)),
    )


if host.name == load_current().hub.name and load_current().clients:  # clients: the first hub's
    resolver(software.installed_by_site())
elif host.data.get("backhaul_role") == "backend":
    granted_names()
