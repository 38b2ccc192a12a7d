"""The only modules that import proxmoxer, asyncssh or the kubernetes client."""
