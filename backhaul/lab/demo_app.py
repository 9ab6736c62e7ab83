#!/usr/bin/env python3
"""The lab's demo service: stdlib only, copied to lab backends by `inv lab.demo`.

GET  any path       -> 200 JSON: the host, the path, and the request headers it received
                       (so tests can see Host, X-Forwarded-For, X-Real-IP, X-Forwarded-Proto)
GET  with Upgrade: websocket -> 101, then echoes every text frame back (RFC 6455, minimal)
GET  /slow/<seconds> -> the same 200 JSON, after that many seconds (at most 30): a backend that
                       takes its time, for the proxy's read timeout
GET  /html/...       -> the same answer as an HTML page (text/html, what a proxy would compress)

    demo_app.py --bind 10.50.0.2 --port 8080 --name app
"""

import argparse
import base64
import hashlib
import json
import socket
import socketserver
import struct
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as nginx's upstream keepalive expects
    # headers and body go out in separate writes: without TCP_NODELAY every kept-alive response
    # waits ~40 ms for the client's delayed ACK (Nagle)
    disable_nagle_algorithm = True
    server_version = "backhaul-demo"

    def do_GET(self):
        if self.headers.get("Upgrade", "").lower() == "websocket":
            return self._websocket()
        if self.path.startswith("/slow/"):
            try:
                time.sleep(min(float(self.path[len("/slow/") :]), 30.0))
            except ValueError:
                pass
        body = json.dumps(
            {
                "service": self.server.service_name,
                "host": socket.gethostname(),
                "path": self.path,
                "client": self.client_address[0],
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
        ).encode()
        kind = "application/json"
        if self.path.startswith("/html/"):
            kind = "text/html; charset=utf-8"
            body = b"<!doctype html><title>demo</title><pre>" + body + b"</pre>\n"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):  # quiet: the journal is not a benchmark sink
        pass

    def _websocket(self):
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        while True:
            frame = self._read_frame()
            if frame is None:
                break
            opcode, payload = frame
            if opcode == 0x8:  # close
                self._send_frame(0x8, b"")
                break
            if opcode == 0x9:  # ping
                self._send_frame(0xA, payload)
            elif opcode in (0x1, 0x2):
                self._send_frame(opcode, payload)
        self.close_connection = True

    def _read_exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.rfile.read(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def _read_frame(self):
        head = self._read_exact(2)
        if head is None:
            return None
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        if length == 126:
            length = struct.unpack(">H", self._read_exact(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", self._read_exact(8))[0]
        mask = self._read_exact(4) if head[1] & 0x80 else b"\0\0\0\0"
        payload = self._read_exact(length) or b""
        return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    def _send_frame(self, opcode, payload):
        n = len(payload)
        if n < 126:
            head = struct.pack(">BB", 0x80 | opcode, n)
        elif n < 65536:
            head = struct.pack(">BBH", 0x80 | opcode, 126, n)
        else:
            head = struct.pack(">BBQ", 0x80 | opcode, 127, n)
        self.wfile.write(head + payload)
        self.wfile.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self):
        # HTTPServer.server_bind asks DNS for our name (getfqdn) between bind and listen: with no
        # DNS in the lab that stalls ~10 s before the port answers. The name is not needed.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", default="demo")
    args = ap.parse_args()
    server = Server((args.bind, args.port), Handler)
    server.service_name = args.name
    server.serve_forever()


if __name__ == "__main__":
    main()
