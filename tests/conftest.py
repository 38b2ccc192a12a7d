"""Shared pytest configuration. Fixtures live in tests/fixtures/, one module per real part."""

pytest_plugins = [
    "fixtures.kube",
    "fixtures.pve",
    "fixtures.guests",
    "fixtures.operator",
]
