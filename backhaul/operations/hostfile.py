"""The one way backhaul puts a file on a host, and the one hash it compares files by.

Every operation that writes a file compares the facts' ``sha256`` of the file on the host with
:func:`sha256` of the wanted content (so a no-op run reads no file back), and changes a file
with :func:`write`: the content is put next to it (``<path>.backhaul-new``: small text that is no
secret within the command, else by upload) and moved over it, so the file is never half-written
and a reader sees the old or the new one. Operations that
must transform or test the content on the host before it goes live (the WireGuard conf gets its
keys embedded, nginx's files are tested as a set) upload with :func:`upload` to a place of
their own and move it themselves.
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex
from collections.abc import Iterator
from io import StringIO

from pyinfra import host
from pyinfra.api import FileUploadCommand

NEW_SUFFIX = ".backhaul-new"
INLINE_MAX = 32 * 1024  # bytes; far below a single argument's limit (128 KiB on Linux)


def sha256(text: str) -> str:
    """The hex sha256 of ``text`` (UTF-8): what the facts report of a file on the host."""
    return hashlib.sha256(text.encode()).hexdigest()


def upload(content: str, dest: str) -> FileUploadCommand:
    """The one upload: ``content`` to ``dest`` on the host being deployed."""
    return FileUploadCommand(StringIO(content), dest, remote_temp_filename=host.get_temp_filename(dest))


def write(
    path: str,
    content: str,
    mode: str = "644",
    *,
    mkdir: bool = False,
    expect: str | None = None,
    backup: str | None = None,
) -> Iterator[str | FileUploadCommand]:
    """Commands that replace ``path`` with ``content``, atomically (put beside it, then ``mv``).

    + mode: the new file's mode
    + mkdir: make the parent directory first (a drop-in's ``NAME.service.d``)
    + expect: the content the file must still hold, else the run fails rather than overwrite
      an edit made meanwhile (a file of the user's); its mode and owner are then kept
    + backup: with ``expect``, where to copy the user's original once
    """
    q = shlex.quote
    tmp = path + NEW_SUFFIX
    steps = [f"mkdir -p {q(posixpath.dirname(path))}"] if mkdir else []
    if _inline(content, mode):
        need = len(content.encode()) // 1024 + 4  # KiB: the content, rounded up to whole blocks
        steps.append(f"{{ printf '%s' {q(content)} > {q(tmp)} || {cannot_write(path, need, [tmp])}; }}")
    else:
        yield from joined(steps)
        steps = []
        yield upload(content, tmp)
    if expect is None:
        steps.append(f"chmod {mode} {q(tmp)} && mv -f {q(tmp)} {q(path)}")
        yield from joined(steps)
        return
    steps.append(
        f"if ! echo {sha256(expect)}'  '{q(path)} | sha256sum -c --status; then rm -f {q(tmp)};"
        f" echo 'backhaul: {path} changed on the host during this run; run the deploy again' >&2;"
        " exit 1; fi"
    )
    if backup:
        steps.append(f"{{ [ -e {q(backup)} ] || cp -p {q(path)} {q(backup)}; }}")
    steps.append(
        f"chmod --reference={q(path)} {q(tmp)} && chown --reference={q(path)} {q(tmp)}"
        f" && mv -f {q(tmp)} {q(path)}"
    )
    yield from joined(steps)


def cannot_write(path: str, need_kib: int, remove: list[str]) -> str:
    """Shell, after a write to ``path`` failed: the half-written files (``remove``) gone, and
    the cause said, which neither the shell (dash's printf says "I/O error" for a full disk,
    ``wg genkey`` says nothing) nor pyinfra ("Error: executed 0 commands") names: a disk with
    less than ``need_kib`` free where the file goes is full, said with what to do. Exits 1."""
    q = shlex.quote
    where = posixpath.dirname(path) or "/"
    said = q(f"backhaul: could not write {path}: ")
    full = q(f" KiB free where it goes, the disk is full (df -h {where}): free some space and run it again")
    return (
        f"{{ rm -f {' '.join(q(r) for r in remove)}; free=$(df -Pk {q(where)} | awk 'NR==2 {{print $4}}'); "
        f'if [ "${{free:-0}}" -lt {need_kib} ]; then echo {said}"$free"{full}; '
        f"else echo {said}{q('see the error above')}; fi >&2; exit 1; }}"
    )


def _inline(content: str, mode: str) -> bool:
    """Small text that is no secret goes in the command itself: one round trip instead of an
    upload's several. A secret (a mode that others cannot read) never sits on a command line,
    where ``ps`` on the host (and pyinfra's debug output) would show it."""
    return len(content.encode()) <= INLINE_MAX and not mode.endswith("00")


def joined(commands: list) -> Iterator:
    """``commands`` as few as they can be: consecutive shell commands run as one (``&&``), an
    upload stays on its own."""
    run: list[str] = []
    for c in commands:
        if isinstance(c, str):
            run.append(c)
            continue
        if run:
            yield " && ".join(run)
            run = []
        yield c
    if run:
        yield " && ".join(run)
