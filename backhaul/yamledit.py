"""Minimal text edits of a YAML file, guided by the marks of ``yaml.compose`` nodes.

Why not load, change and dump? Dumping throws away the user's comments, key order, quoting and
blank lines, and the network file is theirs. Why not ruamel.yaml? The controller's dependency
list is pyinfra, invoke, jinja2 and pyyaml. So each edit here touches only the characters it must:
a new ``wg_ip:`` line, a new backend item, or the lines of one removed item.

Every function returns :class:`Edit` objects computed against the *same* original text; apply
them together with :func:`apply`. The caller re-parses and re-validates the result before it
writes anything, so a wrong edit can never reach the disk unnoticed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import yaml
from yaml.error import Mark
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["Edit", "apply", "scalar", "set_key", "append_item", "remove_item", "newline_of"]


@dataclass(frozen=True)
class Edit:
    """Replace ``text[start:end]`` with ``text`` (an insertion when start == end)."""

    start: int
    end: int
    text: str


def apply(text: str, edits: Iterable[Edit]) -> str:
    """Apply edits computed against ``text``; they must not overlap."""
    ordered = sorted(edits, key=lambda e: (e.start, e.end))
    for before, after in zip(ordered, ordered[1:], strict=False):
        if before.end > after.start:
            raise ValueError(f"overlapping edits: {before} and {after}")
    for e in reversed(ordered):
        text = text[: e.start] + e.text + text[e.end :]
    return text


def newline_of(text: str) -> str:
    """The file's own line ending, so an edit does not mix CRLF and LF."""
    return "\r\n" if "\r\n" in text else "\n"


def scalar(value: str) -> str:
    """``value`` as a YAML scalar that reads back as the same string (plain when safe)."""
    plain_ok = (
        value != ""
        and value == value.strip()
        and not any(c in value for c in "#,[]{}&*!|>'\"%@`\n\r\t")
        and not value.startswith(("-", "?", ":"))
        and ": " not in value
    )
    if plain_ok:
        try:
            if yaml.safe_load(value) == value:
                return value
        except yaml.YAMLError:
            pass
    return "'" + value.replace("'", "''") + "'"


def set_key(text: str, mapping: MappingNode, key: str, value: str) -> list[Edit]:
    """Give ``key`` the (already YAML-formatted) ``value`` in ``mapping``.

    A key that is present with an empty or null value gets the value in place. A missing key
    becomes a new line at the mapping's indentation after its last entry (block style) or
    ``, key: value`` after the last entry (flow style ``{...}``).
    """
    for k, v in mapping.value:
        if isinstance(k, ScalarNode) and k.value == key:
            if not (isinstance(v, ScalarNode) and v.tag.endswith(":null")):
                raise ValueError(f"{key!r} already has a value")
            if v.start_mark.index == v.end_mark.index:  # `key:` with nothing after it
                return [Edit(v.start_mark.index, v.start_mark.index, " " + value)]
            return [Edit(v.start_mark.index, v.end_mark.index, value)]
    if mapping.flow_style:
        if not mapping.value:
            pos = _closing_bracket(text, mapping)
            return [Edit(pos, pos, f"{key}: {value}")]
        pos = mapping.value[-1][1].end_mark.index
        return [Edit(pos, pos, f", {key}: {value}")]
    indent = mapping.value[0][0].start_mark.column
    return [_insert_lines(text, _last_leaf_end(mapping), [" " * indent + f"{key}: {value}"])]


def append_item(
    text: str, root: MappingNode, key: str, fields: Sequence[tuple[str, str]]
) -> list[Edit]:
    """Append a mapping item (``fields`` = ordered (key, YAML value) pairs) to ``root[key]``.

    The list may be block style, flow style (``[...]``), empty (``[]``), null or absent; the new
    item takes the style of its neighbours, and an empty or absent list becomes block style.
    """
    flow_item = "{" + ", ".join(f"{k}: {v}" for k, v in fields) + "}"
    pair = _find(root, key)
    if pair is None:
        if root.flow_style:
            pos = root.value[-1][1].end_mark.index if root.value else _closing_bracket(text, root)
            sep = ", " if root.value else ""
            return [Edit(pos, pos, f"{sep}{key}: [{flow_item}]")]
        indent = root.value[0][0].start_mark.column if root.value else 0
        lines = [" " * indent + f"{key}:", *_block_item(fields, indent + 2, 2)]
        return [_insert_lines(text, _last_leaf_end(root), lines)]
    knode, seq = pair
    key_indent = knode.start_mark.column
    empty_flow = isinstance(seq, SequenceNode) and seq.flow_style and not seq.value
    is_null = isinstance(seq, ScalarNode) and seq.tag.endswith(":null")
    if empty_flow or is_null:
        if root.flow_style:
            return [Edit(seq.start_mark.index, seq.end_mark.index, f"[{flow_item}]")]
        colon = text.index(":", knode.end_mark.index)
        # drop `[]` / `null` (and the space before it), keep any comment on the key's line
        edits = [Edit(colon + 1, seq.end_mark.index, "")]
        insert = _insert_lines(text, seq.end_mark, _block_item(fields, key_indent + 2, 2))
        return [*edits, insert] if edits[0].start != edits[0].end else [insert]
    if not isinstance(seq, SequenceNode):
        raise ValueError(f"{key!r} is not a list")
    if seq.flow_style:
        pos = seq.value[-1].end_mark.index
        return [Edit(pos, pos, f", {flow_item}")]
    dash_col = seq.start_mark.column
    first = seq.value[0]
    offset = first.start_mark.column - dash_col if isinstance(first, MappingNode) else 2
    offset = max(offset, 2)
    return [_insert_lines(text, _last_leaf_end(seq), _block_item(fields, dash_col, offset))]


def remove_item(text: str, root: MappingNode, key: str, index: int) -> list[Edit]:
    """Remove item ``index`` of the list ``root[key]``.

    Block style: the item's lines go (from its ``-`` line through its last value's line, with a
    trailing comment on that line); comments above or below it stay. Removing the last item
    leaves ``key: []`` so the file still says what it means.
    """
    pair = _find(root, key)
    if pair is None or not isinstance(pair[1], SequenceNode):
        raise ValueError(f"{key!r} is not a list")
    knode, seq = pair
    items = seq.value
    item = items[index]
    if seq.flow_style:
        if len(items) == 1:
            return [Edit(item.start_mark.index, item.end_mark.index, "")]
        if index + 1 < len(items):
            return [Edit(item.start_mark.index, items[index + 1].start_mark.index, "")]
        return [Edit(items[index - 1].end_mark.index, item.end_mark.index, "")]
    dash = item.start_mark.index - 1
    while dash >= 0 and text[dash] in " \t\r\n":
        dash -= 1
    if dash < 0 or text[dash] != "-":
        raise ValueError("cannot find the item's '-'")
    start = text.rfind("\n", 0, dash) + 1
    end = _line_after(text, _last_leaf_end(item))
    edits = [Edit(start, end, "")]
    if len(items) == 1:
        colon = text.index(":", knode.end_mark.index)
        edits.append(Edit(colon + 1, colon + 1, " []"))
    return edits


# -- helpers ----------------------------------------------------------------------------------


def _find(mapping: MappingNode, key: str) -> tuple[Node, Node] | None:
    for k, v in mapping.value:
        if isinstance(k, ScalarNode) and k.value == key:
            return k, v
    return None


def _block_item(fields: Sequence[tuple[str, str]], dash_col: int, offset: int) -> list[str]:
    pad = " " * dash_col
    lines = [pad + "-" + " " * (offset - 1) + f"{fields[0][0]}: {fields[0][1]}"]
    lines += [pad + " " * offset + f"{k}: {v}" for k, v in fields[1:]]
    return lines


def _last_leaf_end(node: Node) -> Mark:
    """Where the node's own text ends.

    A block collection's ``end_mark`` sits at the *next* token, past trailing comments and blank
    lines, so inserting there would land after a comment that introduces the next section. The
    last scalar (or flow collection) inside it ends where the user's text for it really ends.
    """
    while True:
        if isinstance(node, MappingNode) and not node.flow_style and node.value:
            node = node.value[-1][1]
        elif isinstance(node, SequenceNode) and not node.flow_style and node.value:
            node = node.value[-1]
        else:
            return node.end_mark


def _line_after(text: str, mark: Mark) -> int:
    """Index of the start of the line after the one ``mark`` is on (len(text) at the end)."""
    if mark.column == 0 and mark.index > 0:  # block scalars end at the start of a line
        return mark.index
    nl = text.find("\n", mark.index)
    return len(text) if nl < 0 else nl + 1


def _insert_lines(text: str, after: Mark, lines: list[str]) -> Edit:
    nl = newline_of(text)
    pos = _line_after(text, after)
    body = "".join(line + nl for line in lines)
    if pos == len(text) and text and not text.endswith("\n"):
        body = nl + body
    return Edit(pos, pos, body)


def _closing_bracket(text: str, node: Node) -> int:
    pos = node.end_mark.index - 1
    if text[pos] not in "}]":
        raise ValueError("flow collection does not end with a bracket")
    return pos
