"""nginx + TLS on the hub (issue: services behind the proxy), proven from the outer machine.

One network variant with services (WebSocket + HSTS, an allow list, a backend that is down, an
internal one), one `inv deploy` for the module; the lab's demo service runs on the backends,
bound to their WG addresses. Everything a user would see is checked from the outer machine
(curl, a WebSocket client, sslyze), names resolved to the hub with --resolve.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from backhaul.network import load

from .labkit import ROOT

PORTS = {"app": 18080, "api": 18081, "down": 18099}  # odd ports: never clash with lab.demo's


def _services(lab, gateway: str) -> list[dict]:
    d = lab.lab.domain
    return [
        {
            "name": "app",
            "backend": "backend-1",
            "port": PORTS["app"],
            "domains": [f"app.{d}", f"www.{d}"],
            "websocket": True,
            "hsts": True,
        },
        {
            "name": "api",
            "backend": "backend-2",
            "port": PORTS["api"],
            "domains": [f"api.{d}"],
            "allow": [gateway],
        },
        # nothing listens on this port: the "backend down" page
        {"name": "down", "backend": "backend-1", "port": PORTS["down"], "domains": [f"down.{d}"]},
        {"name": "metrics", "backend": "backend-2", "port": 19100},  # internal: no vhost
    ]


def _write_variant(lab, path: Path, drop: tuple[str, ...] = (), tls: dict | None = None) -> Path:
    doc = yaml.safe_load(lab.network.read_text())
    doc["services"] = [s for s in _services(lab, str(lab.lab.gateway)) if s["name"] not in drop]
    if tls is not None:
        doc["tls"] = tls
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class Outside:
    """What a client on the internet sees: the hub's public address, names resolved to it."""

    def __init__(self, lab):
        self.lab = lab
        self.hub = lab.ip("proxy")
        self.root = lab.files / "acme-root.pem"

    def curl(self, url: str, *args: str, retry_until: int | None = None) -> tuple[int, str, str]:
        """(status, headers, body); retries briefly for `retry_until` (reloads are async)."""
        host = re.match(r"https?://([^/:]+)", url).group(1)
        port = 443 if url.startswith("https") else 80
        cmd = [
            "curl",
            "-sS",
            "--max-time",
            "15",
            "--resolve",
            f"{host}:{port}:{self.hub}",
            "--cacert",
            str(self.root),
            "-D",
            "-",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            *args,
            url,
        ]
        deadline = time.monotonic() + 10
        self.lab.guard(self.hub)
        while True:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            out = proc.stdout
            status = int(out.rsplit("\n", 1)[-1] or 0) if proc.returncode == 0 else 0
            if retry_until is None or status == retry_until or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert proc.returncode == 0, f"curl {url}: {proc.stderr}"
        # text mode turned the header lines' CRLF into LF
        head, _, body = out.rsplit("\n", 1)[0].partition("\n\n")
        return status, head, body

    def tls_socket(self, name: str) -> ssl.SSLSocket:
        ctx = ssl.create_default_context(cafile=str(self.root))  # checks chain AND name
        self.lab.guard(self.hub)
        raw = socket.create_connection((self.hub, 443), timeout=10)
        return ctx.wrap_socket(raw, server_hostname=name)

    def peer_cert(self, name: str) -> dict:
        with self.tls_socket(name) as s:
            return s.getpeercert()

    def served_fingerprint(self, name: str) -> str:
        """sha256 of the certificate the hub serves for ``name``, trusted or not."""
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        self.lab.guard(self.hub)
        with ctx.wrap_socket(
            socket.create_connection((self.hub, 443), timeout=10), server_hostname=name
        ) as s:
            return hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()


def _scp(lab, src: Path, host: str, dest: str) -> None:
    subprocess.run(
        ["scp", "-q", "-F", str(lab.files / "ssh_config"), str(src), f"{host}:{dest}"], check=True, timeout=60
    )


def _start_demo(lab, net) -> None:
    for svc in ("app", "api"):
        s = next(x for x in net.services if x.name == svc)
        ip = net.host(s.backend).wg_ip
        _scp(lab, ROOT / "backhaul/lab/demo_app.py", s.backend, "/root/demo_app.py")
        unit = f"ngx-test-{svc}"
        lab.ssh(
            s.backend,
            f"systemctl stop {unit} 2>/dev/null; systemctl reset-failed {unit} "
            f"2>/dev/null; systemd-run --unit {unit} python3 /root/demo_app.py --bind {ip} "
            f"--port {s.port} --name {svc}",
        )
        for _ in range(50):
            if (
                lab.ssh(s.backend, f"ss -Htln 'sport = :{s.port}' | grep -q {ip}", check=False).returncode
                == 0
            ):
                break
            time.sleep(0.1)


def _archive_count(lab, name: str) -> int:
    out = lab.ssh("proxy", f"ls /etc/letsencrypt/archive/{name}/ | grep -c '^cert'", check=False)
    return int(out.stdout.strip() or 0)


@pytest.fixture(scope="module")
def site(lab, tmp_path_factory):
    """The services deployed once: timings of the first and the second (no-op) deploy."""
    path = _write_variant(lab, tmp_path_factory.mktemp("ngx") / "network.yml")
    t0 = time.monotonic()
    first = lab.inv("deploy", "--network", str(path), network=path)
    first_s = time.monotonic() - t0
    net = load(path)
    _start_demo(lab, net)
    t0 = time.monotonic()
    second = lab.inv("deploy", "--network", str(path), network=path)
    second_s = time.monotonic() - t0
    t0 = time.monotonic()
    alone = lab.pyinfra("deploys/nginx.py", network=path)
    alone_s = time.monotonic() - t0
    print(
        f"\n[nginx lab] first deploy {first_s:.1f}s, second (no-op) {second_s:.1f}s, "
        f"deploys/nginx.py alone (no-op) {alone_s:.1f}s"
    )
    return {
        "path": path,
        "net": net,
        "first": first,
        "second": second,
        "alone": alone,
        "outside": Outside(lab),
        "archive_app": _archive_count(lab, "app"),
    }


# -- what a client sees ----------------------------------------------------------------------------


def test_https_reaches_the_backend_with_a_certificate_for_the_domain(lab, site):
    out, d = site["outside"], lab.lab.domain
    for name in (f"app.{d}", f"www.{d}"):
        status, head, body = out.curl(f"https://{name}/some/path?x=1", retry_until=200)
        assert status == 200, head
        answer = json.loads(body)
        assert answer["service"] == "app" and answer["host"] == "backend-1"
        assert answer["path"] == "/some/path?x=1"
        assert answer["headers"]["host"] == name
        assert answer["headers"]["x-forwarded-proto"] == "https"
        assert answer["client"] == "10.50.0.1"  # the hub, over the tunnel
        # the chain ends at the lab's ACME root (tls_socket verifies it) and names the domain
        cert = out.peer_cert(name)
        assert ("DNS", name) in cert["subjectAltName"]
    assert re.search(r"(?im)^strict-transport-security: max-age=63072000", head)
    # the lineage is certbot's, served from /etc/letsencrypt/live/app/
    conf = lab.ssh("proxy", "cat /etc/nginx/sites-enabled/backhaul-app.conf").stdout
    assert "ssl_certificate /etc/letsencrypt/live/app/fullchain.pem;" in conf


def test_http_redirects_to_https(lab, site):
    name = f"app.{lab.lab.domain}"
    status, head, _ = site["outside"].curl(f"http://{name}/a/b?c=d")
    assert status == 301
    assert re.search(rf"(?im)^location: https://{re.escape(name)}/a/b\?c=d$", head)


def test_a_forged_x_forwarded_for_never_reaches_the_backend(lab, site):
    gateway = str(lab.lab.gateway)  # the outer machine, as the hub sees it
    _, _, body = site["outside"].curl(
        f"https://app.{lab.lab.domain}/",
        "-H",
        "X-Forwarded-For: 6.6.6.6",
        "-H",
        "X-Real-IP: 6.6.6.7",
        retry_until=200,
    )
    headers = json.loads(body)["headers"]
    assert headers["x-forwarded-for"] == gateway
    assert headers["x-real-ip"] == gateway
    assert "6.6.6" not in body


def test_websocket_upgrade_through_the_hub(lab, site):
    import websocket  # websocket-client (test extras)

    name = f"app.{lab.lab.domain}"
    sock = site["outside"].tls_socket(name)  # TLS with the name; websocket-client speaks on it
    ws = websocket.create_connection(f"wss://{name}/ws", socket=sock, timeout=10)
    try:
        assert ws.getstatus() == 101
        for text in ("hello", "x" * 5000):
            ws.send(text)
            assert ws.recv() == text
    finally:
        ws.close()


def test_allow_list_403_for_others_200_for_listed(lab, site):
    out, url = site["outside"], f"https://api.{lab.lab.domain}/"
    status, _, body = out.curl(url, retry_until=200)  # from the gateway: listed
    assert status == 200 and json.loads(body)["service"] == "api"
    stranger = str(lab.lab.outsider_ip())
    dev = lab.lab.bridge
    subprocess.run(["ip", "addr", "add", f"{stranger}/{lab.lab.subnet.prefixlen}", "dev", dev], check=True)
    try:
        status, _, _ = out.curl(url, "--interface", stranger)
        assert status == 403
        # the app vhost has no allow list: the stranger gets through there
        status, _, _ = out.curl(f"https://app.{lab.lab.domain}/", "--interface", stranger)
        assert status == 200
    finally:
        subprocess.run(
            ["ip", "addr", "del", f"{stranger}/{lab.lab.subnet.prefixlen}", "dev", dev], check=False
        )


def test_a_backend_that_is_down_gives_a_clear_502(lab, site):
    # a 502 with our page, not a 504 after the read timeout (how fast is for benchmarks to say)
    status, _, body = site["outside"].curl(f"https://down.{lab.lab.domain}/")
    assert status == 502
    assert "backend of down is down" in body


def test_a_silent_backend_host_is_a_502_too_not_a_timeout_page(lab, site):
    """A powered-off backend answers nothing: nginx gives up after proxy_connect_timeout with a
    504 of its own; backhaul says what happened: the backend is down (502)."""
    rule = f"INPUT -i wg0 -p tcp --dport {PORTS['down']} -j DROP"  # as if the host were off
    lab.ssh("backend-1", f"iptables -I {rule}")
    try:
        status, _, body = site["outside"].curl(f"https://down.{lab.lab.domain}/")
    finally:
        lab.ssh("backend-1", f"iptables -D {rule}")
    assert status == 502, body
    assert "could not connect to it in 5s" in body


def test_a_plain_request_to_a_websocket_service_has_the_plain_read_timeout(lab, site):
    """WebSocket handshakes get the long idle timeout (their own location); a plain request to
    the same service must not: with nginx_read_timeout=2s, a backend taking 4 s is a 504."""
    url = f"https://app.{lab.lab.domain}/slow/4"
    lab.pyinfra("deploys/nginx.py", "--data", "nginx_read_timeout=2s", network=site["path"])
    try:
        # old workers may still take a connection just after a reload: try until the new ones do
        status, _, body = site["outside"].curl(url, retry_until=504)
    finally:
        lab.pyinfra("deploys/nginx.py", network=site["path"])
    assert status == 504 and "did not answer in time" in body, body
    status, _, _ = site["outside"].curl(url, retry_until=200)  # the default 60s: it answers
    assert status == 200


def test_internal_services_get_no_vhost(lab, site):
    listing = lab.ssh("proxy", "ls /etc/nginx/sites-enabled/").stdout.split()
    assert sorted(listing) == ["backhaul-api.conf", "backhaul-app.conf", "backhaul-down.conf"]
    assert "19100" not in lab.ssh("proxy", "cat /etc/nginx/conf.d/backhaul.conf").stdout


def test_upstream_connections_are_kept_alive(lab, site):
    """Many requests through the hub reuse a few connections to the backend."""
    out, name = site["outside"], f"app.{lab.lab.domain}"
    url = f"https://{name}/"
    # one curl, 50 requests on one client connection
    subprocess.run(
        ["curl", "-sS", "--resolve", f"{name}:443:{out.hub}", "--cacert", str(out.root), *([url] * 50)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    conns = lab.ssh("backend-1", f"ss -Htn state established 'sport = :{PORTS['app']}' | wc -l").stdout
    assert 1 <= int(conns) <= 4, conns


# -- TLS by a real scanner ---------------------------------------------------------------------------


def test_tls_passes_sslyze_mozilla_intermediate(lab, site):
    from sslyze import (
        CertificateInfoExtraArgument,
        ScanCommandsExtraArguments,
        Scanner,
        ServerNetworkLocation,
        ServerScanRequest,
    )
    from sslyze.mozilla_tls_profile.tls_config_checker import (
        SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
        MozillaTlsConfiguration,
        ServerNotCompliantWithTlsConfiguration,
        TlsConfigurationEnum,
        check_server_against_tls_configuration,
    )

    out = site["outside"]
    request = ServerScanRequest(
        server_location=ServerNetworkLocation(f"app.{lab.lab.domain}", 443, out.hub),
        scan_commands=SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
        scan_commands_extra_arguments=ScanCommandsExtraArguments(
            certificate_info=CertificateInfoExtraArgument(custom_ca_file=out.root)
        ),
    )
    scanner = Scanner()
    scanner.queue_scans([request])
    result = next(iter(scanner.get_results()))
    config = MozillaTlsConfiguration.get(TlsConfigurationEnum.MOZILLA_INTERMEDIATE)
    try:
        check_server_against_tls_configuration(result, config)
        issues = {}
    except ServerNotCompliantWithTlsConfiguration as e:
        issues = e.issues
    # strict: the lab's pebble issues 90-day certificates, like Let's Encrypt
    assert issues == {}


def test_unknown_names_get_no_certificate(lab, site):
    out = site["outside"]
    with pytest.raises(ssl.SSLError):
        out.tls_socket(f"nothere.{lab.lab.domain}").close()


# -- certificates: renewal by certbot's timer ----------------------------------------------------


def test_renewal_by_the_timer_trusts_the_acme_ca_and_reloads_nginx(lab, site):
    timer = lab.ssh(
        "proxy", "systemctl is-enabled certbot.timer; systemctl is-active certbot.timer"
    ).stdout.split()
    assert timer == ["enabled", "active"]
    env = lab.ssh("proxy", "systemctl show -p Environment --value certbot.service").stdout
    assert "REQUESTS_CA_BUNDLE=/etc/backhaul/acme-ca.pem" in env
    out, name = site["outside"], f"app.{lab.lab.domain}"
    before = out.peer_cert(name)["serialNumber"]
    # Run the very unit the timer runs, told (for this once) to renew what is not due yet.
    lab.ssh(
        "proxy",
        "echo 'force-renewal = True' >> /etc/letsencrypt/cli.ini && "
        "systemctl start certbot.service; rc=$?; sed -i '/^force-renewal = True$/d' "
        "/etc/letsencrypt/cli.ini; exit $rc",
        timeout=180,
    )
    deadline = time.monotonic() + 10
    while out.peer_cert(name)["serialNumber"] == before and time.monotonic() < deadline:
        time.sleep(0.3)  # the hook's reload is asynchronous
    assert out.peer_cert(name)["serialNumber"] != before  # renewed, and nginx serves it


# -- changes: refused, no-op, removed ------------------------------------------------------------


def test_a_broken_vhost_is_refused_and_the_old_config_keeps_serving(lab, site):
    before = lab.ssh("proxy", "sha256sum /etc/nginx/conf.d/backhaul.conf /etc/nginx/sites-enabled/*").stdout
    proc = lab.pyinfra(
        "deploys/nginx.py",
        "--data",
        "nginx_server_extra=backhaul_bogus on;",
        network=site["path"],
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert 'unknown directive "backhaul_bogus"' in output  # nginx's own message
    assert "nginx -t refused the new configuration" in output
    after = lab.ssh("proxy", "sha256sum /etc/nginx/conf.d/backhaul.conf /etc/nginx/sites-enabled/*").stdout
    assert after == before
    status, _, _ = site["outside"].curl(f"https://app.{lab.lab.domain}/")
    assert status == 200
    assert lab.ssh("proxy", "nginx -t", check=False).returncode == 0


HARDENING = (
    "server_tokens off;",
    "ssl_protocols TLSv1.2 TLSv1.3;",
    "client_max_body_size 4m;",
    "proxy_buffer_size 8k;",
)


def test_an_admin_hardened_nginx_conf_never_clashes_with_backhauls(lab, site):
    """Directives an admin (or Debian 13's stock nginx.conf: server_tokens) sets in http{}:
    backhaul's next config change must still pass `nginx -t` (it failed with "server_tokens
    directive is duplicate") and its servers still hide nginx's version."""
    conf = "/etc/nginx/nginx.conf"
    lab.ssh("proxy", f"cp -p {conf} {conf}.test-bak")
    try:
        text = lab.ssh("proxy", f"cat {conf}").stdout
        text = re.sub(r"(?m)^(\s*)(server_tokens|ssl_protocols)\b", r"\1# \2", text)
        text = text.replace("http {\n", "http {\n" + "".join(f"\t{d}\n" for d in HARDENING), 1)
        assert all(d in text for d in HARDENING)
        lab.ssh("proxy", f"printf %s {shlex.quote(text)} > {conf} && nginx -t")
        # a local edit of backhaul's shared conf: the deploy writes it again, then nginx -t
        lab.ssh("proxy", "echo '# local edit' >> /etc/nginx/conf.d/backhaul.conf")
        proc = lab.pyinfra("deploys/nginx.py", network=site["path"], check=False)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        assert "# local edit" not in lab.ssh("proxy", "cat /etc/nginx/conf.d/backhaul.conf").stdout
        status, head, _ = site["outside"].curl(f"https://app.{lab.lab.domain}/", retry_until=200)
        assert status == 200 and "nginx/" not in head.lower(), head
    finally:
        lab.ssh("proxy", f"mv {conf}.test-bak {conf} && nginx -t && systemctl reload nginx")


def test_second_deploy_changes_nothing_and_requests_no_certificate(lab, site):
    second = site["second"].stdout
    assert "backhaul: no changes" in second, second[-3000:]
    alone = site["alone"].stdout + site["alone"].stderr
    nginx_rows = [ln for ln in alone.splitlines() if "nginx and TLS |" in ln and "   " in ln]
    assert nginx_rows and all(re.search(r"\s1\s+-\s+-\s+1\s*$", ln) for ln in nginx_rows), alone
    # and nothing was issued since the first deploy (renewal test aside: compare before it)
    assert site["archive_app"] == 1


def test_a_removed_service_loses_its_vhost_and_certificate_only(lab, site, tmp_path):
    path = _write_variant(lab, tmp_path / "network.yml", drop=("api",))
    lab.pyinfra("deploys/nginx.py", network=path)
    listing = lab.ssh("proxy", "ls /etc/nginx/sites-enabled/").stdout.split()
    assert sorted(listing) == ["backhaul-app.conf", "backhaul-down.conf"]
    assert "backhaul_api" not in lab.ssh("proxy", "cat /etc/nginx/conf.d/backhaul.conf").stdout
    # its certificate too (else certbot.timer would renew it for ever); the others stay
    live = lab.ssh("proxy", "ls /etc/letsencrypt/live/ /etc/letsencrypt/renewal/").stdout.split()
    assert "api" not in live and "api.conf" not in live and "app" in live
    status, _, _ = site["outside"].curl(f"https://app.{lab.lab.domain}/", retry_until=200)
    assert status == 200
    lab.pyinfra("deploys/nginx.py", network=site["path"])  # put it back for later modules


def _hub_fingerprint(lab, path: str) -> str:
    return lab.ssh("proxy", f"openssl x509 -in {path} -outform DER | sha256sum").stdout.split()[0]


def test_self_signed_and_provided_modes_then_back_without_a_new_issuance(lab, site, tmp_path):
    out, name = site["outside"], f"app.{lab.lab.domain}"
    archive = _archive_count(lab, "app")
    # self-signed: one certificate per service, made on the hub
    path = _write_variant(lab, tmp_path / "self-signed.yml", tls={"mode": "self-signed"})
    lab.pyinfra("deploys/nginx.py", network=path)
    want = _hub_fingerprint(lab, "/etc/backhaul/tls/app/fullchain.pem")
    _wait_for(lambda: out.served_fingerprint(name) == want)
    san = lab.ssh(
        "proxy", "openssl x509 -in /etc/backhaul/tls/app/fullchain.pem -noout -ext subjectAltName"
    ).stdout
    assert f"DNS:app.{lab.lab.domain}" in san and f"DNS:www.{lab.lab.domain}" in san
    # provided: the operator's certificate and key, already on the hub
    cert, key = "/etc/ssl/certs/backhaul-test.pem", "/etc/ssl/private/backhaul-test.key"
    lab.ssh(
        "proxy",
        f"openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
        f"-nodes -days 30 -subj /CN=provided -addext subjectAltName=DNS:{name} "
        f"-keyout {key} -out {cert} 2>/dev/null",
    )
    path = _write_variant(lab, tmp_path / "provided.yml", tls={"mode": "provided", "cert": cert, "key": key})
    lab.pyinfra("deploys/nginx.py", network=path)
    want = _hub_fingerprint(lab, cert)
    _wait_for(lambda: out.served_fingerprint(name) == want)
    # back to ACME: the lineage was kept, so it is served again and nothing is requested
    lab.pyinfra("deploys/nginx.py", network=site["path"])
    want = _hub_fingerprint(lab, "/etc/letsencrypt/live/app/fullchain.pem")
    _wait_for(lambda: out.served_fingerprint(name) == want)
    assert _archive_count(lab, "app") == archive


def _wait_for(check, timeout: float = 10) -> None:
    """nginx reloads asynchronously: the old workers answer for a moment."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the hub did not serve the expected certificate"
        time.sleep(0.3)
