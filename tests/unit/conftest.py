"""Every unit test gets a temp folder of its own, for this process and its children: what the
code under test puts in the temp folder (the jump ssh_config, a pyinfra run's pending file, a
killed run's leftovers) goes where pytest cleans up, never into the machine's /tmp."""

from __future__ import annotations

import tempfile

import pytest


@pytest.fixture(autouse=True)
def _own_temp_folder(tmp_path_factory, monkeypatch):
    folder = tmp_path_factory.mktemp("tmp")
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield
