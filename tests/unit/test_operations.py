"""Every fixture under tests/data/operations/<module>.<op>/ is one test case."""

import pytest
from pyinfra_harness import cases, check_operation

CASES = cases("operations")


@pytest.mark.parametrize("path", [p for _, p in CASES], ids=[i for i, _ in CASES])
def test_operation(path):
    check_operation(path)
