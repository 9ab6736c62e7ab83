"""Every package the other deploys need, in one apt run (see backhaul/software.py).

pyinfra inventory.py deploys/packages.py
"""

from pyinfra import host
from pyinfra.api import deploy

from backhaul import software
from backhaul.facts import snapshot
from backhaul.facts.system import KernelModule
from backhaul.network import load_current
from backhaul.operations import packages


@deploy("Packages")
def all_packages():
    net = load_current()
    kernel = snapshot.get(KernelModule, module="wireguard")
    packages.installed(
        name="packages for WireGuard, ufw (and nginx, TLS on the hub)",
        packages=software.all_for(net, net.host(host.name), kernel),
    )


all_packages()
