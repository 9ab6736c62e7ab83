"""ufw: default deny in, SSH first, WireGuard only from the backends, 80/443 on the hub, service
ports on a backend only from the hub over the tunnel.

    pyinfra inventory.py deploys/firewall.py [--limit HOST]

Rules are owned by comment ("backhaul"): ones that no longer match the network file are removed,
rules an operator added by hand are left alone. SSH is allowed before ufw is ever enabled, and
a run that would cut the SSH session it runs over is refused before anything changes: a
session on another port than ssh.port, or over IPv6 while /etc/default/ufw says IPV6=no.
"""

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError

from backhaul import connection, plan, software, sshpath
from backhaul.facts import snapshot
from backhaul.facts.system import SshSession
from backhaul.facts.ufw import UfwState
from backhaul.network import load_current
from backhaul.operations import packages, ufw


@deploy("Firewall")
def firewall(packages_installed: bool):
    net = load_current()
    me = net.host(host.name)
    session = snapshot.get(SshSession)
    session_port = session["port"] if session else None
    if session_port is not None and session_port != net.ssh.port:
        # e.g. the provider forwards the dialled port to another one: allowing only ssh.port
        # and denying the rest would cut this very session and every later one.
        raise DeployError(
            f"{host.name}: refusing to change the firewall: this SSH session arrives on port "
            f"{session_port}, but the network file says ssh.port {net.ssh.port}, which is the "
            "only SSH port the firewall would allow. Set ssh.port to the port sshd listens on."
        )
    if not packages_installed:
        packages.installed(name="ufw", packages=software.FIREWALL)
    ssh_route = host.data.get("backhaul_ssh_route") or "direct"
    closed = sshpath.via_hub(me) and sshpath.closes_ssh(
        net, me, ssh_route, session, bool((snapshot.get(UfwState) or {}).get("active"))
    )
    rules = plan.firewall_rules(net, me, closed)  # SSH first
    if closed and not sshpath.session_allowed(session, sshpath.ssh_sources(net, me)):
        # ssh.via hub: the closed rules must still let in the session this run arrives on
        raise DeployError(
            f"{host.name}: refusing to close public SSH: this session comes from "
            f"{session['client']}, which neither the hub's tunnel address nor ssh.allow_from "
            "covers, so backhaul could not reach this host again. Check the jump through the hub "
            "(or add your address to ssh.allow_from)."
        )
    ufw.firewall(
        name="ufw rules, defaults (deny in), enabled",
        rules=rules,
        ssh_port=net.ssh.port,
        ssh_family=session["version"] if session else None,
    )


connection.fail_alone_when_lost(host)  # run alone too (ssh.via hub): see site.py
firewall(software.installed_by_site())
