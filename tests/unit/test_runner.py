"""The pyinfra runner and the deploy flow's report, against hosts that do not answer (a closed
port on loopback: pyinfra's connection is refused at once, no lab needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from backhaul import flows
from backhaul.errors import DeployError

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


def test_when_every_limited_host_failed_the_others_were_not_deployed(tmp_path: Path) -> None:
    with pytest.raises(DeployError) as info:
        flows.deploy(str(network_file(tmp_path)), limit="backend-1")
    message = str(info.value)
    assert "other hosts are converged" not in message
    assert "No host completed the deploy" in message
    assert "--limit" in message  # proxy was not part of this run: nothing is said about it
