"""Several ufw changes in ONE ufw process on the host, each exactly as its ufw command makes it.

Every ``ufw`` command starts Python, imports ufw and reads its state and the kernel's tables
before it changes anything: a fresh host's rules and its enable took 1.7 s as three commands and
1.1 s as one process (measured on the lab, Debian 13). The script below does for each change
what ufw's own CLI (/usr/sbin/ufw) does for one: parse it with ufw's parser, a new
``UFWFrontend``, ``do_action``; in order, under ufw's lock, stopping at the first error with
ufw's message. Where ufw's Python package is not the one it knows (not importable), it runs
the ufw command once per change instead.
"""

from __future__ import annotations

import shlex

# Runs on the host, with the changes as its arguments (ufw's words, without "ufw").
SCRIPT = """\
import gettext, shlex, shutil, subprocess, sys
changes = [shlex.split(a) for a in sys.argv[1:]]
try:
    from ufw.common import UFWError, programName
    from ufw.frontend import UFWFrontend, parse_command
    from ufw.util import create_lock, release_lock
except ImportError:
    for words in changes:
        if subprocess.call(["ufw", *words]):
            sys.exit(1)
    sys.exit(0)
gettext.install(programName)
# ufw checks the program it runs as (owner, permissions): its own, as when run as ufw
sys.argv[0] = shutil.which("ufw") or "/usr/sbin/ufw"
lock = create_lock(lockfile="/run/ufw.lock", dryrun=False)
try:
    for words in changes:
        p = parse_command(["ufw", *words])
        ui = UFWFrontend(p.dryrun)
        if p.action == "enable" and not p.force and not ui.continue_under_ssh():
            sys.exit("ERROR: enabling needs --force here")
        if "rule" in p.data:
            out = ui.do_action(p.action, p.data["rule"], p.data["iptype"], p.force)
        else:
            out = ui.do_action(p.action, "", "", p.force)
        if out:
            print(out)
except UFWError as e:
    sys.exit("ERROR: " + e.value)
finally:
    release_lock(lock)
"""


def command(changes: list[str]) -> str:
    """The shell command that makes these ufw changes (each ufw's words, without "ufw", as
    ``shlex.quote``d words): one change stays a plain ufw command."""
    if len(changes) == 1:
        return f"ufw {changes[0]}"
    # the script on standard input, after the changes: a reader sees those first
    words = " ".join(["python3", "-", *(shlex.quote(c) for c in changes)])
    return f"{words} <<'{_END}'\n{SCRIPT}{_END}"


_END = "BACKHAUL_UFW_BATCH"
