"""Custom pyinfra facts: one command per fact, ``process()`` pure, ``None``/default = absent.

- ``wireguard``: ``WireguardState``, ``WireguardPeers``, ``WireguardConfigPeers``,
  ``WireguardPresharedKeys`` (hashes only: no key ever leaves a host)
- ``ufw``: ``UfwState``
- ``system``: ``ListeningSockets``, ``SshSession``, ``KernelModule``
- ``packages``: ``InstalledPackages``
- ``nginx``: ``NginxState``, ``CertificateState``, ``OwnedCertificates``, ``CertbotState``
- ``docker``: ``DockerDaemon``, ``ComposeProject``
- ``units``: ``TunnelUnits``
- ``health``: ``HostHealth`` (verify's one round trip, built from the facts above)
- ``other_hosts``: reading another host's fact from inside a deploy (gated, fails only the asker)
- ``bundle``: ``FactBundle``, several facts in one round trip, each through its own ``process()``
- ``snapshot``: a full deploy's facts per host read at once, answered until an operation changes
  that host (``snapshot.get`` is what operations call instead of ``host.get_fact``)
"""
