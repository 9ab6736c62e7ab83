"""Everything, in order: packages (one apt run), the tunnel (other parts bind to it), the
firewall and the isolation guard, services bound to the tunnel, nginx.

    pyinfra inventory.py deploys/site.py      (what `inv deploy` runs)
"""

from pathlib import Path

from pyinfra import host, local
from pyinfra.api.exceptions import DeployError

from backhaul import connection, deployfiles, readlog, software
from backhaul.facts import snapshot
from backhaul.facts.system import SudoAccess, sudo_problem
from backhaul.network import load_current

# pyinfra reads the call stack for each operation: let it find our files in inspect's cache
deployfiles.name_as_modules(Path(__file__).parent)
# under `inv deploy`: every command run on a host, for the next no-op to read again (readlog.py);
# first: the connectors' methods are wrapped per host below
readlog.capture()

# a host whose SSH connection dies mid-run (a reboot) fails alone, named (backhaul/connection.py)
connection.fail_alone_when_lost(host)

if host.data.get("_sudo"):
    # A non-root SSH user: before any fact or command runs through sudo, make sure sudo asks
    # for no password (else pyinfra would prompt, or fail mid-run). Raised while the deploy
    # is prepared: no host has been changed.
    problem = sudo_problem(host.name, host.get_fact(SudoAccess, _sudo=False))
    if problem:
        raise DeployError(f"{problem} (nothing was changed)")

# every fact the last full deploy read on this host, in one round trip (see the module); and,
# when this run ends, the record of what this one read, for the next
snapshot.take(load_current().path)
snapshot.record_when_done(load_current().path)
local.include("deploys/packages.py")  # one apt run for all of them; the parts skip theirs:
installed = {software.SITE_INSTALLED: True}
local.include("deploys/wireguard.py", data=installed)
local.include("deploys/firewall.py", data=installed)
local.include("deploys/isolation.py", data=installed)  # before anything publishes on the WG address
local.include("deploys/docker_bind.py", data=installed)
local.include("deploys/units.py", data=installed)
local.include("deploys/nginx.py", data=installed)
local.include("deploys/resolver.py", data=installed)  # the hub, with clients: their DNS
