"""One backhaul run per network file at a time: a second `inv deploy` (or a plain
`pyinfra inventory.py deploys/...`) refuses clearly.

The lock is an flock on ``.<file>.lock`` beside the *resolved* network file, so a symlink
and its target share one lock. An flock belongs to an open file description, not to a
process: `inv` hands the locked descriptor to the pyinfra child it runs (``child_env``), and
the child, seeing the descriptor of its own network's lock file in ``$BACKHAUL_LOCK_FD``,
runs under its parent's lock instead of waiting for it (``hold_for_process``). Because the
child keeps the descriptor open, killing `inv` does not free the lock while its pyinfra child
still deploys: the lock goes when the last process holding it is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from backhaul.errors import BackhaulError, ConfigError, Problem
from backhaul.network import MISSING_FILE

ENV_FD = "BACKHAUL_LOCK_FD"

_held: dict[Path, int] = {}  # lock file -> the descriptor this process holds it by


class LockedError(BackhaulError):
    exit_code = 3


def lock_path(network_file: str | os.PathLike[str]) -> Path:
    """``.<name>.lock`` beside the file the network path resolves to (symlinks followed)."""
    real = Path(os.path.realpath(network_file))
    return real.with_name(f".{real.name}.lock")


def _require_file(network_file: str | os.PathLike[str]) -> None:
    if not Path(network_file).is_file():  # the model's own message, before any lock file is made
        raise ConfigError([Problem(str(network_file), None, None, "(file)", MISSING_FILE)])


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _refuse(network_file: str | os.PathLike[str], fd: int) -> LockedError:
    os.lseek(fd, 0, os.SEEK_SET)
    holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "another backhaul run"
    return LockedError(f"{network_file} is in use by {holder}; wait for it to finish and run again")


def _write_holder(fd: int, text: str) -> None:
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, text.encode("utf-8"))


@contextlib.contextmanager
def network_lock(path: str | os.PathLike[str], wait: float = 0.0) -> Iterator[None]:
    """One backhaul run per network file at a time; a second one waits ``wait`` s, then refuses."""
    _require_file(path)
    lock = lock_path(path)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + wait
        while not _try_lock(fd):
            if time.monotonic() >= deadline:
                raise _refuse(path, fd)
            time.sleep(0.2)
        _write_holder(fd, f"pid {os.getpid()} ({' '.join(sys.argv[1:3]) or 'backhaul'})\n")
        _held[lock] = fd
        try:
            yield
        finally:
            del _held[lock]
            _write_holder(fd, "")
    finally:
        os.close(fd)


def child_env(network_file: str | os.PathLike[str]) -> tuple[dict[str, str], tuple[int, ...]]:
    """(environment, pass_fds) for a child process that runs under this process's lock of
    ``network``; nothing when this process does not hold it."""
    fd = _held.get(lock_path(network_file))
    if fd is None:
        return {}, ()
    return {ENV_FD: str(fd)}, (fd,)


_process_lock: list[int] = []  # the descriptor hold_for_process keeps open until exit


def hold_for_process(network_file: str | os.PathLike[str]) -> None:
    """Hold the network's lock until this process exits (a pyinfra run of inventory.py).

    Under `inv`, the parent's locked descriptor arrives in ``$BACKHAUL_LOCK_FD``: the lock is
    already this run's. A plain `pyinfra` run takes it itself, or refuses like `inv deploy`.
    """
    if _process_lock:
        return
    _require_file(network_file)
    lock = lock_path(network_file)
    inherited = _inherited(lock)
    if inherited is not None and _try_lock(inherited):  # the same open file: already ours
        os.set_inheritable(inherited, False)  # pyinfra's own children need not keep it
        _process_lock.append(inherited)
        return
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    if not _try_lock(fd):
        error = _refuse(network_file, fd)
        os.close(fd)
        raise error
    _write_holder(fd, f"pid {os.getpid()} (pyinfra {' '.join(sys.argv[1:4])})\n")
    _process_lock.append(fd)
    atexit.register(_write_holder, fd, "")


def _inherited(lock: Path) -> int | None:
    """The descriptor named by ``$BACKHAUL_LOCK_FD`` if it is open on this very lock file."""
    value = os.environ.get(ENV_FD, "")
    if not value.isdigit():
        return None
    fd = int(value)
    try:
        mine, theirs = os.fstat(fd), os.stat(lock)
    except OSError:
        return None
    if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
        return None  # a stale or foreign variable: take the lock normally
    return fd
