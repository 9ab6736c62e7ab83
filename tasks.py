"""backhaul's commands (invoke). Thin: parse options, call one function of the package, print.

inv deploy | plan | verify | add-backend | remove-backend | rotate-keys | replace-hub
inv add-client | remove-client | client-config
inv lab.up | lab.down | lab.status | lab.demo
"""

from __future__ import annotations

import functools
import json as jsonlib
import os

from invoke import Collection, Task
from invoke import task as _invoke_task
from invoke.exceptions import Exit

from backhaul.errors import BackhaulError

NETWORK_HELP = "network file (default: $BACKHAUL_NETWORK or ./network.yml)"


class _Task(Task):
    """invoke's task with one meaning per short flag: invoke gives each option the first free
    letter of its name, so `-n` was --network in some tasks and --name in others. Here
    --network has no short flag, and `-n` is --name wherever a task has a name."""

    def arg_opts(self, name, default, taken_names):
        opts = super().arg_opts(name, default, taken_names)
        if name == "network":
            opts["names"] = ["network"]
        return opts


task = functools.partial(_invoke_task, klass=_Task)


def _friendly(fn):
    """Turn the project's errors into a message and an exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BackhaulError as e:
            raise Exit(f"backhaul: {e}", code=e.exit_code) from None

    return wrapper


def _in_process_pyinfra() -> None:
    """pyinfra's SSH runs on gevent: the tasks that talk to hosts from this process (verify and
    the day-2 flows) patch first, as pyinfra's own CLI does, so that reads from many hosts run
    in parallel. `inv deploy` and `plan` run the pyinfra CLI as a child and skip the cost."""
    from gevent import monkey

    monkey.patch_all()


def _network(path: str | None) -> str:
    return path or os.environ.get("BACKHAUL_NETWORK") or "network.yml"


# --- the network ------------------------------------------------------------------------------
@task(
    help={
        "network": NETWORK_HELP,
        "limit": "only these hosts (comma-separated names)",
        "dry": "show what would change, change nothing (pyinfra --dry --diff)",
        "full": "run every operation, even when every host reads as the last deploy left it",
    }
)
@_friendly
def deploy(c, network=None, limit=None, dry=False, full=False):
    """Bring every host to what the network file says (WireGuard, firewall, nginx, TLS, binds)."""
    from backhaul import flows

    flows.deploy(_network(network), limit=limit, dry=dry, full=full)


@task(help={"network": NETWORK_HELP})
@_friendly
def plan(c, network=None):
    """Show what `inv deploy` would change, per host, without changing anything."""
    from backhaul import flows

    flows.deploy(_network(network), dry=True)


@task(help={"network": NETWORK_HELP, "json": "machine-readable output (stable; see README)"})
@_friendly
def verify(c, network=None, json=False):
    """Check the whole network end to end (read-only). Exit 0 healthy, 1 problems, 2 unknown."""
    _in_process_pyinfra()
    from backhaul import verify as verify_mod

    report = verify_mod.run(_network(network))
    print(jsonlib.dumps(report.to_json(), indent=2) if json else report.to_table())
    if report.exit_code:
        raise Exit(code=report.exit_code)


@task(
    help={
        "host": "the new backend's public IP",
        "host6": "a dual-stack backend's IPv6 address (--host is then its IPv4 one)",
        "name": "its name (default backend-N)",
        "wg_ip": "its WireGuard address (default: lowest free)",
        "network": NETWORK_HELP,
    }
)
@_friendly
def add_backend(c, host, name=None, wg_ip=None, network=None, host6=None):
    """Add a backend: write it to the network file, deploy it and the hub's peer, verify it."""
    _in_process_pyinfra()
    from backhaul import flows

    flows.add_backend(_network(network), public_ip=host, name=name, wg_ip=wg_ip, public_ip6=host6)


@task(
    help={
        "name": "the backend to remove",
        "force": "also remove the services that use it",
        "network": NETWORK_HELP,
    }
)
@_friendly
def remove_backend(c, name, force=False, network=None):
    """Remove a backend: its hub peer and firewall rule, its tunnel, its entry in the file."""
    _in_process_pyinfra()
    from backhaul import flows

    flows.remove_backend(_network(network), name=name, force=force)


@task(
    help={
        "host": "the new hub's public IP (a fresh server); its IPv4 one when --host6 is given",
        "host6": "its IPv6 address: needed when the old hub had IPv4 and IPv6 (like add-backend)",
        "name": "which hub the new server replaces (needed when the file has several hubs)",
        "network": NETWORK_HELP,
    }
)
@_friendly
def replace_hub(c, host, host6=None, name=None, network=None):
    """Replace a dead hub: a new server built from the file, every backend re-pointed to it."""
    _in_process_pyinfra()
    from backhaul import flows

    flows.replace_hub(_network(network), public_ip=host, public_ip6=host6, name=name)


@task(help={"host": "rotate this host's key", "all": "rotate every host's key", "network": NETWORK_HELP})
@_friendly
def rotate_keys(c, host=None, all=False, network=None):
    """Make new WireGuard keys on the host(s) and apply them with the shortest possible gap."""
    _in_process_pyinfra()
    from backhaul import flows

    if bool(host) == bool(all):
        raise Exit("backhaul: say which keys to rotate: --host NAME or --all", code=2)
    flows.rotate_keys(_network(network), host=host, all_hosts=all)


# --- clients (admins' devices on the tunnel) --------------------------------------------------
@task(
    help={
        "name": "the client's name (used in allow lists)",
        "public_key": "its WireGuard public key (recommended: the device makes its own key "
        "pair); without it a key pair is made in memory and shown once",
        "expires": "optional last day + 1, YYYY-MM-DD (UTC): from then on the hub drops it",
        "network": NETWORK_HELP,
    }
)
@_friendly
def add_client(c, name, public_key=None, expires=None, network=None):
    """Add an admin's device: its peer on the hub, its config shown once (text and QR code)."""
    _in_process_pyinfra()
    from backhaul import flows

    flows.add_client(_network(network), name=name, public_key=public_key, expires=expires)


@task(help={"name": "the client to remove", "network": NETWORK_HELP})
@_friendly
def remove_client(c, name, network=None):
    """Remove a client: its entry in the file and its peer on the hub (no other tunnel drops)."""
    _in_process_pyinfra()
    from backhaul import flows

    flows.remove_client(_network(network), name=name)


@task(help={"name": "the client", "network": NETWORK_HELP})
@_friendly
def client_config(c, name, network=None):
    """Show a client's config (no private key): e.g. after rotating the hub's key."""
    _in_process_pyinfra()
    from backhaul import flows

    flows.client_config(_network(network), name=name)


# --- the lab ----------------------------------------------------------------------------------
LAB_HELP = "lab name: 1-6 lowercase letters/digits (default: demo; its files go to .lab/)"


def _lab(
    name,
    backends=2,
    subnet=None,
    spares=0,
    suite=None,
    backend_suite=None,
    ipv6=False,
    v6_only=None,
    vm=False,
    hubs=1,
):
    from backhaul.lab.layout import Lab

    only = [n.strip() for n in (v6_only or "").split(",") if n.strip()]
    return Lab.make(
        name or "demo",
        int(backends),
        subnet,
        os.getcwd(),
        int(spares),
        suite,
        backend_suite,
        ipv6,
        only,
        vm,
        int(hubs),
    )


@task(
    name="up",
    help={
        "backends": "number of backends (default 2)",
        "name": LAB_HELP,
        "spares": "extra hosts booted but left out of network.yml (for add-backend)",
        "subnet": "the lab's 'public internet' /24 (default per name)",
        "fresh": "start from bare hosts (throw away the hosts' disks)",
        "suite": "Debian release of the hosts: trixie (13, default) or bookworm (12)",
        "backend-suite": "a mixed fleet: the backends (and spares) on this release instead",
        "ipv6": "dual-stack network.yml: every host's IPv6 address as public_ip6",
        "v6-only": "these backends (comma-separated) get no IPv4 address at all (implies --ipv6)",
        "vm": "QEMU VMs on Debian's own cloud kernel (kernel WireGuard; emulated, slow), not containers",
        "hubs": "hubs in network.yml (default 1): proxy, proxy-2, ... each serving every service",
    },
)
@_friendly
def lab_up(
    c,
    backends=2,
    name=None,
    subnet=None,
    fresh=False,
    spares=0,
    suite=None,
    backend_suite=None,
    ipv6=False,
    v6_only=None,
    vm=False,
    hubs=1,
):
    """Boot the lab: 1 hub + N backends (real Debian 13 or 12, systemd, SSH), apt cache, ACME."""
    from backhaul.lab import lab

    lab.up(_lab(name, backends, subnet, spares, suite, backend_suite, ipv6, v6_only, vm, hubs), fresh=fresh)


@task(name="down", help={"name": LAB_HELP, "purge": "also delete the hosts' disks"})
@_friendly
def lab_down(c, name=None, purge=False):
    """Stop the lab; leave no mount, bridge, veth, cgroup or process behind."""
    from backhaul.lab import lab

    lab.down(_lab(name), purge=purge)


@task(name="status", help={"name": LAB_HELP})
@_friendly
def lab_status(c, name=None):
    """Show the lab's hosts and whether each is running and answering SSH."""
    from backhaul.lab import lab

    the_lab = _lab(name)
    rows = lab.status(the_lab)
    if rows and all(r["ssh"] == "lab down" for r in rows):
        print(f"lab '{the_lab.name}' is down (no bridge {the_lab.bridge}): no host was contacted")
    print(lab.status_table(rows))


@task(name="demo", help={"name": LAB_HELP})
@_friendly
def lab_demo(c, name=None):
    """Install the demo services on the lab's backends (bound and started by `inv deploy`)."""
    from backhaul.lab import demo

    demo.install(_lab(name))


ns = Collection(
    deploy,
    plan,
    verify,
    add_backend,
    remove_backend,
    rotate_keys,
    replace_hub,
    add_client,
    remove_client,
    client_config,
)


@task(name="destroy", help={"name": LAB_HELP, "host": "the host to destroy (e.g. proxy)"})
@_friendly
def lab_destroy(c, host, name=None):
    """Destroy one lab host with its disk (a dead server: the replace-hub drill)."""
    from backhaul.lab import lab

    lab.destroy(_lab(name), host)


@task(name="dns", help={"name": LAB_HELP, "ip": "the address every lab name resolves to"})
@_friendly
def lab_dns(c, ip, name=None):
    """Point the lab's DNS names at an address (the operator's DNS change for a new hub)."""
    from backhaul.lab import services

    services.point_names_at(_lab(name), ip)


ns.add_collection(Collection("lab", lab_up, lab_down, lab_status, lab_demo, lab_destroy, lab_dns))


@task(
    name="chaos",
    help={
        "name": LAB_HELP,
        "faults": "how many flows to cut (each healed and checked before the next)",
        "seed": "the random generator's seed: the same seed replays the same flows, points, faults",
    },
)
@_friendly
def lab_chaos(c, faults=10, seed=1, name=None):
    """Cut flows at random points with random faults; heal each with one deploy; check the invariants."""
    from backhaul.lab import chaos

    chaos.run(_lab(name), int(faults), int(seed))


ns.collections["lab"].add_task(lab_chaos)
