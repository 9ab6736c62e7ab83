"""Preshared keys: the host-side awk programs run for real (mawk, as on Debian), the pair
decisions of backhaul.plan, and the copy's stdin (the key is read only when it is written)."""

from __future__ import annotations

import hashlib
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from pyinfra.context import ctx_host, ctx_state
from pyinfra_harness import FakeHost, FakeState, run_operation

from backhaul import plan, wgcommands, wgconf
from backhaul.facts import wireguard as facts
from backhaul.network import load
from backhaul.operations import wireguard as ops

AWK = shutil.which("mawk") or shutil.which("awk")
KEY = "cGFpcnMgb2Yga2V5cyBub3QgdXNlZCBhbnl3aGVyZSE="  # fixture values, not keys in use
PSK1 = "b25lIHByZXNoYXJlZCBrZXkgZm9yIHRoZSB0ZXN0cyE="
PSK2 = "YW5vdGhlciBwcmVzaGFyZWQga2V5IGZvciB0ZXN0cyE="


def _sh(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", command.replace("awk ", f"{AWK} ")], capture_output=True, text=True)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {"key": tmp_path / "wg0.key", "psk1": tmp_path / "b1.psk", "psk2": tmp_path / "b2.psk"}
    paths["key"].write_text(KEY + "\n")
    paths["psk1"].write_text(PSK1 + "\n")
    paths["psk2"].write_text(PSK2 + "\n")
    src = (
        "[Interface]\nAddress = 10.50.0.1/24\n\n[Peer]\nPublicKey = A=\nAllowedIPs = 10.50.0.2/32\n"
        f"PresharedKeyFile = {paths['psk1']}\n\n[Peer]\nPublicKey = B=\n"
        f"AllowedIPs = 10.50.0.3/32, 10.60.0.0/24\nPresharedKeyFile = {paths['psk2']}\n\n"
        "[Peer]\nPublicKey = C=\nAllowedIPs = 10.50.0.4/32\n"
    )
    paths["src"] = tmp_path / "upload"
    paths["src"].write_text(src)
    paths["conf"] = tmp_path / "wg0.conf"
    return paths


def _embed(files, src: Path) -> subprocess.CompletedProcess:
    return _sh(wgcommands.embed_key_command(str(src), str(files["key"]), str(files["conf"])))


def _source_sha(conf: Path) -> str:
    out = _sh(f"awk {shlex.quote(wgconf.AWK_SOURCE)} {shlex.quote(str(conf))} | sha256sum")
    return out.stdout.split()[0]


def test_the_keys_are_embedded_on_the_host_and_the_hash_is_the_uploads(files):
    assert _embed(files, files["src"]).returncode == 0
    conf = files["conf"].read_text()
    assert conf.count(f"PrivateKey = {KEY}\n") == 1
    assert f"# PresharedKeyFile = {files['psk1']}\nPresharedKey = {PSK1}\n" in conf
    assert f"# PresharedKeyFile = {files['psk2']}\nPresharedKey = {PSK2}\n" in conf
    assert conf.count("PresharedKey =") == 2  # the third peer has none
    assert _source_sha(files["conf"]) == hashlib.sha256(files["src"].read_bytes()).hexdigest()


def test_embedding_its_own_output_again_changes_nothing(files):
    """What a key rotation does (conf -> conf): same keys, same bytes."""
    _embed(files, files["src"])
    first = files["conf"].read_text()
    copy = files["conf"].with_name("copy")
    copy.write_text(first)
    assert _embed(files, copy).returncode == 0
    assert files["conf"].read_text() == first


def test_a_new_key_in_the_file_is_picked_up_by_re_embedding(files):
    _embed(files, files["src"])
    files["psk1"].write_text(PSK2 + "\n")
    copy = files["conf"].with_name("copy")
    copy.write_text(files["conf"].read_text())
    _embed(files, copy)
    assert PSK1 not in files["conf"].read_text()
    assert files["conf"].read_text().count(f"PresharedKey = {PSK2}") == 2


@pytest.mark.parametrize(
    "edit", ["stale file", "key line removed", "key line edited", "inline key added", "file gone"]
)
def test_a_conf_whose_embedded_key_is_not_its_files_hashes_differently(files, edit):
    _embed(files, files["src"])
    want = hashlib.sha256(files["src"].read_bytes()).hexdigest()
    conf = files["conf"].read_text()
    if edit == "stale file":
        files["psk1"].write_text(PSK2 + "\n")
    elif edit == "key line removed":
        files["conf"].write_text(conf.replace(f"PresharedKey = {PSK1}\n", ""))
    elif edit == "key line edited":
        files["conf"].write_text(conf.replace(f"PresharedKey = {PSK1}", f"PresharedKey = {PSK2}"))
    elif edit == "inline key added":
        files["conf"].write_text(conf.replace("PublicKey = C=\n", f"PublicKey = C=\nPresharedKey = {PSK1}\n"))
    else:
        files["psk2"].unlink()
    assert _source_sha(files["conf"]) != want


def test_a_missing_preshared_key_file_fails_the_embedding_and_writes_nothing(files):
    files["psk2"].unlink()
    proc = _embed(files, files["src"])
    assert proc.returncode == 4 and "cannot read the preshared key" in proc.stderr
    assert PSK1 not in proc.stdout + proc.stderr
    assert not files["conf"].exists()


def test_without_preshared_keys_the_hash_is_what_it_always_was(files):
    """No churn on upgrade: the old fact hashed the conf minus its PrivateKey line (grep)."""
    files["src"].write_text("[Interface]\nAddress = 10.50.0.1/24\n\n[Peer]\nPublicKey = A=\n")
    _embed(files, files["src"])
    old = _sh(
        f"grep -v -i -E '^[[:space:]]*privatekey[[:space:]]*=' {files['conf']} | sha256sum"
    ).stdout.split()[0]
    assert _source_sha(files["conf"]) == old


def test_the_conf_peers_fact_names_the_files_never_the_keys(files):
    _embed(files, files["src"])
    out = _sh(f"awk {shlex.quote(wgconf.AWK_PSK_PEERS)} {files['conf']}").stdout
    assert PSK1 not in out and PSK2 not in out
    got = facts.WireguardPresharedKeys().process(out.splitlines())["in_conf"]
    assert got == {
        "10.50.0.2/32": str(files["psk1"]),
        "10.50.0.3/32": str(files["psk2"]),
        "10.60.0.0/24": str(files["psk2"]),
    }


def test_the_files_fact_shows_hashes_and_validity_only(tmp_path):
    d = tmp_path / "psk"
    d.mkdir()
    (d / "backend-1.psk").write_text(PSK1 + "\n")
    (d / "hub.psk").write_text("not a key\n")
    command = facts.WireguardPresharedKeys().command().replace(facts.PSK_DIR, str(d))
    out = _sh(command).stdout
    assert PSK1 not in out
    got = facts.WireguardPresharedKeys().process(out.splitlines())
    assert got["dir"] and got["in_conf"] == {}
    assert got["files"]["backend-1"] == {
        "sha256": hashlib.sha256((PSK1 + "\n").encode()).hexdigest(),
        "valid": True,
    }
    assert got["files"]["hub"]["valid"] is False


def test_write_psk_command_takes_the_key_from_stdin_and_refuses_junk(tmp_path):
    target = tmp_path / "psk" / "hub.psk"
    command = wgcommands.write_psk_command(str(target)).replace(facts.PSK_DIR, str(tmp_path / "psk"))
    assert PSK1 not in command
    ok = subprocess.run(["sh", "-c", command], input=PSK1 + "\n", capture_output=True, text=True)
    assert ok.returncode == 0 and target.read_text() == PSK1 + "\n"
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert oct(target.parent.stat().st_mode & 0o777) == "0o700"
    bad = subprocess.run(["sh", "-c", command], input="", capture_output=True, text=True)
    assert bad.returncode == 1 and target.read_text() == PSK1 + "\n"


# -- the copy reads the key only when it writes it -------------------------------------------


def _copy_facts(sha: str | None) -> dict:
    files = {"hub": {"sha256": sha, "valid": True}} if sha else {}
    return {"wireguard.WireguardPresharedKeys": {"dir": bool(sha), "files": files, "in_conf": {}}}


def test_the_copy_reads_the_key_when_the_command_runs_not_before():
    reads = []

    def read() -> str:
        reads.append(1)
        return PSK1

    host = FakeHost(_copy_facts("0" * 64))
    with ctx_state.use(FakeState()), ctx_host.use(host):
        commands = list(ops.preshared_key_copy._inner(psk_name="hub", sha256=lambda: "1" * 64, content=read))
    assert len(commands) == 1 and reads == []  # generated (what a dry run does): nothing read
    stdin = commands[0].connector_arguments["_stdin"]
    assert PSK1 not in repr(commands[0]) and PSK1 not in str(commands[0])
    assert stdin.readlines() == [PSK1 + "\n"] and reads == [1]


def test_the_copy_does_nothing_when_the_hashes_match():
    host = FakeHost(_copy_facts("1" * 64))
    assert (
        run_operation(
            ops.preshared_key_copy, host, [], {"psk_name": "hub", "sha256": "1" * 64, "content": PSK1}
        )
        == []
    )


# -- which pairs use their key (both ends must agree) ------------------------------------------


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    path = tmp_path_factory.mktemp("net") / "network.yml"
    path.write_text(
        "network: {subnet: 10.50.0.0/24, preshared_keys: true}\n"
        "proxy: {name: proxy, public_ip: 203.0.113.10}\n"
        "backends:\n  - {name: backend-1, public_ip: 203.0.113.21, wg_ip: 10.50.0.2}\n"
        "tls: {mode: self-signed}\n"
    )
    return load(path)


def _off(net):
    from dataclasses import replace

    return replace(net, preshared_keys=False)


@pytest.mark.parametrize(
    "hub, backend, in_run, on, want",
    [
        (plan.PskEnd("a", False), plan.PskEnd("a", False), True, True, True),  # turned on: lead
        (plan.PskEnd("a", False), plan.PskEnd(None, False), True, True, False),  # copy not there
        (plan.PskEnd("a", False), plan.PskEnd("b", False), True, True, False),  # not the same key
        (plan.PskEnd("a", True), plan.PskEnd("a", True), True, False, False),  # turned off: lead
        (plan.PskEnd("a", False), plan.PskEnd("a", False), False, True, False),  # --limit hub: match
        (plan.PskEnd("a", True), plan.PskEnd("a", True), False, False, True),  # --limit hub, off
        (plan.PskEnd("a", True), None, True, False, True),  # unreachable: keep
        (plan.PskEnd("a", False), None, True, True, False),  # unreachable: keep
        (plan.PskEnd(None, True), plan.PskEnd("a", True), True, True, False),  # nothing to embed
    ],
)
def test_the_hub_leads_only_for_backends_in_the_run(net, hub, backend, in_run, on, want):
    assert plan.hub_uses_psk(net if on else _off(net), hub, backend, in_run) is want


@pytest.mark.parametrize(
    "backend, hub_in_conf, want",
    [
        (plan.PskEnd("a", False), True, True),
        (plan.PskEnd("a", True), False, False),
        (plan.PskEnd("a", True), None, True),  # hub unreachable: keep
        (plan.PskEnd(None, True), True, False),  # no usable copy: cannot embed
    ],
)
def test_a_backend_follows_the_hubs_conf(backend, hub_in_conf, want):
    assert plan.backend_uses_psk(backend, hub_in_conf) is want


def test_peers_carry_the_file_never_a_key(net):
    psk = {"backend-1": "/etc/wireguard/psk/backend-1.psk"}
    peers, _ = plan.hub_peers(net, {"backend-1": "Pk="}, psk_files=psk)
    assert peers[0].psk_file == "/etc/wireguard/psk/backend-1.psk"
    assert plan.backend_hub_peer(net, "Hub=", "/etc/wireguard/psk/hub.psk").psk_file.endswith("hub.psk")
    assert plan.backend_hub_peer(net, "Hub=").psk_file is None


# -- rotation commands -------------------------------------------------------------------------


def test_a_re_made_peer_keeps_the_live_preshared_key_of_the_one_it_replaces():
    cmd = wgcommands.set_peer_command("wg0", "New=", ["10.50.0.2/32"], remove="Old=", keep_psk=True)
    assert "wg show wg0 preshared-keys" in cmd and "preshared-key /etc/wireguard/.wg0.psk.carry" in cmd
    assert cmd.index("peer Old= remove") < cmd.index("peer New= allowed-ips")
    assert "rm -f /etc/wireguard/.wg0.psk.carry" in cmd
    plain = wgcommands.set_peer_command("wg0", "New=", ["10.50.0.2/32"], remove="Old=")
    # one `wg set`: a failure leaves the old peer, never no peer at all
    assert plain == "wg set wg0 peer Old= remove peer New= allowed-ips 10.50.0.2/32"
    assert cmd.count("wg set ") == 1


def test_activation_switches_key_and_preshared_key_in_one_wg_set():
    cmd = wgcommands.activate_key_command("wg0", psk=("Hub=", "/etc/wireguard/psk/hub.psk"))
    assert (
        "wg set wg0 private-key /etc/wireguard/wg0.key.next peer Hub= "
        "preshared-key /etc/wireguard/psk/hub.psk"
    ) in cmd
    # the staged preshared key is swapped in before the conf is re-embedded from it
    assert cmd.index("mv -f /etc/wireguard/psk/hub.psk.next") < cmd.index("awk ")


def test_activation_makes_the_new_key_the_key_file_last():
    """Cut short at any step, the key file still holds the key a deploy puts back everywhere."""
    cmd = wgcommands.activate_key_command("wg0")
    embed = cmd.index("keyfile=/etc/wireguard/wg0.key.next")
    live = cmd.index("wg set wg0 private-key /etc/wireguard/wg0.key.next")
    commit = cmd.index("mv -f /etc/wireguard/wg0.key.next /etc/wireguard/wg0.key")
    assert embed < live < commit
    assert cmd.index("/etc/wireguard/wg0.pub.next /etc/wireguard/wg0.pub") > commit
