"""docker_bind's pure logic: daemon.json merging, which containers and networks are a file's,
what must be brought up. Facts and operations have their JSON fixtures (tests/data/...)."""

import json

import pytest

from backhaul.operations import docker_bind as db
from backhaul.render import render

BOUND = """\
services:
  web:
    image: demo
    restart: unless-stopped
    ports: ["10.50.0.3:8081:8080"]
  extra:
    image: demo
    ports: ["10.50.0.3:9001:8080"]
  tools:
    image: demo
    profiles: [debug]
  off:
    image: demo
    deploy: {replicas: 0}
networks:
  default:
    driver_opts:
      com.docker.network.bridge.host_binding_ipv4: "10.50.0.3"
  backend:
    driver: macvlan
"""


def c(service, state="running", project="demo", wd="/opt/demo", files="docker-compose.yml"):
    return {"project": project, "working_dir": wd, "config_files": files, "service": service, "state": state}


# --- daemon.json ------------------------------------------------------------------------------


@pytest.mark.parametrize("current", [None, "", "  \n"])
def test_daemon_json_created_when_absent_or_empty(current):
    assert json.loads(db.merge_daemon_json(current, "10.50.0.2")) == {"ip": "10.50.0.2"}


def test_daemon_json_keeps_every_user_key_in_order():
    current = '{"log-level": "warn", "ip": "0.0.0.0", "registry-mirrors": ["https://m"]}'
    merged = db.merge_daemon_json(current, "10.50.0.2")
    assert list(json.loads(merged).items()) == [
        ("log-level", "warn"),
        ("ip", "10.50.0.2"),
        ("registry-mirrors", ["https://m"]),
    ]
    assert merged.endswith("}\n")


def test_daemon_json_already_right_is_not_rewritten():
    # formatting that is not ours is no reason to touch the file (or restart Docker)
    assert db.merge_daemon_json('{"ip":"10.50.0.2","debug":true}', "10.50.0.2") is None


@pytest.mark.parametrize("bad", ['{"ip": "10.50.0.2",}', "[]", '"ip"', "{"])
def test_daemon_json_not_an_object_raises(bad):
    with pytest.raises(ValueError):
        db.merge_daemon_json(bad, "10.50.0.2")


# --- compose command and project --------------------------------------------------------------


def test_compose_v2_plugin_preferred_then_the_docker_compose_program():
    plugin = {"compose_v2": "2.24.6", "compose_binary": "1.29.2", "compose_v1": True}
    assert db.compose_tool(plugin) == db.ComposeTool("docker compose", v2=True)
    debian12 = {"compose_v2": None, "compose_binary": "1.29.2", "compose_v1": True}
    assert db.compose_tool(debian12) == db.ComposeTool("docker-compose", v2=False)
    assert db.compose_tool({"compose_v2": None, "compose_binary": None, "compose_v1": False}) is None


def test_debian13s_docker_compose_is_read_as_v2_by_what_it_says():
    """Debian 13's /usr/bin/docker-compose is the v2 program (2.26): v2 rules (long-syntax
    ports with host_ip), whatever the name."""
    debian13 = {"compose_v2": None, "compose_binary": "2.26.1", "compose_v1": False}
    assert db.compose_tool(debian13) == db.ComposeTool("docker-compose", v2=True)


@pytest.mark.parametrize(
    "said, major", [("1.29.2", 1), ("2.26.1", 2), ("v2.29.7", 2), ("unknown", None), ("", None)]
)
def test_compose_major(said, major):
    from backhaul.facts.docker import compose_major

    assert compose_major(said) == major


@pytest.mark.parametrize(
    "container, owned",
    [
        (c("web"), True),  # v1 run from the directory: relative name
        (c("web", files="/opt/demo/docker-compose.yml"), True),  # -f with an absolute path
        (c("web", files="docker-compose.yml,docker-compose.override.yml"), True),
        (c("web", files="./docker-compose.yml"), True),
        (c("web", wd="/opt/other"), False),
        (c("web", files="compose.yaml"), False),
        (c("web", files=""), False),
    ],
)
def test_owns(container, owned):
    assert db.owns("/opt/demo/docker-compose.yml", container) is owned


def test_project_name_from_containers_else_derived_like_compose():
    path = "/opt/My App.v2/docker-compose.yml"
    assert db.project_names(path, BOUND, [c("web", project="x", wd="/opt/My App.v2")]) == {"x"}
    assert db.project_names(path, BOUND, []) == {"myappv2"}
    assert db.project_names(path, "name: Shop\nservices: {}\n", []) == {"shop"}


def test_services_down_ignores_profiles_and_zero_replicas():
    assert db.services_started_by_up(BOUND) == ["web", "extra"]
    path = "/opt/demo/docker-compose.yml"
    assert db.services_down(path, BOUND, [c("web"), c("extra")]) == []
    assert db.services_down(path, BOUND, [c("web"), c("extra", "exited")]) == ["extra"]
    assert db.services_down(path, BOUND, [c("web", "restarting"), c("extra")]) == []
    assert db.services_down(path, BOUND, [c("web", wd="/elsewhere"), c("extra")]) == ["web"]
    assert db.services_down(path, BOUND, []) == ["web", "extra"]


def test_stale_networks_only_bridge_networks_the_file_binds():
    path = "/opt/demo/docker-compose.yml"

    def n(network, binding, driver="bridge", project="demo"):
        return {
            "project": project,
            "network": network,
            "name": f"{project}_{network}",
            "driver": driver,
            "host_binding_ipv4": binding,
        }

    containers = [c("web")]
    stale = db.stale_networks(path, BOUND, "10.50.0.3", containers, [n("default", "")])
    assert stale == ["demo_default"]
    assert db.stale_networks(path, BOUND, "10.50.0.3", containers, [n("default", "10.50.0.9")])
    assert not db.stale_networks(path, BOUND, "10.50.0.3", containers, [n("default", "10.50.0.3")])
    # macvlan cannot take the option: never "stale", or the project would go down every run
    assert not db.stale_networks(path, BOUND, "10.50.0.3", containers, [n("backend", "", "macvlan")])
    # another project's network is not ours to recreate
    assert not db.stale_networks(path, BOUND, "10.50.0.3", containers, [n("default", "", "bridge", "x")])


def test_long_syntax_and_restart_policy_findings():
    text = "services:\n  a:\n    ports: [{target: 80}]\n    restart: 'no'\n  b:\n    ports: ['80']\n"
    assert db.long_syntax_ports(text) == ["a"]
    assert db.without_restart_policy(text) == ["a", "b"]
    assert db.without_restart_policy(BOUND) == ["extra"]
    swarm = "services:\n  a:\n    deploy: {restart_policy: {condition: any}}\n"
    assert db.without_restart_policy(swarm) == []
    assert db.long_syntax_ports("not: [a, compose") == []  # unparsable: rewrite_compose reports


class _Op:
    def __init__(self, complete, did, will):
        self.complete, self.did, self.will = complete, did, will

    def is_complete(self):
        return self.complete

    def did_change(self):
        return self.did

    @property
    def will_change(self):
        return self.will


def test_changed_uses_the_result_once_executed_else_the_prediction():
    assert db.changed(_Op(True, True, False))() is True
    assert db.changed(_Op(True, False, True))() is False
    assert db.changed(_Op(False, False, True))() is True  # dry run: not executed yet
    assert db.changed(_Op(True, False, False), _Op(True, True, False))() is True


def test_docker_dropin_orders_docker_after_the_tunnel():
    text = render("systemd-docker-wg.conf.j2", interface="wg1")
    assert "[Unit]\nWants=wg-quick@wg1.service\nAfter=wg-quick@wg1.service\n" in text
