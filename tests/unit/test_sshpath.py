"""ssh.via hub: backends with no public port, reached by a jump through the hub."""

from __future__ import annotations

import pytest

from backhaul import plan, sshpath
from backhaul.errors import ConfigError, DeployError
from backhaul.hubjump import Jump
from backhaul.inventory import host_data
from backhaul.network import load
from backhaul.verify import _expected_open

NETWORK = """\
network: {subnet: 10.50.0.0/24}
ssh: {key: KEYFILE, known_hosts: KNOWN, via: hub, allow_from: [198.51.100.7, 192.0.2.0/28]}
proxy: {public_ip: 203.0.113.10}
backends:
  - {name: backend-1, public_ip: 203.0.113.21, wg_ip: 10.50.0.2}
  - {name: backend-2, public_ip: 203.0.113.22, wg_ip: 10.50.0.3, ssh_via: direct}
tls: {mode: self-signed}
"""


def _net(tmp_path, text: str = NETWORK):
    (tmp_path / "id").write_text("x")
    (tmp_path / "kh").write_text("")
    path = tmp_path / "network.yml"
    path.write_text(text.replace("KEYFILE", str(tmp_path / "id")).replace("KNOWN", str(tmp_path / "kh")))
    return load(path)


def test_the_model_reads_via_allow_from_and_the_per_backend_override(tmp_path):
    net = _net(tmp_path)
    assert net.ssh.via == "hub" and net.ssh.allow_from == ("198.51.100.7", "192.0.2.0/28")
    assert [h.ssh_via for h in net.hosts] == ["direct", "hub", "direct"]
    assert [sshpath.via_hub(h) for h in net.hosts] == [False, True, False]


@pytest.mark.parametrize(
    "change, field, words",
    [
        ("via: tunnel,", "ssh.via", "direct"),
        ("allow_from: [198.51.100.7/24]", "ssh.allow_from[0]", "host bits"),
        ("allow_from: [nowhere]", "ssh.allow_from[0]", "not an IP address"),
    ],
)
def test_bad_ssh_access_is_a_config_error(tmp_path, change, field, words):
    text = (
        NETWORK.replace("via: hub,", change)
        if "via" in change
        else NETWORK.replace("allow_from: [198.51.100.7, 192.0.2.0/28]", change)
    )
    with pytest.raises(ConfigError) as e:
        _net(tmp_path, text)
    assert field in str(e.value) and words in str(e.value)


def test_the_hub_cannot_be_reached_through_itself(tmp_path):
    with pytest.raises(ConfigError) as e:
        _net(
            tmp_path, NETWORK.replace("{public_ip: 203.0.113.10}", "{public_ip: 203.0.113.10, ssh_via: hub}")
        )
    assert "proxy.ssh_via" in str(e.value)


def test_a_via_hub_backend_is_reached_on_its_tunnel_address_by_a_jump_through_the_hub(tmp_path):
    net = _net(tmp_path)
    data = host_data(net, net.host("backend-1"), direct=set())
    assert data["ssh_hostname"] == "10.50.0.2" and data["backhaul_ssh_route"] == "hub"
    conf = open(data["ssh_config_file"]).read()
    # its socket is a channel through the hub, not a ProxyJump (a connection to the hub each)
    assert "ProxyJump" not in conf
    jump = data["ssh_paramiko_connect_kwargs"]["sock"]
    assert isinstance(jump, Jump) and "10.50.0.2:22" in repr(jump)
    assert (
        "Host backhaul-hub-proxy\n  HostName 203.0.113.10" in conf
        and f"IdentityFile {tmp_path / 'id'}" in conf
    )
    assert f"UserKnownHostsFile {tmp_path / 'kh'}" in conf and "10.50.0.3" not in conf
    # the hub and a direct backend: their public address, as before
    assert host_data(net, net.hub)["ssh_hostname"] == "203.0.113.10"
    assert host_data(net, net.host("backend-2"))["ssh_hostname"] == "203.0.113.22"


def test_a_run_that_reaches_it_directly_uses_its_public_address(tmp_path, monkeypatch):
    net = _net(tmp_path)
    monkeypatch.setenv(sshpath.DIRECT_ENV, "backend-1")
    data = host_data(net, net.host("backend-1"))
    assert data["ssh_hostname"] == "203.0.113.21" and data["backhaul_ssh_route"] == "direct"


def test_closed_ssh_answers_the_hub_on_the_tunnel_and_the_admin_list_only(tmp_path):
    net = _net(tmp_path)
    b = net.host("backend-1")
    rules = plan.firewall_rules(net, b, ssh_closed=True)
    ssh = [r for r in rules if r.port == 22]
    assert [(r.src, r.dst, r.interface) for r in ssh] == [
        ("10.50.0.1", "10.50.0.2", "wg0"),
        ("198.51.100.7", "any", None),
        ("192.0.2.0/28", "any", None),
    ]
    assert ssh == rules[:3]  # SSH first
    assert not any(r.port == 22 and r.src == "any" for r in rules)
    # not closed: SSH from anywhere, as for every other host
    assert plan.firewall_rules(net, b)[0].src == "any"


def test_public_ssh_closes_over_the_hub_or_from_the_admin_list_never_on_a_first_deploy(tmp_path):
    net = _net(tmp_path)
    b, direct_b = net.host("backend-1"), net.host("backend-2")
    me = {"client": "198.51.100.7", "server": "203.0.113.21", "port": 22, "version": 4}
    stranger = dict(me, client="198.51.100.99")
    assert sshpath.closes_ssh(net, b, "hub", {"client": "10.50.0.1"}, True)
    # reached directly: only from an admin address, and only once ufw is on
    assert sshpath.closes_ssh(net, b, "direct", me, True)
    assert not sshpath.closes_ssh(net, b, "direct", me, False)
    assert not sshpath.closes_ssh(net, b, "direct", stranger, True)
    assert not sshpath.closes_ssh(net, direct_b, "hub", me, True)


def test_the_lockout_guard_knows_which_sessions_the_closed_rules_let_in(tmp_path):
    net = _net(tmp_path)
    sources = sshpath.ssh_sources(net, net.host("backend-1"))
    assert sshpath.session_allowed({"client": "10.50.0.1"}, sources)
    assert sshpath.session_allowed({"client": "192.0.2.9"}, sources)
    assert sshpath.session_allowed({"client": "::ffff:198.51.100.7"}, sources)
    assert not sshpath.session_allowed({"client": "203.0.113.99"}, sources)
    assert sshpath.session_allowed({"client": "203.0.113.99"}, None)  # public SSH


def test_verify_expects_nothing_from_the_internet_on_a_via_hub_backend(tmp_path):
    net = _net(tmp_path, NETWORK.replace(", allow_from: [198.51.100.7, 192.0.2.0/28]", ""))
    assert _expected_open(net, net.host("backend-1")) == set()
    assert _expected_open(net, net.host("backend-2")) == {22}
    assert _expected_open(net, net.hub) == {22, 80, 443}


# -- the flow: which way, and closing over the hub (pyinfra runs replaced by a recorder) ------
def _fake_runs(monkeypatch, fail_when):
    """run_pyinfra records (deploy file, limit, direct names); ``fail_when(call)`` gives the
    hosts that could not connect in that call."""
    from backhaul import flows
    from backhaul.runner import Run

    calls = []

    def fake(network, deploy_file="deploys/site.py", limit=None, dry=False, extra_env=None, **kw):
        call = (deploy_file.split("/")[-1], tuple(limit or ()), (extra_env or {}).get(sshpath.DIRECT_ENV, ""))
        calls.append(call)
        failed = {n: "Could not connect (timeout)" for n in fail_when(call)}
        return Run(1 if failed else 0, [], failed)

    monkeypatch.setattr(flows, "run_pyinfra", fake)
    return flows, calls


def test_a_first_deploy_goes_directly_then_closes_public_ssh_over_the_hub(tmp_path, monkeypatch):
    net = _net(tmp_path)
    flows, calls = _fake_runs(monkeypatch, lambda call: [])
    flows._converge(str(net.path), net, None).check("deploy", "")
    assert calls == [("site.py", (), "backend-1"), ("firewall.py", ("backend-1",), "")]
    assert sshpath.proven(net.path) == {"backend-1": "203.0.113.10"}
    # proven: the next deploy goes through the hub, one run
    calls.clear()
    flows._converge(str(net.path), net, None).check("deploy", "")
    assert calls == [("site.py", (), "")]


def test_a_backend_not_reached_through_the_hub_is_deployed_directly_then_closed(tmp_path, monkeypatch):
    net = _net(tmp_path)
    sshpath.remember(net.path, net, ["backend-1"])
    flows, calls = _fake_runs(monkeypatch, lambda c: ["backend-1"] if c == ("site.py", (), "") else [])
    flows._converge(str(net.path), net, None).check("deploy", "")
    assert calls == [
        ("site.py", (), ""),
        ("site.py", ("proxy", "backend-1"), "backend-1"),
        ("firewall.py", ("backend-1",), ""),
    ]


def test_public_ssh_stays_when_ssh_through_the_hub_does_not_work(tmp_path, monkeypatch):
    net = _net(tmp_path)
    flows, calls = _fake_runs(monkeypatch, lambda c: ["backend-1"] if c[0] == "firewall.py" else [])
    monkeypatch.setattr(flows.time, "sleep", lambda s: None)
    monkeypatch.setattr(flows.time, "monotonic", iter(range(0, 10_000, 100)).__next__)
    with pytest.raises(DeployError) as e:
        flows._converge(str(net.path), net, None).check("deploy", "")
    assert "public SSH was left open" in str(e.value)
    assert sshpath.proven(net.path) == {}


def test_replace_hub_writes_the_new_address_and_refuses_a_backends(tmp_path):
    from backhaul.network import set_hub_address

    net = _net(tmp_path)
    hub = set_hub_address(net.path, "203.0.113.40")
    assert str(hub.public_ip) == "203.0.113.40"
    assert "proxy: {public_ip: 203.0.113.40}" in net.path.read_text()
    with pytest.raises(ConfigError) as e:
        set_hub_address(net.path, "203.0.113.21")
    assert "backend-1" in str(e.value)
    with pytest.raises(ConfigError):
        set_hub_address(net.path, "127.0.0.1")


def test_another_hosts_failure_does_not_hold_a_backends_public_ssh_open(tmp_path, monkeypatch):
    net = _net(tmp_path)
    flows, calls = _fake_runs(monkeypatch, lambda c: ["backend-2"] if c[0] == "site.py" else [])
    with pytest.raises(DeployError):
        flows._converge(str(net.path), net, None).check("deploy", "")
    assert calls[-1] == ("firewall.py", ("backend-1",), "")
    assert sshpath.proven(net.path) == {"backend-1": "203.0.113.10"}


# -- what a deploy says it did, and what a plan says it would do ------------------------------
def _fake_totals(monkeypatch, firewall_changes):
    """run_pyinfra that changes nothing in a site run and, in a firewall run over the hub,
    ``firewall_changes`` per host (as pyinfra's totals and --dry table would say)."""
    from backhaul import flows
    from backhaul.runner import Run

    calls = []

    def fake(network, deploy_file="deploys/site.py", limit=None, dry=False, extra_env=None, **kw):
        assert not kw.get("summarize", True), "each run of a flow printed its own summary"
        calls.append((deploy_file.split("/")[-1], tuple(limit or ()), dry))
        if deploy_file.endswith("firewall.py"):
            changes = {h: ops for h, ops in firewall_changes.items() if h in (limit or ())}
            return Run(0, [], {}, ops=len(limit), changed=len(changes), changes=changes if dry else {})
        return Run(0, [], {}, ops=30, changed=0)

    monkeypatch.setattr(flows, "run_pyinfra", fake)
    return flows, calls


def test_a_deploy_that_closes_public_ssh_never_says_no_changes(tmp_path, monkeypatch, capsys):
    net = _net(tmp_path)
    flows, calls = _fake_totals(monkeypatch, {"backend-1": ["ufw rules, defaults (deny in), enabled"]})
    flows._converge(str(net.path), net, None).check("deploy", "")
    out = capsys.readouterr().out
    assert "no changes" not in out
    assert "backhaul: 1 of 31 operations changed something, 0 failed" in out.splitlines()


def test_the_plan_after_switching_to_via_hub_shows_public_ssh_closing(tmp_path, monkeypatch, capsys):
    net = _net(tmp_path)
    flows, calls = _fake_totals(monkeypatch, {"backend-1": ["ufw rules, defaults (deny in), enabled"]})
    flows._converge(str(net.path), net, None, dry=True)
    # the deploy's own steps, dry: the site run (backend-1 directly), then its firewall over the hub
    assert calls == [("site.py", (), True), ("firewall.py", ("backend-1",), True)]
    out = capsys.readouterr().out
    assert "no changes" not in out
    assert "  backend-1: ufw rules, defaults (deny in), enabled (over the hub: closes public SSH)" in out
    assert sshpath.proven(net.path) == {}  # a plan remembers nothing


def test_a_plan_says_when_it_cannot_see_public_ssh_closing(tmp_path, monkeypatch, capsys):
    from backhaul.runner import Run

    net = _net(tmp_path)
    flows, calls = _fake_totals(monkeypatch, {})

    def unreached(network, deploy_file="deploys/site.py", limit=None, dry=False, extra_env=None, **kw):
        if deploy_file.endswith("firewall.py"):
            return Run(1, [], {"backend-1": "Could not connect (timeout)"})
        return Run(0, [], {}, ops=30, changed=3, changes={"backend-1": ["wg0.conf"]})

    monkeypatch.setattr(flows, "run_pyinfra", unreached)
    flows._converge(str(net.path), net, None, dry=True).check("the plan", "")
    out = capsys.readouterr().out
    assert "backend-1: wg0.conf" in out
    assert "backend-1: wg0.conf; its public SSH closes over the hub once SSH through the hub works" in out


# -- host keys of via-hub backends: where ssh.known_hosts says, checked against the key learnt --
ED = "AAAAC3NzaC1lZDI1NTE5AAAAIGl7s2h4m0bq0u0b6h1yq1kq8b3J0rj6vC3o2a8pQ1mB"
ED_OTHER = "AAAAC3NzaC1lZDI1NTE5AAAAIHh9bZ7Xc1e2S3oWqk8Yq6nq8V4m3pG0zK2Jr5nT8aQd"


def test_through_the_hub_a_backend_is_checked_against_the_key_learnt_at_its_public_address(tmp_path):
    net = _net(tmp_path)
    kh = tmp_path / "kh"
    kh.write_text(f"203.0.113.21 ssh-ed25519 {ED}\n203.0.113.10 ssh-ed25519 {ED_OTHER}\n")
    data = host_data(net, net.host("backend-1"), direct=set())
    assert data["ssh_known_hosts_file"] == str(kh) and data["ssh_strict_host_key_checking"] == "accept-new"
    # its WireGuard address names the same key before the first jump: no accept-new through the hub
    assert f"10.50.0.2 ssh-ed25519 {ED}\n" in kh.read_text()
    host_data(net, net.host("backend-1"), direct=set())
    assert kh.read_text().count("10.50.0.2 ") == 1  # once
    # a key the file already has for the tunnel address is never replaced (a changed key fails)
    kh.write_text(f"203.0.113.21 ssh-ed25519 {ED}\n10.50.0.2 ssh-ed25519 {ED_OTHER}\n")
    host_data(net, net.host("backend-1"), direct=set())
    assert kh.read_text() == f"203.0.113.21 ssh-ed25519 {ED}\n10.50.0.2 ssh-ed25519 {ED_OTHER}\n"


def test_a_backend_not_learnt_yet_is_left_to_its_first_deploy(tmp_path):
    net = _net(tmp_path)
    host_data(net, net.host("backend-1"), direct=set())
    assert (tmp_path / "kh").read_text() == ""


def test_the_pinned_key_starts_a_line_of_its_own(tmp_path):
    net = _net(tmp_path)
    (tmp_path / "kh").write_text(f"203.0.113.21 ssh-ed25519 {ED}")  # no newline at the end
    host_data(net, net.host("backend-1"), direct=set())
    assert (tmp_path / "kh").read_text().splitlines()[1] == f"10.50.0.2 ssh-ed25519 {ED}"


def test_a_plan_lists_the_closing_once_when_the_direct_run_already_closes(tmp_path, monkeypatch, capsys):
    """From an ssh.allow_from address the direct run applies the closed rules itself (seen in
    the lab: the same firewall change was listed twice, once per run)."""
    from backhaul.runner import Run

    net = _net(tmp_path)
    op = "ufw rules, defaults (deny in), enabled"

    def both(network, deploy_file="deploys/site.py", limit=None, dry=False, extra_env=None, **kw):
        return Run(0, [], {}, ops=30, changes={"backend-1": [op]})

    from backhaul import flows

    monkeypatch.setattr(flows, "run_pyinfra", both)
    flows._converge(str(net.path), net, None, dry=True)
    assert f"  backend-1: {op}\n" in capsys.readouterr().out


TWO_HUBS = NETWORK.replace(
    "proxy: {public_ip: 203.0.113.10}\n",
    "proxy: {public_ip: 203.0.113.10}\n"
    "proxies:\n  - {name: proxy-2, public_ip: 203.0.113.11, wg_ip: 10.50.0.254}\n",
)


def test_with_two_hubs_a_jump_may_go_through_either_the_first_first(tmp_path):
    net = _net(tmp_path, TWO_HUBS)
    data = host_data(net, net.host("backend-1"), direct=set())
    conf = open(data["ssh_config_file"]).read()
    first, second = conf.index("HostName 203.0.113.10"), conf.index("HostName 203.0.113.11")
    assert first < second  # each hub its own entry (its own known_hosts line), in file order
    assert conf.count(f"UserKnownHostsFile {tmp_path / 'kh'}") == 2
    jump = data["ssh_paramiko_connect_kwargs"]["sock"]
    assert jump.hubs == sshpath.hub_aliases(net) and len(jump.hubs) == 2


def test_with_two_hubs_closed_ssh_answers_every_hub_on_the_tunnel(tmp_path):
    net = _net(tmp_path, TWO_HUBS)
    ssh = [r for r in plan.firewall_rules(net, net.host("backend-1"), ssh_closed=True) if r.port == 22]
    assert [(r.src, r.interface) for r in ssh[:2]] == [("10.50.0.1", "wg0"), ("10.50.0.254", "wg0")]
    # a run that arrives through the second hub is not cut by the lockout guard
    assert sshpath.session_allowed({"client": "10.50.0.254"}, sshpath.ssh_sources(net, net.host("backend-1")))
