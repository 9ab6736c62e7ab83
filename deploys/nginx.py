"""nginx with TLS on the hub: one HTTPS virtual host per service with domains, proxied over the
tunnel, and its certificate (ACME via certbot, self-signed, or provided).

    pyinfra inventory.py deploys/nginx.py

Order on the hub, each step only when the facts show it is needed:
  1. packages (nginx, openssl; certbot for ACME), never their Recommends; the kernel's TCP
     retransmission limit (hub_tcp_retries2);
  2. ACME only: webroot, renewal hook (reloads nginx), the private CA's trust, certbot.timer;
  3. self-signed certificates (mode self-signed), or temporary ones for services whose ACME
     certificate does not exist yet, so that nginx can start and answer the challenge;
  4. if a temporary certificate is in use, or a certificate is to be issued: the
     configuration with the names certbot validates (port 80 answers only those), then certbot
     (again for a certificate from a CA other than tls.verify_ca_bundle's);
  5. the configuration with the final certificates. Every configuration change passes
     `nginx -t` before nginx reloads (backhaul.operations.nginx); a no-op run reloads nothing;
  6. certificates backhaul made for services that are gone are deleted (after 5: nothing
     uses them any more).
"""

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import systemd
from pyinfra.operations.util import any_changed

from backhaul import nginxconf, readlog, software, tls
from backhaul.facts import snapshot
from backhaul.facts.nginx import CertificateState, NginxState
from backhaul.network import load_current
from backhaul.operations import certbot, kernel, nginx, packages
from backhaul.operations.nginx import LOCK
from backhaul.render import render

DEFAULTS = {
    # Idle upstream connections each nginx worker keeps per service: requests reuse them
    # instead of opening a TCP connection over the tunnel each time (0 = off).
    "nginx_keepalive": 32,
    # An idle upstream connection is closed after this; below the 5 s idle timeout of Node.js,
    # uvicorn and Apache so that nginx, not the backend, closes it (a request sent on a
    # connection the backend is closing fails). Raise gunicorn's --keep-alive (2 s) above it.
    "nginx_keepalive_timeout": "4s",
    # A backend that is down answers 502 ("backend down" page) after at most this.
    "nginx_connect_timeout": "5s",
    # Longest wait for a response (between two reads/writes) from a plain HTTP backend.
    "nginx_read_timeout": "60s",
    # The same for WebSocket services: how long an idle WebSocket stays open.
    "nginx_websocket_timeout": "1h",
    # Largest request body (uploads); Debian's default is 1m.
    "nginx_client_max_body_size": "16m",
    # Raw directives added to every backhaul server block, e.g. "access_log off;"
    # (nginx -t checks them like the rest).
    "nginx_server_extra": "",
    # The hub's kernel gives up on a TCP connection whose data is not acknowledged after this
    # many retransmissions (5: ~12.6 s; Linux's default 15: ~15 min). When a backend's tunnel
    # dies silently, a request sent on a kept-alive upstream connection then fails with an
    # error nginx retries on a new connection (a 502 "backend down" page), instead of waiting
    # for the read timeout (a 504 after 60 s). None: leave the kernel's setting alone.
    "hub_tcp_retries2": 5,
}
SYSCTL_FILE = "/etc/sysctl.d/60-backhaul-frontdoor.conf"

SITES_GLOB = f"{nginxconf.SITES_DIR}/{nginxconf.SITE_PREFIX}*.conf"


def _settings() -> nginxconf.ProxySettings:
    try:
        return nginxconf.ProxySettings.from_data(host.data)
    except ValueError as e:
        raise DeployError(f"{host.name}: bad nginx host data: {e}") from None


def _read_ca(path, network) -> str:
    try:
        text = path.read_text()
    except OSError as e:
        raise DeployError(
            f"tls.acme_ca_bundle in {network}: cannot read {path} ({e.strerror}); "
            "fix the path or remove the key"
        ) from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise DeployError(f"tls.acme_ca_bundle in {network}: {path} holds no PEM certificate")
    return text


def _roots(net) -> frozenset[str] | None:
    """Key ids of tls.verify_ca_bundle's CAs: an ACME certificate whose chain ends elsewhere
    was issued by another CA (the ACME server changed, or a lab's pebble got a new root) and
    is issued again. None (not set): the renewal conf's ACME server URL is what tells."""
    path = net.tls.verify_ca_bundle
    if net.tls.mode != "acme" or not path:
        return None
    try:
        roots = tls.root_key_ids(path.read_text())
    except (OSError, ValueError) as e:
        raise DeployError(
            f"tls.verify_ca_bundle in {net.path}: cannot read certificates from "
            f"{path} ({e}); fix the path or remove the key"
        ) from None
    if not roots:
        raise DeployError(f"tls.verify_ca_bundle in {net.path}: {path} holds no PEM certificate")
    return roots


def _tcp_retries() -> None:
    """The hub's kernel gives up on unacknowledged data after ``hub_tcp_retries2``
    retransmissions (None: the kernel's own setting)."""
    retries = host.data.get("hub_tcp_retries2")
    if retries is None:
        return
    if isinstance(retries, bool) or not isinstance(retries, int) or not 3 <= retries <= 15:
        raise DeployError(
            f"{host.name}: bad host data hub_tcp_retries2={retries!r}: a number "
            "from 3 to 15 (or None to leave the kernel's setting)"
        )
    kernel.settings(
        name="TCP gives up on unacknowledged data sooner (a dead tunnel is a 502 soon)",
        values={"net.ipv4.tcp_retries2": retries},
        file=SYSCTL_FILE,
        why="deploys/nginx.py (host data hub_tcp_retries2): a request sent on a kept-alive\n"
        "upstream connection into a dead tunnel fails in seconds, not after nginx's read timeout",
    )


def _certificate_made_here(net, c: tls.Certificate, readable: dict) -> None:
    """A self-signed certificate, or the stand-in an ACME one needs until its first issuance
    (nginx does not start without a certificate); a provided one must be on the hub already."""
    if c.mode == "self-signed":
        certbot.self_signed(
            name=f"Self-signed certificate for {c.name}",
            cert=c.final.cert,
            key=c.final.key,
            domains=list(c.domains),
        )
    elif c.mode == "provided" and c.final.cert not in readable:
        raise DeployError(
            f"{host.name}: tls.cert {c.final.cert} (mode provided, {net.path}) is not a "
            "readable certificate on the hub: copy it there, or fix the path"
        )
    elif c.stand_in and c.final.cert not in readable:
        certbot.self_signed(
            name=f"Temporary certificate for {c.name} (until its first ACME issuance)",
            cert=c.stand_in.cert,
            key=c.stand_in.key,
            domains=list(c.domains),
        )


@deploy("nginx and TLS", data_defaults=DEFAULTS)
def nginx_tls(packages_installed: bool):
    net = load_current()
    mode = net.tls.mode
    settings = _settings()
    certs = tls.certificates(net)

    st = snapshot.get(NginxState, paths=[nginxconf.SHARED_CONF, SITES_GLOB, nginxconf.DISTRO_DEFAULT_SITE])
    remove, in_the_way = nginxconf.port80_conflicts(st["default_server_80"], st["version"] is not None)
    if in_the_way:
        raise DeployError(
            f"{host.name}: {', '.join(in_the_way)} also declares the port-80 default server, "
            "which backhaul needs for ACME challenges and the redirect to HTTPS: remove "
            "`default_server` from its listen lines (or disable that site) and run again"
        )
    version = nginxconf.parse_version(st["version"] or st["candidate"])

    if not packages_installed:
        packages.installed(name="nginx and TLS packages", packages=software.nginx(net))

    _tcp_retries()

    cert_files = sorted({c.final.cert for c in certs} | {c.stand_in.cert for c in certs if c.stand_in})
    lineages = [c.name for c in certs if c.mode == "acme"]
    cst = snapshot.get(CertificateState, certs=cert_files, lineages=lineages)
    readlog.answer_holds_until(tls.clock_bound(cst))  # what the host's clock decides (readlog.py)

    if mode == "acme":
        ca = net.tls.acme_ca_bundle
        certbot.acme_client(
            name="ACME client: webroot, renewal hook, CA trust, certbot.timer",
            renewal_hook=render("nginx-renewal-hook.sh.j2", lock=LOCK),
            ca_bundle=_read_ca(ca, net.path) if ca else None,
            dropin=render("nginx-certbot-dropin.conf.j2", ca_bundle=tls.CA_BUNDLE) if ca else None,
        )
    for c in certs:
        _certificate_made_here(net, c, cst["certs"])
    if not nginxconf.reject_handshake(version):
        # the :443 catch-all cannot refuse the handshake: it shows a certificate for no name
        paths = nginxconf.catch_all_paths()
        certbot.self_signed(
            name="Certificate of the catch-all for unknown names (self-signed)",
            cert=paths.cert,
            key=paths.key,
            domains=[nginxconf.CATCH_ALL_NAME],
        )

    ipv6 = st["ipv6"]
    me = net.host(host.name)  # one of the hubs: each asks the others for challenges it lacks
    final = nginxconf.nginx_files(net, {c.name: c.final for c in certs}, settings, version, ipv6, me)
    now = nginxconf.nginx_files(
        net, {c.name: tls.serving_paths(c, cst) for c in certs}, settings, version, ipv6, me
    )
    roots = _roots(net)
    to_issue = [
        c for c in certs if c.mode == "acme" and tls.issue_reason(c, cst, net.tls.acme_directory, roots)
    ]
    if now != final or to_issue:
        # Port 80 answers the services' names only: a name certbot is about to validate must
        # be served before it asks (and a temporary certificate lets nginx start).
        nginx.config(
            name="nginx configuration before certbot (nginx -t, reload)",
            files=now,
            prune=[SITES_GLOB],
            remove=remove,
        )

    issued = []
    for c in to_issue:
        issued.append(
            certbot.certificate(
                name=f"Certificate for {c.name} from the ACME server (certbot --webroot)",
                cert_name=c.name,
                domains=list(c.domains),
                server=net.tls.acme_directory,
                email=net.tls.email,
                ca_bundle=bool(net.tls.acme_ca_bundle),
                roots=sorted(roots) if roots else None,
            )
        )

    config = nginx.config(
        name="nginx configuration (nginx -t, then reload)", files=final, prune=[SITES_GLOB], remove=remove
    )
    # Only the certificates of services that are gone: a switch of tls.mode keeps the others
    # (switching back must not cost a new issuance).
    names = [c.name for c in certs]
    certbot.prune(name="Certificates of removed services", lineages=names, self_signed=names)
    if issued:
        # A certificate re-issued under a config that did not change still needs nginx to
        # load it (certbot runs the renewal hooks for `renew` only).
        systemd.service(
            name="Reload nginx for the new certificates",
            service="nginx",
            reloaded=True,
            _if=[any_changed(*issued), lambda: not config.did_change()],
        )


if host.data.get("backhaul_role") == "hub":
    nginx_tls(software.installed_by_site())
