"""The pyinfra runner and the deploy flow's report, against hosts that do not answer (a closed
port on loopback: pyinfra's connection is refused at once, no lab needed)."""

from __future__ import annotations

import subprocess
import sys
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
