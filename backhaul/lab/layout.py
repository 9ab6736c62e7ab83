"""Where a lab lives: its name, addresses, directories and the names of its hosts.

Everything else in the lab package derives paths and addresses from a :class:`Lab`, so two labs
with different names (and subnets) never share a bridge, a directory, a cgroup or an address.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from backhaul.errors import LabError

# Shared by every lab on the machine: the base image and the apt cache survive labs and clones.
CACHE_DIR = Path(os.environ.get("BACKHAUL_CACHE", "/var/cache/backhaul"))
# Per-lab host filesystems (overlay upper dirs, docker dirs): on the real disk, not in the repo.
STATE_ROOT = Path(os.environ.get("BACKHAUL_LAB_ROOT", "/var/lib/backhaul/labs"))

DEFAULT_LAB = "demo"
# TEST-NET-2 for the default lab; others take a /24 from 198.18.0.0/15 (RFC 2544, benchmarking),
# never 192.0.2.0/24 (this machine's eth0) nor 203.0.113.0/24 (the Debian mirror resolves there).
DEFAULT_SUBNETS = {"demo": "198.51.100.0/24", "ci": "198.18.10.0/24"}
# The Debian releases the lab boots (backhaul.lab.image builds one base image for each).
SUITES = ("bookworm", "trixie")  # Debian 12, Debian 13
DEFAULT_SUITE = "trixie"  # today's stable: what a user renting a VPS gets
NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,5}$")
MAX_BACKENDS = 40
MAX_HUBS = 9  # proxy-2 .. proxy-9 at .62 .. .69


@dataclass(frozen=True)
class LabHost:
    name: str  # hostname inside, and the inventory name: "proxy", "backend-1", ...
    machine: str  # nspawn machine name, short so the veth name "vb-<machine>" fits 15 chars
    ip: ipaddress.IPv4Address
    role: str  # "hub" | "backend" | "spare"
    suite: str = "trixie"  # the Debian release it boots (its base image)
    ip6: ipaddress.IPv6Address | None = None  # its address on the bridge's IPv6 /64
    v6_only: bool = False  # no IPv4 address at all: like a VPS rented without IPv4

    @property
    def address(self) -> str:
        """Where SSH (and the lab's tools) reach the host: its IPv4 address, or its IPv6 one
        when it has no IPv4."""
        return str(self.ip6 if self.v6_only else self.ip)


@dataclass(frozen=True)
class Lab:
    name: str
    subnet: ipaddress.IPv4Network
    backends: int
    project_dir: Path  # where .lab/ (network.yml, ssh_config, key) is written
    spares: int = 0  # booted but NOT in network.yml: hosts to try `inv add-backend` on
    suite: str = "trixie"  # the hub's Debian release (and every host's, unless below)
    backend_suite: str | None = None  # a mixed fleet: backends and spares on another release
    # IPv6 in network.yml: each host's bridge IPv6 address as public_ip6 (every host has one
    # on the wire either way); the hosts named in v6_only get no IPv4 address at all
    ipv6: bool = False
    v6_only: frozenset[str] = frozenset()
    # QEMU VMs on Debian's own kernel (kernel WireGuard) instead of containers (vmhosts.py)
    vm: bool = False
    # hubs in network.yml: proxy, then proxy-2, ... under proxies: (docs/two-hubs.md)
    hubs: int = 1
    # hosts with backhaul's packages already in (image.with_packages): for labs whose tests
    # are not about installing them; a deploy from bare hosts is the default
    packaged: bool = False

    @classmethod
    def make(
        cls,
        name: str = DEFAULT_LAB,
        backends: int = 2,
        subnet: str | None = None,
        project_dir: str | Path = ".",
        spares: int = 0,
        suite: str | None = None,
        backend_suite: str | None = None,
        ipv6: bool = False,
        v6_only: frozenset[str] | tuple[str, ...] | list[str] = (),
        vm: bool = False,
        hubs: int = 1,
        packaged: bool = False,
    ) -> Lab:
        _check_name(name)
        if not 0 <= backends <= MAX_BACKENDS or not 0 <= spares <= MAX_BACKENDS - backends:
            raise LabError(f"--backends {backends} --spares {spares}: at most {MAX_BACKENDS} in all")
        net = _subnet(subnet or DEFAULT_SUBNETS.get(name) or _derived_subnet(name), backends + spares)
        suite = suite or DEFAULT_SUITE
        for s in (suite, backend_suite):
            if s is not None and s not in SUITES:
                raise LabError(f"suite {s!r} is not one the lab builds: use one of {', '.join(SUITES)}")
        if not 1 <= hubs <= MAX_HUBS:
            raise LabError(f"--hubs {hubs}: a lab has 1 to {MAX_HUBS} hubs")
        v6_only = frozenset(v6_only)
        _check_v6_only(v6_only, backends + spares)
        return cls(
            name=name,
            subnet=net,
            backends=backends,
            project_dir=Path(project_dir),
            spares=spares,
            suite=suite,
            backend_suite=None if backend_suite == suite else backend_suite,
            ipv6=ipv6 or bool(v6_only),
            v6_only=v6_only,
            vm=vm,
            hubs=hubs,
            packaged=packaged,
        )

    @property
    def suites(self) -> list[str]:
        """The releases the lab's hosts boot, the hub's first."""
        return [self.suite] + ([self.backend_suite] if self.backend_suite else [])

    # --- addresses -------------------------------------------------------------------------
    @property
    def gateway(self) -> ipaddress.IPv4Address:
        """The bridge's address: the outer machine, where the apt cache and pebble listen."""
        return self.subnet.network_address + 1

    @property
    def subnet6(self) -> ipaddress.IPv6Network:
        """The bridge's IPv6 /64, from the documentation prefix 2001:db8::/32 and made of the
        IPv4 subnet's middle octets (198.51.100.0/24 -> 2001:db8:51:100::/64): two labs share
        one only if they share the IPv4 subnet, which lab.up refuses already."""
        o = self.subnet.network_address.packed
        return ipaddress.IPv6Network(f"2001:db8:{o[1]}:{o[2]}::/64")

    @property
    def gateway6(self) -> ipaddress.IPv6Address:
        return self.subnet6.network_address + 1

    def _ip6(self, n: int) -> ipaddress.IPv6Address:
        # ::10 beside .10: the same digits, read as hex (n <= 50 < 100)
        return self.subnet6.network_address + int(str(n), 16)

    def outsider_ip(self) -> ipaddress.IPv4Address:
        """A spare bridge address tests add to the outer machine to play a stranger."""
        return self.subnet.network_address + 200

    @property
    def hosts(self) -> list[LabHost]:
        """Every booted host: the hubs, the backends, then the spares."""
        base = self.subnet.network_address
        out = [LabHost("proxy", f"{self.name}-0", base + 10, "hub", self.suite, self._ip6(10))]
        # further hubs at .62, .63, ... (after the backends' and spares' .11-.50)
        out += [
            LabHost(f"proxy-{k}", f"{self.name}-h{k}", base + 60 + k, "hub", self.suite, self._ip6(60 + k))
            for k in range(2, self.hubs + 1)
        ]
        for i in range(1, self.backends + self.spares + 1):
            role = "backend" if i <= self.backends else "spare"
            name = f"backend-{i}"
            out.append(
                LabHost(
                    name,
                    f"{self.name}-{i}",
                    base + 10 + i,
                    role,
                    self.backend_suite or self.suite,
                    self._ip6(10 + i),
                    name in self.v6_only,
                )
            )
        return out

    @property
    def network_hosts(self) -> list[LabHost]:
        """The hosts network.yml describes (not the spares)."""
        return [h for h in self.hosts if h.role != "spare"]

    # --- names and places ------------------------------------------------------------------
    @property
    def bridge(self) -> str:
        return f"bh-{self.name}"

    @property
    def cgroup_name(self) -> str:
        return f"backhaul-{self.name}"

    @property
    def state_dir(self) -> Path:
        return STATE_ROOT / self.name

    def host_dir(self, host: LabHost) -> Path:
        return self.state_dir / "hosts" / host.name

    @property
    def files_dir(self) -> Path:
        """The lab's controller files: .lab/ for the default lab, .lab-<name>/ for others."""
        sub = ".lab" if self.name == DEFAULT_LAB else f".lab-{self.name}"
        return self.project_dir / sub

    @property
    def domain(self) -> str:
        return f"{self.name}.lab.test"


def _derived_subnet(name: str) -> str:
    # Stable per name, inside 198.18.0.0/15, away from the explicit defaults above.
    n = sum((i + 1) * ord(c) for i, c in enumerate(name))
    return f"198.{18 + (n // 200) % 2}.{20 + n % 200}.0/24"


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise LabError(
            f"lab name {name!r} is not valid: use 1-6 lowercase letters/digits starting "
            "with a letter (it becomes part of interface names limited to 15 characters)"
        )


def _subnet(subnet: str, backends: int) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(subnet)
    except ValueError as e:
        raise LabError(f"lab subnet {subnet!r} is not an IPv4 network: {e}") from None
    if net.num_addresses < backends + 16:
        raise LabError(f"lab subnet {net} is too small for {backends} backends")
    return net


def _check_v6_only(v6_only: frozenset[str], backends: int) -> None:
    if "proxy" in v6_only:
        raise LabError(
            "--v6-only proxy: the hub reaches the lab's ACME server (pebble) over "
            "IPv4; make backends IPv6-only, e.g. --v6-only backend-2"
        )
    names = {f"backend-{i}" for i in range(1, backends + 1)}
    if v6_only - names:
        raise LabError(
            f"--v6-only {','.join(sorted(v6_only - names))}: no such backend or "
            f"spare in this lab (it has backend-1..backend-{backends})"
        )
