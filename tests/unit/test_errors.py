"""The error tree splits cleanly into transient and permanent."""

from k3s_deploy import errors


def test_every_error_is_exactly_one_of_transient_or_permanent() -> None:
    classes = [
        c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.K3sDeployError)
    ]
    leaves = [
        c for c in classes if c not in (errors.K3sDeployError, errors.TransientError, errors.PermanentError)
    ]
    assert len(leaves) >= 10
    for cls in leaves:
        assert issubclass(cls, errors.TransientError) != issubclass(cls, errors.PermanentError), cls
        assert cls.transient == issubclass(cls, errors.TransientError), cls
        assert cls.reason[0].isupper() and " " not in cls.reason, cls


def test_reason_can_be_overridden_per_instance() -> None:
    err = errors.ProxmoxRejected("bad", reason="DiskShrinkRefused")
    assert err.reason == "DiskShrinkRefused"
    assert str(err) == "bad"
    assert errors.ProxmoxRejected("x").reason == "ProxmoxRejected"
