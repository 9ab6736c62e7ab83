"""pyinfra inventory: the hosts of the network file ($BACKHAUL_NETWORK, default ./network.yml).

    pyinfra inventory.py deploys/site.py          # everything
    pyinfra inventory.py deploys/nginx.py         # a partial run
Groups: ``proxy`` (the hub) and ``backends``. Host data comes from the validated model only.
A run holds the network file's lock, like `inv deploy` (which hands its own lock to the
pyinfra it runs): a second run at the same time refuses before touching any host.
"""

import sys

from backhaul import globalargs, lock
from backhaul.errors import BackhaulError
from backhaul.inventory import groups
from backhaul.network import current_path

# pyinfra works out its global arguments once per process, not per operation (see the module)
globalargs.remember()
try:
    lock.hold_for_process(current_path())
    proxy, backends = groups()
except BackhaulError as e:  # a message and inv's exit code, not a traceback
    print(f"backhaul: {e}", file=sys.stderr)
    raise SystemExit(e.exit_code) from None
