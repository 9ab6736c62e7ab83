"""Which Debian packages each part of backhaul needs on a host: one list, used twice.

Each deploy installs its own packages (so `pyinfra inventory.py deploys/nginx.py` works alone),
and `deploys/site.py` installs them all first in ONE apt run (one `apt-get update`, one dpkg
run): three separate installs cost about twice the time on a fresh host.
"""

from __future__ import annotations

from backhaul.network import Host, Network


def wireguard(kernel_module: str | None) -> list[str]:
    """wireguard-go only where the kernel has no WireGuard (containers, some provider kernels)."""
    return ["wireguard-tools"] + (["wireguard-go"] if kernel_module == "missing" else [])


FIREWALL = ["ufw"]


def nginx(net: Network) -> list[str]:
    return ["nginx", "openssl"] + (["certbot"] if net.tls.mode == "acme" else [])


# Hosts whose packages deploys/packages.py already installs in this run (it runs first in
# deploys/site.py): the per-deploy install operations are then skipped, one no-op operation
# (a round trip per host) less each.
_by_site: set[str] = set()


def planned_by_site(host_name: str) -> bool:
    return host_name in _by_site


def plan_by_site(host_name: str) -> None:
    _by_site.add(host_name)


def all_for(net: Network, host: Host, kernel_module: str | None) -> list[str]:
    wanted = wireguard(kernel_module) + FIREWALL
    if host.role == "hub":
        wanted += nginx(net)
        if net.clients:
            wanted += RESOLVER  # the clients' DNS (deploys/resolver.py)
    return wanted


RESOLVER = ["dnsmasq-base"]  # the daemon alone: no service, no default config of its own
