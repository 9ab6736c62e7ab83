"""Native services bound to the tunnel: the drop-ins' content and paths, and the lab demo's
entries in the lab network file (they must validate as a user's would)."""

import configparser

from backhaul.facts.units import tunnel_dropin, unit_dropin
from backhaul.lab import demo, files
from backhaul.lab.layout import Lab
from backhaul.network import load
from backhaul.render import render


def _unit_section(text: str) -> list[tuple[str, str]]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(text)
    return list(parser["Unit"].items())


def test_service_dropin_binds_to_the_tunnel_and_starts_after_it():
    text = render("systemd-unit-wg.conf.j2", interface="wg0")
    assert _unit_section(text) == [("After", "wg-quick@wg0.service"), ("BindsTo", "wg-quick@wg0.service")]


def test_tunnel_dropin_wants_each_unit_one_per_line():
    text = render("systemd-tunnel-wants.conf.j2", units=["a.service", "b@x.service"])
    assert text.splitlines()[-3:] == ["[Unit]", "Wants=a.service", "Wants=b@x.service"]


def test_dropin_paths():
    assert unit_dropin("app.service") == "/etc/systemd/system/app.service.d/backhaul-wg.conf"
    assert tunnel_dropin("wg0") == "/etc/systemd/system/wg-quick@wg0.service.d/backhaul-units.conf"


def _lab_network(tmp_path, monkeypatch, backends: int, installed: bool):
    monkeypatch.setattr("backhaul.lab.layout.STATE_ROOT", tmp_path / "state")
    lab = Lab.make("unit", backends, "198.18.77.0/24", tmp_path)
    lab.state_dir.mkdir(parents=True)
    if installed:
        (lab.state_dir / demo.MARKER).write_text("{}")
    lab.files_dir.mkdir(parents=True)  # what lab.up writes there, named by the network file
    (lab.files_dir / "id_ed25519").write_text("a key\n")
    for ca in ("acme-api-ca.pem", "acme-root.pem"):
        (lab.files_dir / ca).write_text("-----BEGIN CERTIFICATE-----\n")
    path = tmp_path / "network.yml"
    path.write_text(
        files.network_yaml(lab, "https://198.18.77.1:14000/dir", services=demo.network_services(lab))
    )
    return lab, load(path)


def test_demo_services_absent_until_installed(tmp_path, monkeypatch):
    _, net = _lab_network(tmp_path, monkeypatch, 2, installed=False)
    assert net.services == ()


def test_demo_services_validate_and_match_the_lab(tmp_path, monkeypatch):
    lab, net = _lab_network(tmp_path, monkeypatch, 2, installed=True)
    by_name = {s.name: s for s in net.services}
    app, admin, web = by_name["app"], by_name["admin"], by_name["web"]
    assert (app.backend, app.port, app.unit) == ("backend-1", 8080, "backhaul-demo-app.service")
    assert app.websocket and app.hsts and app.domains == ("app.unit.lab.test",)
    assert (admin.backend, admin.port, admin.allow) == ("backend-2", 8080, (f"{lab.gateway}/32",))
    assert admin.unit == "backhaul-demo-admin.service"
    assert (web.backend, web.port, web.compose) == ("backend-2", 8081, demo.COMPOSE_FILE)


def test_demo_with_one_backend_has_only_the_app(tmp_path, monkeypatch):
    _, net = _lab_network(tmp_path, monkeypatch, 1, installed=True)
    assert [s.name for s in net.services] == ["app"]
