"""The lab itself: real hosts with their own identity, systemd, SSH, apt through the cache."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from backhaul.lab import lab as labmod
from backhaul.lab.layout import Lab

from .conftest import SUITE, own_lab_name
from .labkit import ROOT


def test_every_host_has_its_own_identity(lab):
    seen_ids = set()
    for h in lab.hosts:
        out = lab.ssh(h.name, "hostname; cat /etc/machine-id; systemctl is-system-running").stdout
        hostname, machine_id, state = out.split()
        assert hostname == h.name
        assert state == "running"
        seen_ids.add(machine_id)
    assert len(seen_ids) == len(lab.hosts)


def test_host_installs_a_package_through_the_lab_cache(lab):
    out = lab.ssh(
        "backend-1",
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
        "apt-get install -y -qq --no-install-recommends hello >/dev/null && hello",
    ).stdout
    assert "Hello, world!" in out


def test_pyinfra_reaches_every_host_through_the_inventory(lab):
    proc = lab.pyinfra("exec", "--", "hostname")
    out = proc.stdout + proc.stderr  # pyinfra logs to stderr
    for h in lab.lab.network_hosts:
        assert re.search(rf"^\[{h.name}\]\s+{h.name}$", out, re.M), out


def _traces(lab: Lab) -> list[str]:
    found = []
    mounts = Path("/proc/self/mounts").read_text()
    if str(lab.state_dir) in mounts:
        found.append("mount")
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    if lab.bridge in links or f"vb-{lab.name}-" in links:
        found.append("link")
    if list(Path("/sys/fs/cgroup").glob(f"*/**/{lab.cgroup_name}")):
        found.append("cgroup")
    ps = subprocess.run(["ps", "-eo", "stat,args"], capture_output=True, text=True).stdout
    if any(str(lab.state_dir) in line and not line.startswith("Z") for line in ps.splitlines()):
        found.append("process")
    return found


def test_a_second_lab_coexists_and_down_leaves_nothing_behind(lab):
    # named after the session's lab: two test runs side by side never share it
    other = Lab.make(own_lab_name("t"), 1, project_dir=ROOT, suite=SUITE)
    try:
        labmod.up(other, fresh=True)
        assert labmod.status(other)[1]["running"]
        # the session's lab is unaffected
        assert lab.ssh("proxy", "hostname").stdout.strip() == "proxy"
    finally:
        labmod.down(other, purge=True)
    assert _traces(other) == []
