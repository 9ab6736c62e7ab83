"""
Change nginx's configuration so that a config nginx refuses is never live.

How a change is applied (``config``)
------------------------------------
1. the new and changed files are uploaded to a staging directory nginx never reads
   (``/var/lib/backhaul/nginx/stage``);
2. on the host, one script, holding ``/run/backhaul-nginx.lock`` (the certbot renewal hook
   takes it too, so a renewal never reloads a half-swapped config): copies the current files to
   ``/var/lib/backhaul/nginx/backup``, moves the staged files in (``mv``: each file is replaced
   atomically) and moves stale files out, runs ``nginx -t``;
3. ``nginx -t`` fails: every file is put back as it was (new files removed, removed files
   restored) and the script exits non-zero with nginx's own message; nginx was never
   reloaded, so it keeps serving the previous configuration, and the files match it again;
4. it passes: ``systemctl reload nginx`` (``start`` when nginx is not running). Nothing changed,
   nothing reloaded: a no-op run costs one fact.

Testing the candidate in place (rather than a copy under another prefix) matters: nginx's
includes are absolute paths, so only the real tree tests what will really be loaded.
"""

from __future__ import annotations

import fnmatch
import shlex

from pyinfra import host
from pyinfra.api import OperationValueError, operation

from backhaul.facts import snapshot
from backhaul.facts.nginx import NginxState, check_path
from backhaul.operations import hostfile

WORK_DIR = "/var/lib/backhaul/nginx"
STAGE_DIR = f"{WORK_DIR}/stage"
BACKUP_DIR = f"{WORK_DIR}/backup"
LOCK = "/run/backhaul-nginx.lock"

REFUSED = (
    "backhaul: nginx -t refused the new configuration (its message is above); the previous "
    "files are back in place and nginx keeps serving them. Fix the cause (a bad value in the "
    "network file or in nginx_* host data, or a conflicting file of your own) and run again."
)
SWAP_FAILED = (
    "backhaul: could not move the new nginx files into place (see above); the previous files "
    "are back in place and nginx was not reloaded"
)


def apply_script(
    writes: list[str], removes: list[str], stage: str = STAGE_DIR, backup: str = BACKUP_DIR, lock: str = LOCK
) -> str:
    """The host-side script: swap ``writes`` (staged as ``stage/0``, ``stage/1``, ... in that
    order) and ``removes`` in, ``nginx -t``, then reload, or restore and fail."""
    q = shlex.quote
    swap, restore = [], []
    for i, path in enumerate(writes):
        b, s, p = q(f"{backup}/{i}"), q(f"{stage}/{i}"), q(path)
        swap.append(
            f"if [ -e {p} ] || [ -L {p} ]; then cp -a {p} {b}; fi "
            f"&& mkdir -p {q(_dirname(path))} && chmod 644 {s} && mv -f {s} {p} && d{i}=1"
        )
        restore.append(
            f'if [ "$d{i}" = 1 ]; then if [ -e {b} ] || [ -L {b} ]; '
            f"then mv -f {b} {p}; else rm -f {p}; fi; fi"
        )
    for j, path in enumerate(removes, start=len(writes)):
        b, p = q(f"{backup}/{j}"), q(path)
        swap.append(f"mv -f {p} {b} && d{j}=1")
        restore.append(f'if [ "$d{j}" = 1 ]; then mv -f {b} {p}; fi')
    marks = " ".join(f"d{i}=0" for i in range(len(writes) + len(removes)))
    return "\n".join(
        [
            f"exec 9>{q(lock)}",
            "flock -w 120 9 || { echo 'backhaul: another nginx change holds "
            f"{lock}; try again' >&2; exit 1; }}",
            f"rm -rf {q(backup)} && mkdir -p {q(backup)} || exit 1",
            f"ok=1 {marks}",
            f"{{ {' && '.join(swap)}; }} || ok=0",
            'if [ "$ok" = 1 ]; then out=$(nginx -t 2>&1) || ok=2; fi',
            'if [ "$ok" = 1 ]; then',
            "  if systemctl is-active -q nginx; then systemctl reload nginx; else systemctl start nginx; fi",
            "else",
            *(f"  {line}" for line in restore),
            '  if [ "$ok" = 2 ]; then printf "%s\\n" "$out" >&2; '
            f"echo {q(REFUSED)} >&2; "
            f"else echo {q(SWAP_FAILED)} >&2; fi",
            "  exit 1",
            "fi",
        ]
    )


def _dirname(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _check_paths(files: dict[str, str], patterns: list[str]) -> None:
    """Refuse a path nginx.config must never write or remove (before any fact is read)."""
    for path in [*files, *patterns]:
        try:
            check_path(path)
        except ValueError as e:
            raise OperationValueError(f"nginx.config: {e}") from None
    for path in files:
        if "*" in path:
            raise OperationValueError(f"nginx.config: {path!r} in files is a pattern, not a path")


def _stale(path: str, prune: list[str], remove: list[str]) -> bool:
    return path in remove or any(fnmatch.fnmatchcase(path, g) for g in prune)


@operation()
def config(files: dict[str, str], prune: list[str] | None = None, remove: list[str] | None = None):
    """
    Write nginx configuration files, drop stale ones, and reload only after ``nginx -t`` passed.

    + files: absolute path -> wanted content
    + prune: glob patterns of files this caller owns (e.g.
      ``/etc/nginx/sites-enabled/backhaul-*.conf``); a match not in ``files`` is removed
    + remove: other paths to remove when present (e.g. the distro's default site)

    A config ``nginx -t`` refuses is never loaded: see the module docstring for how the files
    are staged, swapped, tested, and restored on failure (the run then fails with nginx's own
    error message). nginx is reloaded only when a file changed; started (and enabled) when it
    is not running.

    **Example:**

    .. code:: python

        from backhaul.operations import nginx
        nginx.config(
            name="nginx: backhaul's configuration",
            files={"/etc/nginx/conf.d/backhaul.conf": shared,
                   "/etc/nginx/sites-enabled/backhaul-app.conf": vhost},
            prune=["/etc/nginx/sites-enabled/backhaul-*.conf"],
            remove=["/etc/nginx/sites-enabled/default"],
        )
    """
    prune, remove = list(prune or []), list(remove or [])
    _check_paths(files, [*prune, *remove])
    st = snapshot.get(NginxState, paths=sorted({*files, *prune, *remove}))
    have: dict[str, str] = st.get("files", {})

    writes = sorted(p for p, content in files.items() if have.get(p) != hostfile.sha256(content))
    removes = sorted(p for p in have if p not in files and _stale(p, prune, remove))

    if writes or removes:
        if writes:
            yield f"mkdir -p {STAGE_DIR} && rm -f {STAGE_DIR}/*"
        for i, path in enumerate(writes):
            staged = f"{STAGE_DIR}/{i}"
            yield hostfile.upload(files[path], staged)
        yield apply_script(writes, removes)
        if not st.get("enabled"):
            yield "systemctl enable nginx"
        return

    if not st.get("active"):
        yield "nginx -t && systemctl start nginx"
    if not st.get("enabled"):
        yield "systemctl enable nginx"
    if st.get("active") and st.get("enabled"):
        host.noop(f"nginx: {len(files)} files up to date, nothing stale; no reload")
