"""What a deploy ran on each host, for the next no-op to read again without pyinfra.

``inv deploy`` hands its pyinfra child a file without a name (as ``backhaul/pending.py`` does);
the child (``deploys/site.py`` calls ``capture()``) writes into it, for every command pyinfra
ran on a host, the exact command line and a digest of what it printed: never the output
itself. When that run changed nothing, ``backhaul/unchanged.py`` keeps the list: the next
``inv deploy`` runs those commands again, and if every host prints the same (and the inputs
are the same) pyinfra would change nothing either.

One thing an unchanged host prints differently each time: its clock (the certificates' fact
reads ``date``, to judge expiry by the host's time). A decision made from the clock says until
when its answer holds (``answer_holds_until``, called where the decision is made, in
``backhaul/tls.py``); the clock's lines are then left out of that host's digest, and the
next reading of them must be before that time. A host whose clock was read with no decision
saying so keeps its clock in the digest: it never reads the same, and the deploy runs in full.

This module imports no pyinfra at import time: ``inv deploy``'s own process reads the digests.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import os
import re
from typing import Any, BinaryIO

ENV = "BACKHAUL_READS_FD"
# the one clock reading a deploy makes (backhaul.facts.nginx.CertificateState)
CLOCK = re.compile(r"^now=(\d+)$")

_bounds: dict[str, int] = {}  # host -> the earliest time a clock decision changes its answer
_captured: list[bool] = []


def child_env(sink: BinaryIO) -> tuple[dict[str, str], list[int]]:
    """Environment and descriptors that let a pyinfra child ``capture`` into ``sink``."""
    return {ENV: str(sink.fileno())}, [sink.fileno()]


def lines_of(text: str) -> list[str]:
    """A command's output as pyinfra's SSH connector splits it (``CommandOutput.stdout_lines``)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def digests(lines: list[str]) -> tuple[str, str, list[int]]:
    """(digest of the lines, digest without the clock's lines, the clock readings)."""
    clocks = [int(m.group(1)) for m in map(CLOCK.match, lines) if m]
    raw = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    steady = hashlib.sha256("\n".join(ln for ln in lines if not CLOCK.match(ln)).encode()).hexdigest()
    return raw, steady, clocks


def answer_holds_until(epoch: int | None) -> None:
    """A decision about the current host, made from its clock, gives the same answer until
    ``epoch`` (None: until the clock is read again, i.e. never the same). Outside a deploy
    that captures (unit tests, verify) it does nothing."""
    if not _captured:
        return
    from pyinfra import host

    value = 0 if epoch is None else epoch  # 0: already past
    _bounds[host.name] = min(value, _bounds.get(host.name, value))


def _write(fd: int, record: dict[str, Any]) -> None:
    os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())


def capture() -> None:
    """In a pyinfra child of ``inv deploy`` (once, whatever number of hosts call it): write
    every command run on a host, and its output's digests, into the task's file."""
    fd = os.environ.get(ENV)
    if not fd or _captured:
        return
    _captured.append(True)
    from pyinfra.connectors import ssh
    from pyinfra.connectors.util import make_unix_command_for_host

    out_fd = int(fd)
    run, put, get = ssh.SSHConnector.run_shell_command, ssh.SSHConnector.put_file, ssh.SSHConnector.get_file

    @functools.wraps(run)
    def run_shell_command(self, command, print_output=False, print_input=False, **arguments):
        ok, output = run(self, command, print_output, print_input, **arguments)
        args = dict(arguments)
        pty, stdin = args.pop("_get_pty", False), args.pop("_stdin", None)
        for name in ("_timeout", "_success_exit_codes"):
            args.pop(name, None)
        if pty or stdin is not None:  # not a plain read: nothing to run again
            _write(out_fd, {"host": self.host.name, "unreadable": "a command with a pty or stdin"})
            return ok, output
        line = make_unix_command_for_host(self.state, self.host, command, **args).get_raw_value()
        raw, steady, clocks = digests(list(output.stdout_lines))
        record = {"host": self.host.name, "command": line, "ok": bool(ok), "raw": raw, "steady": steady}
        _write(out_fd, {**record, "clocks": clocks})
        return ok, output

    def transfer(real, what):
        @functools.wraps(real)
        def wrapped(self, *args, **kwargs):
            _write(out_fd, {"host": self.host.name, "unreadable": what})
            return real(self, *args, **kwargs)

        return wrapped

    ssh.SSHConnector.run_shell_command = run_shell_command
    ssh.SSHConnector.put_file = transfer(put, "a file upload")
    ssh.SSHConnector.get_file = transfer(get, "a file download")
    atexit.register(lambda: [_write(out_fd, {"host": h, "until": t}) for h, t in _bounds.items()])


def read(sink: BinaryIO) -> dict[str, dict[str, Any]]:
    """Per host, what its pyinfra run read: ``{"commands": [...], "until": epoch | None,
    "unreadable": reason | None}``, from the records a child wrote into ``sink``."""
    sink.seek(0)
    hosts: dict[str, dict[str, Any]] = {}
    for line in sink.read().decode(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        h = hosts.setdefault(rec.get("host", ""), {"commands": [], "until": None, "unreadable": None})
        if "command" in rec:
            h["commands"].append(rec)
        elif "until" in rec:
            h["until"] = rec["until"]
        elif "unreadable" in rec:
            h["unreadable"] = h["unreadable"] or rec["unreadable"]
    return hosts
