"""Docker facts for docker_bind: the daemon's settings and one compose project, one command each.

File contents travel base64-encoded (``base64 -w0``, one line) so that the controller sees the
exact bytes: a compose file belongs to the customer, and trailing blanks, CRLF line ends or a
missing final newline must survive the round trip unchanged.
"""

from __future__ import annotations

import base64
import binascii
import shlex
from typing import Any

from pyinfra.api import FactBase

DAEMON_JSON = "/etc/docker/daemon.json"
# Not `backhaul-wg.conf`: that name marks the drop-ins of native services (facts/units.py), and
# those that no longer belong to a service are removed. Docker's ordering is never stale.
DOCKER_DROPIN = "/etc/systemd/system/docker.service.d/backhaul-tunnel.conf"
BACKUP_SUFFIX = ".backhaul.bak"
HOST_BINDING_OPT = "com.docker.network.bridge.host_binding_ipv4"

_CONTAINER_FORMAT = "\t".join(
    [
        'container={{.Label "com.docker.compose.project"}}',
        '{{.Label "com.docker.compose.project.working_dir"}}',
        '{{.Label "com.docker.compose.project.config_files"}}',
        '{{.Label "com.docker.compose.service"}}',
        "{{.State}}",
    ]
)
_NETWORK_FORMAT = "\t".join(
    [
        'network={{index .Labels "com.docker.compose.project"}}',
        '{{index .Labels "com.docker.compose.network"}}',
        "{{.Name}}",
        "{{.Driver}}",
        f'{{{{index .Options "{HOST_BINDING_OPT}"}}}}',
    ]
)


def compose_major(version: str | None) -> int | None:
    """``"1.29.2"`` -> 1, ``"v2.26.1"`` -> 2; None when the version says nothing."""
    head = (version or "").strip().lstrip("v").split(".")[0]
    return int(head) if head.isdigit() else None


def _b64(value: str) -> str | None:
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


_SHOW_DOCKER = "systemctl show -p ActiveState,UnitFileState docker.service | sed 's/^/docker./'"


def _file_b64(key: str, path: str) -> str:
    """Shell: print ``key=<base64 of path>`` when ``path`` is a regular file."""
    p = shlex.quote(path)
    return f'if [ -f {p} ]; then printf "{key}=%s\\n" "$(base64 -w0 < {p})"; fi'


_CONTAINER_FIELDS = ("project", "working_dir", "config_files", "service", "state")
_NETWORK_FIELDS = ("project", "network", "name", "driver", "host_binding_ipv4")


def _record(names: tuple[str, ...], line: str) -> dict[str, str]:
    """One tab-separated line of docker's --format output; Go prints a missing key as
    ``<no value>``."""
    values = (line.split("\t") + [""] * len(names))[: len(names)]
    return {n: ("" if v == "<no value>" else v) for n, v in zip(names, values, strict=True)}


class DockerDaemon(FactBase[dict[str, Any]]):
    """
    The Docker daemon's state as docker_bind needs it.

    ``daemon_json`` / ``dropin`` are the contents of ``/etc/docker/daemon.json`` and of
    backhaul's ``docker.service`` drop-in (None when absent; ``daemon_json_unreadable`` is True
    when daemon.json is not UTF-8). ``active`` / ``enabled`` come from systemd. ``cli`` is
    whether the ``docker`` command is there: Debian 13 moved it out of ``docker.io`` into
    ``docker-cli``, which docker.io only recommends; when it is missing,
    ``cli_package`` says whether apt knows ``docker-cli`` (a Debian 12 host does not).

    .. code:: python

        {"installed": True, "cli": True, "cli_package": False, "active": True,
         "enabled": "enabled",
         "daemon_json": '{"log-level": "warn"}\\n', "daemon_json_unreadable": False,
         "dropin": None}
    """

    def command(self) -> str:
        return " ; ".join(
            [
                'printf "dockerd=%s\\n" "$(command -v dockerd)"',
                "if command -v docker >/dev/null; then echo cli=yes; else apt-cache policy"
                " docker-cli 2>/dev/null | sed -n 's/^ *Candidate: /cli_package=/p'; fi",
                _SHOW_DOCKER,
                _file_b64("daemon_json", DAEMON_JSON),
                _file_b64("dropin", DOCKER_DROPIN),
                "true",
            ]
        )

    def default(self) -> dict[str, Any]:
        return {
            "installed": False,
            "cli": False,
            "cli_package": False,
            "active": False,
            "enabled": "",
            "daemon_json": None,
            "daemon_json_unreadable": False,
            "dropin": None,
        }

    def process(self, output: list[str]) -> dict[str, Any]:
        state = self.default()
        for line in output:
            key, _, value = line.partition("=")
            if key == "dockerd":
                state["installed"] = bool(value)
            elif key == "cli":
                state["cli"] = True
            elif key == "cli_package":
                state["cli_package"] = value.strip() not in ("", "(none)")
            elif key == "docker.ActiveState":
                state["active"] = value == "active"
            elif key == "docker.UnitFileState":
                state["enabled"] = value
            elif key == "daemon_json":
                state["daemon_json"] = _b64(value)
                state["daemon_json_unreadable"] = state["daemon_json"] is None
            elif key == "dropin":
                state["dropin"] = _b64(value)
        return state


class ComposeProject(FactBase[dict[str, Any]]):
    """
    One compose file on the host and what Docker runs from it.

    + path: absolute path of the compose file

    ``containers`` and ``networks`` list every compose-made container and network on the host
    (the operation picks the project's own by their labels: compose v1 writes the file names
    relative to ``working_dir``, v2 absolute). Which compose there is, by what each program
    says of itself (not by the release): ``compose_v2`` is the version of the ``docker
    compose`` plugin; ``compose_binary`` the version a ``docker-compose`` program reports
    (``"unknown"`` when it says none), which is compose v1 (Debian 12: 1.29) or the v2 program
    under its old name (Debian 13: 2.26); ``compose_v1`` whether that program is v1 (or
    unknown: treated as the older, stricter one).

    .. code:: python

        {"exists": True, "content": "services: ...", "unreadable": False, "backup": False,
         "compose_binary": "1.29.2", "compose_v1": True, "compose_v2": None,
         "containers": [{"project": "demo", "working_dir": "/opt/demo",
                         "config_files": "docker-compose.yml", "service": "web",
                         "state": "running"}],
         "networks": [{"project": "demo", "network": "default", "name": "demo_default",
                       "driver": "bridge", "host_binding_ipv4": "10.50.0.3"}]}
    """

    def command(self, path: str) -> str:
        bak = shlex.quote(path + BACKUP_SUFFIX)
        return " ; ".join(
            [
                _file_b64("file", path),
                f"if [ -e {bak} ]; then echo backup=yes; fi",
                "if command -v docker-compose >/dev/null; then"
                " printf 'compose_binary=%s\\n' \"$(docker-compose version --short 2>/dev/null)\"; fi",
                "if command -v docker >/dev/null; then"
                " printf 'compose_v2=%s\\n' \"$(docker compose version --short 2>/dev/null)\";"
                f" docker ps -a --filter label=com.docker.compose.project"
                f" --format {shlex.quote(_CONTAINER_FORMAT)} 2>/dev/null;"
                " n=$(docker network ls -q --filter label=com.docker.compose.project 2>/dev/null);"
                f' if [ -n "$n" ]; then docker network inspect'
                f" -f {shlex.quote(_NETWORK_FORMAT)} $n 2>/dev/null; fi;"
                " fi",
                "true",
            ]
        )

    def default(self) -> dict[str, Any]:
        return {
            "exists": False,
            "content": None,
            "unreadable": False,
            "backup": False,
            "compose_binary": None,
            "compose_v1": False,
            "compose_v2": None,
            "containers": [],
            "networks": [],
        }

    def process(self, output: list[str]) -> dict[str, Any]:
        state = self.default()
        for line in output:
            key, _, value = line.partition("=")
            if key == "file":
                state["exists"] = True
                state["content"] = _b64(value)
                state["unreadable"] = state["content"] is None
            elif key == "backup":
                state["backup"] = True
            elif key == "compose_binary":
                version = value.strip().lstrip("v") or "unknown"
                state["compose_binary"] = version
                state["compose_v1"] = compose_major(version) in (None, 1)
            elif key == "compose_v2":
                state["compose_v2"] = value or None
            elif key == "container":
                state["containers"].append(_record(_CONTAINER_FIELDS, value))
            elif key == "network":
                state["networks"].append(_record(_NETWORK_FIELDS, value))
        return state
