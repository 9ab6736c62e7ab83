"""pyinfra's own CLI (the pinned one, unchanged), started with gevent's plugin look-ups read once.

    python -m backhaul.pyinfracli -y inventory.py deploys/site.py     (what backhaul/runner.py runs)

pyinfra's CLI runs gevent's ``monkey.patch_all()`` as it is imported, and gevent looks up the
plugins of each step of it (``importlib.metadata.entry_points(group=...)``, 25 times), each
look-up reading the metadata of every installed distribution: 0.15-0.2 s of CPU in every
pyinfra run here, with no plugin installed at all. While pyinfra's CLI is imported, every
look-up is answered from one reading (the installed distributions cannot change meanwhile);
afterwards the standard function is back, for whatever pyinfra looks up later.
"""

from __future__ import annotations

import contextlib
import runpy
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


def main() -> None:
    with entry_points_read_once():
        import pyinfra_cli  # noqa: F401 - gevent's patch_all(), and its look-ups, happen here
    runpy.run_module("pyinfra", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
