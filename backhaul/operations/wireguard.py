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
keys that the new conf no longer gives.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import shlex
from collections.abc import Callable
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import (
    FileUploadCommand,
    OperationError,
    OperationValueError,
    StringCommand,
    operation,
)

from backhaul.facts import snapshot
from backhaul.facts.wireguard import (
    KEY_RE,
    PSK_DIR,
    WG_DIR,
    WireguardPresharedKeys,
    WireguardState,
    check_interface,
    psk_path,
    wg_paths,
)

# Rewrites a wg-quick conf (from the file given as argument) with exactly one
# `PrivateKey = <content of keyfile>` line, placed right after the first [Interface] header,
# and every `PresharedKeyFile = F` line (or its `# PresharedKeyFile = F` trace from an earlier
# run, so the program can rewrite its own output) turned into that trace followed by
# `PresharedKey = <first line of F>`. The keys are read by awk itself (getline), so they are
# never in any command's arguments or output. Fails (non-zero, nothing written by the caller's
# `&& mv`) when a key file is missing or empty or when there is no [Interface] section.
_AWK_EMBED_KEY = r"""
BEGIN { if ((getline k < keyfile) <= 0 || k == "") { err = 2; exit } }
{ t = tolower($0); l = $0 }
t ~ /^[ \t]*privatekey[ \t]*=/ { next }
t ~ /^[ \t]*presharedkey[ \t]*=/ { next }
t ~ /^# [ \t]*presharedkeyfile[ \t]*=/ { l = substr($0, 3); t = tolower(l) }
t ~ /^[ \t]*presharedkeyfile[ \t]*=/ {
  f = substr(l, index(l, "=") + 1); gsub(/^[ \t]+|[ \t]+$/, "", f)
  p = ""; if (f == "" || (getline p < f) <= 0 || p == "") { perr = 1; bad = f; exit }
  close(f); print "# " l; print "PresharedKey = " p; next
}
{ print }
!done { h = t; sub(/#.*/, "", h); gsub(/[ \t]/, "", h);
        if (h == "[interface]") { print "PrivateKey = " k; done = 1 } }
END {
  if (err) { print "backhaul: cannot read the private key " keyfile > "/dev/stderr"; exit err }
  if (perr) { print "backhaul: cannot read the preshared key " bad > "/dev/stderr"; exit 4 }
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


# What may follow `PresharedKeyFile =`: an absolute path, nothing awk or a shell would mind.
_PSK_FILE_RE = re.compile(r"/[A-Za-z0-9._/-]+")
_PUBLIC_KEY_RE = re.compile(r"[A-Za-z0-9+/]{43}=")
_ENDPOINT_RE = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<v4>[0-9.]+)):(?P<port>[0-9]{1,5})")

# Everything backhaul ever writes in a wg-quick conf, per section. wg-quick runs the conf as
# root: PreUp/PostUp/PreDown/PostDown run commands, SaveConfig writes the live state back,
# Table/FwMark/DNS change the host's routing. None of them is ours, so one in the content can
# only come from a value that smuggled in a line: refused, whatever produced the content.
_WRITTEN = {
    "[interface]": ("Address", "ListenPort"),
    "[peer]": ("PublicKey", "AllowedIPs", "Endpoint", "PersistentKeepalive", "PresharedKeyFile"),
}


def _canonical(kind: Callable[[str], Any], value: str) -> bool:
    """``value`` is a comma list of addresses/networks, each written as Python writes it
    (so no scope ``%...``, no leading zeros, no host bits in a network)."""
    items = [v.strip() for v in value.split(",")]
    try:
        return all(item and str(kind(item)) == item and "%" not in item for item in items)
    except ValueError:
        return False


def _value_ok(key: str, value: str) -> bool:
    if key == "address":
        return _canonical(ipaddress.ip_interface, value)
    if key == "allowedips":
        return _canonical(ipaddress.ip_network, value)
    if key in ("listenport", "persistentkeepalive"):
        return value.isascii() and value.isdigit() and int(value) <= 65535
    if key == "publickey":
        return bool(_PUBLIC_KEY_RE.fullmatch(value))
    if key == "endpoint":
        m = _ENDPOINT_RE.fullmatch(value)
        if not m or not 0 < int(m["port"]) <= 65535:
            return False
        ip = m["v6"] or m["v4"]
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return str(addr) == ip and (addr.version == 6) == bool(m["v6"])
    if key == "presharedkeyfile":
        return bool(_PSK_FILE_RE.fullmatch(value))
    return False


def _check_content(content: str) -> str:
    """The content, if it holds only what backhaul writes; else an OperationValueError that
    names the line. Defense in depth: the model validates every value that reaches a conf,
    and this refuses what a value could still have smuggled in (a hook key, a second
    [Interface], a line that is neither a comment nor a setting backhaul writes)."""
    bad = re.search(r"[\x00-\x08\x0b-\x1f\x7f\x85\u2028\u2029]", content)
    if bad:
        line = content.count("\n", 0, bad.start()) + 1
        raise OperationValueError(
            f"wireguard.config: line {line} of the content holds the control character "
            f"{bad.group()!r}; a conf backhaul writes has none: refused"
        )
    lines = content.split("\n")
    if not any("".join(ln.split("#", 1)[0].lower().split()) == "[interface]" for ln in lines):
        raise OperationValueError("wireguard.config: the content has no [Interface] section")
    section = ""
    interfaces = 0
    for number, line in enumerate(lines, 1):
        if _is_psk_trace(line):
            raise OperationValueError(
                f"wireguard.config: line {number} is a `# PresharedKeyFile` comment, which "
                "the operation writes itself as the trace of an embedded key: remove it"
            )
        text = line.split("#", 1)[0].strip(" \t")
        if not text:
            continue  # blank or a comment (wg-quick drops comments)
        if text.startswith("["):
            section = "".join(text.lower().split())
            if section not in _WRITTEN:
                raise OperationValueError(
                    f"wireguard.config: line {number}: section {text!r} is not one backhaul "
                    "writes (only [Interface], then [Peer]s): refused"
                )
            interfaces += section == "[interface]"
            if section == "[interface]" and interfaces > 1:
                raise OperationValueError(
                    f"wireguard.config: line {number}: a second [Interface]: refused (a conf "
                    "has one, and a value must never open another)"
                )
            if section == "[peer]" and not interfaces:
                raise OperationValueError(
                    f"wireguard.config: line {number}: a [Peer] before the [Interface] section"
                )
            continue
        if "=" not in text:
            raise OperationValueError(
                f"wireguard.config: line {number} is neither a comment, a section nor a "
                f"`Key = value` setting: {text[:60]!r}: refused"
            )
        name, value = (part.strip(" \t") for part in text.split("=", 1))
        key = "".join(name.lower().split())
        if key == "privatekey":
            raise OperationValueError(
                f"wireguard.config: line {number} of the content sets PrivateKey; the private "
                "key must stay on the host: remove the line, the operation inserts it from "
                "/etc/wireguard/<interface>.key on the host"
            )
        if key == "presharedkey":
            raise OperationValueError(
                f"wireguard.config: line {number} of the content sets PresharedKey; a "
                "preshared key must not pass through the controller: write "
                "`PresharedKeyFile = /etc/wireguard/psk/<name>.psk` instead, the operation "
                "embeds the file's key on the host"
            )
        if not section:
            raise OperationValueError(
                f"wireguard.config: line {number}: {name!r} comes before any section"
            )
        allowed = _WRITTEN[section]
        if key not in {a.lower() for a in allowed}:
            raise OperationValueError(
                f"wireguard.config: line {number}: {name!r} in {section.title()} is not a "
                f"setting backhaul writes (there: {', '.join(allowed)}); hooks (PreUp, PostUp, "
                "PreDown, PostDown), SaveConfig and the like run or change things as root: "
                "refused"
            )
        if key == "presharedkeyfile" and not _value_ok(key, value):
            raise OperationValueError(
                f"wireguard.config: line {number}: PresharedKeyFile {value!r} is not an "
                "absolute path of [A-Za-z0-9._/-]; write e.g. /etc/wireguard/psk/hub.psk"
            )
        if not _value_ok(key, value):
            raise OperationValueError(
                f"wireguard.config: line {number}: {name} = {value[:80]!r} is not a value "
                "backhaul writes (canonical addresses, numbers, a WireGuard public key): refused"
            )
    return content if content.endswith("\n") else content + "\n"


def _is_psk_trace(line: str) -> bool:
    """``# PresharedKeyFile = F``: what the embedding leaves above ``PresharedKey = <key>``."""
    return line.startswith("# ") and line[2:].lstrip(" \t").lower().startswith(
        "presharedkeyfile"
    ) and "=" in line


def content_peers(content: str) -> list[tuple[str, bool]]:
    """``(public key, has a PresharedKeyFile)`` for each [Peer] of an uploaded conf."""
    peers: list[list] = []
    section = ""
    for line in content.splitlines():
        if line.lstrip(" \t").startswith("["):
            section = "".join(line.split("#", 1)[0].lower().split())
            if section == "[peer]":
                peers.append(["", False])
            continue
        text = line.split("#", 1)[0]
        if section != "[peer]" or "=" not in text:
            continue
        key, value = text.split("=", 1)
        key = "".join(key.lower().split())
        if key == "publickey":
            peers[-1][0] = value.strip()
        elif key == "presharedkeyfile":
            peers[-1][1] = True
    return [(pk, psk) for pk, psk in peers if pk]


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
        switch = " && " + _embed_key_command(paths["conf"], paths["key"] + ".tmp", paths["conf"])
        if st.get("link_exists"):
            switch += f" && wg set {shlex.quote(interface)} private-key {key}.tmp"
    yield (made + switch + f" && mv -f {key}.tmp {key} && mv -f {pub}.tmp {pub}"
           f" && mv -f {created}.tmp {created}")  # fmt: skip


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
    - only [Peer] sections changed: ``systemctl reload`` (``wg syncconf``: tunnels stay up);
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
    content = _check_content(content)
    paths = wg_paths(interface)
    st: dict[str, Any] = snapshot.get(WireguardState, interface=interface) or {}

    want_sha = hashlib.sha256(content.encode()).hexdigest()
    existed = bool(st.get("config_exists"))
    key = st.get("public_key")  # of the key file: the one key this host should run with
    # A rotation cut short (or a hand edit) can leave the conf with another key than the key
    # file: the hash ignores the PrivateKey line, so compare the public keys as well.
    stale_key = existed and bool(key) and st.get("config_public_key") != key
    changed = not existed or st.get("config_sha256") != want_sha or stale_key
    interface_changed = not existed or st.get("config_interface") != interface_settings(content)
    live_drift = _live_drift(st, key, content)

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
    if not st.get("link_up") or (changed and interface_changed):
        yield f"systemctl restart {unit}"  # a fresh interface: only what the conf says
        return
    if changed or live_drift:
        # wg syncconf: the live key and peers become the conf's, other tunnels stay up
        yield f"systemctl reload {unit}"
    live_psk = set(st.get("psk_peers") or [])
    clear = [pk for pk, has_psk in content_peers(content) if not has_psk and pk in live_psk]
    if clear:
        yield f"wg set {shlex.quote(interface)} " + " ".join(
            f"peer {shlex.quote(pk)} preshared-key /dev/null" for pk in clear
        )
    elif not changed and not live_drift and st.get("service_enabled"):
        host.noop(f"{conf} is up to date and wg-quick@{interface} is running")


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


def content_allowed_ips(content: str) -> dict[str, list[str]]:
    """``{public key: sorted allowed IPs}`` of an uploaded conf, as ``wg show`` prints them."""
    out: dict[str, list[str]] = {}
    peer: list | None = None  # [public key, allowed ips] of the [Peer] being read
    for line in [*content.splitlines(), "[end]"]:
        text = line.split("#", 1)[0]
        if text.lstrip(" \t").startswith("["):
            if peer and peer[0]:
                out.setdefault(peer[0], []).extend(peer[1])
            peer = ["", []] if "".join(text.lower().split()) == "[peer]" else None
            continue
        if peer is None or "=" not in text:
            continue
        name, value = (part.strip() for part in text.split("=", 1))
        if "".join(name.lower().split()) == "publickey":
            peer[0] = value
        elif "".join(name.lower().split()) == "allowedips":
            peer[1].extend(_canonical_network(v) for v in value.split(",") if v.strip())
    return {pk: sorted(ips) for pk, ips in out.items()}


def _canonical_network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        return value.strip()


# --- preshared keys: one per hub<->backend pair, made on the hub --------------------------------


def _psk_dir_command() -> str:
    q = shlex.quote(PSK_DIR)
    return f"umask 077 && mkdir -p {q} && chmod 700 {q}"


def write_psk_command(path: str) -> str:
    """Write ``path`` (0600, atomically) from the key given on STDIN, if it is a WireGuard key.

    The key arrives on the command's stdin, so it is in no argument, no process list and no
    log; what was read is checked before it replaces anything."""
    p = shlex.quote(path)
    return (
        f"{_psk_dir_command()} && cat > {p}.tmp && "
        f"if head -n1 {p}.tmp | grep -q -x -E {shlex.quote(KEY_RE)}; then mv -f {p}.tmp {p}; "
        f"else rm -f {p}.tmp; echo 'backhaul: what came on stdin is not a WireGuard key; "
        f"{path} was left as it was' >&2; exit 1; fi"
    )


def read_psk_command(path: str) -> str:
    """Print a preshared key: only ever run with its output captured, never printed or logged."""
    return f"head -n1 {shlex.quote(path)}"


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
    made = [f"wg genpsk > {shlex.quote(paths[n])}.tmp && mv -f {shlex.quote(paths[n])}.tmp "
            f"{shlex.quote(paths[n])}" for n in todo]  # fmt: skip
    yield " && ".join([_psk_dir_command(), *made])


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
        f"{shlex.quote(f'{PSK_DIR}/{n}.psk')} {shlex.quote(f'{PSK_DIR}/{n}.psk.next')}"
        for n in drop
    )


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


def stage_psk_command(path: str) -> str:
    """Make a new preshared key ``<path>.next`` on the host (nothing printed)."""
    p = shlex.quote(path + ".next")
    return f"{_psk_dir_command()} && wg genpsk > {p}.tmp && mv -f {p}.tmp {p}"


def commit_psk_command(path: str) -> str:
    """Swap a staged preshared key (``<path>.next``) in."""
    p = shlex.quote(path)
    return f"test -s {p}.next && mv -f {p}.next {p}"


def activate_key_command(interface: str, psk: tuple[str, str] | None = None) -> str:
    """Switch to the staged key: the conf (key embedded on the host), the live interface, and
    only then the key file, in that order.

    The key file is what a deploy trusts: it puts the key file's key back into any conf or
    interface that has another (``config``). So a switch cut short anywhere is healed by a
    deploy, back to the old key, until the last step makes the new key the key file; a
    ``.pub`` or ``.key.created`` left old after that is repaired by ``keypair``.

    ``psk``: ``(peer public key, preshared key file)``: also swap in that file's staged key
    (``<file>.next``) and give it to the peer, in the same ``wg set`` as the private key."""
    paths = wg_paths(interface)
    key, pub, created = (shlex.quote(paths[k]) for k in ("key", "pub", "created"))
    q_if = shlex.quote(interface)
    commit, peer = "", ""
    if psk:
        commit = f"{commit_psk_command(psk[1])} && "
        peer = f" peer {shlex.quote(psk[0])} preshared-key {shlex.quote(psk[1])}"
    embed = _embed_key_command(paths["conf"], paths["key"] + ".next", paths["conf"])
    return (
        f"test -s {key}.next && test -s {pub}.next && {commit}{embed}"
        f" && wg set {q_if} private-key {key}.next{peer}"
        f" && date +%s > {created}.next && mv -f {key}.next {key}"
        f" && mv -f {pub}.next {pub} && mv -f {created}.next {created}"
    )


def set_peer_command(interface: str, public_key: str, allowed_ips: list[str],
                     endpoint: str | None = None, keepalive: int = 0,
                     remove: str | None = None, psk_file: str | None = None,
                     keep_psk: bool = False) -> str:
    """Change one peer of the live interface (``wg set``); the conf is rewritten by a deploy.

    ``psk_file``: give the peer that file's preshared key. ``keep_psk`` (with ``remove``): give
    it the removed peer's live preshared key, if it had one; the key goes from ``wg show`` to
    a 0600 file on the host and from there to ``wg set``, never to the output."""
    q_if = shlex.quote(interface)
    spec = f"wg set {q_if} peer {shlex.quote(public_key)} allowed-ips {shlex.quote(','.join(allowed_ips))}"
    if endpoint:
        spec += f" endpoint {shlex.quote(endpoint)}"
    if keepalive:
        spec += f" persistent-keepalive {int(keepalive)}"
    if psk_file:
        spec += f" preshared-key {shlex.quote(psk_file)}"
    if not remove:
        return spec
    # One `wg set` removes the old peer and adds the new one: never a moment (or, cut short,
    # a state) with neither; a failed command changes nothing.
    spec = spec.replace(f"wg set {q_if} ", f"wg set {q_if} peer {shlex.quote(remove)} remove ", 1)
    if not keep_psk or psk_file:
        return spec
    carry = shlex.quote(f"{WG_DIR}/.{interface}.psk.carry")
    pick = '$1 == k && $2 != "(none)" { print $2 }'
    return (
        f"umask 077 && wg show {q_if} preshared-keys | awk -v k={shlex.quote(remove)} "
        f"{shlex.quote(pick)} > {carry} && {{ {spec} preshared-key {carry}; "
        f"r=$?; rm -f {carry}; [ $r -eq 0 ]; }}"
    )
