"""hostfile.write's commands run in a real shell: a full disk is named, nothing half-written is
left (the lab shows the same on a host: tests/lab/test_faults.py)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from backhaul.operations import hostfile


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root: a tmpfs of its own")
def test_a_write_to_a_full_disk_says_so_and_leaves_nothing(tmp_path):
    (step,) = list(hostfile.write(f"{tmp_path}/conf", "x = 1\n" * 1000))
    # tmp_path gets a 4 KiB tmpfs, filled, in a mount namespace of the test's own
    fill = f"mount -t tmpfs -o size=4k tmpfs {tmp_path} && head -c 4096 /dev/zero > {tmp_path}/fill"
    script = f"{fill} && ( {step} ); echo exit $?; ls -A {tmp_path}"
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True)
    said = [line for line in proc.stderr.splitlines() if line.startswith("backhaul:")]
    assert said == [
        f"backhaul: could not write {tmp_path}/conf: 0 KiB free where it goes, the disk is full "
        f"(df -h {tmp_path}): free some space and run it again"
    ]
    assert proc.stdout.split() == ["exit", "1", "fill"]  # failed, and no conf.backhaul-new left
