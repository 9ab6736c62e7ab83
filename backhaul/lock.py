"""One backhaul run per network file at a time: a second `inv deploy` refuses clearly."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from pathlib import Path

from backhaul.errors import BackhaulError, ConfigError, Problem


class LockedError(BackhaulError):
    exit_code = 3


@contextlib.contextmanager
def network_lock(path: str | Path, wait: float = 0.0):
    """One backhaul run per network file at a time; a second one waits ``wait`` s, then refuses."""
    lock_path = Path(path).resolve().with_name(f".{Path(path).name}.lock")
    if not Path(path).is_file():  # the same message as the model's, before any lock file
        raise ConfigError([Problem(str(path), None, None, "(file)", "not found; copy "
                                   "network.example.yml to network.yml, or pass --network PATH")])
    with open(lock_path, "a+") as f:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.seek(0)
                    holder = f.read().strip() or "another backhaul run"
                    raise LockedError(
                        f"{path} is in use by {holder}; wait for it to finish and run again"
                    ) from None
                time.sleep(0.2)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} ({' '.join(sys.argv[1:3]) or 'backhaul'})\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
