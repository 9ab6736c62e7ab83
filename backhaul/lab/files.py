"""The lab's controller files: what a user (or a test) needs to reach and deploy to the lab.

.lab/network.yml    a normal network description pointing at the lab hosts
.lab/ssh_config     so that `ssh -F .lab/ssh_config backend-1` works
.lab/known_hosts    the hosts' real SSH host keys (strict checking stays on)
.lab/id_ed25519     the lab's SSH key (private; 0600, git-ignored)
"""

from __future__ import annotations

from pathlib import Path

from backhaul.lab import system
from backhaul.lab.layout import Lab, LabHost


def ensure_ssh_key(lab: Lab) -> tuple[Path, str]:
    d = lab.files_dir
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    key = d / "id_ed25519"
    if not key.exists():
        system.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"backhaul-lab-{lab.name}", "-f", str(key)]
        )
    return key, (d / "id_ed25519.pub").read_text()


def write_known_hosts(lab: Lab, host_keys: dict[str, str]) -> Path:
    path = lab.files_dir / "known_hosts"
    lines = [f"{h.address} ssh-ed25519 {host_keys[h.name]}" for h in lab.hosts if h.name in host_keys]
    path.write_text("\n".join(lines) + "\n")
    return path


# The key exchange of the lab's own SSH (tests, pingers, `ssh -F .lab/ssh_config`): OpenSSH 9.2
# picks the post-quantum sntrup761x25519 by default, 0.13 s of the client's CPU per connection
# against 0.01 s for curve25519 (measured here; the suite opens thousands). A lab on a bridge of
# this machine gains nothing from it. backhaul's own connections (pyinfra's paramiko) never
# offered it.
KEX = "curve25519-sha256"


def write_ssh_config(lab: Lab) -> Path:
    d = lab.files_dir.resolve()
    blocks = []
    for h in lab.hosts:
        blocks.append(
            f"Host {h.name}\n  HostName {h.address}\n  User root\n  IdentityFile {d}/id_ed25519\n"
            f"  UserKnownHostsFile {d}/known_hosts\n  StrictHostKeyChecking yes\n"
            "  IdentitiesOnly yes\n  BatchMode yes\n  ConnectTimeout 5\n"
            f"  KexAlgorithms {KEX}\n"
        )
    path = lab.files_dir / "ssh_config"
    path.write_text("\n".join(blocks))
    return path


def _public_ips(lab: Lab, h: LabHost, indent: str) -> list[str]:
    if h.v6_only:
        return [f"{indent}public_ip: {h.ip6}"]
    six = [f"{indent}public_ip6: {h.ip6}"] if lab.ipv6 else []
    return [f"{indent}public_ip: {h.ip}", *six]


def network_yaml(lab: Lab, acme_directory: str, services: str = "") -> str:
    """The network description of the lab, as a user would write it for real servers."""
    hub, *more = [h for h in lab.network_hosts if h.role == "hub"]
    backends = [h for h in lab.network_hosts if h.role == "backend"]
    d = lab.files_dir.resolve()
    lines = [
        f"# The lab '{lab.name}' (written by `inv lab.up`; edit freely, lab.up rewrites it).",
        "network:",
        "  subnet: 10.50.0.0/24",
        "  port: 51820",
        "  interface: wg0",
        "ssh:",
        "  user: root",
        "  port: 22",
        f"  key: {d}/id_ed25519",
        f"  known_hosts: {d}/known_hosts",
        "proxy:",
        f"  name: {hub.name}",
        *_public_ips(lab, hub, "  "),
    ]
    if more:
        lines.append("proxies:")
    for k, h in enumerate(more, start=2):
        # out of the backends' way (they take .2, .3, ...): .202, .203, ...
        lines += [f"  - name: {h.name}", *_public_ips(lab, h, "    "), f"    wg_ip: 10.50.0.{200 + k}"]
    lines.append("backends:" if backends else "backends: []")
    for i, b in enumerate(backends, start=2):
        lines += [f"  - name: {b.name}", *_public_ips(lab, b, "    "), f"    wg_ip: 10.50.0.{i}"]
    lines += ["services:" if services else "services: []"]
    if services:
        lines.append(services.rstrip("\n"))
    lines += [
        "tls:",
        "  mode: acme",
        f"  acme_server: {acme_directory}",
        f"  email: ops@{lab.domain}",
        "  # the lab's ACME server (pebble) serves its API with this CA",
        f"  acme_ca_bundle: {d}/acme-api-ca.pem",
        "  # pebble's issuing root: what `inv verify` trusts for the services' certificates",
        f"  verify_ca_bundle: {d}/acme-root.pem",
    ]
    return "\n".join(lines) + "\n"
