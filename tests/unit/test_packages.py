"""The apt command: never Recommends, and it finishes what a cut-off run left. Run by a real
sh against stand-ins for apt-get and dpkg that log their calls."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from backhaul.operations.packages import LOCK_WAIT, install_command

WAIT = f"apt-get -qq -o DPkg::Lock::Timeout={LOCK_WAIT} check"


def run(tmp_path: Path, dpkg_locked_once: bool, lists: Path | None = None) -> list[str]:
    """The install command with apt-get and dpkg replaced; their calls, in order."""
    log = tmp_path / "calls"
    locked = tmp_path / "locked"
    if dpkg_locked_once:
        locked.touch()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # dpkg refuses while "locked" (as it does while another apt holds its lock); the wait
    # (apt-get check) is what lets go of it here
    (bin_dir / "dpkg").write_text(
        f'#!/bin/sh\necho "dpkg $*" >>{log}\n'
        f'if [ -e {locked} ]; then echo "dpkg: error: dpkg frontend lock was locked" >&2; exit 2; fi\n'
    )
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "apt-get $*" >>{log}\nrm -f {locked}\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    cmd = install_command(["wireguard-tools", "ufw"], lists=str(lists or tmp_path / "lists"))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    subprocess.run(["sh", "-c", cmd], env=env, check=True, capture_output=True)
    return log.read_text().splitlines()


def test_a_free_dpkg_lock_costs_no_apt_cache_build(tmp_path: Path) -> None:
    """`apt-get check` builds apt's cache from the lists it finds: 0.3-0.9 s on a fresh host,
    thrown away by the `apt-get update` that follows. It runs only when dpkg is locked."""
    calls = run(tmp_path, dpkg_locked_once=False)
    assert calls[0] == "dpkg --configure -a"
    assert not any(c.endswith(" check") for c in calls)
    assert calls[-1].startswith("apt-get install -y -q --no-install-recommends")
    assert calls[-1].endswith("wireguard-tools ufw")


def test_a_rerun_waits_for_the_cut_off_runs_apt_before_dpkg_configure(tmp_path: Path) -> None:
    """After an SSH cut, OpenSSH 10 (Debian 13) leaves the cut run's apt-get running: the
    rerun failed at once with "dpkg frontend lock was locked by /usr/bin/apt-get"."""
    calls = run(tmp_path, dpkg_locked_once=True)
    assert calls[:3] == ["dpkg --configure -a", WAIT, "dpkg --configure -a"]
    assert calls[-1].startswith("apt-get install") and f"DPkg::Lock::Timeout={LOCK_WAIT}" in calls[-1]


def test_a_fresh_host_fetches_no_translations_and_one_that_has_them_keeps_them(tmp_path: Path) -> None:
    """A fresh Debian 13 host's first update fetched the 35 MB English translations (1.5-2 s of
    add-backend); skipping them on a host that has them would make apt delete them."""
    fresh = [c for c in run(tmp_path, dpkg_locked_once=False) if c.startswith("apt-get update")]
    assert fresh == ["apt-get update -qq -o Acquire::Languages=none"]
    lists = tmp_path / "has"
    lists.mkdir()
    (lists / "deb.debian.org_debian_dists_trixie_main_i18n_Translation-en").touch()
    (tmp_path / "calls").unlink()
    (tmp_path / "bin").rename(tmp_path / "bin0")
    kept = [c for c in run(tmp_path, dpkg_locked_once=False, lists=lists) if c.startswith("apt-get update")]
    assert kept == ["apt-get update -qq"]
