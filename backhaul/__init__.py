"""backhaul: a private WireGuard backbone for a fleet of Linux VPS, with nginx+TLS in front."""

__version__ = "0.1.0"
