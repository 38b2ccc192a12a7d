"""Reconcile logic as small idempotent steps, written against the ports only."""
