"""The network file: read it into the validated model, and write allocated addresses and the
day-2 edits (add or remove a backend or a client, a new hub address) back into it.

The file is read whole and checked by ``backhaul/schema/`` (every problem at once, as one
:class:`~backhaul.errors.ConfigError`); the model it builds is ``backhaul/model.py``, whose
names this module re-exports (``from backhaul.network import Network, Host``). Edits keep the
file's comments and layout (``backhaul/yamledit.py``) and are checked as a whole file before
they are written. Nothing here contacts a host.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from backhaul import fields, schema, yamledit
from backhaul.errors import ConfigError, Problem
from backhaul.model import (  # noqa: F401 - the model, re-exported
    ALL_CLIENTS,
    HUB_WEB_PORTS,
    Client,
    Host,
    IPAddress,
    Network,
    Service,
    Ssh,
    Tls,
)
from backhaul.yamledit import show as _show

__all__ = [
    "Network",
    "Host",
    "Client",
    "Service",
    "Tls",
    "Ssh",
    "load",
    "load_current",
    "current_path",
    "clear_cache",
    "add_backend",
    "remove_backend",
    "add_client",
    "remove_client",
    "next_free_wg_ip",
    "DEFAULT_PATH",
    "ENV_VAR",
    "MAX_BYTES",
]


DEFAULT_PATH = "network.yml"


ENV_VAR = "BACKHAUL_NETWORK"


MISSING_FILE = "not found; copy network.example.yml to network.yml, or pass --network PATH"
MAX_BYTES = 1024 * 1024  # a network file for hundreds of hosts is a few dozen KiB


def load(path: str | os.PathLike[str], write_back: bool = False) -> Network:
    """Read and validate the network file; raise ConfigError listing every problem.

    With ``write_back`` the wg_ips allocated to backends that have none are written into the file
    (one ``wg_ip:`` line each, nothing else touched), so addresses never move when the file is
    later reordered or backends are removed.
    """
    file = os.fspath(path)
    text = _read(file)
    result = schema.check(text, file, Path(file))
    if result.problems:
        raise ConfigError(result.problems)
    assert result.network is not None
    if write_back and result.allocated:
        edits = []
        for mapping, addr in result.allocated:
            edits += yamledit.set_key(text, mapping, "wg_ip", str(addr))
        new_text = yamledit.apply(text, edits)
        again = schema.check(new_text, file, Path(file))
        if again.problems or again.network != result.network or again.allocated:
            raise AssertionError("bug: writing back the allocated wg_ips changed the network")
        _write_atomic(file, text, new_text)
    return result.network


@functools.lru_cache(maxsize=8)
def _load_cached(path: str) -> Network:
    return load(path)


def current_path() -> str:
    """The network file of deploys and inventory: ``$BACKHAUL_NETWORK`` or ``./network.yml``."""
    return os.environ.get(ENV_VAR) or DEFAULT_PATH


def load_current() -> Network:
    """The model for deploys and inventory (:func:`current_path`), cached."""
    return _load_cached(current_path())


def clear_cache() -> None:
    """Forget models loaded by :func:`load_current` (tests, or after editing the file)."""
    _load_cached.cache_clear()


def next_free_wg_ip(net: Network) -> ipaddress.IPv4Address:
    """The lowest address of the subnet no host or client uses (network/broadcast excluded)."""
    used = {h.wg_ip for h in net.hosts} | {c.wg_ip for c in net.clients}
    for addr in net.subnet.hosts():
        if addr not in used:
            return addr
    raise ConfigError(
        [
            Problem(
                str(net.path),
                None,
                None,
                "network.subnet",
                f"{str(net.subnet)!r} is full ({len(used)} hosts); use a larger subnet",
            )
        ]
    )


def add_backend(
    path: str | os.PathLike[str],
    name: str | None,
    public_ip: str,
    wg_ip: str | None = None,
    public_ip6: str | None = None,
) -> Host:
    """Append a backend to the file and return it; the file is unchanged on any problem.

    ``name`` defaults to ``backend-N`` with the lowest N not taken; ``wg_ip`` defaults to the
    lowest free address, and is written into the file either way. ``public_ip6``: a
    dual-stack backend's IPv6 address (``public_ip`` is then its IPv4 one).
    """
    file = os.fspath(path)
    text = _read(file)
    net = _load_text(text, file, Path(file))
    taken = {h.name for h in net.hosts}
    if name is None:
        n = 1
        while f"backend-{n}" in taken:
            n += 1
        name = f"backend-{n}"
    problems: list[Problem] = []

    def bad(field: str, message: str) -> None:
        problems.append(Problem(file, None, None, field, message))

    if not isinstance(name, str) or not fields.HOST_NAME_RE.fullmatch(name):
        bad("name", f"{_show(name)} is not a valid host name; {fields.NAME_HELP}")
    elif name in taken:
        bad("name", f"{_show(name)} is already a host in {file}; choose another name")
    pub = _new_public_ip(net, public_ip, "public_ip", bad)
    pub6 = None
    if public_ip6 is not None:
        pub6 = _new_public_ip(net, public_ip6, "public_ip6", bad)
        if pub6 is not None and pub6.version != 6:
            bad(
                "public_ip6",
                f"{_show(public_ip6)} is IPv4; public_ip6 is the host's IPv6 address (its "
                "IPv4 address goes in public_ip)",
            )
            pub6 = None
        elif pub6 is not None and pub is not None and pub.version == 6:
            bad(
                "public_ip6",
                f"{_show(public_ip6)} is a second IPv6 address, but public_ip {pub} is IPv6 "
                "already: give the backend's IPv4 address as public_ip, or leave public_ip6 out",
            )
    wg = next_free_wg_ip(net) if wg_ip is None else _new_wg_ip(net, wg_ip, bad)
    if problems:
        raise ConfigError(problems)
    root = yaml.compose(text)
    entry = [
        ("name", yamledit.scalar(name)),
        ("public_ip", yamledit.scalar(str(pub))),
        *([("public_ip6", yamledit.scalar(str(pub6)))] if pub6 is not None else []),
        ("wg_ip", yamledit.scalar(str(wg))),
    ]
    new_text = yamledit.apply(text, yamledit.append_item(text, root, "backends", entry))
    new_net = _load_text(new_text, f"{file} (after adding {name})", Path(file))
    host = new_net.host(name)
    _write_atomic(file, text, new_text)
    return host


def _new_wg_ip(net: Network, value: Any, bad: Callable[[str, str], None]) -> Any:
    """``value`` as a new backend's wg_ip, or None after ``bad("wg_ip", why)``: an IPv4 host
    address of the subnet that no host has."""
    wg, error = fields.parse_ip(value, v4_only=True) if isinstance(value, str) else (None, None)
    owner = next((h for h in net.hosts if h.wg_ip == wg), None) if wg is not None else None
    if wg is None:
        bad("wg_ip", error or f"{_show(value)} is not an IPv4 address; write e.g. 10.50.0.9")
    elif owner is not None:
        bad(
            "wg_ip",
            f"{_show(str(wg))} is already the wg_ip of {owner.name!r}; omit it to get {next_free_wg_ip(net)}",
        )
    elif wg not in net.subnet or wg in (net.subnet.network_address, net.subnet.broadcast_address):
        bad(
            "wg_ip",
            f"{_show(str(wg))} is not a host address of network.subnet "
            f"{net.subnet}; omit it to get {next_free_wg_ip(net)}",
        )
    else:
        return wg
    return None


def _new_public_ip(net: Network, value: Any, field: str, bad: Callable[[str, str], None]) -> Any:
    """``value`` as a new backend's public address (``field``: public_ip or public_ip6), or
    None after ``bad(field, why)``: canonical, routable, outside the tunnel's subnet, of a
    family the hub has, and no host's already."""
    example = "2001:db8::21" if field == "public_ip6" else "203.0.113.21"
    addr, error = fields.parse_ip(value) if isinstance(value, str) else (None, None)
    why = fields.unroutable_reason(addr) if addr is not None else None
    if addr is None:
        bad(field, error or f"{_show(value)} is not an IP address; write e.g. {example}")
    elif why:
        bad(field, f"{_show(value)} is {why}; no other host can reach it: give the backend's public address")
    elif addr in net.subnet:
        bad(
            field,
            f"{_show(value)} is inside network.subnet {net.subnet}, the "
            "tunnel's own addresses; give the backend's public address",
        )
    elif addr.version not in net.hub.families:
        bad(
            field,
            f"{_show(value)} is IPv{addr.version} but the hub has "
            f"{fields.family_names(set(net.hub.families))} only: the tunnel runs over a family both ends "
            f"have; give the backend an address of the hub's family, or the hub an "
            f"IPv{addr.version} address (public_ip6 for IPv6) and deploy it first",
        )
    else:
        owner = next((h for h in net.hosts if addr in h.public_ips), None)
        reached = next((h for h in net.hosts if h.ssh_host == value), None)
        if owner is not None:
            which = "public_ip" if addr == owner.public_ip else "public_ip6"
            bad(field, f"{_show(str(addr))} is already the {which} of {owner.name!r}")
        elif reached is not None:
            bad(
                field,
                f"{_show(str(addr))} is where SSH reaches {reached.name!r} (its "
                "ssh_host); give the backend's own public address",
            )
        else:
            return addr
    return None


def remove_backend(path: str | os.PathLike[str], name: str, with_services: bool = False) -> Host:
    """Remove backend ``name`` from the file and return it; the file is unchanged on a problem.

    Services that run on the backend must be removed (or moved) first: silently dropping them
    would take sites offline. ``with_services`` removes them in the same edit (`--force`).
    """
    file = os.fspath(path)
    text = _read(file)
    net = _load_text(text, file, Path(file))
    problem = removal_problem(net, name, with_services)
    if problem:
        raise ConfigError([Problem(file, None, None, "name", problem)])
    index = next(i for i, h in enumerate(net.backends) if h.name == name)
    root = yaml.compose(text)
    edits = yamledit.remove_item(text, root, "backends", index)
    for i, svc in enumerate(net.services):
        if svc.backend == name:
            edits += yamledit.remove_item(text, root, "services", i)
    new_text = yamledit.apply(text, edits)
    new_net = _load_text(new_text, f"{file} (after removing {name})", Path(file))
    if any(h.name == name for h in new_net.hosts) or len(new_net.backends) != len(net.backends) - 1:
        raise AssertionError(f"bug: removing {name!r} did not remove exactly that backend")
    _write_atomic(file, text, new_text)
    return net.backends[index]


def removal_problem(net: Network, name: str, with_services: bool = False) -> str | None:
    """Why backend ``name`` cannot be removed from ``net`` (None: it can). The one statement of
    the rule: ``inv remove-backend`` asks it before it stops anything on a host."""
    if name == net.hub.name:
        return f"{_show(name)} is the hub (proxy); it cannot be removed"
    if not any(h.name == name for h in net.backends):
        known = ", ".join(h.name for h in net.backends) or "none"
        return f"there is no backend {_show(name)}; backends: {known}"
    if net.services_on(name) and not with_services:
        names = ", ".join(s.name for s in net.services_on(name))
        return (
            f"services {names} run on {name!r}; remove or move them first (or remove them with it: --force)"
        )
    return None


def hub_to_replace(net: Network, name: str | None, file: str) -> Host:
    """The hub a replace-hub means: the one named, or the only one (several and no name is a
    question only the user can answer)."""
    names = ", ".join(h.name for h in net.hubs)
    if name is None and len(net.hubs) > 1:
        problem = (
            f"the file has {len(net.hubs)} hubs ({names}); say which one the new server "
            f"replaces with --name, e.g. --name {net.hubs[-1].name}"
        )
    elif hub := next((h for h in net.hubs if name in (None, h.name)), None):
        return hub
    else:
        problem = f"--name {_show(name)} is not a hub; the hubs: {names}"
    raise ConfigError([Problem(file, None, None, "proxies", problem)])


def set_hub_address(
    path: str | os.PathLike[str], public_ip: str, public_ip6: str | None = None, name: str | None = None
) -> Host:
    """Give a hub (``name``; the only one by default) the addresses of a replacement server
    and return the new hub; the file is unchanged on any problem. The new hub has an address
    of each family the old one had (``public_ip6``: a dual-stack hub's IPv6 one, ``public_ip``
    then its IPv4 one), else a backend of that family would keep dialling the dead server. An
    ``ssh_host`` of the hub is left as it is (say so: it may name the dead server)."""
    file = os.fspath(path)
    text = _read(file)
    net = _load_text(text, file, Path(file))
    old = hub_to_replace(net, name, file)
    index = None if old.name == net.hub.name else [h.name for h in net.other_hubs].index(old.name)
    entry = "proxy" if index is None else f"proxies[{index}]"  # its place in the file
    problems: list[Problem] = []

    def address(value: str | None, flag: str, field: str, family: int | None) -> Any:
        if value is None:
            return None
        pub, error = fields.parse_ip(value) if isinstance(value, str) else (None, None)
        # every other host's addresses: the hub needs a server of its own
        taken = {a: h for h in net.hosts if h.name != old.name for a in h.public_ips}
        if pub is None:
            problem = error or f"{flag} {_show(value)} is not an IP address; write e.g. 203.0.113.10"
        elif family and pub.version != family:
            problem = (
                f"{flag} {_show(value)} is not an IPv{family} address; give the new hub's IPv{family} one"
            )
        elif why := fields.unroutable_reason(pub):
            problem = f"{flag} {_show(value)} is {why}; give the new hub's public address"
        elif pub in taken:
            h = taken[pub]
            which = "public_ip" if h.public_ip == pub else "public_ip6"
            problem = (
                f"{flag} {_show(value)} is the {which} of {h.role} {h.name!r}; "
                "the hub needs a server of its own"
            )
        else:
            return pub
        problems.append(Problem(file, None, None, field, problem))
        return None

    pub = address(public_ip, "--host", f"{entry}.public_ip", 4 if public_ip6 is not None else None)
    pub6 = address(public_ip6, "--host6", f"{entry}.public_ip6", 6)
    if pub is not None and not problems:
        families = {pub.version} | ({6} if pub6 is not None else set())
        was = ", ".join(str(a) for a in old.public_ips)
        if 6 in old.families and 6 not in families:
            problems.append(
                Problem(
                    file,
                    None,
                    None,
                    f"{entry}.public_ip6",
                    f"the hub has an IPv6 address too ({was}): its backends over IPv6 need the "
                    "new hub's; give it with --host6 (--host is then the IPv4 one), or first "
                    "remove proxy.public_ip6 (and every backend that has only IPv6) if the new "
                    "server has no IPv6",
                )
            )
        if 4 in old.families and 4 not in families:
            problems.append(
                Problem(
                    file,
                    None,
                    None,
                    f"{entry}.public_ip",
                    f"the hub has an IPv4 address ({was}): --host is its IPv4 address and "
                    "--host6 the IPv6 one",
                )
            )
        if problems and old.families == (6,):
            problems = [
                Problem(
                    file,
                    None,
                    None,
                    f"{entry}.public_ip",
                    f"the hub is IPv6-only ({was}): give the new hub's IPv6 address with --host "
                    "(with an IPv4 one too: --host IPv4 --host6 IPv6)",
                )
            ]
    if problems:
        raise ConfigError(problems)
    root = yaml.compose(text)
    hub = _find_key(root, "proxy") if index is None else _find_key(root, "proxies").value[index]
    edits = []
    node = _find_key(hub, "public_ip")
    edits.append(_replaced(node, str(pub)))
    if pub6 is not None:
        node6 = _find_key(hub, "public_ip6")
        if node6 is None or yamledit.is_null(node6):
            edits += yamledit.set_key(text, hub, "public_ip6", yamledit.scalar(str(pub6)))
        else:
            edits.append(_replaced(node6, str(pub6)))
    new_text = yamledit.apply(text, edits)
    new_net = _load_text(new_text, f"{file} (after the new hub address)", Path(file))
    _write_atomic(file, text, new_text)
    return new_net.host(old.name)


def _replaced(node, value: str) -> yamledit.Edit:
    """An edit that gives a scalar node a new value, in the quotes it was written with."""
    style = getattr(node, "style", None)
    text = yamledit.quoted(value, style) if style in ("'", '"') else yamledit.scalar(value)
    return yamledit.Edit(node.start_mark.index, node.end_mark.index, text)


def set_client_hub_key(path: str | os.PathLike[str], name: str, hub_key: str) -> Client:
    """Record in client ``name``'s entry the hub key its config was just shown with (public;
    verify compares it with the hub's). Unchanged when it is already that key."""
    file = os.fspath(path)
    text = _read(file)
    net = _load_text(text, file, Path(file))
    index = next(i for i, c in enumerate(net.clients) if c.name == name)
    if net.clients[index].hub_key == hub_key:
        return net.clients[index]
    entry = _find_key(yaml.compose(text), "clients").value[index]
    node = _find_key(entry, "hub_key")
    value = yamledit.scalar(hub_key)
    if node is None or yamledit.is_null(node):
        edits = yamledit.set_key(text, entry, "hub_key", value)
    else:
        edits = [yamledit.Edit(node.start_mark.index, node.end_mark.index, value)]
    new_text = yamledit.apply(text, edits)
    client = _load_text(new_text, f"{file} (after recording {name}'s hub key)", Path(file)).client(name)
    _write_atomic(file, text, new_text)
    return client


def _read(file: str) -> str:
    def fail(message: str, line: int | None = None, column: int | None = None) -> ConfigError:
        return ConfigError([Problem(file, line, column, "(file)", message)])

    try:
        size = os.stat(file).st_size
        if size > MAX_BYTES:
            raise fail(
                f"the file is {size / MAX_BYTES:.1f} MiB; a network file is at most 1 MiB "
                "(is this the right file?)"
            )
        with open(file, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise fail(MISSING_FILE) from None
    except IsADirectoryError:
        raise fail("is a directory; give the path of the network file") from None
    except PermissionError:
        raise fail("cannot be read (permission denied)") from None
    if len(data) > MAX_BYTES:  # grew between stat and read
        raise fail("the file is larger than 1 MiB; a network file is at most 1 MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        raise fail(
            f"byte {data[exc.start : exc.start + 1]!r} is not UTF-8; save the file as UTF-8",
            line,
            column,
        ) from None


def _write_atomic(file: str, old_text: str, new_text: str) -> None:
    """Replace the file's content in one step (temp file + os.replace), keeping its mode.

    The file is re-read first: if someone changed it since we read it, we stop rather than
    overwrite their change.
    """
    target = os.path.realpath(file)  # keep a symlinked network.yml a symlink
    with open(target, "rb") as f:
        if f.read() != old_text.encode("utf-8"):
            raise ConfigError(
                [Problem(file, None, None, "(file)", "changed while we were editing it; run again")]
            )
    mode = stat.S_IMODE(os.stat(target).st_mode)
    directory = os.path.dirname(target) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(target)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(new_text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _load_text(text: str, file: str, path: Path) -> Network:
    result = schema.check(text, file, path)
    if result.problems:
        raise ConfigError(result.problems)
    assert result.network is not None
    return result.network


def add_client(
    path: str | os.PathLike[str],
    name: str,
    public_key: str,
    wg_ip: str | None = None,
    expires: datetime.date | None = None,
    check_only: bool = False,
    hub_key: str | None = None,
) -> Client | None:
    """Append a client (only its public key) to the file and return it; the file is unchanged
    on any problem. Its address is the highest free one unless ``wg_ip`` is given.
    ``check_only``: raise the problems, change nothing, return None."""
    file = os.fspath(path)
    text = _read(file)
    net = _load_text(text, file, Path(file))
    problems: list[Problem] = []

    def bad(field: str, message: str) -> None:
        problems.append(Problem(file, None, None, field, message))

    _check_client_name(net, name, bad)
    _check_client_key(net, public_key, bad)
    if problems:
        raise ConfigError(problems)
    if check_only:
        return None
    root = yaml.compose(text)
    entry = [("name", yamledit.scalar(name)), ("public_key", yamledit.scalar(public_key))]
    if wg_ip is not None:
        entry.append(("wg_ip", yamledit.scalar(wg_ip)))
    if expires is not None:
        entry.append(("expires", expires.isoformat()))
    if hub_key is not None:  # the hub's key the config shown for it names
        entry.append(("hub_key", yamledit.scalar(hub_key)))
    new_text = yamledit.apply(text, yamledit.append_item(text, root, "clients", entry))
    result = schema.check(new_text, f"{file} (after adding {name})", Path(file))
    if result.problems:
        raise ConfigError(result.problems)
    # the address is allocated now and written with the client (it never moves afterwards)
    edits = []
    for mapping, addr in result.allocated:
        edits += yamledit.set_key(new_text, mapping, "wg_ip", str(addr))
    final = yamledit.apply(new_text, edits)
    client = _load_text(final, f"{file} (after adding {name})", Path(file)).client(name)
    _write_atomic(file, text, final)
    return client


def _check_client_name(net: Network, name: Any, bad: Callable[[str, str], None]) -> None:
    if not isinstance(name, str) or not fields.HOST_NAME_RE.fullmatch(name):
        bad("name", f"{_show(name)} is not a valid client name; {fields.NAME_HELP}")
    elif name == ALL_CLIENTS or name in {h.name for h in net.hosts}:
        bad("name", f"{_show(name)} is a host or means every client; choose another name")
    elif name in {c.name for c in net.clients}:
        bad(
            "name",
            f"{_show(name)} is already a client in {net.path}; remove it first "
            f"(inv remove-client {name}) or choose another name",
        )


def _check_client_key(net: Network, public_key: Any, bad: Callable[[str, str], None]) -> None:
    error = fields.public_key_error(public_key) if isinstance(public_key, str) else "missing"
    if error:
        bad("public_key", error)
        return
    owner = next((c for c in net.clients if c.public_key == public_key), None)
    if owner is not None:
        bad(
            "public_key",
            f"is already the public key of {owner.name!r}; each client has a key pair of its own",
        )


def remove_client(path: str | os.PathLike[str], name: str) -> Client:
    """Remove client ``name`` from the file and return it; unchanged on any problem (a service
    whose allow list names it must drop the name first: removing it silently would change who
    may reach that service)."""
    file = os.fspath(path)
    text = _read(file)
    net = _load_text(text, file, Path(file))
    index = next((i for i, c in enumerate(net.clients) if c.name == name), None)
    if index is None:
        known = ", ".join(c.name for c in net.clients) or "none"
        raise ConfigError(
            [Problem(file, None, None, "name", f"there is no client {_show(name)}; clients: {known}")]
        )
    users = [(i, s) for i, s in enumerate(net.services) if name in s.allow_names]
    if users:
        services = _find_key(yaml.compose(text), "services")
        problems = []
        for i, s in users:
            allow = _find_key(services.value[i], "allow") if services is not None else None
            mark = allow.start_mark if allow is not None else None
            problems.append(
                Problem(
                    file,
                    mark.line + 1 if mark else None,
                    mark.column + 1 if mark else None,
                    f"services[{i}].allow",
                    f"service {s.name!r} allows {name!r} by name; remove the name there first "
                    f"(or allow `clients`), then remove-client {name} again",
                )
            )
        raise ConfigError(problems)
    root = yaml.compose(text)
    new_text = yamledit.apply(text, yamledit.remove_item(text, root, "clients", index))
    new_net = _load_text(new_text, f"{file} (after removing {name})", Path(file))
    if len(new_net.clients) != len(net.clients) - 1 or name in {c.name for c in new_net.clients}:
        raise AssertionError(f"bug: removing {name!r} did not remove exactly that client")
    _write_atomic(file, text, new_text)
    return net.clients[index]


def _find_key(mapping, key: str):
    """The value node under ``key`` in a YAML mapping node (None: absent or not a mapping)."""
    if not isinstance(mapping, yaml.MappingNode):
        return None
    return next((v for k, v in mapping.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)
