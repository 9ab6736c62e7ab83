"""A host whose SSH connection dies in the middle of a run fails alone, named, like any other
host that stops answering.

pyinfra keeps one SSH connection per host for the whole run and never opens it again. When a
host reboots (or its sshd is killed) under a run, the next command meets the dead connection:
paramiko raises a bare ``EOFError`` (the socket closed under it), and an upload's SFTP channel
fails as pyinfra's ``ConnectError`` ("check that the SFTP subsystem ... is enabled"). pyinfra
fails just that host for an ``OSError`` or ``SSHException``, but neither of these is one: each
ended the whole run for every host ("An internal exception occurred" with a pyinfra-debug.log
in the project folder, or "pyinfra error"), and no host was named. Here an error met on a
connection that is gone becomes a :class:`LostConnection`, an ``OSError``, so pyinfra's own
failure path takes it: the host's operation fails with the message below, its later operations
are skipped, and every other host's run goes on.

Not chosen: connecting again and going on. A host that rebooted mid-run may have lost work that
the run's facts still show as done; the run's picture of it is stale, so the operator runs
`inv deploy` again, which reads everything fresh.
"""

from __future__ import annotations

import functools
import posixpath
import re

# what the host's connector does over SSH; each may be the first to meet the dead connection
_METHODS = ("run_shell_command", "put_file", "get_file")


class LostConnection(ConnectionResetError):
    """The SSH connection to a host went away during the run."""


class DiskFull(OSError):
    """An upload to a host stopped short: its disk is full where the file goes."""


# paramiko's check after an SFTP put: the file on the host is shorter than what was sent
# (the server's writes failed with ENOSPC, which its pipelined writes do not report one by one)
_SHORT = re.compile(r"size mismatch in put!\s*(\d+) != (\d+)")


def disk_full_message(name: str, remote: str, written: str, sent: str) -> str:
    where = posixpath.dirname(remote) or "/"
    return (
        f"the upload of {remote} to {name} stopped short ({written} of {sent} bytes written): "
        f"its disk is full where {where} is (df -h {where} on {name}): free some space there and "
        "run inv deploy again"
    )


def lost_message(name: str) -> str:
    return (
        f"the SSH connection to {name} was lost during the run (it rebooted, or its sshd or "
        "network went away): run inv deploy again once it answers"
    )


def fail_alone_when_lost(host) -> None:
    """Make ``host``'s connector report a dead connection as :class:`LostConnection`. Called
    for each host as a deploy file is prepared; calling it again changes nothing."""
    connector = host.connector
    if getattr(connector, "_backhaul_lost_connection", False):
        return
    for method in _METHODS:
        if hasattr(connector, method):
            setattr(connector, method, _translated(connector, method, host.name))
    connector._backhaul_lost_connection = True


def _gone(connector) -> bool:
    """The connector's SSH transport is closed (or was never opened)."""
    client = getattr(connector, "client", None)
    transport = client.get_transport() if client is not None else None
    return transport is None or not transport.is_active()


def _translated(connector, what: str, name: str):
    method = getattr(connector, what)  # (by its attribute's name: another layer may wrap it)

    @functools.wraps(method)
    def call(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except (LostConnection, DiskFull):
            raise
        except Exception as e:
            short = _SHORT.search(str(e)) if what == "put_file" else None
            if short and len(args) > 1:  # put_file(filename_or_io, remote_filename, ...)
                raise DiskFull(disk_full_message(name, str(args[1]), *short.groups())) from e
            # EOFError: paramiko, the transport's socket closed under it; anything else only
            # when the transport is gone (else it is some other error: left as it is)
            if isinstance(e, EOFError) or _gone(connector):
                raise LostConnection(lost_message(name)) from e
            raise

    return call
