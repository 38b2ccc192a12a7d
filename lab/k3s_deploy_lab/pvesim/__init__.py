"""A Proxmox VE API simulator: HTTPS on loopback, speaking `/api2/json` as PVE 8/9 does.

The operator is tested only against this server, so it copies the real API's envelope, errors,
authentication, tasks and timing rather than offering shortcuts. See docs/pvesim.md.
"""
