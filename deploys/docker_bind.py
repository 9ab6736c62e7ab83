"""Docker on the backends: published ports on the WireGuard address only, Docker after the tunnel.

    pyinfra inventory.py deploys/docker_bind.py [--limit HOST]

For each backend with services that name a `compose:` file: Docker's default bind address
("ip" in /etc/docker/daemon.json) and its start after wg-quick (a drop-in), then each compose
file rewritten to publish on the WireGuard address (backup kept) and brought up when it changed
or is not running. Hosts without compose services are not touched.
"""

from pyinfra import host
from pyinfra.api import deploy

from backhaul.network import load_current
from backhaul.operations import docker_bind
from backhaul.render import render


@deploy("Docker bind")
def docker_bind_services():
    net = load_current()
    files = sorted({s.compose for s in net.services_on(host.name) if s.compose})
    if not files:
        return
    bind_ip = str(net.host(host.name).wg_ip)
    daemon = docker_bind.daemon(
        name="Docker: default bind address, start after the tunnel",
        bind_ip=bind_ip,
        interface=net.interface,
        dropin=render("systemd-docker-wg.conf.j2", interface=net.interface),
    )
    for path in files:
        docker_bind.compose(
            name=f"Compose {path}: ports on the WireGuard address",
            path=path,
            bind_ip=bind_ip,
            # a Docker restart stops the containers that have no restart policy
            force_up=docker_bind.changed(daemon),
        )


docker_bind_services()
