"""Every fixture under tests/data/facts/<module>.<Fact>/ is one test case."""

import pytest
from pyinfra_harness import cases, check_fact

CASES = cases("facts")


@pytest.mark.parametrize("path", [p for _, p in CASES], ids=[i for i, _ in CASES])
def test_fact(path):
    check_fact(path)
