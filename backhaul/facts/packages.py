"""Which of a few Debian packages are installed: one cheap dpkg-query, not a full `dpkg -l`."""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase


class InstalledPackages(FactBase[dict[str, str]]):
    """
    Installed versions of the named packages; packages not installed are absent.

    .. code:: python

        {"wireguard-tools": "1.0.20210914-1+b1"}
    """

    def command(self, packages: list[str]) -> str:
        names = " ".join(shlex.quote(p) for p in packages)
        fmt = "'${Package} ${db:Status-Abbrev} ${Version}\\n'"
        return f"dpkg-query -W -f={fmt} {names} 2>/dev/null || true"

    def process(self, output: list[str]) -> dict[str, str]:
        found = {}
        for line in output:
            parts = line.split()
            # "ii " = desired install, status installed; anything else is not usable
            if len(parts) == 3 and parts[1] == "ii":
                found[parts[0]] = parts[2]
        return found

    def default(self) -> dict[str, str]:
        return {}
