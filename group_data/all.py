"""Data every host shares. Per-host data comes from the network model (backhaul/inventory.py);
the deploys read the whole model with ``backhaul.network.load_current()``."""

# Fail fast on SSH problems rather than waiting pyinfra's defaults out.
ssh_connect_timeout = 10
