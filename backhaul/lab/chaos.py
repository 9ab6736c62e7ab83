"""`inv lab.chaos`: flows cut at random points by random faults, each healed by one deploy.

For each of N faults, drawn from one seeded random generator (the same seed replays the same
flows, points and faults): a flow runs as an operator would run it (`inv deploy` with a change
on a host, `add-backend` / `remove-backend` of the lab's spare, `rotate-keys` of a backend or
the hub); when its output reaches a random line, a fault strikes (the controller killed, a
host's SSH cut, a host rebooted; or, for the rest of the flow, a host frozen (thawed after
30 s), its link lossy or slow, its clock 10 minutes off, the hub's disk full); whatever is left
of the flow ends; the lasting faults end with it; one `inv deploy` heals; then the invariants
are checked (see :func:`_broken`). Pings run from the hub over every tunnel the flow and the
fault do not touch, for the whole of it: not one may be lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from backhaul import lock
from backhaul import network as netmod
from backhaul.errors import BackhaulError, LabError
from backhaul.lab import faults, guard
from backhaul.lab.layout import Lab
from backhaul.lab.pinger import Pinger

FLOWS = ("deploy", "add-backend", "remove-backend", "rotate-backend", "rotate-hub")
FAULTS = (
    "SIGKILL",
    "SIGTERM",
    "SIGINT",
    "ssh-cut",
    "reboot",
    "freeze",
    "loss",
    "delay",
    "disk-full",
    "clock",
)
# faults that last from their strike to the flow's end (frozen: at most FREEZE_SECONDS), then
# are undone before the healing deploy: a flow that ended first meets none of them
LASTING = ("freeze", "loss", "delay", "disk-full", "clock")
# faults on a host that leave its tunnels alone: pings over the victim's tunnels go on
TUNNELS_KEPT = ("disk-full", "clock")
FREEZE_SECONDS = 30.0
LOSS = 0.1  # of the packets in each direction on the victim's link
DELAY_MS = 200.0  # on each packet leaving the victim's link
SKEW_SECONDS = 600  # ahead or behind, drawn
# a point is "when the flow printed line k", k in 1..MAX_LINE; a flow that ends before has its
# host fault strike after its end (a controller's fault then has nothing left to cut)
MAX_LINE = 80
FLOW_TIMEOUT = 300.0
HEALTHY_WITHIN = 60.0  # handshakes after a restart: 15-25 s (LAB.md), verify may take more


@dataclass
class Fault:
    """One drawn cut: which flow, at which line, which fault, on which host."""

    flow: str
    target: str | None  # the flow's host (a backend, the spare, or the hub), None for none
    line: int
    fault: str
    victim: str  # the host the fault strikes (for the controller's faults: the flow's target)
    skew: int = 0  # the clock's: seconds ahead (behind if negative)

    @property
    def label(self) -> str:
        return f"clock{self.skew // 60:+d}m" if self.fault == "clock" else self.fault


@dataclass
class Outcome:
    fault: Fault
    cut_at: str = ""  # "line k", or "after the end (n lines)"
    healed: bool = False
    lost: str = "-"  # lost/sent pings on the untouched tunnels
    broken: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Chaos:
    def __init__(self, lab: Lab, seed: int, say=print, freeze_seconds: float = FREEZE_SECONDS):
        self.lab, self.seed, self.say = lab, seed, say
        self.freeze_seconds = freeze_seconds
        self.rng = random.Random(seed)
        self.files = lab.files_dir
        self.network = self.files / "network.yml"
        self.ssh_config = self.files / "ssh_config"
        self.hub = next(h.name for h in lab.hosts if h.role == "hub")
        self._boot_before: str | None = None
        # the flows' own temp folder: what they leave there is theirs (the machine's /tmp is
        # shared with other runs)
        self.temp = Path(tempfile.mkdtemp(prefix=f"backhaul-chaos-{lab.name}-"))
        self.env = dict(os.environ, BACKHAUL_NETWORK=str(self.network), TMPDIR=str(self.temp))
        self.spare = next((h for h in lab.hosts if h.role == "spare"), None)

    # --- the network file as it is now ----------------------------------------------------
    def _backends(self) -> dict[str, str]:
        doc = yaml.safe_load(self.network.read_text())
        return {b["name"]: str(b.get("wg_ip")) for b in doc.get("backends") or []}

    # --- drawing ------------------------------------------------------------------------------
    def draw(self) -> Fault:
        backends = self._backends()
        spare_in = self.spare is not None and self.spare.name in backends
        flows = [f for f in FLOWS if self.spare is not None or f not in ("add-backend", "remove-backend")]
        flows = [f for f in flows if f != ("remove-backend" if not spare_in else "add-backend")]
        flow = self.rng.choice(flows)
        steady = sorted(n for n in backends if self.spare is None or n != self.spare.name)
        target = {
            "deploy": self.rng.choice([self.hub, *steady]),
            "add-backend": self.spare.name if self.spare else None,
            "remove-backend": self.spare.name if self.spare else None,
            "rotate-backend": self.rng.choice(steady),
            "rotate-hub": self.hub,
        }[flow]
        line = self.rng.randint(1, MAX_LINE)
        fault = self.rng.choice(FAULTS)
        # a host fault strikes the flow's host or the hub (the two every flow talks to); the
        # disk that fills is the hub's (its files are the ones every flow rewrites)
        if fault.startswith("SIG"):
            victim = target
        elif fault == "disk-full":
            victim = self.hub
        else:
            victim = self.rng.choice(sorted({target, self.hub}))
        skew = self.rng.choice((-SKEW_SECONDS, SKEW_SECONDS)) if fault == "clock" else 0
        return Fault(flow, target, line, fault, victim, skew)

    # --- running one --------------------------------------------------------------------------
    def _inv(self, *args: str, capture: bool = True, **kw) -> subprocess.CompletedProcess:
        guard.require_ssh(self.ssh_config, self.hub)
        return subprocess.run(
            [sys.executable, "-m", "invoke", *args],
            cwd=self.lab.project_dir,
            env=self.env,
            capture_output=capture,
            text=True,
            timeout=900,
            **kw,
        )

    def _ssh(self, host: str, command: str) -> subprocess.CompletedProcess:
        guard.require_ssh(self.ssh_config, host)
        return subprocess.run(
            ["ssh", "-F", str(self.ssh_config), host, command], capture_output=True, text=True, timeout=60
        )

    def _flow_args(self, f: Fault) -> list[str]:
        if f.flow == "deploy":
            # the change the deploy has to make: a line the conf must not have
            self._ssh(f.target, "echo '# chaos' >> /etc/wireguard/wg0.conf")
            return ["deploy"]
        if f.flow == "add-backend":
            return ["add-backend", "--host", str(self.spare.ip)]
        if f.flow == "remove-backend":
            return ["remove-backend", "--name", self.spare.name]
        return ["rotate-keys", "--host", f.target]

    def run_one(self, index: int, f: Fault) -> Outcome:
        t0 = time.monotonic()
        out = Outcome(f)
        before_files = _stray_candidates(self.lab, self.temp)
        names_before = set(self._backends())
        touched = {f.target} if f.fault in TUNNELS_KEPT else {f.target, f.victim}
        untouched = [] if self.hub in touched else sorted(set(self._backends()) - touched)
        wg = self._backends()
        pingers = {n: Pinger(self.ssh_config, self.hub, wg[n]).start() for n in untouched}
        with contextlib.ExitStack() as lasting:  # undone when the flow ended, whatever it did
            proc = subprocess.Popen(
                [sys.executable, "-m", "invoke", *self._flow_args(f)],
                cwd=self.lab.project_dir,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,  # its own group: the controller's faults reach inv and pyinfra
            )
            lines, struck = 0, False
            try:
                for _ in proc.stdout:
                    lines += 1
                    if lines == f.line:
                        self._strike(f, proc, lasting)
                        struck = True
                        break
            finally:
                _drain_and_end(proc)
        out.cut_at = f"line {f.line}" if struck else f"end ({lines} lines)"
        if not struck and f.fault in ("ssh-cut", "reboot"):
            self._strike(f, proc)  # the flow ended first: the host's fault comes after it
            struck = True
        if struck:
            self._recover(f)
        healing = self._inv("deploy")
        out.healed = healing.returncode == 0
        if not out.healed:
            out.broken.append(
                f"the healing deploy failed (exit {healing.returncode}): {healing.stderr[-600:]}"
            )
        out.broken += self._broken(f, names_before, before_files)
        if pingers:
            results = {n: p.stop() for n, p in pingers.items()}
            lost, sent = sum(r.lost for r in results.values()), sum(r.sent for r in results.values())
            out.lost = f"{lost}/{sent}"
            if lost:
                out.broken.append(
                    "pings lost on untouched tunnels: "
                    + ", ".join(
                        f"{n} {r.lost} (seqs {r.lost_seqs[:8]})" for n, r in results.items() if r.lost
                    )
                )
        out.seconds = time.monotonic() - t0
        return out

    def _strike(self, f: Fault, proc: subprocess.Popen, lasting: contextlib.ExitStack | None = None) -> None:
        if f.fault in LASTING:
            lasting.enter_context(self._lasting(f))
        elif f.fault.startswith("SIG"):
            os.killpg(proc.pid, getattr(signal, f.fault))
        elif f.fault == "ssh-cut":
            faults.stop_ssh(self.lab, f.victim)
        elif f.fault == "reboot":
            self._boot_before = faults.boot_id(self.lab, f.victim)
            faults.console(self.lab, f.victim, "systemctl reboot")

    def _lasting(self, f: Fault) -> contextlib.AbstractContextManager:
        """The fault's unit, undone when the flow has ended."""
        lab, host = self.lab, f.victim
        return {
            "freeze": lambda: faults.host_frozen(lab, host, seconds=self.freeze_seconds),
            "loss": lambda: faults.link_lossy(lab, host, LOSS),
            "delay": lambda: faults.link_delayed(lab, host, DELAY_MS),
            "disk-full": lambda: faults.disk_full(lab, host),
            "clock": lambda: faults.clock_off(lab, host, f.skew),
        }[f.fault]()

    def _recover(self, f: Fault) -> None:
        """What the operator's world does after the fault: sshd comes back, a rebooted host
        finishes booting (the faults are over before the healing deploy)."""
        if f.fault == "ssh-cut":
            faults.start_ssh(self.lab, f.victim)
        elif f.fault == "reboot":
            faults.wait_booted(self.lab, f.victim, self._boot_before)

    # --- the invariants -------------------------------------------------------------------
    def _broken(self, f: Fault, names_before: set[str], before_files: set[str]) -> list[str]:
        broken: list[str] = []
        try:
            net = netmod.load(str(self.network))
        except BackhaulError as e:
            return [f"the network file does not parse: {e}"]
        names = {b.name for b in net.backends}
        may_go = {self.spare.name} if f.flow == "remove-backend" and self.spare else set()
        if names_before - may_go - names:
            broken.append(f"the network file lost {sorted(names_before - may_go - names)}")
        report = self._healthy()
        if not report.get("ok"):
            bad = [f"{c['host']} {c['check']} {c['status']}" for c in report.get("checks", [])]
            broken.append(
                "inv verify is not green: " + ", ".join(b for b in bad if not b.endswith(" ok"))[:600]
            )
        for h in net.hosts:
            broken += self._keys_agree(h.name, net.interface)
        try:
            with lock.network_lock(self.network, wait=0):
                pass
        except BackhaulError as e:
            broken.append(f"the lock is not free: {e}")
        stray = _stray_candidates(self.lab, self.temp) - before_files
        if stray:
            broken.append(f"files left by the run: {sorted(stray)}")
        return broken

    def _healthy(self) -> dict:
        deadline = time.monotonic() + HEALTHY_WITHIN
        while True:
            proc = self._inv("verify", "--json")
            try:
                report = json.loads(proc.stdout)
            except ValueError:
                report = {"ok": False, "checks": []}
            if report.get("ok") or time.monotonic() > deadline:
                return report
            time.sleep(2)

    def _keys_agree(self, host: str, iface: str) -> list[str]:
        """The public keys of the key file, the conf's PrivateKey and the live interface (each
        derived on the host: no private key leaves it), and no staged key left."""
        d = "/etc/wireguard"
        cmd = (
            f"wg pubkey < {d}/{iface}.key; "
            f"sed -n 's/^PrivateKey *= *//p' {d}/{iface}.conf | wg pubkey; "
            f"wg show {iface} public-key; "
            f"ls {d}/{iface}.key.next {d}/{iface}.pub.next 2>/dev/null; true"
        )
        lines = self._ssh(host, cmd).stdout.split()
        keys, staged = lines[:3], lines[3:]
        broken = []
        if len(keys) < 3 or len(set(keys)) != 1:
            broken.append(
                f"{host}: key file, conf and interface disagree ({len(set(keys))} keys of {len(keys)})"
            )
        if staged:
            broken.append(f"{host}: staged key left: {' '.join(staged)}")
        return broken

    # --- the whole run ----------------------------------------------------------------------
    def run(self, count: int) -> list[Outcome]:
        self.say(f"chaos on lab {self.lab.name}: {count} faults, seed {self.seed}")
        self.say(
            f"{'#':>3}  {'flow':<15} {'target':<10} {'point':<16} {'fault':<9} {'on':<10} healed  lost     s"
        )
        done: list[Outcome] = []
        for i in range(1, count + 1):
            f = self.draw()
            o = self.run_one(i, f)
            done.append(o)
            self.say(
                f"{i:>3}  {f.flow:<15} {f.target or '-':<10} {o.cut_at:<16} {f.label:<9} {f.victim:<10} "
                f"{'yes' if o.healed else 'NO':<7} {o.lost:<8} {o.seconds:4.0f}"
            )
            if o.broken:
                raise LabError(
                    f"fault {i} of seed {self.seed} ({f.flow} of {f.target}, cut at {o.cut_at} by "
                    f"{f.label} on {f.victim}) broke:\n  "
                    + "\n  ".join(o.broken)
                    + f"\nreplay: inv lab.chaos --name {self.lab.name} --faults {i} --seed {self.seed}"
                )
        total = sum(o.seconds for o in done)
        self.say(f"all {count} faults healed with one deploy each, every invariant held ({total:.0f} s)")
        return done

    def close(self) -> None:
        shutil.rmtree(self.temp, ignore_errors=True)


def _drain_and_end(proc: subprocess.Popen) -> None:
    """Let what is left of the flow run out (its output read and dropped), within a bound;
    then no process of its group may remain (a killed inv's pyinfra holds the lock)."""
    deadline = time.monotonic() + FLOW_TIMEOUT
    try:
        proc.communicate(timeout=FLOW_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)


# beside the network file, what is state and not a leftover: the lock, the facts record, the
# ssh.via route, the last no-op's reads (backhaul/unchanged.py)
_STATE = (".lock", ".facts.json", ".via-hub", ".unchanged.json")


def _stray_candidates(lab: Lab, temp: Path) -> set[str]:
    """Files a run could leave behind: anything in its temp folder but the ssh_config cache,
    the network file's journals beside it, pyinfra's debug log in the project."""
    found = {str(p) for p in temp.iterdir() if not p.name.startswith("backhaul-ssh-")}
    found |= {str(p) for p in lab.files_dir.glob(".network.yml.*") if not p.name.endswith(_STATE)}
    found |= {str(p) for p in [lab.project_dir / "pyinfra-debug.log"] if p.exists()}
    return found


def run(lab: Lab, count: int, seed: int, say=print, freeze_seconds: float = FREEZE_SECONDS) -> list[Outcome]:
    """``count`` faults on the lab (which is up, deployed and healthy), drawn from ``seed``;
    raises LabError naming the first fault that broke an invariant, and how to replay it."""
    from backhaul.lab.lab import as_recorded

    lab = as_recorded(lab)
    if not lab.files_dir.joinpath("network.yml").exists():
        raise LabError(f"lab {lab.name} has no network.yml: bring it up first (inv lab.up --name {lab.name})")
    chaos = Chaos(lab, seed, say, freeze_seconds)
    try:
        return chaos.run(count)
    finally:
        chaos.close()
