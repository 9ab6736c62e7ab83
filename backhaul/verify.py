"""`inv verify`: read-only, end-to-end checks of the whole network against the model.

Each check yields a row (check, host, status, detail); the report is a table for people and a
stable JSON document for machines (see README, "inv verify --json"). Nothing on any host is
changed: only facts are read, and the controller opens TCP/TLS connections to public addresses.
Exit codes: 0 healthy, 1 problems found, 2 could not check (a host did not answer).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from backhaul import clients as clientmod
from backhaul import network as netmod
from backhaul import plan, probe, sshpath
from backhaul.facts.health import HostHealth
from backhaul.network import HUB_WEB_PORTS, Host, Network
from backhaul.operations.isolation import differs, guard_files
from backhaul.session import connect
from backhaul.settle import HANDSHAKE_MAX_AGE, SETTLE_SECONDS, settle

OK, WARN, FAIL, UNKNOWN = "ok", "warn", "fail", "unknown"
JSON_VERSION = 1


@dataclass
class Check:
    check: str
    host: str
    status: str
    detail: str


@dataclass
class Report:
    network: str
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0
    # what verify waited for (tunnels still settling), within which bound: see `settle`
    settle: dict = field(
        default_factory=lambda: {"bound_seconds": SETTLE_SECONDS, "waited_seconds": 0.0, "waited_for": []}
    )

    def add(self, check: str, host: str, status: str, detail: str) -> None:
        self.checks.append(Check(check, host, status, detail))

    @property
    def could_not_check(self) -> bool:
        return any(c.status == UNKNOWN for c in self.checks)

    @property
    def ok(self) -> bool:
        return all(c.status in (OK, WARN) for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 2 if self.could_not_check else (0 if self.ok else 1)

    def to_json(self) -> dict:
        counts = {s: sum(c.status == s for c in self.checks) for s in (OK, WARN, FAIL, UNKNOWN)}
        return {
            "version": JSON_VERSION,
            "network": self.network,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 2),
            "summary": counts,
            "settle": self.settle,
            "checks": [asdict(c) for c in self.checks],
        }

    def to_table(self) -> str:
        rows = [("CHECK", "HOST", "STATUS", "DETAIL")]
        rows += [(c.check, c.host, c.status.upper(), c.detail) for c in self.checks]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
        j = self.to_json()["summary"]
        verdict = (
            ("healthy" if self.ok else "PROBLEMS FOUND")
            if not self.could_not_check
            else "COULD NOT CHECK EVERYTHING"
        )
        lines.append(
            f"\n{verdict}: {j['ok']} ok, {j['warn']} warn, {j['fail']} fail, "
            f"{j['unknown']} unknown ({self.seconds:.1f}s)"
        )
        if self.settle["waited_for"]:
            lines.append(
                f"waited {self.settle['waited_seconds']:.1f}s (at most {self.settle['bound_seconds']}s) "
                f"for the tunnel of {', '.join(self.settle['waited_for'])} to shake hands"
            )
        return "\n".join(lines)


def run(network_path: str, names: list[str] | None = None) -> Report:
    """Verify the network (or only the named backends, with the hub)."""
    t0 = time.monotonic()
    net = netmod.load(network_path)
    report = Report(str(network_path))
    backends = [b for b in net.backends if names is None or b.name in names]
    hosts = [*net.hubs, *backends]
    with ThreadPoolExecutor(max_workers=1) as pool:
        # The neighbour's knock on what the file declares needs no fact: it runs while SSH
        # reads them. Ports only the facts show get their own knock, beside the external scan.
        early = pool.submit(
            knock_as_a_neighbour, net, hosts, {h.name: _declared_targets(net, h) for h in hosts}
        )
        with connect(net, [h.name for h in hosts]) as conn:
            for name in conn.unreachable:
                report.add("ssh", name, UNKNOWN, "no SSH connection: nothing on it could be checked")
            wanted = {h.name: (HostHealth, _probe_args(net, h, backends)) for h in net.hubs}
            for b in backends:
                wanted[b.name] = (HostHealth, _probe_args(net, b, backends))
            health = {n: h for n, h in conn.facts(wanted).items() if isinstance(h, dict)}
            report.settle = settle(
                lambda names: conn.facts({n: wanted[n] for n in names}), net, backends, health
            )
        _tunnel_checks(net, backends, health, report)
        hub_checks(net, backends, health, report)
        _note_the_watch(report)
        grant_checks(net, backends, health, report)
        client_checks(net, health, clientmod.today(), report)
        if not net.other_hubs:
            _service_checks(net, backends, health, report)
        for h in net.hubs if net.other_hubs else ():  # every service through each hub
            _service_checks(dataclasses.replace(net, hub=h), backends, health, report, f" via {h.name}")
        knocked = early.result()
        undeclared = {
            h.name: t
            for h in hosts
            if health.get(h.name) and (t := _undeclared_targets(net, h, health[h.name]))
        }
        late = pool.submit(knock_as_a_neighbour, net, hosts, undeclared) if undeclared else None
        _external_checks(net, hosts, health, report)
        if late:
            knocked = _merged(knocked, late.result())
        _isolation_checks(net, hosts, health, knocked, report)
    report.seconds = time.monotonic() - t0
    return report


def _note_the_watch(report: Report) -> None:
    """A tunnel that failed after verify watched it says so: it had the bound to settle."""
    watched = set(report.settle["waited_for"])
    for c in report.checks:
        if c.host in watched and c.check in ("handshake", "ping") and c.status == FAIL:
            c.detail += f" (still after watching it {report.settle['waited_seconds']:.0f}s)"


def _probe_args(net: Network, host: Host, backends: list[Host]) -> dict:
    if host.role == "hub":
        ping = tuple(str(b.wg_ip) for b in backends)
        tcp = tuple(
            f"{net.host(s.backend).wg_ip}:{s.port}"
            for s in net.services
            if s.backend in {b.name for b in backends}
        )
    else:
        # the grant matrix from this backend: every other backend's services and address
        others = [b for b in backends if b.name != host.name]
        ping = (*(str(h.wg_ip) for h in net.hubs), *(str(b.wg_ip) for b in others))
        tcp = tuple(f"{b.wg_ip}:{s.port}" for b in others for s in net.services_on(b.name))
    return {"interface": net.interface, "ping": ping, "tcp": tcp}


# --- the tunnel ----------------------------------------------------------------------------
def _tunnel_checks(net: Network, backends: list[Host], health: dict, report: Report) -> None:
    hub = health.get(net.hub.name)
    if hub:
        wg = hub["wireguard"]
        if wg.get("service_active") and wg.get("link_up"):
            report.add(
                "wireguard",
                net.hub.name,
                OK,
                f"{net.interface} up, listening on {hub['listen_port']}/udp, {len(hub['peers'])} peers",
            )
        else:
            report.add(
                "wireguard",
                net.hub.name,
                FAIL,
                f"wg-quick@{net.interface} is {wg.get('service_state')}: run inv deploy",
            )
        _key_age(net, net.hub, wg, hub.get("now"), report)
    for b in backends:
        mine = health.get(b.name)
        if not hub or not mine:
            continue
        pub = mine["wireguard"].get("public_key") or mine["wireguard"].get("public_key_file")
        peer = next((p for k, p in hub["peers"].items() if b.wg_cidr in p["allowed_ips"]), None)
        peer_key = next((k for k, p in hub["peers"].items() if b.wg_cidr in p["allowed_ips"]), None)
        if peer is None:
            report.add("handshake", b.name, FAIL, f"the hub has no peer for {b.wg_cidr}: run inv deploy")
        elif peer_key != pub:
            report.add(
                "handshake",
                b.name,
                FAIL,
                "the hub's peer key is not this backend's key (rotated without deploy?): run inv deploy",
            )
        elif not peer["latest_handshake"]:
            dialer = b.public_address(net.tunnel_family(b))
            report.add(
                "handshake",
                b.name,
                FAIL,
                f"no handshake yet: is UDP {net.port} from {dialer} reaching the hub?",
            )
        else:
            age = (hub.get("now") or int(time.time())) - peer["latest_handshake"]
            status = OK if age <= HANDSHAKE_MAX_AGE else FAIL
            report.add(
                "handshake",
                b.name,
                status,
                f"latest handshake {age}s ago"
                + ("" if status == OK else f" (more than {HANDSHAKE_MAX_AGE}s: tunnel dead)"),
            )
        there = hub["ping"].get(str(b.wg_ip))
        back = mine["ping"].get(str(net.hub.wg_ip))
        status = OK if there and back else FAIL
        report.add(
            "ping",
            b.name,
            status,
            f"hub -> {b.wg_ip} {'ok' if there else 'LOST'}, {b.wg_ip} -> hub {'ok' if back else 'LOST'}",
        )
        _exposure(net, b, mine, report)
        _key_age(net, b, mine["wireguard"], mine.get("now"), report)


def hub_checks(net: Network, backends: list[Host], health: dict, report: Report) -> None:
    """With more than one hub: each backend's tunnel to each hub as the backend sees it, so a
    dead hub is named by the backends even when SSH cannot reach it, while every other hub is
    still checked; and the WireGuard of the hubs beside the first (``_tunnel_checks`` does the
    first's)."""
    for h in net.hubs if net.other_hubs else ():
        mine = health.get(h.name) if h.name != net.hub.name else None
        alive = bool(health.get(h.name))
        heard = []
        for b in backends:
            theirs = health.get(b.name)
            if not theirs:
                continue
            peer = next((p for p in theirs["peers"].values() if h.wg_cidr in p["allowed_ips"]), None)
            seen = peer and peer.get("latest_handshake")
            age = (theirs.get("now") or int(time.time())) - seen if seen else None
            pinged = theirs["ping"].get(str(h.wg_ip))
            if age is not None and age <= HANDSHAKE_MAX_AGE and pinged is not False:
                heard.append(b.name)
                report.add("hub-link", b.name, OK, f"hub {h.name} ({h.wg_ip}): latest handshake {age}s ago")
            else:
                why = (
                    "no peer for it: run inv deploy"
                    if peer is None
                    else (f"no handshake for {age}s" if age is not None else "no handshake yet")
                )
                lost = ", ping LOST" if pinged is False else ""
                report.add("hub-link", b.name, FAIL, f"hub {h.name} ({h.wg_ip}): {why}{lost}")
        if mine:
            wg = mine["wireguard"]
            up = wg.get("service_active") and wg.get("link_up")
            report.add(
                "wireguard",
                h.name,
                OK if up else FAIL,
                f"{net.interface} up, listening on {mine['listen_port']}/udp, {len(mine['peers'])} peers"
                if up
                else f"wg-quick@{net.interface} is {wg.get('service_state')}: run inv deploy",
            )
            _key_age(net, h, wg, mine.get("now"), report)
        elif not heard and not alive:
            report.add(
                "hub",
                h.name,
                FAIL,
                f"hub {h.name} ({h.public_ip}) is down: no SSH and no backend has a live tunnel to it; "
                "the other hubs still serve (DNS still names it: replace it, or take it out of DNS)",
            )


def _exposure(net: Network, b: Host, health: dict, report: Report) -> None:
    """Sockets on a backend that answer on anything but loopback or its tunnel address."""
    bad = []
    for s in health["sockets"]:
        addr = s["address"]
        if s["proto"] == "tcp" and s["port"] == net.ssh.port:
            continue  # SSH stays reachable: never lock the operator out
        if s["proto"] == "udp" and s["port"] == health.get("listen_port"):
            continue  # WireGuard's own socket
        if addr == str(b.wg_ip) or s.get("interface") == "lo":
            continue
        try:
            if ipaddress.ip_address(addr).is_loopback:
                continue
        except ValueError:
            pass  # "*": every address
        bad.append(f"{s['proto']} {addr}:{s['port']} ({s.get('process') or 'kernel'})")
    if bad:
        report.add(
            "exposure",
            b.name,
            FAIL,
            "listening beyond the tunnel: " + ", ".join(bad) + f"; bind these to {b.wg_ip} or loopback",
        )
    else:
        report.add("exposure", b.name, OK, f"only SSH, WireGuard, loopback and {b.wg_ip}")


def _key_age(net: Network, h: Host, wg: dict, now: int | None, report: Report) -> None:
    created = wg.get("key_created")
    if not created:
        return
    days = ((now or int(time.time())) - int(created)) / 86400
    status = OK if days <= net.key_max_age_days else WARN
    report.add(
        "key-age",
        h.name,
        status,
        f"key made {days:.0f} days ago"
        + ("" if status == OK else f" (over {net.key_max_age_days}: inv rotate-keys)"),
    )


# --- grants: from each backend, exactly what the file grants answers -------------------------
def grant_checks(net: Network, backends: list[Host], health: dict, report: Report) -> None:
    """One row per granted flow (it answers, and a direct path has a live handshake), and one
    per backend for the rest (no other service's port and no other backend answers it)."""
    matrix = _Matrix(net)
    for src in backends:
        mine = health.get(src.name)
        if not mine:
            continue
        wrong: list[str] = []
        closed = 0
        for dst in backends:
            if dst.name != src.name:
                answered, silent = matrix.judge(src, dst, mine, report)
                wrong += answered
                closed += silent
        if wrong:
            report.add(
                "grants", src.name, FAIL, f"answers without a grant: {', '.join(wrong)}: run inv deploy"
            )
        elif not net.backend_to_backend and len(backends) > 1:
            report.add(
                "grants", src.name, OK, f"nothing else answers ({closed} ports of other backends closed)"
            )


class _Matrix:
    """What the file grants between backends, to judge what one backend's probes found."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.flows = {(f.src_name, f.service.name): f for f in plan.flows(net) if not f.client}
        self.pairs = {frozenset((f.src_name, f.dst.name)) for f in self.flows.values()}

    def judge(self, src: Host, dst: Host, mine: dict, report: Report) -> tuple[list[str], int]:
        """A ``grant`` row for each flow src -> dst; returns what answered src without a grant,
        and how many ungranted ports stayed closed."""
        wrong: list[str] = []
        closed = 0
        for s in self.net.services_on(dst.name):
            target = f"{dst.wg_ip}:{s.port}"
            flow = self.flows.get((src.name, s.name))
            up = mine["tcp"].get(target)
            if flow:
                _grant_row(self.net, src, s, dst, flow.direct, up, mine, report)
            elif self.net.backend_to_backend:
                continue  # the services' own checks cover them
            elif up:
                wrong.append(f"{s.name} {target}")
            else:
                closed += 1
        # a pair with a grant either way answers pings (ufw lets ICMP echo in, and through the
        # hub); a pair without one has no route to the other at all
        talks = self.net.backend_to_backend or frozenset((src.name, dst.name)) in self.pairs
        if mine["ping"].get(str(dst.wg_ip)) and not talks:
            wrong.append(f"{dst.name} {dst.wg_ip} (ping)")
        return wrong, closed


def _grant_row(net, src: Host, s, dst: Host, direct: bool, up: bool | None, mine: dict, report) -> None:
    name = f"{s.name}.{net.domain}"
    path = "direct" if direct else "through the hub"
    where = f"{src.name} -> {name} ({dst.wg_ip}:{s.port}, {path})"
    if not up:
        report.add("grant", src.name, FAIL, f"{where}: no answer")
        return
    if direct:
        peer = next((p for p in mine["peers"].values() if dst.wg_cidr in p["allowed_ips"]), None)
        seen = peer and peer.get("latest_handshake")
        age = (mine.get("now") or int(time.time())) - seen if seen else None
        if age is None or age > HANDSHAKE_MAX_AGE:
            report.add("grant", src.name, FAIL, f"{where}: answers, but no recent handshake with {dst.name}")
            return
    report.add("grant", src.name, OK, where)


# --- services ------------------------------------------------------------------------------
def _service_checks(net: Network, backends: list[Host], health: dict, report: Report, via: str = "") -> None:
    """Each service from ``net.hub`` (``via``: " via <hub>", for the hubs beside the first)."""
    hub = health.get(net.hub.name)
    names = {b.name for b in backends}
    for s in net.services:
        if s.backend not in names:
            continue
        target = f"{net.host(s.backend).wg_ip}:{s.port}"
        if hub:
            up = hub["tcp"].get(target)
            report.add(
                "backend",
                s.name + via,
                OK if up else FAIL,
                f"hub reaches {target}"
                if up
                else f"backend down: the hub cannot open {target} (nginx answers 502)",
            )
        for domain in s.domains:
            # over every family the hub has: a client of either must get the same answer
            for ip in net.hub.public_ips:
                status, detail = https_check(net, s, domain, ip)
                extra = "" if ip == net.hub.public_ip else f" over IPv{ip.version}"
                report.add("https", f"{s.name} {domain}{extra}{via}", status, detail)


def https_check(net: Network, service, domain: str, ip=None) -> tuple[str, str]:
    """GET https://domain/ through the hub's public address ``ip`` (default: its public_ip),
    verifying the certificate."""
    bundle = net.tls.verify_ca_bundle
    ctx = ssl.create_default_context(cafile=str(bundle) if bundle else None)
    ip = ip or net.hub.public_ip
    try:
        with socket.create_connection((str(ip), 443), timeout=5) as raw:
            source = raw.getsockname()[0]
            with ctx.wrap_socket(raw, server_hostname=domain) as tls:
                not_after = tls.getpeercert().get("notAfter", "?")
                tls.sendall(f"GET / HTTP/1.1\r\nHost: {domain}\r\nConnection: close\r\n\r\n".encode())
                head = tls.recv(4096).decode(errors="replace").split("\r\n", 1)[0]
    except ssl.SSLCertVerificationError as e:
        issuer = _served_issuer(ip, domain)
        if issuer and e.verify_code in _UNTRUSTED_CHAIN:
            trusted = "tls.verify_ca_bundle" if bundle else "this machine's trust store"
            return FAIL, (
                f"certificate for {domain} issued by {issuer}, not by a CA of {trusted} "
                "(the ACME server's CA changed?): inv deploy issues a new one"
            )
        return FAIL, f"certificate not valid for {domain}: {e.verify_message}"
    except OSError as e:
        return FAIL, f"no HTTPS from the hub ({ip}) for {domain}: {e}"
    code = int(head.split()[1]) if len(head.split()) > 1 and head.split()[1].isdigit() else 0
    allowed = not service.allow or any(
        ipaddress.ip_address(source) in ipaddress.ip_network(a, strict=False) for a in service.allow
    )
    if not allowed:
        return (
            (OK, f"403 for {source} (not on the allow list), as it should")
            if code == 403
            else (FAIL, f"{code} for {source}, which is NOT on the allow list: expected 403")
        )
    if code == 502 or code == 504 or code == 0:
        return FAIL, f"{head or 'no answer'}: the hub cannot reach the backend"
    return OK, f"{code}, certificate valid until {not_after}"


# OpenSSL's verify codes for a chain that ends at a CA the client does not trust
_UNTRUSTED_CHAIN = {2, 18, 19, 20, 21}


def _served_issuer(ip, domain: str) -> str | None:
    """Who issued the certificate the hub serves for ``domain`` (read without trusting it)."""
    from cryptography import x509  # pyinfra's SSH (paramiko) brings it

    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with (
            socket.create_connection((str(ip), 443), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname=domain) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except OSError:
        return None
    return x509.load_der_x509_certificate(der).issuer.rfc4514_string() if der else None


# --- clients ---------------------------------------------------------------------------------
def client_checks(net: Network, health: dict, today, report: Report) -> None:
    """Each client: the hub has its peer (none once expired), and how close its expiry is.
    No handshake is expected: a laptop is off as often as not."""
    hub = health.get(net.hub.name)
    notes = {name: (status, why) for name, status, why in clientmod.expiry(net, today)}
    hub_key = ((hub or {}).get("wireguard") or {}).get("public_key")
    stale = {c.name for c in clientmod.stale(net, hub_key)} if hub_key else set()
    for c in net.clients:
        status, why = notes.get(c.name, (OK, "no expiry" if c.expires is None else f"expires on {c.expires}"))
        if hub is not None:
            peer = hub["peers"].get(c.public_key)
            if status == FAIL and peer is not None:
                why += "; still a peer of the hub: run inv deploy"
            elif status != FAIL and (peer is None or c.wg_cidr not in peer["allowed_ips"]):
                status, why = FAIL, f"the hub has no peer for {c.name} ({c.wg_cidr}): run inv deploy"
        if status != FAIL and c.name in stale:
            why = clientmod.stale_why(c) + (f"; {why}" if status == WARN else "")
            status = WARN
        report.add("client", c.name, status, why)


# --- what the internet sees ----------------------------------------------------------------
def _external_checks(net: Network, hosts: list[Host], health: dict, report: Report) -> None:
    """Connect from here to each host's public addresses (every family it has) on every port
    it listens on: what answers over one family must be what answers over the other."""
    scanned = [h for h in hosts if health.get(h.name)]
    wanted: dict[str, set[int]] = {}
    for h in scanned:
        ports = {s["port"] for s in health[h.name]["sockets"] if s["proto"] == "tcp" and s["port"]}
        wanted[h.name] = ports | {s.port for s in net.services_on(h.name)} | _expected_open(net, h)
    probes = [(h, ip, p) for h in scanned for ip in h.public_ips for p in sorted(wanted[h.name])]
    # every host, address and port at once: a filtered port costs its timeout, and only once
    with ThreadPoolExecutor(max_workers=64) as pool:
        answers = list(pool.map(lambda probe_: _tcp_open(str(probe_[1]), probe_[2]), probes))
    for h in scanned:
        expected = _expected_open(net, h)
        ports = wanted[h.name]
        opened = {
            ip: {
                p
                for (ph, pip, p), is_open in zip(probes, answers, strict=True)
                if ph.name == h.name and pip == ip and is_open
            }
            for ip in h.public_ips
        }
        extra = {ip: sorted(o - expected) for ip, o in opened.items() if o - expected}
        families = " and ".join(f"IPv{ip.version}" for ip in h.public_ips)
        if extra:
            what = "; ".join(f"{ports_} over IPv{ip.version}" for ip, ports_ in extra.items())
            report.add(
                "external", h.name, FAIL, f"open to the internet: {what} (expected only {sorted(expected)})"
            )
        elif sshpath.via_hub(h):
            here = "answers here: this machine is on it" if any(opened.values()) else "not from here"
            report.add(
                "external",
                h.name,
                OK,
                f"no public port (ssh.via hub); SSH only for "
                f"ssh.allow_from ({here}; {len(ports)} ports tried)",
            )
        elif len({frozenset(o) for o in opened.values()}) > 1:
            what = "; ".join(f"{sorted(o)} over IPv{ip.version}" for ip, o in opened.items())
            report.add("external", h.name, FAIL, f"the families differ: {what}")
        else:
            seen = sorted(next(iter(opened.values())))
            report.add(
                "external",
                h.name,
                OK,
                f"from outside only {seen} answer over {families} ({len(ports)} ports tried)",
            )


def _expected_open(net: Network, h: Host) -> set[int]:
    if sshpath.via_hub(h):
        # nothing at all for the world; SSH only for ssh.allow_from, which may list this machine
        return {net.ssh.port} if net.ssh.allow_from else set()
    return {net.ssh.port} | ({80, 443} if h.role == "hub" else set())


def _tcp_open(ip: str, port: int) -> bool:
    try:
        socket.create_connection((ip, port), timeout=1).close()
        return True
    except OSError:
        return False


# --- a neighbour on the provider's network -------------------------------------------------
def _declared_targets(net: Network, h: Host) -> list[tuple[str, int | None]]:
    """What a neighbour would try on the WG address that the file names: the host's services,
    SSH, the hub's web ports (nginx listens on every address) and its resolver for clients, and
    ping."""
    wg = str(h.wg_ip)
    ports = {s.port for s in net.services_on(h.name)} | {net.ssh.port}
    if h.role == "hub":
        ports |= set(HUB_WEB_PORTS) | ({plan.DNS_PORT} if net.clients else set())
    return [(wg, p) for p in sorted(ports)] + [(wg, None)]


def _undeclared_targets(net: Network, h: Host, health: dict) -> list[tuple[str, int | None]]:
    """TCP ports bound on the host's WG address (or every address) that the file does not name."""
    wg = str(h.wg_ip)
    ports = {
        s["port"]
        for s in health["sockets"]
        if s["proto"] == "tcp" and s["port"] and s["address"] in (wg, "0.0.0.0", "*", "::")
    }
    declared = {p for _, p in _declared_targets(net, h)}
    return [(wg, p) for p in sorted(ports - declared)]


def knock_as_a_neighbour(
    net: Network, hosts: list[Host], targets: dict[str, list[tuple[str, int | None]]]
) -> dict:
    """From here, route each host's WG address via its public address (and, for the backends,
    via the hub's) and knock on ``targets`` (by host name): ``{"direct": {target: answer},
    "hub": {...}}``, or ``{"unavailable": reason}`` when this machine cannot play the
    neighbour. Silence counts as closed after `probe.silence_window` of the hosts' answers
    on their public SSH port. The probe routes over IPv4: an IPv6-only host is knocked on
    via the hub only."""
    hub4 = net.hub.public_address(4)
    if hub4 is None:
        return {"unavailable": "the hub has no IPv4 address (the probe routes over IPv4 only)"}
    own4 = {h.name: h.public_address(4) for h in hosts}
    direct = {str(h.wg_ip): str(own4[h.name]) for h in hosts if own4[h.name]}
    via_hub = {str(h.wg_ip): str(hub4) for h in hosts if h.role == "backend"}
    try:
        with probe.routed(direct, slot=0) as m1, probe.routed(via_hub, slot=1) as m2:
            every = [t for name, ts in targets.items() if own4[name] for t in ts]
            behind = [t for name, ts in targets.items() if net.host(name).role == "backend" for t in ts]
            with ThreadPoolExecutor(max_workers=max(2, len(hosts))) as pool:
                times = pool.map(
                    lambda ip: probe.answer_time(str(ip), net.ssh.port), [ip for ip in own4.values() if ip]
                )
                window = probe.silence_window([t for t in times if t is not None])
                a = pool.submit(probe.knock, every, m1, window)
                b = pool.submit(probe.knock, behind, m2, window) if behind else None
                return {"direct": a.result(), "hub": b.result() if b else {}}
    except probe.ProbeUnavailable as e:
        return {"unavailable": str(e)}


def _merged(a: dict, b: dict) -> dict:
    if "unavailable" in a or "unavailable" in b:
        return a if "unavailable" in a else b
    return {way: {**a.get(way, {}), **b.get(way, {})} for way in ("direct", "hub")}


def _isolation_checks(net: Network, hosts: list[Host], health: dict, knocked: dict, report: Report) -> None:
    """The guard as the network file wants it, loaded; and nothing answers the neighbour."""
    for h in hosts:
        mine = health.get(h.name)
        if not mine:
            continue
        problems = []
        st = mine.get("isolation") or {}
        if st.get("active") != "active":
            problems.append(f"the guard (backhaul-isolation) is {st.get('active') or 'missing'}")
        elif st.get("rules") != "loaded":
            problems.append(f"the guard's rules are {st.get('rules')} since it loaded them")
        elif differs(st, guard_files(plan.isolation(net, h))):
            problems.append("the guard is not the one this network file makes")
        wg = str(h.wg_ip)
        if "unavailable" in knocked:
            tried = f"guard loaded; not probed from here: {knocked['unavailable']}"
        else:
            own4, hub4 = h.public_address(4), net.hub.public_address(4)
            for way, via in (("direct", own4), ("hub", hub4)):
                answers = {
                    t: a
                    for t, a in knocked.get(way, {}).items()
                    if t.startswith(wg + ":") and a != probe.SILENT
                }
                if answers:
                    what = ", ".join(f"{t.split(':')[1]} ({a})" for t, a in sorted(answers.items()))
                    problems.append(f"answered on {wg} routed via {via}: {what}")
            n = sum(t.startswith(wg + ":") for t in knocked.get("direct" if own4 else "hub", {}))
            vias = ([f"via {own4}"] if own4 else []) + (
                [f"via the hub {hub4}"] if h.role == "backend" else []
            )
            tried = f"{n - 1} ports and ping on {wg} {' and '.join(vias)}: nothing answered"
        if problems:
            report.add(
                "isolation",
                h.name,
                FAIL,
                "; ".join(problems) + " (a neighbour on the provider's network gets in): run inv deploy",
            )
        else:
            report.add("isolation", h.name, OK, f"only the tunnel reaches {wg}; {tried}")
