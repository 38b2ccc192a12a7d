"""k3s-deploy: a kopf operator that turns Proxmox VE virtual machines into K3s clusters."""

__version__ = "0.1.0"
