"""The hub's resolver for clients (deploys/resolver.py): its two files and its unit's state."""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra.api import FactBase

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
        return " ; ".join(
            [
                f"for f in {' '.join(f'{k}={shlex.quote(v)}' for k, v in FILES.items())}; do"
                ' [ -f "${f#*=}" ] && printf "file %s %s\\n" "${f%%=*}"'
                ' "$(sha256sum < "${f#*=}" | cut -c1-64)"; done',
                f"printf 'enabled %s\\n' \"$(systemctl is-enabled {UNIT} 2>/dev/null)\"",
                f"printf 'active %s\\n' \"$(systemctl is-active {UNIT} 2>/dev/null)\"",
                "true",
            ]
        )

    def default(self) -> dict[str, Any]:
        return {"files": dict.fromkeys(FILES), "enabled": None, "active": None}

    def process(self, output: list[str]) -> dict[str, Any]:
        state = self.default()
        for line in output:
            kind, _, rest = line.strip().partition(" ")
            if kind == "file":
                name, _, sha = rest.partition(" ")
                if name in FILES:
                    state["files"][name] = sha.strip() or None
            elif kind in ("enabled", "active"):
                state[kind] = rest.strip() or None
        return state
