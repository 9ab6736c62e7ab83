"""Everything, in order: tunnel first (other parts bind to it), then firewall, services, nginx.

    pyinfra inventory.py deploys/site.py      (what `inv deploy` runs)
"""

from pyinfra import local

local.include("deploys/wireguard.py")
local.include("deploys/firewall.py")
local.include("deploys/nginx.py")
