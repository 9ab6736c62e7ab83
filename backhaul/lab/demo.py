"""The lab's demo services: `inv lab.demo [--name X]` installs them, `inv deploy` binds them.

    backend-1  app    backhaul-demo-app.service    10.50.0.2:8080  HTTP + WebSocket echo, HSTS
    backend-2  admin  backhaul-demo-admin.service  10.50.0.3:8080  allow-listed (the lab gateway)
    backend-2  web    Docker (compose v1/v2)       10.50.0.3:8081  busybox httpd, image built here;
                      /opt/demo/docker-compose.yml also publishes 9001, not a backhaul service

The services are written into the lab's network.yml (and kept there by later `lab.up` runs: a
marker in the lab's state dir says the demo is installed). Installing binds nothing: the units
are enabled, not started, and the compose file publishes without an address, as a customer's
would: `inv deploy` (docker_bind, units) binds them to the WireGuard address and starts them.
"""

from __future__ import annotations

import json
import time

from backhaul.errors import LabError
from backhaul.lab import files, guard, services
from backhaul.lab.layout import Lab

DEPLOY = "backhaul/lab/demo_deploy.py"
MARKER = "demo.json"
COMPOSE_FILE = "/opt/demo/docker-compose.yml"


def installed(lab: Lab) -> bool:
    return (lab.state_dir / MARKER).exists()


def network_services(lab: Lab) -> str:
    """The demo's entries under `services:` of the lab's network.yml ("" before lab.demo)."""
    if not installed(lab):
        return ""
    backends = [h for h in lab.hosts if h.role == "backend"]
    out = []
    if backends:
        out += [
            "  - name: app",
            f"    backend: {backends[0].name}",
            "    port: 8080",
            f"    domains: [app.{lab.domain}]",
            "    websocket: true",
            "    hsts: true",
            "    unit: backhaul-demo-app.service",
        ]
    if len(backends) >= 2:
        out += [
            "  - name: admin",
            f"    backend: {backends[1].name}",
            "    port: 8080",
            f"    domains: [admin.{lab.domain}]",
            f"    allow: [{lab.gateway}/32]",
            "    unit: backhaul-demo-admin.service",
            "  - name: web",
            f"    backend: {backends[1].name}",
            "    port: 8081",
            f"    domains: [web.{lab.domain}]",
            f"    compose: {COMPOSE_FILE}",
        ]
    return "\n".join(out) + "\n" if out else ""


def _recorded(lab: Lab) -> Lab:
    """The lab as `lab.up` made it (its size and subnet), whatever the options say."""
    rec = lab.state_dir / "lab.json"
    if not rec.exists():
        raise LabError(f"the lab '{lab.name}' is not up: run `inv lab.up --name {lab.name}` first")
    from backhaul.lab.lab import _recorded as recorded  # lab.py imports this module

    return recorded(json.loads(rec.read_text()), lab)


def install(lab: Lab, log=print) -> dict:
    """Install the demo services on the lab's backends (idempotent) and list them in network.yml."""
    from backhaul import runner

    lab = _recorded(lab)
    network = lab.files_dir / "network.yml"
    if not network.exists():
        raise LabError(f"{network} is missing: run `inv lab.up --name {lab.name}` first")
    if not any(h.role == "backend" for h in lab.hosts):
        raise LabError(f"the lab '{lab.name}' has no backends: `inv lab.up --backends 2`")
    guard.require_up(lab)
    t0 = time.monotonic()
    (lab.state_dir / MARKER).write_text(json.dumps({"installed": time.time()}) + "\n")
    text = files.network_yaml(lab, services.acme_directory(lab), services=network_services(lab))
    if network.read_text() != text:
        network.write_text(text)
    if lab.hubs > 1:
        services.name_every_hub(lab, network)
    # the inventory group, not the names: pyinfra's --limit takes one pattern per flag
    rc = runner.run_pyinfra(network, deploy_file=DEPLOY, limit=["backends"]).rc
    if rc != 0:
        raise LabError(f"installing the demo services failed (pyinfra exit {rc}); see above")
    took = time.monotonic() - t0
    log(
        f"lab '{lab.name}': demo services installed in {took:.1f}s; `inv deploy --network "
        f"{network}` binds and starts them"
    )
    return {"seconds": took}
