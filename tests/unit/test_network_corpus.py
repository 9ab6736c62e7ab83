"""Golden corpus: each tests/data/bad/NN-name.yml must fail with exactly NN-name.expected.

To regenerate after a deliberate message change: BACKHAUL_REGEN=1 pytest tests/unit -k corpus,
then read the diff of the .expected files before committing them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backhaul.errors import ConfigError
from backhaul.network import MAX_BYTES, load

BAD = Path(__file__).resolve().parent.parent / "data" / "bad"
CASES = sorted(BAD.glob("*.yml"))


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 32
    for case in CASES:
        assert case.with_suffix(".expected").exists(), f"{case.name} has no .expected file"


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_bad_file(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BAD)  # the file is shown as given: just its name
    before = case.read_bytes()
    with pytest.raises(ConfigError) as info:
        load(case.name, write_back=True)
    assert case.read_bytes() == before
    got = str(info.value) + "\n"
    expected = case.with_suffix(".expected")
    if os.environ.get("BACKHAUL_REGEN"):
        expected.write_text(got, encoding="utf-8")
    assert got == expected.read_text(encoding="utf-8")


def test_too_large_file_is_one_problem_and_not_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # valid YAML start, then junk that would be a syntax error if it were parsed
    Path("huge.yml").write_bytes(b"network:\n" + b"  [x: {\n" * (MAX_BYTES // 8 + 1))
    with pytest.raises(ConfigError) as info:
        load("huge.yml")
    assert str(info.value) == (
        "the network file has 1 problem (nothing was changed):\n"
        "  - huge.yml: (file): the file is 1.0 MiB; a network file is at most 1 MiB "
        "(is this the right file?)"
    )


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load("network.yml")
    assert [str(p) for p in info.value.problems] == [
        "network.yml: (file): not found; copy network.example.yml to network.yml, or pass --network PATH"
    ]
