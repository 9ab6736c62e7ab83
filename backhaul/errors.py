"""One root error for the project.

Every error a user can act on derives from :class:`BackhaulError`; the CLI layer (``tasks.py``)
maps it to a message and an exit code, never a traceback. Anything else is a bug.
"""

from __future__ import annotations

from dataclasses import dataclass


class BackhaulError(Exception):
    """Something the user can act on. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a network file, located as precisely as the YAML allows."""

    file: str
    line: int | None  # 1-based; None when the location is unknown (e.g. a missing section)
    column: int | None  # 1-based
    field: str  # dotted path, e.g. "backends[1].public_ip"
    message: str  # what is wrong and how to fix it

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.field}: {self.message}"


class ConfigError(BackhaulError):
    """The network file is invalid. Carries every problem found, not just the first."""

    exit_code = 2

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        n = len(self.problems)
        head = f"the network file has {n} problem{'s' if n != 1 else ''} (nothing was changed):"
        super().__init__("\n".join([head, *(f"  - {p}" for p in self.problems)]))


class LabError(BackhaulError):
    """The lab cannot be brought up or torn down; the message says what to install or do."""

    exit_code = 2


class DeployError(BackhaulError):
    """A deploy step failed on one or more hosts."""

    exit_code = 1
