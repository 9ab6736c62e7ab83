"""Work a deploy could not finish, reported to the task that runs it.

A peer whose public key cannot be read (its host unreachable and never deployed) is left out
of the configs; the deploy records that here so that ``inv deploy`` ends non-zero naming it
(pyinfra alone would call the run a success). A plain ``pyinfra`` run logs a warning.

The messages go into a file without a name (``TemporaryFile``: unlinked as it is made) that the
task hands its pyinfra child by descriptor: however either process ends, killed or not, no file
is left in the temp folder.
"""

from __future__ import annotations

import os
from typing import BinaryIO

ENV = "BACKHAUL_PENDING_FD"


def child_env(sink: BinaryIO) -> tuple[dict[str, str], list[int]]:
    """Environment and descriptors that let a child process ``record`` into ``sink``."""
    return {ENV: str(sink.fileno())}, [sink.fileno()]


def record(message: str) -> None:
    fd = os.environ.get(ENV)
    if fd:
        os.write(int(fd), (message.rstrip("\n") + "\n").encode())


def read(sink: BinaryIO) -> list[str]:
    """What the child recorded (call once it has ended)."""
    sink.seek(0)
    return sink.read().decode().splitlines()
