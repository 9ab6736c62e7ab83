"""Every fixture under tests/data/facts/<module>.<Fact>/ is one test case."""

import hashlib
import shlex

import pytest
from pyinfra_harness import cases, check_fact

CASES = cases("facts")


@pytest.mark.parametrize("path", [p for _, p in CASES], ids=[i for i, _ in CASES])
def test_fact(path):
    check_fact(path)


def test_a_sudo_that_asks_for_a_password_is_refused_with_the_fix():
    from backhaul.facts.system import sudo_problem

    assert sudo_problem("backend-1", {"user": "root", "sudo": "root"}) is None
    assert sudo_problem("backend-1", {"user": "deploy", "sudo": "passwordless"}) is None
    msg = sudo_problem("backend-1", {"user": "asker", "sudo": "password"})
    assert msg.startswith("backend-1: ssh.user 'asker' is not root, and sudo asks it for a password")
    assert "asker ALL=(ALL) NOPASSWD:ALL" in msg and "ssh.user: root" in msg
    assert "has no sudo" in sudo_problem("b", {"user": "admin", "sudo": "missing"})


def test_the_ssh_session_is_found_through_sudo():
    """sudo resets the environment: a non-root SSH user's facts run without $SSH_CONNECTION,
    and the firewall's SSH guard would then know neither the port nor the family. The fact's
    own command runs here under sh, below a parent that has the variable and without it."""
    import subprocess

    from backhaul.facts.system import SshSession

    command = SshSession().command()
    outer = f"env -u SSH_CONNECTION sh -c {shlex.quote(command)}"
    env = {"PATH": "/usr/bin:/bin", "SSH_CONNECTION": "198.51.100.1 40022 198.51.100.11 2222"}
    out = subprocess.run(["sh", "-c", outer], capture_output=True, text=True, check=True, env=env)
    assert SshSession().process(out.stdout.splitlines()) == {
        "client": "198.51.100.1",
        "server": "198.51.100.11",
        "port": 2222,
        "version": 4,
    }


def test_an_own_units_state_is_read_by_one_sha256sum_and_one_systemctl(tmp_path):
    """The isolation guard's state is in every deploy's bundled read, on every host: a shell
    pipeline per file and a systemctl per property were half of a backend's read (49 of 108
    ms of CPU, in a fleet that shares the provider's cores). The real command under sh, with
    files on disk and a systemctl that logs its calls and answers as systemd 252 does."""
    import subprocess

    from backhaul import ownunit

    files = {
        "conf": str(tmp_path / "a.conf"),
        "unit": str(tmp_path / "a.service"),
        "gone": str(tmp_path / "x"),
    }
    (tmp_path / "a.conf").write_text("conf\n")
    (tmp_path / "a.service").write_text("[Unit]\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(
        f'#!/bin/sh\necho "$*" >>{tmp_path}/calls\nprintf "ActiveState=active\\nUnitFileState=enabled\\n"\n'
    )
    (bin_dir / "systemctl").chmod(0o755)
    command = ownunit.state_command(files, "a.service")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True, env=env)
    assert ownunit.parse_state(out.stdout.splitlines(), files) == {
        "files": {
            "conf": hashlib.sha256(b"conf\n").hexdigest(),
            "unit": hashlib.sha256(b"[Unit]\n").hexdigest(),
            "gone": None,
        },
        "enabled": "enabled",
        "active": "active",
    }
    assert len((tmp_path / "calls").read_text().splitlines()) == 1
    assert command.count("sha256sum") == 1


def test_verifys_pings_run_while_the_host_reads_its_state(tmp_path):
    """verify's one command per host: the pings wait on the network (0.2 s at least), the
    reads (WireGuard, the isolation guard's rules) on the CPU. They overlap. The real command
    under sh; a ping that answers only once the reads have run (the `date` of the "now"
    section), or gives up after 5 s."""
    import subprocess

    from backhaul.facts.health import HostHealth

    log = tmp_path / "log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stubs = {
        "ping": f'echo "ping $*" >>{log}; i=0\n'
        f'while ! grep -q "^date" {log} && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done\n'
        f'echo "pong" >>{log}',
        "date": f'echo "date" >>{log}; echo 1700000000',
        "systemctl": "exit 0",
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    command = HostHealth().command(interface="wg0", ping=("10.50.0.1",))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env, timeout=30)
    calls = [line.split()[0] for line in log.read_text().splitlines()]
    assert calls == ["ping", "date", "pong"]
    health = HostHealth().process(out.stdout.splitlines())
    assert health["ping"] == {"10.50.0.1": True}


def test_the_ssh_session_reads_the_same_from_any_client_port():
    """A no-op deploy is told from a drifted host by what the host reads (backhaul/unchanged.py):
    the client's port, new with every connection, is not part of it (the firewall needs the
    addresses and the server's port only)."""
    import subprocess

    from backhaul.facts.system import SshSession

    outs = set()
    for port in (40022, 51234):
        env = {"PATH": "/usr/bin:/bin", "SSH_CONNECTION": f"198.51.100.1 {port} 198.51.100.11 22"}
        cmd = SshSession().command()
        outs.add(
            subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, check=True, env=env).stdout
        )
    assert len(outs) == 1, outs
    assert SshSession().process(outs.pop().splitlines())["client"] == "198.51.100.1"


def test_the_tunnels_live_peers_read_in_one_order_whatever_order_wg_lists_them(tmp_path):
    """wireguard-go lists a hub's peers in no fixed order: an unchanged hub must read the same
    every time (backhaul/unchanged.py compares what hosts read). The fact's own command runs
    here, with a `wg` that lists the peers in the order given."""
    import subprocess

    from backhaul.facts.wireguard import WireguardState

    fake = tmp_path / "wg"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$3" in\n'
        '  allowed-ips) cat "$ORDER" ;;\n'
        '  preshared-keys) sed "s|\\t.*|\\t(none)|" "$ORDER" ;;\n'
        "  public-key) echo HUBKEY= ;;\n"
        "esac\n"
    )
    fake.chmod(0o755)
    peers = ["AAA=\t10.50.0.2/32", "BBB=\t10.50.0.3/32", "CCC=\t10.50.0.4/32"]
    outs = set()
    for order in (peers, peers[::-1]):
        listing = tmp_path / "order"
        listing.write_text("\n".join(order) + "\n")
        env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "ORDER": str(listing)}
        cmd = WireguardState().command(interface="wg0")
        outs.add(subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, env=env).stdout)
    assert len(outs) == 1, outs
