"""
Manage WireGuard keys and wg-quick interfaces without the private key ever leaving the host.

Where the private key lives, and why it is embedded in the conf on the host
---------------------------------------------------------------------------
The key is generated on the host into ``/etc/wireguard/<if>.key`` and never read by the
controller. The controller renders the conf WITHOUT a ``PrivateKey`` line; ``config`` uploads
it next to the real conf and an awk program ON THE HOST inserts ``PrivateKey = <key file>``
right after ``[Interface]`` while writing the real conf (0600, temp file + mv).

The tempting alternative, a key-less conf with ``PostUp = wg set %i private-key <key file>``,
is wrong with systemd: ``systemctl reload wg-quick@<if>`` runs
``wg syncconf <if> <(wg-quick strip <if>)`` and ``wg setconf``/``syncconf`` treat a conf
without ``PrivateKey`` as "private key = none" (wireguard-tools' ``config_read_init`` sets
``WGDEVICE_HAS_PRIVATE_KEY`` for every non-append read; newer versions also reset the listen
port). A peers-only reload would wipe the key and kill every tunnel, and PostUp is not run by a
reload. Patching ExecReload with a drop-in would work only for our own reloads, not for an
operator's ``wg syncconf``/``wg-quick`` by hand. With the key embedded on the host, every stock
tool (``wg-quick up/down``, ``systemctl reload/restart``) does the right thing.

So that the controller can still tell whether the conf is current without reading it,
``WireguardState.config_sha256`` hashes the conf with its ``PrivateKey`` line filtered out on
the host: that is byte-for-byte what was uploaded.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Callable
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import FileUploadCommand, OperationError, OperationValueError, operation

from backhaul.facts.wireguard import WireguardState, check_interface, wg_paths

# Rewrites a wg-quick conf (from the file given as argument) with exactly one
# `PrivateKey = <content of keyfile>` line, placed right after the first [Interface] header.
# The key is read by awk itself (getline), so it is never in any command's arguments or
# output. Fails (non-zero, nothing written by the caller's `&& mv`) when the key file is
# missing or empty or when there is no [Interface] section.
_AWK_EMBED_KEY = r"""
BEGIN { if ((getline k < keyfile) <= 0 || k == "") { err = 2; exit } }
{ t = tolower($0) }
t ~ /^[ \t]*privatekey[ \t]*=/ { next }
{ print }
!done { h = t; sub(/#.*/, "", h); gsub(/[ \t]/, "", h);
        if (h == "[interface]") { print "PrivateKey = " k; done = 1 } }
END {
  if (err) { print "backhaul: cannot read the private key " keyfile > "/dev/stderr"; exit err }
  if (!done) { print "backhaul: the config has no [Interface] section" > "/dev/stderr"; exit 3 }
}
"""


def _embed_key_command(src: str, key: str, conf: str) -> str:
    """Shell command writing ``conf`` (0600, atomically) from ``src`` + the key file."""
    tmp = f"{conf}.tmp"
    return (
        f"umask 077 && awk -v keyfile={shlex.quote(key)} {shlex.quote(_AWK_EMBED_KEY)} "
        f"{shlex.quote(src)} > {shlex.quote(tmp)} && mv -f {shlex.quote(tmp)} {shlex.quote(conf)}"
    )


def interface_settings(content: str) -> list[list[str]]:
    """The [Interface] settings of a wg-quick conf, normalized like ``WireguardState`` does.

    Keys are lowercased and stripped of blanks, values stripped, ``#`` comments removed and
    ``PrivateKey`` skipped: the same rules as the fact's awk, so the two compare equal.
    """
    settings: list[list[str]] = []
    section = ""
    for line in content.splitlines():
        if line.lstrip(" \t").startswith("["):
            section = "".join(line.split("#", 1)[0].lower().split())
            continue
        if section != "[interface]":
            continue
        text = line.split("#", 1)[0]
        if "=" not in text:
            continue
        key, value = text.split("=", 1)
        key = "".join(key.lower().split())
        if key == "privatekey":
            continue
        settings.append([key, value.strip(" \t")])
    return settings


def _check_content(content: str) -> str:
    lines = content.splitlines()
    for number, line in enumerate(lines, 1):
        key = line.split("#", 1)[0].split("=", 1)[0]
        if "=" in line and "".join(key.lower().split()) == "privatekey":
            raise OperationValueError(
                f"wireguard.config: line {number} of the content sets PrivateKey; the private "
                "key must stay on the host: remove the line, the operation inserts it from "
                "/etc/wireguard/<interface>.key on the host"
            )
    if not any("".join(ln.split("#", 1)[0].lower().split()) == "[interface]" for ln in lines):
        raise OperationValueError("wireguard.config: the content has no [Interface] section")
    return content if content.endswith("\n") else content + "\n"


@operation()
def keypair(interface: str = "wg0", rotate: bool = False):
    """
    Make sure the host has a WireGuard key pair, generated on the host.

    + interface: the WireGuard interface the keys are for
    + rotate: make a new key pair even if one exists (the new key is written to a temp file
      and swapped in with ``mv``; a conf made by ``wireguard.config`` gets the new key and a
      running interface is switched to it with ``wg set``). Always changes: gate it, e.g. on
      ``WireguardState.key_created``. The peers need the new public key afterwards.

    Files: ``/etc/wireguard/<if>.key`` (0600, never read by the controller),
    ``<if>.pub`` and ``<if>.key.created`` (epoch seconds). A missing ``.pub`` or
    ``.key.created`` next to an existing key is repaired (from the key and its mtime).

    **Example:**

    .. code:: python

        from backhaul.operations import wireguard
        wireguard.keypair(name="WireGuard key pair", interface="wg0")
    """

    paths = wg_paths(interface)
    key, pub, created = (shlex.quote(paths[k]) for k in ("key", "pub", "created"))
    st: dict[str, Any] = host.get_fact(WireguardState, interface=interface) or {}

    if st.get("key_exists") and not rotate:
        public_key = st.get("public_key")
        if public_key is None:
            if (st.get("tools") or {}).get("wg"):
                raise OperationError(
                    f"{paths['key']} exists but `wg pubkey` cannot read it (not a WireGuard "
                    "private key?): inspect it on the host, or replace it with "
                    "wireguard.keypair(rotate=True)"
                )
            host.noop(f"WireGuard key {paths['key']} exists (public key unknown: no wg yet)")
            return
        repaired = False
        if st.get("public_key_file") != public_key:
            yield f"wg pubkey < {key} > {pub}.tmp && mv -f {pub}.tmp {pub}"
            repaired = True
        if st.get("key_created") is None:
            yield f"date -r {key} +%s > {created}"
            repaired = True
        if not repaired:
            host.noop(f"WireGuard key {paths['key']} exists (public key {public_key})")
        return

    # umask 077 before anything is created: the key file is 0600 from its first byte.
    yield (
        f"umask 077 && mkdir -p /etc/wireguard && wg genkey > {key}.tmp"
        f" && wg pubkey < {key}.tmp > {pub}.tmp && date +%s > {created}.tmp"
        f" && mv -f {key}.tmp {key} && mv -f {pub}.tmp {pub} && mv -f {created}.tmp {created}"
    )
    if st.get("key_exists") and st.get("config_exists"):
        # Rotation: the conf embeds the key (see the module docstring), rewrite it in place.
        yield _embed_key_command(paths["conf"], paths["key"], paths["conf"])
        if st.get("link_exists"):
            yield f"wg set {shlex.quote(interface)} private-key {key}"


@operation()
def config(interface: str, content: str | Callable[[], str]):
    """
    Write ``/etc/wireguard/<if>.conf`` and apply it with the least disruption.

    + interface: the WireGuard interface (``wg-quick@<interface>``)
    + content: the wg-quick conf WITHOUT ``PrivateKey``; the key is inserted on the host from
      ``/etc/wireguard/<interface>.key`` (make it with ``wireguard.keypair`` first). A callable
      returning the conf is called when the operation runs, not when the deploy is prepared

    Writes only when the content differs (sha256 of the conf minus its ``PrivateKey`` line),
    atomically (temp file + ``mv``, 0600), then:

    - service not running: ``systemctl start`` (``enable --now`` when not enabled); an
      interface brought up outside systemd is deleted first, else the start would fail;
    - running but the interface is gone or down: ``systemctl restart``;
    - [Interface] settings changed (Address, ListenPort, MTU, hooks...): ``restart``;
    - only [Peer] sections changed: ``systemctl reload`` (``wg syncconf``: tunnels stay up);
    - not enabled: ``systemctl enable``.

    **Example:**

    .. code:: python

        from backhaul.operations import wireguard
        wireguard.config(
            name="Hub WireGuard config",
            interface="wg0",
            content=rendered_wg0_conf,
        )
    """

    check_interface(interface)
    if callable(content):
        # Rendered now, at execution: facts read by the callable (other hosts' public keys)
        # then see what earlier operations made, e.g. keys generated moments ago on bare hosts.
        content = content()
    content = _check_content(content)
    paths = wg_paths(interface)
    st: dict[str, Any] = host.get_fact(WireguardState, interface=interface) or {}

    want_sha = hashlib.sha256(content.encode()).hexdigest()
    existed = bool(st.get("config_exists"))
    changed = not existed or st.get("config_sha256") != want_sha
    interface_changed = not existed or st.get("config_interface") != interface_settings(content)

    if changed:
        upload = f"/etc/wireguard/.{interface}.conf.upload"
        if not st.get("key_exists") and not st.get("config_exists"):
            yield "umask 077 && mkdir -p /etc/wireguard"
        yield FileUploadCommand(
            StringIO(content), upload, remote_temp_filename=host.get_temp_filename(upload)
        )
        yield _embed_key_command(upload, paths["key"], paths["conf"]) + (
            f" && rm -f {shlex.quote(upload)}"
        )

    unit = shlex.quote(f"wg-quick@{interface}.service")
    conf = paths["conf"]
    if not st.get("service_active"):
        if st.get("link_exists"):
            yield f"ip link delete dev {shlex.quote(interface)}"
        if st.get("service_enabled"):
            yield f"systemctl start {unit}"
        else:
            yield f"systemctl enable --now {unit}"
        return

    if not st.get("service_enabled"):
        yield f"systemctl enable {unit}"
    if not st.get("link_up"):
        yield f"systemctl restart {unit}"
    elif changed and interface_changed:
        yield f"systemctl restart {unit}"
    elif changed:
        yield f"systemctl reload {unit}"
    elif st.get("service_enabled"):
        host.noop(f"{conf} is up to date and wg-quick@{interface} is running")


# --- key rotation in two steps, for flows that must keep the tunnel gap short ----------------
# `keypair(rotate=True)` swaps the key in one go; a rotation that must keep the peer's gap short
# stages the new key first (nothing changes for the running tunnel), tells the peer, then
# activates it. The flow (backhaul/rotation.py) runs these on open connections back to back.


def stage_key_command(interface: str) -> str:
    """Make ``<if>.key.next`` and print ONLY its public key (the private key stays on the host)."""
    paths = wg_paths(interface)
    key, pub = shlex.quote(paths["key"] + ".next"), shlex.quote(paths["pub"] + ".next")
    return (
        f"umask 077 && wg genkey > {key}.tmp && mv -f {key}.tmp {key} "
        f"&& wg pubkey < {key} > {pub} && cat {pub}"
    )


def activate_key_command(interface: str) -> str:
    """Swap the staged key in: files, the conf (key embedded on the host), the live interface."""
    paths = wg_paths(interface)
    key, pub, created = (shlex.quote(paths[k]) for k in ("key", "pub", "created"))
    return (
        f"test -s {key}.next && mv -f {key}.next {key} && mv -f {pub}.next {pub} "
        f"&& date +%s > {created} && {_embed_key_command(paths['conf'], paths['key'], paths['conf'])}"
        f" && wg set {shlex.quote(interface)} private-key {key}"
    )


def set_peer_command(interface: str, public_key: str, allowed_ips: list[str],
                     endpoint: str | None = None, keepalive: int = 0,
                     remove: str | None = None) -> str:
    """Change one peer of the live interface (``wg set``); the conf is rewritten by a deploy."""
    q_if = shlex.quote(interface)
    parts = []
    if remove:
        parts.append(f"wg set {q_if} peer {shlex.quote(remove)} remove")
    spec = f"wg set {q_if} peer {shlex.quote(public_key)} allowed-ips {shlex.quote(','.join(allowed_ips))}"
    if endpoint:
        spec += f" endpoint {shlex.quote(endpoint)}"
    if keepalive:
        spec += f" persistent-keepalive {int(keepalive)}"
    parts.append(spec)
    return " && ".join(parts)
