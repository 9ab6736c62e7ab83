"""The lab: real Debian 12 hosts booted with systemd in systemd-nspawn containers on this machine.

Each host has its own network namespace on a bridge that plays the public internet, its own
overlay filesystem over one cached base image, and real systemd and SSH. See LAB.md (shared/)
for the facts this is built from. Entry points: ``backhaul.lab.lab.up/down/status``.
"""
