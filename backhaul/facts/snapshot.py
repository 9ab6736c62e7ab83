"""One round trip per host for the facts a whole deploy reads.

pyinfra 3 reads a fact again each time an operation asks for it, one operation at a time;
on a no-op run that is nearly all the run does (50-150 ms per fact on the lab). So
``deploys/site.py`` calls ``take()`` first: it reads, in one command (``FactBundle``), every
fact the previous full deploy asked of this host, as recorded beside the network file
(``.<network file>.facts.json``: fact names and their arguments, never a value). Then
``get()`` answers from that snapshot for as long as it is still true: until an operation has
changed something on that host in this run. After that, or for a fact the snapshot does not
hold (new arguments, a part that failed), ``get()`` is a plain ``host.get_fact()``.

The first run, or a changed network, only costs the reads pyinfra would do anyway. A partial
run (``pyinfra inventory.py deploys/nginx.py``) takes no snapshot and records nothing.
"""

from __future__ import annotations

import atexit
import copy
import json
import os
from importlib import import_module
from pathlib import Path
from typing import Any

from pyinfra import host as current_host
from pyinfra import state

from .bundle import FactBundle, part_key

_snapshots: dict[str, dict[tuple, Any]] = {}
_asked: dict[str, dict[tuple, dict[str, Any]]] = {}  # host -> part_key -> record entry
_record: list[Path] = []  # the file to write at exit, once a snapshot was taken


def record_path(network_file: Path) -> Path:
    return network_file.with_name(f".{network_file.name}.facts.json")


def _ref(cls: type) -> str:
    return f"{cls.__module__}:{cls.__name__}"


def _parts_from(saved: list[dict[str, Any]]) -> list[tuple[type, dict[str, Any]]]:
    parts = []
    for item in saved:
        module, _, name = str(item.get("fact", "")).partition(":")
        if not module.startswith("backhaul.facts."):
            continue  # only our own facts are ever bundled
        try:
            cls = getattr(import_module(module), name)
        except (ImportError, AttributeError):
            continue  # a fact renamed since: it is read on its own, and recorded anew
        parts.append((cls, dict(item.get("kwargs") or {})))
    return parts


def record_when_done(network_file: Path) -> None:
    """At the end of this pyinfra process (once, whatever number of hosts call it), write which
    facts each host was asked in this run: the next full deploy's snapshot. Facts are asked
    while operations run too, so the record can only be written once the run is over."""
    if not _record:
        _record.append(record_path(network_file))
        atexit.register(_write)


def take(network_file: Path) -> None:
    """Snapshot the current host: the facts recorded for it by the last full deploy."""
    path = record_path(network_file)
    try:
        saved = json.loads(path.read_text()).get(current_host.name, [])
    except (OSError, ValueError, AttributeError):
        saved = []
    _asked.setdefault(current_host.name, {})
    parts = _parts_from(saved)
    _snapshots[current_host.name] = current_host.get_fact(FactBundle, parts=parts) if parts else {}


def _write() -> None:
    if not _record or not _asked:
        return
    path = _record[0]
    try:  # hosts this run did not reach keep what they had
        data = dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        data = {}
    data.update({name: list(asks.values()) for name, asks in _asked.items()})
    tmp = path.with_name(path.name + f".{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        tmp.replace(path)
    except OSError:
        pass  # only a cache: the next run reads facts one by one


def _changed_in_this_run(host) -> bool:
    """Has an operation changed (or failed on) ``host`` since the snapshot was taken?"""
    for op_data in state.ops.get(host, {}).values():
        meta = op_data.operation_meta
        if meta.is_complete() and (meta.did_change() or not meta.did_succeed()):
            return True
    return False


def lookup(host, cls: type, kwargs: dict[str, Any]) -> tuple[bool, Any]:
    """``(True, value)`` if ``host``'s snapshot still answers for ``cls(**kwargs)``. Records
    the ask (for the next run's snapshot) when this run took one."""
    asks = _asked.get(host.name)
    if asks is None:
        return False, None
    key = part_key(cls, kwargs)
    if cls.__module__.startswith("backhaul.facts."):
        asks.setdefault(key, {"fact": _ref(cls), "kwargs": kwargs})
    snap = _snapshots.get(host.name, {})
    if key not in snap or _changed_in_this_run(host):
        return False, None
    return True, copy.deepcopy(snap[key])  # callers may change what they get


def get(cls: type, **kwargs: Any) -> Any:
    """The current host's fact ``cls(**kwargs)``: from the snapshot while it holds, else read."""
    found, value = lookup(current_host, cls, kwargs)
    return value if found else current_host.get_fact(cls, **kwargs)
