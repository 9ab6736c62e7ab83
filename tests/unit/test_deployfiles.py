"""pyinfra reads the call stack for every operation: our exec()ed deploy files must not make
inspect scan all of sys.modules for each of their frames (backhaul/deployfiles.py)."""

from __future__ import annotations

import inspect
from pathlib import Path

from backhaul import deployfiles

DEPLOYS = Path(__file__).resolve().parents[2] / "deploys"


def _frame_of(path: Path, relative: str):
    """A frame of ``path`` executed as pyinfra does it: compiled under the name it was given."""
    scope: dict = {"inspect": inspect}
    exec(compile(path.read_text() + "\nframe = inspect.currentframe()\n", relative, "exec"), scope)
    return scope["frame"]


def test_inspect_maps_a_deploy_files_frames_to_a_module_from_its_cache(tmp_path, monkeypatch):
    deploy = tmp_path / "deploys" / "part.py"
    deploy.parent.mkdir()
    deploy.write_text("x = 1\n")
    monkeypatch.chdir(tmp_path)
    frame = _frame_of(deploy, "deploys/part.py")  # pyinfra compiles with the path as given

    deployfiles.name_as_modules(tmp_path / "deploys")

    module = inspect.getmodule(frame, "deploys/part.py")
    assert module is not None and module.__file__ == str(deploy)
    assert str(deploy) in inspect.modulesbyfile  # the next frames of this file: no scan


def test_the_site_deploy_names_every_deploy_file_before_its_first_operation():
    site = (DEPLOYS / "site.py").read_text()
    first_op = site.index("snapshot.take(")
    assert site.index("deployfiles.name_as_modules(") < first_op
