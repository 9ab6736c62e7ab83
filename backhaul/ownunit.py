"""A systemd unit of backhaul's own and the files it runs from (the isolation guard, the
clients' resolver): how a fact reads their state in one command, and the steps an operation
takes to install them. One statement for both, so the two stay alike."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any

from backhaul.operations import hostfile


def state_command(files: dict[str, str], unit: str, extra: list[str] = ()) -> str:
    """Prints ``SHA256  PATH`` per file present (one sha256sum for them all), the unit's
    ``ActiveState=`` and ``UnitFileState=`` (one systemctl), then the ``extra`` commands'
    lines (each ``KEY VALUE``). It is in every deploy's bundled read on every host: few
    processes matter there."""
    return " ; ".join(
        [
            f"sha256sum -- {' '.join(shlex.quote(v) for v in files.values())} 2>/dev/null",
            f"systemctl show -p ActiveState -p UnitFileState {unit} 2>/dev/null",
            *extra,
            "true",
        ]
    )


def default_state(files: dict[str, str], extra_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"files": dict.fromkeys(files), "enabled": None, "active": None} | dict.fromkeys(extra_keys)


_SYSTEMD = {"UnitFileState": "enabled", "ActiveState": "active"}  # property -> our key


def parse_state(output: list[str], files: dict[str, str], extra_keys: tuple[str, ...] = ()) -> dict:
    state = default_state(files, extra_keys)
    name_of = {path: name for name, path in files.items()}
    for line in output:
        prop, eq, value = line.strip().partition("=")
        if eq and prop in _SYSTEMD:
            state[_SYSTEMD[prop]] = value.strip() or None  # empty: no such unit file
            continue
        first, _, rest = line.strip().partition(" ")
        if rest.strip() in name_of and len(first) == 64:  # sha256sum's "SHA256  PATH"
            state["files"][name_of[rest.strip()]] = first
        elif first in extra_keys:
            state[first] = rest.strip() or None
    return state


def install_steps(
    st: dict,
    files: dict[str, str],
    wanted: dict[str, str],
    unit: str,
    on_change: str,
    mode: Callable[[str], str] = lambda name: "644",
    changed: bool = False,
) -> list:
    """The commands that bring the files and the unit to ``wanted``, enabled and running:
    written files, then ``enable --now`` a unit not yet enabled (enable reloads systemd
    itself: a daemon-reload before it costs a second one, 0.1 s); an enabled unit whose file
    changed gets the daemon-reload, then a start, or, if it runs already and a file changed
    (or ``changed``), ``systemctl <on_change>`` (reload or restart).
    Empty when nothing is to do. Pass them through ``hostfile.joined``: one round trip."""
    stale = [k for k, text in wanted.items() if st["files"].get(k) != hostfile.sha256(text)]
    steps = [c for k in stale for c in hostfile.write(files[k], wanted[k], mode(k), mkdir=True)]
    if st["enabled"] != "enabled":
        if st["active"] != "active":
            return [*steps, f"systemctl enable --now {unit}"]
        steps.append(f"systemctl enable {unit}")
    elif "unit" in stale:
        steps.append("systemctl daemon-reload")
    if st["active"] != "active":
        steps.append(f"systemctl start {unit}")
    elif stale or changed:
        steps.append(f"systemctl {on_change} {unit}")
    return steps
