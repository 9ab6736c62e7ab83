"""The user-facing flows behind `inv deploy`, `plan`, `add-backend`, `remove-backend`,
`rotate-keys`: validate first, take the network's lock, run pyinfra, report."""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import tempfile
import threading
import time
from pathlib import Path

from backhaul import network as netmod
from backhaul import readlog, sshpath, unchanged
from backhaul.errors import BackhaulError, DeployError
from backhaul.lock import network_lock
from backhaul.runner import Run, run_pyinfra


def deploy(network_file: str, limit: str | None = None, dry: bool = False, full: bool = False) -> None:
    """Validate the whole network file (before any host is touched), then converge the hosts."""
    with network_lock(network_file, wait=0):  # also covers writing allocated addresses back
        net = netmod.load(network_file, write_back=not dry)
        hosts = _limit(net, limit)
        whole = not dry and hosts is None and not _add_journal(network_file).exists()
        inputs = unchanged.inputs(network_file, net) if whole else ""
        if whole and not full and _unchanged(network_file, net, inputs):
            return
        if net.clients and (hosts is None or net.hub.name in hosts):
            # only then: backhaul.clients imports pyinfra, which this process otherwise never
            # loads (the deploy runs in a child), a fifth of a no-op deploy's time before it
            from backhaul import clients

            for c in clients.expired(net, clients.today()):
                print(
                    f"backhaul: client {c.name} expired on {c.expires}: the hub "
                    f"{'would drop' if dry else 'drops'} its peer (the file keeps it until "
                    f"inv remove-client {c.name})",
                    flush=True,
                )
        with tempfile.TemporaryFile(prefix="backhaul-reads-") as reads:
            run = _converge(network_file, net, hosts, dry, reads if whole else None)
            if whole and _no_op(run):
                unchanged.keep(network_file, net, inputs, readlog.read(reads))
            elif not dry:
                unchanged.forget(network_file)
        targets = hosts or [h.name for h in net.hosts]
        if not dry and run.rc == 0 and not run.pending:  # under the lock: no add starts meanwhile
            _end_interrupted_add(network_file, net, targets)
    run.check("the plan" if dry else "the deploy", run.advice(targets, bool(hosts), dry))


def _unchanged(network_file: str, net, inputs: str) -> bool:
    """Say so and True when every host reads as the last no-op deploy left it (unchanged.py)."""
    verdict = unchanged.check(network_file, net, inputs)
    if verdict.holds:
        print(
            f"backhaul: no changes (all {len(net.hosts)} hosts read as the last deploy left them, "
            f"in one round: {verdict.seconds:.2f}s; inv deploy --full runs every operation)",
            flush=True,
        )
    elif verdict.why:
        print(f"backhaul: {verdict.why}: the whole deploy runs", flush=True)
    return verdict.holds


def _no_op(run: Run) -> bool:
    """One complete pyinfra run of every host that changed nothing."""
    return run.rc == 0 and not run.pending and not run.failed and not run.changed and not run.errors


def _add_journal(network_file: str) -> Path:
    """The add-backend in progress, beside the file a symlink resolves to (one for both)."""
    real = Path(os.path.realpath(network_file))
    return real.with_name(f".{real.name}.adding")


def _end_interrupted_add(network_file: str, net, deployed: list[str]) -> None:
    """After a deploy that completed: an add-backend cut short is over too. Its backend, if the
    add wrote it into the file, was just deployed with the rest (a re-run of the add would
    only verify it); if the add never wrote it, there is nothing to finish."""
    journal = _add_journal(network_file)
    try:
        address = journal.read_text().strip()
    except FileNotFoundError:
        return
    host = next((b for b in net.backends if address in {str(ip) for ip in b.public_ips}), None)
    if host is None or host.name in deployed:
        journal.unlink(missing_ok=True)
        what = f"{host.name} is deployed" if host else "it never reached the file"
        print(f"backhaul: the interrupted add-backend of {address} is over ({what})", flush=True)


# --- ssh.via hub: which way each backend is reached (backhaul/sshpath.py) -----------------------
def _converge(network_file: str, net, hosts: list[str] | None, dry: bool = False, reads=None) -> Run:
    """One site run, with via-hub backends reached the way that should work (through the hub
    once proven, else directly); those that did not connect are tried the other way, and the
    public SSH of those reached directly is closed over the hub afterwards: the public rule
    goes only once SSH through the hub has worked."""
    scope = [b for b in net.backends if sshpath.via_hub(b) and (not hosts or b.name in hosts)]
    direct = sshpath.first_guess(network_file, net) & {b.name for b in scope}
    # (what it reads is kept only when no host is reached another way than next time)
    reads = None if direct else reads
    run = run_pyinfra(
        network_file, limit=hosts, dry=dry, extra_env=_direct_env(direct), summarize=False, reads=reads
    )
    if dry:
        run = _plan_closing(network_file, run, sorted(n for n in direct if n not in run.failed))
    elif scope and net.hub.name not in run.failed:  # else the hub itself failed: the run says it all
        run = _reach_and_close(network_file, net, scope, direct, run)
    if run.rc == 0:  # one statement for the flow's runs together (a failure is raised by check)
        print(run.summary(dry), flush=True)
    return run


def _plan_closing(network_file: str, run: Run, closing: list[str]) -> Run:
    """The plan of a deploy that would close these via-hub backends' public SSH after its site
    run: that step's firewall changes, read dry over the hub (where the deploy makes them), or
    a note where SSH through the hub does not work yet (the deploy then leaves it open)."""
    if not closing:
        return run
    fw = run_pyinfra(
        network_file, deploy_file="deploys/firewall.py", limit=closing, dry=True, summarize=False
    )
    for name in closing:
        if _not_connected(fw, name):
            run.changes.setdefault(name, []).append(
                "its public SSH closes over the hub once SSH through the hub works (it does not "
                "yet, so this plan cannot show those firewall changes)"
            )
        else:
            # (from an ssh.allow_from address the site run already applies the closed rules:
            # the same change, listed once)
            ops = run.changes.setdefault(name, [])
            ops += [
                f"{op} (over the hub: closes public SSH)" for op in fw.changes.get(name, []) if op not in ops
            ]
    run.changes = {h: ops for h, ops in run.changes.items() if ops}
    return run


def _reach_and_close(network_file: str, net, scope: list, direct: set[str], run: Run) -> Run:
    """After the site run: via-hub backends that did not connect tried the other way, then
    public SSH closed over the hub on those reached directly."""
    unreached = [b.name for b in scope if _not_connected(run, b.name)]
    if unreached:
        # the other way: directly for those tried through the hub, and the reverse
        direct ^= set(unreached)
        print(
            f"backhaul: {', '.join(unreached)}: no SSH that way; trying "
            + ", ".join(f"{n} {'directly' if n in direct else 'through the hub'}" for n in unreached),
            flush=True,
        )
        again = run_pyinfra(
            network_file,
            limit=[net.hub.name, *unreached],
            extra_env=_direct_env(direct & set(unreached)),
            summarize=False,
        )
        run = _merged(run, again, [net.hub.name, *unreached])
        for n in unreached:
            if _not_connected(run, n):
                run.failed[n] += (
                    " (ssh.via hub: neither through the hub nor directly; with "
                    "the hub new or dead, run this from an ssh.allow_from address)"
                )
    # close those reached directly whose run completed (another host's failure does not hold
    # them open); remembered as reached through the hub only once that has worked
    waiting = {p.split(":", 1)[0] for p in run.pending}
    closing = sorted(n for n in direct if n not in run.failed and n not in waiting)
    if closing:
        run = _merged(run, close_public_ssh(network_file, closing), closing)
    sshpath.remember(
        network_file,
        net,
        [b.name for b in scope if b.name not in run.failed and (b.name not in direct or b.name in closing)],
    )
    return run


def _direct_env(names: set[str]) -> dict:
    return {sshpath.DIRECT_ENV: ",".join(sorted(names))}


def _not_connected(run: Run, name: str) -> bool:
    return run.failed.get(name, "").startswith(("Could not connect", "SSH error"))


def close_public_ssh(network_file: str, names: list[str], timeout: float = 60.0) -> Run:
    """The firewall of these via-hub backends, over the hub (a tunnel just up may need a
    handshake or two first: retried while SSH through the hub does not connect yet)."""
    deadline = time.monotonic() + timeout
    while True:
        run = run_pyinfra(network_file, deploy_file="deploys/firewall.py", limit=names, summarize=False)
        unreached = [n for n in names if _not_connected(run, n)]
        if not unreached or time.monotonic() > deadline:
            for n in unreached:
                run.failed[n] = (
                    f"{run.failed[n]}: SSH through the hub does not work, so its public SSH was left open"
                )
            return run
        time.sleep(3)


def _merged(first: Run, second: Run, redone: list[str]) -> Run:
    """``first`` with what ``second`` did on the hosts it ran again."""
    failed = {h: why for h, why in first.failed.items() if h not in redone}
    failed.update(second.failed)
    pending = [p for p in first.pending if p.split(":", 1)[0] not in redone] + second.pending
    rc = second.rc or (first.rc if failed else 0)
    # the operations of both runs count: the summary says what the whole flow changed
    return Run(
        rc,
        pending,
        failed,
        second.refused,
        first.ops + second.ops,
        first.changed + second.changed,
        second.errors + (first.errors if set(failed) - set(second.failed) else 0),
    )


def _limit(net, limit: str | None) -> list[str] | None:
    if not limit:
        return None
    names = [n.strip() for n in re.split(r"[,\s]+", limit) if n.strip()]
    known = {h.name for h in net.hosts}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BackhaulError(
            f"--limit names unknown hosts: {', '.join(unknown)} "
            f"(hosts in {net.path}: {', '.join(sorted(known))})"
        )
    return names


# --- day 2 ------------------------------------------------------------------------------------
def add_backend(
    network_file: str,
    public_ip: str,
    name: str | None = None,
    wg_ip: str | None = None,
    public_ip6: str | None = None,
) -> None:
    """Write the backend into the file, deploy it and the hub's side only, verify it.

    Re-running after an interruption finishes the job: a journal next to the network file
    names the add in progress, so the backend it already wrote is taken as is (and a backend
    that is simply a duplicate is still refused)."""
    journal = _add_journal(network_file)
    with network_lock(network_file, wait=0):
        net = netmod.load(network_file, write_back=True)
        resuming = journal.exists() and journal.read_text().strip() == public_ip
        host = next((b for b in net.backends if str(b.public_ip) == public_ip), None) if resuming else None
        if host:
            print(f"backhaul: finishing the interrupted add of {host.name} ({public_ip})")
        else:
            journal.write_text(public_ip + "\n")
            try:
                # the file is unchanged on error
                host = netmod.add_backend(network_file, name, public_ip, wg_ip, public_ip6=public_ip6)
            except BaseException:
                journal.unlink(missing_ok=True)
                raise
            addresses = ", ".join(str(a) for a in (*host.public_ips, host.wg_ip))
            print(f"backhaul: added {host.name} ({addresses}) to {network_file}", flush=True)
        net = netmod.load(network_file)
        _preload_verify()
        # The new host fully; on each hub its peer (one live `wg set`) and firewall rule. Nothing else.
        # (ssh.via hub: its first deploy goes over its public SSH, which is closed right after.)
        _converge(network_file, net, hubs_and(net, host.name)).check(
            f"deploying {host.name}", "The file already has it: run the same add-backend again to finish."
        )
    report = _wait_verified(network_file, [host.name])
    print(report.to_table())
    if not report.ok:
        raise DeployError(
            f"{host.name} was deployed but does not verify; see the table above; "
            "run the same add-backend again once the cause is fixed"
        )
    journal.unlink(missing_ok=True)


def _preload_verify() -> None:
    """verify's modules (pyinfra's API, paramiko: 0.3-1 s of CPU) imported while the deploy
    runs in its child process and this one only waits: the verify after it starts at once.
    (A failed import here is left to the verify's own import, which says why.)"""

    def load() -> None:
        with contextlib.suppress(Exception):
            importlib.import_module("backhaul.verify")

    threading.Thread(target=load, name="preload-verify", daemon=True).start()


def _wait_verified(network_file: str, names: list[str], timeout: float = 30.0):
    """A tunnel that just came up may need a handshake or two: retry verify for a while."""
    from backhaul import verify

    deadline = time.monotonic() + timeout
    while True:
        report = verify.run(network_file, names=names)
        if report.ok or time.monotonic() > deadline:
            return report
        time.sleep(1)


def remove_backend(network_file: str, name: str, force: bool = False, stop_tunnel: bool = True) -> None:
    """Remove the peer and firewall rule from the hub (other tunnels untouched), stop the
    backend's tunnel if it answers, and remove it (and with --force its services) from the file."""
    from pyinfra.api import StringCommand

    from backhaul import session

    with network_lock(network_file, wait=0):
        net = netmod.load(network_file)
        problem = netmod.removal_problem(net, name, with_services=force)
        if problem:
            raise BackhaulError(f"{network_file}: {problem}")  # before any host is touched
        services = net.services_on(name)
        if stop_tunnel:
            with session.connect(net, [name]) as hosts:
                if name in hosts.by_name:
                    target = hosts.by_name[name]
                    unit = f"wg-quick@{net.interface}"
                    # over the hub, the session rides the tunnel it stops: stop it a moment
                    # after this command has answered
                    stop = (
                        f"systemctl disable {unit} && " + sshpath.later(f"systemctl stop {unit}")
                        if sshpath.via_hub(net.host(name))
                        else f"systemctl disable --now {unit}"
                    )
                    target.run_shell_command(
                        StringCommand(stop), print_output=False, **session.as_root(target)
                    )
                    print(f"backhaul: stopped the tunnel on {name}")
                else:
                    print(f"backhaul: {name} does not answer; its tunnel was left as it is")
        netmod.remove_backend(network_file, name, with_services=force)
        sshpath.remember(network_file, netmod.load(network_file), [])  # forget how it was reached
        print(
            f"backhaul: removed {name}"
            + (f" and {len(services)} services" if services else "")
            + f" from {network_file}",
            flush=True,
        )
        run_pyinfra(network_file, limit=[h.name for h in net.hubs]).check(
            "updating the hubs" if net.other_hubs else "updating the hub",
            f"{name} is already out of the file: run `inv deploy --limit "
            f"{','.join(h.name for h in net.hubs)}` to finish.",
        )


def replace_hub(
    network_file: str, public_ip: str, public_ip6: str | None = None, name: str | None = None
) -> None:
    """A new server takes a dead hub's place (``name``: which hub; the only one by default):
    the file gets its addresses (one of each family the old hub had, or nothing changes), a
    deploy builds it from the file and re-points every backend and every other hub (its key,
    the endpoint of their tunnel's family, the firewall rule for WireGuard), the certificates
    are issued again, and the network must verify.

    Via-hub backends are reached through the first hub once it has their peers; until then
    directly, which needs this machine on ssh.allow_from (their public SSH stays closed)."""
    with network_lock(network_file, wait=0):
        old = netmod.load(network_file)
        # refuses before any change (and asks which hub when there are several)
        hub = netmod.set_hub_address(network_file, public_ip, public_ip6, name=name)
        now, was = (", ".join(str(a) for a in h.public_ips) for h in (hub, old.host(hub.name)))
        print(f"backhaul: {hub.name} is now {now} in {network_file} (was {was})", flush=True)
        domains = sorted({d for s in old.services for d in s.domains})
        if domains:
            beside = " in place of the old server's" if old.other_hubs else ""
            print(
                f"backhaul: point these names at {_records(hub)}{beside} (records only you can "
                f"change; ACME validates through them): {', '.join(domains)}",
                flush=True,
            )
        if hub.ssh_host not in {str(a) for a in hub.public_ips}:
            print(f"backhaul: note: {hub.name}'s ssh_host is {hub.ssh_host}; SSH goes there", flush=True)
        net = netmod.load(network_file)
        _converge(network_file, net, None).check(
            "building the new hub",
            "The file already names the new hub: fix the cause and run "
            "inv deploy (or the same replace-hub) again.",
        )
    report = _wait_verified(network_file, None, timeout=60)
    print(report.to_table())
    if hub.name == net.hub.name:  # the clients peer with the first hub only
        _tell_stale_clients(net, None)  # a new server, a new key: no client config names it yet
    if not report.ok:
        raise DeployError(replace_hub_problem(net, report, net.host(hub.name)))


def _records(hub) -> str:
    return " and ".join(f"{a} ({'AAAA' if a.version == 6 else 'A'})" for a in hub.public_ips)


def replace_hub_problem(net, report, hub=None) -> str:
    """What replace-hub's failed verify says is wrong: the failing checks by name, and the DNS
    hint only when HTTPS checks fail (a name not yet at the new hub, ``hub``: the first by
    default: no certificate)."""
    hub = hub or net.hub
    from backhaul.verify import OK, WARN

    failing = [c for c in report.checks if c.status not in (OK, WARN)]
    https = [c for c in failing if c.check == "https"]
    others = [c for c in failing if c.check != "https"]
    lines = ["the new hub is built but the network does not verify (the table above):"]
    lines += [f"  {c.check} {c.host}: {c.detail}" for c in others]
    if https:
        domains = sorted({d for s in net.services for d in s.domains})
        lines.append(
            f"  {len(https)} https check(s) fail: if {', '.join(domains) or 'the services names'} "
            f"do not point at the new hub yet ({_records(hub)}), ACME cannot issue their "
            "certificates: change the records, then run inv deploy"
        )
    return "\n".join(lines)


def rotate_keys(network_file: str, host: str | None = None, all_hosts: bool = False) -> None:
    """New key pair(s) made on the host(s), applied with the shortest gap, then persisted."""
    from backhaul import rotation, session

    with network_lock(network_file, wait=0):
        net = netmod.load(network_file)
        if host and host not in {h.name for h in net.hosts}:
            raise BackhaulError(
                f"there is no host {host!r} in {network_file} (hosts: {', '.join(h.name for h in net.hosts)})"
            )
        targets = [h.name for h in net.hosts] if all_hosts else [host]
        hubs = {h.name for h in net.hubs}
        # A backend's new key concerns it and the hubs only: the other backends peer with the
        # hubs alone. Touching only those keeps the flow's SSH and pyinfra work (CPU on the
        # hosts, where userspace WireGuard forwards every other tunnel) flat in the fleet size.
        # A hub's concerns every host: each backend and each other hub peers with it.
        pair = None if all_hosts or host in hubs else hubs_and(net, host)
        hub_key = None  # the first hub's new key, if rotated: the clients' configs name the old
        with session.connect(net, pair) as hosts:
            if hosts.unreachable:
                raise DeployError(
                    "cannot rotate keys while hosts do not answer: " + ", ".join(hosts.unreachable)
                )
            for name in targets:
                t0 = time.monotonic()
                what = "new key"
                try:
                    if name == net.hub.name:
                        hub_key = rotation.rotate_hub(net, hosts)
                    elif name in hubs:  # a hub of proxies: (clients peer with the first only)
                        rotation.rotate_hub(net, hosts, net.host(name))
                    else:
                        rotation.rotate_backend(net, hosts, net.host(name))
                except DeployError as e:
                    # Each host's key file changes last: it still names the key to run with.
                    raise DeployError(
                        f"{e}\nThe rotation of {name} did not finish. Run inv deploy: it puts "
                        "every host's conf and interface back on the key in its key file (and "
                        "the peers on those keys); then run rotate-keys again."
                    ) from None
                if name not in hubs and net.preshared_keys:
                    what = f"new key and preshared key with {net.hub.name}"
                print(f"backhaul: {name}: {what} live in {time.monotonic() - t0:.2f}s", flush=True)
        # Write the configs to match what is live (the live peer update then changes nothing).
        run_pyinfra(network_file, deploy_file="deploys/wireguard.py", limit=pair).check(
            "writing the configs for the new keys", "The new keys are live: run inv deploy."
        )
    report = _wait_verified(network_file, None if pair is None else [host])
    print(report.to_table())
    if hub_key:
        _tell_stale_clients(net, hub_key)
    if not report.ok:
        raise DeployError("keys rotated but the network does not verify; see the table above")


def hubs_and(net, backend: str) -> list[str]:
    """The hosts a change of one backend concerns (its key, its adding): every hub (each has
    a peer for it, and its service ports answer each), and the backend."""
    return [*(h.name for h in net.hubs), backend]


def _tell_stale_clients(net, hub_key: str | None) -> None:
    """The end of a flow that changed the hub's key: each client that needs a new config."""
    if not net.clients:
        return  # clients.py loads pyinfra: only for a network that has clients
    from backhaul import clients

    for line in clients.stale_advice(net, hub_key):
        print(line, flush=True)


# --- clients (admins' devices) ----------------------------------------------------------------
def add_client(
    network_file: str, name: str, public_key: str | None = None, expires: str | None = None, show=print
) -> None:
    """Write the client into the file (its public key only), put its peer on the hub (a live
    `wg set`: no other tunnel drops), and show its config once.

    Without ``public_key`` a key pair is made here, in memory: the config with the private key
    is shown once (text and QR code) and forgotten; nothing of it reaches a file, a log or a
    host."""
    import datetime

    from backhaul import clients

    try:
        when = datetime.date.fromisoformat(expires) if expires else None
    except ValueError:
        raise BackhaulError(f"--expires {expires!r} is not a date; write YYYY-MM-DD") from None
    if when is not None and when <= clients.today():
        # expires: is the first day the hub drops the peer: a config shown now could never work
        raise BackhaulError(
            f"--expires {when} is past or today ({clients.today()} in UTC; the hub drops a client "
            "from its expires: day on): give a later day, or none"
        )
    with network_lock(network_file, wait=0):
        net = netmod.load(network_file, write_back=True)
        private = None
        if public_key is None:
            private, public_key = clients.keypair()
        netmod.add_client(network_file, name, public_key, expires=when, check_only=True)
        hub_key = _hub_public_key(net)  # before any change: the config needs it
        # unchanged on error; the hub key the config names recorded with it (verify: stale?)
        client = netmod.add_client(network_file, name, public_key, expires=when, hub_key=hub_key)
        print(f"backhaul: added client {name} ({client.wg_ip}) to {network_file}", flush=True)
        net = netmod.load(network_file)
        text = clients.config_text(net, client, hub_key, private)
        try:
            run_pyinfra(network_file, limit=[net.hub.name]).check(
                f"adding {name}'s peer on the hub",
                "The file already has the client and the "
                f"config below is valid: run `inv deploy --limit {net.hub.name}` to finish.",
            )
        finally:  # shown even when the hub's run failed: the key exists nowhere else
            if private is None:
                show(f"\n{name}'s WireGuard config: put this device's own private key in it\n\n{text}")
            else:
                show(
                    f"\n{name}'s WireGuard config, shown ONCE (its private key is nowhere "
                    "else; save it on the device now, e.g. as /etc/wireguard/wg0.conf):"
                    f"\n\n{text}\nThe same as a QR code (WireGuard app: add a tunnel, scan "
                    f"from QR code):\n\n{clients.qr_text(text)}"
                )
            del private, text


def client_config(network_file: str, name: str, show=print) -> None:
    """A client's config again (after the hub's key was rotated, or for a device that keeps its
    own key): the hub's public key read now, a `# PrivateKey` line for the device to fill in."""
    from backhaul import clients

    net = netmod.load(network_file)
    try:
        client = net.client(name)
    except KeyError:
        known = ", ".join(c.name for c in net.clients) or "none"
        raise BackhaulError(f"there is no client {name!r} in {network_file} (clients: {known})") from None
    hub_key = _hub_public_key(net)
    show(clients.config_text(net, client, hub_key, None))
    with network_lock(network_file, wait=0):
        # what this config names: verify stops calling it stale (public data, in the file)
        if netmod.set_client_hub_key(network_file, name, hub_key) != client:
            print(f"backhaul: {network_file}: {name}'s hub_key is now the hub's current key", flush=True)


def _hub_public_key(net) -> str:
    from backhaul import session
    from backhaul.facts.wireguard import WireguardState

    with session.connect(net, [net.hub.name]) as hosts:
        state = hosts.facts({net.hub.name: (WireguardState, {"interface": net.interface})})
    state = state.get(net.hub.name)
    key = (state or {}).get("public_key") if isinstance(state, dict) else None
    if not key:
        raise DeployError(f"cannot read the hub's public key from {net.hub.name}: run inv deploy")
    return key


def remove_client(network_file: str, name: str) -> None:
    """Take the client out of the file, then its peer off the hub (a live `wg set`)."""
    with network_lock(network_file, wait=0):
        net = netmod.load(network_file)
        netmod.remove_client(network_file, name)  # refuses while an allow list names it
        print(f"backhaul: removed client {name} from {network_file}", flush=True)
        run_pyinfra(network_file, limit=[net.hub.name]).check(
            f"removing {name}'s peer from the hub",
            f"{name} is already out of the file: run `inv deploy --limit {net.hub.name}` to finish.",
        )
        print(f"backhaul: {net.hub.name} has no peer for {name} any more", flush=True)
