"""Admin clients (road-warrior peers): their key pair, their config, the hub's resolver, expiry.

Pure functions over the model. The hub's peers and firewall rules for clients are decided in
backhaul.plan; this module holds what only clients need:

- a key pair made in memory (``inv add-client`` without --public-key): the private key goes into
  the config shown once on the terminal, never to a file, a log or a host;
- the config a client imports (text, and the same as a QR code for the WireGuard apps);
- the hub's resolver (dnsmasq), which answers the services' domains with the hub's WireGuard
  address, so a client reaches an allow-listed service by its usual name over the tunnel;
- expiry: what `inv verify` says about each client, and which peers `inv deploy` drops.
"""

from __future__ import annotations

import base64
import datetime
import io

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from backhaul import plan
from backhaul.facts.resolver import CONF as RESOLVER_CONF
from backhaul.network import Client, Network
from backhaul.render import render


def today() -> datetime.date:
    """Today in UTC: expiry dates are UTC days, whatever the controller's time zone."""
    return datetime.datetime.now(datetime.UTC).date()


def keypair() -> tuple[str, str]:
    """(private, public) WireGuard keys, base64 as `wg genkey | wg pubkey` prints them."""
    key = X25519PrivateKey.generate()
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode(), base64.b64encode(pub).decode()


def config_text(net: Network, client: Client, hub_public_key: str, private_key: str | None) -> str:
    """The client's wg-quick config. Without ``private_key`` (the client made its own key) a
    comment marks where the client puts it."""
    hub = net.hub
    endpoint = f"[{hub.public_ip}]" if hub.public_ip.version == 6 else str(hub.public_ip)
    return render(
        "wg-client.conf.j2",
        client_name=client.name,
        private_key=private_key,
        address=client.wg_cidr,
        dns=str(hub.wg_ip),
        hub=hub.name,
        hub_public_key=hub_public_key,
        endpoint=f"{endpoint}:{net.port}",
        # the hub, and the backends of the tunnel-only services granted to this client
        allowed_ips=", ".join(_client_allowed_ips(net, client)),
        keepalive=net.keepalive or 25,
    )


def _client_allowed_ips(net: Network, client: Client) -> list[str]:
    reached = [f.dst.wg_cidr for f in plan.flows(net) if f.client and f.src_name == client.name]
    return list(dict.fromkeys([net.hub.wg_cidr, *reached]))


def qr_text(text: str) -> str:
    """``text`` as a QR code drawn with block characters, for a terminal (a phone's WireGuard
    app scans it). Built in memory only."""
    import segno

    # the comments are for a person reading the text; the app needs none of them, and each
    # line left out makes the code smaller and easier to scan off a terminal
    text = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))
    out = io.StringIO()
    segno.make(text, error="L", micro=False).terminal(out=out, compact=True)
    return out.getvalue()


def resolver_conf(net: Network) -> str:
    """dnsmasq's config on the hub: bound to the hub's WireGuard address only (never 53 on the
    public address, never beside systemd-resolved's 127.0.0.53), the services' domains
    answered with that address, everything else forwarded to the hub's own resolvers."""
    domains = [d for s in net.services for d in s.domains]
    return render("dns.conf.j2", address=str(net.hub.wg_ip), domains=domains)


def resolver_unit(net: Network) -> str:
    return render("backhaul-dns.service.j2", conf=RESOLVER_CONF, interface=net.interface)


def expiry(net: Network, on: datetime.date) -> list[tuple[str, str, str]]:
    """(client, "warn" | "fail", why) for each client close to or past its expires: date."""
    out = []
    for c in net.clients:
        if c.expires is None:
            continue
        left = (c.expires - on).days
        if left <= 0:
            out.append(
                (
                    c.name,
                    "fail",
                    f"expired on {c.expires}: the hub has no peer for it "
                    f"after a deploy; inv remove-client {c.name} (or move its expires:)",
                )
            )
        elif left <= net.client_warn_days:
            out.append(
                (c.name, "warn", f"expires on {c.expires} (in {left} days): renew its expires: or remove it")
            )
    return out


def stale(net: Network, hub_key: str | None) -> list[Client]:
    """The clients whose config names another hub key than ``hub_key`` (the hub's, now; None:
    a key no config has seen yet, a new hub's): the hub's key was rotated or the hub replaced
    since, and those devices cannot handshake. A client with no recorded key (added before
    backhaul kept it) counts: nothing says it is current. Expired clients are left out: they
    are not meant to connect."""
    active = set(plan.active_clients(net, today()))
    return [c for c in net.clients if c in active and (hub_key is None or c.hub_key != hub_key)]


def stale_why(c: Client) -> str:
    """What is wrong with a stale client's config, and the command that fixes it."""
    what = (
        "names the hub's old key"
        if c.hub_key
        else "may name an old hub key (which one was not recorded: it predates hub_key)"
    )
    return f"its config {what}: run inv client-config {c.name} and load the new config on that device"


def stale_advice(net: Network, hub_key: str | None) -> list[str]:
    """The closing lines of rotate-keys and replace-hub: one per client to give a new config."""
    return [
        f"backhaul: client {c.name}'s config {stale_why(c).removeprefix('its config ')}"
        for c in stale(net, hub_key)
    ]


def expired(net: Network, on: datetime.date) -> list[Client]:
    active = plan.active_clients(net, on)
    return [c for c in net.clients if c not in active]
