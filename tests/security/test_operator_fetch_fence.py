"""T2, a tenant, aims the operator's downloads at a service on the operator's own loopback, end to end.

A K3sCluster with ``installSource.airGap.fetchFrom: Operator`` points its installer and binary at a
loopback listener (127.0.0.2, a stand-in for anything only the operator's pod can reach) that counts
TCP connections. Another cluster points its release channel server at a second listener. The operator
runs as a separate process against the real apiserver and the lab; the clusters must stall with a
reason naming the rule, and the listeners must never see a connection.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import Lab
from .test_download_fence import Counter

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

SUM = "ab" * 32


@pytest.fixture
def listeners() -> Iterator[tuple[Counter, Counter]]:
    downloads, channel = Counter("127.0.0.2"), Counter("127.0.0.3")
    yield downloads, channel
    downloads.close()
    channel.close()


def _stalled_reason(lab: Lab, name: str, reason: str, timeout: float = 180.0) -> dict[str, Any]:
    """Wait until Stalled is True with ``reason``; also the Event the operator posts with it."""
    deadline = time.monotonic() + timeout
    stalled = None
    while time.monotonic() < deadline:
        stalled = lab.condition(name, "Stalled")
        if stalled and stalled.get("status") == "True" and stalled.get("reason") == reason:
            assert lab.events(name, reason), f"no Event {reason} on {name}"
            return stalled
        time.sleep(0.5)
    raise AssertionError(f"{name}: never Stalled with {reason}; last {stalled}; {lab.get('k3sc', name)}")


def _restart(lab: Lab, allowed: str) -> None:
    lab.operator.env["K3SD_FETCH_ALLOWED_HOSTS"] = allowed
    lab.operator.restart()


def test_operator_downloads_never_reach_loopback(lab: Lab, listeners: tuple[Counter, Counter]) -> None:
    downloads, channel = listeners
    _restart(lab, "")  # the default of a fresh install: no allow-list
    airgap = lab.cluster("fenced", servers=1, agents=0)
    airgap["spec"]["k3s"]["installSource"] = {
        "airGap": {
            "installerURL": f"https://{downloads.base}/install.sh",
            "binaryURL": f"https://{downloads.base}/k3s",
            "fetchFrom": "Operator",
            "installerSHA256": SUM,
            "binarySHA256": SUM,
        }
    }
    lab.apply(airgap)
    stalled = _stalled_reason(lab, "fenced", "FetchFromOperatorDisabled")
    assert "K3SD_FETCH_ALLOWED_HOSTS" in stalled["message"]
    assert downloads.connections == 0

    # Enabled for any host name, but no address is listed: loopback stays out of reach.
    _restart(lab, "*")
    stalled = _stalled_reason(lab, "fenced", "LoopbackAddressRefused")
    assert "127.0.0.2" in stalled["message"] and "loopback" in stalled["message"]

    # The channel server is a tenant's URL too: same rule.
    channelled = lab.cluster("channelled", servers=1, agents=0)
    k3s = channelled["spec"]["k3s"]
    k3s.pop("version")
    k3s.update(
        {
            "channel": "stable",
            "autoUpgrade": True,
            "channelServer": f"http://{channel.base}/v1-release/channels",
        }
    )
    lab.apply(channelled)
    stalled = _stalled_reason(lab, "channelled", "LoopbackAddressRefused")
    assert "channel server" in stalled["message"]
    assert downloads.connections == 0 and channel.connections == 0
