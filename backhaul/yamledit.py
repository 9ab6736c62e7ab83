"""Minimal text edits of a YAML file, guided by the marks of ``yaml.compose`` nodes.

Why not load, change and dump? Dumping throws away the user's comments, key order, quoting and
blank lines, and the files are the user's: the network file and the customers' compose files.
Why not ruamel.yaml? The controller's dependency list is pyinfra, invoke, jinja2 and pyyaml. So
each edit here touches only the characters it must: a new ``wg_ip:`` line, a new backend item,
the lines of one removed item, a rebound port.

This is the one engine for both writers (``network.py``'s write-back and ``compose.py``'s
planner): one way to apply edits, one rule for where a node's text ends (block scalars,
aliases, trailing comments), one rule for when a value may stay plain and how it is quoted.

Every function returns :class:`Edit` objects computed against the *same* original text; apply
them together with :func:`apply`. The callers re-parse the result before it is written, so a
wrong edit can never reach the disk unnoticed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "Edit",
    "apply",
    "scalar",
    "plain_ok",
    "set_key",
    "append_item",
    "remove_item",
    "newline_of",
    "line_after",
    "end_of",
    "text_start",
    "is_null",
    "describe",
    "show",
]

TAG = "tag:yaml.org,2002:"
KINDS = {
    "str": "a string",
    "int": "a number",
    "float": "a number",
    "bool": "a boolean",
    "null": "empty (null)",
    "timestamp": "a date",
    "binary": "binary data",
}
# A plain scalar may not start with one of these (YAML 1.1 indicators).
_INDICATORS = "-?:,[]{}#&*!|>'\"%@`"


@dataclass(frozen=True)
class Edit:
    """Replace ``text[start:end]`` with ``text`` (an insertion when start == end)."""

    start: int
    end: int
    text: str


def apply(text: str, edits: Iterable[Edit]) -> str:
    """Apply edits computed against ``text``; they must not overlap.

    The same edit given twice counts once (a node reached twice through a YAML alias). Two
    insertions at one place land in the order given.
    """
    ordered = sorted(dict.fromkeys(edits), key=lambda e: (e.start, e.end))
    for before, after in zip(ordered, ordered[1:], strict=False):
        if before.end > after.start:
            raise ValueError(f"overlapping edits: {before} and {after}")
    for e in reversed(ordered):
        text = text[: e.start] + e.text + text[e.end :]
    return text


def newline_of(text: str) -> str:
    """The file's own line ending, so an edit does not mix CRLF and LF."""
    return "\r\n" if "\r\n" in text else "\n"


def plain_ok(value: str, flow: bool = True) -> bool:
    """Whether ``value`` may be written unquoted and read back as the same string.

    ``flow``: the value may stand inside ``[...]`` or ``{...}``, where ``,[]{}`` end it.
    """
    if (
        value == ""
        or value != value.strip()
        or value[0] in _INDICATORS
        or any(c in value for c in "'\"\n\r\t")
        or ": " in value
        or " #" in value
        or (flow and any(c in value for c in ",[]{}"))
    ):
        return False
    try:
        return yaml.safe_load(value) == value
    except yaml.YAMLError:
        return False


def scalar(value: str, flow: bool = True, quote: str = "'") -> str:
    """``value`` as a YAML scalar that reads back as the same string: plain when
    :func:`plain_ok`, else quoted with ``quote`` (``'`` or ``"``)."""
    if plain_ok(value, flow):
        return value
    return quoted(value, quote)


def quoted(value: str, quote: str = "'") -> str:
    """``value`` in single or double quotes, escaped for that style."""
    if quote == "'":
        return "'" + value.replace("'", "''") + "'"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def set_key(text: str, mapping: MappingNode, key: str, value: str) -> list[Edit]:
    """Give ``key`` the (already YAML-formatted) ``value`` in ``mapping``.

    A key that is present with an empty or null value gets the value in place. A missing key
    becomes a new line at the mapping's indentation after its last entry (block style) or
    ``, key: value`` after the last entry (flow style ``{...}``).
    """
    for k, v in mapping.value:
        if isinstance(k, ScalarNode) and k.value == key:
            if not is_null(v):
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
    return [_insert_lines(text, end_of(text, mapping), [" " * indent + f"{key}: {value}"])]


def append_item(text: str, root: MappingNode, key: str, fields: Sequence[tuple[str, str]]) -> list[Edit]:
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
        return [_insert_lines(text, end_of(text, root), lines)]
    knode, seq = pair
    key_indent = knode.start_mark.column
    empty_flow = isinstance(seq, SequenceNode) and seq.flow_style and not seq.value
    if empty_flow or is_null(seq):
        if root.flow_style:
            return [Edit(seq.start_mark.index, seq.end_mark.index, f"[{flow_item}]")]
        colon = text.index(":", knode.end_mark.index)
        # drop `[]` / `null` (and the space before it), keep any comment on the key's line
        edits = [Edit(colon + 1, seq.end_mark.index, "")]
        after = line_after(text, seq.end_mark.index)
        insert = _insert_lines(text, after, _block_item(fields, key_indent + 2, 2))
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
    return [_insert_lines(text, end_of(text, seq), _block_item(fields, dash_col, offset))]


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
    end = end_of(text, item)
    edits = [Edit(start, end, "")]
    if len(items) == 1:
        colon = text.index(":", knode.end_mark.index)
        edits.append(Edit(colon + 1, colon + 1, " []"))
    return edits


class TextEdits:
    """Edits of one YAML text, collected in order and written in the file's own style: its
    newline, its indentation step (``unit``, learnt by the caller), a scalar's quoting, block or
    flow. The compose rewrite's engine; the network file's edits are the functions above."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.edits: list[Edit] = []
        self.unit = 2
        self.newline = newline_of(text)

    def add(self, start: int, end: int, new: str) -> None:
        self.edits.append(Edit(start, end, new))

    def scalar(self, value: str, node: ScalarNode, flow: bool) -> str:
        """``value`` written in ``node``'s quoting style (plain stays plain when it can)."""
        quote = "'" if node.style == "'" else '"'
        if node.style in ("'", '"') or node.tag != TAG + "str":
            # Also quote what YAML had read as a number (8080, or 22:22 as base 60).
            return quoted(value, quote)
        return scalar(value, flow, quote)

    def replace_value(self, node: Node, value: str, flow: bool) -> None:
        if isinstance(node, ScalarNode) and node.tag == TAG + "str":
            new = self.scalar(value, node, flow)
        else:
            new = scalar(value, flow, quote='"')
        start, end = text_start(self.text, node), node.end_mark.index
        if start == end:  # `key:` with nothing after the colon
            new = " " + new
        self.add(start, end, new)

    def fill_null(self, key: Node, null: Node, tree: dict, flow: bool) -> None:
        """Give ``key:`` (empty, ``~`` or ``null``) the mapping ``tree`` as its value."""
        start, end = null.start_mark.index, null.end_mark.index
        if flow:
            self.add(start, end, (" " if start == end else "") + _flow_tree(tree))
            return
        if start != end:  # drop `~` / `null` and the blanks before it
            while start > 0 and self.text[start - 1] in " \t":
                start -= 1
            self.add(start, end, "")
        indent = key.start_mark.column + self.unit
        pos = line_after(self.text, key.end_mark.index)
        self.add(pos, pos, self._nl(_block_tree(tree, indent, self.unit)))

    def insert_entry(self, mapping: MappingNode, key: str, value: dict | str, flow: bool = False) -> None:
        """A new ``key: value`` after the mapping's last entry; a dict value becomes a nested
        mapping (block or flow like its parent)."""
        if flow or mapping.flow_style:
            item = f"{key}: {_flow_tree(value)}"
            if mapping.value:
                pos = max(n.end_mark.index for n in mapping.value[-1])
                self.add(pos, pos, ", " + item)
            else:
                pos = self.text.rindex("}", 0, mapping.end_mark.index)
                self.add(pos, pos, item)
            return
        indent = mapping.value[0][0].start_mark.column
        pos = end_of(self.text, mapping)
        prefix = "\n" if pos == len(self.text) and not self.text.endswith("\n") else ""
        self.add(pos, pos, self._nl(prefix + _block_tree({key: value}, indent, self.unit)))

    def _nl(self, block: str) -> str:
        return block.replace("\n", self.newline)


def _block_tree(tree: dict | str, indent: int, unit: int) -> str:
    lines = []
    for key, value in tree.items():
        if isinstance(value, dict):
            lines.append(f"{' ' * indent}{key}:\n{_block_tree(value, indent + unit, unit)}")
        else:
            lines.append(f"{' ' * indent}{key}: {value}\n")
    return "".join(lines)


def _flow_tree(tree: dict | str) -> str:
    if isinstance(tree, dict):
        return "{" + ", ".join(f"{k}: {_flow_tree(v)}" for k, v in tree.items()) + "}"
    return tree


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


def end_of(text: str, node: Node) -> int:
    """Start of the line after ``node``'s own text: where a line that follows it goes.

    A block collection's ``end_mark`` sits at the *next* token, past trailing comments and blank
    lines, so inserting there would land after a comment that introduces the next section; the
    last leaf inside it tells where the user's text for it really ends.
    """
    leaf = _last_leaf(node)
    if leaf is None:
        return before_comments(text, node.end_mark.index)
    if isinstance(leaf, int):
        return line_after(text, leaf)
    end = leaf.end_mark.index
    if getattr(leaf, "style", None) in ("|", ">") and text[end - 1] == "\n":
        return end  # a block scalar owns its trailing line breaks (`|+`)
    return line_after(text, end)


def _last_leaf(node: Node, floor: int = 0) -> Node | int | None:
    """The node whose text ends ``node``'s text, or the index where that text ends.

    An alias (``*name``) is the anchored node itself, whose text is elsewhere (before
    ``floor``): for ``key: *name`` the key's line is the end, for ``- *name`` the end is
    unknown (None).
    """
    if node.start_mark.index < floor:
        return None
    if isinstance(node, ScalarNode) or node.flow_style or not node.value:
        return node
    if isinstance(node, MappingNode):
        key, value = node.value[-1]
        if is_null(value) and not value.value:
            return key  # `key:` with nothing after it
        if value.start_mark.index < key.end_mark.index:
            return key.end_mark.index
        return _last_leaf(value, key.end_mark.index)
    before = node.value[-2].end_mark.index if len(node.value) > 1 else node.start_mark.index
    return _last_leaf(node.value[-1], before)


def line_after(text: str, index: int) -> int:
    """Start of the line after the last non-blank character before ``index`` (len(text) at
    the end of the file)."""
    j = index
    while j > 0 and text[j - 1] in " \t\r\n":
        j -= 1
    nl = text.find("\n", j)
    return len(text) if nl < 0 else nl + 1


def before_comments(text: str, index: int) -> int:
    """Start of the line at ``index``, moved up past blank and comment-only lines."""
    pos = text.rfind("\n", 0, index) + 1
    while pos > 0:
        prev = text.rfind("\n", 0, pos - 1) + 1
        line = text[prev : pos - 1].strip()
        if line and not line.startswith("#"):
            break
        pos = prev
    return pos


def text_start(text: str, node: Node) -> int:
    """Where a scalar's own text starts: its start mark includes an ``&anchor`` or ``!tag``."""
    i = node.start_mark.index
    while i < node.end_mark.index and text[i] in "&!":
        while i < node.end_mark.index and text[i] not in " \t\r\n":
            i += 1
        while i < node.end_mark.index and text[i] in " \t\r\n":
            i += 1
    return i


def _insert_lines(text: str, pos: int, lines: list[str]) -> Edit:
    nl = newline_of(text)
    body = "".join(line + nl for line in lines)
    if pos == len(text) and text and not text.endswith("\n"):
        body = nl + body
    return Edit(pos, pos, body)


def _closing_bracket(text: str, node: Node) -> int:
    pos = node.end_mark.index - 1
    if text[pos] not in "}]":
        raise ValueError("flow collection does not end with a bracket")
    return pos


# -- reading nodes, for messages ---------------------------------------------------------------


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == TAG + "null"


def show(value: object) -> str:
    """repr(), cut to ~60 characters: enough to recognise, short enough for one line."""
    r = repr(value)
    return r if len(r) <= 60 else r[:56] + "...'"


def describe(node: Node) -> str:
    """What a node is, in words for an error message: "a list", "a string 'x'", ..."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    tag = node.tag[len(TAG) :] if node.tag.startswith(TAG) else None
    if tag == "null":
        return "nothing (null)"
    if tag in KINDS and tag != "str":  # resolved by YAML's patterns: safe to show as written
        return f"{KINDS[tag]} {node.value[:40]}"
    if tag == "str":
        return f"a string {show(node.value)}"
    shown = "!!" + tag if tag else node.tag
    return f"a value tagged {show(shown)[1:-1]} ({show(node.value)})"
