"""inv add-backend's flow (backhaul/flows.py), its hosts out of the way: what it does while the
deploy runs in pyinfra's child process."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import backhaul
from backhaul import flows
from backhaul.runner import Run
from tests.unit.test_network import MINIMAL  # the smallest valid network file


class _Healthy:
    ok = True

    def to_table(self) -> str:
        return "healthy"


def test_verify_is_imported_while_the_deploy_runs(tmp_path: Path, monkeypatch) -> None:
    # verify's imports (pyinfra's API, paramiko) took 0.3-1 s after the deploy, in its way
    monkeypatch.delitem(sys.modules, "backhaul.verify", raising=False)
    monkeypatch.delattr(backhaul, "verify", raising=False)
    seen: list[bool] = []

    def deploy(network_file, net, hosts, dry=False):
        deadline = time.monotonic() + 10  # the import's bound here: it takes ~1 s at worst
        while "backhaul.verify" not in sys.modules and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append("backhaul.verify" in sys.modules)
        return Run(0, [], {})

    monkeypatch.setattr(flows, "_converge", deploy)
    monkeypatch.setattr(flows, "_wait_verified", lambda network_file, names: _Healthy())
    path = tmp_path / "network.yml"
    path.write_text(MINIMAL)
    flows.add_backend(str(path), "203.0.113.30")
    assert seen == [True], "verify was not imported while the deploy ran"
