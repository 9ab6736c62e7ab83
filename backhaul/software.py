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


NGINX = ["nginx", "openssl"]
ACME = ["certbot"]


def nginx(net: Network) -> list[str]:
    return NGINX + (ACME if net.tls.mode == "acme" else [])


# deploys/site.py installs every part's packages first, in one apt run, and says so to the
# parts it includes (their include data): each part then skips its own install operation, one
# no-op round trip per host less each. A part run alone installs its own.
SITE_INSTALLED = "backhaul_packages_installed"


def installed_by_site() -> bool:
    """In a deploy file, at module level (a @deploy function's own data hides include data)."""
    from pyinfra import host

    return bool(host.data.get(SITE_INSTALLED))


def all_for(net: Network, host: Host, kernel_module: str | None) -> list[str]:
    wanted = wireguard(kernel_module) + FIREWALL
    if host.role == "hub":
        wanted += nginx(net)
        if net.clients:
            wanted += RESOLVER  # the clients' DNS (deploys/resolver.py)
    return wanted


RESOLVER = ["dnsmasq-base"]  # the daemon alone: no service, no default config of its own
