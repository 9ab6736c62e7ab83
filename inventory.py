"""pyinfra inventory: the hosts of the network file ($BACKHAUL_NETWORK, default ./network.yml).

    pyinfra inventory.py deploys/site.py          # everything
    pyinfra inventory.py deploys/nginx.py         # a partial run
Groups: ``proxy`` (the hub) and ``backends``. Host data comes from the validated model only.
"""

from backhaul.inventory import groups

proxy, backends = groups()
