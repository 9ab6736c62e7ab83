"""The hub's TLS front, derived from the model: the certificate each service needs, the certbot
command that gets it, and the nginx files that serve the services. Pure, no host contact: the
deploy (deploys/nginx.py) feeds it facts and hands its results to the operations.

One certificate per service with domains, named after the service (its certbot ``--cert-name``
and the directory of its files), valid for all its domains. Services without domains are
internal: no certificate, no virtual host.

Where the files live on the hub (``docs/DESIGN.md``):

    /etc/letsencrypt/live/<service>/     mode acme: certbot's lineage (fullchain.pem, privkey.pem)
    /etc/backhaul/tls/<service>/         mode self-signed, and mode acme's temporary stand-in that
                                         lets nginx start (and serve the challenge) before the
                                         first issuance
    /var/www/backhaul-acme               the webroot for HTTP-01 challenges (port 80)
    /etc/backhaul/acme-ca.pem            tls.acme_ca_bundle, when set: what certbot trusts
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from backhaul.network import Network, Service
from backhaul.render import render

WEBROOT = "/var/www/backhaul-acme"
LIVE_DIR = "/etc/letsencrypt/live"
RENEWAL_DIR = "/etc/letsencrypt/renewal"
SELF_SIGNED_DIR = "/etc/backhaul/tls"
CA_BUNDLE = "/etc/backhaul/acme-ca.pem"
# certbot runs every executable here after each renewal (not after `certonly`).
RENEWAL_HOOK = "/etc/letsencrypt/renewal-hooks/deploy/backhaul-reload-nginx"
# The renewals run by certbot.timer get REQUESTS_CA_BUNDLE from this drop-in.
CERTBOT_DROPIN = "/etc/systemd/system/certbot.service.d/backhaul-acme-ca.conf"

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
    "X-Forwarded-Server", "X-Forwarded-Scheme", "X-Forwarded-Prefix", "X-Forwarded-Ssl",
    "X-Original-URL", "X-Rewrite-URL", "X-Original-Host", "X-Host", "X-Client-IP",
    "True-Client-IP", "X-Cluster-Client-IP", "CF-Connecting-IP", "Fastly-Client-IP",
    "Front-End-Https", "X-Url-Scheme",
)

SELF_SIGNED_DAYS = 365  # Mozilla's intermediate profile: a certificate lives at most 366 days
RENEW_BEFORE_DAYS = 30  # a self-signed certificate this close to expiry is made anew

# `listen 443 ssl http2` is deprecated from nginx 1.25.1 on (`http2 on;` replaces it);
# `ssl_reject_handshake` exists from 1.19.4.
HTTP2_DIRECTIVE_SINCE = (1, 25, 1)
REJECT_HANDSHAKE_SINCE = (1, 19, 4)


@dataclass(frozen=True)
class CertPaths:
    cert: str  # the full chain, for ssl_certificate
    key: str


@dataclass(frozen=True)
class Certificate:
    """What one service needs: a certificate named ``name`` valid for ``domains``."""

    name: str
    domains: tuple[str, ...]
    mode: str  # acme | self-signed | provided
    final: CertPaths  # where the real certificate is (or will be)
    stand_in: CertPaths | None  # acme only: the temporary self-signed one until issuance


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


def self_signed_paths(name: str) -> CertPaths:
    d = f"{SELF_SIGNED_DIR}/{name}"
    return CertPaths(f"{d}/fullchain.pem", f"{d}/privkey.pem")


def live_paths(name: str) -> CertPaths:
    d = f"{LIVE_DIR}/{name}"
    return CertPaths(f"{d}/fullchain.pem", f"{d}/privkey.pem")


def public_services(net: Network) -> tuple[Service, ...]:
    """Services with domains: each gets a certificate and a virtual host."""
    return tuple(s for s in net.services if s.domains)


def certificates(net: Network) -> list[Certificate]:
    """The certificate each public service needs, per ``tls.mode``."""
    out = []
    for s in public_services(net):
        if net.tls.mode == "acme":
            out.append(Certificate(s.name, s.domains, "acme", live_paths(s.name),
                                   self_signed_paths(s.name)))  # fmt: skip
        elif net.tls.mode == "self-signed":
            out.append(Certificate(s.name, s.domains, "self-signed", self_signed_paths(s.name),
                                   None))  # fmt: skip
        else:  # provided: one certificate (the operator's) for every service
            assert net.tls.cert and net.tls.key  # the model requires both in this mode
            out.append(Certificate(s.name, s.domains, "provided",
                                   CertPaths(net.tls.cert, net.tls.key), None))  # fmt: skip
    return out


def serving_paths(cert: Certificate, state: dict[str, Any]) -> CertPaths:
    """What nginx points at now: the final certificate once it exists, else the stand-in.

    ``state`` is the ``CertificateState`` fact. A lineage that exists but is about to be
    re-issued (new domains) keeps serving: nginx must be able to start with it meanwhile.
    """
    if cert.stand_in and cert.final.cert not in state.get("certs", {}):
        return cert.stand_in
    return cert.final


def root_key_ids(pem: str) -> frozenset[str]:
    """The subject key ids (``AB:CD:...``) of the CA certificates in a PEM bundle: what a
    chain's last certificate names as its issuer when one of them signed it."""
    from cryptography import x509  # pyinfra's SSH (paramiko) brings it

    ids = set()
    for c in x509.load_pem_x509_certificates(pem.encode()):
        try:
            ski = c.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except x509.ExtensionNotFound:
            ski = x509.SubjectKeyIdentifier.from_public_key(c.public_key()).digest
        ids.add(ski.hex(":").upper())
    return frozenset(ids)


def foreign_issuer(have: Mapping[str, Any], roots: frozenset[str] | None) -> str | None:
    """The CA that issued a certificate, when it is not one of ``roots`` (key ids, from
    ``tls.verify_ca_bundle``); None when it is, or when that cannot be told (no roots
    configured, or a chain that does not name its issuer's key: never re-issue on a guess)."""
    key = have.get("chain_issuer_key")
    if not roots or not key or key in roots:
        return None
    return have.get("chain_issuer") or f"the CA with key id {key}"


def issue_reason(cert: Certificate, state: dict[str, Any], server: str,
                 roots: frozenset[str] | None = None) -> str | None:  # fmt: skip
    """Why certbot must be asked for ``cert`` now, or None: a valid certificate for the same
    domains from the same ACME server, chaining to the configured CA (``roots``: key ids of
    ``tls.verify_ca_bundle``, when set), is never requested again (certbot.timer renews it)."""
    have = state.get("certs", {}).get(cert.final.cert)
    if not have:
        return "no certificate yet"
    if sorted(have.get("names") or []) != sorted(cert.domains):
        return f"its domains changed (has {', '.join(have.get('names') or []) or 'none'})"
    issued_by = state.get("renewal_servers", {}).get(cert.name)
    if issued_by and issued_by.rstrip("/") != server.rstrip("/"):
        return f"it comes from another ACME server ({issued_by})"
    foreign = foreign_issuer(have, roots)
    if foreign:
        return (f"its chain ends at {foreign}, which is not a CA of tls.verify_ca_bundle "
                "(the ACME server's CA changed)")  # fmt: skip
    not_after, now = have.get("not_after"), state.get("now")
    if not_after is None or now is None or not_after <= now:
        return "it has expired"
    return None


ACCOUNTS_DIR = "/etc/letsencrypt/accounts"
_ACCOUNT_PATH_RE = re.compile(r"[A-Za-z0-9.:\[\]-]+(/[A-Za-z0-9._~-]+)*")


def account_dir(server: str) -> str:
    """certbot's directory of the accounts it holds at ACME server ``server`` (its
    ``server_path``: the URL's host, port and path)."""
    url = urlparse(server)
    where = (url.netloc + url.path).rstrip("/")
    if not _ACCOUNT_PATH_RE.fullmatch(where) or ".." in where:
        raise ValueError(f"unexpected ACME server URL {server!r}")
    return f"{ACCOUNTS_DIR}/{where}"


def needs_new_self_signed(cert: CertPaths, domains: tuple[str, ...], state: dict[str, Any]) -> bool:
    have = state.get("certs", {}).get(cert.cert)
    if not have or sorted(have.get("names") or []) != sorted(domains):
        return True
    not_after, now = have.get("not_after"), state.get("now")
    return not_after is None or now is None or not_after - now < RENEW_BEFORE_DAYS * 86400


def certbot_args(cert: Certificate, server: str, email: str, state: dict[str, Any]) -> list[str]:
    """``certbot certonly --webroot`` for ``cert`` (never the nginx plugin: it would edit the
    configs backhaul owns). A lineage with other domains is re-issued under the same name
    (``--renew-with-new-domains``); one from another server or expired, with
    ``--force-renewal`` (certbot would otherwise keep it: it is "not due")."""
    args = ["certbot", "certonly", "--webroot", "-w", WEBROOT, "--cert-name", cert.name]
    for d in cert.domains:
        args += ["-d", d]
    args += ["--server", server, "-m", email, "--agree-tos", "--no-eff-email",
             "--non-interactive", "--key-type", "ecdsa", "--elliptic-curve", "secp256r1"]  # fmt: skip
    have = state.get("certs", {}).get(cert.final.cert)
    if have:
        if sorted(have.get("names") or []) != sorted(cert.domains):
            args.append("--renew-with-new-domains")
        else:
            args.append("--force-renewal")
    return args


def vhosts(net: Network, paths: dict[str, CertPaths]) -> list[Vhost]:
    """One virtual host per public service; ``paths``: service name -> certificate to serve."""
    out = []
    for s in public_services(net):
        backend = net.host(s.backend)
        out.append(Vhost(
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
        ))  # fmt: skip
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


# -- nginx files --------------------------------------------------------------------------------

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
            problems.append(f"nginx_client_max_body_size={values['client_max_body_size']!r}: "
                            "an nginx size, e.g. 16m (0 = no limit)")  # fmt: skip
        extra = values["server_extra"] or ""
        if not isinstance(extra, str) or "}" in extra or "{" in extra:
            problems.append("nginx_server_extra: plain directives ending in ';', no blocks")
        if problems:
            raise ValueError("; ".join(problems))
        values = {k: str(v) for k, v in values.items()}
        values["keepalive"] = int(keepalive)
        values["server_extra"] = extra.strip()
        return cls(**values)


def nginx_files(net: Network, paths: dict[str, CertPaths], settings: ProxySettings,
                version: tuple[int, ...] | None, ipv6: bool) -> dict[str, str]:  # fmt: skip
    """Every nginx file backhaul owns on the hub, path -> content: the shared conf and one
    vhost per public service. ``paths``: service name -> certificate nginx serves now."""
    vh = vhosts(net, paths)
    common = {
        "settings": settings,
        "ipv6": ipv6,
        "http2_directive": http2_directive(version),
        "listen_http2": "" if http2_directive(version) else " http2",
    }
    # port 80 answers the services' names only (sorted: the file stays the same run to run)
    http_names = sorted({n for v in vh for n in v.server_names})
    files = {SHARED_CONF: render("nginx-backhaul.conf.j2", vhosts=vh, webroot=WEBROOT,
                                 http_names=http_names, catch_all=catch_all_paths(),
                                 reject_handshake=reject_handshake(version), **common)}  # fmt: skip
    for v in vh:
        files[v.file] = render("nginx-vhost.conf.j2", v=v, cleared_headers=CLEARED_HEADERS,
                               **common)  # fmt: skip
    return files
