"""Custom pyinfra operations: yield only what the facts show is missing, else ``host.noop``.

- ``wireguard``: ``keypair``, ``config``, ``preshared_keys``, ``preshared_key_copy``,
  ``preshared_keys_pruned`` (the conf's reading rules and awk: backhaul/wgconf.py; the key
  commands, also for the staged rotation of backhaul/rotation.py: backhaul/wgcommands.py)
- ``ufw``: ``firewall`` (a host's whole rule set, ``plan.Rule``s, from one fact)
- ``packages``: ``installed`` (never Recommends)
- ``nginx``: ``config`` (staged, ``nginx -t``, restored on refusal)
- ``certbot``: ``acme_client``, ``certificate``, ``self_signed``, ``prune``
- ``docker_bind``: ``daemon``, ``compose``
- ``units``: ``tunnel_bound``
- ``isolation``: ``guard``; ``kernel``: ``settings``

Every file they write goes through ``hostfile`` (``write``/``upload``, ``sha256``).
"""
