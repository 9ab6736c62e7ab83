"""A no-op deploy without pyinfra (backhaul/unchanged.py, backhaul/readlog.py): what is kept,
when hosts are said to read the same, and what always runs the whole deploy. The lab proves it
on real hosts (tests/lab/test_network.py, test_sshvia.py, test_sudo.py)."""

from __future__ import annotations

import io
import json
import stat
import subprocess
from queue import Queue

import pytest

from backhaul import flows, readlog, unchanged
from backhaul import network as netmod
from backhaul.runner import Run
from tests.unit.test_network import MINIMAL  # the smallest valid network file

TEXTS = ["", "a", "a\n", "a\n\n", "\n", "a\nb", "a\r\nb\n", "x\n\ny \n"]


@pytest.mark.parametrize("text", TEXTS)
def test_an_output_is_split_into_lines_as_pyinfra_splits_it(text):
    """The digests of the deploy's reads come from pyinfra's lines, the next reading's from
    OpenSSH's bytes: the same output must give the same lines (else no no-op is ever fast)."""
    from pyinfra.connectors.util import read_buffer

    queue: Queue = Queue()
    read_buffer("stdout", io.StringIO(text), queue)
    assert readlog.lines_of(text) == [line.line for line in list(queue.queue)]


def test_a_clock_is_left_out_only_of_the_steady_digest():
    raw1, steady1, clocks1 = readlog.digests(["now=100", "cert\tx\t200"])
    raw2, steady2, clocks2 = readlog.digests(["now=160", "cert\tx\t200"])
    assert raw1 != raw2 and steady1 == steady2
    assert (clocks1, clocks2) == ([100], [160])
    assert readlog.digests(["now=100", "cert\tx\t201"])[1] != steady1


def _recorded(commands: list[str], until: int | None = None) -> dict:
    """A host's saved reads, as a deploy on this machine would have recorded them."""
    saved = []
    for command in commands:
        proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
        raw, steady, _ = readlog.digests(readlog.lines_of(proc.stdout))
        saved.append({"command": command, "ok": proc.returncode == 0, "digest": steady if until else raw})
    return {"commands": saved, "until": until}


class _Here:
    """The hosts' SSH, played by this machine's shell."""

    def run(self, host, script):
        return subprocess.run(["sh", "-c", script], capture_output=True, text=True)


def test_a_host_that_answers_the_same_reads_as_left(tmp_path):
    marker = tmp_path / "state"
    marker.write_text("one\n")
    saved = _recorded([f"cat {marker}", "printf 'no newline'", "false", "echo; echo"])
    assert unchanged._differs(_Here(), None, saved) == ""
    marker.write_text("two\n")  # a host changed since
    assert unchanged._differs(_Here(), None, saved) == "reads differently from the last deploy"


def test_an_exit_status_that_changed_is_a_difference(tmp_path):
    flag = tmp_path / "flag"
    saved = _recorded([f"test -e {flag}"])
    flag.write_text("")
    assert unchanged._differs(_Here(), None, saved) == "reads differently from the last deploy"


def test_a_clock_past_a_decisions_bound_is_a_difference():
    """The certificates' decisions hold until a time (tls.py says which): before it the clock
    is no difference, from it on the whole deploy runs (a renewal may be due)."""
    assert (
        unchanged._differs(_Here(), None, _recorded(["echo now=$(date +%s); echo cert"], until=2**40)) == ""
    )
    late = _recorded(["echo now=$(date +%s); echo cert"], until=1_000_000_000)
    assert unchanged._differs(_Here(), None, late) == "has reached the time a certificate is renewed"


def test_a_clock_with_no_bound_is_never_the_same():
    saved = _recorded(["echo now=$(date +%s%N)"])
    assert unchanged._differs(_Here(), None, saved) == "reads differently from the last deploy"


def _net(tmp_path):
    path = tmp_path / "network.yml"
    path.write_text(MINIMAL + "backends:\n  - name: web\n    public_ip: 203.0.113.21\n")
    return netmod.load(str(path), write_back=False)


def _reads(net, **overrides) -> dict:
    reads = {
        h.name: {
            "commands": [{"command": "true", "ok": True, "raw": "r", "steady": "s", "clocks": []}],
            "until": None,
            "unreadable": None,
        }
        for h in net.hosts
    }
    reads.update(overrides)
    return reads


def test_what_is_kept_is_private_and_holds_no_output(tmp_path):
    net = _net(tmp_path)
    assert unchanged.keep(net.path, net, unchanged.inputs(net.path, net), _reads(net))
    path = unchanged.witness_path(net.path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    kept = json.loads(path.read_text())
    assert kept["inputs"] == unchanged.inputs(net.path, net) and set(kept["hosts"]) == {"proxy", "web"}
    assert kept["hosts"]["web"]["commands"] == [{"command": "true", "ok": True, "digest": "r"}]


@pytest.mark.parametrize(
    "why",
    [
        {"web": {"commands": [], "until": None, "unreadable": None}},  # never reached
        {"web": {"commands": [{"command": "x"}], "until": None, "unreadable": "a file upload"}},
    ],
)
def test_nothing_is_kept_when_a_host_cannot_be_asked_again(tmp_path, why):
    net = _net(tmp_path)
    assert unchanged.keep(net.path, net, unchanged.inputs(net.path, net), _reads(net))
    reads = _reads(net, **why)
    if not why["web"]["commands"]:
        del reads["web"]
    assert not unchanged.keep(net.path, net, unchanged.inputs(net.path, net), reads)
    assert not unchanged.witness_path(net.path).exists()  # the old record went too


def test_the_inputs_follow_the_file_and_backhauls_state_but_not_the_record_itself(tmp_path):
    net = _net(tmp_path)
    first = unchanged.inputs(net.path, net)
    assert unchanged.inputs(net.path, net) == first
    assert unchanged.keep(net.path, net, first, _reads(net))
    (tmp_path / ".network.yml.lock").write_text("")
    assert unchanged.inputs(net.path, net) == first
    (tmp_path / ".network.yml.facts.json").write_text("{}")  # what the next deploy bundles
    second = unchanged.inputs(net.path, net)
    assert second != first
    net.path.write_text(net.path.read_text() + "# a comment\n")
    assert unchanged.inputs(net.path, net) != second


def test_the_runs_own_state_may_change_what_the_operator_gives_may_not(tmp_path):
    """A no-op run rewrites the facts record (how the next run bundles its reads): kept, with
    the state as the run left it. A network file edited while the run went: not kept."""
    net = _net(tmp_path)
    before = unchanged.inputs(net.path, net)
    (tmp_path / ".network.yml.facts.json").write_text("{}")
    assert unchanged.keep(net.path, net, before, _reads(net))
    kept = json.loads(unchanged.witness_path(net.path).read_text())
    assert kept["inputs"] == unchanged.inputs(net.path, net)  # (no host asked: test addresses)
    net.path.write_text(net.path.read_text() + "# edited meanwhile\n")
    assert not unchanged.keep(net.path, net, before, _reads(net))
    assert not unchanged.witness_path(net.path).exists()


def test_a_different_input_is_a_difference_without_asking_any_host(tmp_path):
    net = _net(tmp_path)
    assert unchanged.keep(net.path, net, unchanged.inputs(net.path, net), _reads(net))
    verdict = unchanged.check(net.path, net, "new")
    assert not verdict.holds and "changed since the last deploy" in verdict.why


def _flows_with(monkeypatch, holds: bool, run: Run):
    calls = []

    def fake_run(network, limit=None, dry=False, extra_env=None, summarize=True, reads=None, **kw):
        calls.append((limit, dry, reads is not None))
        return run

    monkeypatch.setattr(flows, "run_pyinfra", fake_run)
    monkeypatch.setattr(
        unchanged, "check", lambda network_file, net, digest: unchanged.Verdict(holds, "" if holds else "x")
    )
    kept = []
    monkeypatch.setattr(unchanged, "keep", lambda *a: kept.append(a) or True)
    return calls, kept


def test_a_deploy_whose_hosts_read_as_left_starts_no_pyinfra(tmp_path, monkeypatch, capsys):
    net = _net(tmp_path)
    calls, _ = _flows_with(monkeypatch, True, Run(0, [], {}))
    flows.deploy(str(net.path))
    assert calls == []
    assert "backhaul: no changes (all 2 hosts read as the last deploy left them" in capsys.readouterr().out


@pytest.mark.parametrize("how", [{"full": True}, {"limit": "web"}, {"dry": True}])
def test_full_limited_and_dry_deploys_always_run_pyinfra(tmp_path, monkeypatch, how):
    net = _net(tmp_path)
    calls, kept = _flows_with(monkeypatch, True, Run(0, [], {}))
    flows.deploy(str(net.path), **how)
    assert len(calls) == 1
    # only a complete run is kept: a limited or dry one says nothing of the other hosts
    assert bool(kept) == ("full" in how) and calls[0][2] == ("full" in how)


def test_a_run_that_changed_something_forgets_the_last_no_op(tmp_path, monkeypatch):
    net = _net(tmp_path)
    assert unchanged.keep(net.path, net, unchanged.inputs(net.path, net), _reads(net))
    _flows_with(monkeypatch, False, Run(0, [], {}, ops=10, changed=1))
    flows.deploy(str(net.path))
    assert not unchanged.witness_path(net.path).exists()


def test_the_clocks_decisions_hold_until_the_first_certificate_is_due():
    """tls.py decides from a host's clock whether a certificate is expired (at its end) or due
    anew (RENEW_BEFORE_DAYS before): the bound is the earliest of those for every certificate
    read, and a hub with none reads a clock that decides nothing."""
    from backhaul import tls

    day = 86400
    state = {"now": 0, "certs": {"/a": {"not_after": 90 * day}, "/b": {"not_after": 365 * day}}}
    assert tls.clock_bound(state) == (90 - tls.RENEW_BEFORE_DAYS) * day
    assert tls.clock_bound({"now": 0, "certs": {}}) == tls.NEVER
    assert tls.clock_bound({"now": 0, "certs": {"/c": {"not_after": None}}}) == 0
