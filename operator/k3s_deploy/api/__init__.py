"""pydantic models of the K3sCluster and ProxmoxVM resources: the single source of truth for the CRDs."""
