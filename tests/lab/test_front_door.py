"""The front door (issue 11): what the hub does with what a client sends, and with what the
backends and the ACME server do, tried from the outer machine as a client or an attacker would.

One service (`door`, the lab's demo service on backend-1) deployed once; each test is one
defect that the hub had: forged forwarding headers, answers to unknown names, a dead tunnel
behind a kept-alive upstream connection, a certificate from a CA that is no longer the
configured one, compression of proxied pages.
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import time

import pytest
import yaml

from backhaul.lab import services
from backhaul.network import load

from .labkit import ROOT
from .test_nginx import Outside

PORT = 18180  # not lab.demo's, not test_nginx's
FORGED = {
    "Forwarded": "for=6.6.6.1;host=evil.example;proto=http",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Port": "6666",
    "X-Forwarded-Server": "evil.example",
    "X-Forwarded-Scheme": "http",
    "X-Forwarded-Prefix": "/evil",
    "X-Forwarded-Ssl": "off",
    "X-Original-URL": "/admin",
    "X-Rewrite-URL": "/admin",
    "X-Client-IP": "6.6.6.2",
    "True-Client-IP": "6.6.6.3",
    "X-Forwarded-For": "6.6.6.4",
    "X-Real-IP": "6.6.6.5",
    "X-Forwarded-Proto": "http",
}


@pytest.fixture(scope="module")
def door(lab, tmp_path_factory):
    d = lab.lab.domain
    path = tmp_path_factory.mktemp("door") / "network.yml"
    doc = yaml.safe_load(lab.network.read_text())
    doc["services"] = [{"name": "door", "backend": "backend-1", "port": PORT, "domains": [f"door.{d}"]}]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    lab.inv("deploy", "--network", str(path), network=path)
    net = load(path)
    ip = net.host("backend-1").wg_ip
    subprocess.run(
        [
            "scp",
            "-q",
            "-F",
            str(lab.files / "ssh_config"),
            str(ROOT / "backhaul/lab/demo_app.py"),
            "backend-1:/root/demo_app.py",
        ],
        check=True,
        timeout=60,
    )
    lab.ssh(
        "backend-1",
        "systemctl stop door 2>/dev/null; systemctl reset-failed door "
        f"2>/dev/null; systemd-run --unit door python3 /root/demo_app.py --bind {ip} "
        f"--port {PORT} --name door; for i in $(seq 100); do ss -Htln 'sport = :{PORT}' "
        "| grep -q . && exit 0; sleep 0.1; done; exit 1",
    )
    yield {"path": path, "name": f"door.{d}", "outside": Outside(lab), "net": net}
    # The certificate test gave the lab's pebble a new root: every lineage on the hub is now
    # from an old CA. Delete them, so that later modules start from what a lab that never
    # ran this one has (their first deploy issues afresh), and leave the hub on the lab's
    # own network file.
    lab.ssh(
        "proxy",
        'for f in /etc/letsencrypt/renewal/*.conf; do [ -f "$f" ] || continue; '
        'certbot delete --non-interactive --cert-name "$(basename "$f" .conf)"; done',
        timeout=300,
    )
    lab.ssh("backend-1", "systemctl stop door 2>/dev/null; true")
    lab.inv("deploy", "--network", str(lab.network))


def _json_get(door, url_path: str = "/", *args: str) -> tuple[int, str, dict]:
    status, head, body = door["outside"].curl(f"https://{door['name']}{url_path}", *args, retry_until=200)
    assert status == 200, (head, body)
    return status, head, json.loads(body)


def _raw_curl(out, *args: str) -> subprocess.CompletedProcess:
    """curl straight at the hub's address (no --resolve)."""
    out.lab.guard(out.hub)
    return subprocess.run(
        ["curl", "-sS", "--max-time", "15", "-o", "-", "-D", "-", "-w", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- 1. forwarding headers ------------------------------------------------------------------


def test_forged_forwarding_headers_are_replaced_or_dropped(lab, door):
    """Every forwarding header a framework may trust is either the hub's (from what it saw)
    or absent: never the client's."""
    gateway, name = str(lab.lab.gateway), door["name"]
    forged = [a for k, v in FORGED.items() for a in ("-H", f"{k}: {v}")]
    _, _, answer = _json_get(door, "/", *forged)
    seen = answer["headers"]
    assert seen["x-forwarded-for"] == gateway and seen["x-real-ip"] == gateway
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-forwarded-host"] == name
    assert seen["x-forwarded-port"] == "443"
    assert seen["forwarded"] == f'for={gateway};host="{name}";proto=https'
    for h in (
        "x-forwarded-server",
        "x-forwarded-scheme",
        "x-forwarded-prefix",
        "x-forwarded-ssl",
        "x-original-url",
        "x-rewrite-url",
        "x-client-ip",
        "true-client-ip",
    ):
        assert h not in seen, (h, seen)
    assert "6.6.6" not in json.dumps(seen) and "evil" not in json.dumps(seen)


def test_forwarded_quotes_an_ipv6_client(lab, door):
    """RFC 7239: an IPv6 address in Forwarded is quoted and bracketed. The only IPv6 client
    the lab has is the hub itself (::1)."""
    probe = (
        "import json, socket, ssl\n"
        "ctx = ssl._create_unverified_context()\n"
        "s = ctx.wrap_socket(socket.create_connection(('::1', 443), timeout=10), "
        f"server_hostname='{door['name']}')\n"
        f"s.sendall(b'GET / HTTP/1.1\\r\\nHost: {door['name']}\\r\\nForwarded: for=6.6.6.6\\r\\n"
        "Connection: close\\r\\n\\r\\n')\n"
        "data = b''\n"
        "while True:\n"
        "    chunk = s.recv(65536)\n"
        "    if not chunk: break\n"
        "    data += chunk\n"
        "print(data.split(b'\\r\\n\\r\\n', 1)[1].decode())\n"
    )
    out = lab.ssh("proxy", f"python3 - <<'EOF'\n{probe}EOF").stdout
    seen = json.loads(out)["headers"]
    assert seen["forwarded"] == f'for="[::1]";host="{door["name"]}";proto=https'
    assert seen["x-forwarded-for"] == "::1"


# -- 2. unknown names -----------------------------------------------------------------------


def test_port_80_redirects_the_services_names_only(lab, door):
    out, name = door["outside"], door["name"]
    status, head, _ = out.curl(f"http://{name}/a/b?c=d")
    assert status == 301
    assert re.search(rf"(?im)^location: https://{re.escape(name)}/a/b\?c=d$", head)
    # ACME challenges are served for the services' names
    lab.ssh("proxy", "echo probe-token > /var/www/backhaul-acme/.well-known/acme-challenge/probe")
    try:
        status, _, body = out.curl(f"http://{name}/.well-known/acme-challenge/probe")
        assert status == 200 and body.strip() == "probe-token"
        # any other name, or none (a scan by address): the connection closes, no answer
        for host in ("evil.example", out.hub):
            for url_path in ("/", "/.well-known/acme-challenge/probe"):
                proc = _raw_curl(out, "-H", f"Host: {host}", f"http://{out.hub}{url_path}")
                assert proc.returncode == 52, (host, proc.stdout, proc.stderr)  # empty reply
                assert "location" not in proc.stdout.lower() and "probe-token" not in proc.stdout
    finally:
        lab.ssh("proxy", "rm -f /var/www/backhaul-acme/.well-known/acme-challenge/probe")


def test_443_a_services_name_in_sni_with_another_host_gets_421_and_no_content(lab, door):
    out = door["outside"]
    status, _, body = out.curl(f"https://{door['name']}/", "-H", "Host: evil.example")
    assert status == 421, body
    assert "welcome" not in body.lower() and "door" not in body
    # and with no name at all (by address): no handshake, so no certificate to see
    proc = _raw_curl(out, "-k", f"https://{out.hub}/")
    assert proc.returncode != 0 and proc.stdout.strip() in ("", "000"), proc.stdout


# -- 3. a dead tunnel behind a kept-alive upstream connection -------------------------------


def test_a_dead_tunnel_behind_a_kept_alive_connection_is_a_502_not_a_timeout(lab, door):
    """The request before the tunnel dies leaves an idle upstream connection in the hub's
    pool; the request after goes out on it into the void. It must get the "backend down"
    page (502), like a request on a new connection would, not the read timeout's 504."""
    out, name = door["outside"], door["name"]
    # a long upstream keepalive_timeout: the kept connection is still there for the second
    # request, however slow this machine is today
    workers = "pgrep -f '^nginx: worker process' || true"
    before_reload = set(lab.ssh("proxy", workers).stdout.split())
    lab.pyinfra("deploys/nginx.py", "--data", "nginx_keepalive_timeout=300s", network=door["path"])
    dead = "iptables -I INPUT -i wg0 -j DROP && iptables -I OUTPUT -o wg0 -j DROP"
    alive = "iptables -D INPUT -i wg0 -j DROP; iptables -D OUTPUT -o wg0 -j DROP"
    try:
        # The reload is asynchronous: an old worker still answers (200) until it has no
        # connection left, and then closes the idle client connection this test goes on with.
        # Wait until every worker is one the reload started.
        deadline = time.monotonic() + 60
        while before_reload & set(lab.ssh("proxy", workers).stdout.split()):
            assert time.monotonic() < deadline, "nginx's old workers never finished"
            time.sleep(0.2)
        # one client connection: both requests reach the same nginx worker, and its pool
        deadline = time.monotonic() + 30
        while True:
            conn = http.client.HTTPConnection(name, timeout=200)
            conn.sock = out.tls_socket(name)
            conn.sock.settimeout(200)
            conn.request("GET", "/before")
            before = conn.getresponse()
            before.read()
            if before.status == 200 or time.monotonic() > deadline:
                break
            conn.close()
        assert before.status == 200
        lab.ssh("backend-1", dead)  # as if backend-1 lost power: nothing comes back
        conn.request("GET", "/after")
        after = conn.getresponse()
        page = after.read().decode()
        conn.close()
    finally:
        lab.ssh("backend-1", alive, check=False)
        lab.pyinfra("deploys/nginx.py", network=door["path"])
    assert after.status == 502, page
    assert "The backend of door is down" in page


# -- 4. compression -------------------------------------------------------------------------


def test_proxied_pages_are_not_compressed_by_the_hub(lab, door):
    """BREACH needs a compressed response: the hub compresses nothing it proxies (Debian's
    nginx.conf would gzip every HTML page)."""
    out, name = door["outside"], door["name"]
    conn = http.client.HTTPConnection(name, timeout=30)
    conn.sock = out.tls_socket(name)
    conn.request("GET", "/html/?q=secret", headers={"Accept-Encoding": "gzip, deflate, br"})
    answer = conn.getresponse()
    body = answer.read()
    conn.close()
    assert answer.status == 200 and "text/html" in answer.getheader("Content-Type", "")
    assert answer.getheader("Content-Encoding") is None, answer.getheaders()
    assert b"<pre>" in body


# -- 5. certificates from a CA that is not the configured one (last: pebble gets a new root) --


def test_a_certificate_from_a_ca_no_longer_configured_is_issued_again(lab, door):
    """The lab's pebble gets a new root (as at every lab restart): the hub's certificate is
    now from a CA clients do not trust. verify names it; the next deploy issues a new one
    (and the one after does not)."""
    out, name, path = door["outside"], door["name"], door["path"]
    old_issuer = dict(x[0] for x in out.peer_cert(name)["issuer"])["commonName"]
    services.Daemon(lab.lab, "pebble").stop()
    services.start_acme(lab.lab)  # a new root, written to the lab's acme-root.pem
    proc = lab.inv("verify", "--network", str(path), "--json", network=path, check=False)
    report = json.loads(proc.stdout)
    rows = [c for c in report["checks"] if c["check"] == "https"]
    assert proc.returncode == 1 and rows and rows[0]["status"] == "fail", proc.stdout
    assert old_issuer in rows[0]["detail"] and "inv deploy" in rows[0]["detail"], rows[0]

    deploy = lab.inv("deploy", "--network", str(path), network=path)
    assert (
        "another CA" in deploy.stdout
        or "not a CA of tls.verify_ca_bundle" in deploy.stdout
        or "Certificate for door" in deploy.stdout
    ), deploy.stdout[-3000:]
    deadline = time.monotonic() + 10
    while True:  # the reload is asynchronous
        try:
            out.peer_cert(name)  # verified against the new root
            break
        except OSError:
            assert time.monotonic() < deadline, "the hub still serves the old CA's certificate"
            time.sleep(0.3)
    proc = lab.inv("verify", "--network", str(path), "--json", network=path, check=False)
    rows = [c for c in json.loads(proc.stdout)["checks"] if c["check"] == "https"]
    assert rows and all(r["status"] == "ok" for r in rows), rows
    archive = lab.ssh("proxy", "ls /etc/letsencrypt/archive/door/ | grep -c '^cert'").stdout
    again = lab.inv("deploy", "--network", str(path), network=path)
    assert "backhaul: no changes" in again.stdout, again.stdout[-3000:]
    assert lab.ssh("proxy", "ls /etc/letsencrypt/archive/door/ | grep -c '^cert'").stdout == archive
