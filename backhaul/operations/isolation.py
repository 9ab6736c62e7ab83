"""The WireGuard address answers only through the tunnel: a guard of its own on every host.

Why a guard besides ufw
-----------------------
ufw's ``in on wg0`` rules see only what reaches INPUT. A neighbour on the provider's network
(same L2 segment) that routes a host's WireGuard address via the host's public address gets
past them two ways: a port Docker publishes on the WireGuard address is DNATed and forwarded
to the container, and Docker accepts it in FORWARD before ufw's chains; and ufw's own rules
answer ICMP echo and SSH on every address. On the hub, with backend_to_backend on, the same
neighbour can have its packets forwarded into the tunnel.

Where it lives, and why it holds
--------------------------------
Chains of backhaul's own in the ``raw`` table (PREROUTING: before conntrack, Docker's DNAT and
every filter rule) and the ``mangle`` table (FORWARD: after the DNAT, so a published port's
original address and port are known, and before every filter rule), for IPv4 and IPv6. They
are loaded by ``backhaul-isolation.service`` (before network-pre.target, like ufw) from
``/etc/backhaul/isolation{,6}.rules`` with ``iptables-restore --noflush``: declaring a chain
flushes it, so a reload is atomic and never duplicates a rule. Neither ufw (``ufw reload``,
``ufw disable``/``enable``) nor Docker (a restart, re-creating its DOCKER/DOCKER-USER chains,
``compose up`` publishing new ports) touches those tables, and the unit loads them at boot.
The alternatives fall short: a DOCKER-USER rule is gone at a reboot until something adds it
again and sees no native service, ICMP or SSH; rules in ufw's before.rules live in a package's
conffile and ufw appends (not replaces) rules in tables it does not own at every reload.

The rules themselves are derived from the model (``backhaul.plan.isolation``) and rendered by
templates (``isolation.rules.j2``, ``isolation6.rules.j2``).
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import operation

from backhaul import ownunit
from backhaul.facts import snapshot
from backhaul.facts.isolation import FILES, RULES4, RULES6, SCRIPT, STATE, UNIT, IsolationGuard
from backhaul.operations import hostfile
from backhaul.plan import Isolation
from backhaul.render import render

_MODES = {"rules4": "644", "rules6": "644", "script": "755", "unit": "644"}


def guard_files(g: Isolation) -> dict[str, str]:
    """The guard's four files for one host, rendered (``guard``'s arguments)."""
    return {
        "rules4": render("isolation.rules.j2", g=g),
        "rules6": render("isolation6.rules.j2", g=g),
        "script": render("isolation-guard.sh.j2", rules4=RULES4, rules6=RULES6, state=STATE),
        "unit": render("isolation-guard.service.j2", script=SCRIPT),
    }


def differs(st: dict, wanted: dict[str, str]) -> list[str]:
    """The files (``guard_files`` names) whose content on the host is not the wanted one."""
    return [k for k, text in wanted.items() if st["files"].get(k) != hostfile.sha256(text)]


@operation()
def guard(rules4: str, rules6: str, script: str, unit: str):
    """
    Install and load the isolation guard; reload it when its rules changed or were flushed.

    + rules4: ``/etc/backhaul/isolation.rules`` (iptables-restore input, backhaul's chains)
    + rules6: ``/etc/backhaul/isolation6.rules`` (the same for ip6tables)
    + script: ``/usr/local/sbin/backhaul-isolation`` (start | reload | stop | check)
    + unit: ``/etc/systemd/system/backhaul-isolation.service``

    Nothing is yielded when the files are as given, the unit is enabled and active, and the
    rules that run are the ones it loaded (``check`` says "loaded"). A reload replaces the
    rules atomically: the address is never open in between.

    **Example:**

    .. code:: python

        isolation.guard(name="Isolation guard", rules4=r4, rules6=r6, script=s, unit=u)
    """
    st = snapshot.get(IsolationGuard) or IsolationGuard().default()
    wanted = {"rules4": rules4, "rules6": rules6, "script": script, "unit": unit}
    # One command for all of it where it can be: each command is an SSH round trip (and a
    # sudo), and a new host needs every step. A reload replaces the rules atomically.
    steps = ownunit.install_steps(
        st, FILES, wanted, UNIT, "reload", mode=_MODES.get, changed=st["rules"] != "loaded"
    )
    if steps:
        yield from hostfile.joined(steps)
    else:
        host.noop("the isolation guard is loaded: the WireGuard address answers only the tunnel")
