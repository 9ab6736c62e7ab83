"""The isolation guard on a host (backhaul/operations/isolation.py): its files, unit and rules."""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra.api import FactBase

RULES4 = "/etc/backhaul/isolation.rules"
RULES6 = "/etc/backhaul/isolation6.rules"
SCRIPT = "/usr/local/sbin/backhaul-isolation"
UNIT = "backhaul-isolation.service"
UNIT_FILE = f"/etc/systemd/system/{UNIT}"
STATE = "/run/backhaul/isolation.loaded"  # the digest of what the last start loaded
FILES = {"rules4": RULES4, "rules6": RULES6, "script": SCRIPT, "unit": UNIT_FILE}


class IsolationGuard(FactBase[dict[str, Any]]):
    """
    The guard's files (sha256 each, None when absent), its unit's state, and whether the rules
    that run are the ones it loaded from the files as they are now.

    .. code:: python

        {"files": {"rules4": "5e1f...", "rules6": "9a0b...", "script": "...", "unit": None},
         "enabled": "enabled", "active": "active",
         "rules": "loaded"}   # "changed": flushed or edited since; "not-loaded"; None: no script
    """

    def command(self) -> str:
        parts = [
            f"for f in {' '.join(f'{k}={shlex.quote(v)}' for k, v in FILES.items())}; do"
            ' [ -f "${f#*=}" ] && printf "file %s %s\\n" "${f%%=*}"'
            ' "$(sha256sum < "${f#*=}" | cut -c1-64)"; done',
            f"printf 'enabled %s\\n' \"$(systemctl is-enabled {UNIT} 2>/dev/null)\"",
            f"printf 'active %s\\n' \"$(systemctl is-active {UNIT} 2>/dev/null)\"",
            f"[ -x {SCRIPT} ] && printf 'rules %s\\n' \"$({SCRIPT} check 2>/dev/null)\"",
            "true",
        ]
        return " ; ".join(parts)

    def default(self) -> dict[str, Any]:
        return {"files": dict.fromkeys(FILES), "enabled": None, "active": None, "rules": None}

    def process(self, output: list[str]) -> dict[str, Any]:
        state = self.default()
        for line in output:
            kind, _, rest = line.strip().partition(" ")
            if kind == "file":
                name, _, sha = rest.partition(" ")
                if name in FILES:
                    state["files"][name] = sha.strip() or None
            elif kind in ("enabled", "active", "rules"):
                state[kind] = rest.strip() or None
        return state
