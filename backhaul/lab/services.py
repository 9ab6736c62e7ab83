"""The lab's own services on the bridge address: an apt cache and an ACME server (pebble).

Lab hosts cannot resolve or reach the Debian mirror; apt-cacher-ng on the bridge address serves
them (and makes reruns fast). pebble is a real ACME server: HTTP-01 validation connects to the
hub's port 80 because pebble-challtestsrv answers every DNS name with the hub's address.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import struct
import time
import urllib.request
from pathlib import Path

from backhaul.errors import LabError
from backhaul.lab import guard, system
from backhaul.lab.layout import CACHE_DIR, Lab

APT_PORT = 3142
ACME_PORT = 14000
ACME_MGMT_PORT = 15000
DNS_PORT = 8053
DNS_MGMT_PORT = 8055


def _wait_port(lab: Lab, ip: str, port: int, what: str, log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        guard.require(lab, ip)  # the bridge carries the address: the probe stays on this machine
        try:
            socket.create_connection((ip, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
    raise LabError(f"{what} did not start listening on {ip}:{port} within {timeout:.0f}s:\n{tail}")


class Daemon:
    """A detached process of the lab, tracked by a pidfile in the lab's state dir."""

    def __init__(self, lab: Lab, name: str):
        self.lab, self.name = lab, name
        self.dir = lab.state_dir / "services"
        self.pidfile = self.dir / f"{name}.pid"
        self.log = self.dir / f"{name}.log"

    def running(self) -> bool:
        return system.pid_alive(system.read_pid(self.pidfile))

    def start(self, cmd: list[str], env: dict | None = None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        system.spawn_daemon(cmd, self.log, self.pidfile, env=env)

    def stop(self) -> None:
        pid = system.read_pid(self.pidfile)
        if pid:
            system.terminate([pid], timeout=5)
        self.pidfile.unlink(missing_ok=True)


# --- apt cache --------------------------------------------------------------------------------
def start_apt_cache(lab: Lab) -> None:
    d = Daemon(lab, "apt-cacher-ng")
    if d.running():
        return
    conf = lab.state_dir / "services/acng-conf"
    if conf.exists():
        shutil.rmtree(conf)
    shutil.copytree("/etc/apt-cacher-ng", conf)
    # By default it redirects to a mirror name that does not resolve here.
    (conf / "backends_debian").write_text("http://deb.debian.org/debian/\n")
    cache = CACHE_DIR / "apt" / lab.name
    for sub in ("cache", "log"):
        (cache / sub).mkdir(parents=True, exist_ok=True)
    run = lab.state_dir / "services"
    d.start(
        [
            "/usr/sbin/apt-cacher-ng",
            "-c",
            str(conf),
            "ForeGround=1",
            # both families: an IPv6-only host reaches the cache over IPv6
            f"BindAddress={lab.gateway} [{lab.gateway6}]",
            f"Port={APT_PORT}",
            f"CacheDir={cache}/cache",
            f"LogDir={cache}/log",
            f"SocketPath={run}/acng.socket",
            f"PidFile={run}/acng.internal.pid",
        ]
    )
    _wait_port(lab, str(lab.gateway), APT_PORT, "apt-cacher-ng", d.log)


# --- ACME (pebble) ----------------------------------------------------------------------------
def _make_api_cert(lab: Lab, tls_dir: Path) -> None:
    """A CA and a leaf for pebble's own HTTPS API (SAN = the bridge address)."""
    if (tls_dir / "api-cert.pem").exists():
        return
    tls_dir.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        tls_dir / n for n in ("api-ca.key", "api-ca.pem", "api.key", "api.csr", "api-cert.pem")
    )
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]  # P-256, unencrypted
    subject = f"/CN=backhaul lab {lab.name} ACME API CA"
    system.run(
        ["openssl", "req", "-x509", *new_key, "-keyout", str(ca_key), "-out", str(ca)]
        + ["-days", "3650", "-subj", subject]
    )
    system.run(
        ["openssl", "req", *new_key, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={lab.gateway}"]
    )
    ext = tls_dir / "san.ext"
    ext.write_text(f"subjectAltName=IP:{lab.gateway}\n")
    system.run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-out",
            str(cert),
            "-days",
            "3650",
            "-extfile",
            str(ext),
        ]
    )
    for p in (ca_key, key):
        p.chmod(0o600)


def start_acme(lab: Lab) -> None:
    gw = str(lab.gateway)
    hub = lab.hosts[0]
    dns = Daemon(lab, "challtestsrv")
    if not dns.running():
        dns.start(
            [
                "pebble-challtestsrv",
                "-dns01",
                f"{gw}:{DNS_PORT}",
                "-management",
                f"{gw}:{DNS_MGMT_PORT}",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                # every name resolves to the hub (A and AAAA): HTTP-01 validation reaches its
                # nginx on :80, over IPv6 when pebble picks the AAAA answer
                "-defaultIPv4",
                str(hub.ip),
                "-defaultIPv6",
                str(hub.ip6),
            ]
        )
        _wait_port(lab, gw, DNS_MGMT_PORT, "pebble-challtestsrv", dns.log)
    acme = Daemon(lab, "pebble")
    if not acme.running():
        tls_dir = lab.state_dir / "services/acme-api"
        _make_api_cert(lab, tls_dir)
        conf = lab.state_dir / "services/pebble-config.json"
        conf.write_text(
            json.dumps(
                {
                    "pebble": {
                        "listenAddress": f"{gw}:{ACME_PORT}",
                        "managementListenAddress": f"{gw}:{ACME_MGMT_PORT}",
                        "certificate": str(tls_dir / "api-cert.pem"),
                        "privateKey": str(tls_dir / "api.key"),
                        "httpPort": 80,
                        "tlsPort": 443,
                        # 90 days like Let's Encrypt (pebble's default is 5 years, which TLS scanners flag)
                        "certificateValidityPeriod": 7776000,
                        "ocspResponderURL": "",
                        "externalAccountBindingRequired": False,
                    }
                },
                indent=1,
            )
        )
        import os

        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0")
        acme.start(
            ["pebble", "-config", str(conf), "-dnsserver", f"{gw}:{DNS_PORT}", "-strict=false"],
            env=env,
        )
        _wait_port(lab, gw, ACME_MGMT_PORT, "pebble", acme.log)
    # pebble makes a new root at every start: keep the current one for clients (tests, verify)
    files = lab.files_dir
    files.mkdir(parents=True, exist_ok=True)
    shutil.copy(lab.state_dir / "services/acme-api/api-ca.pem", files / "acme-api-ca.pem")
    (files / "acme-root.pem").write_text(_fetch_root(lab))


def _fetch_root(lab: Lab) -> str:
    ctx = ssl.create_default_context(cafile=str(lab.state_dir / "services/acme-api/api-ca.pem"))
    url = f"https://{lab.gateway}:{ACME_MGMT_PORT}/roots/0"
    guard.require(lab, str(lab.gateway))
    for _ in range(50):
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=2) as r:
                return r.read().decode()
        except OSError:
            time.sleep(0.1)
    raise LabError(f"could not fetch the ACME root from {url}")


def point_names_at(lab: Lab, ip: str) -> None:
    """The lab's DNS answers every name with ``ip``: the operator's DNS change when a new hub
    takes over (ACME validates through it). Both records move: when ``ip`` is a lab host's, its
    address of the other family too (none: that record goes), else pebble would still dial the
    old hub over the family left behind."""
    host = next((h for h in lab.hosts if ip in (str(h.ip), str(h.ip6))), None)
    v4 = ip if ":" not in ip else ""
    v6 = ip if ":" in ip else ""
    if host is not None:
        v4 = "" if host.v6_only else str(host.ip)
        v6 = str(host.ip6) if host.ip6 else ""
    guard.require(lab, str(lab.gateway))
    for family, address in (("ipv4", v4), ("ipv6", v6)):
        req = urllib.request.Request(
            f"http://{lab.gateway}:{DNS_MGMT_PORT}/set-default-{family}",
            data=json.dumps({"ip": address}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            r.read()


def name_every_hub(lab: Lab, network: Path) -> None:
    """With more hubs, the lab's DNS answers each service domain of ``network`` (the lab's
    file, as a user may have edited it) with every hub's address (A and AAAA), as a user's DNS
    would: pebble validates through any, clients try each in turn. Other names keep the
    default answer (the first hub)."""
    hubs = [h for h in lab.hosts if h.role == "hub"]
    name_addresses(
        lab,
        network,
        [str(h.ip) for h in hubs if not h.v6_only],
        [str(h.ip6) for h in hubs if h.ip6],
    )


def name_addresses(lab: Lab, network: Path, v4: list[str], v6: list[str]) -> None:
    """The lab's DNS answers each service domain of ``network`` with these addresses, in this
    order (the operator's DNS change, e.g. a replaced hub's new address beside the others)."""
    from backhaul.network import load

    domains = sorted({d for s in load(network).services for d in s.domains})
    guard.require(lab, str(lab.gateway))
    for domain in domains:
        host = domain.rstrip(".") + "."
        for kind, addresses in (("a", v4), ("aaaa", v6)):
            # challtestsrv's add-* appends to what the name has: clear it first
            _dns_call(lab, f"clear-{kind}", {"host": host})
            if addresses:
                _dns_call(lab, f"add-{kind}", {"host": host, "addresses": addresses})


def _dns_call(lab: Lab, path: str, body: dict) -> None:
    req = urllib.request.Request(
        f"http://{lab.gateway}:{DNS_MGMT_PORT}/{path}", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        r.read()


def lookup(lab: Lab, name: str, family: int = 4) -> list[str]:
    """What the lab's DNS answers for ``name`` (A, or AAAA for family 6), in its order: what
    a client of the lab resolves (pebble asks the same server)."""
    qtype = 1 if family == 4 else 28
    query = struct.pack(">HHHHHH", 0x6268, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    query += struct.pack(">HH", qtype, 1)
    guard.require(lab, str(lab.gateway))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(query, (str(lab.gateway), DNS_PORT))
        data = sock.recv(4096)
    count, i, out = struct.unpack(">H", data[6:8])[0], len(query), []
    for _ in range(count):
        i = _skip_name(data, i)
        rtype, _cls, _ttl, size = struct.unpack(">HHIH", data[i : i + 10])
        i += 10
        if rtype == qtype:
            out.append(
                socket.inet_ntop(socket.AF_INET if family == 4 else socket.AF_INET6, data[i : i + size])
            )
        i += size
    return out


def _skip_name(data: bytes, i: int) -> int:
    """The offset after a DNS name at ``i`` (labels, or a compression pointer)."""
    while data[i]:
        if data[i] >= 0xC0:
            return i + 2
        i += data[i] + 1
    return i + 1


def acme_directory(lab: Lab) -> str:
    return f"https://{lab.gateway}:{ACME_PORT}/dir"


def stop_all(lab: Lab) -> None:
    for name in ("pebble", "challtestsrv", "apt-cacher-ng"):
        Daemon(lab, name).stop()
