"""The apt command: never Recommends, and it finishes what a cut-off run left."""

from backhaul.operations.packages import LOCK_WAIT, install_command


def test_a_rerun_waits_for_the_cut_off_runs_apt_before_dpkg_configure():
    """After an SSH cut, OpenSSH 10 (Debian 13) leaves the cut run's apt-get running: the
    rerun failed at once with "dpkg frontend lock was locked by /usr/bin/apt-get"."""
    cmd = install_command(["wireguard-tools", "ufw"])
    wait = f"apt-get -qq -o DPkg::Lock::Timeout={LOCK_WAIT} check"
    assert cmd.index(wait) < cmd.index("dpkg --configure -a") < cmd.index("apt-get install")
    assert "--no-install-recommends" in cmd and cmd.endswith("wireguard-tools ufw")
