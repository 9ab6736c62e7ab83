"""pyinfra's global arguments are worked out once a process (backhaul/globalargs.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_the_memo_gives_pyinfras_answer_and_reads_the_type_hints_once():
    # a process of its own: the memo lasts as long as the process
    code = textwrap.dedent(
        """
        import typing
        from pyinfra.api import arguments, facts
        before = arguments.all_global_arguments()
        calls = []
        real = typing.get_type_hints
        typing.get_type_hints = lambda *a, **k: calls.append(a) or real(*a, **k)
        arguments.get_type_hints = typing.get_type_hints
        from backhaul import globalargs
        globalargs.remember()
        globalargs.remember()
        answers = [arguments.all_global_arguments() for _ in range(5)]
        assert all(a == before for a in answers), answers
        assert facts.all_global_arguments is arguments.all_global_arguments
        answers[0].clear()  # a caller's list is its own
        assert arguments.all_global_arguments() == before
        assert len(calls) == 1, calls
        # pop_global_arguments, used for every operation, takes the memo too
        assert ("_sudo", bool) in before
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_the_inventory_installs_it_before_any_deploy_file_runs():
    from pathlib import Path

    inventory = (Path(__file__).resolve().parents[2] / "inventory.py").read_text()
    assert "globalargs.remember()" in inventory
