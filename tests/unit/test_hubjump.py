"""The run's one connection to the hub for every jump (backhaul/hubjump.py), on loopback."""

from __future__ import annotations

import copy
import socket

import pytest

from backhaul import hubjump


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_hub_is_tried_once_per_run_and_every_backend_hears_why(tmp_path, monkeypatch):
    config = tmp_path / "jump.conf"
    config.write_text(f"Host backhaul-hub\n  HostName 127.0.0.1\n  Port {_closed_port()}\n  User root\n")
    monkeypatch.setattr(hubjump, "_hubs", {})
    jumps = [hubjump.Jump(str(config), f"10.50.0.{n}", 22) for n in (2, 3, 4)]
    errors = []
    for jump in jumps:
        with pytest.raises(OSError) as e:
            jump.settimeout(0.1)  # what paramiko does first with its sock
        errors.append(e.value)
    assert len({id(e) for e in errors}) == 1  # one attempt, its error for every backend


def test_copying_host_data_opens_no_channel(tmp_path, monkeypatch):
    monkeypatch.setattr(hubjump, "open_channel", lambda *a: pytest.fail("a channel was opened"))
    data = {"sock": hubjump.Jump(str(tmp_path / "none.conf"), "10.50.0.2", 22)}
    copy.copy(data), copy.deepcopy(data)
