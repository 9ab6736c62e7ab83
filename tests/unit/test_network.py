"""The network model: defaults, allocation, write-back, add/remove backend, load_current."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import stat
from pathlib import Path

import pytest

from backhaul import network, schema
from backhaul.errors import ConfigError
from backhaul.network import (
    Host,
    Network,
    Service,
    add_backend,
    load,
    next_free_wg_ip,
    remove_backend,
)

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """\
network:
  subnet: 10.50.0.0/24
proxy:
  public_ip: 203.0.113.10
tls:
  mode: self-signed
"""

# A file as a person writes it: comments, blank lines, odd spacing, flow bits.
HAND_WRITTEN = """\
# my fleet
network:
  subnet: 10.50.0.0/24   # tunnel addresses

proxy:
  public_ip: 203.0.113.10

backends:
  # the web box
  - name: web
    public_ip: 203.0.113.21   # hetzner
  - name: db
    public_ip: 203.0.113.22
    wg_ip: 10.50.0.2          # pinned
  - {name: cache, public_ip: 203.0.113.23}

# Services
services:
  - name: app
    backend: web
    port: 8080
    domains: [app.example.com]
tls: {mode: self-signed}
"""


def _write(tmp_path: Path, text: str, name: str = "network.yml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def _problems(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [str(p) for p in exc.value.problems]


# -- the model ---------------------------------------------------------------------------------


def test_minimal_file_gets_the_documented_defaults(tmp_path: Path) -> None:
    net = load(_write(tmp_path, MINIMAL))
    assert net.subnet == ipaddress.IPv4Network("10.50.0.0/24")
    assert (net.port, net.interface, net.keepalive, net.key_max_age_days) == (51820, "wg0", 25, 180)
    assert (net.backend_to_backend, net.preshared_keys) == (False, False)
    assert net.hub == Host(
        "proxy",
        "hub",
        ipaddress.ip_address("203.0.113.10"),
        ipaddress.IPv4Address("10.50.0.1"),
        "203.0.113.10",
    )
    assert net.backends == () and net.services == ()
    assert net.ssh == network.Ssh("root", 22, None, None)
    assert net.tls == network.Tls("self-signed", "letsencrypt", None, None, None, None, None)
    assert net.path == tmp_path / "network.yml"


def test_example_file_is_valid_and_covers_every_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # the example's ssh.key: ~/.ssh/id_ed25519
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh/id_ed25519").write_text("a key\n")
    net = load(REPO / "network.example.yml")
    assert [h.name for h in net.hosts] == ["proxy", "backend-1", "backend-2"]
    assert [str(h.wg_ip) for h in net.hosts] == ["10.50.0.1", "10.50.0.2", "10.50.0.3"]
    app = net.services[0]
    assert app == Service(
        "app",
        "backend-1",
        8080,
        ("app.example.com", "www.example.com"),
        True,
        ("198.51.100.0/24", "192.0.2.7/32"),
        True,
        "/srv/app/compose.yml",
        None,
    )
    assert net.services_on("backend-2")[0].unit == "node-exporter.service"
    assert net.tls.acme_directory == "https://acme-v02.api.letsencrypt.org/directory"
    assert net.tls.email == "ops@example.com"
    assert net.ssh.key == Path("~/.ssh/id_ed25519").expanduser()
    text = (REPO / "network.example.yml").read_text()
    for keys in (
        schema.keys.NETWORK_KEYS,
        schema.keys.SSH_KEYS,
        schema.keys.HOST_KEYS,
        schema.keys.SERVICE_KEYS,
        schema.keys.TLS_KEYS,
        schema.keys.TOP_KEYS,
    ):
        for key in keys:
            assert f"{key}:" in text, f"network.example.yml does not show {key}"


def test_hosts_host_services_on_and_wg_cidr(tmp_path: Path) -> None:
    net = load(_write(tmp_path, HAND_WRITTEN))
    assert [h.name for h in net.hosts] == ["proxy", "web", "db", "cache"]
    assert [h.role for h in net.hosts] == ["hub", "backend", "backend", "backend"]
    assert net.host("db").wg_cidr == "10.50.0.2/32"
    assert net.services_on("web") == (net.services[0],)
    assert net.services_on("db") == ()
    with pytest.raises(KeyError):
        net.host("nope")
    with pytest.raises(dataclasses.FrozenInstanceError):
        net.port = 1  # type: ignore[misc]


def test_allocation_takes_the_lowest_free_address_and_keeps_explicit_ones(tmp_path: Path) -> None:
    net = load(_write(tmp_path, HAND_WRITTEN))
    # hub .1 (default), db pinned .2, then web and cache get .3 and .4 in file order
    assert {h.name: str(h.wg_ip) for h in net.hosts} == {
        "proxy": "10.50.0.1",
        "web": "10.50.0.3",
        "db": "10.50.0.2",
        "cache": "10.50.0.4",
    }
    assert next_free_wg_ip(net) == ipaddress.IPv4Address("10.50.0.5")


def test_explicit_hub_address_frees_the_first_one(tmp_path: Path) -> None:
    text = MINIMAL.replace("203.0.113.10\n", "203.0.113.10\n  wg_ip: 10.50.0.100\n") + (
        "backends:\n  - name: web\n    public_ip: 203.0.113.21\n"
    )
    net = load(_write(tmp_path, text))
    assert str(net.hub.wg_ip) == "10.50.0.100"
    assert str(net.host("web").wg_ip) == "10.50.0.1"


def test_smallest_subnet_that_fits(tmp_path: Path) -> None:
    text = MINIMAL.replace("/24", "/30") + "backends:\n  - name: web\n    public_ip: 203.0.113.21\n"
    net = load(_write(tmp_path, text))
    assert [str(h.wg_ip) for h in net.hosts] == ["10.50.0.1", "10.50.0.2"]
    with pytest.raises(ConfigError) as info:
        next_free_wg_ip(net)
    assert "is full" in str(info.value)


def test_good_values_that_look_unusual_are_accepted(tmp_path: Path) -> None:
    text = """\
network: {subnet: 10.50.0.0/16, port: 443, keepalive: 0, interface: bh0}
ssh: {user: deploy, port: 2222, key: keys/id_ed25519, known_hosts: /etc/ssh/known}
proxy: {name: hub-1, public_ip: "2001:db8::10", ssh_host: hub.example.com}
backends:
  - {name: b1, public_ip: 2001:2:3:4:5:6:7:8}
services:
  - name: app
    backend: b1
    port: 51820
    domains: [App.Example.com., x.example.com]
    allow: [2001:db8::/32, 192.0.2.1]
    unit: app@blue.service
    compose: /srv/./app-1/compose.yml
tls:
  mode: acme
  email: first.last+ops@example.com
  acme_server: https://acme.example.com:14000/dir
  acme_ca_bundle: ca/pebble.pem
"""
    path = _write(tmp_path, text)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys/id_ed25519").write_text("a key\n")
    (tmp_path / "ca").mkdir()
    (tmp_path / "ca/pebble.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    net = load(path)
    assert str(net.host("b1").public_ip) == "2001:2:3:4:5:6:7:8"
    assert net.hub.ssh_host == "hub.example.com"
    assert net.services[0].domains == ("app.example.com", "x.example.com")
    assert net.services[0].allow == ("2001:db8::/32", "192.0.2.1/32")
    assert net.ssh.key == tmp_path / "keys/id_ed25519"  # relative to the file
    assert net.tls.acme_directory == "https://acme.example.com:14000/dir"
    assert net.tls.acme_ca_bundle == tmp_path / "ca/pebble.pem"


def test_provided_tls(tmp_path: Path) -> None:
    text = MINIMAL.replace("self-signed", "provided\n  cert: /etc/ssl/a.pem\n  key: /etc/ssl/a.key")
    tls = load(_write(tmp_path, text)).tls
    assert (tls.mode, tls.cert, tls.key, tls.acme_directory) == (
        "provided",
        "/etc/ssl/a.pem",
        "/etc/ssl/a.key",
        None,
    )


def test_staging_acme_server(tmp_path: Path) -> None:
    text = MINIMAL.replace("self-signed", "acme\n  acme_server: letsencrypt-staging\n  email: a@example.com")
    tls = load(_write(tmp_path, text)).tls
    assert tls.acme_directory == "https://acme-staging-v02.api.letsencrypt.org/directory"


def test_every_problem_has_a_location_and_they_are_sorted_by_line(tmp_path: Path) -> None:
    text = """\
tls: {mode: nope}
network:
  subnet: 10.50.0.0/33
proxy:
  public_ip: x
services:
  - {name: a, backend: b, port: 0}
"""
    with pytest.raises(ConfigError) as info:
        load(_write(tmp_path, text))
    problems = info.value.problems
    assert [(p.line, p.field) for p in problems] == [
        (1, "tls.mode"),
        (3, "network.subnet"),
        (5, "proxy.public_ip"),
        (7, "services[0].backend"),
        (7, "services[0].port"),
    ]
    assert all(p.file.endswith("network.yml") and p.column for p in problems)
    assert info.value.exit_code == 2


# -- write_back --------------------------------------------------------------------------------


def test_load_without_write_back_never_touches_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, HAND_WRITTEN)
    load(path)
    assert path.read_text() == HAND_WRITTEN


def test_write_back_inserts_only_wg_ip_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, HAND_WRITTEN)
    path.chmod(0o640)
    before = load(path)
    after = load(path, write_back=True)
    assert after == before
    assert path.read_text() == HAND_WRITTEN.replace(
        "    public_ip: 203.0.113.21   # hetzner\n",
        "    public_ip: 203.0.113.21   # hetzner\n    wg_ip: 10.50.0.3\n",
    ).replace(
        "{name: cache, public_ip: 203.0.113.23}",
        "{name: cache, public_ip: 203.0.113.23, wg_ip: 10.50.0.4}",
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["network.yml"]  # no temp file left


def test_write_back_is_a_no_op_when_every_address_is_written(tmp_path: Path) -> None:
    path = _write(tmp_path, HAND_WRITTEN)
    load(path, write_back=True)
    written = path.read_bytes()
    os.utime(path, (0, 0))
    load(path, write_back=True)
    assert path.read_bytes() == written
    assert path.stat().st_mtime == 0  # not rewritten


def test_write_back_fills_empty_wg_ip_and_keeps_crlf(tmp_path: Path) -> None:
    text = MINIMAL.replace("\n", "\r\n") + (
        "backends:\r\n  - name: web\r\n    wg_ip:   # allocate me\r\n    public_ip: 203.0.113.21\r\n"
    )
    path = _write(tmp_path, text)
    load(path, write_back=True)
    assert path.read_bytes() == text.replace("wg_ip:   #", "wg_ip: 10.50.0.2   #").encode()


def test_write_back_through_a_symlink_keeps_the_link(tmp_path: Path) -> None:
    real = _write(tmp_path, HAND_WRITTEN, "real.yml")
    link = tmp_path / "network.yml"
    link.symlink_to(real)
    load(link, write_back=True)
    assert link.is_symlink()
    assert "wg_ip: 10.50.0.3" in real.read_text()


def test_invalid_file_is_not_written_back(tmp_path: Path) -> None:
    text = HAND_WRITTEN.replace("port: 8080", "port: 22")
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError):
        load(path, write_back=True)
    assert path.read_text() == text


# -- load_current ------------------------------------------------------------------------------


def test_load_current_reads_env_or_default_and_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    network.clear_cache()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(network.ENV_VAR, raising=False)
    _write(tmp_path, MINIMAL)
    first = network.load_current()
    assert isinstance(first, Network) and network.load_current() is first
    other = _write(tmp_path, HAND_WRITTEN, "other.yml")
    monkeypatch.setenv(network.ENV_VAR, str(other))
    assert [h.name for h in network.load_current().backends] == ["web", "db", "cache"]
    network.clear_cache()


def test_load_current_raises_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    network.clear_cache()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(network.ENV_VAR, "missing.yml")
    with pytest.raises(ConfigError) as info:
        network.load_current()
    assert _problems(info) == [
        "missing.yml: (file): not found; copy network.example.yml to network.yml, or pass --network PATH"
    ]


# -- add_backend / remove_backend --------------------------------------------------------------


def test_add_backend_appends_one_item_with_its_address(tmp_path: Path) -> None:
    path = _write(tmp_path, HAND_WRITTEN)
    host = add_backend(path, None, "203.0.113.30")
    assert host == Host(
        "backend-1",
        "backend",
        ipaddress.ip_address("203.0.113.30"),
        ipaddress.IPv4Address("10.50.0.5"),
        "203.0.113.30",
    )
    assert path.read_text() == HAND_WRITTEN.replace(
        "{name: cache, public_ip: 203.0.113.23}\n",
        "{name: cache, public_ip: 203.0.113.23}\n"
        "  - name: backend-1\n    public_ip: 203.0.113.30\n    wg_ip: 10.50.0.5\n",
    )
    assert load(path).host("backend-1") == host


def test_add_backend_default_name_is_the_lowest_free_number(tmp_path: Path) -> None:
    text = MINIMAL + (
        "backends:\n  - name: backend-1\n    public_ip: 203.0.113.21\n"
        "  - name: backend-3\n    public_ip: 203.0.113.23\n"
    )
    path = _write(tmp_path, text)
    assert add_backend(path, None, "203.0.113.22").name == "backend-2"
    assert add_backend(path, None, "203.0.113.24").name == "backend-4"


def test_add_backend_with_explicit_wg_ip_and_ipv6(tmp_path: Path) -> None:
    hub_v6 = MINIMAL.replace("203.0.113.10", '"2001:db8::10"')  # one family for hub and backends
    path = _write(tmp_path, hub_v6 + "backends: []  # none yet\n")
    host = add_backend(path, "edge", "2001:db8::5", "10.50.0.200")
    assert str(host.wg_ip) == "10.50.0.200"
    assert path.read_text() == hub_v6 + (
        "backends:  # none yet\n  - name: edge\n    public_ip: 2001:db8::5\n    wg_ip: 10.50.0.200\n"
    )


def test_add_backend_creates_the_backends_key(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL)
    add_backend(path, "web", "203.0.113.21")
    assert path.read_text() == MINIMAL + (
        "backends:\n  - name: web\n    public_ip: 203.0.113.21\n    wg_ip: 10.50.0.2\n"
    )


@pytest.mark.parametrize(
    "name, public_ip, wg_ip, problem",
    [
        (
            "web",
            "203.0.113.99",
            None,
            "network.yml: name: 'web' is already a host in network.yml; choose another name",
        ),
        (
            "proxy",
            "203.0.113.99",
            None,
            "network.yml: name: 'proxy' is already a host in network.yml; choose another name",
        ),
        (
            "evil\n  wg_ip: 10.50.0.1",
            "203.0.113.99",
            None,
            "network.yml: name: 'evil\\n  wg_ip: 10.50.0.1' is not a valid host name; use "
            "lowercase letters, digits and '-' (not at either end), at most 63 characters",
        ),
        (
            "x;reboot",
            "203.0.113.99",
            None,
            "network.yml: name: 'x;reboot' is not a valid host name; use lowercase letters, "
            "digits and '-' (not at either end), at most 63 characters",
        ),
        (
            "new",
            "203.0.113.21",
            None,
            "network.yml: public_ip: '203.0.113.21' is already the public_ip of 'web'",
        ),
        (
            "new",
            "203.0.113.x",
            None,
            "network.yml: public_ip: '203.0.113.x' is not an IP address; write e.g. 203.0.113.21",
        ),
        (
            "new",
            "203.0.113.99",
            "10.50.0.2",
            "network.yml: wg_ip: '10.50.0.2' is already the wg_ip of 'db'; omit it to get 10.50.0.5",
        ),
        (
            "new",
            "203.0.113.99",
            "10.60.0.2",
            "network.yml: wg_ip: '10.60.0.2' is not a host address of network.subnet "
            "10.50.0.0/24; omit it to get 10.50.0.5",
        ),
        (
            "new",
            "203.0.113.99",
            "10.50.0.255",
            "network.yml: wg_ip: '10.50.0.255' is not a host address of network.subnet "
            "10.50.0.0/24; omit it to get 10.50.0.5",
        ),
        (
            "new",
            "203.0.113.99",
            "fd00::1",
            "network.yml: wg_ip: 'fd00::1' is not an IPv4 address; write e.g. 10.50.0.9",
        ),
        # inv add-backend --host: only canonical, routable addresses outside the tunnel
        (
            "new",
            "2001:db8::99%x\nPostUp = reboot",
            None,
            "network.yml: public_ip: '2001:db8::99%x\\nPostUp = reboot' has a scope ('%...'), "
            "which no config file here can carry; write the address without it, e.g. 2001:db8::99",
        ),
        (
            "new",
            "2001:DB8::99",
            None,
            "network.yml: public_ip: '2001:DB8::99' is not in canonical form; write 2001:db8::99",
        ),
        (
            "new",
            "::ffff:203.0.113.99",
            None,
            "network.yml: public_ip: '::ffff:203.0.113.99' is an IPv4 address written as IPv6; "
            "write 203.0.113.99",
        ),
        (
            "new",
            "127.0.0.1",
            None,
            "network.yml: public_ip: '127.0.0.1' is a loopback address (only the host itself "
            "reaches it); no other host can reach it: give the backend's public address",
        ),
        (
            "new",
            "10.50.0.77",
            None,
            "network.yml: public_ip: '10.50.0.77' is inside network.subnet 10.50.0.0/24, the "
            "tunnel's own addresses; give the backend's public address",
        ),
        (
            "new",
            "2001:db8::77",
            None,
            "network.yml: public_ip: '2001:db8::77' is IPv6 but the hub has IPv4 only: the tunnel "
            "runs over a family both ends have; give the backend an address of the hub's family, "
            "or the hub an IPv6 address (public_ip6 for IPv6) and deploy it first",
        ),
    ],
)
def test_add_backend_failures_leave_the_file_unchanged(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    public_ip: str,
    wg_ip: str | None,
    problem: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, HAND_WRITTEN)
    before = path.read_bytes()
    with pytest.raises(ConfigError) as info:
        add_backend("network.yml", name, public_ip, wg_ip)
    assert _problems(info) == [problem]
    assert path.read_bytes() == before


def test_add_backend_to_a_full_subnet(tmp_path: Path) -> None:
    text = MINIMAL.replace("/24", "/30") + "backends:\n  - name: web\n    public_ip: 203.0.113.21\n"
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        add_backend(path, None, "203.0.113.22")
    assert "'10.50.0.0/30' is full (2 hosts); use a larger subnet" in str(info.value)
    assert path.read_text() == text


def test_add_backend_refuses_an_invalid_file(tmp_path: Path) -> None:
    text = HAND_WRITTEN.replace("backend: web", "backend: nope")
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        add_backend(path, None, "203.0.113.30")
    assert "services[0].backend: 'nope' is not a backend" in str(info.value)
    assert path.read_text() == text


def test_remove_backend_removes_exactly_its_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, HAND_WRITTEN)
    removed = remove_backend(path, "db")
    assert removed.name == "db" and str(removed.wg_ip) == "10.50.0.2"
    assert path.read_text() == HAND_WRITTEN.replace(
        "  - name: db\n    public_ip: 203.0.113.22\n    wg_ip: 10.50.0.2          # pinned\n", ""
    )
    remove_backend(path, "cache")
    assert "cache" not in path.read_text()
    assert "# the web box\n  - name: web\n" in path.read_text()


def test_remove_last_backend_leaves_an_empty_list(tmp_path: Path) -> None:
    text = MINIMAL + "backends:\n  - name: web\n    public_ip: 203.0.113.21\n"
    path = _write(tmp_path, text)
    remove_backend(path, "web")
    assert path.read_text() == MINIMAL + "backends: []\n"
    assert load(path).backends == ()


@pytest.mark.parametrize(
    "name, problem",
    [
        ("proxy", "network.yml: name: 'proxy' is the hub (proxy); it cannot be removed"),
        ("nope", "network.yml: name: there is no backend 'nope'; backends: web, db, cache"),
        (
            "web",
            "network.yml: name: services app run on 'web'; remove or move them first "
            "(or remove them with it: --force)",
        ),
    ],
)
def test_remove_backend_failures_leave_the_file_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, problem: str
) -> None:
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, HAND_WRITTEN)
    before = path.read_bytes()
    with pytest.raises(ConfigError) as info:
        remove_backend("network.yml", name)
    assert _problems(info) == [problem]
    assert path.read_bytes() == before


def test_edit_refuses_when_the_file_changed_underneath(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, HAND_WRITTEN)
    real_read = network._read

    def read_then_someone_edits(file: str) -> str:
        text = real_read(file)
        path.write_text(HAND_WRITTEN + "# edited meanwhile\n")
        return text

    monkeypatch.setattr(network, "_read", read_then_someone_edits)
    with pytest.raises(ConfigError) as info:
        add_backend(path, None, "203.0.113.30")
    assert "changed while we were editing it" in str(info.value)
    assert path.read_text() == HAND_WRITTEN + "# edited meanwhile\n"


@pytest.mark.parametrize(
    "subnet, block",
    [
        ("0.0.0.0/24", "0.0.0.0/8"),
        ("127.0.0.0/24", "127.0.0.0/8"),
        ("224.0.0.0/24", "224.0.0.0/4"),
        ("240.0.0.0/24", "240.0.0.0/4"),
        ("255.255.255.0/24", "240.0.0.0/4"),
        ("169.254.0.0/16", "169.254.0.0/16"),
        ("160.0.0.0/3", "169.254.0.0/16"),
    ],
)
def test_a_tunnel_subnet_the_hosts_cannot_route_is_refused(tmp_path: Path, subnet: str, block: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(_write(tmp_path, MINIMAL.replace("10.50.0.0/24", subnet)))
    (problem,) = info.value.problems
    assert problem.field == "network.subnet" and f"overlaps {block}" in problem.message
