"""The user-facing flows behind `inv deploy`, `plan`, `add-backend`, `remove-backend`,
`rotate-keys`: validate first, take the network's lock, run pyinfra, report."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pyinfra.api import StringCommand

from backhaul import network as netmod
from backhaul import pending
from backhaul.errors import BackhaulError, DeployError

ROOT = Path(__file__).resolve().parent.parent
SITE = "deploys/site.py"


class LockedError(BackhaulError):
    exit_code = 3


@contextlib.contextmanager
def network_lock(path: str | Path, wait: float = 0.0):
    """One backhaul run per network file at a time; a second one waits ``wait`` s, then refuses."""
    lock_path = Path(path).resolve().with_name(f".{Path(path).name}.lock")
    with open(lock_path, "a+") as f:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.seek(0)
                    holder = f.read().strip() or "another backhaul run"
                    raise LockedError(
                        f"{path} is in use by {holder}; wait for it to finish and run again"
                    ) from None
                time.sleep(0.2)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} ({' '.join(sys.argv[1:3]) or 'backhaul'})\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()


def run_pyinfra(
    network: str | Path,
    deploy_file: str = SITE,
    limit: list[str] | None = None,
    dry: bool = False,
    extra_env: dict | None = None,
) -> tuple[int, list[str]]:
    """Run the pinned pyinfra CLI (the stable interface) and stream its output.

    Returns pyinfra's exit code and what the deploy left pending (see backhaul.pending)."""
    with tempfile.NamedTemporaryFile(prefix="backhaul-pending-", delete=False) as tmp:
        pending_file = tmp.name
    env = dict(os.environ, BACKHAUL_NETWORK=str(Path(network).resolve()),
               **{pending.ENV: pending_file}, **(extra_env or {}))  # fmt: skip
    # -y skips change detection, which is exactly what a dry run is for
    cmd = [sys.executable, "-m", "pyinfra", *([] if dry else ["-y"]), "inventory.py", deploy_file]
    for name in limit or []:
        cmd += ["--limit", name]  # one flag per host: a comma list is one (unmatched) pattern
    if dry:
        cmd += ["--dry", "--diff"]
    try:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)  # fmt: skip
        lines = []
        for line in proc.stdout:  # stream pyinfra's progress as it comes
            sys.stdout.write(line)
            lines.append(line)
        rc = proc.wait()
        sys.stdout.flush()
        if rc == 0:
            print(plan_summary(lines) if dry else summary(lines), flush=True)
        return rc, pending.read(pending_file)
    finally:
        os.unlink(pending_file)


def summary(lines: list[str]) -> str:
    """One line from pyinfra's "Grand total  ops  success  error  no-change" row."""
    totals = next((ln for ln in reversed(lines) if ln.strip().startswith("Grand total")), "")
    nums = [int(c) if c.isdigit() else 0 for c in totals.split()[2:]]
    ops, changed, errors = (nums + [0, 0, 0])[:3]
    if changed == 0 and errors == 0:
        return f"backhaul: no changes ({ops} operations checked, all hosts as described)"
    return f"backhaul: {changed} of {ops} operations changed something, {errors} failed"


def plan_summary(lines: list[str]) -> str:
    """Per host, what `inv deploy` would change (from pyinfra's "Detected changes" table)."""
    per_host: dict[str, list[str]] = {}
    in_table = False
    for line in lines:
        if line.startswith("--> Detected changes"):
            in_table = True
            continue
        if in_table and not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        if not in_table or len(cells) < 2 or cells[0] == "Operation":
            continue
        op = cells[0].split(" | ")[-1]
        for cell in cells[1:]:
            m = re.match(r"\d+ \((.*)\)", cell)
            for name in (m.group(1).split(", ") if m else []):
                per_host.setdefault(name.strip(), []).append(op)
    if not per_host:
        return "backhaul: plan: no changes: every host is as the network file describes"
    out = [f"backhaul: plan: changes on {len(per_host)} host(s) (nothing was changed):"]
    out += [f"  {name}: {'; '.join(ops)}" for name, ops in sorted(per_host.items())]
    return "\n".join(out)


def deploy(network: str, limit: str | None = None, dry: bool = False) -> None:
    """Validate the whole network file (before any host is touched), then converge the hosts."""
    net = netmod.load(network, write_back=not dry)
    hosts = _limit(net, limit)
    with network_lock(network, wait=0):
        rc, left = run_pyinfra(network, limit=hosts, dry=dry)
    if rc != 0:
        raise DeployError(f"the deploy failed (pyinfra exit {rc}); see the errors above. "
                          "Hosts that succeeded are converged; fix the cause and run it again.")
    if left and not dry:
        raise DeployError("the deploy is not complete:\n  " + "\n  ".join(left))


def _limit(net, limit: str | None) -> list[str] | None:
    if not limit:
        return None
    names = [n.strip() for n in re.split(r"[,\s]+", limit) if n.strip()]
    known = {h.name for h in net.hosts}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BackhaulError(f"--limit names unknown hosts: {', '.join(unknown)} "
                            f"(hosts in {net.path}: {', '.join(sorted(known))})")
    return names


# --- day 2 ------------------------------------------------------------------------------------
def add_backend(network: str, public_ip: str, name: str | None = None,
                wg_ip: str | None = None) -> None:
    """Write the backend into the file, deploy it and the hub's side only, verify it.

    Re-running after an interruption finishes the job: a journal next to the network file
    names the add in progress, so the backend it already wrote is taken as is (and a backend
    that is simply a duplicate is still refused)."""
    journal = Path(network).resolve().with_name(f".{Path(network).name}.adding")
    with network_lock(network, wait=0):
        net = netmod.load(network, write_back=True)
        resuming = journal.exists() and journal.read_text().strip() == public_ip
        host = next((b for b in net.backends if str(b.public_ip) == public_ip), None) \
            if resuming else None  # fmt: skip
        if host:
            print(f"backhaul: finishing the interrupted add of {host.name} ({public_ip})")
        else:
            journal.write_text(public_ip + "\n")
            try:
                host = netmod.add_backend(network, name, public_ip, wg_ip)  # file unchanged on error
            except BaseException:
                journal.unlink(missing_ok=True)
                raise
            print(f"backhaul: added {host.name} ({public_ip}, {host.wg_ip}) to {network}", flush=True)
        net = netmod.load(network)
        # The new host fully; on the hub its peer (wg syncconf) and firewall rule. Nothing else.
        rc, left = run_pyinfra(network, limit=[net.hub.name, host.name])
        if rc != 0:
            raise DeployError(f"deploying {host.name} failed (pyinfra exit {rc}); the file already "
                              f"has it: run the same add-backend again to finish")  # fmt: skip
    report = _wait_verified(network, [host.name])
    print(report.to_table())
    if not report.ok:
        raise DeployError(f"{host.name} was deployed but does not verify; see the table above; "
                          "run the same add-backend again once the cause is fixed")
    journal.unlink(missing_ok=True)


def _wait_verified(network: str, names: list[str], timeout: float = 30.0):
    """A tunnel that just came up may need a handshake or two: retry verify for a while."""
    from backhaul import verify

    deadline = time.monotonic() + timeout
    while True:
        report = verify.run(network, names=names)
        if report.ok or time.monotonic() > deadline:
            return report
        time.sleep(1)


def remove_backend(network: str, name: str, force: bool = False, stop_tunnel: bool = True) -> None:
    """Remove the peer and firewall rule from the hub (other tunnels untouched), stop the
    backend's tunnel if it answers, and remove it (and with --force its services) from the file."""
    from backhaul import session

    with network_lock(network, wait=0):
        net = netmod.load(network)
        try:
            next(b for b in net.backends if b.name == name)
        except StopIteration:
            known = ", ".join(b.name for b in net.backends) or "none"
            raise BackhaulError(f"there is no backend {name!r} in {network} (backends: {known})") from None
        services = net.services_on(name)
        if services and not force:
            raise BackhaulError(
                f"services {', '.join(s.name for s in services)} still run on {name}: move them "
                f"in {network} first, or remove them with it: inv remove-backend --name {name} --force"
            )
        if stop_tunnel:
            with session.connect(net, [name]) as hosts:
                if name in hosts.by_name:
                    hosts.by_name[name].run_shell_command(
                        StringCommand(f"systemctl disable --now wg-quick@{net.interface}"),
                        print_output=False)  # fmt: skip
                    print(f"backhaul: stopped the tunnel on {name}")
                else:
                    print(f"backhaul: {name} does not answer; its tunnel was left as it is")
        netmod.remove_backend(network, name, with_services=force)
        print(f"backhaul: removed {name}" + (f" and {len(services)} services" if services else "")
              + f" from {network}", flush=True)  # fmt: skip
        rc, _ = run_pyinfra(network, limit=[net.hub.name])
        if rc != 0:
            raise DeployError(f"updating the hub failed (pyinfra exit {rc}); {name} is already out "
                              "of the file: run `inv deploy --limit " + net.hub.name + "` to finish")


def rotate_keys(network: str, host: str | None = None, all_hosts: bool = False) -> None:
    """New key pair(s) made on the host(s), applied with the shortest gap, then persisted."""
    from backhaul import rotation, session

    with network_lock(network, wait=0):
        net = netmod.load(network)
        if host and host not in {h.name for h in net.hosts}:
            raise BackhaulError(f"there is no host {host!r} in {network} "
                                f"(hosts: {', '.join(h.name for h in net.hosts)})")
        targets = [h.name for h in net.hosts] if all_hosts else [host]
        with session.connect(net) as hosts:
            if hosts.unreachable:
                raise DeployError("cannot rotate keys while hosts do not answer: "
                                  + ", ".join(hosts.unreachable))
            for name in targets:
                t0 = time.monotonic()
                if name == net.hub.name:
                    rotation.rotate_hub(net, hosts)
                else:
                    rotation.rotate_backend(net, hosts, net.host(name))
                print(f"backhaul: {name}: new key live in {time.monotonic() - t0:.2f}s", flush=True)
        # Write the configs to match what is live (wg syncconf then changes nothing).
        rc, _ = run_pyinfra(network, deploy_file="deploys/wireguard.py")
        if rc != 0:
            raise DeployError(f"the new keys are live but writing the configs failed (exit {rc}): "
                              "run inv deploy")
    report = _wait_verified(network, None if all_hosts or host == net.hub.name else [host])
    print(report.to_table())
    if not report.ok:
        raise DeployError("keys rotated but the network does not verify; see the table above")
