"""ufw's changes on a host in one ufw process (backhaul/ufwbatch.py).

The operation's commands are compared in the fixtures (tests/data/operations/ufw.firewall/);
here: that a fresh host gets ONE command, and that the script it runs does what the ufw
commands would, in order, stopping at the first error, under ufw's lock. The script runs
against a stand-in for Debian's ufw package (its CLI's own calls, recorded), and without one
(one ufw process per change, the fallback). The lab runs it against the real ufw.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from pyinfra_harness import FakeHost, run_operation

from backhaul import ufwbatch
from backhaul.operations import ufw

FRESH = {
    "ufw.UfwState": {
        "active": False,
        "enabled": False,
        "logging": "low",
        "ipv6": True,
        "defaults": {"incoming": "deny", "outgoing": "allow", "routed": "deny"},
        "rules": [],
    }
}
RULES = [{"port": 22, "proto": "tcp"}, {"port": 51820, "proto": "udp", "src": "198.51.100.10"}]
CHANGES = [
    "allow in proto tcp from any to any port 22 comment backhaul",
    "allow in proto udp from 198.51.100.10 to any port 51820 comment backhaul",
    "--force enable",
]


def test_a_fresh_host_gets_one_ufw_process():
    commands = run_operation(ufw.firewall, FakeHost(FRESH), [], {"rules": RULES, "ssh_port": 22})
    assert len(commands) == 1, commands
    assert commands[0] == ufwbatch.command(CHANGES)


def test_one_change_stays_a_plain_ufw_command():
    assert ufwbatch.command(["--force enable"]) == "ufw --force enable"


# A stand-in for Debian's ufw package: the names ufw's CLI (/usr/sbin/ufw) calls, recording
# each call in $UFW_LOG; an action named "fail" raises UFWError like a refused rule does.
FAKE_UFW = {
    "common.py": """
programName = "ufw"
class UFWError(Exception):
    def __init__(self, value):
        self.value = value
""",
    "frontend.py": """
import json, os, sys
from ufw.common import UFWError
def log(*what):
    with open(os.environ["UFW_LOG"], "a") as f:
        f.write(json.dumps(what) + "\\n")
class Parsed:
    def __init__(self, argv):
        words = [a for a in argv if a != "--force"]
        self.action = words[1]
        self.force = "--force" in argv
        self.dryrun = False
        self.data = {"rule": " ".join(words[2:]), "iptype": "both"} if words[1] in ("allow", "delete") else {}
def parse_command(argv):
    return Parsed(argv)
class UFWFrontend:
    def __init__(self, dryrun):
        # ufw stats the program it runs as; _() as ufw's modules use it (gettext installs it)
        log("init", os.path.basename(sys.argv[0]), _("checked"))
    def continue_under_ssh(self):
        return False
    def do_action(self, action, rule, iptype, force):
        if action == "fail":
            raise UFWError("Bad port")
        log(action, rule, iptype, force)
        return "Rules updated"
""",
    "util.py": """
from ufw.frontend import log
def create_lock(lockfile, dryrun):
    log("lock", lockfile)
    return "L"
def release_lock(lock):
    log("unlock", lock)
""",
}


def _run_script(tmp_path: Path, changes: list[str], with_package: bool = True) -> tuple[int, str, list]:
    log = tmp_path / "calls.log"
    env = {**os.environ, "UFW_LOG": str(log), "PYTHONPATH": ""}
    if with_package:
        (tmp_path / "ufw").mkdir()
        for name, text in FAKE_UFW.items():
            (tmp_path / "ufw" / name).write_text(text)
        env["PYTHONPATH"] = str(tmp_path)
    else:  # no ufw package to import: the ufw command, once per change
        (tmp_path / "bin").mkdir()
        cli = tmp_path / "bin" / "ufw"
        cli.write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(log))}\n[ "$1" != fail ] || exit 1\n')
        cli.chmod(0o755)
        env["PATH"] = f"{tmp_path / 'bin'}:{env['PATH']}"
    # the command as the host's shell runs it, this Python as python3
    (tmp_path / "python3").symlink_to(sys.executable)
    env["PATH"] = f"{tmp_path}:{env['PATH']}"
    command = ufwbatch.command(changes)
    proc = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, cwd=tmp_path)
    lines = log.read_text().splitlines() if log.exists() else []
    calls = [json.loads(line) for line in lines] if with_package else lines
    return proc.returncode, proc.stdout + proc.stderr, calls


def test_the_script_makes_each_change_in_order_under_ufws_lock(tmp_path):
    rc, out, calls = _run_script(tmp_path, CHANGES)
    assert rc == 0, out
    assert calls == [
        ["lock", "/run/ufw.lock"],
        ["init", "ufw", "checked"],
        ["allow", "in proto tcp from any to any port 22 comment backhaul", "both", False],
        ["init", "ufw", "checked"],
        ["allow", "in proto udp from 198.51.100.10 to any port 51820 comment backhaul", "both", False],
        ["init", "ufw", "checked"],
        ["enable", "", "", True],
        ["unlock", "L"],
    ]
    assert out.count("Rules updated") == 3


def test_the_script_stops_at_the_first_error_with_ufws_message(tmp_path):
    rc, out, calls = _run_script(tmp_path, [CHANGES[0], "fail 99999", "--force enable"])
    assert rc == 1
    assert "ERROR: Bad port" in out
    assert [c[0] for c in calls] == ["lock", "init", "allow", "init", "unlock"]  # never enabled


def test_without_ufws_package_the_script_runs_ufw_once_per_change(tmp_path):
    rc, out, calls = _run_script(tmp_path, CHANGES, with_package=False)
    assert rc == 0, out
    assert calls == CHANGES


def test_without_ufws_package_the_script_stops_at_the_first_error(tmp_path):
    rc, out, calls = _run_script(tmp_path, [CHANGES[0], "fail 1", CHANGES[2]], with_package=False)
    assert rc == 1
    assert calls == [CHANGES[0], "fail 1"]  # stopped: never enabled
