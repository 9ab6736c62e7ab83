"""nginx and certificate facts for the hub: one command each, plain data out.

Certificates are read with openssl ON THE HOST: only names and dates leave it, never a key.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from pyinfra.api import FactBase

# Paths and glob patterns handed to the shell: the glob is expanded by the shell, so it cannot
# be quoted; this pattern keeps it harmless.
_PATH_RE = re.compile(r"/[A-Za-z0-9._/*@+-]*")
_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")

# `listen 80 default_server`, `listen [::]:80 default_server`, `listen 1.2.3.4:80 ... default_server`
_DEFAULT_80 = r"^[[:space:]]*listen[[:space:]]+([^;#]*:)?80([[:space:]][^;#]*)?default_server"


def check_path(path: str) -> str:
    if not isinstance(path, str) or not _PATH_RE.fullmatch(path) or ".." in path:
        raise ValueError(f"unsafe path {path!r}: use an absolute path of [A-Za-z0-9._/*@+-]")
    return path


def _read_lines(output: list[str], listed: str) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """The ``key=value`` lines of a fact's command: ``file=<sha256>=<path>`` lines as
    ``{path: sha256}``, the ``<listed>=...`` lines as a list, every other key as ``{key: value}``."""
    raw: dict[str, str] = {}
    files: dict[str, str] = {}
    values: list[str] = []
    for line in output:
        key, _, value = line.partition("=")
        if key == "file":
            digest, _, path = value.partition("=")
            files[path] = digest
        elif key == listed:
            values.append(value)
        else:
            raw[key] = value.strip()
    return raw, files, values


class NginxState(FactBase[dict[str, Any]]):
    """
    Returns what a backhaul nginx change needs to know, in one command.

    + paths: files or glob patterns (e.g. ``/etc/nginx/sites-enabled/backhaul-*.conf``) whose
      sha256 to report

    ``version`` is the installed nginx (None when absent); ``candidate`` is what apt would
    install, so a first deploy renders for the right version before nginx is there.
    ``default_server_80`` lists the enabled files (sites-enabled, conf.d) that declare the
    port-80 default server. A dangling symlink hashes to ``"dangling"``.

    .. code:: python

        {
            "version": "1.22.1", "candidate": "1.22.1-9+deb12u1",
            "active": True, "enabled": True, "ipv6": True,
            "files": {"/etc/nginx/conf.d/backhaul.conf": "9f86d0...", ...},
            "default_server_80": ["/etc/nginx/sites-enabled/default"],
        }
    """

    def command(self, paths: list[str] | None = None) -> str:
        patterns = " ".join(check_path(p) for p in (paths or []))
        loop = (
            f"for f in {patterns}; do "
            'if [ -L "$f" ] && [ ! -e "$f" ]; then echo "file=dangling=$f"; '
            'elif [ -f "$f" ]; then echo "file=$(sha256sum < "$f" | cut -c1-64)=$f"; fi; done; '
            if patterns
            else ""
        )
        return (
            "if command -v nginx >/dev/null 2>&1; then "
            "nginx -v 2>&1 | sed -n 's|^nginx version: nginx/|version=|p'; "
            "else apt-cache policy nginx 2>/dev/null | sed -n 's|^ *Candidate: |candidate=|p'; fi; "
            'echo "active=$(systemctl is-active nginx 2>/dev/null)"; '
            'echo "enabled=$(systemctl is-enabled nginx 2>/dev/null)"; '
            "[ -e /proc/net/if_inet6 ] && echo ipv6=yes; "
            f"{loop}"
            f"grep -lE {shlex.quote(_DEFAULT_80)} /etc/nginx/sites-enabled/* "
            "/etc/nginx/conf.d/*.conf 2>/dev/null | sed 's/^/default80=/'; true"
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        raw, files, default80 = _read_lines(output, listed="default80")
        candidate = raw.get("candidate")
        return {
            "version": raw.get("version") or None,
            "candidate": None if candidate in (None, "", "(none)") else candidate,
            "active": raw.get("active") == "active",
            "enabled": raw.get("enabled") in ("enabled", "enabled-runtime", "static"),
            "ipv6": raw.get("ipv6") == "yes",
            "files": files,
            "default_server_80": default80,
        }

    def default(self) -> dict[str, Any]:
        return self.process([])


class CertificateState(FactBase[dict[str, Any]]):
    """
    Returns the names and expiry of certificate files, who issued their chains, and which ACME
    server issued lineages.

    + certs: certificate (chain) paths; the first certificate of each file is read
    + lineages: certbot certificate names whose ``renewal/<name>.conf`` ``server`` to report

    ``now`` is the host's clock (epoch), so expiry is judged by the host's time. Missing files
    are absent; ``names`` are the DNS names of the subjectAltName; ``not_after`` is epoch
    seconds (None when openssl could not read the file). ``chain_issuer`` and
    ``chain_issuer_key`` (the authority key id, hex) name the CA that signed the file's last
    certificate, i.e. the root the chain ends at; absent when openssl did not say.

    .. code:: python

        {
            "now": 1760000000,
            "certs": {"/etc/letsencrypt/live/app/fullchain.pem":
                      {"names": ["app.example.com"], "not_after": 1767000000,
                       "chain_issuer": "CN=ISRG Root X1,O=Internet Security Research Group,C=US",
                       "chain_issuer_key": "79:B4:59:E6:7B:B6:E5:E4:01:73:80:08:88:C8:1A:58:F6:E9:9B:6E"}},
            "renewal_servers": {"app": "https://acme-v02.api.letsencrypt.org/directory"},
        }
    """

    def command(self, certs: list[str] | None = None, lineages: list[str] | None = None) -> str:
        parts = ['echo "now=$(date +%s)"']
        cert_paths = [check_path(p) for p in certs or []]
        if any("*" in p for p in cert_paths):
            raise ValueError("CertificateState: certs are paths, not patterns")
        if cert_paths:
            # One openssl per file (expiry and names at once), the files side by side: openssl
            # starts in ~25 ms, and this fact is read while the deploy is prepared. Each line
            # is one printf, so lines from parallel files never mix; sorted, so that an
            # unchanged host reads the same each time (backhaul/unchanged.py).
            parts.append(
                f"{{ for f in {' '.join(shlex.quote(p) for p in cert_paths)}; do "
                '[ -f "$f" ] || continue; ( '
                'x=$(openssl x509 -in "$f" -noout -enddate -ext subjectAltName 2>/dev/null); '
                'end=$(printf "%s\\n" "$x" | sed -n "s/^notAfter=//p"); '
                'names=$(printf "%s\\n" "$x" | sed -n "/Subject Alternative Name/{n;p;}" '
                "| tr -d ' '); "
                # the chain's last certificate: the one a root signed (its issuer, and the key
                # id of that issuer), for "was it issued by the configured CA?"
                'top=$(awk \'/-----BEGIN CERTIFICATE-----/{b=""} {b=b $0 "\\n"} '
                'END{printf "%s", b}\' "$f" | openssl x509 -noout -issuer -nameopt RFC2253 '
                "-ext authorityKeyIdentifier 2>/dev/null); "
                'issuer=$(printf "%s\\n" "$top" | sed -n "s/^issuer=//p"); '
                'akid=$(printf "%s\\n" "$top" | sed -n "/Authority Key Identifier/{n;p;}" '
                "| sed 's/keyid://' | tr -d ' '); "
                'printf "cert\\t%s\\t%s\\t%s\\t%s\\t%s\\n" "$f" '
                '"$(if [ -n "$end" ]; then date -d "$end" +%s; fi)" "$names" "$issuer" "$akid" ) '
                "& done; wait; } | sort"
            )
        names = []
        for n in lineages or []:
            if not _NAME_RE.fullmatch(n):
                raise ValueError(f"CertificateState: {n!r} is not a certificate name")
            names.append(n)
        if names:
            parts.append(
                f"for n in {' '.join(names)}; do f=/etc/letsencrypt/renewal/$n.conf; "
                '[ -f "$f" ] && printf "renewal\\t%s\\t%s\\n" "$n" '
                '"$(sed -n \'s/^server *= *//p\' "$f" | head -n 1)"; done'
            )
        return "; ".join(parts) + "; true"

    def process(self, output: list[str]) -> dict[str, Any]:
        now = None
        certs: dict[str, dict[str, Any]] = {}
        servers: dict[str, str] = {}
        for line in output:
            if line.startswith("now="):
                value = line[4:].strip()
                now = int(value) if value.isdigit() else None
                continue
            fields = line.split("\t")
            if fields[0] == "cert" and len(fields) in (4, 6):
                _, path, end, names = fields[:4]
                certs[path] = {
                    "names": [n[4:] for n in names.split(",") if n.startswith("DNS:")],
                    "not_after": int(end) if end.strip().isdigit() else None,
                }
                issuer, key = fields[4:6] if len(fields) == 6 else ("", "")
                if issuer.strip():
                    certs[path]["chain_issuer"] = issuer.strip()
                if key.strip():
                    certs[path]["chain_issuer_key"] = key.strip().upper()
            elif fields[0] == "renewal" and len(fields) == 3 and fields[2]:
                servers[fields[1]] = fields[2].strip()
        return {"now": now, "certs": certs, "renewal_servers": servers}

    def default(self) -> dict[str, Any]:
        return self.process([])


class OwnedCertificates(FactBase[dict[str, Any]]):
    """
    Returns the certificates backhaul made on the hub, by name: certbot lineages whose renewal
    conf uses backhaul's webroot, and the directories of self-signed ones.

    + webroot: backhaul's ACME webroot (how its lineages are told from an operator's own)
    + self_signed_dir: where backhaul keeps self-signed certificates, one directory per name

    .. code:: python

        {"lineages": ["api", "app"], "self_signed": ["app"]}
    """

    def command(self, webroot: str, self_signed_dir: str) -> str:
        check_path(webroot)
        check_path(self_signed_dir)
        if "*" in webroot + self_signed_dir:
            raise ValueError("OwnedCertificates: paths, not patterns")
        pattern = shlex.quote(f"^webroot_path = {re.escape(webroot)},?$")
        return (
            f"grep -lE {pattern} /etc/letsencrypt/renewal/*.conf 2>/dev/null "
            "| sed 's|.*/||; s|[.]conf$||; s|^|lineage=|'; "
            f"for d in {shlex.quote(self_signed_dir)}/*/; do "
            '[ -d "$d" ] && echo "self_signed=$(basename "$d")"; done; true'
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        out: dict[str, list[str]] = {"lineages": [], "self_signed": []}
        for line in output:
            key, _, value = line.partition("=")
            if key == "lineage" and _NAME_RE.fullmatch(value):
                out["lineages"].append(value)
            elif key == "self_signed" and _NAME_RE.fullmatch(value):
                out["self_signed"].append(value)
        return {k: sorted(v) for k, v in out.items()}

    def default(self) -> dict[str, Any]:
        return self.process([])


class CertbotState(FactBase[dict[str, Any]]):
    """
    Returns the state of the ACME client's surroundings: certbot, its timer, and files.

    + paths: files whose sha256 to report (hook, drop-in, CA bundle)
    + dirs: directories to report as existing (the webroot)

    .. code:: python

        {
            "certbot": "/usr/bin/certbot",                   # None when not installed
            "timer_enabled": True, "timer_active": True,
            "files": {"/etc/backhaul/acme-ca.pem": "9f86d0..."},
            "dirs": ["/var/www/backhaul-acme"],
        }
    """

    def command(self, paths: list[str] | None = None, dirs: list[str] | None = None) -> str:
        files = " ".join(shlex.quote(check_path(p)) for p in paths or [])
        folders = " ".join(shlex.quote(check_path(p)) for p in dirs or [])
        parts = [
            'echo "certbot=$(command -v certbot)"',
            'echo "timer_enabled=$(systemctl is-enabled certbot.timer 2>/dev/null)"',
            'echo "timer_active=$(systemctl is-active certbot.timer 2>/dev/null)"',
        ]
        if files:
            parts.append(
                f'for f in {files}; do [ -f "$f" ] && echo "file=$(sha256sum < "$f" | cut -c1-64)=$f"; done'
            )
        if folders:
            parts.append(f'for d in {folders}; do [ -d "$d" ] && echo "dir=$d"; done')
        return "; ".join(parts) + "; true"

    def process(self, output: list[str]) -> dict[str, Any]:
        raw, files, dirs = _read_lines(output, listed="dir")
        return {
            "certbot": raw.get("certbot") or None,
            "timer_enabled": raw.get("timer_enabled") in ("enabled", "enabled-runtime", "static"),
            "timer_active": raw.get("timer_active") == "active",
            "files": files,
            "dirs": dirs,
        }

    def default(self) -> dict[str, Any]:
        return self.process([])
