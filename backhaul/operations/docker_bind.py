"""Keep Docker's published ports on the backend's WireGuard address, with every guard in place.

Docker writes its own iptables rules: a port published on 0.0.0.0 is open to the internet
whatever ufw says (shown in the lab). So three guards, each covering what the others miss:

1. the compose file names the WireGuard address in every published port
   (``backhaul.compose.rewrite_compose``; a backup of the customer's file is kept once);
2. compose's own networks carry ``com.docker.network.bridge.host_binding_ipv4`` (written by the
   same rewrite): a port published later without an address, on those networks, binds there;
3. ``"ip"`` in /etc/docker/daemon.json: the same for containers on the default bridge
   (``docker run -p 8080:80``), which guard 2 does not cover.

And ordering: docker.service starts after ``wg-quick@<if>`` (a drop-in), else at boot a
container's bind to the WireGuard address fails ("cannot assign requested address") and Docker
does not retry it.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import yaml
from pyinfra import host, logger
from pyinfra.api import OperationError, operation

from backhaul.compose import ComposeError, RewriteResult, rewrite_compose
from backhaul.facts import snapshot
from backhaul.facts.docker import (
    BACKUP_SUFFIX,
    DAEMON_JSON,
    DOCKER_DROPIN,
    HOST_BINDING_OPT,
    ComposeProject,
    DockerDaemon,
)
from backhaul.operations import hostfile, packages

# Container states in which Docker itself keeps the service up: `up -d` would change nothing.
_UP_STATES = {"running", "restarting"}
_ENABLED_STATES = {"enabled", "enabled-runtime", "static", "indirect", "generated", "alias"}
# Debian 13 moved the `docker` command out of docker.io into docker-cli (only recommended).
CLI_PACKAGE = "docker-cli"


def install_hint(daemon_state: dict[str, Any]) -> str:
    """The apt command that installs Docker on this host: docker-cli where apt has it."""
    cli = [CLI_PACKAGE] if daemon_state.get("cli_package") else []
    return " ".join(["apt-get install --no-install-recommends docker.io", *cli, "docker-compose"])


# --- pure helpers (unit-tested) ---------------------------------------------------------------


def merge_daemon_json(current: str | None, bind_ip: str) -> str | None:
    """daemon.json with ``"ip": bind_ip`` added to what is there; None when it already says so.

    Every other key the administrator set is kept (in its order). Raises ValueError when the
    file is not a JSON object: it is not ours to guess what was meant.
    """
    if current is None or not current.strip():
        settings: dict[str, Any] = {}
    else:
        try:
            settings = json.loads(current)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
        if not isinstance(settings, dict):
            raise ValueError(f"not a JSON object but a {type(settings).__name__}")
    if settings.get("ip") == bind_ip:
        return None
    settings["ip"] = bind_ip
    return json.dumps(settings, indent=2) + "\n"


@dataclass(frozen=True)
class ComposeTool:
    command: str  # what to run: "docker compose" or "docker-compose"
    v2: bool  # compose v2 semantics (long-syntax host_ip, absolute config_files labels)


def compose_tool(state: dict[str, Any]) -> ComposeTool | None:
    """The compose the host has, by what it says of itself (``ComposeProject``): the ``docker
    compose`` plugin, else a ``docker-compose`` program, which is v1 (Debian 12) or the v2
    program under that name (Debian 13); None when there is none."""
    if state.get("compose_v2"):
        return ComposeTool("docker compose", True)
    if state.get("compose_binary") or state.get("compose_v1"):
        return ComposeTool("docker-compose", not state.get("compose_v1"))
    return None


def _load(text: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _services(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = data.get("services")
    if not isinstance(services, dict):
        return {}
    return {str(k): (v if isinstance(v, dict) else {}) for k, v in services.items()}


def default_project_name(path: str, text: str) -> str:
    """The project name compose derives without ``-p``: top-level ``name:`` (v2) or the
    directory's name, lowercased, keeping ``[a-z0-9_-]`` (both versions normalize this way).
    ``COMPOSE_PROJECT_NAME`` in a ``.env`` file is not read here."""
    name = _load(text).get("name")
    raw = (
        str(name)
        if isinstance(name, str) and name
        else posixpath.basename(posixpath.dirname(posixpath.normpath(path)))
    )
    return re.sub(r"[^a-z0-9_-]", "", raw.lower()).lstrip("_-")


def owns(path: str, container: dict[str, str]) -> bool:
    """Whether a container was made from ``path`` (v1 labels files relative to working_dir)."""
    wd = container.get("working_dir") or "/"
    files = [f for f in (container.get("config_files") or "").split(",") if f]
    want = posixpath.normpath(path)
    return any(posixpath.normpath(posixpath.join(wd, f)) == want for f in files)


def project_names(path: str, text: str, containers: Iterable[dict[str, str]]) -> set[str]:
    names = {c["project"] for c in containers if owns(path, c) and c.get("project")}
    return names or {default_project_name(path, text)}


def services_started_by_up(text: str) -> list[str]:
    """The services ``up -d`` starts: all but those behind ``profiles:`` or scaled to 0."""
    out = []
    for name, svc in _services(_load(text)).items():
        if svc.get("profiles"):
            continue
        replicas = (svc.get("deploy") or {}).get("replicas") if isinstance(svc.get("deploy"), dict) else None
        if svc.get("scale") == 0 or replicas == 0:
            continue
        out.append(name)
    return out


def services_down(path: str, text: str, containers: Iterable[dict[str, str]]) -> list[str]:
    """Services of the file with no container up (never started, stopped, exited, created)."""
    up = {c.get("service") for c in containers if owns(path, c) and c.get("state") in _UP_STATES}
    return [s for s in services_started_by_up(text) if s not in up]


def bound_networks(text: str, bind_ip: str) -> set[str]:
    """Networks of the file (compose's keys, e.g. ``default``) that say ``host_binding_ipv4``."""
    nets = _load(text).get("networks")
    out = set()
    for key, net in nets.items() if isinstance(nets, dict) else []:
        opts = net.get("driver_opts") if isinstance(net, dict) else None
        if isinstance(opts, dict) and str(opts.get(HOST_BINDING_OPT)) == bind_ip:
            out.add(str(key))
    return out


def stale_networks(
    path: str,
    text: str,
    bind_ip: str,
    containers: Iterable[dict[str, str]],
    networks: Iterable[dict[str, str]],
) -> list[str]:
    """Existing networks of the project that the file binds but Docker does not (yet).

    Docker cannot change a network's options in place: compose refuses with "needs to be
    recreated", so the project has to go ``down`` first (named volumes are kept).
    """
    projects = project_names(path, text, containers)
    wanted = bound_networks(text, bind_ip)
    return sorted(
        n["name"]
        for n in networks
        if n.get("project") in projects
        and n.get("network") in wanted
        and n.get("driver") == "bridge"
        and n.get("host_binding_ipv4") != bind_ip
    )


def long_syntax_ports(text: str) -> list[str]:
    """Services publishing a port in the long (mapping) syntax."""
    out = []
    for name, svc in _services(_load(text)).items():
        ports = svc.get("ports")
        if isinstance(ports, list) and any(isinstance(p, dict) for p in ports):
            out.append(name)
    return out


def without_restart_policy(text: str) -> list[str]:
    """Services that Docker will not start again after a reboot (no ``restart:`` policy)."""
    out = []
    for name in services_started_by_up(text):
        svc = _services(_load(text))[name]
        deploy = svc.get("deploy") if isinstance(svc.get("deploy"), dict) else {}
        policy = svc.get("restart")
        if policy in (None, False, "no") and not deploy.get("restart_policy"):
            out.append(name)
    return out


def changed(*ops: Any) -> Callable[[], bool]:
    """For ``force_up=``: whether any of the operations changed (or, in a dry run, would)."""

    def check() -> bool:
        return any(op.did_change() if op.is_complete() else op.will_change for op in ops)

    return check


def _compose_tool(path: str, st: dict[str, Any]) -> ComposeTool:
    """The compose command of a project whose file backhaul can read, or a refusal that says
    what to fix."""
    if not st["exists"]:
        raise OperationError(
            f"{path} does not exist on {host.name} (or is not a regular file): put the compose "
            "file there, or fix the service's `compose:` in the network file"
        )
    if st["unreadable"]:
        raise OperationError(f"{path} on {host.name} is not UTF-8 text; fix the file")
    tool = compose_tool(st)
    if tool is None:
        raise OperationError(
            f"neither `docker compose` (v2) nor `docker-compose` is installed on "
            f"{host.name}: {install_hint(snapshot.get(DockerDaemon))}"
        )
    return tool


def _rewritten(path: str, content: str, bind_ip: str, tool: ComposeTool) -> RewriteResult:
    """The compose file bound to ``bind_ip``, refused before anything is written when the
    host's compose could not read it (that would take the running project down)."""
    try:
        result = rewrite_compose(content, bind_ip)
    except ComposeError as exc:
        raise OperationError(f"{path} on {host.name}: {exc}") from None
    if not tool.v2 and long_syntax_ports(result.text):
        raise OperationError(
            f"{path} on {host.name}: docker-compose 1.x rejects `host_ip:` in long-syntax ports "
            f"(services: {', '.join(long_syntax_ports(result.text))}), so they cannot be bound to "
            f'{bind_ip}; write them in the short form "{bind_ip}:PUBLISHED:TARGET", or install '
            "compose v2 (`docker compose`)"
        )
    return result


def _warn(path: str, result: RewriteResult, tool: ComposeTool) -> None:
    for warning in result.warnings:
        if not (tool.v2 and "docker-compose 1.x" in warning):
            logger.warning(f"{host.name}: {path}: {warning}")
    for name in without_restart_policy(result.text):
        logger.warning(
            f"{host.name}: {path}: service {name!r} has no restart policy: Docker will not start "
            "it again after a reboot; add `restart: unless-stopped`"
        )


# --- operations -------------------------------------------------------------------------------


@operation()
def daemon(bind_ip: str, interface: str = "wg0", dropin: str = ""):
    """
    Make Docker's default bind address the WireGuard one, and start Docker after the tunnel.

    + bind_ip: the backend's WireGuard address (``"ip"`` in /etc/docker/daemon.json; the
      other keys of that file are kept, and the original is backed up once)
    + interface: the WireGuard interface (for the error messages)
    + dropin: the content of backhaul's ``docker.service`` drop-in (``Wants=`` + ``After=``
      ``wg-quick@<if>.service``)

    Docker is restarted only when daemon.json changed (``reset-failed`` first: systemd's start
    limit trips on quick restarts); a drop-in change needs only ``daemon-reload`` (ordering is
    used at the next start). Docker is enabled (it must come back after a reboot) and started
    when it is not running.

    **Example:**

    .. code:: python

        docker_bind.daemon(name="Docker", bind_ip="10.50.0.2", dropin=rendered_dropin)
    """
    st = snapshot.get(DockerDaemon)
    _refuse_a_docker_it_cannot_bind(st)
    new_json = _daemon_json(st, bind_ip)
    changes = []
    if not st["cli"]:
        # backhaul reads the containers' states with `docker ps`; compose v2 needs it too
        yield from packages.installed._inner(packages=[CLI_PACKAGE])
        changes.append(CLI_PACKAGE)
    if dropin and st["dropin"] != dropin:
        yield from hostfile.write(DOCKER_DROPIN, dropin, mkdir=True)
        yield "systemctl daemon-reload"
        changes.append("drop-in")
    if new_json is not None:
        yield "mkdir -p /etc/docker"
        yield from hostfile.write(
            DAEMON_JSON, new_json, expect=st["daemon_json"], backup=DAEMON_JSON + BACKUP_SUFFIX
        )
        changes.append("daemon.json")
    if st["enabled"] not in _ENABLED_STATES:
        yield "systemctl enable docker.service"
        changes.append("enabled")
    if new_json is not None and st["active"]:
        yield "systemctl reset-failed docker.service 2>/dev/null; systemctl restart docker.service"
    elif not st["active"]:
        yield "systemctl reset-failed docker.service 2>/dev/null; systemctl start docker.service"
    elif not changes:
        host.noop(f"Docker binds {bind_ip} by default and starts after wg-quick@{interface}")


def _refuse_a_docker_it_cannot_bind(st: dict[str, Any]) -> None:
    if not st["installed"]:
        raise OperationError(
            f"Docker is not installed on {host.name}, which runs compose services in the "
            f"network file: install it ({install_hint(st)}) or remove their `compose:`"
        )
    if not st["cli"] and not st["cli_package"]:
        raise OperationError(
            f"the `docker` command is missing on {host.name} (dockerd is installed): "
            "install the package that has it, then run again"
        )
    if st["enabled"] == "masked":
        raise OperationError(
            f"docker.service is masked on {host.name}: unmask it (systemctl unmask docker) or "
            "remove `compose:` from its services"
        )
    if st["daemon_json_unreadable"]:
        raise OperationError(f"{DAEMON_JSON} on {host.name} is not UTF-8 text: fix the file")


def _daemon_json(st: dict[str, Any], bind_ip: str) -> str | None:
    """daemon.json with ``"ip"`` set, or None when it has it already."""
    try:
        return merge_daemon_json(st["daemon_json"], bind_ip)
    except ValueError as exc:
        raise OperationError(
            f"{DAEMON_JSON} on {host.name} is {exc}; fix it (Docker itself will not start "
            f'with it), then run again: backhaul adds "ip": "{bind_ip}" to it'
        ) from None


@operation()
def compose(path: str, bind_ip: str, force_up: bool | Callable[[], bool] = False):
    """
    Bind a compose project's published ports to the WireGuard address and keep it running.

    + path: the compose file on the host (absolute)
    + bind_ip: the backend's WireGuard address
    + force_up: run ``up -d`` even when nothing here changed (e.g. ``changed(daemon_op)``:
      a Docker restart stops containers that have no restart policy)

    The file is rewritten by ``backhaul.compose.rewrite_compose`` (text edits: comments and
    layout kept), written atomically with its mode and owner, after a one-time backup
    ``<file>.backhaul.bak``, and never over an edit made on the host since it was read. Then
    ``docker compose`` (the v2 plugin, where installed) or ``docker-compose`` (v1, or v2 under
    that name) ``up -d`` runs only
    when the file changed, a service has no running container, or ``force_up`` says so.
    Networks that Docker made before the rewrite cannot take the bind option in place: the
    project goes ``down`` first (volumes are kept). A service without ``restart:`` is warned
    about: Docker will not start it again after a reboot.

    **Example:**

    .. code:: python

        docker_bind.compose(name="Compose app", path="/opt/app/docker-compose.yml",
                            bind_ip="10.50.0.2")
    """
    if not path.startswith("/"):
        raise OperationError(f"compose file {path!r} must be an absolute path on the host")
    st = snapshot.get(ComposeProject, path=path)
    tool = _compose_tool(path, st)
    cmd = tool.command
    result = _rewritten(path, st["content"], bind_ip, tool)
    text = result.text
    _warn(path, result, tool)

    if result.changed:
        yield from hostfile.write(path, text, expect=st["content"], backup=path + BACKUP_SUFFIX)

    stale = stale_networks(path, text, bind_ip, st["containers"], st["networks"])
    down = services_down(path, text, st["containers"])
    forced = force_up() if callable(force_up) else bool(force_up)
    base = f"cd {shlex.quote(posixpath.dirname(path))} && {cmd} -f {shlex.quote(path)}"
    if stale:
        yield f"{base} down"
    if result.changed or stale or down or forced:
        yield f"{base} up -d"
    else:
        host.noop(f"{path} publishes on {bind_ip} only and its services are running ({cmd})")
