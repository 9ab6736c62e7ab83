"""The hub's certificates, derived from the model: the certificate each service needs, where
it is served from, and the certbot command that gets it (the nginx files that serve them are
``backhaul/nginxconf.py``). Pure, no host contact: the deploy (deploys/nginx.py) feeds it facts
and hands its results to the operations.

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

WEBROOT = "/var/www/backhaul-acme"
LIVE_DIR = "/etc/letsencrypt/live"
SELF_SIGNED_DIR = "/etc/backhaul/tls"
CA_BUNDLE = "/etc/backhaul/acme-ca.pem"
# certbot runs every executable here after each renewal (not after `certonly`).
RENEWAL_HOOK = "/etc/letsencrypt/renewal-hooks/deploy/backhaul-reload-nginx"
# The renewals run by certbot.timer get REQUESTS_CA_BUNDLE from this drop-in.
CERTBOT_DROPIN = "/etc/systemd/system/certbot.service.d/backhaul-acme-ca.conf"

SELF_SIGNED_DAYS = 365  # Mozilla's intermediate profile: a certificate lives at most 366 days
RENEW_BEFORE_DAYS = 30  # a self-signed certificate this close to expiry is made anew


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
            out.append(Certificate(s.name, s.domains, "acme", live_paths(s.name), self_signed_paths(s.name)))
        elif net.tls.mode == "self-signed":
            out.append(Certificate(s.name, s.domains, "self-signed", self_signed_paths(s.name), None))
        else:  # provided: one certificate (the operator's) for every service
            assert net.tls.cert and net.tls.key  # the model requires both in this mode
            out.append(Certificate(s.name, s.domains, "provided", CertPaths(net.tls.cert, net.tls.key), None))
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


def issue_reason(
    cert: Certificate, state: dict[str, Any], server: str, roots: frozenset[str] | None = None
) -> str | None:
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
        return (
            f"its chain ends at {foreign}, which is not a CA of tls.verify_ca_bundle "
            "(the ACME server's CA changed)"
        )
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


NEVER = 2**53  # a time no clock reaches (and JSON keeps exact)


def clock_bound(state: dict[str, Any]) -> int:
    """Until when every decision of this module from ``state`` (a ``CertificateState``) gives
    the answer it gives now: the earliest renewal time of its certificates (each expires later
    still); ``NEVER`` when it has none. A no-op deploy is asked again without pyinfra only
    before that time (backhaul/readlog.py)."""
    ends = [c.get("not_after") for c in state.get("certs", {}).values()]
    if any(end is None for end in ends):
        return 0  # unreadable: decided anew every time
    return min((end - RENEW_BEFORE_DAYS * 86400 for end in ends), default=NEVER)


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
    args += [
        "--server",
        server,
        "-m",
        email,
        "--agree-tos",
        "--no-eff-email",
        "--non-interactive",
        "--key-type",
        "ecdsa",
        "--elliptic-curve",
        "secp256r1",
    ]
    have = state.get("certs", {}).get(cert.final.cert)
    if have:
        if sorted(have.get("names") or []) != sorted(cert.domains):
            args.append("--renew-with-new-domains")
        else:
            args.append("--force-renewal")
    return args


# -- nginx files --------------------------------------------------------------------------------
