"""Checks of one value each (names, addresses, paths, domains, keys): each returns the message
that says what is wrong and how to fix it, or None when the value is fine. The file-level rules
(``backhaul/schema/``) and the day-2 commands' arguments (``backhaul/network.py``) use them,
so a value is judged the same way wherever it comes from.

Every string that may later reach a template, a config file or a shell on a host is checked
against a strict pattern here, so nothing hostile gets past the model.
"""

from __future__ import annotations

import base64
import difflib
import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backhaul.yamlcheck import BAD
from backhaul.yamledit import show as _show

ACME_SERVERS = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}


TLS_MODES = ("acme", "self-signed", "provided")


# fullmatch everywhere: `$` would accept a trailing newline. Explicit ASCII classes, never \w/\d.
HOST_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


SERVICE_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


INTERFACE_RE = re.compile(r"[a-z][a-z0-9]{0,14}")


USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


UNIT_RE = re.compile(r"(?!-)[A-Za-z0-9@_.:-]+\.service")  # never an option to systemctl


HUB_PATH_RE = re.compile(r"/[A-Za-z0-9._/-]*")


CONTROLLER_PATH_RE = re.compile(r"[A-Za-z0-9._/~+@-]+")


LABEL_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


EMAIL_RE = re.compile(r"[A-Za-z0-9._%+][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")


URL_RE = re.compile(r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%/+=-]*)?")


ADDRESS_TYPES = (ipaddress.IPv4Address, ipaddress.IPv6Address)


UNROUTABLE_V4 = tuple(
    (ipaddress.IPv4Network(block), what)
    for block, what in (
        ("0.0.0.0/8", '0.0.0.0/8 ("this network", a source address only)'),
        ("127.0.0.0/8", "127.0.0.0/8 (loopback)"),
        ("169.254.0.0/16", "169.254.0.0/16 (link-local)"),
        ("224.0.0.0/4", "224.0.0.0/4 (multicast)"),
        ("240.0.0.0/4", "240.0.0.0/4 (reserved, and the broadcast address)"),
    )
)


NAME_HELP = "use lowercase letters, digits and '-' (not at either end), at most 63 characters"


def parse_ip(value: str, *, v4_only: bool = False) -> tuple[Any, str | None]:
    """``value`` as an address; (None, why not and the fix) for an address written another way
    than the canonical one; (None, None) when it is no address at all (the caller says what to
    write there). Only the canonical spelling is accepted: it is what every file on the hosts
    gets, and ``ipaddress`` also takes a scope (``addr%scope``) that may hold almost any
    character, newlines included."""
    try:
        addr = ipaddress.IPv4Address(value) if v4_only else ipaddress.ip_address(value)
    except ValueError:
        return None, None
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id is not None:
        bare = str(addr).partition("%")[0]
        return None, (
            f"{_show(value)} has a scope ('%...'), which no config file here can "
            f"carry; write the address without it, e.g. {bare}"
        )
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return None, (f"{_show(value)} is an IPv4 address written as IPv6; write {addr.ipv4_mapped}")
    if value != str(addr):
        return None, f"{_show(value)} is not in canonical form; write {addr}"
    return addr, None


def allow_error(value: str) -> str | None:
    """Why ``value`` is not an allow-list entry: an address or a CIDR, written canonically."""
    try:
        net = ipaddress.ip_network(value)
    except ValueError:
        try:
            fixed = ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"{_show(value)} is not an IP address or CIDR; write e.g. 198.51.100.7 or 198.51.100.0/24"
        if "%" not in value:
            return f"{_show(value)} has host bits set; write {fixed}"
        net = fixed
    if "%" in value:
        return (
            f"{_show(value)} has a scope ('%...'), which no config file here can carry; "
            "write it without the scope"
        )
    canonical = str(net) if "/" in value else str(net.network_address)
    if value != canonical:
        return f"{_show(value)} is not in canonical form; write {canonical}"
    return None


def unroutable_reason(addr: Any) -> str | None:
    """Why no other host can reach ``addr`` (None when it may be a public address)."""
    if addr.is_unspecified:
        return "the unspecified address (any address)"
    if addr.is_loopback:
        return "a loopback address (only the host itself reaches it)"
    if addr.is_multicast:
        return "a multicast address"
    if addr.is_link_local:
        return "a link-local address (valid on one network segment only)"
    if addr.is_reserved:
        return "a reserved address (never routed)"
    return None


# Fields checked by one pattern each: the value must match it whole, else the message.
def _pattern(regex: re.Pattern[str], message: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if regex.fullmatch(value) else message.format(_show(value))

    return check


check_host_name = _pattern(HOST_NAME_RE, "{} is not a valid host name; " + NAME_HELP)


check_service_name = _pattern(SERVICE_NAME_RE, "{} is not a valid service name; " + NAME_HELP)


check_interface = _pattern(
    INTERFACE_RE,
    "{} is not a valid interface name; use a lowercase "
    "letter then up to 14 lowercase letters or digits, e.g. wg0",
)


check_user = _pattern(USER_RE, "{} is not a valid user name; use e.g. root or deploy")


check_unit = _pattern(UNIT_RE, "{} is not a systemd service unit name; write e.g. app.service")


check_email = _pattern(EMAIL_RE, "{} does not look like an e-mail address; write e.g. ops@example.com")


def dns_error(value: str, *, single_label_ok: bool) -> str | None:
    """Why ``value`` is not a DNS name (None when it is). A trailing dot is accepted."""
    name = value[:-1] if value.endswith(".") else value
    if name.startswith("*."):
        return (
            f"{_show(value)} is a wildcard; certificates are issued per name over HTTP-01, "
            "so list each name (e.g. app.example.com)"
        )
    labels = name.split(".")
    if (
        not name
        or len(name) > 253
        or not all(LABEL_RE.fullmatch(label) for label in labels)
        or (len(labels) < 2 and not single_label_ok)
    ):
        return (
            f"{_show(value)} is not a valid DNS name; use letters, digits, '-' and dots, "
            "labels of at most 63 characters, e.g. app.example.com"
        )
    if labels[-1].isdigit():
        return f"{_show(value)} looks like an IP address, not a DNS name"
    return None


def check_domain(value: str) -> str | None:
    return dns_error(value, single_label_ok=False)


def check_name_domain(value: str) -> str | None:
    """network.domain: the suffix of the granted services' names; one label is fine."""
    return dns_error(value, single_label_ok=True)


def check_ssh_host(value: str) -> str | None:
    addr, error = parse_ip(value)
    if addr is not None:
        if addr.is_unspecified or addr.is_multicast:
            return (
                f"{_show(value)} is {unroutable_reason(addr)}; SSH cannot connect to it: write "
                "the host's address or name"
            )
        return None
    if error:
        return error
    if dns_error(value, single_label_ok=True) is None:
        return None
    return f"{_show(value)} is neither an IP address nor a host name; write e.g. 203.0.113.21"


def hub_path(example: str) -> Callable[[str], str | None]:
    return lambda value: check_hub_path(value, example)


def check_hub_path(value: str, example: str) -> str | None:
    if not value.startswith("/"):
        return f"{_show(value)} is not an absolute path; write e.g. {example}"
    if not HUB_PATH_RE.fullmatch(value):
        return (
            f"{_show(value)} contains characters other than letters, digits and ._/-; "
            "rename the file or use a symlink"
        )
    if ".." in value.split("/"):
        return f"{_show(value)} contains a '..' component; write the path without it"
    return None


def check_controller_path(value: str) -> str | None:
    if CONTROLLER_PATH_RE.fullmatch(value) and ".." not in value.split("/")[1:]:
        return None
    if CONTROLLER_PATH_RE.fullmatch(value):
        return f"{_show(value)} contains a '..' component; write the path without it"
    return (
        f"{_show(value)} contains characters other than letters, digits and ._/~+@-; "
        "rename the file or use a symlink"
    )


_CONTROLLER_FILES = {
    "key": "the SSH private key for ssh.user (or remove ssh.key to use your agent and ~/.ssh)",
    "known_hosts": "a known_hosts file (it may be absent; new host keys are written to it)",
    "ca": "a PEM CA bundle (-----BEGIN CERTIFICATE-----)",
}


CONTROLLER_FILE_HEAD = 1024 * 1024  # enough to see what a CA bundle or key file holds


_RELATIVE = " (a relative path is relative to the network file's folder)"


def controller_file(base: Path, kind: str) -> Callable[[str], str | None]:
    """The check of a file on this machine that the network file names (``kind``: a key of
    ``_CONTROLLER_FILES``): it is read by the SSH connections or the ACME client, in the middle
    of a deploy, where a missing file would be a traceback from one host's connection."""

    def check(value: str) -> str | None:
        error = check_controller_path(value)
        if error:
            return error
        path = controller_path(value, base)
        assert path is not None
        where = "" if value.startswith(("/", "~")) else _RELATIVE
        want = _CONTROLLER_FILES[kind]
        if kind == "known_hosts" and not path.exists() and not path.is_symlink():
            if path.parent.is_dir():
                return None
            return (
                f"{_show(value)}: its folder does not exist{where}, so new host keys cannot "
                f"be recorded; create the folder or write the path of {want}"
            )
        if not path.exists():
            return f"{_show(value)}: no such file{where}; write the path of {want}"
        if not path.is_file():
            return f"{_show(value)} is not a file{where}; write the path of {want}"
        try:
            with open(path, "rb") as f:
                head = f.read(CONTROLLER_FILE_HEAD)
        except OSError as exc:
            return f"{_show(value)} cannot be read ({exc.strerror}); give this user read access"
        if kind == "ca" and b"-----BEGIN CERTIFICATE-----" not in head:
            return f"{_show(value)} holds no certificate; write the path of {want}"
        return None

    return check


def check_acme_server(value: str) -> str | None:
    if value in ACME_SERVERS or URL_RE.fullmatch(value):
        return None
    return (
        f"{_show(value)} is not an ACME server; write letsencrypt, letsencrypt-staging or "
        "an https:// directory URL"
    )


def check_mode(value: str) -> str | None:
    if value in TLS_MODES:
        return None
    close = difflib.get_close_matches(value, TLS_MODES, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{_show(value)} is not a TLS mode; use one of acme, self-signed, provided{hint}"


def controller_path(value: Any, base: Path) -> Path | None:
    if value is None or value is BAD:
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


# -- ssh.via / ssh.allow_from: backends with no public port (see backhaul/sshpath.py) --
SSH_VIA = ("direct", "hub")


# network.paths: how two backends with a grant between them reach each other
PATHS = ("direct", "hub")


def check_paths(value: str) -> str | None:
    if value not in PATHS:
        return (
            f"{_show(value)} is not a way for granted flows to go; write direct (the two "
            "backends peer with each other) or hub (every flow through the hub)"
        )
    return None


def check_ssh_via(value: str) -> str | None:
    if value not in SSH_VIA:
        return (
            f"{_show(value)} is not a way to reach a host; write direct (SSH on the public "
            "address) or hub (SSH only over the tunnel, through the hub)"
        )
    return None


def family_names(versions: set[int]) -> str:
    return " and ".join(f"IPv{v}" for v in sorted(versions))


def hub_key_error(value: str) -> str | None:
    """Why ``value`` is not the hub's public key as a client config names it."""
    if public_key_error(value) is None:
        return None
    return (
        f"{_show(value)} is not a WireGuard public key; this is the hub's public key the "
        "client's config names, written by add-client and client-config: remove the line, "
        "then run inv client-config for this client"
    )


def public_key_error(value: str) -> str | None:
    """Why ``value`` is not a WireGuard public key (44 characters of base64, 32 bytes)."""
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        raw = b""
    if len(raw) == 32 and base64.b64encode(raw).decode() == value:
        return None
    return (
        f"{_show(value)} is not a WireGuard public key (44 characters of base64, e.g. the "
        "output of `wg pubkey`); paste the client's public key, never its private key"
    )
