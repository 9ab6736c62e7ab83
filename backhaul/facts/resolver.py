"""The hub's resolver for clients (deploys/resolver.py): its two files and its unit's state."""

from __future__ import annotations

import base64
from typing import Any

from pyinfra.api import FactBase

from backhaul import ownunit

CONF = "/etc/backhaul/dns.conf"
UNIT = "backhaul-dns.service"
UNIT_FILE = f"/etc/systemd/system/{UNIT}"
FILES = {"conf": CONF, "unit": UNIT_FILE}


class ResolverState(FactBase[dict[str, Any]]):
    """
    sha256 of each file (None when absent) and the unit's state, in one command (and so in the
    deploy's one bundled read: a no-op deploy with clients reads nothing more).

    .. code:: python

        {"files": {"conf": "5e1f...", "unit": None}, "enabled": "enabled", "active": "active"}
    """

    def command(self) -> str:
        return ownunit.state_command(FILES, UNIT)

    def default(self) -> dict[str, Any]:
        return ownunit.default_state(FILES)

    def process(self, output: list[str]) -> dict[str, Any]:
        return ownunit.parse_state(output, FILES)


class EtcHosts(FactBase[str]):
    """The text of /etc/hosts ("" when absent), byte for byte (base64 on the wire: blank lines
    and trailing spaces survive, so a write's check of the file it replaces holds): backhaul
    keeps one block of it (backhaul/etchosts.py), the rest is the host's."""

    def command(self) -> str:
        return "base64 -w0 /etc/hosts 2>/dev/null; echo"

    def default(self) -> str:
        return ""

    def process(self, output: list[str]) -> str:
        return base64.b64decode("".join(line.strip() for line in output)).decode(errors="replace")
