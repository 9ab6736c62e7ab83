"""`python -m backhaul.house` reports; these only check that what it reports is measured right."""

import re

from backhaul import house


def test_house_names_each_complex_function_by_file_and_line():
    for finding in house.over_c901():
        assert re.match(r"(backhaul|deploys|tasks\.py)\S*:\d+: `\w+` is too complex \(\d+ > \d+\)", finding)


def test_the_largest_module_is_never_lab_machinery(tmp_path):
    for path, lines in [("backhaul/lab/huge.py", 900), ("backhaul/big.py", 50), ("deploys/x.py", 10)]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x = 1\n" * lines)
    (tmp_path / "tasks.py").write_text("")
    (tmp_path / "inventory.py").write_text("")
    assert house.largest_module(tmp_path) == ("backhaul/big.py", 50)
