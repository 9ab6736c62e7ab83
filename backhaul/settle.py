"""verify's watch of a tunnel a deploy just (re)started, until it shakes hands (or a bound)."""

from __future__ import annotations

import time

from backhaul.network import Host, Network

HANDSHAKE_MAX_AGE = 180  # seconds; WireGuard re-handshakes every 2 minutes on a live tunnel
# A tunnel a deploy just (re)started may not have shaken hands yet: WireGuard tries again every
# 5 s while it has a packet to send (a backend's keepalive is one), so a lost first try (after
# add-backend the hub's ufw learns the new address only once the tunnel has started) costs up to
# 5 s. Verify watches such a tunnel, both ends up, for this long before it fails it: two more
# tries. A tunnel that truly cannot shake hands still fails, after the bound.
SETTLE_SECONDS = 12


def unsettled(net: Network, backends: list[Host], health: dict) -> list[str]:
    """Backends whose tunnel is configured and up at both ends, with the right key, but has no
    live handshake or lost a ping: what a tunnel just (re)started looks like until it shakes
    hands. (A missing peer, a wrong key or a stopped tunnel is no such thing: it fails at once.)"""
    hub = health.get(net.hub.name)
    if not hub or not (hub["wireguard"].get("service_active") and hub["wireguard"].get("link_up")):
        return []
    out = []
    for b in backends:
        mine = health.get(b.name)
        if not mine or not mine["wireguard"].get("service_active"):
            continue
        pub = mine["wireguard"].get("public_key") or mine["wireguard"].get("public_key_file")
        peer = hub["peers"].get(pub) if pub else None
        if peer is None or b.wg_cidr not in peer["allowed_ips"]:
            continue
        seen = peer["latest_handshake"]
        live = bool(seen) and (hub.get("now") or int(time.time())) - seen <= HANDSHAKE_MAX_AGE
        pinged = hub["ping"].get(str(b.wg_ip)) and mine["ping"].get(str(net.hub.wg_ip))
        if not (live and pinged):
            out.append(b.name)
    return out


def settle(read, net: Network, backends: list[Host], health: dict, bound: float = SETTLE_SECONDS) -> dict:
    """Read the hub and the backends whose tunnel is still settling again (``read(names)`` ->
    {name: health}, into ``health``) until each has shaken hands or ``bound`` seconds have passed.
    Each read pings over those tunnels, which gives WireGuard a packet to shake hands for; a
    tunnel not up yet makes the read last its pings' one-second timeout, so the reads pace
    themselves. Returns what was waited for, how long, and the bound (the report states them)."""
    start = time.monotonic()
    waited_for = pending = unsettled(net, backends, health)
    while pending and time.monotonic() - start < bound:
        began = time.monotonic()
        fresh = read([net.hub.name, *pending])
        health.update({n: h for n, h in fresh.items() if isinstance(h, dict)})
        pending = unsettled(net, backends, health)
        if pending:  # never faster than a read a second, whatever the pings did
            time.sleep(max(0.0, 1.0 - (time.monotonic() - began)))
    return {
        "bound_seconds": bound,
        "waited_seconds": round(time.monotonic() - start, 2) if waited_for else 0.0,
        "waited_for": waited_for,
    }
