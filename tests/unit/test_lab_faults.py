"""The pure parts of the lab's faults (backhaul/lab/faults.py, delayer.py); the lab shows each
fault itself (tests/lab/test_faults.py)."""

from __future__ import annotations

import os
import struct

from backhaul.lab import delayer, faults


def test_the_delayer_binds_its_queue_and_accepts_by_packet_id():
    bind = delayer.bind_message(2626)
    length, kind, flags = struct.unpack_from("=IHH", bind)
    assert length == len(bind) and kind == (3 << 8) | 2 and flags & 4  # queue config, acked
    assert struct.unpack_from(">H", bind, 18)[0] == 2626  # nfgenmsg's res_id: the queue
    verdict = delayer.verdict_message(2626, 77)
    assert struct.unpack_from("=H", verdict, 4)[0] == (3 << 8) | 1
    assert struct.unpack_from(">II", verdict, len(verdict) - 8) == (1, 77)  # ACCEPT packet 77


def test_the_delayer_reads_the_packet_id_of_a_queued_packet():
    hdr = delayer._attr(1, struct.pack(">IHB", 4242, 0x0800, 4))  # NFQA_PACKET_HDR
    other = delayer._attr(10, b"\0" * 6)
    payload = struct.pack("=BBH", 2, 0, 0) + other + hdr
    packet = struct.pack("=IHHII", 16 + len(payload), 3 << 8, 0, 0, 0) + payload
    ((kind, body),) = delayer.messages(packet)
    assert kind == 3 << 8 and delayer.packet_id(body) == 4242


def test_what_a_full_disk_saw_is_carried_down_and_nothing_else_touched(tmp_path):
    real, full = tmp_path / "real", tmp_path / "full"
    for d in (real, full):
        (d / "wireguard").mkdir(parents=True)
        (d / "kept").write_text("same")
        (d / "gone").write_text("x")
        os.symlink("/usr/share/zoneinfo/UTC", d / "localtime")
    stamp = (1_700_000_000, 1_700_000_000)
    for d in (real, full):
        os.utime(d / "kept", stamp)
    (full / "gone").unlink()
    (full / "wireguard" / "wg0.conf").write_text("new")
    (full / "wireguard" / "wg0.conf").chmod(0o600)
    (full / "empty").touch()
    before = (real / "kept").stat().st_ino
    faults._carry_down(full, real)
    assert sorted(p.name for p in real.iterdir()) == ["empty", "kept", "localtime", "wireguard"]
    assert (real / "wireguard" / "wg0.conf").read_text() == "new"
    assert (real / "wireguard" / "wg0.conf").stat().st_mode & 0o777 == 0o600
    assert (real / "kept").stat().st_ino == before  # unchanged: not copied again
    assert os.readlink(real / "localtime") == "/usr/share/zoneinfo/UTC"
