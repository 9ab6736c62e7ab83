"""pyinfra's list of its global arguments (``_sudo``, ``_if``, ...), worked out once a process.

pyinfra's ``all_global_arguments()`` runs ``typing.get_type_hints`` over the class that declares
them each time it is asked: for every operation on every host (``pop_global_arguments``) and for
every fact class defined (``FactBase.__init_subclass__``). The answer is fixed once pyinfra is
imported, yet it was 160 calls and about 0.15 s of a no-op deploy's 2 s of controller CPU at
1 hub + 2 backends (more with hosts). ``remember()`` puts a memo of pyinfra's own function where
pyinfra looks it up (its arguments module, and its facts module, which imported it by name): the
same answer, a fresh list each call. pyinfra is pinned to a minor release (pyproject.toml);
tests/unit/test_globalargs.py fails if this function moves.
"""

from __future__ import annotations

import functools

from pyinfra.api import arguments, facts


def remember() -> None:
    """Install the memo (once; harmless to call again)."""
    if getattr(arguments.all_global_arguments, "backhaul_memo", False):
        return
    worked_out = functools.cache(arguments.all_global_arguments)

    def all_global_arguments() -> list[tuple[str, type]]:
        return list(worked_out())  # callers get their own list, as from pyinfra's

    all_global_arguments.backhaul_memo = True  # type: ignore[attr-defined]
    all_global_arguments.__doc__ = arguments.all_global_arguments.__doc__
    arguments.all_global_arguments = all_global_arguments
    facts.all_global_arguments = all_global_arguments
