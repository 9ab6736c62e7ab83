"""pyinfra's own CLI (the pinned one, unchanged), started without two costs that buy nothing here.

    python -m backhaul.pyinfracli -y inventory.py deploys/site.py     (what backhaul/runner.py runs)

pyinfra's CLI runs gevent's ``monkey.patch_all()`` as it is imported, and gevent looks up the
plugins of each step of it (``importlib.metadata.entry_points(group=...)``, 25 times), each
look-up reading the metadata of every installed distribution: 0.15-0.2 s of CPU in every
pyinfra run here, with no plugin installed at all. While pyinfra's CLI is imported, every
look-up is answered from one reading (the installed distributions cannot change meanwhile);
afterwards the standard function is back, for whatever pyinfra looks up later.

paramiko (pyinfra's SSH) imports invoke as it is imported, for an ssh_config's ``Match exec``
only: 0.1 s of CPU in every run. Here invoke is imported when paramiko first uses it (Python's
``LazyLoader``): an ssh_config with ``Match exec`` works as before, the others never load it.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import runpy
import sys
from collections.abc import Iterator
from importlib import metadata


@contextlib.contextmanager
def entry_points_read_once() -> Iterator[None]:
    real = metadata.entry_points
    every = real()  # one reading: every group

    def entry_points(**params):
        return every.select(**params) if params else every

    metadata.entry_points = entry_points
    try:
        yield
    finally:
        metadata.entry_points = real


class _InvokeWhenUsed(importlib.abc.MetaPathFinder):
    """Finds invoke as usual, to be executed at its first attribute read, not at its import.
    (A lazy module put in ``sys.modules`` beforehand would load at the next ``import invoke``:
    the import system reads its ``__spec__``.)"""

    def find_spec(self, name, path=None, target=None):
        if name != "invoke":
            return None
        sys.meta_path.remove(self)  # once: the real finders answer from here on
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


def invoke_when_used() -> None:
    if "invoke" not in sys.modules:
        sys.meta_path.insert(0, _InvokeWhenUsed())


def main() -> None:
    invoke_when_used()
    with entry_points_read_once():
        import pyinfra_cli  # noqa: F401 - gevent's patch_all(), and its look-ups, happen here
    runpy.run_module("pyinfra", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
