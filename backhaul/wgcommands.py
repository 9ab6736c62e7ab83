"""The shell commands that handle WireGuard keys on a host, built here and run by the
operations (``backhaul/operations/wireguard.py``), the deploy and the two-step key rotation
(``backhaul/rotation.py``).

Every one keeps a key on its host: a private key is only ever read by ``wg`` or by the embedding
awk program (``wgconf.AWK_EMBED_KEY``), a preshared key travels on a command's stdin, files are
0600 from their first byte (umask 077) and replaced atomically (temp file + ``mv``).
"""

from __future__ import annotations

import shlex

from backhaul.facts.wireguard import KEY_RE, PSK_DIR, WG_DIR, wg_paths
from backhaul.operations.hostfile import cannot_write
from backhaul.wgconf import AWK_EMBED_KEY, Peer


def embed_key_command(src: str, key: str, conf: str) -> str:
    """Shell command writing ``conf`` (0600, atomically) from ``src`` + the key file."""
    tmp = f"{conf}.tmp"
    return (
        f"umask 077 && awk -v keyfile={shlex.quote(key)} {shlex.quote(AWK_EMBED_KEY)} "
        f"{shlex.quote(src)} > {shlex.quote(tmp)} && mv -f {shlex.quote(tmp)} {shlex.quote(conf)}"
    )


# --- preshared keys: one per hub<->backend pair, made on the hub --------------------------------


def psk_dir_command() -> str:
    q = shlex.quote(PSK_DIR)
    return f"umask 077 && mkdir -p {q} && chmod 700 {q}"


def write_psk_command(path: str) -> str:
    """Write ``path`` (0600, atomically) from the key given on STDIN, if it is a WireGuard key.

    The key arrives on the command's stdin, so it is in no argument, no process list and no
    log; what was read is checked before it replaces anything."""
    p = shlex.quote(path)
    return (
        f"{psk_dir_command()} && cat > {p}.tmp && "
        f"if head -n1 {p}.tmp | grep -q -x -E {shlex.quote(KEY_RE)}; then mv -f {p}.tmp {p}; "
        f"else rm -f {p}.tmp; echo 'backhaul: what came on stdin is not a WireGuard key; "
        f"{path} was left as it was' >&2; exit 1; fi"
    )


def read_psk_command(path: str) -> str:
    """Print a preshared key: only ever run with its output captured, never printed or logged."""
    return f"head -n1 {shlex.quote(path)}"


# --- key rotation in two steps, for flows that must keep the tunnel gap short ----------------
# `keypair(rotate=True)` swaps the key in one go; a rotation that must keep the peer's gap short
# stages the new key first (nothing changes for the running tunnel), tells the peer, then
# activates it. The flow (backhaul/rotation.py) runs these on open connections back to back.


def stage_key_command(interface: str) -> str:
    """Make ``<if>.key.next`` (and ``.pub.next``) and print ONLY its public key (the private
    key stays on the host). Both are checked whole before either is staged: ``wg genkey`` into
    a full disk exits 0 with nothing written, and an empty staged key is no key."""
    paths = wg_paths(interface)
    key, pub = paths["key"] + ".next", paths["pub"] + ".next"
    k, p, valid = shlex.quote(key), shlex.quote(pub), shlex.quote(KEY_RE)
    made = (
        f"wg genkey > {k}.tmp && grep -q -x -E {valid} {k}.tmp"
        f" && wg pubkey < {k}.tmp > {p}.tmp && grep -q -x -E {valid} {p}.tmp"
    )
    failed = cannot_write(key, 1, [f"{key}.tmp", f"{pub}.tmp"])
    return f"umask 077 && {{ {made} || {failed}; }} && mv -f {k}.tmp {k} && mv -f {p}.tmp {p} && cat {p}"


def stage_psk_command(path: str) -> str:
    """Make a new preshared key ``<path>.next`` on the host (nothing printed)."""
    p = shlex.quote(path + ".next")
    return f"{psk_dir_command()} && wg genpsk > {p}.tmp && mv -f {p}.tmp {p}"


def commit_psk_command(path: str) -> str:
    """Swap a staged preshared key (``<path>.next``) in."""
    p = shlex.quote(path)
    return f"test -s {p}.next && mv -f {p}.next {p}"


def activate_key_command(interface: str, psk: tuple[str, str] | None = None) -> str:
    """Switch to the staged key: the conf (key embedded on the host), the live interface, and
    only then the key file, in that order.

    The key file is what a deploy trusts: it puts the key file's key back into any conf or
    interface that has another (``config``). So a switch cut short anywhere is healed by a
    deploy, back to the old key, until the last step makes the new key the key file; a
    ``.pub`` or ``.key.created`` left old after that is repaired by ``keypair``.

    ``psk``: ``(peer public key, preshared key file)``: also swap in that file's staged key
    (``<file>.next``) and give it to the peer, in the same ``wg set`` as the private key."""
    paths = wg_paths(interface)
    key, pub, created = (shlex.quote(paths[k]) for k in ("key", "pub", "created"))
    q_if = shlex.quote(interface)
    commit, peer = "", ""
    if psk:
        commit = f"{commit_psk_command(psk[1])} && "
        peer = f" peer {shlex.quote(psk[0])} preshared-key {shlex.quote(psk[1])}"
    embed = embed_key_command(paths["conf"], paths["key"] + ".next", paths["conf"])
    return (
        f"test -s {key}.next && test -s {pub}.next && {commit}{embed}"
        f" && wg set {q_if} private-key {key}.next{peer}"
        f" && date +%s > {created}.next && mv -f {key}.next {key}"
        f" && mv -f {pub}.next {pub} && mv -f {created}.next {created}"
    )


def sync_peers_command(
    interface: str,
    peers: list[Peer],
    live: dict[str, list[str]] | None,
    live_psk: set[str],
    private_key: str | None = None,
) -> str | None:
    """Make the live interface's peers the conf's in one ``wg set``: what ``wg syncconf``
    does, except that a peer whose allowed IPs are already right keeps them untouched.

    ``wg syncconf`` replaces the allowed IPs of EVERY peer of the conf (remove, then insert):
    in between, a packet to or from that peer has no route and is dropped, on tunnels that did
    not change (seen in the lab with wireguard-go: 1 to 5 pings lost in 200 syncconfs at 2 ms;
    the kernel module removes and inserts the same way, by its source). Here a peer's allowed
    IPs are given only when ``live`` (``{public key: sorted allowed IPs}``, None: unknown) has
    other ones; its preshared key (its file, or none when it has a live one), endpoint and
    keepalive always, as the conf says, which changes nothing on a tunnel that has them. Live
    peers the conf does not name are removed. ``private_key``: the key file to run with, when
    the live key is another one. None when there is nothing to set."""
    spec: list[str] = []
    if private_key:
        spec.append(f"private-key {shlex.quote(private_key)}")
    wanted = {p.public_key for p in peers}
    spec += [f"peer {shlex.quote(pk)} remove" for pk in sorted(set(live or {}) - wanted)]
    for p in peers:
        spec.append(f"peer {shlex.quote(p.public_key)}")
        if p.psk_file:
            spec.append(f"preshared-key {shlex.quote(p.psk_file)}")
        elif p.public_key in live_psk:
            spec.append("preshared-key /dev/null")
        if p.endpoint:
            spec.append(f"endpoint {shlex.quote(p.endpoint)}")
        spec.append(f"persistent-keepalive {shlex.quote(p.keepalive or 'off')}")
        if live is None or live.get(p.public_key) != list(p.allowed_ips):
            spec.append(f"allowed-ips {shlex.quote(','.join(p.allowed_ips))}")
    return f"wg set {shlex.quote(interface)} " + " ".join(spec) if spec else None


def set_peer_command(
    interface: str,
    public_key: str,
    allowed_ips: list[str],
    endpoint: str | None = None,
    keepalive: int = 0,
    remove: str | None = None,
    psk_file: str | None = None,
    keep_psk: bool = False,
) -> str:
    """Change one peer of the live interface (``wg set``); the conf is rewritten by a deploy.

    ``psk_file``: give the peer that file's preshared key. ``keep_psk`` (with ``remove``): give
    it the removed peer's live preshared key, if it had one; the key goes from ``wg show`` to
    a 0600 file on the host and from there to ``wg set``, never to the output."""
    q_if = shlex.quote(interface)
    spec = f"wg set {q_if} peer {shlex.quote(public_key)} allowed-ips {shlex.quote(','.join(allowed_ips))}"
    if endpoint:
        spec += f" endpoint {shlex.quote(endpoint)}"
    if keepalive:
        spec += f" persistent-keepalive {int(keepalive)}"
    if psk_file:
        spec += f" preshared-key {shlex.quote(psk_file)}"
    if not remove:
        return spec
    # One `wg set` removes the old peer and adds the new one: never a moment (or, cut short,
    # a state) with neither; a failed command changes nothing.
    spec = spec.replace(f"wg set {q_if} ", f"wg set {q_if} peer {shlex.quote(remove)} remove ", 1)
    if not keep_psk or psk_file:
        return spec
    carry = shlex.quote(f"{WG_DIR}/.{interface}.psk.carry")
    pick = '$1 == k && $2 != "(none)" { print $2 }'
    return (
        f"umask 077 && wg show {q_if} preshared-keys | awk -v k={shlex.quote(remove)} "
        f"{shlex.quote(pick)} > {carry} && {{ {spec} preshared-key {carry}; "
        f"r=$?; rm -f {carry}; [ $r -eq 0 ]; }}"
    )
