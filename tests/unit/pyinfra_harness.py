"""Run custom pyinfra facts and operations against JSON fixtures, without any host.

Layout (pyinfra's own tests use the same one):

    tests/data/facts/<module>.<Fact>/<case>.json
        {"command_args": {...} | [...],    # optional, passed to command()
         "command": "...",                 # optional, the exact command expected
         "output": ["line", ...],          # what the host printed (stdout lines)
         "expected": ...}                  # what process() must return

    tests/data/operations/<module>.<op>/<case>.json
        {"args": [...], "kwargs": {...},
         "facts": {"<module>.<Fact>": data},     # what host.get_fact returns
         "before": [{"op": "<module>.<op>", "args": [...], "kwargs": {...}}],  # optional,
                                                 # run first on the same host (same deploy)
         "commands": ["...", ["upload", "<content>", "<dest>"]],
         "noop_description": "...",              # optional (required when no command)
         "exception": {"name": "...", "message": "..."}}   # optional

Operations run through their undecorated generator (``op._inner``) with a fake host bound to
pyinfra's context, like pyinfra's ``tests/test_operations.py`` does.
"""

from __future__ import annotations

import json
import os
from importlib import import_module
from pathlib import Path
from typing import Any

from pyinfra.api import FileUploadCommand, StringCommand
from pyinfra.context import ctx_host, ctx_state

DATA = Path(__file__).resolve().parent.parent / "data"


def cases(kind: str) -> list[tuple[str, Path]]:
    """``(id, path)`` for every fixture of ``kind`` ("facts" or "operations")."""
    root = DATA / kind
    return [(f"{path.parent.name}/{path.stem}", path) for path in sorted(root.glob("*/*.json"))]


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def resolve(kind: str, dotted: str) -> Any:
    module, _, name = dotted.rpartition(".")
    return getattr(import_module(f"backhaul.{kind}.{module}"), name)


def fact_key(cls: type) -> str:
    return f"{cls.__module__.rpartition('.')[2]}.{cls.__name__}"


class FakeState:
    """The little of pyinfra's State that operations may touch while generating commands."""

    def get_temp_filename(self, *args: Any, **kwargs: Any) -> str:
        return "_tempfile_"


class FakeHost:
    """A host whose facts come from a fixture; records noop descriptions."""

    def __init__(self, facts: dict[str, Any], name: str = "somehost"):
        self.name = name
        self.facts = facts
        self.data: dict[str, Any] = {}
        self.noop_description: str | None = None
        self.fact_calls: list[tuple[str, tuple, dict]] = []

    def get_fact(self, cls: type, *args: Any, **kwargs: Any) -> Any:
        key = fact_key(cls)
        self.fact_calls.append((key, args, kwargs))
        if key not in self.facts:
            raise KeyError(f"missing test fact data: {key}")
        return self.facts[key]

    def noop(self, description: str) -> None:
        self.noop_description = description

    def get_temp_filename(self, *args: Any, **kwargs: Any) -> str:
        return "_tempfile_"


def command_json(command: Any) -> Any:
    if isinstance(command, str):
        return command.strip()
    if isinstance(command, StringCommand):
        return command.get_raw_value()
    if isinstance(command, FileUploadCommand):
        src = command.src
        data = src.getvalue() if hasattr(src, "getvalue") else src
        return ["upload", data, command.dest]
    raise TypeError(f"{command!r} is not a command this harness knows")


def run_operation(op: Any, host: FakeHost, args: list, kwargs: dict) -> list[Any]:
    with ctx_state.use(FakeState()), ctx_host.use(host):
        return [command_json(c) for c in op._inner(*args, **kwargs)]


def check_fact(path: Path) -> None:
    data = load(path)
    cls = resolve("facts", path.parent.name)
    fact = cls()
    command_args = data.get("command_args", {})
    if isinstance(command_args, dict):
        command = fact.command(**command_args)
    else:
        command = fact.command(*command_args)
    if "command" in data:
        assert str(command) == data["command"]
    output = data["output"]
    # pyinfra calls process() only when there is output, else it uses default()
    result = fact.process(output) if output else fact.default()
    assert result == data["expected"], json.dumps(result, indent=2)


def check_operation(path: Path) -> None:
    data = load(path)
    op = resolve("operations", path.parent.name)
    host = FakeHost(data.get("facts", {}))
    for earlier in data.get("before", []):
        run_operation(
            resolve("operations", earlier["op"]),
            host,
            earlier.get("args", []),
            earlier.get("kwargs", {}),
        )
    host.noop_description = None

    expected_exception = data.get("exception")
    try:
        commands = run_operation(op, host, data.get("args", []), data.get("kwargs", {}))
    except Exception as e:  # noqa: BLE001 - compared with the fixture below
        if not expected_exception:
            raise
        assert type(e).__name__ == expected_exception["name"], repr(e)
        assert str(e) == expected_exception["message"]
        return
    assert not expected_exception, f"expected {expected_exception['name']}, got {commands}"

    if os.environ.get("BACKHAUL_UPDATE_FIXTURES") == "1" and commands != data["commands"]:
        # regenerate after a deliberate change of commands; review the diff before committing
        data["commands"] = commands
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    assert commands == data["commands"], json.dumps(commands, indent=2)
    if not commands:
        assert host.noop_description is not None, "no command and no noop description"
    if "noop_description" in data:
        assert host.noop_description == data["noop_description"]
