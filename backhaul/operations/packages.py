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
    yield install_command(missing)


# How long a run waits for another apt/dpkg to let go of the dpkg lock.
LOCK_WAIT = 300


def install_command(packages: list[str], lists: str = "/var/lib/apt/lists") -> str:
    """The shell command that installs ``packages`` (never Recommends), whatever an earlier,
    cut-off run left behind."""
    names = " ".join(shlex.quote(p) for p in packages)
    wait = f"-o DPkg::Lock::Timeout={LOCK_WAIT}"
    # An install cut off earlier (a dropped SSH connection) can leave its apt-get running on
    # the host for a while (OpenSSH 10 does not end a session's commands with it), and an
    # interrupted dpkg must be finished (`dpkg --configure -a`) before apt does anything. dpkg
    # cannot wait for its lock: when it is held, `apt-get check` waits for it (apt takes
    # fcntl locks, which flock cannot see), then dpkg runs again. Only then: apt-get check
    # builds apt's cache from the lists it finds, 0.3-0.9 s on a fresh host, for nothing.
    configure = "dpkg --configure -a"
    update = "apt-get update -qq"
    return (
        f"export DEBIAN_FRONTEND=noninteractive && {{ {configure} 2>/dev/null || "
        f"{{ apt-get -qq {wait} check >/dev/null 2>&1; {configure}; }}; }} && "
        # A host without translated package descriptions (a fresh one) gets none: nothing here
        # reads them, and its first update would fetch them whole (Debian 13's English one is
        # 35 MB to unpack, 1.5-2 s). A host that has them keeps them (apt drops what it skips).
        f"if ls {lists}/*_i18n_Translation-* >/dev/null 2>&1; then {update}; "
        f"else {update} -o Acquire::Languages=none; fi && "
        f"apt-get install -y -q --no-install-recommends {wait} "
        f"-o Dpkg::Options::=--force-confold {names}"
    )
