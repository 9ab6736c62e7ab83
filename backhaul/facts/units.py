"""Native services bound to the tunnel: their systemd state and backhaul's drop-ins, one command."""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra.api import FactBase

from backhaul.facts.wireguard import check_interface

UNIT_DIR = "/etc/systemd/system"
# The drop-in that binds a native service to the tunnel. Its name marks it as backhaul's: one
# found on a unit that no longer has a service in the network file is removed.
DROPIN_NAME = "backhaul-wg.conf"
# On the tunnel's side: starting wg-quick@<if> starts the services bound to it.
TUNNEL_DROPIN_NAME = "backhaul-units.conf"
_PROPS = "LoadState,ActiveState,SubState,UnitFileState,NeedDaemonReload"


def unit_dropin(unit: str) -> str:
    return f"{UNIT_DIR}/{unit}.d/{DROPIN_NAME}"


def tunnel_dropin(interface: str) -> str:
    return f"{UNIT_DIR}/wg-quick@{check_interface(interface)}.service.d/{TUNNEL_DROPIN_NAME}"


class TunnelUnits(FactBase[dict[str, Any]]):
    """
    The systemd state of the given units, and every backhaul drop-in on the host.

    + units: the units (``NAME.service``) that should be bound to the tunnel
    + interface: the WireGuard interface, default ``wg0``

    ``dropins`` maps each ``/etc/systemd/system/*.service.d/backhaul-wg.conf`` present (for
    any unit, so stale ones can be found) to the sha256 of its content; ``tunnel_dropin`` is
    the sha256 of ``wg-quick@<if>.service.d/backhaul-units.conf`` or None.

    .. code:: python

        {"units": {"app.service": {"LoadState": "loaded", "ActiveState": "active",
                                   "SubState": "running", "UnitFileState": "enabled",
                                   "NeedDaemonReload": "no"}},
         "dropins": {"/etc/systemd/system/app.service.d/backhaul-wg.conf": "5e1f..."},
         "tunnel_dropin": "9a0b..."}
    """

    def command(self, units: list[str] | tuple[str, ...] = (), interface: str = "wg0") -> str:
        sha = 'sha256sum < "$f" | cut -c1-64'
        parts = []
        if units:
            names = " ".join(shlex.quote(u) for u in units)
            parts.append(
                f'for u in {names}; do systemctl show -p {_PROPS} -- "$u" 2>/dev/null'
                ' | sed "s|^|unit $u |"; done'
            )
        parts.append(
            f'for f in {UNIT_DIR}/*.service.d/{DROPIN_NAME}; do [ -f "$f" ] &&'
            f' printf "dropin %s %s\\n" "$f" "$({sha})"; done'
        )
        t = shlex.quote(tunnel_dropin(interface))
        parts.append(f'f={t}; if [ -f "$f" ]; then printf "tunnel %s\\n" "$({sha})"; fi')
        parts.append("true")
        return " ; ".join(parts)

    def default(self) -> dict[str, Any]:
        return {"units": {}, "dropins": {}, "tunnel_dropin": None}

    def process(self, output: list[str]) -> dict[str, Any]:
        state = self.default()
        for line in output:
            kind, _, rest = line.partition(" ")
            if kind == "unit":
                unit, _, prop = rest.partition(" ")
                key, _, value = prop.partition("=")
                state["units"].setdefault(unit, {})[key] = value
            elif kind == "dropin":
                path, _, sha = rest.rpartition(" ")
                state["dropins"][path] = sha
            elif kind == "tunnel":
                state["tunnel_dropin"] = rest.strip()
        return state
