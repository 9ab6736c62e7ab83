"""`inv lab.chaos`: what it draws is fixed by the seed, and fits the lab (no lab needed)."""

from __future__ import annotations

from pathlib import Path

from backhaul.lab import chaos
from backhaul.lab.layout import Lab

NETWORK = """\
network: {subnet: 10.50.0.0/24}
proxy: {name: proxy, public_ip: 198.51.100.10}
backends:
  - {name: backend-1, public_ip: 198.51.100.11, wg_ip: 10.50.0.2}
  - {name: backend-2, public_ip: 198.51.100.12, wg_ip: 10.50.0.3}
tls: {mode: self-signed}
"""


def _chaos(tmp_path: Path, seed: int) -> chaos.Chaos:
    lab = Lab.make("kq", project_dir=tmp_path, backends=2, spares=1)
    lab.files_dir.mkdir(exist_ok=True)
    (lab.files_dir / "network.yml").write_text(NETWORK)
    c = chaos.Chaos(lab, seed, say=lambda *_: None)
    c.close()  # its temp folder: not used by drawing
    return c


def test_the_same_seed_draws_the_same_faults(tmp_path):
    a, b, c = (_chaos(tmp_path, s) for s in (7, 7, 8))
    first, second, other = ([x.draw() for _ in range(30)] for x in (a, b, c))
    assert first == second and first != other


def test_every_draw_fits_the_lab(tmp_path):
    c = _chaos(tmp_path, 1)
    draws = [c.draw() for _ in range(200)]
    assert {d.flow for d in draws} == set(chaos.FLOWS) - {"remove-backend"}  # the spare is out
    assert {d.fault for d in draws} == set(chaos.FAULTS)
    for d in draws:
        assert 1 <= d.line <= chaos.MAX_LINE
        if d.flow == "add-backend":
            assert d.target == c.spare.name
        if d.flow == "rotate-backend":
            assert d.target in ("backend-1", "backend-2")
        if d.fault.startswith("SIG"):
            assert d.victim == d.target
        elif d.fault == "disk-full":
            assert d.victim == "proxy"  # the hub's disk
        else:
            assert d.victim in (d.target, "proxy")
        assert d.skew in ((-600, 600) if d.fault == "clock" else (0,))
    assert {d.label for d in draws if d.fault == "clock"} == {"clock-10m", "clock+10m"}
