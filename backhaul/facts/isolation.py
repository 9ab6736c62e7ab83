"""The isolation guard on a host (backhaul/operations/isolation.py): its files, unit and rules."""

from __future__ import annotations

from typing import Any

from pyinfra.api import FactBase

from backhaul import ownunit

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
        check = f"[ -x {SCRIPT} ] && printf 'rules %s\\n' \"$({SCRIPT} check 2>/dev/null)\""
        return ownunit.state_command(FILES, UNIT, [check])

    def default(self) -> dict[str, Any]:
        return ownunit.default_state(FILES, ("rules",))

    def process(self, output: list[str]) -> dict[str, Any]:
        return ownunit.parse_state(output, FILES, ("rules",))
