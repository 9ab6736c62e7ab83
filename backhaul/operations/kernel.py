"""Kernel settings (sysctl), set now and kept at boot in one ``/etc/sysctl.d`` file.

pyinfra's ``server.sysctl`` reads a fact of its own for every key on every run; this one reads
``KernelSettings``, which the deploy's one-round-trip snapshot holds (backhaul.facts.snapshot).
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import operation

from backhaul.facts import snapshot
from backhaul.facts.nginx import check_path
from backhaul.facts.system import KernelSettings
from backhaul.operations import hostfile


def sysctl_file(values: dict[str, int], why: str) -> str:
    lines = ["# Managed by backhaul; local edits are overwritten.", *(f"# {w}" for w in why.splitlines())]
    return "\n".join([*lines, *(f"{k} = {v}" for k, v in sorted(values.items()))]) + "\n"


@operation()
def settings(values: dict[str, int], file: str, why: str = ""):
    """
    Set kernel settings now (``sysctl -w``) and at boot (``file``), where they differ.

    + values: sysctl key -> value
    + file: the ``/etc/sysctl.d/*.conf`` file that keeps them (written whole)
    + why: a comment for the file's head: what the settings are for

    **Example:**

    .. code:: python

        kernel.settings(name="TCP gives up sooner", values={"net.ipv4.tcp_retries2": 5},
                        file="/etc/sysctl.d/60-backhaul-frontdoor.conf")
    """
    check_path(file)
    content = sysctl_file(values, why)
    st = snapshot.get(KernelSettings, keys=sorted(values), file=file)
    changed = False
    if st["file"] != hostfile.sha256(content):
        yield from hostfile.write(file, content)
        changed = True
    for key, value in sorted(values.items()):
        if st["values"].get(key) != str(value):
            yield f"sysctl -q -w {shlex.quote(f'{key}={value}')}"
            changed = True
    if not changed:
        host.noop(f"kernel settings in place: {', '.join(f'{k}={v}' for k, v in sorted(values.items()))}")
