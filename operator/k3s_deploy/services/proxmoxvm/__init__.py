"""The ProxmoxVM controller's reconcile logic: small idempotent steps over the ProxmoxClient port."""
