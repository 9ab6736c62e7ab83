"""The run's one connection to the hub for every jump (backhaul/hubjump.py), on loopback."""

from __future__ import annotations

import copy
import socket
import threading

import gevent
import pytest

from backhaul import hubjump

HUB = ("backhaul-hub",)  # the one hub of these configs


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_hub_is_tried_once_for_the_backends_connecting_together(tmp_path, monkeypatch):
    config = tmp_path / "jump.conf"
    config.write_text(f"Host backhaul-hub\n  HostName 127.0.0.1\n  Port {_closed_port()}\n  User root\n")
    monkeypatch.setattr(hubjump, "_hubs", {})
    monkeypatch.setattr(hubjump, "_failures", {})
    jumps = [hubjump.Jump(str(config), f"10.50.0.{n}", 22, HUB) for n in (2, 3, 4)]
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
    data = {"sock": hubjump.Jump(str(tmp_path / "none.conf"), "10.50.0.2", 22, HUB)}
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
        hubjump.Jump(str(config), "10.50.0.2", 22, HUB).settimeout(0.1)
    with socket.socket() as listener:  # the hub is back (it answers, then hangs up)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        threading.Thread(target=lambda: listener.accept()[0].close(), daemon=True).start()
        with pytest.raises(Exception) as later:
            hubjump.Jump(str(config), "10.50.0.2", 22, HUB).settimeout(0.1)
    assert later.value is not first.value, "the first attempt's failure was handed out again"


# --- several hubs (proxies:): the first that answers carries every jump of the run -----------
class _Hub:
    """A connected hub as hubjump uses it: its transport opens channels."""

    def __init__(self, name: str):
        self.name = name

    def get_transport(self):
        return self

    def is_active(self) -> bool:
        return True

    def open_channel(self, kind, dest, src, timeout=None):
        return _Channel(self.name, dest)

    def close(self) -> None:
        pass


class _Channel:
    def __init__(self, hub: str, dest):
        self.hub, self.dest = hub, dest

    def settimeout(self, seconds) -> None:
        pass


@pytest.fixture
def hubs(monkeypatch):
    """Hubs ``a``, ``b``, ``c``: each alias answers or raises as the test sets; calls recorded."""
    monkeypatch.setattr(hubjump, "_hubs", {})
    monkeypatch.setattr(hubjump, "_failures", {})
    dead: dict[str, Exception] = {}
    calls: list[tuple[str, float]] = []

    def connect(config_file: str, alias: str, timeout: float):
        calls.append((alias, timeout))
        gevent.sleep(0)  # (a real connect yields to the other greenlets)
        if alias in dead:
            raise dead[alias]
        return _Hub(alias)

    monkeypatch.setattr(hubjump, "_connect", connect)
    return dead, calls


def test_the_first_hub_is_tried_first_and_carries_the_jumps_when_it_answers(hubs):
    dead, calls = hubs
    jump = hubjump.Jump("x.conf", "10.50.0.2", 22, ("a", "b"))
    jump.settimeout(1)
    assert jump.hub == "a" and jump.dest == ("10.50.0.2", 22)
    assert [alias for alias, _ in calls] == ["a"]


def test_a_dead_first_hub_costs_one_short_bounded_try_then_the_next_carries_every_jump(hubs):
    dead, calls = hubs
    dead["a"] = TimeoutError("timed out")
    jumps = [hubjump.Jump("x.conf", f"10.50.0.{n}", 22, ("a", "b", "c")) for n in (2, 3, 4)]
    jobs = [gevent.spawn(lambda j=jump: j.settimeout(1)) for jump in jumps]  # together, as pyinfra
    gevent.joinall(jobs, raise_error=True)
    assert [j.hub for j in jumps] == ["b", "b", "b"]
    # one try of the dead hub for the whole run, bounded by the short timeout (a hub follows)
    assert calls == [("a", hubjump.FAILOVER_TIMEOUT), ("b", hubjump.FAILOVER_TIMEOUT)]
    assert hubjump.FAILOVER_TIMEOUT < hubjump.CONNECT_TIMEOUT


def test_the_last_hub_gets_the_full_connect_timeout(hubs):
    dead, calls = hubs
    dead["a"] = ConnectionRefusedError("refused")
    assert hubjump.Jump("x.conf", "10.50.0.2", 22, ("a", "b")).hub == "b"
    assert calls == [("a", hubjump.FAILOVER_TIMEOUT), ("b", hubjump.CONNECT_TIMEOUT)]
    # the only hub of a one-hub network: the full timeout, as before
    calls.clear()
    hubjump._hubs.clear()
    hubjump.Jump("y.conf", "10.50.0.2", 22, ("b",)).settimeout(1)
    assert calls == [("b", hubjump.CONNECT_TIMEOUT)]


def test_no_hub_answering_is_one_connect_error_naming_each_hub(hubs):
    dead, calls = hubs
    dead["a"] = TimeoutError("timed out")
    dead["b"] = ConnectionRefusedError("refused")
    jumps = [hubjump.Jump("x.conf", f"10.50.0.{n}", 22, ("a", "b")) for n in (2, 3)]
    jobs = [gevent.spawn(lambda j=jump: j.settimeout(1)) for jump in jumps]
    gevent.joinall(jobs)
    errors = [job.exception for job in jobs]
    # an OSError: pyinfra says "Could not connect", and the flows try the backend directly
    assert all(isinstance(e, OSError) for e in errors) and errors[0] is errors[1]
    assert "a: timed out" in str(errors[0]) and "b: refused" in str(errors[0])
    assert len(calls) == 2  # each hub tried once for both backends


def test_every_hub_of_the_config_is_tried_through_pyinfras_ssh_client(tmp_path, monkeypatch):
    """The real connect path: two Host entries of one ssh_config, both closed ports."""
    monkeypatch.setattr(hubjump, "_hubs", {})
    monkeypatch.setattr(hubjump, "_failures", {})
    config = tmp_path / "jump.conf"
    config.write_text(
        "".join(
            f"Host backhaul-hub-{name}\n  HostName 127.0.0.1\n  Port {_closed_port()}\n  User root\n"
            for name in ("proxy", "proxy-2")
        )
    )
    with pytest.raises(OSError) as e:
        hubjump.Jump(str(config), "10.50.0.2", 22, ("backhaul-hub-proxy", "backhaul-hub-proxy-2")).settimeout(
            1
        )
    assert "proxy: " in str(e.value) and "proxy-2: " in str(e.value)
