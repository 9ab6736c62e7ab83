"""backhaul.compose: one generic runner over tests/data/compose/<case>/, plus the errors.

A case is ``input.yml`` rewritten for 10.50.0.2 into ``expected.yml`` (byte for byte), with the
warnings listed one per line in ``warnings.txt`` (no file: no warning).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from backhaul.compose import (
    HOST_BINDING_OPT,
    ComposeError,
    PublishedPort,
    rewrite_compose,
)
from backhaul.errors import BackhaulError

BIND_IP = "10.50.0.2"
CASES_DIR = Path(__file__).resolve().parents[1] / "data" / "compose"
CASES = sorted(p.name for p in CASES_DIR.iterdir() if (p / "input.yml").is_file())
LOOPBACK = {"127.0.0.1", "127.0.0.53", "::1", "localhost"}


def _case(name: str) -> tuple[str, str, list[str]]:
    d = CASES_DIR / name
    warnings = d / "warnings.txt"
    return (
        (d / "input.yml").read_text(),
        (d / "expected.yml").read_text(),
        warnings.read_text().splitlines() if warnings.exists() else [],
    )


def _without_ports_and_networks(data: dict) -> dict:
    """The parsed file minus what the rewrite may change (ports may sit in x- anchors)."""
    data = {
        k: ({**v, "ports": None} if isinstance(v, dict) and "ports" in v else v)
        for k, v in data.items()
        if k != "networks"
    }
    services = {}
    for name, svc in (data.pop("services") or {}).items():
        svc = dict(svc or {})
        ports = svc.pop("ports", None)
        services[name] = (svc, len(ports) if ports else 0)
    return {"rest": data, "services": services}


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 15


@pytest.mark.parametrize("case", CASES)
def test_case(case):
    source, expected, warnings = _case(case)
    result = rewrite_compose(source, BIND_IP)
    assert result.text == expected
    assert result.changed is (expected != source)
    assert result.warnings == warnings
    # Only ports and networks may differ, and every published port is private.
    assert _without_ports_and_networks(yaml.safe_load(expected)) == _without_ports_and_networks(
        yaml.safe_load(source)
    )
    assert all(p.host_ip in {BIND_IP} | LOOPBACK for p in result.ports)


@pytest.mark.parametrize("case", CASES)
def test_case_is_idempotent(case):
    _, expected, _ = _case(case)
    again = rewrite_compose(expected, BIND_IP)
    assert again.changed is False
    assert again.text == expected


def test_ports_are_reported_after_the_rewrite():
    source, _, _ = _case("udp")
    ports = rewrite_compose(source, BIND_IP).ports
    assert ports == [
        ("dns", BIND_IP, "5353", "53", "udp"),
        ("dns", BIND_IP, "5353", "53", "tcp"),
        ("dns", BIND_IP, None, "51820", "udp"),
        ("dns", BIND_IP, "6000-6001", "6000-6001", "udp"),
    ]
    assert isinstance(ports[0], PublishedPort)
    assert ports[0].protocol == "udp"


def test_sexagesimal_port_is_read_from_the_source_not_as_base_60():
    result = rewrite_compose("services:\n  s:\n    ports:\n      - 22:22\n", BIND_IP)
    assert yaml.safe_load(result.text)["services"]["s"]["ports"] == [f"{BIND_IP}:22:22"]
    assert result.ports == [("s", BIND_IP, "22", "22", "tcp")]


def test_default_network_gets_the_host_binding_option():
    result = rewrite_compose("services:\n  web:\n    image: nginx\n", BIND_IP)
    data = yaml.safe_load(result.text)
    assert data["networks"]["default"]["driver_opts"] == {HOST_BINDING_OPT: BIND_IP}
    assert result.ports == []


def test_bind_ip_of_another_backend():
    source, _, _ = _case("short_host_container")
    result = rewrite_compose(source, "10.50.0.7")
    assert {p.host_ip for p in result.ports} == {"10.50.0.7"}
    assert '"10.50.0.7"' in result.text


def test_compose_error_is_a_backhaul_error():
    assert issubclass(ComposeError, BackhaulError)


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("services: [web\n", ["not valid YAML"]),
        ("", ["empty", "services:"]),
        ("- web\n- db\n", ["must be a mapping", "services:"]),
        ("web:\n  image: nginx\n", ["no `services:` key"]),
        ("services:\n  - web\n", ["`services:` must be a mapping"]),
        ("services:\n  web: nginx\n", ["service 'web'", "'nginx'", "indent its settings"]),
        ("services:\n  web:\n    ports: 8080:80\n", ["service 'web'", "must be a list"]),
        ("services:\n  web:\n    ports:\n      -\n", ["service 'web'", "not a port"]),
        ("services:\n  web:\n    ports:\n      - [80]\n", ["service 'web'", "not a port"]),
        ("networks: [a]\nservices:\n  web: {}\n", ["`networks:` must be a mapping"]),
        ("services:\n  web: {}\nnetworks:\n  a: x\n", ["network 'a'", "must be a mapping"]),
    ],
)
def test_malformed_file(source, words):
    with pytest.raises(ComposeError) as info:
        rewrite_compose(source, BIND_IP)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    ("port", "reason"),
    [
        ('"http"', "'http' is not a port number"),
        ('"70000:80"', "'70000' is outside 1-65535"),
        ('"9000-8000:80"', "range is reversed"),
        ('"8080:80/icmp"', "protocol 'icmp'"),
        ('"8080:"', "container port ''"),
        ('"myhost:8080:80"', "host IP 'myhost' is not an IP address"),
        ('"${PORT:80"', "'${' is not closed"),
        ('"[::1:8080:80"', "'[' is not closed"),
    ],
)
def test_unparsable_short_port(port, reason):
    source = f"services:\n  api:\n    ports:\n      - {port}\n"
    with pytest.raises(ComposeError) as info:
        rewrite_compose(source, BIND_IP)
    message = str(info.value)
    assert "service 'api'" in message
    assert "ports[0] (line 4, column 9)" in message
    assert reason in message
    assert f'"{BIND_IP}:8080:80"' in message  # the fix, with the right address


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ("published: 8080", "needs `target:`"),
        ("target: http", "target 'http'"),
        ("target: 80\n        published: 0", "published '0'"),
        ("target: 80\n        host_ip: nowhere", "host IP 'nowhere'"),
        ("target: 80\n        host_ip: [a]", "host_ip must be an address"),
    ],
)
def test_unparsable_long_port(item, reason):
    source = f"services:\n  api:\n    ports:\n      - {item}\n"
    with pytest.raises(ComposeError) as info:
        rewrite_compose(source, BIND_IP)
    assert "service 'api'" in str(info.value)
    assert reason in str(info.value)


@pytest.mark.parametrize("bind_ip", ["wg0", "0.0.0.0", "127.0.0.1", "fd00::2", ""])
def test_bad_bind_ip(bind_ip):
    with pytest.raises(ComposeError, match="bind address"):
        rewrite_compose("services:\n  web: {}\n", bind_ip)


def test_empty_host_ip_value_is_filled():
    source = "services:\n  web:\n    ports:\n      - target: 80\n        host_ip:\n"
    result = rewrite_compose(source, BIND_IP)
    assert "        host_ip: 10.50.0.2\n" in result.text
    assert result.ports == [("web", BIND_IP, None, "80", "tcp")]
    assert rewrite_compose(result.text, BIND_IP).changed is False


def test_crlf_file_stays_crlf():
    result = rewrite_compose("services:\r\n  web:\r\n    ports:\r\n      - 8080:80\r\n", BIND_IP)
    assert "\n" not in result.text.replace("\r\n", "")
    assert rewrite_compose(result.text, BIND_IP).changed is False


def test_null_network_is_filled_and_its_comment_kept():
    source = "services:\n  web:\n    image: x\nnetworks:\n  default: ~  # ours\n"
    result = rewrite_compose(source, BIND_IP)
    assert result.text == (
        "services:\n  web:\n    image: x\nnetworks:\n  default:  # ours\n"
        f'    driver_opts:\n      {HOST_BINDING_OPT}: "{BIND_IP}"\n'
    )


def test_insertion_does_not_change_a_keep_block_scalar():
    source = "services:\n  web:\n    command: |+\n      run\n\n# c\n"
    result = rewrite_compose(source, BIND_IP)
    assert yaml.safe_load(result.text)["services"]["web"]["command"] == "run\n\n"
    assert result.text.endswith("# c\n")


def test_anchor_and_tag_on_a_port_are_kept():
    source = (
        "x-port: &p 80:80\n"
        "services:\n  web:\n    ports:\n      - !!str 8080\n      - *p\n"
        "      - target: 81\n        host_ip: &i 0.0.0.0\n"
    )
    result = rewrite_compose(source, BIND_IP)
    assert "x-port: &p 10.50.0.2:80:80\n" in result.text
    assert "      - !!str 10.50.0.2::8080\n      - *p\n" in result.text
    assert "        host_ip: &i 10.50.0.2\n" in result.text
    assert rewrite_compose(result.text, BIND_IP).changed is False
