"""Values a guest reports are checked before they reach status (docs/security.md, item 6)."""

from __future__ import annotations

import pytest

from k3s_deploy import errors
from k3s_deploy.ports.ssh import guest_text
from k3s_deploy.ports.target import TargetNode
from k3s_deploy.services.k3scluster import guest_values

FP = "SHA256:wVMRijIxMPgQuWtnesUUgIofg/0cXaidQWADBCNbuWk"


@pytest.mark.parametrize("value", ["v1.31.4+k3s1", "v1.32.0-rc1+k3s2", "v1.2.3"])
def test_real_versions_pass(value: str) -> None:
    assert guest_values.version(value, node="n", source="x") == value


@pytest.mark.parametrize("value", [None, ""])
def test_no_version_stays_none(value: str | None) -> None:
    assert guest_values.version(value, node="n", source="x") is None


@pytest.mark.parametrize(
    "value",
    [
        "v1.31.4+k3s1" + "a" * 60,  # 72 characters: longer than status allows
        "v1.31.4+k3s1" + "a" * (2 << 20),  # 2 MiB
        "v1.31.4+k3s1\n",  # a trailing newline ($ in a regex would let it through)
        "v1.31.4+k3s1\nmore",
        "v1.31.4+k3s1\x1b[2J",
        "1.31.4",
        "latest",
    ],
)
def test_bad_versions_are_refused_with_a_short_message(value: str) -> None:
    with pytest.raises(errors.GuestInputRejected) as caught:
        guest_values.version(value, node="lab-server-0", source="`k3s --version`")
    exc = caught.value
    assert exc.reason == "GuestValueInvalid" and not exc.transient
    assert "lab-server-0" in exc.message and "`k3s --version`" in exc.message
    assert f"({len(value)} characters)" in exc.message
    assert len(exc.message) < 400 and "\n" not in exc.message and "\x1b" not in exc.message


def test_fingerprints() -> None:
    assert guest_values.fingerprint(FP, node="n") == FP
    assert guest_values.fingerprint("", node="n") == ""
    for bad in ("SHA256:" + "A" * 200, "MD5:aa:bb", f"{FP}\n", "SHA256:a b"):
        with pytest.raises(errors.GuestInputRejected, match="host-key fingerprint"):
            guest_values.fingerprint(bad, node="n")


def _node(
    name: str = "lab-server-0", version: str = "v1.31.4+k3s1", ip: str | None = "10.0.0.1"
) -> TargetNode:
    return TargetNode(name=name, ready=True, kubelet_version=version, internal_ip=ip)


def test_target_nodes_keep_good_values() -> None:
    assert guest_values.target_nodes([_node()]) == [_node()]


def test_target_nodes_with_names_that_cannot_be_ours_are_ignored() -> None:
    nodes = [_node("Bad_Name"), _node("x" * 254), _node("evil\nname"), _node("ok-1")]
    assert [n.name for n in guest_values.target_nodes(nodes)] == ["ok-1"]


def test_target_node_versions_are_checked_and_addresses_cleared() -> None:
    assert guest_values.target_nodes([_node(ip="not an ip")])[0].internal_ip is None
    assert guest_values.target_nodes([_node(version="")])[0].kubelet_version == ""
    with pytest.raises(errors.GuestInputRejected, match="the cluster's API"):
        guest_values.target_nodes([_node(version="v1.31.4+k3s1" + "x" * 100)])


def test_guest_text_drops_control_characters_and_keeps_the_end() -> None:
    assert guest_text("line one\nline two\r\n\x1b[31mred\x00") == "line one line two [31mred"
    assert guest_text("a\u202eb\u2028c") == "a b c"
    long = "x" * 1000 + "the end"
    out = guest_text(long, 100)
    assert len(out) == 100 and out.endswith("the end") and out.startswith("...")
