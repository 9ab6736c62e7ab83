"""Work a deploy could not finish in one pass, reported to the task that runs it.

On bare hosts the keys are made during the run, after the configs were planned, so the hub
cannot list peers whose public keys do not exist yet. The deploy records that here; ``inv
deploy`` then runs once more, and a plain ``pyinfra`` run prints what to do.
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
