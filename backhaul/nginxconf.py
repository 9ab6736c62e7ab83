"""What nginx on the hub serves, derived from the model: one virtual host per public service,
the shared conf (maps, upstreams, the port-80 and :443 catch-alls), the proxy settings from host
data, and what the installed nginx version allows. Pure, no host contact: deploys/nginx.py feeds
it facts and hands the files to the operations. The certificates those files point at are
decided in ``backhaul/tls.py``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backhaul.network import Host, Network
from backhaul.render import render
from backhaul.tls import WEBROOT, CertPaths, public_services

SITES_DIR = "/etc/nginx/sites-enabled"


SITE_PREFIX = "backhaul-"  # the vhost files backhaul owns; nothing else there is ever touched


SHARED_CONF = "/etc/nginx/conf.d/backhaul.conf"


DISTRO_DEFAULT_SITE = "/etc/nginx/sites-enabled/default"


# The certificate of the :443 catch-all where nginx cannot refuse the handshake (< 1.19.4, or
# its version unknown): self-signed, for no real name. Not under SELF_SIGNED_DIR (no service).
CATCH_ALL_DIR = "/etc/backhaul/catch-all"


CATCH_ALL_NAME = "invalid"  # RFC 6761: a name that never resolves


# Headers a client could send that frameworks trust as if a proxy had set them (Spring's
# ForwardedHeaderFilter, Rails, Django, Werkzeug's ProxyFix, Symfony, IIS rewrites): the hub
# does not set them, so it clears them. The ones it does set (X-Forwarded-For, X-Real-IP,
# X-Forwarded-Proto, X-Forwarded-Host, X-Forwarded-Port, Forwarded) replace the client's.
CLEARED_HEADERS = (
    "X-Forwarded-Server",
    "X-Forwarded-Scheme",
    "X-Forwarded-Prefix",
    "X-Forwarded-Ssl",
    "X-Original-URL",
    "X-Rewrite-URL",
    "X-Original-Host",
    "X-Host",
    "X-Client-IP",
    "True-Client-IP",
    "X-Cluster-Client-IP",
    "CF-Connecting-IP",
    "Fastly-Client-IP",
    "Front-End-Https",
    "X-Url-Scheme",
)


# `listen 443 ssl http2` is deprecated from nginx 1.25.1 on (`http2 on;` replaces it);
# `ssl_reject_handshake` exists from 1.19.4.
HTTP2_DIRECTIVE_SINCE = (1, 25, 1)


REJECT_HANDSHAKE_SINCE = (1, 19, 4)


@dataclass(frozen=True)
class Vhost:
    """One HTTPS virtual host: everything its template needs, already decided."""

    name: str
    file: str  # /etc/nginx/sites-enabled/backhaul-<name>.conf
    upstream: str  # nginx upstream name
    backend: str  # backend host name (for comments)
    address: str  # "10.50.0.2:8080": the service over the tunnel
    server_names: tuple[str, ...]
    websocket: bool
    allow: tuple[str, ...]
    hsts: bool
    cert: CertPaths
    restricted: bool = False  # an allow list was given (of names maybe none resolve yet): deny all else


def vhosts(net: Network, paths: dict[str, CertPaths]) -> list[Vhost]:
    """One virtual host per public service; ``paths``: service name -> certificate to serve."""
    out = []
    for s in public_services(net):
        backend = net.host(s.backend)
        out.append(
            Vhost(
                name=s.name,
                file=site_file(s.name),
                upstream=f"backhaul_{s.name.replace('-', '_')}",
                backend=backend.name,
                address=f"{backend.wg_ip}:{s.port}",
                server_names=s.domains,
                websocket=s.websocket,
                allow=s.allow,
                hsts=s.hsts,
                cert=paths[s.name],
                restricted=s.restricted,
            )
        )
    return out


def port80_conflicts(default80: list[str], installed: bool) -> tuple[list[str], list[str]]:
    """Of the files declaring the port-80 default server (which backhaul's shared conf needs):
    (those to remove, those in the way). Only the distro's default site is removed (a symlink:
    sites-available keeps it); before nginx is installed, its package's default site is bound
    to come, and to conflict."""
    others = [p for p in default80 if p != SHARED_CONF]
    remove = [DISTRO_DEFAULT_SITE] if DISTRO_DEFAULT_SITE in others or not installed else []
    return remove, [p for p in others if p not in remove]


def catch_all_paths() -> CertPaths:
    return CertPaths(f"{CATCH_ALL_DIR}/fullchain.pem", f"{CATCH_ALL_DIR}/privkey.pem")


def site_file(name: str) -> str:
    return f"{SITES_DIR}/{SITE_PREFIX}{name}.conf"


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """``"1.22.1"`` (or a Debian version ``"1.22.1-9+deb12u1"``) -> ``(1, 22, 1)``."""
    m = re.match(r"(?:\d+:)?(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if not m:
        return None
    return tuple(int(g or 0) for g in m.groups())


def http2_directive(version: tuple[int, ...] | None) -> bool:
    """True: ``http2 on;`` (nginx >= 1.25.1). False: ``listen ... ssl http2``, which every
    version accepts (1.25.1+ only warns), so it is also the choice when the version is unknown."""
    return version is not None and version >= HTTP2_DIRECTIVE_SINCE


def reject_handshake(version: tuple[int, ...] | None) -> bool:
    return version is not None and version >= REJECT_HANDSHAKE_SINCE


_TIME_RE = re.compile(r"[1-9][0-9]{0,6}(ms|s|m|h|d)?")


_SIZE_RE = re.compile(r"[0-9]{1,9}[kKmMgG]?")


@dataclass(frozen=True)
class ProxySettings:
    """The tunables of the proxied path (host data ``nginx_*``; defaults in deploys/nginx.py)."""

    keepalive: int  # idle upstream connections per worker and service; 0 = one per request
    keepalive_timeout: str
    connect_timeout: str
    read_timeout: str
    websocket_timeout: str
    client_max_body_size: str
    server_extra: str  # raw directives for every vhost's server block

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ProxySettings:
        """From host data (``nginx_<field>``); ValueError lists every bad value at once."""
        values = {f: data.get(f"nginx_{f}") for f in cls.__dataclass_fields__}
        problems = []
        keepalive = values["keepalive"]
        if isinstance(keepalive, bool) or not isinstance(keepalive, int) or keepalive < 0:
            problems.append(f"nginx_keepalive={keepalive!r}: a number of connections, 0 = off")
        for f in ("keepalive_timeout", "connect_timeout", "read_timeout", "websocket_timeout"):
            if not _TIME_RE.fullmatch(str(values[f])):
                problems.append(f"nginx_{f}={values[f]!r}: an nginx time, e.g. 5s, 500ms, 1h")
        if not _SIZE_RE.fullmatch(str(values["client_max_body_size"])):
            problems.append(
                f"nginx_client_max_body_size={values['client_max_body_size']!r}: "
                "an nginx size, e.g. 16m (0 = no limit)"
            )
        extra = values["server_extra"] or ""
        if not isinstance(extra, str) or "}" in extra or "{" in extra:
            problems.append("nginx_server_extra: plain directives ending in ';', no blocks")
        if problems:
            raise ValueError("; ".join(problems))
        values = {k: str(v) for k, v in values.items()}
        values["keepalive"] = int(keepalive)
        values["server_extra"] = extra.strip()
        return cls(**values)


def acme_peers(net: Network, hub: Host) -> list[str]:
    """The other hubs' port 80 over the tunnel. DNS names every hub, so the CA may ask any of
    them for a challenge one hub's certbot wrote: a hub that lacks it asks the others. Only the
    challenge token travels; each hub keeps its own TLS key and certificate."""
    return [f"{h.wg_ip}:80" for h in net.hubs if h.name != hub.name]


def nginx_files(
    net: Network,
    paths: dict[str, CertPaths],
    settings: ProxySettings,
    version: tuple[int, ...] | None,
    ipv6: bool,
    hub: Host | None = None,
) -> dict[str, str]:
    """Every nginx file backhaul owns on the hub, path -> content: the shared conf and one
    vhost per public service. ``paths``: service name -> certificate nginx serves now.
    ``hub``: the hub these files are for (None: the first); with more hubs, it fetches an ACME
    challenge it lacks from the others (``acme_peers``)."""
    vh = vhosts(net, paths)
    common = {
        "settings": settings,
        "ipv6": ipv6,
        "http2_directive": http2_directive(version),
        "listen_http2": "" if http2_directive(version) else " http2",
    }
    # port 80 answers the services' names only (sorted: the file stays the same run to run)
    http_names = sorted({n for v in vh for n in v.server_names})
    files = {
        SHARED_CONF: render(
            "nginx-backhaul.conf.j2",
            vhosts=vh,
            webroot=WEBROOT,
            http_names=http_names,
            catch_all=catch_all_paths(),
            reject_handshake=reject_handshake(version),
            acme_peers=acme_peers(net, hub or net.hub),
            **common,
        )
    }
    for v in vh:
        files[v.file] = render("nginx-vhost.conf.j2", v=v, cleared_headers=CLEARED_HEADERS, **common)
    return files
