"""The keys each section of the network file may have, and the examples messages quote."""

from __future__ import annotations

SECTIONS = {"network": "subnet", "proxy": "public_ip"}


EXAMPLES = {
    "subnet": "10.50.0.0/24",
    "public_ip": "203.0.113.21",
    "name": "backend-1",
    "backend": "backend-1",
    "port": "8080",
    # a hub of proxies: names its tunnel address (a free one of network.subnet)
    "wg_ip": "10.50.0.3",
    # a client's: `wg pubkey` of the key pair made on the device (or `inv add-client`)
    "public_key": "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=",
}


TOP_KEYS = ("network", "ssh", "proxy", "proxies", "backends", "services", "tls", "clients")


NETWORK_KEYS = (
    "subnet",
    "port",
    "interface",
    "keepalive",
    "backend_to_backend",
    "preshared_keys",
    "key_max_age_days",
    "client_warn_days",
    "paths",
    "domain",
)


SSH_KEYS = ("user", "port", "key", "known_hosts", "via", "allow_from")


HOST_KEYS = ("name", "public_ip", "public_ip6", "wg_ip", "ssh_host", "ssh_via")


SERVICE_KEYS = (
    "name",
    "backend",
    "port",
    "domains",
    "websocket",
    "allow",
    "hsts",
    "compose",
    "unit",
)


CLIENT_KEYS = ("name", "public_key", "wg_ip", "expires", "hub_key")


TLS_KEYS = ("mode", "acme_server", "email", "acme_ca_bundle", "verify_ca_bundle", "cert", "key")


def example(key: str) -> str:
    if key in SECTIONS:
        return f"a `{key}:` section with at least `{SECTIONS[key]}:` (see network.example.yml)"
    return f"e.g. `{key}: {EXAMPLES[key]}`"
