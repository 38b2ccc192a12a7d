"""The K3sCluster controller's logic: pure planning functions plus the reconcile steps that use ports."""
