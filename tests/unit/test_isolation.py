"""The isolation guard's rules, derived from the model, and verify's judgement of what it saw.

The lab (tests/lab/test_isolation.py) proves the rules hold against a neighbour; these pin what
they say, for IPv4 and IPv6 (the lab has no IPv6), and that the script they run with is sound.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from backhaul import network as netmod
from backhaul import plan, probe
from backhaul.operations.hostfile import sha256 as _sha256
from backhaul.operations.isolation import guard_files
from backhaul.verify import Report, _isolation_checks

NET = """network: {{subnet: 10.50.0.0/24, backend_to_backend: {b2b}}}
proxy: {{name: proxy, public_ip: 203.0.113.10}}
backends:
  - {{name: b1, public_ip: 203.0.113.21, wg_ip: 10.50.0.2}}
  - {{name: b2, public_ip: 203.0.113.22, wg_ip: 10.50.0.3}}
services:
  - {{name: app, backend: b1, port: 8080}}
  - {{name: web, backend: b1, port: 8081, compose: /opt/web/docker-compose.yml}}
tls: {{mode: self-signed}}
"""


def _net(tmp_path, b2b=False):
    p = tmp_path / "network.yml"
    p.write_text(NET.format(b2b=str(b2b).lower()))
    return netmod.load(p)


def _rules(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("-A", ":", "*", "COMMIT"))]


def test_a_backend_drops_its_wg_address_unless_from_the_tunnel_and_allows_declared_ports(tmp_path):
    net = _net(tmp_path)
    files = guard_files(plan.isolation(net, net.host("b1")))
    assert _rules(files["rules4"]) == [
        "*raw",
        ":backhaul-guard - [0:0]",
        "-A backhaul-guard -i wg0 -j RETURN",
        "-A backhaul-guard -i lo -j RETURN",
        "-A backhaul-guard -d 10.50.0.2/32 -j DROP",
        "COMMIT",
        "*mangle",
        ":backhaul-forward - [0:0]",
        "-A backhaul-forward -m conntrack ! --ctstate NEW -j RETURN",
        # every declared service port, from the hub over the tunnel (as ufw allows native ones)
        "-A backhaul-forward -i wg0 -s 10.50.0.1/32 -p tcp -m conntrack --ctorigdst 10.50.0.2/32"
        " --ctorigdstport 8080 -j RETURN",
        "-A backhaul-forward -i wg0 -s 10.50.0.1/32 -p tcp -m conntrack --ctorigdst 10.50.0.2/32"
        " --ctorigdstport 8081 -j RETURN",
        # any other port published on the WG address (no service declares it): no one
        "-A backhaul-forward -m conntrack --ctorigdst 10.50.0.2/32 -j DROP",
        "COMMIT",
    ]


def test_backend_to_backend_lets_the_subnet_reach_declared_ports_only(tmp_path):
    net = _net(tmp_path, b2b=True)
    rules = _rules(guard_files(plan.isolation(net, net.host("b1")))["rules4"])
    allows = [r for r in rules if r.endswith("-j RETURN") and "--ctorigdstport" in r]
    assert [r.split(" -s ")[1].split()[0] for r in allows] == ["10.50.0.0/24", "10.50.0.0/24"]
    assert rules[-2] == "-A backhaul-forward -m conntrack --ctorigdst 10.50.0.2/32 -j DROP"
    # a backend without services: its published ports answer no one
    b2 = _rules(guard_files(plan.isolation(net, net.host("b2")))["rules4"])
    assert not [r for r in b2 if "--ctorigdstport" in r]


def test_the_hub_forwards_into_the_tunnel_only_what_came_out_of_it(tmp_path):
    net = _net(tmp_path, b2b=True)
    files = guard_files(plan.isolation(net, net.hub))
    rules = _rules(files["rules4"])
    assert "-A backhaul-guard -d 10.50.0.1/32 -j DROP" in rules
    # first in the chain: whatever the connection state (an INVALID packet included)
    assert rules[rules.index(":backhaul-forward - [0:0]") + 1] == (
        "-A backhaul-forward ! -i wg0 -o wg0 -j DROP"
    )
    assert "-A backhaul-forward ! -i wg0 -o wg0 -j DROP" in _rules(files["rules6"])


def test_ipv6_no_port_published_over_it_answers_on_a_backend(tmp_path):
    net = _net(tmp_path)
    six = _rules(guard_files(plan.isolation(net, net.host("b1")))["rules6"])
    assert six == [
        "*mangle",
        ":backhaul-forward - [0:0]",
        "-A backhaul-forward ! -i wg0 -o wg0 -j DROP",
        "-A backhaul-forward -m conntrack --ctstate NEW -m conntrack --ctstate DNAT -j DROP",
        "COMMIT",
    ]
    hub6 = _rules(guard_files(plan.isolation(net, net.hub))["rules6"])
    assert not [r for r in hub6 if "DNAT" in r]


def test_another_interface_name_is_used_everywhere(tmp_path):
    p = tmp_path / "network.yml"
    p.write_text(
        NET.format(b2b="false").replace("subnet: 10.50.0.0/24", "subnet: 10.50.0.0/24, interface: tun7")
    )
    net = netmod.load(p)
    text = guard_files(plan.isolation(net, net.host("b1")))["rules4"]
    assert "-i tun7" in text and "wg0" not in text


@pytest.mark.skipif(not shutil.which("sh"), reason="no sh")
def test_the_guard_script_parses(tmp_path):
    script = guard_files(plan.isolation(_net(tmp_path), _net(tmp_path).hub))["script"]
    path = tmp_path / "guard.sh"
    path.write_text(script)
    assert subprocess.run(["sh", "-n", str(path)], capture_output=True).returncode == 0
    assert '"$tool-restore" -w --noflush' in script  # never a flush of anyone else's rules


def _guard_sandbox(tmp_path):
    """The real guard script, its paths moved under tmp_path, run by sh against stand-ins:
    iptables tools that keep the loaded rules in a file per table; grep, cat, sha256sum and cut
    that log their call and run the real one."""
    net = _net(tmp_path)
    script = guard_files(plan.isolation(net, net.host("b1")))["script"]
    root = tmp_path / "host"
    for p in (
        "/etc/backhaul/isolation.rules",
        "/etc/backhaul/isolation6.rules",
        "/run/backhaul/isolation.loaded",
    ):
        script = script.replace(p, f"{root}{p}")
    (root / "etc/backhaul").mkdir(parents=True)
    (root / "etc/backhaul/isolation.rules").write_text("*raw\n-A backhaul-guard -j DROP\nCOMMIT\n")
    (root / "etc/backhaul/isolation6.rules").write_text("*raw\n-A backhaul-guard -j DROP\nCOMMIT\n")
    bin_dir, tables, log = tmp_path / "bin", tmp_path / "tables", tmp_path / "calls"
    bin_dir.mkdir()
    tables.mkdir()
    tools = {
        # restore: the rules file's -A lines go into its table
        "restore": f'echo "$(basename $0)" >>{log}; t=; while read -r l; do case "$l" in '
        f'"*"*) t=${{l#?}};; -A*) echo "$l" >>{tables}/$(basename $0)-$t;; esac; done',
        "save": f'echo "$(basename $0)" >>{log}; '
        f"/usr/bin/cat {tables}/$(basename $0 -save)-restore-$2 2>/dev/null; true",
        "tables": "exit 1",  # -L/-C/-I of a hook: the chain is not listed, nothing is hooked
    }
    for fam in ("iptables", "ip6tables"):
        for kind, body in tools.items():
            name = fam if kind == "tables" else f"{fam}-{kind}"
            (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
    for real in ("grep", "cat", "sha256sum", "cut"):
        (bin_dir / real).write_text(f'#!/bin/sh\necho {real} >>{log}\nexec /usr/bin/{real} "$@"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    path = tmp_path / "guard.sh"
    path.write_text(script)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}

    def run(arg):
        log.write_text("")
        out = subprocess.run(["sh", str(path), arg], capture_output=True, text=True, env=env, check=True)
        return out.stdout.strip(), log.read_text().split()

    return run, tables


def test_the_guards_check_tells_loaded_from_flushed_in_few_processes(tmp_path):
    """The check runs in every deploy's and every verify's read of every host: one grep over
    the four tables' rules, not one per table (29 ms of CPU per host before)."""
    run, tables = _guard_sandbox(tmp_path)
    assert run("check")[0] == "not-loaded"
    run("start")
    state, calls = run("check")
    assert state == "loaded"
    assert sorted(calls) == sorted(
        ["cat", "grep", "sha256sum", "cut"]
        + [f"{t}-save" for t in ("iptables", "ip6tables") for _ in range(2)]
    )
    for f in tables.iterdir():  # someone flushed the rules
        f.write_text("")
    assert run("check")[0] == "changed"


# --- verify ------------------------------------------------------------------------------
def _health(net, active="active", rules="loaded", files=None):
    out = {}
    for h in net.hosts:
        wanted = {k: _sha256(v) for k, v in guard_files(plan.isolation(net, h)).items()}
        out[h.name] = {
            "sockets": [],
            "isolation": {"files": files or wanted, "enabled": "enabled", "active": active, "rules": rules},
        }
    return out


def _rows(report):
    return {c.host: c for c in report.checks if c.check == "isolation"}


def test_verify_ok_when_nothing_answers_and_the_guard_is_loaded(tmp_path):
    net = _net(tmp_path)
    knocked = {"direct": {"10.50.0.2:22": "silent", "10.50.0.2:ping": "silent"}, "hub": {}}
    report = Report("n")
    _isolation_checks(net, list(net.hosts), _health(net), knocked, report)
    rows = _rows(report)
    assert {r.status for r in rows.values()} == {"ok"}
    assert "nothing answered" in rows["b1"].detail


def test_verify_names_what_answered_and_a_guard_not_loaded(tmp_path):
    net = _net(tmp_path)
    knocked = {
        "direct": {"10.50.0.2:8081": "open", "10.50.0.2:ping": "open", "10.50.0.3:22": "silent"},
        "hub": {"10.50.0.2:22": "refused"},
    }
    report = Report("n")
    health = _health(net)
    health["b1"]["isolation"]["active"] = "inactive"
    health["b2"]["isolation"]["rules"] = "changed"
    _isolation_checks(net, list(net.hosts), health, knocked, report)
    rows = _rows(report)
    assert rows["b1"].status == "fail"
    assert "8081 (open)" in rows["b1"].detail and "ping (open)" in rows["b1"].detail
    assert "22 (refused)" in rows["b1"].detail and "203.0.113.10" in rows["b1"].detail
    assert "inactive" in rows["b1"].detail
    assert rows["b2"].status == "fail" and "changed" in rows["b2"].detail
    assert rows["proxy"].status == "ok"
    assert report.exit_code == 1


def test_verify_without_the_probe_still_checks_the_guard(tmp_path):
    net = _net(tmp_path)
    report = Report("n")
    other = {"rules4": "0" * 64, "rules6": None, "script": None, "unit": None}
    health = _health(net)
    health["b2"]["isolation"]["files"] = other
    _isolation_checks(net, list(net.hosts), health, {"unavailable": "needs root"}, report)
    rows = _rows(report)
    assert rows["b1"].status == "ok" and "not probed from here: needs root" in rows["b1"].detail
    assert rows["b2"].status == "fail" and "not the one this network file makes" in rows["b2"].detail


def test_probe_checksum_of_an_echo_request():
    # RFC 1071: a packet whose checksum field holds the checksum sums to zero
    header = b"\x08\x00\x00\x00\x12\x34\x00\x01" + b"backhaul-probe"
    csum = probe._checksum(header)
    packet = header[:2] + csum.to_bytes(2, "big") + header[4:]
    assert probe._checksum(packet) == 0


def test_silence_is_judged_against_how_fast_the_host_answers_on_its_public_address():
    # a neighbour on the same segment: an answer would come in about the public RTT
    assert probe.silence_window([0.001, 0.002]) == probe.MIN_SILENCE
    assert probe.silence_window([0.05, 0.1]) == pytest.approx(0.8)  # a slow (loaded) host
    assert probe.silence_window([0.5]) == probe.MAX_SILENCE
    # no control answered: nothing to judge by, so wait the longest
    assert probe.silence_window([]) == probe.MAX_SILENCE


def test_verify_knocks_what_the_file_declares_while_it_reads_the_facts(tmp_path, monkeypatch):
    """The neighbour's knock on declared ports and ping starts before any fact is read; ports
    only the facts show (bound on the WG address, undeclared) get a second knock after."""
    from backhaul import verify

    net = _net(tmp_path)
    declared = {h.name: verify._declared_targets(net, h) for h in net.hosts}
    assert ("10.50.0.2", None) in declared["b1"] and ("10.50.0.2", 22) in declared["b1"]
    health = _health(net)
    health["b1"]["sockets"].append({"proto": "tcp", "address": "10.50.0.2", "port": 9001})
    extra = verify._undeclared_targets(net, net.host("b1"), health["b1"])
    assert extra == [("10.50.0.2", 9001)]


def test_the_hubs_web_ports_are_knocked_with_the_declared_ones(tmp_path):
    """nginx listens on every address of the hub: 80 and 443 are the file's (the hub's web
    ports), knocked while the facts are read, not in a second round after them."""
    from backhaul import verify

    net = _net(tmp_path)
    health = _health(net)
    hub = net.hub
    health[hub.name]["sockets"] += [{"proto": "tcp", "address": "0.0.0.0", "port": p} for p in (80, 443)]
    assert verify._undeclared_targets(net, hub, health[hub.name]) == []
    assert {(str(hub.wg_ip), 80), (str(hub.wg_ip), 443)} <= set(verify._declared_targets(net, hub))
