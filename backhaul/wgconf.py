"""The wg-quick conf: how a line of it is read, what backhaul writes in it, and the awk programs
that read it ON THE HOST (where its keys stay).

Two kinds of reader must agree on every line. The Python ones read the content the controller
renders (before it is uploaded); the awk ones read the real conf on the host, because it holds
the private and preshared keys, which never leave it. If they read a line differently, a conf
looks changed on every run or, worse, unchanged when it is not. So the rules of a line are
stated once below, each in Python and in awk side by side, every reader is built from them, and
the setting names they look for come from one table (``KEYS``).

Why the keys are embedded on the host rather than kept out of the conf: see
``backhaul/operations/wireguard.py``. All awk here is written for mawk (Debian's default awk):
no IGNORECASE, no gensub.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from pyinfra.api import OperationValueError

# -- the table: every setting backhaul reads or writes, as wg-quick spells it -----------------

ADDRESS = "Address"
LISTEN_PORT = "ListenPort"
PRIVATE_KEY = "PrivateKey"
PUBLIC_KEY = "PublicKey"
ALLOWED_IPS = "AllowedIPs"
ENDPOINT = "Endpoint"
KEEPALIVE = "PersistentKeepalive"
PRESHARED_KEY = "PresharedKey"
# Not a wg-quick key: the uploaded conf names the file, the host embeds its key (see the module
# docstring of operations/wireguard.py); the real conf keeps `# PresharedKeyFile = F` as a trace.
PRESHARED_KEY_FILE = "PresharedKeyFile"
KEYS = (
    ADDRESS,
    LISTEN_PORT,
    PRIVATE_KEY,
    PUBLIC_KEY,
    ALLOWED_IPS,
    ENDPOINT,
    KEEPALIVE,
    PRESHARED_KEY,
    PRESHARED_KEY_FILE,
)

# Everything backhaul ever writes in a wg-quick conf, per section. wg-quick runs the conf as
# root: PreUp/PostUp/PreDown/PostDown run commands, SaveConfig writes the live state back,
# Table/FwMark/DNS change the host's routing. None of them is ours, so one in the content can
# only come from a value that smuggled in a line: refused, whatever produced the content.
WRITTEN = {
    "[interface]": (ADDRESS, LISTEN_PORT),
    "[peer]": (PUBLIC_KEY, ALLOWED_IPS, ENDPOINT, KEEPALIVE, PRESHARED_KEY_FILE),
}


def key(name: str) -> str:
    """A setting's name as the readers compare it (``AllowedIPs`` -> ``allowedips``)."""
    if name not in KEYS:
        raise KeyError(f"{name!r} is not in wgconf.KEYS")
    return name.lower()


# -- the rules of a line, in Python and in awk --------------------------------------------------
# 1. A comment runs from the first `#` to the end of the line (wg-quick strips it so).
# 2. A line whose first non-blank character is `[` opens a section, named by the line lowercased,
#    comment and blanks removed: `[Peer]  # hub` opens "[peer]".
# 3. Another line with a `=` is a setting: its key is the text before the first `=`, lowercased,
#    blanks removed; its value the text after it, blanks trimmed.
# 4. Where a program must find one setting's line without taking the line apart (to drop or
#    replace it), that line matches `^[ \t]*<key>[ \t]*=` once lowercased; the trace of an
#    embedded preshared key matches `^# [ \t]*presharedkeyfile[ \t]*=`.


class Setting(NamedTuple):
    key: str  # lowercased, blanks removed
    value: str  # blanks trimmed
    name: str  # as written, for messages


def section(line: str) -> str | None:
    """Rule 2: the section a line opens (``"[peer]"``), None when it opens none."""
    if not line.lstrip(" \t").startswith("["):
        return None
    return "".join(line.split("#", 1)[0].lower().split())


def setting(line: str) -> Setting | None:
    """Rules 1 and 3: the setting on a line, None for a line without ``=``."""
    text = line.split("#", 1)[0]
    if "=" not in text:
        return None
    name, value = text.split("=", 1)
    return Setting("".join(name.lower().split()), value.strip(" \t"), name.strip(" \t"))


_LINE_OF = r"^[ \t]*{}[ \t]*="  # rule 4, in the regex dialect Python and awk share
_TRACE = r"^# [ \t]*{}[ \t]*="


def is_psk_trace(line: str) -> bool:
    """``# PresharedKeyFile = F``: what the embedding leaves above ``PresharedKey = <key>``."""
    return re.match(_TRACE.format(key(PRESHARED_KEY_FILE)), line.lower()) is not None


# The same rules in awk. Each fragment is a statement (or pattern) the programs below splice in.
_AWK_OPENS_SECTION = r"/^[ \t]*\[/"
_AWK_SECTION_NAME = r'sub(/#.*/, "", s); gsub(/[ \t]/, "", s)'  # s: the line, lowercased
_AWK_SETTING = (
    r'l = $0; sub(/#.*/, "", l); n = index(l, "="); if (n == 0) next'
    "\n"
    r'  k = tolower(substr(l, 1, n - 1)); gsub(/[ \t]/, "", k)'
    "\n"
    r'  v = substr(l, n + 1); gsub(/^[ \t]+|[ \t]+$/, "", v)'
)


def _awk_line_of(name: str, var: str = "t") -> str:
    return f"{var} ~ /{_LINE_OF.format(key(name))}/"


def _awk_trace(var: str = "t") -> str:
    return f"{var} ~ /{_TRACE.format(key(PRESHARED_KEY_FILE))}/"


def _awk(program: str, **names: str) -> str:
    """``program`` with the fragments and key names spliced in: ``@SETTING@``, ``@SECTION@``
    (pattern), ``@SECTION_NAME@``, ``@TRACE@``, ``@LINE:<Key>@`` and ``@KEY:<Key>@``."""
    program = (
        program.replace("@SETTING@", _AWK_SETTING)
        .replace("@SECTION_NAME@", _AWK_SECTION_NAME)
        .replace("@SECTION@", _AWK_OPENS_SECTION)
        .replace("@TRACE@", _awk_trace())
    )
    program = re.sub(r"@LINE:(\w+)@", lambda m: _awk_line_of(m[1]), program)
    program = re.sub(r"@KEY:(\w+)@", lambda m: '"' + key(m[1]) + '"', program)
    if "@" in program:
        raise ValueError(f"unknown fragment in an awk program: {program}")
    return program


# -- the awk programs (run on the host by the facts and the config operation) ------------------

# Rewrites a wg-quick conf (from the file given as argument) with exactly one
# `PrivateKey = <content of keyfile>` line, placed right after the first [Interface] header,
# and every `PresharedKeyFile = F` line (or its `# PresharedKeyFile = F` trace from an earlier
# run, so the program can rewrite its own output) turned into that trace followed by
# `PresharedKey = <first line of F>`. The keys are read by awk itself (getline), so they are
# never in any command's arguments or output. Fails (non-zero, nothing written by the caller's
# `&& mv`) when a key file is missing or empty or when there is no [Interface] section.
AWK_EMBED_KEY = _awk(r"""
BEGIN { if ((getline k < keyfile) <= 0 || k == "") { err = 2; exit } }
{ t = tolower($0); l = $0 }
@LINE:PrivateKey@ { next }
@LINE:PresharedKey@ { next }
@TRACE@ { l = substr($0, 3); t = tolower(l) }
@LINE:PresharedKeyFile@ {
  f = substr(l, index(l, "=") + 1); gsub(/^[ \t]+|[ \t]+$/, "", f)
  p = ""; if (f == "" || (getline p < f) <= 0 || p == "") { perr = 1; bad = f; exit }
  close(f); print "# " l; print "PresharedKey = " p; next
}
{ print }
!done { s = t; @SECTION_NAME@;
        if (s == "[interface]") { print "PrivateKey = " k; done = 1 } }
END {
  if (err) { print "backhaul: cannot read the private key " keyfile > "/dev/stderr"; exit err }
  if (perr) { print "backhaul: cannot read the preshared key " bad > "/dev/stderr"; exit 4 }
  if (!done) { print "backhaul: the config has no [Interface] section" > "/dev/stderr"; exit 3 }
}
""")

# The conf as it was uploaded, from the real conf: the PrivateKey line dropped, every embedded
# `# PresharedKeyFile = F` + `PresharedKey = <key>` pair turned back into `PresharedKeyFile = F`.
# The embedded key is compared ON THE HOST with the first line of F; a stale, missing or
# file-less PresharedKey prints a line the upload never has, so the hash differs and the
# operation rewrites the conf. Only the hash leaves the host.
AWK_SOURCE = _awk(r"""
{ t = tolower($0) }
@LINE:PrivateKey@ { next }
want != "" {
  if (@LINE:PresharedKey@) {
    v = substr($0, index($0, "=") + 1); gsub(/^[ \t]+|[ \t]+$/, "", v)
    p = ""; r = (getline p < want); close(want)
    if (r <= 0 || p != v) print "# backhaul: stale PresharedKey"
    want = ""; next
  }
  print "# backhaul: missing PresharedKey"; want = ""
}
@TRACE@ {
  l = substr($0, 3); print l
  want = substr(l, index(l, "=") + 1); gsub(/^[ \t]+|[ \t]+$/, "", want); next
}
@LINE:PresharedKey@ { print "# backhaul: PresharedKey not from a file"; next }
{ print }
END { if (want != "") print "# backhaul: missing PresharedKey" }
""")

# Prints one line per [Peer] of the real conf that sets a PresharedKey:
# `conf=<allowed ip>,...<TAB><the file it came from, or (inline)>`. Never the key itself.
# Values are printed without blanks.
AWK_PSK_PEERS = _awk(r"""
function flush() {
  if (inpeer && psk) print "conf=" ips "\t" (f == "" ? "(inline)" : f)
  inpeer = 0; psk = 0; f = ""; ips = ""
}
{ t = tolower($0) }
@TRACE@ {
  f = substr($0, index($0, "=") + 1); gsub(/^[ \t]+|[ \t]+$/, "", f); next
}
@SECTION@ { flush(); s = t; @SECTION_NAME@; inpeer = (s == "[peer]"); next }
inpeer {
  @SETTING@; gsub(/[ \t]/, "", v)
  if (k == @KEY:PresharedKey@) psk = 1
  else if (k == @KEY:AllowedIPs@) ips = (ips == "" ? v : ips "," v)
}
END { flush() }
""")

# Prints the [Interface] settings of a wg-quick file as `iface=<lowercased key>=<value>`,
# skipping PrivateKey: what interface_settings() reads from the content.
AWK_INTERFACE = _awk(r"""
@SECTION@ { s = tolower($0); @SECTION_NAME@; next }
s == "[interface]" {
  @SETTING@
  if (k == @KEY:PrivateKey@) next
  print "iface=" k "=" v
}
""")

# Prints one line per [Peer]: `<public key>\t<allowed ip>,<allowed ip>...`. Only PublicKey and
# AllowedIPs are ever printed (never PresharedKey). Values are printed without blanks.
AWK_PEERS = _awk(r"""
function flush() { if (inpeer && pk != "") print pk "\t" ips; inpeer = 0; pk = ""; ips = "" }
@SECTION@ { flush(); s = tolower($0); @SECTION_NAME@; inpeer = (s == "[peer]"); next }
inpeer {
  @SETTING@; gsub(/[ \t]/, "", v)
  if (k == @KEY:PublicKey@) pk = v
  else if (k == @KEY:AllowedIPs@) ips = (ips == "" ? v : ips "," v)
}
END { flush() }
""")

# Prints the value of the conf's first PrivateKey line, for `wg pubkey` to read on a pipe: the
# key itself never reaches the output, only the public key derived from it.
AWK_CONF_KEY = _awk(r"""
{ t = tolower($0) }
@LINE:PrivateKey@ {
  v = substr($0, index($0, "=") + 1); gsub(/[ \t]/, "", v); print v; exit
}
""")


# -- the Python readers (of the content the controller renders) --------------------------------


def interface_settings(content: str) -> list[list[str]]:
    """The [Interface] settings of a wg-quick conf as ``[key, value]``, ``PrivateKey`` skipped:
    what ``AWK_INTERFACE`` prints of the same text (``WireguardState.config_interface``)."""
    settings: list[list[str]] = []
    current = ""
    for line in content.splitlines():
        opened = section(line)
        if opened is not None:
            current = opened
            continue
        s = setting(line) if current == "[interface]" else None
        if s and s.key != key(PRIVATE_KEY):
            settings.append([s.key, s.value])
    return settings


class Peer(NamedTuple):
    """A [Peer] of an uploaded conf, its values as ``wg show``/``wg set`` take them."""

    public_key: str
    allowed_ips: tuple[str, ...]  # canonical and sorted, as ``wg show <if> allowed-ips`` prints
    endpoint: str | None = None
    keepalive: str | None = None  # seconds, as written
    psk_file: str | None = None  # ``PresharedKeyFile``: the key's file on the host


def content_peer_list(content: str) -> list[Peer]:
    """Every [Peer] of an uploaded conf that names a public key, in order."""
    peers: list[Peer] = []
    values: dict[str, Any] | None = None  # of the [Peer] being read
    for line in [*content.splitlines(), "[end]"]:
        opened = section(line)
        if opened is not None:
            if values and values.get("public_key"):
                values["allowed_ips"] = tuple(sorted(values.get("allowed_ips", [])))
                peers.append(Peer(**values))
            values = {} if opened == "[peer]" else None
            continue
        s = setting(line)
        if values is None or s is None:
            continue
        if s.key == key(ALLOWED_IPS):
            values.setdefault("allowed_ips", []).extend(
                _canonical_network(v) for v in s.value.split(",") if v.strip()
            )
        elif s.key in _PEER_FIELDS:
            values[_PEER_FIELDS[s.key]] = s.value
    return peers


_PEER_FIELDS = {
    key(PUBLIC_KEY): "public_key",
    key(ENDPOINT): "endpoint",
    key(KEEPALIVE): "keepalive",
    key(PRESHARED_KEY_FILE): "psk_file",
}


def content_peers(content: str) -> list[tuple[str, bool]]:
    """``(public key, has a PresharedKeyFile)`` for each [Peer] of an uploaded conf."""
    return [(p.public_key, p.psk_file is not None) for p in content_peer_list(content)]


def content_allowed_ips(content: str) -> dict[str, list[str]]:
    """``{public key: sorted allowed IPs}`` of an uploaded conf, as ``wg show`` prints them."""
    out: dict[str, list[str]] = {}
    for p in content_peer_list(content):
        out.setdefault(p.public_key, []).extend(p.allowed_ips)
    return {pk: sorted(ips) for pk, ips in out.items()}


def _canonical_network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        return value.strip()


# -- what backhaul writes: the content check ----------------------------------------------------

# What may follow `PresharedKeyFile =`: an absolute path, nothing awk or a shell would mind.
_PSK_FILE_RE = re.compile(r"/[A-Za-z0-9._/-]+")
_PUBLIC_KEY_RE = re.compile(r"[A-Za-z0-9+/]{43}=")
_ENDPOINT_RE = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<v4>[0-9.]+)):(?P<port>[0-9]{1,5})")


def _canonical(kind: Callable[[str], Any], value: str) -> bool:
    """``value`` is a comma list of addresses/networks, each written as Python writes it
    (so no scope ``%...``, no leading zeros, no host bits in a network)."""
    items = [v.strip() for v in value.split(",")]
    try:
        return all(item and str(kind(item)) == item and "%" not in item for item in items)
    except ValueError:
        return False


def _endpoint_ok(value: str) -> bool:
    m = _ENDPOINT_RE.fullmatch(value)
    if not m or not 0 < int(m["port"]) <= 65535:
        return False
    ip = m["v6"] or m["v4"]
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return str(addr) == ip and (addr.version == 6) == bool(m["v6"])


def _number_ok(value: str) -> bool:
    return value.isascii() and value.isdigit() and int(value) <= 65535


# The value each written setting may take.
_VALUE_OK: dict[str, Callable[[str], bool]] = {
    ADDRESS: lambda v: _canonical(ipaddress.ip_interface, v),
    ALLOWED_IPS: lambda v: _canonical(ipaddress.ip_network, v),
    LISTEN_PORT: _number_ok,
    KEEPALIVE: _number_ok,
    PUBLIC_KEY: lambda v: bool(_PUBLIC_KEY_RE.fullmatch(v)),
    ENDPOINT: _endpoint_ok,
    PRESHARED_KEY_FILE: lambda v: bool(_PSK_FILE_RE.fullmatch(v)),
}
_BY_KEY = {key(name): name for name in KEYS}


def value_ok(k: str, value: str) -> bool:
    """Whether ``value`` is one backhaul writes for the (lowercased) key ``k``."""
    check = _VALUE_OK.get(_BY_KEY.get(k, ""))
    return bool(check and check(value))


def check_content(content: str) -> str:
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
    if "[interface]" not in {section(ln) for ln in lines}:
        raise OperationValueError("wireguard.config: the content has no [Interface] section")
    current = ""
    interfaces = 0
    for number, line in enumerate(lines, 1):
        if is_psk_trace(line):
            raise OperationValueError(
                f"wireguard.config: line {number} is a `# PresharedKeyFile` comment, which "
                "the operation writes itself as the trace of an embedded key: remove it"
            )
        text = line.split("#", 1)[0].strip(" \t")
        if not text:
            continue  # blank or a comment (wg-quick drops comments)
        opened = section(line)
        if opened is not None:
            current = opened
            _check_section(number, text, current, interfaces)
            interfaces += current == "[interface]"
            continue
        s = setting(line)
        if s is None:
            raise OperationValueError(
                f"wireguard.config: line {number} is neither a comment, a section nor a "
                f"`Key = value` setting: {text[:60]!r}: refused"
            )
        _check_setting(number, s, current)
    return content if content.endswith("\n") else content + "\n"


def _check_section(number: int, text: str, opened: str, interfaces_before: int) -> None:
    if opened not in WRITTEN:
        raise OperationValueError(
            f"wireguard.config: line {number}: section {text!r} is not one backhaul "
            "writes (only [Interface], then [Peer]s): refused"
        )
    if opened == "[interface]" and interfaces_before:
        raise OperationValueError(
            f"wireguard.config: line {number}: a second [Interface]: refused (a conf "
            "has one, and a value must never open another)"
        )
    if opened == "[peer]" and not interfaces_before:
        raise OperationValueError(f"wireguard.config: line {number}: a [Peer] before the [Interface] section")


def _check_setting(number: int, s: Setting, current: str) -> None:
    if s.key == key(PRIVATE_KEY):
        raise OperationValueError(
            f"wireguard.config: line {number} of the content sets PrivateKey; the private "
            "key must stay on the host: remove the line, the operation inserts it from "
            "/etc/wireguard/<interface>.key on the host"
        )
    if s.key == key(PRESHARED_KEY):
        raise OperationValueError(
            f"wireguard.config: line {number} of the content sets PresharedKey; a "
            "preshared key must not pass through the controller: write "
            "`PresharedKeyFile = /etc/wireguard/psk/<name>.psk` instead, the operation "
            "embeds the file's key on the host"
        )
    if not current:
        raise OperationValueError(f"wireguard.config: line {number}: {s.name!r} comes before any section")
    allowed = WRITTEN[current]
    if s.key not in {key(a) for a in allowed}:
        raise OperationValueError(
            f"wireguard.config: line {number}: {s.name!r} in {current.title()} is not a "
            f"setting backhaul writes (there: {', '.join(allowed)}); hooks (PreUp, PostUp, "
            "PreDown, PostDown), SaveConfig and the like run or change things as root: "
            "refused"
        )
    if s.key == key(PRESHARED_KEY_FILE) and not value_ok(s.key, s.value):
        raise OperationValueError(
            f"wireguard.config: line {number}: PresharedKeyFile {s.value!r} is not an "
            "absolute path of [A-Za-z0-9._/-]; write e.g. /etc/wireguard/psk/hub.psk"
        )
    if not value_ok(s.key, s.value):
        raise OperationValueError(
            f"wireguard.config: line {number}: {s.name} = {s.value[:80]!r} is not a value "
            "backhaul writes (canonical addresses, numbers, a WireGuard public key): refused"
        )
