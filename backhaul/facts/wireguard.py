"""WireGuard facts: one command each, and no private key ever leaves the host.

The private key (``/etc/wireguard/<if>.key``), the preshared keys (``/etc/wireguard/psk/``)
and any ``PrivateKey``/``PresharedKey`` line are filtered out ON THE HOST (by ``wg pubkey``,
``tail``/``cut``, ``sha256sum`` or ``awk``) before anything is printed, so the controller never
receives secret material, not even in fact debug output.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from pyinfra.api import FactBase

from backhaul.wgconf import AWK_CONF_KEY, AWK_INTERFACE, AWK_PEERS, AWK_PSK_PEERS, AWK_SOURCE

WG_DIR = "/etc/wireguard"
PSK_DIR = f"{WG_DIR}/psk"  # one preshared key per hub<->backend pair, <name>.psk (see psk_path)

# A WireGuard key in base64: 32 bytes are 43 characters and one "=", the last character
# carrying 4 bits (so only 16 letters can come before the "="). What `wg genpsk` prints.
KEY_RE = "[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]="
_PSK_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")

# Linux interface names: at most 15 bytes, no "/" or whitespace. We are stricter on purpose
# because the name also ends up in file names and systemd unit names.
_IFNAME = re.compile(r"^[a-zA-Z0-9_.=+-]{1,15}$")


def check_interface(interface: str) -> str:
    """Return ``interface`` if it is a safe interface name, else raise ValueError."""
    if not isinstance(interface, str) or not _IFNAME.match(interface):
        raise ValueError(
            f"invalid WireGuard interface name {interface!r}: use 1-15 of [a-zA-Z0-9_.=+-], e.g. wg0"
        )
    return interface


def wg_paths(interface: str) -> dict[str, str]:
    """Where backhaul keeps one interface's files on a host (see docs/DESIGN.md)."""
    check_interface(interface)
    base = f"{WG_DIR}/{interface}"
    return {
        "key": f"{base}.key",
        "pub": f"{base}.pub",
        "created": f"{base}.key.created",
        "conf": f"{base}.conf",
    }


def psk_path(name: str) -> str:
    """Where a preshared key lives: on the hub ``<backend>.psk``, on a backend ``hub.psk``."""
    if not isinstance(name, str) or not _PSK_NAME.match(name):
        raise ValueError(f"invalid preshared key name {name!r}: use a host name, e.g. backend-1")
    return f"{PSK_DIR}/{name}.psk"


# Public keys of the LIVE peers that have a preshared key (the key column is never printed).
_AWK_LIVE_PSK = '$2 != "(none)" { printf "%s ", $1 }'


def _interface_settings_from_lines(lines: list[str]) -> list[list[str]]:
    settings = []
    for line in lines:
        key, _, value = line.partition("=")
        settings.append([key, value])
    return settings


def addresses_from_settings(settings: list[list[str]]) -> list[str]:
    """All ``Address`` values of an [Interface] section, in order (comma lists split)."""
    out: list[str] = []
    for key, value in settings:
        if key == "address":
            out.extend(a.strip() for a in value.split(",") if a.strip())
    return out


class WireguardState(FactBase[dict[str, Any] | None]):
    """
    Returns the state of one WireGuard interface, gathered in a single command.

    + interface: the WireGuard interface, default ``wg0``

    ``config_sha256`` is the sha256 of ``/etc/wireguard/<if>.conf`` with its ``PrivateKey``
    line removed and its embedded preshared keys turned back into ``PresharedKeyFile`` lines,
    i.e. of exactly what ``wireguard.config`` uploaded (that operation embeds the keys on the
    host, see its docstring); an embedded preshared key that no longer matches its file
    changes the hash. ``config_interface`` lists the [Interface]
    settings (keys lowercased, ``PrivateKey`` never included): the operation compares it to
    decide between a live peer update (peers only) and ``systemctl restart``.

    ``kernel_module``: ``loaded`` (``/sys/module/wireguard``), ``available`` (``modprobe -n``
    or ``modinfo`` finds it) or ``missing``; ``implementation`` is then ``kernel`` or
    ``userspace`` (wg-quick falls back to ``wireguard-go``, which must be installed).

    .. code:: python

        {
            "key_exists": True,
            "public_key": "hKp0...=",          # derived on the host with `wg pubkey`
            "public_key_file": "hKp0...=",     # content of /etc/wireguard/wg0.pub
            "key_created": 1718000000,         # epoch, or None
            "kernel_module": "missing",
            "implementation": "userspace",
            "tools": {"wg": "/usr/bin/wg", "wg-quick": "/usr/bin/wg-quick",
                      "wireguard-go": "/usr/bin/wireguard-go"},
            "config_exists": True,
            "config_sha256": "3b1f...",
            "config_interface": [["address", "10.50.0.1/24"], ["listenport", "51820"]],
            "addresses": ["10.50.0.1/24"],
            "listen_port": 51820,
            "link_exists": True,
            "link_up": True,
            "link_kind": "tun",                # "wireguard" (kernel), "tun" (wireguard-go)
            "service_state": "active",         # its ActiveState
            "service_active": True,
            "service_enabled_state": "enabled",  # its UnitFileState
            "service_enabled": True,
            "psk_peers": ["Pk2...="],          # live peers that have a preshared key
            "psk_dir": True,                   # /etc/wireguard/psk exists
            "config_public_key": "hKp0...=",   # of the conf's PrivateKey (None: none or bad)
            "live_public_key": "hKp0...=",     # `wg show <if> public-key` (None: no interface)
            "live_peers": {"Pk2...=": ["10.50.0.2/32"]},  # None when there is no interface
        }

    The three public keys (key file, conf, live interface) are what tells a host whose
    rotation was cut short: each is derived on the host, the private keys never leave it.
    """

    def command(self, interface: str = "wg0") -> str:
        p = {k: shlex.quote(v) for k, v in wg_paths(interface).items()}
        q_if = shlex.quote(interface)
        unit = shlex.quote(f"wg-quick@{interface}.service")
        # Never `cat` the key: only `wg pubkey` reads it, and only the public key is printed.
        return "; ".join(
            [
                f"if [ -f {p['key']} ]; then echo key_exists=yes; "
                f'echo "public_key=$(wg pubkey < {p["key"]} 2>/dev/null)"; '
                "else echo key_exists=no; fi",
                f'echo "public_key_file=$(head -n1 {p["pub"]} 2>/dev/null)"',
                f'echo "key_created=$(head -n1 {p["created"]} 2>/dev/null)"',
                "if [ -d /sys/module/wireguard ]; then echo kernel_module=loaded; "
                "elif modprobe -n wireguard >/dev/null 2>&1 || modinfo wireguard >/dev/null 2>&1;"
                " then echo kernel_module=available; else echo kernel_module=missing; fi",
                'for t in wg wg-quick wireguard-go; do echo "tool=$t=$(command -v $t)"; done',
                f"if [ -f {p['conf']} ]; then echo config_exists=yes; "
                f'echo "config_sha256=$(awk {shlex.quote(AWK_SOURCE)} {p["conf"]} '
                "| sha256sum | cut -d' ' -f1)\"; "
                f"awk {shlex.quote(AWK_INTERFACE)} {p['conf']}; "
                "else echo config_exists=no; fi",
                f'echo "link=$(ip -d -o link show dev {q_if} 2>/dev/null)"',
                # one systemctl for both (this fact is in every deploy's read of every host)
                f"systemctl show -p ActiveState -p UnitFileState {unit} 2>/dev/null",
                # peers sorted: wireguard-go lists them in no fixed order, and an unchanged
                # host must read the same every time (backhaul/unchanged.py)
                f'echo "psk_peers=$(wg show {q_if} preshared-keys 2>/dev/null | sort '
                f'| awk {shlex.quote(_AWK_LIVE_PSK)})"',
                f"if [ -d {shlex.quote(PSK_DIR)} ]; then echo psk_dir=yes; fi",
                f'if [ -f {p["conf"]} ]; then echo "config_public_key=$(awk '
                f'{shlex.quote(AWK_CONF_KEY)} {p["conf"]} | wg pubkey 2>/dev/null)"; fi',
                f'echo "live_public_key=$(wg show {q_if} public-key 2>/dev/null)"',
                f"wg show {q_if} allowed-ips 2>/dev/null | sort | sed 's/^/live_peer=/'",
            ]
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        raw: dict[str, str] = {}
        tools: dict[str, str | None] = {}
        iface_lines: list[str] = []
        live_peers: dict[str, list[str]] = {}
        for line in output:
            key, _, value = line.partition("=")
            if key == "live_peer":
                public_key, *ips = value.split()
                live_peers[public_key] = sorted(ip for ip in ips if ip != "(none)")
            elif key == "tool":
                name, _, path = value.partition("=")
                tools[name] = path.strip() or None
            elif key == "iface":
                iface_lines.append(value)
            else:
                raw[key] = value.strip()

        settings = _interface_settings_from_lines(iface_lines)
        listen_port = None
        for key, value in settings:
            if key == "listenport" and value.isdigit():
                listen_port = int(value)

        created = raw.get("key_created", "")
        module = raw.get("kernel_module") or "missing"
        link = raw.get("link", "")
        flags_match = re.search(r"<([^>]*)>", link)
        flags = flags_match.group(1).split(",") if flags_match else []
        link_kind = None
        if link:
            if re.search(r"\bwireguard\b", link):
                link_kind = "wireguard"
            elif re.search(r"\btun\b", link):
                link_kind = "tun"
        service_state = raw.get("ActiveState") or None
        enabled_state = raw.get("UnitFileState") or None

        return {
            "key_exists": raw.get("key_exists") == "yes",
            "public_key": raw.get("public_key") or None,
            "public_key_file": raw.get("public_key_file") or None,
            "key_created": int(created) if created.isdigit() else None,
            "kernel_module": module,
            "implementation": "kernel" if module in ("loaded", "available") else "userspace",
            "tools": {name: tools.get(name) for name in ("wg", "wg-quick", "wireguard-go")},
            "config_exists": raw.get("config_exists") == "yes",
            "config_sha256": raw.get("config_sha256") or None,
            "config_interface": settings,
            "addresses": addresses_from_settings(settings),
            "listen_port": listen_port,
            "link_exists": bool(link),
            "link_up": "UP" in flags,
            "link_kind": link_kind,
            "service_state": service_state,
            "service_active": service_state == "active",
            "service_enabled_state": enabled_state,
            "service_enabled": enabled_state in ("enabled", "enabled-runtime", "static"),
            "psk_peers": raw.get("psk_peers", "").split(),
            "psk_dir": raw.get("psk_dir") == "yes",
            "config_public_key": raw.get("config_public_key") or None,
            "live_public_key": _key_or_none(raw.get("live_public_key")),
            "live_peers": live_peers if raw.get("live_public_key") else None,
        }


def _key_or_none(value: str | None) -> str | None:
    return value if value and value != "(none)" else None


class WireguardPeers(FactBase[dict[str, dict[str, Any]]]):
    """
    Returns the live peers of a WireGuard interface (``wg show <if> dump``), by public key.

    + interface: the WireGuard interface, default ``wg0``

    The dump's first line (the interface, with its PRIVATE key) and the preshared-key column
    are cut off on the host. An absent interface gives ``{}``.

    .. code:: python

        {
            "Pk2...=": {
                "endpoint": "198.51.100.11:51820",   # None when unknown
                "allowed_ips": ["10.50.0.2/32"],
                "latest_handshake": 1718000000,       # epoch, 0 = never
                "rx": 1234,
                "tx": 5678,
                "keepalive": 25,                      # None when off
            },
        }
    """

    default = dict

    def requires_command(self, interface: str = "wg0") -> str:
        return "wg"

    def command(self, interface: str = "wg0") -> str:
        q_if = shlex.quote(check_interface(interface))
        # tail drops the interface line (private key); cut drops column 2 (preshared key).
        return f"wg show {q_if} dump 2>/dev/null | tail -n +2 | cut -f1,3-"

    def process(self, output: list[str]) -> dict[str, dict[str, Any]]:
        peers: dict[str, dict[str, Any]] = {}
        for line in output:
            fields = line.split("\t")
            if len(fields) != 7:
                continue
            public_key, endpoint, allowed, handshake, rx, tx, keepalive = fields
            peers[public_key] = {
                "endpoint": None if endpoint == "(none)" else endpoint,
                "allowed_ips": [] if allowed == "(none)" else allowed.split(","),
                "latest_handshake": int(handshake) if handshake.isdigit() else 0,
                "rx": int(rx) if rx.isdigit() else 0,
                "tx": int(tx) if tx.isdigit() else 0,
                "keepalive": int(keepalive) if keepalive.isdigit() else None,
            }
        return peers


class WireguardConfigPeers(FactBase[dict[str, str]]):
    """
    Returns the [Peer] sections of ``/etc/wireguard/<if>.conf`` as ``{allowed_ip: public_key}``.

    + interface: the WireGuard interface, default ``wg0``

    Read with awk on the host so only ``PublicKey`` and ``AllowedIPs`` leave it. Lets a deploy
    that cannot reach a backend keep that backend's peer instead of dropping it. An absent file
    gives ``{}``.

    .. code:: python

        {"10.50.0.2/32": "Pk2...=", "10.50.0.3/32": "Pk3...="}
    """

    default = dict

    def command(self, interface: str = "wg0") -> str:
        conf = shlex.quote(wg_paths(interface)["conf"])
        return f"if [ -f {conf} ]; then awk {shlex.quote(AWK_PEERS)} {conf}; fi"

    def process(self, output: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in output:
            public_key, _, ips = line.partition("\t")
            for ip in ips.split(","):
                if ip:
                    out[ip] = public_key
        return out


class WireguardPresharedKeys(FactBase[dict[str, Any]]):
    """
    Returns the preshared key files of a host and the [Peer]s of its conf that use one.

    + interface: the WireGuard interface whose conf is read, default ``wg0``

    Of each ``/etc/wireguard/psk/<name>.psk`` only the sha256 of its first line (with its
    newline) leaves the host, and whether that line is a WireGuard key: two hosts compare
    their copies of a pair's key without ever showing it. ``in_conf`` maps each allowed IP of
    a conf [Peer] that sets a ``PresharedKey`` to the file it was embedded from
    (``(inline)`` when the conf does not say).

    .. code:: python

        {
            "dir": True,                       # /etc/wireguard/psk exists
            "files": {"backend-1": {"sha256": "9f86...", "valid": True}},
            "in_conf": {"10.50.0.2/32": "/etc/wireguard/psk/backend-1.psk"},
        }
    """

    def default(self) -> dict[str, Any]:
        return {"dir": False, "files": {}, "in_conf": {}}

    def command(self, interface: str = "wg0") -> str:
        conf = shlex.quote(wg_paths(interface)["conf"])
        d = shlex.quote(PSK_DIR)
        return (
            f"if [ -d {d} ]; then echo dir=yes; for f in {d}/*.psk; do "
            '[ -f "$f" ] || continue; n=${f##*/}; '
            'echo "file=${n%.psk}=$(head -n1 "$f" | sha256sum | cut -d\' \' -f1)='
            f'$(head -n1 "$f" | grep -c -x -E {shlex.quote(KEY_RE)})"; '
            "done; else echo dir=no; fi; "
            f"if [ -f {conf} ]; then awk {shlex.quote(AWK_PSK_PEERS)} {conf}; fi"
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        out = self.default()
        for line in output:
            key, _, value = line.partition("=")
            if key == "dir":
                out["dir"] = value.strip() == "yes"
            elif key == "file":
                name, sha, valid = (value.rsplit("=", 2) + ["", ""])[:3]
                out["files"][name] = {"sha256": sha or None, "valid": valid.strip() == "1"}
            elif key == "conf":
                ips, _, path = value.partition("\t")
                for ip in ips.split(","):
                    if ip:
                        out["in_conf"][ip] = path
        return out
