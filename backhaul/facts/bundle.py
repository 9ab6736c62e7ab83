"""Several facts in one round trip: see ``backhaul.facts.snapshot`` for why and when."""

from __future__ import annotations

import json
import shlex
from typing import Any

from pyinfra.api import FactBase

MARK = "@@backhaul-bundle-part"
MISSING = "@@backhaul-bundle-missing-command"


def part_key(cls: type, kwargs: dict[str, Any]) -> tuple:
    """How a fact and its arguments are known in a bundle, the snapshot and the record."""
    return (cls, json.dumps(kwargs, sort_keys=True, default=repr))


class FactBundle(FactBase[dict[tuple, Any]]):
    """
    Returns several facts read by one command: the parts run side by side on the host, each
    in its own subshell, and each part's output goes through that fact's own ``process()``.

    + parts: ``[(fact class, kwargs), ...]``; facts with a ``requires_command`` are skipped
      when that command is missing

    A part that exits non-zero, or whose command is missing, is left out of the result (its
    reader then reads it on its own, and fails or defaults exactly as pyinfra would).

    .. code:: python

        {part_key(KernelModule, {"module": "wireguard"}): "loaded", ...}
    """

    def command(self, parts: list[tuple[type, dict[str, Any]]]) -> str:
        # pyinfra calls command() then process() on the same instance: process() needs to
        # know which fact each part is
        self._parts = list(parts)
        lines = ["d=$(mktemp -d) || exit 1"]
        for i, (cls, kwargs) in enumerate(self._parts):
            fact = cls()
            cmd = str(fact.command(**kwargs))
            need = fact.requires_command(**kwargs)
            if need:
                cmd = (
                    f"if command -v {shlex.quote(str(need))} >/dev/null 2>&1; then {cmd}\n"
                    f"else echo {MISSING}; fi"
                )
            # stderr is dropped, as pyinfra ignores it for a fact that succeeds
            lines.append(f'( {cmd}\n) >"$d/{i}" 2>/dev/null; echo $? >"$d/{i}.rc" &')
        lines.append("wait")
        lines.append(
            f'for i in $(seq 0 {len(self._parts) - 1}); do cat "$d/$i"; '
            f'printf "\\n{MARK} %s %s\\n" "$i" "$(cat "$d/$i.rc")"; done'
        )
        lines.append('rm -rf "$d"')
        return "\n".join(lines)

    def process(self, output: list[str]) -> dict[tuple, Any]:
        result: dict[tuple, Any] = {}
        chunk: list[str] = []
        for line in output:
            if not line.startswith(MARK + " "):
                chunk.append(line)
                continue
            _, index, rc = line.split(" ")
            if chunk and chunk[-1] == "":  # the newline printed before the mark
                chunk.pop()
            cls, kwargs = self._parts[int(index)]
            if rc == "0" and chunk != [MISSING]:
                fact = cls()
                try:
                    result[part_key(cls, kwargs)] = fact.process(chunk) if chunk else fact.default()
                except Exception:  # noqa: BLE001 - read on its own, it reports the error itself
                    pass
            chunk = []
        return result
