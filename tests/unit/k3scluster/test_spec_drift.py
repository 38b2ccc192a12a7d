"""spec_drift: what the cluster patches into a child ProxmoxVM's spec."""

from __future__ import annotations

from k3s_deploy.services.k3scluster.desired import spec_drift


def test_defaults_the_apiserver_filled_in_are_not_drift() -> None:
    want = {"guestAgent": {"addressCIDR": "10.0.0.0/24"}, "cloudInit": {"interface": 0, "user": "debian"}}
    have = {
        "guestAgent": {"addressCIDR": "10.0.0.0/24", "timeoutSeconds": 300},
        "cloudInit": {"interface": 0, "user": "debian", "ipConfig": {"dhcp": True}},
        "deletionPolicy": "Retain",
    }
    assert spec_drift(want, have) == {}


def test_a_changed_or_missing_nested_value_patches_its_top_level_field() -> None:
    want = {"guestAgent": {"addressCIDR": "10.0.1.0/24"}, "tags": ["a"], "powerState": "Running"}
    have = {"guestAgent": {"addressCIDR": "10.0.0.0/24", "timeoutSeconds": 300}, "tags": ["a", "b"]}
    assert spec_drift(want, have) == {
        "guestAgent": {"addressCIDR": "10.0.1.0/24"},
        "tags": ["a"],
        "powerState": "Running",
    }


def test_a_mapping_wanted_where_the_child_has_none_is_drift() -> None:
    assert spec_drift({"resources": {"cores": 2}}, {"resources": None}) == {"resources": {"cores": 2}}
