"""How backhaul reaches each host over SSH, and who else a backend's SSH answers.

``ssh.via: hub`` (network-wide, or ``ssh_via:`` per backend) closes a backend's last public
port: its SSH answers only the hub over the tunnel and the admin addresses of
``ssh.allow_from`` (the way in that does not depend on the hub). backhaul then reaches it with
an SSH jump through the hub (like OpenSSH's ProxyJump, but every backend of a run rides one
connection to the hub: ``backhaul/hubjump.py``): the controller needs nothing but SSH, no tunnel
of its own, and a jump works from any machine the operator deploys from. A controller-side
WireGuard client would need root and a peer per operator machine here.

A backend is on one of two routes in a run:

- ``hub``: SSH to its WireGuard address, jumping through the hub. The firewall then gets the
  closed SSH rules (tunnel + allow_from).
- ``direct``: SSH to its public address (``ssh_host``). That is its first deploy (no tunnel
  yet), or the hub is dead and the controller is on ``ssh.allow_from``. A direct run keeps
  public SSH open (it may be the only way in), and the flow then closes it in a firewall run
  over the hub, once SSH over the hub is shown to work (``flows.deploy``).

The route of a run comes from $BACKHAUL_SSH_DIRECT (names the flows set for a run), so that the
pyinfra child and the flows agree.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shlex
import tempfile
from pathlib import Path

from backhaul.hubjump import HUB_ALIAS, Jump
from backhaul.network import Host, Network

DIRECT_ENV = "BACKHAUL_SSH_DIRECT"  # comma-separated backends reached directly in this run


def via_hub(host: Host) -> bool:
    return host.role == "backend" and host.ssh_via == "hub"


# -- which backends a run reaches directly ------------------------------------------------------
# A via-hub backend is reached through the hub once that has worked with this hub (remembered
# next to the network file); before (its first deploy, or a new hub), directly. Either guess
# that fails to connect is tried the other way by the flow, so losing the memo costs time only.
def _memo(network_file: str | os.PathLike[str]) -> Path:
    real = Path(os.path.realpath(network_file))
    return real.with_name(f".{real.name}.via-hub")


def proven(network_file: str | os.PathLike[str]) -> dict[str, str]:
    """Backend name -> the hub public IP it was last reached through."""
    try:
        lines = _memo(network_file).read_text().splitlines()
    except FileNotFoundError:
        return {}
    return dict(line.split(" ", 1) for line in lines if " " in line)


def remember(network_file: str | os.PathLike[str], net: Network, names: list[str]) -> None:
    """These backends were just reached through the hub (kept only for via-hub backends)."""
    memo = proven(network_file)
    new = {n: ip for n, ip in memo.items() if n in {b.name for b in net.backends if via_hub(b)}}
    new.update({n: str(net.hub.public_ip) for n in names})
    if new != memo:
        path = _memo(network_file)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text("".join(f"{n} {ip}\n" for n, ip in sorted(new.items())))
        tmp.replace(path)


def first_guess(network_file: str | os.PathLike[str], net: Network) -> set[str]:
    """The via-hub backends to reach directly in the first run: not proven through this hub."""
    memo = proven(network_file)
    return {b.name for b in net.backends if via_hub(b) and memo.get(b.name) != str(net.hub.public_ip)}


def direct_names(env: dict | None = None) -> set[str]:
    raw = (env if env is not None else os.environ).get(DIRECT_ENV, "")
    return {n for n in raw.split(",") if n}


def route(host: Host, direct: set[str] | None = None) -> str:
    """``hub`` or ``direct``: how this run reaches the host."""
    direct = direct_names() if direct is None else direct
    return "hub" if via_hub(host) and host.name not in direct else "direct"


def hub_aliases(net: Network) -> tuple[str, ...]:
    """Each hub's name in the jump's ssh_config, in the order a jump tries them (file order:
    the first hub first)."""
    return tuple(f"{HUB_ALIAS}-{h.name}" for h in net.hubs)


def jump_config(net: Network) -> str:
    """The ssh_config of the jump hosts: how ``hubjump`` reaches each hub (user, port, key,
    known hosts; the backends' own come from host data)."""
    lines = ["# written by backhaul (backhaul/sshpath.py): via-hub backends jump through a hub"]
    for alias, hub in zip(hub_aliases(net), net.hubs, strict=True):
        lines += [
            f"Host {alias}",
            f"  HostName {hub.ssh_host}",
            f"  User {net.ssh.user}",
            "  StrictHostKeyChecking accept-new",
            "  ConnectTimeout 10",
        ]
        if net.ssh.port != 22:  # (written for 22, paramiko would look the hub up as [addr]:22)
            lines.append(f"  Port {net.ssh.port}")
        if net.ssh.key:
            lines.append(f"  IdentityFile {net.ssh.key}")
        if net.ssh.known_hosts:
            lines.append(f"  UserKnownHostsFile {net.ssh.known_hosts}")
    # (no ProxyJump for the backends: pyinfra would open a connection to the hub for each)
    return "\n".join([*lines, ""])


def jump_config_file(net: Network) -> str:
    """The ssh_config on disk (one file per content, 0600, in a private temp dir)."""
    text = jump_config(net)
    d = Path(tempfile.gettempdir()) / f"backhaul-ssh-{os.getuid()}"
    d.mkdir(mode=0o700, exist_ok=True)
    path = d / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.conf"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o600)
        tmp.replace(path)
    return str(path)


def connection_data(net: Network, host: Host, direct: set[str] | None = None) -> dict:
    """Host data that differs by route (merged into backhaul.inventory.host_data)."""
    r = route(host, direct)
    data = {"backhaul_ssh_route": r}
    if r == "hub":
        data["ssh_hostname"] = str(host.wg_ip)
        config = jump_config_file(net)
        # this file (not ~/.ssh/config) for the backend too, and its socket: a channel of the
        # run's one connection to the hub
        data["ssh_config_file"] = config
        jump = Jump(config, str(host.wg_ip), net.ssh.port, hub_aliases(net))
        data["ssh_paramiko_connect_kwargs"] = {"sock": jump}
        pin_tunnel_key(net, host)
    return data


# -- host keys: a via-hub backend's key, learnt once ------------------------------------------
def known_hosts_path(net: Network) -> Path:
    """Where backhaul's SSH keeps host keys: ``ssh.known_hosts``, else the user's own."""
    return net.ssh.known_hosts or Path("~/.ssh/known_hosts").expanduser()


def _key_name(net: Network, address: str) -> str:
    # as OpenSSH and paramiko name a host in known_hosts: [address]:port off port 22
    return address if net.ssh.port == 22 else f"[{address}]:{net.ssh.port}"


def pin_tunnel_key(net: Network, host: Host) -> None:
    """Through the hub a backend is reached at its WireGuard address, a name its host key is
    not known by. Its key is learnt at its public address (its first deploy, or the operator
    writing it into ``ssh.known_hosts``): written here under the tunnel address as well, so the
    first jump is checked against that key instead of accepting whatever answers (accept-new).
    A key the file already has for the tunnel address is left alone: a different one fails."""
    import paramiko

    path = known_hosts_path(net)
    try:
        keys = paramiko.HostKeys(str(path))
    except FileNotFoundError:
        return  # nothing learnt yet: its first deploy (directly) learns it
    tunnel = _key_name(net, str(host.wg_ip))
    if keys.lookup(tunnel):
        return
    learnt = keys.lookup(_key_name(net, host.ssh_host))
    if not learnt:
        return
    lines = [f"{tunnel} {kind} {key.get_base64()}\n" for kind, key in learnt.items()]
    with open(path, "a+") as f:
        f.seek(0, os.SEEK_END)
        if f.tell():  # a file whose last line has no newline yet
            f.seek(f.tell() - 1)
            if f.read(1) != "\n":
                lines.insert(0, "\n")
        f.writelines(lines)


# -- the firewall's SSH rules (plan.firewall_rules asks here) ----------------------------------
def ssh_sources(net: Network, host: Host) -> list[tuple[str, str | None, str]]:
    """Who a via-hub backend's SSH answers once closed: (source, interface, why).

    Every hub over the tunnel (a jump goes through whichever answers), then
    ``ssh.allow_from``. (Admin clients on the tunnel, when the network has them, come in here
    too.)"""
    out = [(str(net.hub.wg_ip), net.interface, "SSH from the hub over the tunnel (the jump)")]
    out += [
        (
            str(h.wg_ip),
            net.interface,
            f"SSH from the hub {h.name} over the tunnel (the jump while the first is down)",
        )
        for h in net.other_hubs
    ]
    out += [
        (a, None, "SSH from an admin address (ssh.allow_from): the way in without the hub")
        for a in net.ssh.allow_from
    ]
    return out


def closes_ssh(net: Network, host: Host, route_: str, session: dict | None, ufw_active: bool) -> bool:
    """Whether this run gives a via-hub backend its closed SSH rules.

    Over the hub: yes. Directly: only when this session comes from ``ssh.allow_from`` and ufw
    is already on (the dead-hub path: nothing opens to the world). Otherwise (a first deploy)
    public SSH stays for this run: it is the only way in until SSH over the hub is shown to
    work, and the flow closes it right after (``flows``)."""
    if not via_hub(host):
        return False
    if route_ == "hub":
        return True
    admin = [s for s in ssh_sources(net, host) if s[1] is None]
    return ufw_active and bool(session) and bool(admin) and session_allowed(session, admin)


def session_allowed(session: dict | None, sources: list[tuple[str, str | None, str]] | None) -> bool:
    """Whether the SSH session this run arrives on stays allowed by these SSH sources
    (None: public SSH, which allows every session; no session known: nothing to cut)."""
    if sources is None or not session:
        return True
    try:
        client = ipaddress.ip_address(session["client"].partition("%")[0])
    except ValueError:
        return False
    if client.version == 6 and client.ipv4_mapped:
        client = client.ipv4_mapped
    for src, _iface, _why in sources:
        if client in ipaddress.ip_network(src, strict=False):
            return True
    return False


# -- commands that cut the path they arrive on -------------------------------------------------
def later(command: str, seconds: int = 2) -> str:
    """``command`` run by systemd ``seconds`` from now, after this session has answered: for a
    command that stops or re-keys the tunnel its own session rides (a via-hub backend).
    AccuracySec: a transient timer's default accuracy is a whole minute."""
    return (
        f"systemd-run --quiet --collect --on-active={seconds} "
        f"--timer-property=AccuracySec=100ms sh -c {shlex.quote(command)}"
    )
