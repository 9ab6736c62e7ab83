"""The unit tests leave nothing in the machine's temp folder: each test's temp files (the
jump ssh_config, pyinfra runs' pending files, their children's) go to a folder pytest removes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from backhaul import sshpath
from backhaul.network import load

VIA_HUB = """\
network: {subnet: 10.50.0.0/24}
ssh: {via: hub}
proxy: {public_ip: 203.0.113.10}
backends:
  - {name: backend-1, public_ip: 203.0.113.21, wg_ip: 10.50.0.2}
tls: {mode: self-signed}
"""


def test_temp_files_go_to_the_tests_own_folder(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    assert Path(tempfile.gettempdir()).is_relative_to(base)
    assert Path(os.environ["TMPDIR"]).is_relative_to(base)  # pyinfra children too


def test_the_jump_config_is_written_under_it(tmp_path, tmp_path_factory):
    p = tmp_path / "network.yml"
    p.write_text(VIA_HUB)
    assert Path(sshpath.jump_config_file(load(p))).is_relative_to(tmp_path_factory.getbasetemp())
