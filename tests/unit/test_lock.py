"""The network lock, with real processes: a symlink shares its target's lock, a plain pyinfra
run takes it, `inv`'s pyinfra child runs under its parent's lock, and killing the parent does
not free the lock while the child still runs. Hosts are loopback addresses on which nothing or
a silent listener answers: no lab needed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backhaul import flows
from backhaul.errors import DeployError
from backhaul.lock import LockedError, network_lock

ROOT = Path(__file__).resolve().parents[2]

NETWORK = """\
network:
  subnet: 10.50.0.0/24
ssh:
  port: {port}
proxy:
  public_ip: 198.51.100.10
  ssh_host: 127.0.0.2
tls:
  mode: self-signed
"""


def network_file(tmp_path: Path, port: int = 1) -> Path:
    path = tmp_path / "network.yml"
    path.write_text(NETWORK.format(port=port))
    return path


def _locked(path: Path) -> bool:
    try:
        with network_lock(path):
            return False
    except LockedError:
        return True


def _wait(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def test_a_symlinked_network_file_shares_the_lock_of_its_target(tmp_path: Path) -> None:
    target = network_file(tmp_path)
    (tmp_path / "links").mkdir()
    link = tmp_path / "links" / "prod.yml"
    link.symlink_to(target)
    with network_lock(link):
        with pytest.raises(LockedError) as info:
            with network_lock(target):
                pass
    assert "is in use by pid" in str(info.value)
    with network_lock(target):
        assert _locked(link)


def _plain_pyinfra(path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pyinfra", "-y", "inventory.py", "deploys/firewall.py"],
        cwd=ROOT,
        env={**os.environ, "BACKHAUL_NETWORK": str(path), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_plain_pyinfra_run_refuses_while_the_network_is_locked(tmp_path: Path) -> None:
    path = network_file(tmp_path)
    with network_lock(path):
        proc = _plain_pyinfra(path)
        # a variable naming another open file (not the locked one) does not let a run in
        other = os.open(tmp_path / "network.yml", os.O_RDONLY)
        try:
            forged = subprocess.run(
                [sys.executable, "-c", f"from backhaul import lock; lock.hold_for_process({str(path)!r})"],
                cwd=ROOT,
                env={**os.environ, "BACKHAUL_LOCK_FD": str(other)},
                capture_output=True,
                text=True,
                timeout=60,
                pass_fds=(other,),
            )
        finally:
            os.close(other)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 3  # as `inv deploy` exits when the file is locked
    assert f"{path} is in use by pid {os.getpid()}" in out, out[-3000:]
    assert "Connecting" not in out and "Could not connect" not in out  # no host was touched
    assert forged.returncode != 0 and "LockedError" in forged.stderr


def test_a_plain_pyinfra_run_holds_the_lock_while_it_runs(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts, never speaks: SSH waits for its banner
        silent.bind(("127.0.0.2", 0))
        silent.listen()
        path = network_file(tmp_path, silent.getsockname()[1])
        proc = subprocess.Popen(
            [sys.executable, "-m", "pyinfra", "-y", "inventory.py", "deploys/firewall.py"],
            cwd=ROOT,
            env={**os.environ, "BACKHAUL_NETWORK": str(path)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            conn, _ = silent.accept()  # pyinfra is connecting: the inventory was loaded
            with conn:
                assert _locked(path)
        finally:
            proc.wait(timeout=120)
    assert not _locked(path)


def test_inv_deploy_runs_pyinfra_under_its_own_lock(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = network_file(tmp_path)
    with pytest.raises(DeployError) as info:
        flows.deploy(str(path))
    out = capsys.readouterr().out
    assert "is in use" not in out + str(info.value)  # no deadlock with its own child
    assert "the deploy failed on proxy" in str(info.value)  # it got as far as the host
    assert not _locked(path)


def test_killing_inv_keeps_the_lock_until_its_pyinfra_child_is_gone(tmp_path: Path) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.2", 0))
        silent.listen()
        path = network_file(tmp_path, silent.getsockname()[1])
        parent = subprocess.Popen(
            [sys.executable, "-c", f"from backhaul import flows; flows.deploy({str(path)!r})"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            conn, _ = silent.accept()  # the pyinfra child is connecting to the hub
            with conn:
                assert _locked(path)
                parent.send_signal(signal.SIGKILL)  # only inv: its child keeps running
                parent.wait(timeout=30)
                assert _locked(path), "the lock went with inv while its pyinfra child runs"
            # the connection is closed: the child gives up on the host and ends
            _wait(lambda: not _locked(path), "the child to end and free the lock")
        finally:
            try:
                os.killpg(parent.pid, signal.SIGKILL)  # the child, if it is still there
            except ProcessLookupError:
                pass
