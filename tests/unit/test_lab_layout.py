"""The lab's layout: releases per host, an image per release, one subnet per lab."""

from __future__ import annotations

import json

import pytest

from backhaul.errors import LabError
from backhaul.lab import image
from backhaul.lab import lab as labmod
from backhaul.lab.layout import Lab, _derived_subnet


def test_trixie_by_default_and_a_mixed_fleet_puts_the_backends_on_the_other_release():
    assert {h.suite for h in Lab.make("dx", 2).hosts} == {"trixie"}
    mixed = Lab.make("dx", 2, spares=1, suite="trixie", backend_suite="bookworm")
    assert [(h.name, h.suite) for h in mixed.hosts] == [
        ("proxy", "trixie"),
        ("backend-1", "bookworm"),
        ("backend-2", "bookworm"),
        ("backend-3", "bookworm"),
    ]
    assert mixed.suites == ["trixie", "bookworm"]
    assert Lab.make("dx", 2, suite="bookworm", backend_suite="bookworm").backend_suite is None


def test_an_unknown_release_is_refused():
    with pytest.raises(LabError, match="bullseye"):
        Lab.make("dx", 2, suite="bullseye")


def test_each_release_has_its_own_cached_image():
    assert image.recipe_hash("bookworm") != image.recipe_hash("trixie")
    assert image.base_dir("bookworm") != image.base_dir("trixie")


def test_a_subnet_another_lab_has_is_refused(tmp_path, monkeypatch):
    # two names whose derived subnets are the same (the subnet is a hash of the name)
    assert _derived_subnet("tb") == _derived_subnet("bk")
    monkeypatch.setattr(labmod, "STATE_ROOT", tmp_path)
    (tmp_path / "tb").mkdir()
    (tmp_path / "tb" / "lab.json").write_text(json.dumps({"subnet": _derived_subnet("tb")}))
    with pytest.raises(LabError, match="already lab 'tb''s.*--subnet"):
        labmod._subnet_taken(Lab.make("bk", 2))
    labmod._subnet_taken(Lab.make("bk", 2, subnet="198.19.250.0/24"))  # another one is fine


def test_each_lab_has_an_ipv6_64_of_the_documentation_prefix_beside_its_ipv4_24():
    lab = Lab.make("demo")
    assert str(lab.subnet6) == "2001:db8:51:100::/64" and str(lab.gateway6) == "2001:db8:51:100::1"
    hub, b1, b2 = lab.hosts
    assert (str(hub.ip6), str(b1.ip6), str(b2.ip6)) == (
        "2001:db8:51:100::10",
        "2001:db8:51:100::11",
        "2001:db8:51:100::12",
    )
    assert Lab.make("v6").subnet6 != Lab.make("v6b").subnet6


def test_a_v6_only_host_gets_no_ipv4_and_is_reached_over_ipv6():
    from backhaul.lab.files import network_yaml
    from backhaul.lab.hosts import host_network

    lab = Lab.make("demo", v6_only=["backend-2"])
    hub, b1, b2 = lab.hosts
    assert lab.ipv6 and b2.v6_only and b2.address == str(b2.ip6) and b1.address == str(b1.ip)
    assert "Address=198.51.100.12" not in host_network(lab, b2)
    assert "Address=2001:db8:51:100::12/64" in host_network(lab, b2)
    assert "Address=198.51.100.11/24" in host_network(lab, b1)
    text = network_yaml(lab, "https://198.51.100.1:14000/dir")
    assert "public_ip: 198.51.100.11\n    public_ip6: 2001:db8:51:100::11\n" in text
    assert "public_ip: 2001:db8:51:100::12\n" in text


def test_v6_only_is_for_backends_the_lab_has():
    with pytest.raises(LabError, match="pebble"):
        Lab.make("demo", v6_only=["proxy"])
    with pytest.raises(LabError, match="backend-9"):
        Lab.make("demo", v6_only=["backend-9"])


def test_destroying_a_host_already_destroyed_says_so(tmp_path, monkeypatch):
    from backhaul.lab import layout

    monkeypatch.setattr(layout, "STATE_ROOT", tmp_path)
    lab = Lab.make("dx", 2)
    (tmp_path / "dx" / "hosts" / "backend-1").mkdir(parents=True)
    with pytest.raises(LabError) as e:
        labmod.destroy(lab, "proxy", log=lambda *a: None)
    assert "proxy is already destroyed" in str(e.value) and "lab.up" in str(e.value)
    with pytest.raises(LabError, match="no host 'hub' .hosts: proxy, backend-1, backend-2"):
        labmod.destroy(lab, "hub", log=lambda *a: None)


def test_the_status_table_keeps_its_columns_with_ipv6_addresses():
    rows = [
        {"host": "proxy", "ip": "198.51.100.10", "suite": "trixie", "running": True, "ssh": "open"},
        {"host": "backend-2", "ip": "2001:db8:51:100::12", "suite": "trixie", "running": True, "ssh": "open"},
    ]
    lines = labmod.status_table(rows).splitlines()
    assert len({line.index("trixie") for line in lines[1:]}) == 1
    assert (
        len({line.index("suite") for line in lines[:1]} | {line.index("trixie") for line in lines[1:]}) == 1
    )


def test_a_vm_host_matches_its_interface_by_mac_and_plugs_a_tap_of_the_labs_name():
    """A VM's interface is named by udev after its PCI slot (ens2), not host0: networkd must
    find it by the MAC QEMU gives it; the tap carries the lab's name, so down finds it."""
    from backhaul.lab.hosts import host_network
    from backhaul.lab.vmhosts import VmRunner, mac_address, tap_name

    lab = Lab.make("kd", 2, vm=True)
    hub, b1, b2 = lab.hosts
    macs = {mac_address(h) for h in lab.hosts}
    assert len(macs) == 3 and all(m.startswith("52:54:00:") for m in macs)
    runner = VmRunner(lab, b1, image.rootfs(), "")
    text = host_network(lab, b1, runner.network_match)
    assert f"[Match]\nMACAddress={mac_address(b1)}\n" in text and "host0" not in text
    assert tap_name(b2) == "vt-kd-2" and len(tap_name(b2)) <= 15
    assert all(len(tap_name(h)) <= 15 for h in Lab.make("abcdef", 40, vm=True).hosts)


def test_a_vm_host_boots_the_images_kernel_emulated_on_one_cpu(tmp_path, monkeypatch):
    from backhaul.lab import vmimage
    from backhaul.lab.vmhosts import VmRunner

    boot = tmp_path / "boot"
    boot.mkdir()
    for f in ("vmlinuz-6.12.1-cloud-amd64", "initrd.img-6.12.1-cloud-amd64"):
        (boot / f).touch()
    monkeypatch.setattr(vmimage, "rootfs", lambda suite="trixie": tmp_path)
    lab = Lab.make("kd", 1, vm=True)
    cmd = VmRunner(lab, lab.hosts[1], tmp_path, "")._qemu_command()
    assert cmd[cmd.index("-kernel") + 1] == str(boot / "vmlinuz-6.12.1-cloud-amd64")
    assert cmd[cmd.index("-initrd") + 1] == str(boot / "initrd.img-6.12.1-cloud-amd64")
    assert cmd[cmd.index("-accel") + 1] == "tcg" and cmd[cmd.index("-smp") + 1] == "1"
    assert "-enable-kvm" not in cmd  # nested KVM hangs on this machine


def test_the_vm_image_is_the_base_recipe_plus_its_own():
    from backhaul.lab import vmimage

    assert vmimage.recipe_hash("trixie") != vmimage.recipe_hash("bookworm")
    assert vmimage.vm_dir("trixie") != image.base_dir("trixie")
    assert "kmod" in vmimage.VM_PACKAGES  # the kernel loads wireguard.ko through modprobe


def test_each_role_image_has_what_backhaul_installs_there_and_never_wireguard_go():
    """VM hosts and packaged container labs: a deploy must still decide wireguard-go itself."""
    from backhaul import software

    hub, backend = image.ROLE_PACKAGES["hub"], image.ROLE_PACKAGES["backend"]
    assert set(hub) >= {"wireguard-tools", *software.FIREWALL, *software.NGINX, *software.ACME}
    assert set(backend) == {"wireguard-tools", *software.FIREWALL}
    assert image.ROLE_PACKAGES["spare"] == backend  # a spare becomes a backend
    assert not any("wireguard-go" in p for p in image.ROLE_PACKAGES.values())


def test_a_packaged_lab_is_recorded_as_one(tmp_path, monkeypatch):
    """lab.up compares the record: bare and packaged hosts sit on other images (new disks)."""
    monkeypatch.setattr("backhaul.lab.layout.STATE_ROOT", tmp_path)
    lab = Lab.make("kd", 1, packaged=True)
    record = {"name": "kd", "backends": 1, "subnet": str(lab.subnet)}
    assert labmod._recorded({**record, "packaged": True}, lab).packaged
    assert not labmod._recorded(record, lab).packaged


def test_a_vm_lab_is_recorded_as_one(tmp_path, monkeypatch):
    monkeypatch.setattr("backhaul.lab.layout.STATE_ROOT", tmp_path)
    lab = Lab.make("kd", 1, vm=True)
    assert labmod._recorded({"name": "kd", "backends": 1, "subnet": str(lab.subnet), "vm": True}, lab).vm
    assert not labmod._recorded({"name": "kd", "backends": 1, "subnet": str(lab.subnet)}, lab).vm
