"""A no-op ``inv deploy`` in one SSH round: each host's last reads, read again, without pyinfra.

A deploy is a function of its inputs (the network file, backhaul's own code and state files,
the day for clients' expiry) and of what it reads on the hosts. A full deploy that changed
nothing proves that hosts reading what they read then need nothing. So after such a run the
task keeps, beside the network file, what every host was asked and a digest of each answer
(``backhaul/readlog.py``: commands and digests, never an output). The next ``inv deploy`` with the
same inputs asks every host the same again, all hosts at once over plain OpenSSH: when each
answers the same, pyinfra would read the same and change nothing, so it is not started. Any
difference (a host changed by hand or by a flow, a rule gone, a service stopped, a clock past a
certificate's renewal time, new inputs, a host that does not answer) runs the whole deploy, as
before. ``inv deploy --full`` always does.

The record is kept only after a complete run of every host (no ``--limit``, no failure, nothing
pending, one pyinfra run) that changed nothing; any other run removes it.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from backhaul import readlog, sshpath
from backhaul.network import Host, Network

ROOT = Path(__file__).resolve().parent.parent
# what the deploy runs: changed code is new input (the lab's own code is not the deploy's)
CODE = ("backhaul", "deploys", "templates", "group_data", "inventory.py")
MARK = "@@backhaul-read"
CONNECT_TIMEOUT = 5  # seconds: a host slower than that gets the whole deploy, which waits longer


def witness_path(network_file: str | os.PathLike[str]) -> Path:
    real = Path(os.path.realpath(network_file))
    return real.with_name(f".{real.name}.unchanged.json")


def forget(network_file: str | os.PathLike[str]) -> None:
    witness_path(network_file).unlink(missing_ok=True)


# -- the inputs ----------------------------------------------------------------------------------
def _files(paths: Iterable[Path]) -> Iterable[Path]:
    for p in paths:
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
        elif p.is_file():
            yield p


def inputs(network_file: str | os.PathLike[str], net: Network) -> str:
    """Everything a deploy reads on the controller, as ``<given>.<state>``: two digests, of
    what the operator gives (the file, the code, ...) and of backhaul's own state beside the
    file (the facts record, the via-hub memo: a run may rewrite them)."""
    from backhaul import plan

    h, state = hashlib.sha256(), hashlib.sha256()

    def add(label: str, data: bytes, into=h) -> None:
        into.update(f"{label}\0{len(data)}\0".encode())
        into.update(data)

    real = Path(os.path.realpath(network_file))
    add("network", real.read_bytes())
    if net.tls.verify_ca_bundle:
        add("ca bundle", Path(net.tls.verify_ca_bundle).read_bytes())
    own = {witness_path(real).name, f".{real.name}.lock"}
    for f in sorted(real.parent.glob(f".{real.name}.*")):
        if f.name not in own and f.is_file():
            add(f.name, f.read_bytes(), into=state)
    for f in _files(ROOT / c for c in CODE):
        if f.relative_to(ROOT).parts[:2] != ("backhaul", "lab"):
            add(f"code {f.relative_to(ROOT)}", f.read_bytes())
    add("versions", f"{sys.version} pyinfra {metadata.version('pyinfra')}".encode())
    add(
        "env", json.dumps(sorted((k, v) for k, v in os.environ.items() if k.startswith("BACKHAUL_"))).encode()
    )
    if net.clients:  # the hub's peers are the clients not expired today (UTC)
        today = datetime.datetime.now(datetime.UTC).date()
        add("clients", " ".join(c.name for c in plan.active_clients(net, today)).encode())
    return f"{h.hexdigest()}.{state.hexdigest()}"


# -- the record ----------------------------------------------------------------------------------
def keep(network_file: str | os.PathLike[str], net: Network, before: str, reads: dict) -> bool:
    """Keep what a complete no-op run read on every host, with the inputs as the run left
    them (``before``: as it began). False, and nothing kept, when some host's reads cannot
    be asked again or what the operator gives changed during the run.

    (The run's own state may be new: the facts record says how the next run bundles its reads,
    not what it reads; the via-hub memo only says that the hub was used, which it was.)"""
    after = inputs(network_file, net)
    if after.split(".")[0] != before.split(".")[0]:
        forget(network_file)
        return False
    hosts = {}
    for host in net.hosts:
        got = reads.get(host.name)
        if not got or not got["commands"] or got["unreadable"]:
            forget(network_file)
            return False
        until = got["until"]
        hosts[host.name] = {
            "until": until,
            # the clock is left out only where a decision said until when it holds
            "commands": [
                {"command": c["command"], "ok": c["ok"], "digest": c["steady"] if until else c["raw"]}
                for c in got["commands"]
            ],
        }
    path = witness_path(network_file)
    fd, tmp = tempfile.mkstemp(prefix=path.name, dir=path.parent)  # 0600
    with os.fdopen(fd, "w") as f:
        json.dump({"inputs": after, "hosts": hosts}, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
    return True


# -- asking again ----------------------------------------------------------------------------------
@dataclass
class Verdict:
    holds: bool
    why: str  # when it does not: which host or input differs (empty: there was no record)
    seconds: float = 0.0


def check(network_file: str | os.PathLike[str], net: Network, digest: str) -> Verdict:
    """Do the hosts read now what the last no-op deploy read (and the inputs match)?"""
    started = time.monotonic()
    try:
        saved = json.loads(witness_path(network_file).read_text())
    except (OSError, ValueError):
        return Verdict(False, "")
    if saved.get("inputs") != digest:
        return Verdict(False, "the network file, backhaul or its state changed since the last deploy")
    if set(saved.get("hosts", {})) != {h.name for h in net.hosts}:
        return Verdict(False, "the hosts changed since the last deploy")
    with _Ssh(net) as ssh:
        with ThreadPoolExecutor(max_workers=64) as pool:
            answers = dict(
                zip(
                    [h.name for h in net.hosts],
                    pool.map(lambda h: _differs(ssh, h, saved["hosts"][h.name]), net.hosts),
                    strict=True,
                )
            )
    differing = [f"{n} {why}" for n, why in answers.items() if why]
    if differing:
        return Verdict(False, "; ".join(differing), time.monotonic() - started)
    return Verdict(True, "", time.monotonic() - started)


def _differs(ssh: _Ssh, host: Host, saved: dict) -> str:
    """Why ``host`` does not read as saved, or "" when it does."""
    commands = saved["commands"]
    script = "\n".join(f"{c['command']}\nprintf '\\n{MARK} %s\\n' \"$?\"" for c in commands)
    try:
        proc = ssh.run(host, script)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"could not be read ({e})"
    if proc.returncode == 255:
        return f"could not be read ({proc.stderr.strip().splitlines()[-1:] or 'ssh failed'})"
    outputs, lines = [], []
    for line in readlog.lines_of(proc.stdout):
        if line.startswith(MARK + " "):
            if lines and lines[-1] == "":  # the newline printed before the mark
                lines.pop()
            outputs.append((lines, line.split(" ", 1)[1] == "0"))
            lines = []
        else:
            lines.append(line)
    if len(outputs) != len(commands):
        return "did not answer every read"
    until = saved.get("until")
    for c, (out, ok) in zip(commands, outputs, strict=True):
        raw, steady, clocks = readlog.digests(out)
        if ok != c["ok"] or c["digest"] != (steady if until else raw):
            return "reads differently from the last deploy"
        if until and any(clock >= until for clock in clocks):
            return "has reached the time a certificate is renewed"
    return ""


class _Ssh:
    """OpenSSH to every host as the deploy reaches it: the public address, or the tunnel
    address through one shared connection to a hub (``ssh.via: hub``, as backhaul/hubjump.py
    does for pyinfra)."""

    def __init__(self, net: Network):
        self.net = net
        self.dir = tempfile.mkdtemp(prefix="backhaul-read-")
        self.master = os.path.join(self.dir, "hub")
        self.hub: Host | None = None
        self.hub_tried = False
        self.hub_lock = threading.Lock()  # the first backend to jump connects, the rest wait

    def __enter__(self) -> _Ssh:
        return self

    def __exit__(self, *exc) -> None:
        if self.hub is not None:  # the shared connection ends (else ControlPersist ends it)
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(
                    [
                        *self._base(self.hub),
                        "-o",
                        f"ControlPath={self.master}",
                        "-O",
                        "exit",
                        self.hub.ssh_host,
                    ],
                    capture_output=True,
                    timeout=10,
                )
        for f in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, f))
        os.rmdir(self.dir)

    def _base(self, host: Host, timeout: int = CONNECT_TIMEOUT) -> list[str]:
        net = self.net
        args = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={timeout}"]
        args += ["-o", "StrictHostKeyChecking=yes", "-p", str(net.ssh.port), "-l", net.ssh.user]
        # the key exchange pyinfra's SSH (paramiko) makes, first: OpenSSH's default, a
        # post-quantum hybrid, costs ~0.14 s of CPU per connection at each end, 7x the rest of
        # a connection (a server that does not offer it gets the next of the default list)
        args += ["-o", "KexAlgorithms=^curve25519-sha256"]
        if net.ssh.known_hosts:
            args += ["-o", f"UserKnownHostsFile={net.ssh.known_hosts}"]
        if net.ssh.key:
            args += ["-i", str(net.ssh.key)]
        return args

    def _through_hub(self) -> Host:
        """The first hub (file order) that answers, connected once for every jump of the run."""
        with self.hub_lock:
            if not self.hub_tried:
                self.hub_tried = True
                self.hub = self._connect_a_hub()
        if self.hub is None:
            raise OSError("no hub answered SSH for the jump")
        return self.hub

    def _connect_a_hub(self) -> Host | None:
        for n, hub in enumerate(self.net.hubs):
            timeout = CONNECT_TIMEOUT if n == len(self.net.hubs) - 1 else 4  # as hubjump's failover
            master = [
                "-o",
                "ControlMaster=yes",
                "-o",
                f"ControlPath={self.master}",
                "-o",
                "ControlPersist=60",
            ]
            master += ["-fN", hub.ssh_host]
            # (-f: the master stays behind, holding what it was given as stdout and stderr)
            code = subprocess.call(
                [*self._base(hub, timeout), *master],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if code == 0:
                return hub
        return None

    def run(self, host: Host, script: str) -> subprocess.CompletedProcess:
        args = self._base(host)
        address = host.ssh_host
        if sshpath.via_hub(host):
            hub = self._through_hub()
            jump = [*self._base(hub), "-o", f"ControlPath={self.master}", "-W", "%h:%p", hub.ssh_host]
            args += ["-o", f"ProxyCommand={shlex.join(jump)}"]
            address = str(host.wg_ip)
        return subprocess.run(
            [*args, address, script], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60
        )
