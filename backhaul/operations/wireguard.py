"""
Manage WireGuard keys and wg-quick interfaces without the private key ever leaving the host.

The operations live here; how a conf is read and checked, and the awk programs that read it on
the host, in ``backhaul/wgconf.py``; the shell commands that handle keys (also for the two-step
rotation of ``backhaul/rotation.py``) in ``backhaul/wgcommands.py``.

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

Preshared keys (``network.preshared_keys``) follow the same rule
-------------------------------------------------------------------
A pair's preshared key is made on the hub (``preshared_keys``), copied to the backend through
the controller's MEMORY only (``preshared_key_copy``: read over SSH, fed on stdin to the
command that writes it; never a file, an argument or a printed line on the controller), and
embedded by the same awk program: the uploaded conf says ``PresharedKeyFile = <file>`` (not a
wg-quick key), the real conf gets ``# PresharedKeyFile = <file>`` and
``PresharedKey = <content>`` (which ``wg-quick strip``/``wg syncconf`` use as any conf's).

Why the trace rather than a secret-free copy of the upload kept beside the conf: the real conf
stays the one file that says what runs. The fact maps each trace + key pair back to the
uploaded line (checking ON THE HOST that the key still equals its file), so a local edit or a
stale key changes the hash like before, and the program can re-embed its own output in place
(``conf -> conf``, what a key rotation does) without a second file to keep in step.

``wg syncconf`` of wireguard-tools 1.0.20210914 (Debian 12) never REMOVES a peer's preshared
key (a [Peer] without ``PresharedKey`` leaves the live one as it is, seen in the lab; later
releases clear it), so ``config`` clears, with ``wg set ... preshared-key /dev/null``, the live
keys that the new conf no longer gives. ``config`` itself applies peer changes with ``wg set``,
not ``wg syncconf`` (see ``wgcommands.sync_peers_command`` for why); an operator's ``systemctl
reload`` still gives the same live state.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any

from pyinfra import host
from pyinfra.api import (
    OperationError,
    StringCommand,
    operation,
)

from backhaul.facts import snapshot
from backhaul.facts.wireguard import (
    PSK_DIR,
    WireguardPresharedKeys,
    WireguardState,
    check_interface,
    psk_path,
    wg_paths,
)
from backhaul.operations import hostfile
from backhaul.wgcommands import embed_key_command, psk_dir_command, sync_peers_command, write_psk_command
from backhaul.wgconf import (
    check_content,
    content_allowed_ips,
    content_peer_list,
    content_peers,
    interface_settings,
)


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
    st: dict[str, Any] = snapshot.get(WireguardState, interface=interface) or {}

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
    made = (
        f"umask 077 && mkdir -p /etc/wireguard && wg genkey > {key}.tmp"
        f" && wg pubkey < {key}.tmp > {pub}.tmp && date +%s > {created}.tmp"
    )
    switch = ""
    if st.get("config_exists"):
        # Rotation, or a key file lost while its conf stayed: the conf embeds the key (see the
        # module docstring), so rewrite it in place and switch a running interface to the new
        # key, both BEFORE the new key becomes the key file: cut short, the key file still
        # names the key a deploy puts back everywhere (``config`` compares the public keys).
        switch = " && " + embed_key_command(paths["conf"], paths["key"] + ".tmp", paths["conf"])
        if st.get("link_exists"):
            switch += f" && wg set {shlex.quote(interface)} private-key {key}.tmp"
    yield (
        made + switch + f" && mv -f {key}.tmp {key} && mv -f {pub}.tmp {pub} && mv -f {created}.tmp {created}"
    )


@operation()
def config(interface: str, content: str | Callable[[], str]):
    """
    Write ``/etc/wireguard/<if>.conf`` and apply it with the least disruption.

    + interface: the WireGuard interface (``wg-quick@<interface>``)
    + content: the wg-quick conf WITHOUT ``PrivateKey``; the key is inserted on the host from
      ``/etc/wireguard/<interface>.key`` (make it with ``wireguard.keypair`` first). A [Peer]
      may say ``PresharedKeyFile = <file on the host>``: it becomes ``PresharedKey = <the
      file's key>`` on the host (the content never holds a ``PresharedKey``). A callable
      returning the conf is called when the operation runs, not when the deploy is prepared

    Writes only when the content differs (sha256 of the conf minus its ``PrivateKey`` line,
    embedded preshared keys mapped back to their files), atomically (temp file + ``mv``,
    0600), then:

    - service not running: ``systemctl start`` (``enable --now`` when not enabled); an
      interface brought up outside systemd is deleted first, else the start would fail;
    - running but the interface is gone or down: ``systemctl restart``;
    - [Interface] settings changed (Address, ListenPort, MTU, hooks...): ``restart``;
    - only [Peer] sections changed, or the live interface has another key or other peers than
      the conf: one ``wg set`` makes the live peers the conf's (``sync_peers_command``: what
      ``systemctl reload``, i.e. ``wg syncconf``, would do, without touching the allowed IPs
      of a peer that keeps them, so no other tunnel loses a packet);
    - a live peer has a preshared key the conf does not give it (``wg syncconf`` leaves those):
      ``wg set <if> peer <key> preshared-key /dev/null``;
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
    content = check_content(content)
    paths = wg_paths(interface)
    st: dict[str, Any] = snapshot.get(WireguardState, interface=interface) or {}

    want_sha = hostfile.sha256(content)
    existed = bool(st.get("config_exists"))
    key = st.get("public_key")  # of the key file: the one key this host should run with
    # A rotation cut short (or a hand edit) can leave the conf with another key than the key
    # file: the hash ignores the PrivateKey line, so compare the public keys as well.
    stale_key = existed and bool(key) and st.get("config_public_key") != key
    changed = not existed or st.get("config_sha256") != want_sha or stale_key
    interface_changed = not existed or st.get("config_interface") != interface_settings(content)
    live_drift = _live_drift(st, key, content)

    if changed:
        yield from _write_conf(st, interface, content)

    unit = shlex.quote(f"wg-quick@{interface}.service")
    if not st.get("service_active"):
        yield from _start(st, interface)
        return

    if not st.get("service_enabled"):
        yield f"systemctl enable {unit}"
    if not st.get("link_up") or (changed and interface_changed):
        yield f"systemctl restart {unit}"  # a fresh interface: only what the conf says
        return
    live_psk = set(st.get("psk_peers") or [])
    if changed or live_drift:
        # the live key and peers become the conf's; no other tunnel loses a packet
        switch_key = paths["key"] if key and st.get("live_public_key") != key else None
        sync = sync_peers_command(
            interface, content_peer_list(content), st.get("live_peers"), live_psk, switch_key
        )
        if sync:
            yield sync
        return
    clear = _clear_psks(interface, content, live_psk)
    if clear:
        yield clear
    elif st.get("service_enabled"):
        host.noop(f"{paths['conf']} is up to date and wg-quick@{interface} is running")


def _write_conf(st: dict[str, Any], interface: str, content: str):
    """Upload the conf without its key; the host inserts the key from its key file."""
    paths = wg_paths(interface)
    upload = f"/etc/wireguard/.{interface}.conf.upload"
    if not st.get("key_exists") and not st.get("config_exists"):
        yield "umask 077 && mkdir -p /etc/wireguard"
    yield hostfile.upload(content, upload)
    yield embed_key_command(upload, paths["key"], paths["conf"]) + (f" && rm -f {shlex.quote(upload)}")


def _start(st: dict[str, Any], interface: str):
    """Start a tunnel whose service is not running (an interface brought up outside systemd
    goes first: wg-quick would refuse to start over it)."""
    unit = shlex.quote(f"wg-quick@{interface}.service")
    if st.get("link_exists"):
        yield f"ip link delete dev {shlex.quote(interface)}"
    if st.get("service_enabled"):
        yield f"systemctl start {unit}"
    else:
        yield f"systemctl enable --now {unit}"


def _clear_psks(interface: str, content: str, live_psk: set[str]) -> str | None:
    """The ``wg set`` that drops the preshared keys live peers have and the conf does not give
    them (``wg syncconf`` would leave them); None when there are none."""
    clear = [pk for pk, has_psk in content_peers(content) if not has_psk and pk in live_psk]
    if not clear:
        return None
    return f"wg set {shlex.quote(interface)} " + " ".join(
        f"peer {shlex.quote(pk)} preshared-key /dev/null" for pk in clear
    )


def _live_drift(st: dict[str, Any], key: str | None, content: str) -> bool:
    """Whether the running interface differs from the conf: another private key than the key
    file's, or other peers (public keys and allowed IPs) than the content gives. ``wg
    syncconf`` would put it right, but a deploy whose conf is unchanged would never run it:
    a rotation cut between its live steps left exactly that, a dead tunnel that "no changes"."""
    live_peers = st.get("live_peers")
    if not st.get("link_up") or live_peers is None:
        return False  # no interface (a restart/start follows) or not known
    if key and st.get("live_public_key") != key:
        return True
    return live_peers != content_allowed_ips(content)


# --- preshared keys: one per hub<->backend pair, made on the hub --------------------------------


class _StdinFrom:
    """A command's stdin that is produced only when the command runs.

    pyinfra writes ``_stdin`` by calling ``readlines()`` right before it closes the channel,
    so a key read from another host exists in the controller's memory for that moment only,
    and a dry run (``inv plan``), which never executes, never reads it."""

    def __init__(self, produce: Callable[[], str]):
        self._produce = produce

    def readlines(self) -> list[str]:
        text = (self._produce() or "").strip()
        return [text + "\n"] if text else []


@operation()
def preshared_keys(names: list[str], interface: str = "wg0"):
    """
    Make sure the host has one preshared key per name, generated on the host (``wg genpsk``).

    + names: one ``/etc/wireguard/psk/<name>.psk`` each (on the hub: one per backend)
    + interface: the WireGuard interface (whose conf the fact also reads)

    Missing files, and files whose first line is not a WireGuard key, are (re)made; good ones
    are kept. The directory is 0700 and the keys 0600 from their first byte (umask 077); a key
    is never printed. Copy each key to its other host with ``preshared_key_copy``.

    **Example:**

    .. code:: python

        wireguard.preshared_keys(name="Preshared keys", names=["backend-1", "backend-2"])
    """

    paths = {n: psk_path(n) for n in names}
    st = snapshot.get(WireguardPresharedKeys, interface=interface) or {}
    files = st.get("files") or {}
    todo = [n for n in names if not (files.get(n) or {}).get("valid")]
    if not todo:
        host.noop(f"preshared keys in {PSK_DIR}: " + (", ".join(names) or "none wanted"))
        return
    made = [
        f"wg genpsk > {shlex.quote(paths[n])}.tmp && mv -f {shlex.quote(paths[n])}.tmp "
        f"{shlex.quote(paths[n])}"
        for n in todo
    ]
    yield " && ".join([psk_dir_command(), *made])


@operation()
def preshared_key_copy(
    psk_name: str,
    sha256: str | None | Callable[[], str | None],
    content: str | Callable[[], str],
    interface: str = "wg0",
):
    """
    Make ``/etc/wireguard/psk/<psk_name>.psk`` the same key as another host's, in memory only.

    + psk_name: the file's name here (a backend keeps its pair's key as ``hub``)
    + sha256: sha256 of the source's key (its first line with the newline, as
      ``WireguardPresharedKeys`` reports it), or a callable returning it when the operation
      runs; ``None``: the source has no key (nothing is done)
    + content: the key, or (what deploys pass) a callable that reads it from the source host;
      it is called only when the copy is needed, at the moment the key is written here, and
      its result goes to the writing command's stdin: never to a file, an argument or a log
    + interface: the WireGuard interface (whose conf the fact also reads)

    Nothing is read or written when this host's copy already has that sha256.

    **Example:**

    .. code:: python

        wireguard.preshared_key_copy(
            name="Preshared key from the hub", psk_name="hub",
            sha256=lambda: hub_sha256(), content=lambda: read_from_hub(),
        )
    """

    path = psk_path(psk_name)
    if callable(sha256):
        sha256 = sha256()  # at execution: the source's key may have been made moments ago
    if not sha256:
        host.noop(f"{path}: the source has no preshared key to copy yet")
        return
    st = snapshot.get(WireguardPresharedKeys, interface=interface) or {}
    mine = (st.get("files") or {}).get(psk_name) or {}
    if mine.get("valid") and mine.get("sha256") == sha256:
        host.noop(f"{path} is the same key as its source's (sha256 {sha256[:12]}...)")
        return
    stdin = _StdinFrom(content) if callable(content) else content
    yield StringCommand(write_psk_command(path), _stdin=stdin)


@operation()
def preshared_keys_pruned(keep: list[str], interface: str = "wg0"):
    """
    Remove the preshared key files that are neither wanted nor used by the conf.

    + keep: names of the keys to keep (``/etc/wireguard/psk/<name>.psk``)
    + interface: the WireGuard interface whose conf may still use a key (then it stays)

    Run it after ``config``: a key the new conf still embeds (e.g. for a backend this run did
    not reach) is kept. With nothing kept the directory goes, staged ``.next`` keys included.

    **Example:**

    .. code:: python

        wireguard.preshared_keys_pruned(name="Unused preshared keys", keep=[])
    """

    st = snapshot.get(WireguardPresharedKeys, interface=interface) or {}
    if not st.get("dir"):
        host.noop(f"no {PSK_DIR}")
        return
    used = set((st.get("in_conf") or {}).values())
    files = sorted(st.get("files") or {})
    drop = [n for n in files if n not in keep and f"{PSK_DIR}/{n}.psk" not in used]
    if not keep and not used:
        yield f"rm -rf {shlex.quote(PSK_DIR)}"
        return
    if not drop:
        host.noop(f"every preshared key in {PSK_DIR} is in use")
        return
    yield "rm -f " + " ".join(
        f"{shlex.quote(f'{PSK_DIR}/{n}.psk')} {shlex.quote(f'{PSK_DIR}/{n}.psk.next')}" for n in drop
    )
