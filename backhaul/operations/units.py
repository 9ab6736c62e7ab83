"""Native services that bind the WireGuard address start with the tunnel, after it.

Why ``BindsTo=`` + ``After=`` (and not ``Requires=`` or ``Wants=``)
-------------------------------------------------------------------
The service binds ``10.50.0.x``, an address that exists only while ``wg-quick@wg0`` is up.

- ``After=`` orders the start: at boot the bind happens once the address exists (without it,
  systemd starts both in parallel and the bind fails with "cannot assign requested address").
- ``BindsTo=`` (a stronger ``Requires=``) pulls the tunnel in when the service starts, and
  propagates a stop or restart of the tunnel to the service: the wireguard deploy restarts
  ``wg-quick@wg0`` when the [Interface] changes, and the service rebinds with it. Unlike
  ``Requires=``, it also stops the service when the tunnel goes inactive by any other way (it
  failed, or was stopped as a dependency), so ``systemctl`` never shows a service "active"
  whose address is gone; a service on a dead tunnel is down, and says so.
- The price of ``BindsTo=``: a tunnel that is stopped and started again would leave the service
  stopped. So the tunnel's side gets a drop-in too, ``Wants=`` every bound service: starting
  ``wg-quick@wg0`` starts them (after it, by their ``After=``). That also brings back, after a
  reboot, a service whose unit has no ``[Install]`` section (``static``) and so cannot be
  enabled: wg-quick is enabled, and wants it.

After a reboot everything comes back by itself: wg-quick@wg0 is enabled, each service is
enabled (this operation enables it) and wanted by the tunnel, and starts after it. A running
service is never restarted here: a drop-in only changes dependencies, which ``daemon-reload``
applies to running units.
"""

from __future__ import annotations

import posixpath
import shlex

from pyinfra import host
from pyinfra.api import OperationError, operation

from backhaul.facts import snapshot
from backhaul.facts.units import TunnelUnits, tunnel_dropin, unit_dropin
from backhaul.operations import hostfile

_NOT_STARTED = {"inactive", "failed", "deactivating"}


def _remove(path: str) -> str:
    q = shlex.quote
    return f"rm -f {q(path)} && rmdir --ignore-fail-on-non-empty {q(posixpath.dirname(path))}"


@operation()
def tunnel_bound(
    units: list[str],
    interface: str = "wg0",
    dropin: str = "",
    tunnel_dropin_content: str = "",
):
    """
    Bind native services to the tunnel with systemd drop-ins; keep them enabled and running.

    + units: the services (``NAME.service``) that bind this host's WireGuard address; an empty
      list removes backhaul's drop-ins left from services that are gone
    + interface: the WireGuard interface (``wg-quick@<interface>.service``)
    + dropin: content of ``/etc/systemd/system/NAME.service.d/backhaul-wg.conf``
      (``After=`` + ``BindsTo=`` the tunnel; see the module docstring for why)
    + tunnel_dropin_content: content of
      ``/etc/systemd/system/wg-quick@<if>.service.d/backhaul-units.conf`` (``Wants=`` the units)

    ``systemctl daemon-reload`` runs once, only when a drop-in changed (or systemd asks for it);
    a disabled unit is enabled; a unit that is not running is started; a running one is never
    restarted.

    **Example:**

    .. code:: python

        units.tunnel_bound(name="Services after the tunnel", units=["app.service"],
                           dropin=rendered_dropin, tunnel_dropin_content=rendered_wants)
    """
    units = list(dict.fromkeys(units))
    st = snapshot.get(TunnelUnits, units=units, interface=interface)
    _refuse_units_that_cannot_run(units, st["units"])
    reload = yield from _dropins(units, st, interface, dropin, tunnel_dropin_content)
    if reload or any(st["units"][u].get("NeedDaemonReload") == "yes" for u in units):
        yield "systemctl daemon-reload"
    started = _enable_and_start(units, st["units"])
    yield from started
    if not (reload or started):
        if units:
            which = ", ".join(units)
            host.noop(f"bound to wg-quick@{interface}, enabled and running: {which}")
        else:
            host.noop(f"no service here is bound to wg-quick@{interface}; no drop-in left over")


def _refuse_units_that_cannot_run(units: list[str], states: dict) -> None:
    for unit in units:
        load = states.get(unit, {}).get("LoadState", "not-found")
        if load == "masked":
            raise OperationError(
                f"{unit} is masked on {host.name}: unmask it (systemctl unmask {unit}) or remove "
                "its `unit:` from the network file"
            )
        if load != "loaded":
            raise OperationError(
                f"{unit} is not installed on {host.name} (LoadState={load}): install the "
                "service there first, or fix its `unit:` in the network file"
            )


def _dropins(units: list[str], st: dict, interface: str, dropin: str, tunnel_content: str):
    """Yield what puts every unit's drop-in and the tunnel's in place and removes ours left from
    units that are gone; return whether systemd must reload (any drop-in changed)."""
    reload = False
    want = hostfile.sha256(dropin)
    for unit in units:
        path = unit_dropin(unit)
        if st["dropins"].get(path) != want:
            yield from hostfile.write(path, dropin, mkdir=True)
            reload = True
    for path in sorted(set(st["dropins"]) - {unit_dropin(u) for u in units}):
        yield _remove(path)
        reload = True
    tpath = tunnel_dropin(interface)
    if units and st["tunnel_dropin"] != hostfile.sha256(tunnel_content):
        yield from hostfile.write(tpath, tunnel_content, mkdir=True)
        reload = True
    elif not units and st["tunnel_dropin"]:
        yield _remove(tpath)
        reload = True
    return reload


def _enable_and_start(units: list[str], states: dict) -> list[str]:
    """The systemctl commands that leave every unit enabled and running; never a restart (a
    failed unit is reset first: systemd may refuse to start it again otherwise)."""

    def names(state: str, wanted) -> str:
        return " ".join(shlex.quote(u) for u in units if states[u].get(state) in wanted)

    commands = []
    if to_enable := names("UnitFileState", {"disabled"}):
        commands.append(f"systemctl enable {to_enable}")
    if failed := names("ActiveState", {"failed"}):
        commands.append(f"systemctl reset-failed {failed}")
    if to_start := names("ActiveState", _NOT_STARTED):
        commands.append(f"systemctl start {to_start}")
    return commands
