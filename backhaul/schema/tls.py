"""The tls section: how the hub gets its certificates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode, Node

from backhaul.fields import (
    ACME_SERVERS,
    check_acme_server,
    check_email,
    check_mode,
    controller_file,
    controller_path,
    hub_path,
)
from backhaul.model import (
    Tls,
)
from backhaul.schema.keys import TLS_KEYS
from backhaul.yamlcheck import BAD, Checker


def read_tls(ck: Checker, node: Node | None, doc: MappingNode, base: Path) -> Any:
    m = ck.mapping(node, "tls", TLS_KEYS)
    if m is None:
        return BAD
    mode = ck.matching(m, "mode", "tls.mode", check_mode) or "acme"
    server = ck.matching(m, "acme_server", "tls.acme_server", check_acme_server) or "letsencrypt"
    email = ck.matching(m, "email", "tls.email", check_email)
    bundle = ck.matching(m, "acme_ca_bundle", "tls.acme_ca_bundle", controller_file(base, "ca"))
    roots = ck.matching(m, "verify_ca_bundle", "tls.verify_ca_bundle", controller_file(base, "ca"))
    cert = ck.matching(m, "cert", "tls.cert", hub_path("/etc/ssl/certs/site.pem"))
    key = ck.matching(m, "key", "tls.key", hub_path("/etc/ssl/private/site.key"))
    parent = node if isinstance(node, MappingNode) else doc
    if mode == "acme" and email is None:
        ck.add(
            parent,
            "tls.email",
            "missing; ACME (tls.mode acme, the default) needs a contact "
            "address: add `email: ops@example.com` under tls, or set `mode: self-signed`",
        )
    if mode == "provided":
        for k, v in (("cert", cert), ("key", key)):
            if v is None:
                example = "/etc/ssl/certs/site.pem" if k == "cert" else "/etc/ssl/private/site.key"
                ck.add(
                    parent,
                    f"tls.{k}",
                    f"missing; mode provided needs the path of the {k} "
                    f"file on the hub, e.g. `{k}: {example}`",
                )
    elif mode is not BAD:
        for k, v in (("cert", cert), ("key", key)):
            if v is not None and v is not BAD:
                ck.add(
                    m[k],
                    f"tls.{k}",
                    f"is only used with mode provided (mode is {mode!r}); remove it or set `mode: provided`",
                )
    if any(v is BAD for v in (mode, server, email, bundle, roots, cert, key)):
        return BAD
    directory = ACME_SERVERS.get(server, server) if mode == "acme" else None
    return Tls(
        mode,
        server,
        directory,
        email,
        controller_path(bundle, base),
        cert,
        key,
        controller_path(roots, base),
    )


# -- clients: admins' devices on the tunnel (road-warrior peers of the hub) --------------------
