"""A packet delayer for a lab host's link, in the standard library only: NFQUEUE over netlink.

This machine's kernel has no netem (nor fq, whose departure times a BPF program could set), so
delay cannot come from a qdisc. What it has is nfnetlink_queue: an iptables rule hands each
packet to a queue, this program holds it for the delay and then tells the kernel to let it go
on (verdict ACCEPT), in the order it came. The pip binding (NetfilterQueue) is a source
package that needs libnetfilter_queue's headers and a compiler; the protocol is small enough
to speak here instead.

Run in the host's network namespace (``nsenter -t PID -n python -m backhaul.lab.delayer
QUEUE MS``); the rule that feeds the queue must carry ``--queue-bypass`` so that packets flow
undelayed whenever this program is not running. It prints "ready" once bound, and on SIGTERM
lets every held packet go before it exits.
"""

from __future__ import annotations

import collections
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS = 1, 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1  # the packet's id and headers' metadata only: nothing is read of its payload
NF_ACCEPT = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2


def _attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _message(kind: int, queue: int, attrs: bytes, flags: int = NLM_F_REQUEST, seq: int = 0) -> bytes:
    body = struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack(">H", queue) + attrs
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, seq, 0) + body


def bind_message(queue: int) -> bytes:
    cmd = _attr(NFQA_CFG_CMD, struct.pack(">BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET))
    params = _attr(NFQA_CFG_PARAMS, struct.pack(">IB", 0, NFQNL_COPY_META))
    return _message(NFQNL_MSG_CONFIG, queue, cmd + params, NLM_F_REQUEST | NLM_F_ACK, seq=1)


def verdict_message(queue: int, packet_id: int) -> bytes:
    return _message(
        NFQNL_MSG_VERDICT, queue, _attr(NFQA_VERDICT_HDR, struct.pack(">II", NF_ACCEPT, packet_id))
    )


def messages(data: bytes):
    """(type, payload after the netlink header) of each netlink message in one datagram."""
    at = 0
    while at + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, at)
        if length < 16:
            return
        yield kind, data[at + 16 : at + length]
        at += (length + 3) & ~3


def packet_id(payload: bytes) -> int | None:
    """The id in a queued packet's NFQA_PACKET_HDR (the attributes follow the 4-byte nfgenmsg)."""
    at = 4
    while at + 4 <= len(payload):
        length, kind = struct.unpack_from("=HH", payload, at)
        if length < 4:
            return None
        if kind & 0x7FFF == NFQA_PACKET_HDR:
            return struct.unpack_from(">I", payload, at + 4)[0]
        at += (length + 3) & ~3
    return None


def run(queue: int, delay_ms: float) -> None:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.bind((0, 0))
    sock.send(bind_message(queue))
    for kind, payload in messages(sock.recv(65536)):
        if kind == NLMSG_ERROR and struct.unpack_from("=i", payload)[0] != 0:
            sys.exit(
                f"delayer: the kernel refused queue {queue}: error {-struct.unpack_from('=i', payload)[0]}"
            )
    held: collections.deque[tuple[float, int]] = collections.deque()  # (release time, id), in order
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    print("ready", flush=True)
    while not stopping:
        wait = max(0.0, held[0][0] - time.monotonic()) if held else 1.0
        try:
            ready, _, _ = select.select([sock], [], [], wait)
        except InterruptedError:
            continue
        if ready:
            try:
                data = sock.recv(65536)
            except OSError:  # ENOBUFS: the kernel dropped some (as a full link would)
                continue
            for kind, payload in messages(data):
                if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    pid = packet_id(payload)
                    if pid is not None:
                        held.append((time.monotonic() + delay_ms / 1000, pid))
        now = time.monotonic()
        while held and held[0][0] <= now:
            sock.send(verdict_message(queue, held.popleft()[1]))
    while held:  # stopping: nothing held is lost
        sock.send(verdict_message(queue, held.popleft()[1]))


if __name__ == "__main__":
    run(int(sys.argv[1]), float(sys.argv[2]))
