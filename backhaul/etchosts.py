"""The granted services' names in a backend's /etc/hosts: one block of backhaul's own.

Why /etc/hosts: every resolver on the host reads it first (glibc's nss `files`, and
systemd-resolved when it runs), it needs no daemon and no package, and it answers with the hub
down, which a direct path must survive. The block is backhaul's; every other line is the
distribution's or the admin's and stays as it is.
"""

from __future__ import annotations

PATH = "/etc/hosts"
BEGIN = "# BEGIN backhaul: granted services over the tunnel (inv deploy writes this block)"
END = "# END backhaul"


def without_block(text: str) -> list[str]:
    """The file's lines that are not backhaul's block."""
    out, inside = [], False
    for line in text.splitlines():
        if line == BEGIN:
            inside = True
        elif inside and line == END:
            inside = False
        elif not inside:
            out.append(line)
    return out


def with_names(text: str, names: list[tuple[str, str]]) -> str:
    """``text`` (the file as it is) with backhaul's block holding ``names`` ((address, name)
    pairs), at the end; no block at all when there is no name."""
    if not names and BEGIN not in text.splitlines():
        return text  # nothing of backhaul's, nothing to add: the file stays byte for byte
    lines = without_block(text)
    if names:
        lines += [BEGIN, *(f"{ip}\t{name}" for ip, name in names), END]
    return "\n".join(lines) + "\n" if lines else ""
