"""The hub's TLS front: certificates per mode, certbot's arguments, the nginx files (golden),
the settings, and the swap/test/restore script run for real against a fake nginx.

The facts and operations (backhaul.facts.nginx, backhaul.operations.nginx/certbot) have their
fixtures under tests/data/facts/nginx.* and tests/data/operations/{nginx,certbot}.*, run by
test_facts.py and test_operations.py. Golden files: tests/data/nginx/<case>/ (regenerate with
BACKHAUL_UPDATE_GOLDEN=1 and review the diff).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
from pathlib import Path

import pytest

from backhaul import nginxconf, tls
from backhaul.facts.nginx import CertificateState, NginxState, check_path
from backhaul.network import load
from backhaul.operations.nginx import REFUSED, apply_script

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests/data/nginx"

NETWORK = """\
network:
  subnet: 10.50.0.0/24
proxy:
  public_ip: 203.0.113.10
backends:
  - {name: backend-1, public_ip: 203.0.113.21, wg_ip: 10.50.0.2}
  - {name: backend-2, public_ip: 203.0.113.22, wg_ip: 10.50.0.3}
services:
  - name: app
    backend: backend-1
    port: 8080
    domains: [app.example.com, www.example.com]
    websocket: true
    hsts: true
  - name: admin-ui
    backend: backend-2
    port: 8081
    domains: [admin.example.com]
    allow: [198.51.100.0/24, 192.0.2.7]
  - name: metrics
    backend: backend-2
    port: 9100
tls:
"""
TLS = {
    "acme": "  mode: acme\n  acme_server: letsencrypt\n  email: ops@example.com\n",
    "self-signed": "  mode: self-signed\n",
    "provided": "  mode: provided\n  cert: /etc/ssl/certs/site.pem\n  key: /etc/ssl/private/site.key\n",
}


def _defaults() -> dict:
    """DEFAULTS of deploys/nginx.py (a deploy file runs when imported: read it instead)."""
    tree = ast.parse((REPO / "deploys/nginx.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "DEFAULTS":
            return ast.literal_eval(node.value)
    raise AssertionError("deploys/nginx.py has no DEFAULTS")


DEFAULTS = _defaults()


@pytest.fixture
def net_of(tmp_path):
    def make(mode: str = "acme"):
        path = tmp_path / "network.yml"
        path.write_text(NETWORK + TLS[mode])
        return load(path)

    return make


# -- certificates --------------------------------------------------------------------------------


def test_acme_one_certificate_per_public_service_with_a_stand_in(net_of):
    certs = tls.certificates(net_of("acme"))
    assert [(c.name, c.domains) for c in certs] == [
        ("app", ("app.example.com", "www.example.com")),
        ("admin-ui", ("admin.example.com",)),
    ]  # metrics has no domains: internal, no certificate
    app = certs[0]
    assert app.final == tls.CertPaths(
        "/etc/letsencrypt/live/app/fullchain.pem", "/etc/letsencrypt/live/app/privkey.pem"
    )
    assert app.stand_in == tls.CertPaths(
        "/etc/backhaul/tls/app/fullchain.pem", "/etc/backhaul/tls/app/privkey.pem"
    )


def test_self_signed_and_provided_modes(net_of):
    ss = tls.certificates(net_of("self-signed"))
    assert ss[0].final.cert == "/etc/backhaul/tls/app/fullchain.pem" and ss[0].stand_in is None
    prov = tls.certificates(net_of("provided"))
    assert {c.final for c in prov} == {tls.CertPaths("/etc/ssl/certs/site.pem", "/etc/ssl/private/site.key")}


def test_nginx_serves_the_stand_in_until_the_lineage_exists(net_of):
    app = tls.certificates(net_of("acme"))[0]
    assert tls.serving_paths(app, {"certs": {}}) == app.stand_in
    lineage = {"certs": {app.final.cert: {"names": ["old.example.com"], "not_after": 1}}}
    # a lineage about to be re-issued for new domains still lets nginx start: keep serving it
    assert tls.serving_paths(app, lineage) == app.final


NOW = 1_800_000_000
SERVER = "https://acme-v02.api.letsencrypt.org/directory"


@pytest.mark.parametrize(
    "have, server, reason",
    [
        (None, None, "no certificate yet"),
        ({"names": ["www.example.com", "app.example.com"], "not_after": NOW + 86400}, SERVER, None),
        ({"names": ["app.example.com"], "not_after": NOW + 86400}, SERVER, "its domains changed"),
        (
            {"names": ["app.example.com", "www.example.com"], "not_after": NOW + 86400},
            "https://acme-staging-v02.api.letsencrypt.org/directory",
            "another ACME server",
        ),
        ({"names": ["app.example.com", "www.example.com"], "not_after": NOW - 1}, SERVER, "expired"),
        # no renewal conf to compare (made by hand?): names and dates decide
        ({"names": ["app.example.com", "www.example.com"], "not_after": NOW + 86400}, None, None),
    ],
)
def test_a_valid_certificate_is_never_requested_again(net_of, have, server, reason):
    app = tls.certificates(net_of("acme"))[0]
    state = {
        "now": NOW,
        "certs": {app.final.cert: have} if have else {},
        "renewal_servers": {"app": server} if server else {},
    }
    got = tls.issue_reason(app, state, SERVER + "/")  # a trailing slash is the same server
    assert (got is None) if reason is None else (reason in got)


def test_certbot_uses_the_webroot_never_the_nginx_plugin(net_of):
    app = tls.certificates(net_of("acme"))[0]
    args = tls.certbot_args(app, SERVER, "ops@example.com", {"certs": {}})
    assert args[:5] == ["certbot", "certonly", "--webroot", "-w", tls.WEBROOT]
    assert "--nginx" not in args and "-i" not in args
    assert args[args.index("--cert-name") + 1] == "app"
    assert [args[i + 1] for i, a in enumerate(args) if a == "-d"] == list(app.domains)
    for flag in ("--non-interactive", "--agree-tos"):
        assert flag in args
    assert args[args.index("--server") + 1] == SERVER


def test_self_signed_remade_near_expiry_or_for_other_domains():
    paths = tls.CertPaths("/c", "/k")
    ok = {"now": NOW, "certs": {"/c": {"names": ["a.test"], "not_after": NOW + 31 * 86400}}}
    assert not tls.needs_new_self_signed(paths, ("a.test",), ok)
    assert tls.needs_new_self_signed(paths, ("a.test", "b.test"), ok)
    soon = {"now": NOW, "certs": {"/c": {"names": ["a.test"], "not_after": NOW + 29 * 86400}}}
    assert tls.needs_new_self_signed(paths, ("a.test",), soon)


# -- versions, settings, conflicts ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, directive, reject",
    [
        ("1.22.1", False, True),  # Debian 12
        ("1.22.1-9+deb12u9", False, True),  # apt's candidate version
        ("1.25.0", False, True),
        ("1.25.1", True, True),
        ("1.26.3", True, True),
        ("1:1.26.0-1", True, True),  # epoch
        ("1.18.0", False, False),  # Ubuntu 20.04: no ssl_reject_handshake
        (None, False, False),  # unknown: the syntax every version accepts
        ("(none)", False, False),
    ],
)
def test_http2_syntax_follows_the_nginx_version(text, directive, reject):
    version = nginxconf.parse_version(text)
    assert nginxconf.http2_directive(version) is directive
    assert nginxconf.reject_handshake(version) is reject


def test_the_shipped_defaults_are_valid_settings():
    s = nginxconf.ProxySettings.from_data(DEFAULTS)
    assert s.keepalive > 0 and s.connect_timeout == "5s" and s.server_extra == ""


def test_bad_settings_are_all_reported_at_once():
    bad = dict(
        DEFAULTS,
        nginx_keepalive=-1,
        nginx_connect_timeout="5 seconds",
        nginx_client_max_body_size="lots",
        nginx_server_extra="location / { }",
    )
    with pytest.raises(ValueError) as e:
        nginxconf.ProxySettings.from_data(bad)
    for name in (
        "nginx_keepalive",
        "nginx_connect_timeout",
        "nginx_client_max_body_size",
        "nginx_server_extra",
    ):
        assert name in str(e.value)


def test_only_the_distro_default_site_is_removed_for_port_80():
    assert nginxconf.port80_conflicts([nginxconf.SHARED_CONF], True) == ([], [])
    assert nginxconf.port80_conflicts([nginxconf.DISTRO_DEFAULT_SITE], True) == (
        [nginxconf.DISTRO_DEFAULT_SITE],
        [],
    )
    # before nginx is installed, its package's default site will come and conflict
    assert nginxconf.port80_conflicts([], False) == ([nginxconf.DISTRO_DEFAULT_SITE], [])
    mine = "/etc/nginx/sites-enabled/mysite"
    assert nginxconf.port80_conflicts([mine, nginxconf.SHARED_CONF], True) == ([], [mine])


# -- the nginx files -------------------------------------------------------------------------------


def _files(net, version="1.22.1", ipv6=True, **overrides):
    certs = tls.certificates(net)
    settings = nginxconf.ProxySettings.from_data(dict(DEFAULTS, **overrides))
    return nginxconf.nginx_files(
        net, {c.name: c.final for c in certs}, settings, nginxconf.parse_version(version), ipv6
    )


CASES = {
    "acme-nginx-1.22": dict(mode="acme"),
    "self-signed-nginx-1.26-no-ipv6-no-keepalive": dict(
        mode="self-signed",
        version="1.26.3",
        ipv6=False,
        nginx_keepalive=0,
        nginx_server_extra="access_log off;",
    ),
    # no ssl_reject_handshake: the :443 catch-all shows a self-signed certificate instead
    "acme-nginx-version-unknown": dict(mode="acme", version=None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_nginx_files_match_the_golden_files(net_of, case):
    kw = dict(CASES[case])
    files = _files(net_of(kw.pop("mode")), **kw)
    folder = GOLDEN / case
    if os.environ.get("BACKHAUL_UPDATE_GOLDEN") == "1":
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        for path, content in files.items():
            (folder / Path(path).name).write_text(content)
    assert sorted(Path(p).name for p in files) == sorted(p.name for p in folder.iterdir())
    for path, content in files.items():
        assert content == (folder / Path(path).name).read_text(), path


def test_one_vhost_per_public_service_and_one_upstream_each(net_of):
    files = _files(net_of())
    assert sorted(files) == [
        "/etc/nginx/conf.d/backhaul.conf",
        "/etc/nginx/sites-enabled/backhaul-admin-ui.conf",
        "/etc/nginx/sites-enabled/backhaul-app.conf",
    ]
    shared = files[nginxconf.SHARED_CONF]
    assert re.findall(r"upstream (\S+) \{", shared) == ["backhaul_app", "backhaul_admin_ui"]
    assert "9100" not in "".join(files.values())  # the internal service is not proxied
    assert shared.count("keepalive 32;") == 2


def test_forwarded_headers_are_set_by_the_hub_not_appended(net_of):
    for path, text in _files(net_of()).items():
        if path == nginxconf.SHARED_CONF:
            continue
        assert "proxy_set_header X-Forwarded-For $remote_addr;" in text
        assert "$proxy_add_x_forwarded_for" not in text
        for header in ("Host $host", "X-Real-IP $remote_addr", "X-Forwarded-Proto $scheme"):
            assert f"proxy_set_header {header};" in text
        assert "proxy_http_version 1.1;" in text
        assert re.search(r"proxy_connect_timeout \d+s;", text)


def test_plain_requests_keep_the_upstream_connection_websocket_upgrades(net_of):
    files = _files(net_of())
    shared = files[nginxconf.SHARED_CONF]
    assert re.search(
        r"map \$http_upgrade \$backhaul_connection_upgrade \{\s*default upgrade;"
        r"\s*''\s*\"\";\s*\}",
        shared,
    )
    app = files[nginxconf.site_file("app")]  # websocket: true
    assert "proxy_set_header Connection $backhaul_connection_upgrade;" in app
    assert "proxy_set_header Upgrade $http_upgrade;" in app
    admin = files[nginxconf.site_file("admin-ui")]  # websocket: false
    assert 'proxy_set_header Connection "";' in admin and "Upgrade" not in admin


def test_allow_list_hsts_and_port_80(net_of):
    files = _files(net_of())
    admin = files[nginxconf.site_file("admin-ui")]
    assert re.search(r"allow 198\.51\.100\.0/24;\s*allow 192\.0\.2\.7/32;\s*deny all;", admin)
    assert "Strict-Transport-Security" not in admin
    app = files[nginxconf.site_file("app")]
    assert 'add_header Strict-Transport-Security "max-age=63072000" always;' in app
    assert "deny all" not in app
    shared = files[nginxconf.SHARED_CONF]
    assert "location ^~ /.well-known/acme-challenge/ {" in shared
    assert f"root {tls.WEBROOT};" in shared
    assert "return 301 https://$host$request_uri;" in shared


def test_mozilla_intermediate_in_every_tls_server(net_of):
    files = _files(net_of())
    servers = [
        files[nginxconf.site_file("app")],
        files[nginxconf.site_file("admin-ui")],
        files[nginxconf.SHARED_CONF],
    ]  # the :443 default server starts every handshake
    for text in servers:
        assert "ssl_protocols TLSv1.2 TLSv1.3;" in text
        assert "ssl_ecdh_curve X25519:prime256v1:secp384r1;" in text
        assert "ssl_session_tickets off;" in text
        assert "ssl_stapling" not in text


def test_http2_syntax_and_ipv6_listen(net_of):
    old = _files(net_of(), version="1.22.1", ipv6=True)[nginxconf.site_file("app")]
    assert "listen 443 ssl http2;" in old and "listen [::]:443 ssl http2;" in old
    assert "http2 on;" not in old
    new = _files(net_of(), version="1.26.3", ipv6=False)[nginxconf.site_file("app")]
    assert "listen 443 ssl;" in new and "http2 on;" in new and "[::]" not in new


def test_keepalive_off_renders_no_keepalive(net_of):
    shared = _files(net_of(), nginx_keepalive=0)[nginxconf.SHARED_CONF]
    assert "keepalive" not in shared


# -- fact commands are safe ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["relative", "/etc/x;rm -rf /", "/etc/$(id)", "/a/../b", "/a b"])
def test_paths_reaching_a_shell_are_checked(bad):
    with pytest.raises(ValueError):
        check_path(bad)
    with pytest.raises(ValueError):
        NginxState().command(paths=[bad])


def test_certificate_fact_takes_paths_and_names_only():
    with pytest.raises(ValueError):
        CertificateState().command(certs=["/etc/letsencrypt/live/*/cert.pem"])
    with pytest.raises(ValueError):
        CertificateState().command(lineages=["app;reboot"])


_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _self_signed(key: Path, cert: Path, subject: str, *ext: str) -> Path:
    """A new P-256 key and a self-signed certificate for it, valid 30 days."""
    _openssl(
        "req",
        "-x509",
        *_EC_KEY,
        "-keyout",
        str(key),
        "-out",
        str(cert),
        "-days",
        "30",
        "-subj",
        subject,
        *ext,
    )
    return cert


def _request(key: Path, csr: Path, subject: str, *ext: str) -> None:
    """A new P-256 key and a certificate request for it."""
    _openssl("req", *_EC_KEY, "-keyout", str(key), "-out", str(csr), "-subj", subject, *ext)


def test_certificate_fact_command_run_for_real_reads_expiry_and_names(tmp_path):
    """The shell and openssl half of the fact, on this machine: several files read side by
    side, a file without names, an unreadable one and a missing one."""

    def make(name: str, *ext: str) -> None:
        _self_signed(tmp_path / "k", tmp_path / name, "/CN=x", *ext)

    make("a.pem", "-addext", "subjectAltName=DNS:a.example,IP:203.0.113.5,DNS:b.example")
    make("plain.pem")
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    paths = [str(tmp_path / n) for n in ("a.pem", "plain.pem", "bad.pem", "missing.pem")]
    out = subprocess.run(
        ["sh", "-c", CertificateState().command(certs=paths)], capture_output=True, text=True, check=True
    ).stdout
    got = CertificateState().process(out.splitlines())
    assert set(got["certs"]) == set(paths[:3])
    a, plain, bad = (got["certs"][p] for p in paths[:3])
    assert a["names"] == ["a.example", "b.example"]
    assert 29 * 86400 < a["not_after"] - got["now"] <= 30 * 86400
    assert plain["names"] == [] and plain["not_after"] > got["now"]
    assert bad == {"names": [], "not_after": None}
    # the files are read side by side, yet each read prints them in one order: an unchanged
    # host reads the same every time (backhaul/unchanged.py compares what hosts read)
    lines = [ln for ln in out.splitlines() if ln.startswith("cert\t")]
    assert lines == sorted(lines)


# -- the swap / nginx -t / restore script, run for real ------------------------------------------

FAKE_NGINX = """#!/bin/sh
# fake `nginx -t`: refuses any file of the tree containing "bogus", like nginx would
if grep -rl bogus "$TREE" >/dev/null 2>&1; then
  echo 'nginx: [emerg] unknown directive "bogus" in '"$(grep -rl bogus "$TREE" | head -n1)"':1' >&2
  echo 'nginx: configuration file /etc/nginx/nginx.conf test failed' >&2
  exit 1
fi
echo 'nginx: configuration file /etc/nginx/nginx.conf test is successful' >&2
"""
FAKE_SYSTEMCTL = """#!/bin/sh
echo "$@" >> "$TREE/../systemctl.log"
"""


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "etc-nginx"
    (root / "sites-enabled").mkdir(parents=True)
    (root / "conf.d").mkdir()
    (root / "sites-available").mkdir()
    (root / "sites-available/default").write_text("server { listen 80 default_server; }\n")
    (root / "sites-enabled/default").symlink_to(root / "sites-available/default")
    (root / "conf.d/backhaul.conf").write_text("old shared\n")
    (root / "sites-enabled/backhaul-old.conf").write_text("old vhost\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("nginx", FAKE_NGINX), ("systemctl", FAKE_SYSTEMCTL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return root


def _run(tree: Path, staged: dict[str, str], removes: list[str]):
    work = tree.parent / "work"
    stage = work / "stage"
    stage.mkdir(parents=True, exist_ok=True)
    writes = list(staged)
    for i, path in enumerate(writes):
        (stage / str(i)).write_text(staged[path])
    script = apply_script(
        writes, removes, stage=str(stage), backup=str(work / "backup"), lock=str(work / "lock")
    )
    env = dict(os.environ, TREE=str(tree), PATH=f"{tree.parent / 'bin'}:{os.environ['PATH']}")
    return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)


def _snapshot(tree: Path) -> dict[str, str]:
    out = {}
    for p in sorted(tree.rglob("*")):
        rel = str(p.relative_to(tree))
        out[rel] = f"-> {os.readlink(p)}" if p.is_symlink() else (p.read_text() if p.is_file() else "<dir>")
    return out


def test_a_good_change_is_swapped_in_and_reloaded(tree):
    shared, vhost = str(tree / "conf.d/backhaul.conf"), str(tree / "sites-enabled/backhaul-app.conf")
    proc = _run(
        tree,
        {shared: "new shared\n", vhost: "new vhost\n"},
        [str(tree / "sites-enabled/default"), str(tree / "sites-enabled/backhaul-old.conf")],
    )
    assert proc.returncode == 0, proc.stderr
    assert _snapshot(tree) == {
        "conf.d": "<dir>",
        "conf.d/backhaul.conf": "new shared\n",
        "sites-available": "<dir>",
        "sites-available/default": "server { listen 80 default_server; }\n",
        "sites-enabled": "<dir>",
        "sites-enabled/backhaul-app.conf": "new vhost\n",
    }
    assert (tree.parent / "systemctl.log").read_text().splitlines() == ["is-active -q nginx", "reload nginx"]


def test_a_refused_change_restores_every_file_and_fails_with_nginx_s_message(tree):
    before = _snapshot(tree)
    shared, vhost = str(tree / "conf.d/backhaul.conf"), str(tree / "sites-enabled/backhaul-app.conf")
    proc = _run(
        tree,
        {shared: "new shared\n", vhost: "bogus on;\n"},
        [str(tree / "sites-enabled/default"), str(tree / "sites-enabled/backhaul-old.conf")],
    )
    assert proc.returncode == 1
    assert 'unknown directive "bogus"' in proc.stderr
    assert REFUSED in proc.stderr
    assert _snapshot(tree) == before  # the new vhost gone, the old ones and the symlink back
    assert not (tree.parent / "systemctl.log").exists()  # never reloaded


def test_a_failed_swap_touches_nothing_it_did_not_back_up(tree):
    before = _snapshot(tree)
    shared = str(tree / "conf.d/backhaul.conf")
    # stage/0 exists, stage/1 does not: the second move fails after the first succeeded
    work = tree.parent / "work"
    (work / "stage").mkdir(parents=True)
    (work / "stage/0").write_text("new shared\n")
    script = apply_script(
        [shared, str(tree / "sites-enabled/backhaul-old.conf")],
        [],
        stage=str(work / "stage"),
        backup=str(work / "backup"),
        lock=str(work / "lock"),
    )
    env = dict(os.environ, TREE=str(tree), PATH=f"{tree.parent / 'bin'}:{os.environ['PATH']}")
    proc = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "could not move the new nginx files into place" in proc.stderr
    assert _snapshot(tree) == before


# -- nginx.conf's http{} belongs to the distribution and the admin ------------------------------

MAIN_CONFS = REPO / "tests/data/nginx-main"


def _nginx_statements(text: str):
    """(depth, directive name, is_block) for every statement of an nginx config file; a tiny
    reader (comments, quotes, blocks) enough to tell which directives sit in which context."""
    text = re.sub(r"#[^\n]*", "", text)
    depth, out = 0, []
    for m in re.finditer(r"""("[^"]*"|'[^']*'|[^\s;{}]+)|([;{}])""", text):
        word, sep = m.groups()
        if word is not None:
            if not out or out[-1][3]:  # the first word after ; { } names a directive
                out.append([depth, word, False, False])
        elif sep == "{":
            out[-1][2], out[-1][3] = True, True
            depth += 1
        elif sep == ";":
            out[-1][3] = True
        else:
            depth -= 1
            if out:
                out[-1][3] = True
    return [(d, name, block) for d, name, block, _ in out]


def _http_level(main_conf: str) -> set[str]:
    """The simple directives set directly in nginx.conf's http{} block."""
    inside, names = False, set()
    for depth, name, block in _nginx_statements(main_conf):
        if depth == 0:
            inside = name == "http"
        elif inside and depth == 1 and not block:
            names.add(name)
    return names


@pytest.mark.parametrize("main", sorted(p.name for p in MAIN_CONFS.iterdir()))
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_shared_conf_sets_nothing_nginx_conf_may_set_in_http(net_of, case, main):
    """backhaul.conf is read inside nginx.conf's http{}: any simple directive of its own there
    is a duplicate (`nginx -t` fails) as soon as the distribution (Debian 13: server_tokens)
    or an admin sets it too. Only blocks with backhaul's names may sit at its top level."""
    kw = dict(CASES[case])
    shared = _files(net_of(kw.pop("mode")), **kw)[nginxconf.SHARED_CONF]
    admin = _http_level((MAIN_CONFS / main).read_text())
    assert "server_tokens" in admin  # the fixture is what Debian 13 ships, and more
    top = [(name, block) for depth, name, block in _nginx_statements(shared) if depth == 0]
    assert [n for n, block in top if not block] == [], "http-level directives in backhaul.conf"
    assert {n for n, _ in top} <= {"map", "upstream", "server"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_backhaul_servers_still_hide_the_nginx_version(net_of, case):
    kw = dict(CASES[case])
    files = _files(net_of(kw.pop("mode")), **kw)
    for path, text in files.items():
        # every server that answers HTTP (the 443 catch-all only refuses the handshake)
        names = [n for _, n, _ in _nginx_statements(text)]
        assert names.count("server_name") >= 1, path
        assert names.count("server_tokens") == names.count("server_name"), path


# -- the front door ------------------------------------------------------------------------------


def test_the_hub_sets_or_clears_every_forwarding_header(net_of):
    files = _files(net_of())
    shared = files[nginxconf.SHARED_CONF]
    # RFC 7239: an IPv6 address is quoted and bracketed, an IPv4 one bare
    assert re.search(
        r'map \$remote_addr \$backhaul_forwarded_for \{\s+~:\s+"\\"\[\$remote_addr\]\\"";'
        r"\s+default \$remote_addr;",
        shared,
    )
    for path, text in files.items():
        if path == nginxconf.SHARED_CONF:
            continue
        locations = text.count("proxy_pass ")
        for line in (
            "proxy_set_header X-Forwarded-Host $host;",
            "proxy_set_header X-Forwarded-Port $server_port;",
            "proxy_set_header Forwarded 'for=$backhaul_forwarded_for;host=\"$host\";proto=$scheme';",
        ):
            assert text.count(line) == locations, (path, line)
        for header in nginxconf.CLEARED_HEADERS:
            assert text.count(f'proxy_set_header {header} "";') == locations, (path, header)
        assert "gzip off;" in text


def test_unknown_names_get_no_redirect_and_no_content(net_of):
    for version in ("1.22.1", "1.18.0", None):
        shared = _files(net_of(), version=version)[nginxconf.SHARED_CONF]
        servers = shared.split("\nserver {")[1:]
        default80 = next(s for s in servers if "listen 80 default_server;" in s)
        assert "return 444;" in default80 and "https://" not in default80
        assert "acme-challenge" not in default80
        named80 = next(s for s in servers if "listen 80;" in s)
        assert "server_name admin.example.com app.example.com www.example.com;" in named80
        assert "return 301 https://$host$request_uri;" in named80
        # a catch-all on 443 whatever the version: no handshake, or a certificate for no name
        default443 = next(s for s in servers if "default_server;" in s and "443" in s)
        assert "return 421;" in default443
        if version == "1.22.1":
            assert "ssl_reject_handshake on;" in default443
        else:
            assert f"ssl_certificate {nginxconf.catch_all_paths().cert};" in default443


def test_a_chain_from_another_ca_is_told_by_the_key_id_of_its_root(tmp_path):
    """The fact's shell half reads the chain's last certificate's issuer key id on the host;
    root_key_ids reads the configured bundle here; they must speak the same hex."""

    def ca(name: str) -> Path:
        return _self_signed(tmp_path / f"{name}.key", tmp_path / f"{name}.pem", f"/CN={name}")

    root, other = ca("root"), ca("other-root")
    # an intermediate signed by root, and a leaf signed by it: the fullchain is leaf + intermediate
    _request(tmp_path / "int.key", tmp_path / "int.csr", "/CN=int")
    (tmp_path / "ca.ext").write_text(
        "basicConstraints=critical,CA:TRUE\nauthorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        str(tmp_path / "int.csr"),
        "-CA",
        str(root),
        "-CAkey",
        str(tmp_path / "root.key"),
        "-CAcreateserial",
        "-out",
        str(tmp_path / "int.pem"),
        "-days",
        "30",
        "-extfile",
        str(tmp_path / "ca.ext"),
    )
    _request(
        tmp_path / "leaf.key",
        tmp_path / "leaf.csr",
        "/CN=app",
        "-addext",
        "subjectAltName=DNS:app.example.com",
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        str(tmp_path / "leaf.csr"),
        "-CA",
        str(tmp_path / "int.pem"),
        "-CAkey",
        str(tmp_path / "int.key"),
        "-CAcreateserial",
        "-out",
        str(tmp_path / "leaf.pem"),
        "-days",
        "30",
        "-copy_extensions",
        "copy",
    )
    chain = tmp_path / "fullchain.pem"
    chain.write_text((tmp_path / "leaf.pem").read_text() + (tmp_path / "int.pem").read_text())
    out = subprocess.run(
        ["sh", "-c", CertificateState().command(certs=[str(chain)])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    have = CertificateState().process(out.splitlines())["certs"][str(chain)]
    assert have["names"] == ["app.example.com"] and have["chain_issuer"] == "CN=root"
    mine, theirs = tls.root_key_ids(root.read_text()), tls.root_key_ids(other.read_text())
    assert tls.foreign_issuer(have, mine) is None
    assert tls.foreign_issuer(have, theirs) == "CN=root"
    assert tls.foreign_issuer(have, mine | theirs) is None  # a bundle of several roots
    assert tls.foreign_issuer(have, None) is None  # no bundle configured: never on a guess
    assert tls.foreign_issuer({"names": ["x"]}, theirs) is None  # no key id: never on a guess
    cert = tls.Certificate("app", ("app.example.com",), "acme", tls.CertPaths(str(chain), "k"), None)
    state = {"now": 0, "certs": {str(chain): dict(have, not_after=10**10)}, "renewal_servers": {}}
    assert tls.issue_reason(cert, state, "https://acme/dir", mine) is None
    assert "CN=root" in tls.issue_reason(cert, state, "https://acme/dir", theirs)
