"""Two or more hubs (``proxies:`` beside ``proxy:``): the model, and what each host gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from backhaul.network import load

TWO_HUBS = """\
network:
  subnet: 10.50.0.0/24
proxy:
  name: hub-a
  public_ip: 203.0.113.10
proxies:
  - name: hub-b
    public_ip: 203.0.113.11
    wg_ip: 10.50.0.3
backends:
  - name: web
    public_ip: 203.0.113.21
  - name: db
    public_ip: 203.0.113.22
services:
  - name: app
    backend: web
    port: 8080
    domains: [app.example.com]
  - name: pg
    backend: db
    port: 5432
tls:
  mode: self-signed
"""


@pytest.fixture
def net(tmp_path: Path):
    path = tmp_path / "network.yml"
    path.write_text(TWO_HUBS)
    return load(path)


def test_hubs_in_file_order_and_hub_is_the_first(net) -> None:
    assert [h.name for h in net.hubs] == ["hub-a", "hub-b"]
    assert net.hub.name == "hub-a"
    assert [h.role for h in net.hubs] == ["hub", "hub"]
    assert [h.name for h in net.backends] == ["web", "db"]
    assert [h.name for h in net.hosts] == ["hub-a", "hub-b", "web", "db"]


def test_allocation_skips_every_hub_address(net) -> None:
    # hub-a takes .1 by default, hub-b names .3: the backends get .2 and .4
    assert [str(h.wg_ip) for h in net.hosts] == ["10.50.0.1", "10.50.0.3", "10.50.0.2", "10.50.0.4"]


def test_one_hub_file_has_one_hub(tmp_path: Path) -> None:
    path = tmp_path / "network.yml"
    path.write_text(TWO_HUBS.split("proxies:")[0] + "backends: []\ntls:\n  mode: self-signed\n")
    n = load(path)
    assert n.hubs == (n.hub,) and n.other_hubs == ()
