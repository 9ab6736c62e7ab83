"""Reading a fact of ANOTHER host from inside a deploy (public keys, preshared key hashes).

Two things pyinfra's `other.get_fact()` does not do for us:
- many hosts asking the same host at once (ten backends each reading the hub's public key)
  open that many channels on its one SSH connection, and sshd refuses past MaxSessions (10);
  so at most a few reads per host run at a time here;
- a failed read must fail only the host that asked, not the one asked about (pyinfra marks the
  asked host failed by default, which turned a busy hub into a "failed" hub).
"""

from __future__ import annotations

from collections import defaultdict

from gevent.lock import BoundedSemaphore
from pyinfra import inventory, state
from pyinfra.api.facts import get_fact

from . import snapshot
from .bundle import part_key

PER_HOST = 4  # concurrent reads of one host: well under sshd's MaxSessions default of 10
_gates: defaultdict[str, BoundedSemaphore] = defaultdict(lambda: BoundedSemaphore(PER_HOST))


_memo: dict[tuple, object] = {}
_memo_locks: defaultdict[tuple, BoundedSemaphore] = defaultdict(lambda: BoundedSemaphore(1))


def read(name: str, cls: type, memo: bool = False, **kwargs):
    """The fact ``cls(**kwargs)`` of host ``name``; raises on failure (the caller decides).

    ``memo``: for facts that cannot change for the rest of the run once read while operations
    execute (the hub's public key, read by every backend's config): one read, not one per
    backend. Never memoized while the deploy is being prepared (earlier operations change it).
    """
    other = inventory.get_host(name)
    found, value = snapshot.lookup(other, cls, kwargs)
    if found:
        return value
    if not (memo and state.is_executing):
        return _gated_read(other, cls, kwargs)
    key = (name, part_key(cls, kwargs))
    # one reader per fact: ten backends asking at once make one read, the others wait for it
    with _memo_locks[key]:
        if key not in _memo:
            value = _gated_read(other, cls, kwargs)
            if not value:
                return value  # not kept: a failed or empty read is tried again by the next
            _memo[key] = value
        return _memo[key]


def _gated_read(other, cls: type, kwargs: dict):
    with _gates[other.name]:
        return get_fact(state, other, cls, kwargs=kwargs, apply_failed_hosts=False)


def run(name: str, command):
    """Run a read-only command on host ``name`` (gated like ``read``): (ok, output)."""
    other = inventory.get_host(name)
    with _gates[name]:
        # as root like the facts (pyinfra applies host data's _sudo to those only)
        sudo = {"_sudo": True} if getattr(other.data, "_sudo", False) else {}
        return other.run_shell_command(command, print_output=False, print_input=False, **sudo)
