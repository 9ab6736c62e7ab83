"""The README and docs/ point at things that exist: a guarantee names tests that run, a link
opens a page, an example network file validates. Prose is not checked, only its pointers."""

import re
from pathlib import Path

import pytest

from backhaul.network import load

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _tests_and_modules() -> set[str]:
    names = set()
    for path in (ROOT / "tests").rglob("*.py"):
        names.add(path.stem)
        names.update(re.findall(r"^\s*(?:async )?def (test_\w+)", _text(path), re.M))
    return names


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_test_a_document_names_exists(doc):
    missing = set(re.findall(r"\b(test_[a-z0-9_]+)", _text(doc))) - _tests_and_modules()
    assert not missing, f"{doc.name} names tests that do not exist: {sorted(missing)}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_opens_a_file(doc):
    targets = re.findall(r"\]\(([\w./-]+)(?:#[^)]*)?\)", _text(doc))
    missing = [t for t in targets if not (doc.parent / t).exists()]
    assert not missing, f"{doc.name} links to missing files: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_user_documentation_names_no_issue_numbers(doc):
    """Issue numbers mean something to the people who filed them, not to a reader."""
    assert not re.findall(r"\bissues? #?\d+", _text(doc), re.I)


def test_the_readmes_example_network_files_validate(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # the examples name ~/.ssh/id_ed25519
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_ed25519").write_text("not a key: only its existence is checked\n")
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", _text(ROOT / "README.md"), re.S) if "proxy:" in b]
    assert blocks
    for i, block in enumerate(blocks):
        path = tmp_path / f"example{i}.yml"
        path.write_text(block)
        load(path)  # raises ConfigError naming every problem
