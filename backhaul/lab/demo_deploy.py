"""pyinfra deploy of the lab's demo services (run by `inv lab.demo`, see backhaul/lab/demo.py).

Everything is derived from the lab's network.yml: a service whose `unit:` is
backhaul-demo-<name>.service gets the stdlib demo app as that unit, bound to the backend's
WireGuard address and the service's port; the service whose `compose:` is the demo's compose
file gets Docker, a locally built image (no registry is reachable from the lab) and the file.

Nothing is bound here: units are enabled but not started, and the compose project is not
brought up; `inv deploy` does both once the tunnel (and so the address) exists.
"""

from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import FactBase
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from backhaul.facts.docker import DockerDaemon
from backhaul.lab.demo import COMPOSE_FILE
from backhaul.network import load_current
from backhaul.operations import packages

APP_DIR = "/opt/backhaul-demo"
APP = f"{APP_DIR}/demo_app.py"
IMAGE = "backhaul-demo-web:1"

# No Restart=: the demo proves that systemd ordering (backhaul's drop-in) makes the bind work
# at boot, not that a retry loop eventually gets lucky.
UNIT = """\
[Unit]
Description=backhaul lab demo service '{name}' (HTTP + WebSocket echo)
Documentation=file://{app}

[Service]
ExecStart=/usr/bin/python3 {app} --bind {bind} --port {port} --name {name}
DynamicUser=yes

[Install]
WantedBy=multi-user.target
"""

# Published without an address on purpose: docker_bind must bind both to the WireGuard address.
COMPOSE = """\
# backhaul lab demo (written once by `inv lab.demo`; `inv deploy` binds its ports to the
# backend's WireGuard address and keeps the original as docker-compose.yml.backhaul.bak)
services:
  web:
    image: {image}
    restart: unless-stopped
    init: true  # httpd as PID 1 ignores SIGTERM: every stop (and reboot) would wait 10 s
    ports:
      - "{port}:8080"
  extra:
    image: {image}
    restart: unless-stopped
    init: true
    ports:
      - "9001:8080"
"""

BUILD_IMAGE = (
    'd=$(mktemp -d) && trap \'rm -rf "$d"\' EXIT && mkdir -p "$d/bin" "$d/www"'
    ' && cp /bin/busybox "$d/bin/busybox" && ln -s busybox "$d/bin/sh"'
    " && printf '%s\\n' '<!doctype html><title>backhaul demo web</title>"
    '<p>backhaul demo web (Docker) on {host}</p>\' > "$d/www/index.html"'
    ' && tar -C "$d" -c . | docker import'
    ' -c \'CMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]\''
    " - {image}"
)


class DemoDocker(FactBase):
    """Whether the demo image and compose file are already there (both are made once)."""

    def command(self) -> str:
        return (
            f"if docker image inspect {IMAGE} >/dev/null 2>&1; then echo image; fi;"
            f" if [ -e {COMPOSE_FILE} ]; then echo compose; fi; true"
        )

    def default(self) -> set:
        return set()

    def process(self, output: list[str]) -> set:
        return {line.strip() for line in output}


def demo_services():
    net = load_current()
    me = net.host(host.name)
    mine = net.services_on(host.name)
    native = [s for s in mine if s.unit and s.unit.startswith("backhaul-demo-")]
    docker = [s for s in mine if s.compose == COMPOSE_FILE]

    if native:
        files.directory(name="Demo app directory", path=APP_DIR, mode="755")
        files.put(
            name="Demo app (stdlib HTTP + WebSocket echo)",
            src=str(Path(__file__).with_name("demo_app.py")),
            dest=APP,
            mode="755",
        )
    written = [
        files.put(
            name="Demo unit file (backhaul-demo-<service>.service)",
            src=StringIO(UNIT.format(name=s.name, app=APP, bind=me.wg_ip, port=s.port)),
            dest=f"/etc/systemd/system/{s.unit}",
            mode="644",
        )
        for s in native
    ]
    if written:
        systemd.daemon_reload(name="systemd: read the demo units", _if=any_changed(*written))
    for s in native:
        # Enabled, not started: its address exists only after `inv deploy` made the tunnel.
        systemd.service(
            name="Enable the demo unit (inv deploy starts it)",
            service=s.unit,
            running=None,
            enabled=True,
        )

    if docker:
        # Debian 13: the `docker` command is in docker-cli, which docker.io only recommends
        cli = ["docker-cli"] if host.get_fact(DockerDaemon)["cli_package"] else []
        packages.installed(
            name="Docker, compose and busybox (for the demo image)",
            packages=["docker.io", *cli, "docker-compose", "busybox-static"],
        )
        have = host.get_fact(DemoDocker)
        if "image" not in have:
            server.shell(
                name=f"Demo image {IMAGE} (docker import of busybox-static: no registry here)",
                commands=[BUILD_IMAGE.format(host=host.name, image=IMAGE)],
            )
        if "compose" not in have:
            # Once only: docker_bind rewrites this file, a second lab.demo must not undo that.
            files.directory(name="Demo compose directory", path=str(Path(COMPOSE_FILE).parent))
            files.put(
                name=f"Demo compose file {COMPOSE_FILE} (ports without an address)",
                src=StringIO(COMPOSE.format(image=IMAGE, port=docker[0].port)),
                dest=COMPOSE_FILE,
                mode="644",
            )


demo_services()
