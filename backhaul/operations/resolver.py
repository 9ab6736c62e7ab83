"""The hub's resolver for clients: dnsmasq under backhaul's own unit, bound to the WG address."""

from __future__ import annotations

import hashlib
import posixpath
import shlex

from pyinfra import host
from pyinfra.api import operation

from backhaul.facts import snapshot
from backhaul.facts.resolver import FILES, UNIT, ResolverState


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _write(path: str, content: str, mode: str) -> str:
    """Atomically write a small file we render ourselves (as the isolation guard does)."""
    q = shlex.quote
    tmp = f"{path}.tmp"
    return (f"mkdir -p {q(posixpath.dirname(path))} && printf '%s' {q(content)} > {q(tmp)}"
            f" && chmod {mode} {q(tmp)} && mv -f {q(tmp)} {q(path)}")


@operation()
def resolver(conf: str, unit: str):
    """
    Install the resolver's config and unit, enabled and running; restart it when they changed
    (dnsmasq reads its config at start only).

    + conf: ``/etc/backhaul/dns.conf`` (dnsmasq's options, rendered from the network file)
    + unit: ``/etc/systemd/system/backhaul-dns.service``

    **Example:**

    .. code:: python

        resolver.resolver(name="Resolver for clients", conf=c, unit=u)
    """
    st = snapshot.get(ResolverState) or ResolverState().default()
    wanted = {"conf": conf, "unit": unit}
    stale = [k for k, text in wanted.items() if st["files"].get(k) != _sha256(text)]
    for name in stale:
        yield _write(FILES[name], wanted[name], "644")
    if "unit" in stale:
        yield "systemctl daemon-reload"
    if st["enabled"] != "enabled":
        yield f"systemctl enable {UNIT}"
    if st["active"] != "active":
        yield f"systemctl start {UNIT}"
    elif stale:
        yield f"systemctl restart {UNIT}"
    elif st["enabled"] == "enabled":
        host.noop("the resolver answers the clients on the tunnel")
