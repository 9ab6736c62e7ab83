"""A checker for a YAML node tree that collects every problem with its line and column.

Generic: it knows YAML's shapes (mappings, strings, numbers, booleans, lists), not backhaul's
rules, which live in ``backhaul/schema.py`` and hand it the examples its messages quote.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from backhaul.errors import Problem
from backhaul.yamledit import KINDS as _KINDS
from backhaul.yamledit import TAG as _TAG
from backhaul.yamledit import describe as _describe
from backhaul.yamledit import is_null as _is_null
from backhaul.yamledit import show as _show

BAD = object()  # "present but invalid" (a problem has been recorded), as opposed to None


_constructor = SafeConstructor()


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class Checker:
    """Collects the problems of one file. ``example(key)`` is the hint a missing or wrong key's
    message ends with; ``sections`` maps a required section to the key it needs at least."""

    def __init__(self, file: str, example: Callable[[str], str], sections: dict[str, str]):
        self.file = file
        self.example = example
        self.sections = sections
        self.problems: list[Problem] = []

    # where: a node, a yaml Mark, or None (no location)
    def add(self, where: Any, field: str, message: str) -> None:
        mark = getattr(where, "start_mark", where)
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        self.problems.append(Problem(self.file, line, column, field or "(top level)", message))

    # -- structure --

    def mapping(
        self,
        node: Node | None,
        path: str,
        known: tuple[str, ...],
        required: tuple[str, ...] = (),
        what: str = "a mapping",
    ) -> dict[str, Node] | None:
        """Keys -> value nodes; reports non-mappings, unknown, duplicate and missing keys."""
        if node is None:  # an absent section: the parent reported it if it is required
            return {}
        if _is_null(node):
            self._missing(node, path, required, have=set())
            return {}
        if not isinstance(node, MappingNode):
            self.add(node, path, f"expected {what} (key: value lines), got {_describe(node)}")
            return None
        out: dict[str, Node] = {}
        seen: dict[str, Node] = {}
        suggested: set[str] = set()
        for knode, vnode in node.value:
            if not (isinstance(knode, ScalarNode) and knode.tag == _TAG + "str"):
                self.add(knode, path, f"keys must be words such as {known[0]!r}, got {_describe(knode)}")
                continue
            key = knode.value
            field = join(path, key)
            if key in seen:
                self.add(
                    knode,
                    field,
                    f"duplicate key {_show(key)} (first on line "
                    f"{seen[key].start_mark.line + 1}); keep only one",
                )
                continue
            seen[key] = knode
            if key not in known:
                suggested.update(self._unknown(knode, field, known))
                continue
            if key in required and _is_null(vnode):
                what = (
                    f"at least `{self.sections[key]}:` under it"
                    if key in self.sections
                    else self.example(key)
                )
                self.add(vnode, field, f"is empty; add {what}")
                continue
            out[key] = vnode
        # a misspelt key was reported with its likely name: not missing as well
        self._missing(node, path, required, have={*out, *seen, *suggested})
        return out

    def _unknown(self, knode: ScalarNode, field: str, known: tuple[str, ...]) -> list[str]:
        """Report an unknown key; returns the known key it likely misspells (if any)."""
        close = difflib.get_close_matches(knode.value, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else "known keys: " + ", ".join(known)
        self.add(knode, field, f"unknown key {_show(knode.value)}; {hint}")
        return close

    def _missing(self, node: Node, path: str, required: tuple[str, ...], have: set[str]) -> None:
        for key in required:
            if key not in have:
                self.add(node, join(path, key), f"missing; add {self.example(key)}")

    def items(self, node: Node | None, path: str, what: str) -> list[Node]:
        """A list's item nodes; null or absent is an empty list."""
        if node is None or _is_null(node):
            return []
        if not isinstance(node, SequenceNode):
            self.add(
                node, path, f"expected a list of {what} (lines starting with '- '), got {_describe(node)}"
            )
            return []
        return list(node.value)

    # -- scalars: each returns the value, None when absent/null, or BAD (problem recorded) --

    def present(self, m: dict[str, Node], key: str, path: str) -> Node | None:
        node = m.get(key)
        if node is None:
            return None
        return None if _is_null(node) else node

    def text(self, m: dict[str, Node], key: str, path: str, *, ip_like: bool = False) -> Any:
        node = self.present(m, key, path)
        if node is None:
            return None
        if isinstance(node, ScalarNode) and node.tag == _TAG + "str":
            return node.value
        if ip_like and isinstance(node, ScalarNode) and node.style is None:
            return node.value  # e.g. 1:2:3:4:5:6:7:8 reads as a YAML 1.1 sexagesimal number
        hint = ""
        if isinstance(node, ScalarNode):
            custom = not node.tag.startswith(_TAG) or node.tag[len(_TAG) :] not in _KINDS
            hint = "; remove the tag" if custom else "; put it in quotes"
        self.add(node, path, f"expected a string, got {_describe(node)}{hint}")
        return BAD

    def integer(
        self, m: dict[str, Node], key: str, path: str, lo: int, hi: int, default: int, fix: str
    ) -> Any:
        node = self.present(m, key, path)
        if node is None:
            return default
        if not (isinstance(node, ScalarNode) and node.tag == _TAG + "int"):
            hint = "; write the number without quotes" if is_str(node) else ""
            self.add(node, path, f"expected a whole number, got {_describe(node)}{hint}")
            return BAD
        value = _constructor.construct_yaml_int(node)
        if not lo <= value <= hi:
            self.add(node, path, f"{value} is outside {lo}-{hi}; {fix}")
            return BAD
        return value

    def boolean(self, m: dict[str, Node], key: str, path: str, default: bool = False) -> Any:
        node = self.present(m, key, path)
        if node is None:
            return default
        if not (isinstance(node, ScalarNode) and node.tag == _TAG + "bool"):
            self.add(node, path, f"expected true or false, got {_describe(node)}")
            return BAD
        return _constructor.construct_yaml_bool(node)

    def matching(self, m: dict[str, Node], key: str, path: str, check: Callable[[str], str | None]) -> Any:
        """A string checked by ``check`` (returns an error message or None)."""
        value = self.text(m, key, path)
        if value is None or value is BAD:
            return value
        error = check(value)
        if error:
            self.add(m[key], path, error)
            return BAD
        return value


def is_str(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _TAG + "str"
