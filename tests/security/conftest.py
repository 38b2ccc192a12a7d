"""Attack tests (docs/security.md): each reproduces an attack against the real apiserver and the lab.

The lab fixtures are the end-to-end ones (tests/e2e/conftest.py), shared here so an attack runs in the
same world a user's cluster does.
"""

from e2e.conftest import Lab, lab, lab_guests

__all__ = ["Lab", "lab", "lab_guests"]
