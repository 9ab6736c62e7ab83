"""Work a deploy could not finish, reported to the task that runs it.

A peer whose public key cannot be read (its host unreachable and never deployed) is left out
of the configs; the deploy records that here so that ``inv deploy`` ends non-zero naming it
(pyinfra alone would call the run a success). A plain ``pyinfra`` run logs a warning.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "BACKHAUL_PENDING_FILE"


def record(message: str) -> None:
    path = os.environ.get(ENV)
    if path:
        with open(path, "a") as f:
            f.write(message.rstrip("\n") + "\n")


def read(path: str | Path) -> list[str]:
    p = Path(path)
    return p.read_text().splitlines() if p.exists() else []
