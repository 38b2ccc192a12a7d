from __future__ import annotations

import pytest

from k3s_deploy import errors
from k3s_deploy.services.k3scluster.ipam import PoolExhausted, allocate, expand_pool


def test_expand_pool_forms_and_dedup() -> None:
    pool = expand_pool(["10.0.0.5", "10.0.0.4-10.0.0.6", "10.0.1.0/30"])
    assert [str(a) for a in pool] == ["10.0.0.5", "10.0.0.4", "10.0.0.6", "10.0.1.1", "10.0.1.2"]


@pytest.mark.parametrize("bad", ["10.0.0.9-10.0.0.1", "nonsense", "10.0.0.0/8", "10.0.0.1-"])
def test_expand_pool_rejects_bad_entries(bad: str) -> None:
    with pytest.raises(errors.InvalidSpec) as info:
        expand_pool([bad])
    assert info.value.reason == "InvalidIPPool"


def test_allocation_is_stable_and_unique() -> None:
    pool = ["10.0.0.10-10.0.0.14"]
    first = allocate(pool, ["a", "b", "c"], {})
    assert first == {"a": "10.0.0.10", "b": "10.0.0.11", "c": "10.0.0.12"}
    # b leaves, d arrives: a and c keep theirs, d takes the lowest free (b's old one).
    second = allocate(pool, ["a", "c", "d"], first)
    assert second == {"a": "10.0.0.10", "c": "10.0.0.12", "d": "10.0.0.11"}
    assert len(set(second.values())) == 3


def test_duplicate_existing_assignment_is_resolved() -> None:
    result = allocate(["10.0.0.1-10.0.0.3"], ["a", "b"], {"a": "10.0.0.2", "b": "10.0.0.2"})
    assert result["a"] == "10.0.0.2"
    assert result["b"] != "10.0.0.2"


def test_out_of_pool_or_reserved_assignment_is_replaced() -> None:
    result = allocate(
        ["10.0.0.1-10.0.0.3"], ["a", "b"], {"a": "192.168.0.9", "b": "10.0.0.1/24"}, reserved=["10.0.0.1"]
    )
    assert result == {"a": "10.0.0.2", "b": "10.0.0.3"}


def test_exhausted_pool_stalls_with_a_reason() -> None:
    with pytest.raises(PoolExhausted) as info:
        allocate(["10.0.0.1-10.0.0.2"], ["a", "b", "c"], {})
    assert not info.value.transient
    assert info.value.reason == "IPPoolExhausted"
    assert "3 nodes" in str(info.value)
