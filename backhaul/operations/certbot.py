"""
Certificates on the hub: ACME with certbot (``--webroot``), and self-signed ones with openssl.

certbot never edits nginx's configuration here (no nginx plugin): backhaul owns those files and
changes them only through ``nginx.config``, with ``nginx -t`` first. certbot writes challenge
files into a webroot that nginx serves on port 80, and its lineage under
``/etc/letsencrypt/live/<name>/``. Renewal is certbot's own timer; ``acme_client`` installs
the hook that reloads nginx after a renewal and, for a private ACME server, the CA bundle and
the ``REQUESTS_CA_BUNDLE`` the timer's renewals need.
"""

from __future__ import annotations

import shlex
import time

from pyinfra import host
from pyinfra.api import OperationValueError, operation

from backhaul import readlog
from backhaul import tls as tlsplan
from backhaul.facts import snapshot
from backhaul.facts.nginx import CertbotState, CertificateState, OwnedCertificates, check_path
from backhaul.operations import hostfile

LOG = "/var/log/letsencrypt/letsencrypt.log"  # certbot's log of its latest run


@operation()
def acme_client(
    renewal_hook: str, ca_bundle: str | None = None, dropin: str | None = None, webroot: str = tlsplan.WEBROOT
):
    """
    Prepare the hub for certbot: webroot, renewal hook, private CA trust, timer.

    + renewal_hook: content of the deploy hook (run by certbot after each renewal), installed
      as ``/etc/letsencrypt/renewal-hooks/deploy/backhaul-reload-nginx`` (0755)
    + ca_bundle: PEM the ACME client trusts (a private ACME server such as the lab's pebble),
      installed as ``/etc/backhaul/acme-ca.pem``; None removes it
    + dropin: the ``certbot.service`` drop-in that gives the timer's renewals
      ``REQUESTS_CA_BUNDLE`` (with ``ca_bundle``); None removes it
    + webroot: the directory nginx serves ``/.well-known/acme-challenge/`` from

    ``certbot.timer`` (Debian's, twice a day) is enabled and started when it is not.

    **Example:**

    .. code:: python

        certbot.acme_client(name="ACME client", renewal_hook=hook_script)
    """
    check_path(webroot)
    if (ca_bundle is None) != (dropin is None):
        raise OperationValueError("certbot.acme_client: give ca_bundle and dropin together")
    files = {
        tlsplan.RENEWAL_HOOK: (renewal_hook, "755"),
        tlsplan.CA_BUNDLE: (ca_bundle, "644"),
        tlsplan.CERTBOT_DROPIN: (dropin, "644"),
    }
    st = snapshot.get(CertbotState, paths=sorted(files), dirs=[webroot])
    have = st.get("files", {})
    changed = False
    if webroot not in st.get("dirs", []):
        yield f"mkdir -p {shlex.quote(webroot)}/.well-known/acme-challenge"
        changed = True
    dropin_changed = False
    for path, (content, mode) in files.items():
        if content is None and path in have:
            yield f"rm -f {shlex.quote(path)}"
        elif content is not None and have.get(path) != hostfile.sha256(content):
            yield from hostfile.write(path, content, mode, mkdir=True)
        else:
            continue
        changed = True
        dropin_changed = dropin_changed or path == tlsplan.CERTBOT_DROPIN
    if dropin_changed:
        yield "systemctl daemon-reload"
    if not st.get("timer_enabled") or not st.get("timer_active"):
        yield "systemctl enable --now certbot.timer"
    elif not changed:
        host.noop("ACME client: webroot, renewal hook and CA trust in place; certbot.timer on")


@operation()
def certificate(
    cert_name: str,
    domains: list[str],
    server: str,
    email: str,
    ca_bundle: bool = False,
    roots: list[str] | None = None,
    webroot: str = tlsplan.WEBROOT,
):
    """
    Get a certificate from an ACME server with ``certbot certonly --webroot``, once.

    + cert_name: the certificate name (``--cert-name``): ``/etc/letsencrypt/live/<name>/``
    + domains: every name it must be valid for
    + server: the ACME directory URL
    + email: the ACME account contact
    + ca_bundle: run certbot with ``REQUESTS_CA_BUNDLE=/etc/backhaul/acme-ca.pem`` (see
      ``acme_client``)
    + roots: subject key ids of the CA certificates the chain must end at
      (``tls.verify_ca_bundle``); None: not checked
    + webroot: where certbot writes the challenge files (served by nginx on port 80)

    Asks the ACME server only when the hub has no certificate of that name, or one for other
    domains, from another server, from a CA not in ``roots``, or expired: a valid certificate
    is never requested again (certbot.timer renews it). The existing certificate is read on
    the hub (names, expiry, issuer of its chain, ``server`` of its renewal conf) by the
    ``CertificateState`` fact.

    **Example:**

    .. code:: python

        certbot.certificate(
            name="Certificate for app", cert_name="app", domains=["app.example.com"],
            server="https://acme-v02.api.letsencrypt.org/directory", email="ops@example.com",
        )
    """
    name = cert_name
    cert = tlsplan.Certificate(name, tuple(domains), "acme", tlsplan.live_paths(name), None)
    st = snapshot.get(CertificateState, certs=[cert.final.cert], lineages=[name])
    readlog.answer_holds_until(tlsplan.clock_bound(st))  # (readlog.py)
    reason = tlsplan.issue_reason(cert, st, server, frozenset(roots) if roots else None)
    if reason is None:
        until = st["certs"][cert.final.cert]["not_after"]
        host.noop(
            f"certificate {name} is valid for {', '.join(domains)} until "
            f"{time.strftime('%Y-%m-%d', time.gmtime(until))}"
        )
        return
    args = tlsplan.certbot_args(cert, server, email, st)
    if webroot != tlsplan.WEBROOT:
        args[args.index(tlsplan.WEBROOT)] = check_path(webroot)
    env = f"REQUESTS_CA_BUNDLE={tlsplan.CA_BUNDLE} " if ca_bundle else ""
    run = env + " ".join(shlex.quote(a) for a in args)
    # An ACME server that no longer knows certbot's account (a CA that changed, a lab's pebble
    # restarted: the same reasons a chain from another CA is issued again) refuses every order
    # with accountDoesNotExist: that account is of no use any more, so certbot registers anew.
    accounts = shlex.quote(tlsplan.account_dir(server))
    yield (
        f"{run} || {{ grep -q accountDoesNotExist {LOG} && echo 'backhaul: the ACME server "
        f"no longer knows this account: registering a new one' && rm -rf {accounts} && {run}; }}"
    )


@operation()
def self_signed(cert: str, key: str, domains: list[str], days: int = tlsplan.SELF_SIGNED_DAYS):
    """
    Make a self-signed certificate (ECDSA P-256) on the host, when it is missing, names other
    domains, or expires within 30 days.

    + cert: path of the certificate to write
    + key: path of its private key (0600; made on the host, never leaves it)
    + domains: the subjectAltName DNS names
    + days: validity

    **Example:**

    .. code:: python

        certbot.self_signed(
            name="Self-signed certificate for app",
            cert="/etc/backhaul/tls/app/fullchain.pem", key="/etc/backhaul/tls/app/privkey.pem",
            domains=["app.internal"],
        )
    """
    check_path(cert)
    check_path(key)
    if not domains:
        raise OperationValueError("certbot.self_signed: give at least one domain")
    st = snapshot.get(CertificateState, certs=[cert])
    readlog.answer_holds_until(tlsplan.clock_bound(st))  # (readlog.py)
    if not tlsplan.needs_new_self_signed(tlsplan.CertPaths(cert, key), tuple(domains), st):
        host.noop(f"self-signed certificate {cert} is valid for {', '.join(domains)}")
        return
    cn = domains[0] if len(domains[0]) <= 64 else "backhaul"
    san = ",".join(f"DNS:{d}" for d in domains)
    q = shlex.quote
    dirs = sorted({cert.rsplit("/", 1)[0], key.rsplit("/", 1)[0]})
    yield (
        f"umask 077 && mkdir -p {' '.join(q(d) for d in dirs)} && "
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        f"-days {int(days)} -subj {q('/CN=' + cn)} -addext {q('subjectAltName=' + san)} "
        f"-keyout {q(key + '.new')} -out {q(cert + '.new')} 2>&1 && "
        f"chmod 644 {q(cert + '.new')} && mv -f {q(key + '.new')} {q(key)} && "
        f"mv -f {q(cert + '.new')} {q(cert)}"
    )


@operation()
def prune(lineages: list[str], self_signed: list[str]):
    """
    Delete the certificates backhaul made that no service uses any more.

    + lineages: certbot lineages to keep; any other made with backhaul's webroot is deleted
      (``certbot delete``: else certbot.timer would renew it for ever, and fail once the
      name's DNS points elsewhere)
    + self_signed: self-signed certificates (``/etc/backhaul/tls/<name>``) to keep

    Lineages an operator made with another webroot or plugin are never touched. Run it after
    the nginx configuration stopped using them.

    **Example:**

    .. code:: python

        certbot.prune(name="Certificates of removed services", lineages=["app"],
                      self_signed=["app"])
    """
    st = snapshot.get(OwnedCertificates, webroot=tlsplan.WEBROOT, self_signed_dir=tlsplan.SELF_SIGNED_DIR)
    stale_lineages = [n for n in st["lineages"] if n not in lineages]
    stale_dirs = [n for n in st["self_signed"] if n not in self_signed]
    for n in stale_lineages:
        yield f"certbot delete --non-interactive --cert-name {shlex.quote(n)}"
    for n in stale_dirs:
        yield f"rm -rf {shlex.quote(f'{tlsplan.SELF_SIGNED_DIR}/{n}')}"
    if not stale_lineages and not stale_dirs:
        host.noop("no certificate of a removed service left")
