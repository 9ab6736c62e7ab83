"""Bring a lab up, take it down, report on it. Idempotent, and safe after a crash or a kill."""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from backhaul.errors import LabError
from backhaul.lab import cgroups, demo, files, guard, image, neighbour, services, system, vmimage
from backhaul.lab.hosts import HostRunner, ssh_ready
from backhaul.lab.layout import STATE_ROOT, Lab, LabHost
from backhaul.lab.vmhosts import VmRunner, is_vm_dir

REQUIRED_TOOLS = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "apt-cacher-ng": "apt-cacher-ng",
    "pebble": "pebble",
    "pebble-challtestsrv": "pebble",
    "openssl": "openssl",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "ip": "iproute2",
}
INSTALL_HINT = "apt-get install -y --no-install-recommends"
VM_TOOLS = {"qemu-system-x86_64": "qemu-system-x86", "mkfs.ext4": "e2fsprogs"}
# Emulated (TCG) VMs boot to SSH in about 3 minutes on a busy machine (181 s at load 10), and
# took over 7 on one at load 50-80 (seen: 300 s was not enough).
VM_BOOT_TIMEOUT = 900.0


def preflight(vm: bool = False) -> None:
    """Everything the lab needs from this machine, reported all at once."""
    problems = []
    if os.geteuid() != 0:
        problems.append("run as root (the lab mounts overlays, makes bridges and cgroups)")
    missing = sorted(
        {
            pkg
            for tool, pkg in (REQUIRED_TOOLS | (VM_TOOLS if vm else {})).items()
            if not shutil.which(tool) and not Path("/usr/sbin", tool).exists()
        }
    )
    if missing:
        problems.append(f"install the lab's tools: {INSTALL_HINT} {' '.join(missing)}")
    if "overlay" not in Path("/proc/filesystems").read_text():
        problems.append("the kernel has no overlayfs: run `modprobe overlay`")
    if not Path("/dev/net/tun").exists():
        problems.append("/dev/net/tun is missing: wireguard-go in the hosts needs it")
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise LabError(f"the lab cannot start on this machine:\n{listed}")


def runner(lab: Lab, host: LabHost, rootfs: Path, pubkey: str) -> HostRunner:
    """The host's runner: a VM's or a container's, as the lab is."""
    return (VmRunner if lab.vm else HostRunner)(lab, host, rootfs, pubkey)


def _runners(lab: Lab, rootfs: dict[str, Path], pubkey: str) -> list[HostRunner]:
    def image_of(h: LabHost) -> Path:  # a VM boots its role's image (vmimage: why)
        if lab.vm:
            return vmimage.role_rootfs(h.suite, h.role)
        if lab.packaged:
            return image.with_packages(rootfs[h.suite], image.base_dir(h.suite), h.role, "the host image")
        return rootfs[h.suite]

    return [runner(lab, h, image_of(h), pubkey) for h in lab.hosts]


def _raise_inotify_limit() -> None:
    # 21 hosts failed to boot with "Too many open files" at the default 128 (LAB.md)
    p = Path("/proc/sys/fs/inotify/max_user_instances")
    if int(p.read_text()) < 1024:
        p.write_text("1024\n")


def _ensure_bridge(lab: Lab) -> None:
    if system.link_exists(lab.bridge):
        return
    routes = system.run(["ip", "-4", "route", "show", str(lab.subnet)], check=False).stdout.strip()
    if routes:
        raise LabError(
            f"lab subnet {lab.subnet} is already routed on this machine ({routes}); "
            "choose another with --subnet or take the other lab down"
        )
    system.run(["ip", "link", "add", lab.bridge, "type", "bridge"])
    system.run(["ip", "addr", "add", f"{lab.gateway}/{lab.subnet.prefixlen}", "dev", lab.bridge])
    # nodad: the address is usable at once (the apt cache and pebble bind it right after)
    system.run(
        ["ip", "-6", "addr", "add", f"{lab.gateway6}/{lab.subnet6.prefixlen}", "dev", lab.bridge, "nodad"]
    )
    system.run(["ip", "link", "set", lab.bridge, "up"])


def _record(lab: Lab) -> Path:
    return lab.state_dir / "lab.json"


def as_recorded(lab: Lab) -> Lab:
    """The lab as its last `up` recorded it (size, spares, release), else ``lab`` as given:
    for the tasks that act on a lab that is up without repeating its options."""
    rec = _record(lab)
    return _recorded(json.loads(rec.read_text()), lab) if rec.exists() else lab


def _recorded(old: dict, lab: Lab) -> Lab:
    """The lab as lab.json recorded it (its subnet and size decide what to tear down; labs
    recorded before the suite was are Debian 12 labs)."""
    return Lab.make(
        old["name"],
        old["backends"],
        old["subnet"],
        lab.project_dir,
        old.get("spares", 0),
        old.get("suite", "bookworm"),
        old.get("backend_suite"),
        old.get("ipv6", False),
        old.get("v6_only", ()),
        old.get("vm", False),
        old.get("hubs", 1),
        old.get("packaged", False),
    )


def _subnet_taken(lab: Lab) -> None:
    """Refuse a subnet another lab on this machine already has (derived subnets of two names
    can be the same): two bridges on one subnet would route each other's hosts wrongly."""
    for other in all_labs():
        rec = STATE_ROOT / other / "lab.json"
        if other == lab.name or not rec.exists():
            continue
        try:
            subnet = json.loads(rec.read_text()).get("subnet")
        except (OSError, ValueError):
            continue
        if subnet == str(lab.subnet):
            raise LabError(
                f"lab subnet {lab.subnet} is already lab '{other}''s (the subnets derived from "
                "two names can be the same): give this lab one no other lab has with --subnet "
                f"(a /24 in 198.18.0.0/15), or remove the other (inv lab.down --name {other} "
                "--purge)"
            )


def up(lab: Lab, fresh: bool = False, log=print) -> dict:
    """Bring the lab to ``lab.backends`` running backends; quick and changeless when it is up."""
    preflight(lab.vm)
    t0 = time.monotonic()
    _subnet_taken(lab)
    rec = _record(lab)
    if rec.exists():
        old = json.loads(rec.read_text())
        was = _recorded(old, lab)
        # a host's disk is an overlay on its release's image (with packages or not): another
        # image needs new disks; a host's addresses are written before it boots: another
        # address plan, new hosts
        if (was.subnet, was.suite, was.backend_suite, was.v6_only, was.vm, was.packaged) != (
            lab.subnet,
            lab.suite,
            lab.backend_suite,
            lab.v6_only,
            lab.vm,
            lab.packaged,
        ) or fresh:
            down(was, purge=True, log=log)
    lab.state_dir.mkdir(parents=True, exist_ok=True)
    rec.write_text(
        json.dumps(
            {
                "name": lab.name,
                "subnet": str(lab.subnet),
                "backends": lab.backends,
                "spares": lab.spares,
                "suite": lab.suite,
                "backend_suite": lab.backend_suite,
                "ipv6": lab.ipv6,
                "v6_only": sorted(lab.v6_only),
                "vm": lab.vm,
                "hubs": lab.hubs,
                "packaged": lab.packaged,
            }
        )
    )
    rootfs, built = {}, 0.0
    for suite in lab.suites:
        rootfs[suite], took = (vmimage if lab.vm else image).ensure_built(suite, log=log)
        built += took or 0.0
    _raise_inotify_limit()
    key, pubkey = files.ensure_ssh_key(lab)
    _ensure_bridge(lab)
    services.start_apt_cache(lab)
    services.start_acme(lab)

    runners = _runners(lab, rootfs, pubkey)
    _stop_extra_hosts(lab, {r.host.name for r in runners})
    started = [r for r in runners if not r.is_running()]
    for r in started:
        r.start()
    known_hosts = files.write_known_hosts(lab, {r.host.name: r.host_key() for r in runners})
    files.write_ssh_config(lab)
    with ThreadPoolExecutor(max_workers=min(32, len(runners))) as pool:
        wait = VM_BOOT_TIMEOUT if lab.vm else 90.0
        answers = pool.map(lambda r: ssh_ready(lab, r.host.address, key, known_hosts, wait), runners)
        states = dict(zip((r.host.name for r in runners), answers, strict=True))
    bad = {n: s for n, s in states.items() if s != "running"}
    if bad:
        raise LabError(
            "lab hosts did not boot cleanly: "
            + ", ".join(f"{n}: {s}" for n, s in bad.items())
            + f"\n(console logs: {lab.state_dir}/hosts/<host>/console.log)"
        )
    network = lab.files_dir / "network.yml"
    text = files.network_yaml(lab, services.acme_directory(lab), services=demo.network_services(lab))
    if not network.exists() or network.read_text() != text:
        network.write_text(text)
    if lab.hubs > 1:
        services.name_every_hub(lab, network)
    took = time.monotonic() - t0
    suites = "/".join(lab.suites)
    log(
        f"lab '{lab.name}' up ({suites}): {len(runners)} hosts ({len(started)} booted) in {took:.1f}s"
        + (f" (base image built in {built:.0f}s)" if built else "")
    )
    return {"hosts": len(runners), "booted": len(started), "seconds": took}


def _stop_extra_hosts(lab: Lab, wanted: set[str]) -> None:
    hosts_dir = lab.state_dir / "hosts"
    if not hosts_dir.exists():
        return
    for d in hosts_dir.iterdir():
        if d.name not in wanted:
            _orphan_runner(lab, d).purge()


def _orphan_runner(lab: Lab, d: Path) -> HostRunner:
    """A runner for a host dir the current lab size does not include (or any, at down).

    Only stop/purge are called on it: the machine name (its cgroups) comes from the launcher
    spec the host was started with; its address is never used. A VM host is known by its
    files (its tap's name comes from vm.json)."""
    if is_vm_dir(d):
        machine = f"{lab.name}-x"
        spec = d / "vm.json"
        if spec.exists():
            machine = json.loads(spec.read_text())["tap"].removeprefix("vt-")
        return VmRunner(lab, LabHost(d.name, machine, lab.gateway, "backend"), Path("/"), "")
    spec = d / "launcher.json"
    machine = f"{lab.name}-x"
    if spec.exists():
        cmd = json.loads(spec.read_text())["command"]
        machine = cmd[cmd.index("-M") + 1]
    host = LabHost(d.name, machine, lab.gateway, "backend")
    return HostRunner(lab, host, Path("/"), "")


def down(lab: Lab, purge: bool = False, log=print) -> dict:
    """Stop every host and service of the lab; leave no mount, bridge, veth, cgroup or process."""
    t0 = time.monotonic()
    rec = _record(lab)
    if rec.exists():  # the recorded lab decides the subnet (bridge) and the host set
        old = json.loads(rec.read_text())
        lab = _recorded(old, lab)
    hosts_dir = lab.state_dir / "hosts"
    runners = [_orphan_runner(lab, d) for d in hosts_dir.iterdir()] if hosts_dir.exists() else []
    with ThreadPoolExecutor(max_workers=max(1, min(32, len(runners)))) as pool:
        list(pool.map(lambda r: r.purge() if purge else r.stop(), runners))
    # anything else left in the lab's cgroup tree (e.g. a host dir removed by hand)
    group = cgroups.group_dirs(lab.cgroup_name)
    cgroups.kill_all(group)
    left = cgroups.remove(group)
    services.stop_all(lab)
    neighbour.down(lab)  # its veth sits on the bridge
    for path in system.mounts_under(lab.state_dir):
        system.umount(path)
    for link in Path("/sys/class/net").iterdir():
        if link.name.startswith((f"vb-{lab.name}-", f"vt-{lab.name}-")):
            system.run(["ip", "link", "del", link.name], check=False)
    if system.link_exists(lab.bridge):
        system.run(["ip", "link", "del", lab.bridge])
    if purge:
        shutil.rmtree(lab.state_dir, ignore_errors=True)
    if left:
        raise LabError(f"could not remove cgroup {left[0]}: processes remain in it")
    took = time.monotonic() - t0
    log(f"lab '{lab.name}' down in {took:.1f}s" + (" (host disks removed)" if purge else ""))
    return {"seconds": took}


def destroy(lab: Lab, host: str, log=print) -> None:
    """One host gone for good (powered off, its disk deleted): a dead server, for the drill of
    replacing the hub. The rest of the lab keeps running; `lab.up` would make it afresh."""
    rec = _record(lab)
    if rec.exists():
        lab = _recorded(json.loads(rec.read_text()), lab)
    d = lab.state_dir / "hosts" / host
    if not d.exists():
        known = [h.name for h in lab.hosts]
        if host in known:  # a host of the lab whose disk is gone: destroyed before
            raise LabError(
                f"lab '{lab.name}': {host} is already destroyed (no disk at {d}); "
                f"inv lab.up --name {lab.name} makes it afresh"
            )
        raise LabError(f"lab '{lab.name}' has no host {host!r} (hosts: {', '.join(known)})")
    _orphan_runner(lab, d).purge()
    log(f"lab '{lab.name}': {host} destroyed (powered off, disk deleted)")


def status(lab: Lab) -> list[dict]:
    """One row per host: is its launcher alive, its overlay mounted, its SSH port open.

    A lab whose bridge is not up gets no connection at all (guard): its rows say "lab down"."""
    import socket

    rec = _record(lab)
    if rec.exists():
        old = json.loads(rec.read_text())
        lab = _recorded(old, lab)
    rows = []
    for h in lab.hosts:
        r = runner(lab, h, Path("/"), "")
        try:
            guard.require(lab, h.address)
        except LabError:
            ssh = "lab down"
        else:
            try:
                socket.create_connection((h.address, 22), timeout=0.5).close()
                ssh = "open"
            except OSError:
                ssh = "-"
        rows.append(
            {
                "host": h.name,
                "ip": h.address,
                "machine": h.machine,
                "suite": h.suite + (" vm" if lab.vm else ""),
                "running": r.is_running(),
                "ssh": ssh,
            }
        )
    return rows


def status_table(rows: list[dict]) -> str:
    """``status``'s rows as a table whose columns are as wide as their widest cell (an IPv6
    address is wider than an IPv4 one)."""
    cells = [["host", "ip", "suite", "running", "ssh"]] + [
        [r["host"], r["ip"], r["suite"], "yes" if r["running"] else "no", r["ssh"]] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    return "\n".join(
        " ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + " " + row[4] for row in cells
    )


def all_labs() -> list[str]:
    return sorted(p.name for p in STATE_ROOT.iterdir()) if STATE_ROOT.exists() else []
