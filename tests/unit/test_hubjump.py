"""The run's one connection to the hub for every jump (backhaul/hubjump.py), on loopback."""

from __future__ import annotations

import copy
import socket
import threading

import gevent
import pytest

from backhaul import hubjump


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_hub_is_tried_once_for_the_backends_connecting_together(tmp_path, monkeypatch):
    config = tmp_path / "jump.conf"
    config.write_text(f"Host backhaul-hub\n  HostName 127.0.0.1\n  Port {_closed_port()}\n  User root\n")
    monkeypatch.setattr(hubjump, "_hubs", {})
    monkeypatch.setattr(hubjump, "_failures", {})
    jumps = [hubjump.Jump(str(config), f"10.50.0.{n}", 22) for n in (2, 3, 4)]
    lock = hubjump._hub_lock()
    lock.acquire()  # as if the first backend were still connecting: the others queue
    jobs = [gevent.spawn(lambda j=jump: j.settimeout(0.1)) for jump in jumps]  # paramiko, first
    gevent.sleep(0)
    lock.release()
    gevent.joinall(jobs)
    errors = [job.exception for job in jobs]
    assert all(isinstance(e, OSError) for e in errors), errors
    assert len({id(e) for e in errors}) == 1  # one attempt, its error for every backend


def test_copying_host_data_opens_no_channel(tmp_path, monkeypatch):
    monkeypatch.setattr(hubjump, "open_channel", lambda *a: pytest.fail("a channel was opened"))
    data = {"sock": hubjump.Jump(str(tmp_path / "none.conf"), "10.50.0.2", 22)}
    copy.copy(data), copy.deepcopy(data)


def test_a_later_connect_tries_the_hub_again(tmp_path, monkeypatch):
    """A flow that waits for a hub to come back (verify in a loop, in one process) must not
    hear the first attempt's failure forever."""
    port = _closed_port()
    config = tmp_path / "jump.conf"
    config.write_text(f"Host backhaul-hub\n  HostName 127.0.0.1\n  Port {port}\n  User root\n")
    monkeypatch.setattr(hubjump, "_hubs", {})
    monkeypatch.setattr(hubjump, "_failures", {})
    with pytest.raises(OSError) as first:  # refused: nothing listens
        hubjump.Jump(str(config), "10.50.0.2", 22).settimeout(0.1)
    with socket.socket() as listener:  # the hub is back (it answers, then hangs up)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        threading.Thread(target=lambda: listener.accept()[0].close(), daemon=True).start()
        with pytest.raises(Exception) as later:
            hubjump.Jump(str(config), "10.50.0.2", 22).settimeout(0.1)
    assert later.value is not first.value, "the first attempt's failure was handed out again"
