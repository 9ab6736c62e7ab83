"""The rules of the network file: every field's checks, the cross-field checks, the addresses
allocated, and the model built from a file that passes them all (``check``).

``check`` reads the YAML *node tree* (``yaml.compose``) rather than plain Python objects, so
every problem can point at the exact line and column it comes from. All problems are collected
and returned together; nothing here reads a file, writes one or contacts a host.

Each value is judged by its check in ``backhaul/fields.py`` (names, addresses, paths, domains,
units, e-mail, URLs, keys: strict patterns, so nothing hostile gets past the model); this package
says which field gets which check, and what must hold between fields, one module per part of the
file: ``network`` (the network and ssh sections, and the whole file put together), ``hosts``
(the hub and the backends, their addresses), ``services`` (and their grants), ``clients``,
``tls``; ``keys`` holds each section's keys and the examples messages quote.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml
from yaml.nodes import MappingNode

from backhaul.errors import Problem
from backhaul.model import Network
from backhaul.schema.keys import SECTIONS, example
from backhaul.schema.network import read_network
from backhaul.yamlcheck import BAD, Checker
from backhaul.yamledit import describe as _describe


@dataclass
class Result:
    network: Network | None
    problems: list[Problem]
    allocated: list[tuple[MappingNode, ipaddress.IPv4Address]]


# -- the whole file ----------------------------------------------------------------------------


def check(text: str, file: str, path: Path) -> Result:
    """Validate ``text`` (the content of ``file``) and build the model when it is valid."""
    ck = Checker(file, example, SECTIONS)
    allocated: list[tuple[MappingNode, ipaddress.IPv4Address]] = []
    net = None
    try:
        doc = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "invalid YAML"
        if isinstance(exc, yaml.composer.ComposerError) and "another document" in what:
            what = "found a second document ('---'); keep the whole network in one document"
        elif exc.context and exc.problem:
            line = f" on line {exc.context_mark.line + 1}" if exc.context_mark else ""
            what = f"{what} ({exc.context}{line}); check the indentation and quoting here"
        else:
            what += "; check the indentation and quoting here"
        ck.add(mark, "(yaml)", f"YAML syntax error: {what}")
        doc = BAD
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        ck.problems.append(
            Problem(
                file,
                before.count("\n") + 1,
                len(before) - (before.rfind("\n") + 1) + 1,
                "(yaml)",
                f"character {chr(exc.character)!r} is not allowed in YAML; remove it",
            )
        )
        doc = BAD
    except yaml.YAMLError as exc:  # pragma: no cover - every pyyaml error above carries a mark
        ck.add(None, "(yaml)", f"YAML error: {exc}")
        doc = BAD
    if doc is None:
        ck.problems.append(Problem(file, 1, 1, "(file)", "the file is empty; start from network.example.yml"))
    elif doc is not BAD:
        if not isinstance(doc, MappingNode):
            ck.add(
                doc,
                "(top level)",
                f"expected a mapping with the sections network, proxy, "
                f"backends, services, ssh, tls; got {_describe(doc)}",
            )
        else:
            net, allocated = read_network(ck, doc, path)
    problems = sorted(ck.problems, key=lambda p: (p.line or 0, p.column or 0))
    return Result(net if not problems else None, problems, allocated if not problems else [])
