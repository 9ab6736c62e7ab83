"""Everything, in order: packages (one apt run), the tunnel (other parts bind to it), the
firewall and the isolation guard, services bound to the tunnel, nginx.

    pyinfra inventory.py deploys/site.py      (what `inv deploy` runs)
"""

from pyinfra import local

from backhaul.facts import snapshot
from backhaul.network import load_current

# every fact the last full deploy read on this host, in one round trip (see the module)
snapshot.take(load_current().path)
local.include("deploys/packages.py")  # one apt run for all of them
local.include("deploys/wireguard.py")
local.include("deploys/firewall.py")
local.include("deploys/isolation.py")  # before anything publishes on the tunnel address
local.include("deploys/docker_bind.py")
local.include("deploys/units.py")
local.include("deploys/nginx.py")
