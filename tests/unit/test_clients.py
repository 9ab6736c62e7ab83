"""Admin clients (road-warrior peers): the model, the hub's peers, allow lists by name, expiry."""

from __future__ import annotations

import datetime
import textwrap
from pathlib import Path

import pytest

from backhaul import network as netmod
from backhaul.errors import ConfigError

K1 = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
K2 = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="

BASE = """\
network: {subnet: 10.50.0.0/24}
proxy: {public_ip: 203.0.113.10}
backends:
  - {name: backend-1, public_ip: 203.0.113.21, wg_ip: 10.50.0.2}
services:
  - {name: admin, backend: backend-1, port: 8080, domains: [admin.example.com], allow: %s}
tls: {mode: self-signed}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "network.yml"
    p.write_text(textwrap.dedent(text))
    return p


def test_clients_get_the_highest_free_address_written_back(tmp_path):
    p = write(tmp_path, BASE % "[clients]" + f"""\
clients:
  - name: laptop
    public_key: {K1}
  - {{name: phone, public_key: {K2}, expires: 2030-01-31}}
""")
    net = netmod.load(p, write_back=True)
    laptop, phone = net.clients
    assert (laptop.name, str(laptop.wg_ip), laptop.expires) == ("laptop", "10.50.0.254", None)
    assert (str(phone.wg_ip), phone.expires) == ("10.50.0.253", datetime.date(2030, 1, 31))
    text = p.read_text()
    assert "    wg_ip: 10.50.0.254\n" in text and "wg_ip: 10.50.0.253" in text
    # a backend allocated later never takes a client's address, nor the other way round
    assert str(netmod.next_free_wg_ip(net)) == "10.50.0.3"


def test_allow_by_client_name_and_all_clients(tmp_path):
    p = write(tmp_path, (BASE % "[clients, 198.51.100.7]").replace("tls:", f"""\
  - {{name: ops, backend: backend-1, port: 8081, domains: [ops.example.com], allow: [laptop]}}
clients:
  - {{name: laptop, public_key: {K1}, wg_ip: 10.50.0.200}}
  - {{name: phone, public_key: {K2}, wg_ip: 10.50.0.201}}
tls:"""))
    net = netmod.load(p)
    admin, ops = net.services
    assert admin.allow == ("198.51.100.7/32", "10.50.0.200/32", "10.50.0.201/32")
    assert ops.allow == ("10.50.0.200/32",)
    assert ops.restricted and admin.restricted


def test_allow_clients_with_no_client_still_denies_everyone(tmp_path):
    net = netmod.load(write(tmp_path, BASE % "[clients]"))
    assert net.services[0].allow == () and net.services[0].restricted


def test_a_backend_cannot_take_a_clients_explicit_address(tmp_path):
    p = write(tmp_path, BASE.replace("wg_ip: 10.50.0.2", "wg_ip: 10.50.0.2}\n  - {name: b2, "
                                     "public_ip: 203.0.113.22") % "[]" + f"""\
clients:
  - {{name: laptop, public_key: {K1}, wg_ip: 10.50.0.3}}
""")
    net = netmod.load(p, write_back=True)
    assert str(net.host("b2").wg_ip) == "10.50.0.4"


def test_add_and_remove_client_edit_only_their_entry(tmp_path):
    p = write(tmp_path, BASE % "[]")
    c = netmod.add_client(p, "laptop", K1)
    assert (c.name, str(c.wg_ip)) == ("laptop", "10.50.0.254")
    assert netmod.load(p).clients == (c,)
    with pytest.raises(ConfigError, match="already a client"):
        netmod.add_client(p, "laptop", K2)
    with pytest.raises(ConfigError, match="already the public key of 'laptop'"):
        netmod.add_client(p, "phone", K1)
    with pytest.raises(ConfigError, match="not a WireGuard public key"):
        netmod.add_client(p, "phone", "hello")
    with pytest.raises(ConfigError, match="is a host"):
        netmod.add_client(p, "backend-1", K2)
    before = p.read_text()
    with pytest.raises(ConfigError, match="no client 'phone'"):
        netmod.remove_client(p, "phone")
    assert p.read_text() == before
    assert netmod.remove_client(p, "laptop") == c
    assert netmod.load(p).clients == ()


def test_remove_client_refuses_while_an_allow_list_names_it(tmp_path):
    p = write(tmp_path, BASE % "[laptop]" + f"clients:\n  - {{name: laptop, public_key: {K1}}}\n")
    before = p.read_text()
    with pytest.raises(ConfigError, match=r"services\[0\]\.allow names 'laptop'"):
        netmod.remove_client(p, "laptop")
    assert p.read_text() == before


def test_the_example_file_shows_every_client_field(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh/id_ed25519").write_text("a key\n")
    example = Path(__file__).resolve().parents[2] / "network.example.yml"
    net = netmod.load(example)
    assert [(c.name, str(c.wg_ip)) for c in net.clients] == [("laptop", "10.50.0.254")]
    text = example.read_text()
    for key in (*netmod._CLIENT_KEYS, "client_warn_days"):
        assert f"{key}:" in text
