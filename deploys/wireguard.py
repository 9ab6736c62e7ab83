"""WireGuard hub and spoke: packages, a key pair made on each host, wg0.conf, wg-quick@wg0.

    pyinfra inventory.py deploys/wireguard.py [--limit HOST]

Configs are rendered when their operation runs, after every host's key pair exists, so one run
takes bare hosts to a working network. A partial run never drops a peer: the hub keeps the peer
it has for a backend whose key this run cannot read. Peer changes are applied with `wg
syncconf` (systemctl reload), so other tunnels stay up; only an [Interface] change restarts.
"""

from pyinfra import host, inventory, logger
from pyinfra.api import deploy
from pyinfra.api.exceptions import PyinfraError
from pyinfra.operations import server

from backhaul import pending, plan, software
from backhaul.facts.wireguard import WireguardConfigPeers, WireguardState
from backhaul.network import Network, load_current
from backhaul.operations import packages, wireguard
from backhaul.render import render


def _public_key(name: str, interface: str) -> str | None:
    """A host's public key, read from that host now; None if it has none or cannot be reached."""
    try:
        state = inventory.get_host(name).get_fact(WireguardState, interface=interface) or {}
    except (PyinfraError, OSError) as e:
        logger.warning(f"{host.name}: cannot read {name}'s public key ({e})")
        return None
    return state.get("public_key") or state.get("public_key_file")


def _hub_conf(net: Network) -> str:
    iface = net.interface
    keys = {b.name: _public_key(b.name, iface) for b in net.backends}
    current = host.get_fact(WireguardConfigPeers, interface=iface) or {}
    peers, missing = plan.hub_peers(net, keys, current)
    if missing:
        msg = f"{host.name}: no public key for {', '.join(missing)} (unreachable, never deployed)"
        pending.record(msg)
        logger.warning(f"{msg}: their peers wait for a deploy that reaches them")
    return render("wg-hub.conf.j2", interface=iface, address=plan.wg_address(net, net.hub),
                  listen_port=net.port, peers=peers)  # fmt: skip


def _backend_conf(net: Network, name: str) -> str:
    iface = net.interface
    hub_key = _public_key(net.hub.name, iface)
    if not hub_key:
        msg = f"{name}: the hub's public key cannot be read (hub unreachable or never deployed)"
        pending.record(msg)
        logger.warning(msg)
    return render("wg-backend.conf.j2", interface=iface,
                  address=plan.wg_address(net, net.host(name)), listen_port=net.port,
                  hub=plan.backend_hub_peer(net, hub_key))  # fmt: skip


@deploy("WireGuard")
def wireguard_network():
    net = load_current()
    me = net.host(host.name)
    iface = net.interface
    state = host.get_fact(WireguardState, interface=iface) or {}

    # No kernel module (containers, some provider kernels): wg-quick falls back to wireguard-go.
    packages.installed(name="WireGuard packages",
                       packages=software.wireguard(state.get("kernel_module")))
    wireguard.keypair(name="WireGuard key pair (made on the host)", interface=iface)
    if me.role == "hub" and net.backend_to_backend:
        # Only ever turned on: other software on the hub (Docker) may rely on it, and with
        # backend_to_backend off ufw's routed policy (deny) already stops the forwarding.
        server.sysctl(
            name="IP forwarding (backend to backend through the hub)",
            key="net.ipv4.ip_forward", value=1, persist=True,
            persist_file="/etc/sysctl.d/60-backhaul.conf",
        )  # fmt: skip
    # Two operations, the hub's first: it knows every peer before a backend's tunnel comes up
    # and says hello, so the first handshake succeeds (else WireGuard retries after 5 s).
    if me.role == "hub":
        wireguard.config(name=f"hub {iface}.conf and wg-quick@{iface}", interface=iface,
                         content=lambda: _hub_conf(net))  # fmt: skip
    else:
        wireguard.config(name=f"backend {iface}.conf and wg-quick@{iface}", interface=iface,
                         content=lambda: _backend_conf(net, me.name))  # fmt: skip


wireguard_network()
