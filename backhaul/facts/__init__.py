"""Custom pyinfra facts: one command per fact, ``process()`` pure, ``None``/default = absent.

- ``wireguard``: ``WireguardState``, ``WireguardPeers``, ``WireguardConfigPeers``
- ``ufw``: ``UfwState``
- ``system``: ``ListeningSockets``
"""
