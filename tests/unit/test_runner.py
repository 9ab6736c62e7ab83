"""The pyinfra runner and the deploy flow's report, against hosts that do not answer (a closed
port on loopback: pyinfra's connection is refused at once, no lab needed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backhaul import flows
from backhaul.errors import DeployError
from backhaul.runner import Run

REPO = Path(__file__).resolve().parents[2]

UNREACHABLE = """\
network:
  subnet: 10.50.0.0/24
ssh:
  port: 1
proxy:
  public_ip: 198.51.100.10
  ssh_host: 127.0.0.2
backends:
  - name: backend-1
    public_ip: 198.51.100.11
    ssh_host: 127.0.0.3
    wg_ip: 10.50.0.2
tls:
  mode: self-signed
"""


def network_file(tmp_path: Path) -> Path:
    path = tmp_path / "network.yml"
    path.write_text(UNREACHABLE)
    return path


def test_when_every_host_failed_the_report_says_so(tmp_path: Path) -> None:
    with pytest.raises(DeployError) as info:
        flows.deploy(str(network_file(tmp_path)))
    message = str(info.value)
    assert message.startswith("the deploy failed on backend-1, proxy")
    assert "other hosts are converged" not in message
    assert "No host completed the deploy" in message


def test_the_deploys_own_process_never_loads_pyinfra(tmp_path: Path) -> None:
    """`inv deploy` runs pyinfra as a child: importing it here too is a fifth of a no-op
    deploy's time spent for nothing (issue 10's benchmark). A fresh interpreter, the real
    flow, the real pyinfra child; then what the parent imported."""
    code = (
        "import sys\n"
        "from backhaul import flows\n"
        "from backhaul.errors import DeployError\n"
        "try:\n"
        f"    flows.deploy({str(network_file(tmp_path))!r})\n"
        "except DeployError:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyinfra', 'cryptography')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    "failed, pending, limited, dry, expected",
    [
        (
            {"b1": "Could not connect"},
            [],
            True,
            False,
            "No host completed the deploy (the hosts outside --limit were not part of this run). ",
        ),
        (
            {"b1": "Error"},
            ["b2: the hub's public key cannot be read"],
            False,
            False,
            "proxy completed the deploy. ",
        ),
        ({}, [], False, False, "pyinfra named no host; its output above says what failed in the deploy. "),
        (
            {"b1": "Error", "b2": "Error", "proxy": "Error"},
            [],
            False,
            True,
            "No host completed the plan; nothing was changed. ",
        ),
    ],
)
def test_the_advice_says_what_is_true_of_the_hosts(failed, pending, limited, dry, expected):
    run = Run(1, pending, failed)
    targets = ["b1"] if limited else ["proxy", "b1", "b2"]
    again = "inv plan" if dry else "inv deploy"
    assert run.advice(targets, limited, dry) == (
        f"{expected}Fix the cause (or wait for the hosts to come back) and run {again} again."
    )


def test_a_killed_deploy_leaves_nothing_in_the_temp_folder(tmp_path: Path) -> None:
    """`inv deploy` killed (SIGKILL: no `finally` runs) while its pyinfra runs: the temp folder
    keeps nothing of the run (issue 26: an empty backhaul-pending-* file was left)."""
    from backhaul.lab.faults import children

    temp = tmp_path / "tmp"
    temp.mkdir()
    code = f"from backhaul import flows\nflows.deploy({str(network_file(tmp_path))!r})\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "TMPDIR": str(temp)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not children(proc.pid):  # its pyinfra is running
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.01)
    (pyinfra,) = children(proc.pid)
    proc.kill()
    proc.wait()
    os.kill(pyinfra, signal.SIGKILL)  # a killed `inv` takes its pyinfra with it (its group)
    left = [p.name for p in temp.iterdir() if p.name.startswith("backhaul-") and "ssh" not in p.name]
    assert left == []


def test_the_work_left_pending_reaches_the_task_without_a_file(tmp_path: Path) -> None:
    """The pyinfra child's records come back through the descriptor it inherits."""
    import tempfile

    from backhaul import pending

    with tempfile.TemporaryFile(dir=tmp_path) as sink:
        env, fds = pending.child_env(sink)
        code = "from backhaul import pending\npending.record('b1: no key')\npending.record('b2: no key\\n')\n"
        subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env={**os.environ, **env}, pass_fds=fds, check=True
        )
        assert pending.read(sink) == ["b1: no key", "b2: no key"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "line, host, why",
    [
        (
            "    [backend-1] Command socket/SSH error: LostConnection('the SSH connection to "
            "backend-1 was lost during the run: run inv deploy again once it answers',)",
            "backend-1",
            "the SSH connection to backend-1 was lost during the run: run inv deploy again once it answers",
        ),
        ("    [backend-2] Could not connect (timed out)", "backend-2", "Could not connect (timed out)"),
        (
            "    [proxy] Command socket/SSH error: DiskFull('the upload of /etc/x to proxy stopped short "
            "(0 of 602 bytes written): its disk is full where /etc is',)",
            "proxy",
            "the upload of /etc/x to proxy stopped short (0 of 602 bytes written): "
            "its disk is full where /etc is",
        ),
    ],
)
def test_a_host_that_failed_is_named_with_its_reason(line, host, why):
    from backhaul.runner import _FAILED, _reason

    m = _FAILED.match(line)
    assert m and m.group(1) == host and _reason(m.group(2)) == why


def test_a_hosts_own_message_is_its_reason_over_pyinfras_generic_error():
    """A command of ours that fails says why on stderr ("backhaul: ..."); pyinfra then adds
    "Error: executed 0 commands", which names no cause."""
    from backhaul.runner import failures

    lines = [
        "    [backend-1] Success\n",
        "    [proxy]     sh: 1: printf: printf: I/O error\n",
        "    [proxy]     backhaul: could not write /etc/hosts: the disk is full there (0 KiB free)\n",
        "    [proxy]     Error: executed 0 commands\n",
        "    [backend-2] Could not connect (timed out)\n",
    ]
    assert failures(lines) == {
        "proxy": "could not write /etc/hosts: the disk is full there (0 KiB free)",
        "backend-2": "Could not connect (timed out)",
    }
