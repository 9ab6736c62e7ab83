"""The house's three numbers: how readable the code and the README stay.

    python -m backhaul.house

prints the functions over ruff's C901 limit (in backhaul/, deploys/, tasks.py), the largest
module outside the lab (backhaul/lab/ is test machinery) and the README's lines, each beside
the goal it is held to. It only reports: a number over its goal is a reason to split, not a
failing build (some rules are long, and DESIGN.md says which were left whole on purpose).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE = ("backhaul", "deploys", "tasks.py")
GOALS = {"functions over C901": 6, "largest non-lab module": 700, "README lines": 450}


def over_c901(root: Path = ROOT) -> list[str]:
    """``path:line: name (score)`` for each function ruff's mccabe check finds too complex."""
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--select", "C901", "--output-format", "json", *CODE],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode not in (0, 1):  # 1 = findings; anything else is ruff itself failing
        raise SystemExit(f"ruff failed: {proc.stderr.strip()}")
    return [
        f"{Path(f['filename']).relative_to(root)}:{f['location']['row']}: {f['message']}"
        for f in json.loads(proc.stdout)
    ]


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def largest_module(root: Path = ROOT) -> tuple[str, int]:
    """The longest Python module of the product (backhaul/ without lab/, deploys/, the entry
    points), with its line count."""
    lab = root / "backhaul" / "lab"
    modules = [
        p
        for p in [*(root / "backhaul").rglob("*.py"), *(root / "deploys").glob("*.py")]
        if lab not in p.parents
    ]
    modules += [root / "tasks.py", root / "inventory.py"]
    longest = max(modules, key=_lines)
    return str(longest.relative_to(root)), _lines(longest)


def main() -> int:
    complex_ = over_c901()
    module, module_lines = largest_module()
    numbers = {
        "functions over C901": (len(complex_), ""),
        "largest non-lab module": (module_lines, module),
        "README lines": (_lines(ROOT / "README.md"), ""),
    }
    for name, (value, where) in numbers.items():
        print(f"{name:24} {value:5}  (goal <= {GOALS[name]}) {where}".rstrip())
    for finding in complex_:
        print(f"  {finding}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
