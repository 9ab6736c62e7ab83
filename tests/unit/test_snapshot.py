"""Several facts in one round trip (FactBundle, run for real by sh here) and the snapshot that
answers from it only while no operation has changed the host."""

from __future__ import annotations

import json
import subprocess
from types import SimpleNamespace

import pytest
from pyinfra.api import FactBase

from backhaul.facts import snapshot
from backhaul.facts.bundle import FactBundle, part_key
from backhaul.facts.system import SshSession


class Lines(FactBase):
    def command(self, text: str = "a b") -> str:
        return "for w in " + text + "; do echo $w; done"

    def process(self, output):
        return list(output)


class Fails(FactBase):
    def command(self) -> str:
        return "echo partial; exit 3"

    def process(self, output):
        return output


class NeedsATool(FactBase):
    def requires_command(self) -> str:
        return "backhaul-no-such-tool"

    def command(self) -> str:
        return "backhaul-no-such-tool --state"

    def process(self, output):
        return output


class Silent(FactBase):
    def command(self) -> str:
        return "true"

    def default(self):
        return {"nothing": True}

    def process(self, output):
        raise AssertionError("no output: pyinfra uses default()")


def _run(parts):
    bundle = FactBundle()
    out = subprocess.run(
        ["sh", "-c", bundle.command(parts=parts)], capture_output=True, text=True, check=True
    ).stdout
    return bundle.process(out.splitlines())


def test_a_bundle_answers_each_part_through_its_own_fact():
    parts = [(Lines, {"text": "x y z"}), (Lines, {}), (SshSession, {}), (Silent, {})]
    got = _run(parts)
    assert got[part_key(Lines, {"text": "x y z"})] == ["x", "y", "z"]
    assert got[part_key(Lines, {})] == ["a", "b"]
    assert part_key(SshSession, {}) in got
    assert got[part_key(Silent, {})] == {"nothing": True}


def test_a_failed_part_or_a_missing_tool_is_left_out_and_the_rest_kept():
    got = _run([(Fails, {}), (NeedsATool, {}), (Lines, {})])
    assert list(got) == [part_key(Lines, {})]


def _meta(changed: bool, complete: bool = True, ok: bool = True):
    return SimpleNamespace(
        operation_meta=SimpleNamespace(
            is_complete=lambda: complete, did_change=lambda: changed, did_succeed=lambda: ok
        )
    )


class Host:
    def __init__(self, name: str):
        self.name = name


@pytest.fixture
def snap(monkeypatch):
    host = Host("h1")
    ops: dict = {host: {}}
    monkeypatch.setattr(snapshot, "state", SimpleNamespace(ops=ops))
    monkeypatch.setattr(snapshot, "_snapshots", {"h1": {part_key(Lines, {}): ["a", "b"]}})
    monkeypatch.setattr(snapshot, "_asked", {"h1": {}})
    return host, ops[host]


def test_the_snapshot_answers_until_an_operation_changes_the_host(snap):
    host, ops = snap
    ops["op1"] = _meta(changed=False)
    ops["op2"] = _meta(changed=True, complete=False)  # running now: not a change yet
    assert snapshot.lookup(host, Lines, {}) == (True, ["a", "b"])
    assert snapshot.lookup(host, Lines, {"text": "other"}) == (False, None)  # other arguments
    ops["op3"] = _meta(changed=True)
    assert snapshot.lookup(host, Lines, {}) == (False, None)


def test_a_failed_operation_ends_the_snapshot_too(snap):
    host, ops = snap
    ops["op1"] = _meta(changed=False, ok=False)
    assert snapshot.lookup(host, Lines, {}) == (False, None)


def test_callers_get_a_copy(snap):
    host, _ = snap
    snapshot.lookup(host, Lines, {})[1].append("c")
    assert snapshot.lookup(host, Lines, {})[1] == ["a", "b"]


def test_only_backhaul_facts_are_recorded_with_their_arguments(snap, tmp_path, monkeypatch):
    host, _ = snap
    snapshot.lookup(host, SshSession, {})
    snapshot.lookup(host, Lines, {"text": "q"})  # a fact from elsewhere: read, never recorded
    net = tmp_path / "network.yml"
    record = snapshot.record_path(net)
    record.write_text(json.dumps({"h2": [{"fact": "x:Y", "kwargs": {}}]}))  # not in this run
    monkeypatch.setattr(snapshot, "_record", [record])
    snapshot._write()
    data = json.loads(record.read_text())
    assert data["h1"] == [{"fact": "backhaul.facts.system:SshSession", "kwargs": {}}]
    assert data["h2"] == [{"fact": "x:Y", "kwargs": {}}]
    # what is read back: our facts only, unknown names skipped
    assert snapshot._parts_from(data["h1"] + data["h2"]) == [(SshSession, {})]


def test_no_snapshot_taken_means_plain_reads(monkeypatch):
    monkeypatch.setattr(snapshot, "_asked", {})
    assert snapshot.lookup(Host("h9"), SshSession, {}) == (False, None)
