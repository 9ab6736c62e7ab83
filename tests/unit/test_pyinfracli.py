"""The pyinfra child every flow starts (backhaul/runner.py): how much of its start is ours to save.

gevent's ``monkey.patch_all()``, which pyinfra's CLI runs first thing, looks up its plugins
about 25 times, and each look-up reads the metadata of every installed distribution: 0.15-0.2 s
of CPU in every pyinfra run, for no plugin at all. The child reads them once.
"""

from __future__ import annotations

import subprocess
import sys

from backhaul import runner

# Counts the scans of the installed distributions in a child started as the runner starts it.
COUNT = """
import runpy, sys
from importlib import metadata
scans = [0]
real = metadata.distributions
def distributions(**params):
    scans[0] += 1
    return real(**params)
metadata.distributions = distributions
sys.argv = [sys.argv[1], "--version"]
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
except SystemExit:
    pass
print("scans", scans[0])
"""


def _scans() -> tuple[int, str]:
    module = runner.PYINFRA[-1]
    proc = subprocess.run(
        [sys.executable, "-c", COUNT, module], capture_output=True, text=True, cwd=runner.ROOT, timeout=60
    )
    last = proc.stdout.strip().splitlines()[-1]
    return int(last.split()[1]), proc.stdout


def test_the_pyinfra_child_reads_the_installed_packages_metadata_once_at_start():
    scans, out = _scans()
    assert "pyinfra" in out.lower()  # it is pyinfra's CLI that answered --version
    assert scans <= 2, f"the installed distributions were read {scans} times at pyinfra's start"


# What a child started as the runner starts it has imported once pyinfra's CLI has started.
LOADED = """
import runpy, sys
sys.argv = [sys.argv[1], "--version"]
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
except SystemExit:
    pass
print("loaded", "invoke.context" in sys.modules)
import invoke  # what paramiko runs for a `Match exec` in an ssh_config: still there
print("usable", callable(invoke.run), "invoke.context" in sys.modules)
"""


def test_the_pyinfra_child_imports_invoke_only_when_paramiko_uses_it():
    # paramiko imports invoke (0.1 s) for ssh_config's `Match exec`, which backhaul's never has
    module = runner.PYINFRA[-1]
    proc = subprocess.run(
        [sys.executable, "-c", LOADED, module], capture_output=True, text=True, cwd=runner.ROOT, timeout=60
    )
    lines = proc.stdout.strip().splitlines()
    assert lines[-2:] == ["loaded False", "usable True True"], proc.stdout + proc.stderr
