"""Custom pyinfra operations: yield only what the facts show is missing, else ``host.noop``.

- ``wireguard``: ``keypair``, ``config``, ``preshared_keys``, ``preshared_key_copy``,
  ``preshared_keys_pruned`` (+ the staged-rotation commands used by backhaul/rotation.py)
- ``ufw``: ``firewall`` (a host's whole rule set from one fact), ``rule``, ``remove_stale``,
  ``defaults``, ``enable``
- ``packages``: ``installed`` (never Recommends)
- ``nginx``: ``config`` (staged, ``nginx -t``, restored on refusal)
- ``certbot``: ``acme_client``, ``certificate``, ``self_signed``, ``prune``
- ``docker_bind``: ``daemon``, ``compose``
- ``units``: ``tunnel_bound``
"""
