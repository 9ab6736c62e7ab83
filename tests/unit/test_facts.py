"""Every fixture under tests/data/facts/<module>.<Fact>/ is one test case."""

import pytest
from pyinfra_harness import cases, check_fact

CASES = cases("facts")


@pytest.mark.parametrize("path", [p for _, p in CASES], ids=[i for i, _ in CASES])
def test_fact(path):
    check_fact(path)


def test_a_sudo_that_asks_for_a_password_is_refused_with_the_fix():
    from backhaul.facts.system import sudo_problem

    assert sudo_problem("backend-1", {"user": "root", "sudo": "root"}) is None
    assert sudo_problem("backend-1", {"user": "deploy", "sudo": "passwordless"}) is None
    msg = sudo_problem("backend-1", {"user": "asker", "sudo": "password"})
    assert msg.startswith("backend-1: ssh.user 'asker' is not root, and sudo asks it for a password")
    assert "asker ALL=(ALL) NOPASSWD:ALL" in msg and "ssh.user: root" in msg
    assert "has no sudo" in sudo_problem("b", {"user": "admin", "sudo": "missing"})
