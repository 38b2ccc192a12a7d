"""kopf handlers: parse the body into a model, call a service, write status. Nothing else.

Importing this package registers the handlers of both kinds in kopf's default registry.
"""

from k3s_deploy.handlers import k3scluster, proxmoxvm

__all__ = ["k3scluster", "proxmoxvm"]
