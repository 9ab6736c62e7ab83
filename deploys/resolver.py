"""DNS for clients on the tunnel: the hub answers the services' domains with its WireGuard
address (dnsmasq from dnsmasq-base, bound to that address only). Runs on the hub when the
network file has clients.

    pyinfra inventory.py deploys/resolver.py

Why dnsmasq-base: the daemon alone (no service, no config of its own, nothing that starts on
install), ~1 MB, and one file says everything (`host-record=` per domain, forwarding the rest
to the hub's resolvers). `dnsmasq` (the package) or `unbound` start a resolver on every
address at install and bring config of their own that can clash with systemd-resolved's
127.0.0.53; here the only listener is the WireGuard address, under backhaul's own unit.
"""

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, systemd
from pyinfra.operations.util import any_changed

from backhaul import clients, software
from backhaul.network import load_current
from backhaul.operations import packages


@deploy("Resolver for clients")
def resolver():
    net = load_current()
    if not software.planned_by_site(host.name):
        packages.installed(name="dnsmasq-base", packages=software.RESOLVER)
    conf = files.put(name="resolver config: the services' domains -> the hub's WG address",
                     src=StringIO(clients.resolver_conf(net)), dest=clients.RESOLVER_CONF,
                     mode="644")  # fmt: skip
    unit = files.put(name=f"{clients.RESOLVER_UNIT}", src=StringIO(clients.resolver_unit(net)),
                     dest=f"/etc/systemd/system/{clients.RESOLVER_UNIT}", mode="644")  # fmt: skip
    systemd.daemon_reload(name="systemd: the resolver's unit", _if=unit.did_change)
    systemd.service(name="resolver bound to the WireGuard address, running",
                    service=clients.RESOLVER_UNIT, running=True, enabled=True)  # fmt: skip
    systemd.service(name="resolver: new config", service=clients.RESOLVER_UNIT, restarted=True,
                    _if=any_changed(conf, unit))  # fmt: skip

if host.data.get("backhaul_role") == "hub" and load_current().clients:
    resolver()
