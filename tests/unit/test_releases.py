"""The comparison of Debian 12's and 13's first deploys (tests/releases.py)."""

from __future__ import annotations

import json

from tests import releases

# pyinfra ends each operation line with a space (left out here)
OUTPUT = """\
--> Starting operation: deploys/wireguard.py | WireGuard | Install WireGuard
    [proxy]     Success
    [backend-1] No changes

--> Starting operation: deploys/firewall.py | Firewall | Allow 51820/udp from 192.168.87.11
    [proxy]     Success
    [backend-1] Error: something

--> Starting operation: deploys/nginx.py | nginx | nginx configuration
    [backend-1] Skipped
"""


def test_a_trace_is_each_hosts_operations_in_order_with_the_labs_addresses_neutral():
    assert releases.trace(OUTPUT) == {
        "proxy": [
            "deploys/wireguard.py | WireGuard | Install WireGuard: Success",
            "deploys/firewall.py | Firewall | Allow 51820/udp from <addr>: Success",
        ],
        "backend-1": [
            "deploys/wireguard.py | WireGuard | Install WireGuard: No changes",
            "deploys/firewall.py | Firewall | Allow 51820/udp from <addr>: Error",
            "deploys/nginx.py | nginx | nginx configuration: Skipped",
        ],
    }


def test_a_version_or_a_time_is_not_taken_for_an_address():
    assert releases.trace("--> Starting operation: x | wait 2.5 s\n    [h] Success\n") == {
        "h": ["x | wait 2.5 s: Success"]
    }


def test_two_labs_on_other_subnets_compare_equal():
    other = OUTPUT.replace("192.168.87.11", "192.168.91.11")
    assert releases.compare(releases.trace(OUTPUT), releases.trace(other)) == []


def test_a_difference_names_the_host_and_the_first_operation_that_differs():
    other = OUTPUT.replace("[backend-1] No changes", "[backend-1] Success")
    problems = releases.compare(releases.trace(OUTPUT), releases.trace(other))
    assert problems == [
        "backend-1, operation 1: 'deploys/wireguard.py | WireGuard | Install WireGuard: No changes'"
        " vs 'deploys/wireguard.py | WireGuard | Install WireGuard: Success'"
    ]
    extra = OUTPUT + "--> Starting operation: nginx | Reload\n    [proxy]     Success\n"
    assert releases.compare(releases.trace(OUTPUT), releases.trace(extra)) == ["proxy: 2 operations vs 3"]


def test_the_check_fails_when_a_release_left_no_trace_and_passes_on_equal_ones(tmp_path, monkeypatch):
    monkeypatch.setenv(releases.TRACE_DIR_ENV, str(tmp_path))
    releases.write("trixie", OUTPUT)
    held, line = releases.check(tmp_path)
    assert not held and "trace-bookworm.json" in line
    releases.write("bookworm", OUTPUT)
    held, line = releases.check(tmp_path)
    assert held and "the same 5 operations on 2 hosts" in line
    (tmp_path / "trace-bookworm.json").write_text(json.dumps({"proxy": []}))
    held, line = releases.check(tmp_path)
    assert not held and "hosts differ" in line
