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
        f"export DEBIAN_FRONTEND=noninteractive && {_CONFIGURE_WHEN_DPKG_IS_FREE} && "
        "apt-get update -qq && "
        f"apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout={LOCK_WAIT} "
        f"-o Dpkg::Options::=--force-confold {names}"
    )


# Another apt may hold dpkg's lock: unattended-upgrades on a fresh VPS, or the apt of an earlier
# run whose SSH connection was cut (it goes on without us). Wait for it rather than fail; apt
# waits by itself with DPkg::Lock::Timeout, dpkg has no such option, so it is retried while
# (and only while) it says the lock is taken.
LOCK_WAIT = 600
_CONFIGURE_WHEN_DPKG_IS_FREE = (
    "n=0; while ! out=$(dpkg --configure -a 2>&1); do case $out in "
    f"*lock*) [ $n -lt {LOCK_WAIT} ] || {{ echo \"$out\" >&2; exit 1; }}; n=$((n+1)); sleep 1;; "
    "*) echo \"$out\" >&2; exit 1;; esac; done"
)
