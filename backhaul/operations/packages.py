"""Install Debian packages without side effects a careful admin would refuse."""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import operation

from backhaul.facts import snapshot
from backhaul.facts.packages import InstalledPackages


@operation()
def installed(packages: list[str]):
    """
    Install the packages that are missing, never their Recommends.

    + packages: Debian package names

    ``wireguard-tools`` Recommends ``wireguard-modules``, which Debian's kernel images provide:
    a default install on a VPS with a provider kernel pulls a whole linux-image + initramfs.
    So Recommends are never installed. ``apt-get update`` runs only when something is missing
    (a no-op run costs one dpkg-query).

    **Example:**

    .. code:: python

        packages.installed(name="WireGuard tools", packages=["wireguard-tools"])
    """
    have = snapshot.get(InstalledPackages, packages=packages)
    missing = [p for p in packages if p not in have]
    if not missing:
        host.noop(f"installed: {', '.join(packages)}")
        return
    names = " ".join(shlex.quote(p) for p in missing)
    # `dpkg --configure -a` first: an install cut off earlier (a dropped SSH connection) leaves
    # dpkg "interrupted", and apt refuses to do anything until it is finished.
    yield (
        "export DEBIAN_FRONTEND=noninteractive && dpkg --configure -a && apt-get update -qq && "
        "apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold "
        f"{names}"
    )
