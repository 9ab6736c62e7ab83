"""Custom pyinfra operations: yield only what the facts show is missing.

- ``wireguard``: ``keypair``, ``config``
- ``ufw``: ``rule``, ``remove_stale``, ``defaults``, ``enable``
"""
