"""wgconf: the Python readers (of the rendered content) and the awk programs (of the conf on
the host) read every line alike, because both are built from one statement of the rules."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from backhaul import wgconf

AWK = shutil.which("mawk") or shutil.which("awk")
needs_awk = pytest.mark.skipif(AWK is None, reason="no awk")
K1 = "Pk2Zb0yU9Kx4mW1nT3qR8sV6cD5eF7gH9iJ0kL2mN4o="
K2 = "Pk3Ab1cD2eF3gH4iJ5kL6mN7oP8qR9sT0uV1wX2yZ3a="

# Everything a hand edit or another tool could do to the spelling of a line.
TRICKY = f"""\
# a comment [Peer] = x
  [ Interface ]   # the hub
Address = 10.50.0.1/24 # trailing comment
  listenport=51820
PrivateKey = should-never-show
MTU	=	1420
not a setting
[pEEr]
PublicKey = {K1}
Allowed IPs = 10.50.0.2/32
AllowedIPs = 10.50.0.2/32 , 10.60.0.0/24  # two
[Peer]
publickey={K2}
ALLOWEDIPS = 10.50.0.3/32
"""


def _awk(program: str, text: str) -> list[str]:
    out = subprocess.run([AWK, program], input=text, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


@needs_awk
def test_the_interface_settings_read_alike_in_python_and_awk():
    awk = [line.removeprefix("iface=").split("=", 1) for line in _awk(wgconf.AWK_INTERFACE, TRICKY)]
    assert wgconf.interface_settings(TRICKY) == awk
    assert awk == [["address", "10.50.0.1/24"], ["listenport", "51820"], ["mtu", "1420"]]


@needs_awk
def test_the_peers_read_alike_in_python_and_awk():
    awk = {}
    for line in _awk(wgconf.AWK_PEERS, TRICKY):
        pk, ips = line.split("\t")
        awk[pk] = sorted(ips.split(","))
    assert wgconf.content_allowed_ips(TRICKY) == awk
    assert [pk for pk, _ in wgconf.content_peers(TRICKY)] == [K1, K2]


@needs_awk
def test_the_private_key_line_is_found_alike():
    assert _awk(wgconf.AWK_CONF_KEY, TRICKY) == ["should-never-show"]
    assert "privatekey" not in dict(wgconf.interface_settings(TRICKY))


@pytest.mark.parametrize(
    ("line", "trace"),
    [
        ("# PresharedKeyFile = /etc/wireguard/psk/hub.psk", True),
        ("#   presharedkeyfile=/x", True),
        ("# PresharedKeyFileX = /x", False),  # another word: a plain comment, for awk too
        ("#PresharedKeyFile = /x", False),
        ("PresharedKeyFile = /x", False),
    ],
)
def test_the_trace_of_an_embedded_key_is_recognised_alike(line, trace):
    assert wgconf.is_psk_trace(line) is trace
    if AWK:
        program = "{ t = tolower($0) } " + wgconf._awk_trace() + ' { print "trace" }'
        assert (_awk(program, line + "\n") == ["trace"]) is trace


def test_the_programs_name_only_keys_of_the_table():
    with pytest.raises(KeyError):
        wgconf.key("PostUp")
    with pytest.raises(ValueError):
        wgconf._awk("@KEY_TYPO@")
