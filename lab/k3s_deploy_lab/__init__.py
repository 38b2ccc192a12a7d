"""The local lab: a real control plane, a Proxmox VE simulator and simulated guests, all on loopback."""
