"""typing.Protocol seams to the outside world (Proxmox, SSH, Kubernetes, target clusters)."""
