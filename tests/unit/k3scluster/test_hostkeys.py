"""Host keys read out of band through the guest agent and pinned in the Secret <cluster>-host-keys."""

from __future__ import annotations

import base64

import pytest

from k3s_deploy.services.k3scluster import hostkeys

from .fakes import fingerprint_of, key_line
from .test_reconcile import NS, World, cluster_body, cond


async def _ready(w: World, body: dict[str, object], passes: int = 8) -> None:
    await w.pass_(body)
    w.boot()
    for _ in range(passes):
        out = await w.pass_(body)
        if cond(out, "Ready")["status"] == "True":
            return
    raise AssertionError(f"not Ready: {body.get('status')}")


def _pins(w: World) -> dict[str, bytes]:
    return dict(w.objects.secrets[(NS, "demo-host-keys")]["data"])


async def test_keys_are_read_through_the_agent_and_pinned_in_an_owned_secret() -> None:
    w, body = World(), cluster_body(1, 1)
    await _ready(w, body)
    secret = w.objects.secrets[(NS, "demo-host-keys")]
    assert secret["labels"]["app.kubernetes.io/managed-by"] == "k3s-deploy"
    assert secret["owner"]["uid"] == body["metadata"]["uid"]  # type: ignore[index]
    nodes = {n["name"]: n for n in body["status"]["nodes"]}  # type: ignore[index]
    assert set(_pins(w)) == {f"{name}.{n['vmid']}" for name, n in nodes.items()}
    for name, node in nodes.items():
        line = _pins(w)[f"{name}.{node['vmid']}"].decode()
        assert line == key_line(f"SHA256:key-of-{node['ip']}")
        assert node["hostKeyFingerprint"] == fingerprint_of(f"SHA256:key-of-{node['ip']}")
    assert {path for _, path in w.agents.reads} == {"/etc/ssh/ssh_host_ed25519_key.pub"}
    assert "HostKeyTrustedOnFirstUse" not in {c["type"] for c in body["status"]["conditions"]}  # type: ignore[index]


async def test_a_guest_presenting_another_key_than_its_disk_is_refused_before_anything_runs() -> None:
    w, body = World(), cluster_body(1, 0)
    await w.pass_(body)
    w.boot()
    ip = next(iter(w.ssh.hosts))
    real = w.ssh.hosts[ip].host_key
    impostor = w.ssh.hosts[ip]
    out = None

    async def read_real(node: str, vmid: int, path: str, *, max_bytes: int) -> bytes:
        return (key_line(real) + "\n").encode()

    impostor.host_key = "SHA256:the-man-in-the-middle"
    w.agents.read_guest_file = read_real  # type: ignore[method-assign]
    out = await w.pass_(body)
    stalled = cond(out, "Stalled")
    assert stalled["reason"] == "HostKeyMismatch" and "man in the middle" in stalled["message"]
    assert w.ssh.refused == [ip] and w.ssh.log == []  # no command ran there
    assert (NS, "demo-host-keys") not in w.objects.secrets  # nothing was pinned


async def test_wiping_status_re_pins_nothing_and_asks_no_agent() -> None:
    w, body = World(), cluster_body(1, 1)
    await _ready(w, body)
    before = _pins(w)
    reads = len(w.agents.reads)
    body.pop("status")
    out = await w.pass_(body)
    assert cond(out, "Ready")["status"] == "True"
    assert _pins(w) == before and len(w.agents.reads) == reads
    assert not [e for e in out.events if e.reason in ("HostKeyPinned", "HostKeyTrustedOnFirstUse")]
    # and a changed key is still refused with status gone: trust came from the Secret
    w.ssh.hosts[next(iter(w.ssh.hosts))].host_key = "SHA256:swapped"
    body.pop("status")
    assert cond(await w.pass_(body), "Stalled")["reason"] == "HostKeyChanged"


async def test_a_re_cloned_vm_is_read_through_the_agent_again() -> None:
    w, body = World(), cluster_body(1, 1)
    await _ready(w, body)
    child = w.objects.children[(NS, "demo-agent-0")]
    old_vmid = child["status"]["vmid"]
    child["status"]["vmid"] = old_vmid + 50
    ip = child["status"]["addresses"][0]
    w.ssh.hosts[ip].host_key = "SHA256:the-new-vm"
    w.ssh.hosts[ip].version = None
    await _ready(w, body)
    assert (old_vmid + 50, "/etc/ssh/ssh_host_ed25519_key.pub") in w.agents.reads
    assert _pins(w)[f"demo-agent-0.{old_vmid + 50}"].decode() == key_line("SHA256:the-new-vm")


async def test_an_unreadable_key_stalls_with_what_to_do() -> None:
    w, body = World(), cluster_body(1, 0)
    await w.pass_(body)
    w.boot()
    for host in w.ssh.hosts.values():
        host.host_key = "x"
    w.agents.read_guest_file = _missing  # type: ignore[method-assign]
    out = await w.pass_(body)
    stalled = cond(out, "Stalled")
    assert stalled["reason"] == "HostKeyUnavailable"
    assert "qemu-guest-agent" in stalled["message"] and "TrustOnFirstUse" in stalled["message"]
    assert w.ssh.log == []
    w.agents.read_guest_file = w.agents.__class__.read_guest_file.__get__(w.agents)  # type: ignore[method-assign]
    w.agents.denied = True
    denied = cond(await w.pass_(body), "Stalled")
    assert denied["reason"] == "ProxmoxPermissionDenied"
    assert "VM.GuestAgent.FileRead" in denied["message"] and "VM.Monitor on PVE 8" in denied["message"]


async def _missing(node: str, vmid: int, path: str, *, max_bytes: int) -> bytes:
    from k3s_deploy import errors

    raise errors.GuestFileUnreadable(
        f"Agent error: failed to open file '{path}' (mode: 'r'): No such file or directory"
    )


async def test_trust_on_first_use_is_a_choice_that_shows() -> None:
    w, body = World(), cluster_body(1, 1, ssh={
        "privateKeySecretRef": {"name": "ssh", "key": "ssh-privatekey"}, "hostKeyPolicy": "TrustOnFirstUse",
    })  # fmt: skip
    await _ready(w, body)
    assert w.agents.reads == []
    tofu = next(c for c in body["status"]["conditions"] if c["type"] == "HostKeyTrustedOnFirstUse")  # type: ignore[index]
    assert tofu["status"] == "True" and tofu["reason"] == "TrustOnFirstUse"
    assert (
        cond_status(body, "Ready") == "True"
        and "Stalled" not in types(body)
        and "Reconciling" not in types(body)
    )
    assert len(_pins(w)) == 2
    body["spec"]["ssh"]["hostKeyPolicy"] = "GuestAgent"  # type: ignore[index]
    await w.pass_(body)
    assert "HostKeyTrustedOnFirstUse" not in types(body)
    assert w.agents.reads == []  # the pins made on first use stay; nothing is re-read


def types(body: dict[str, object]) -> set[str]:
    return {c["type"] for c in body["status"]["conditions"]}  # type: ignore[index]


def cond_status(body: dict[str, object], type_: str) -> str:
    return str(next(c for c in body["status"]["conditions"] if c["type"] == type_)["status"])  # type: ignore[index]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ssh-ed25519",
        "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
        "ssh-ed25519 not-base64!",
        "ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x07ssh-rsa" + b"\x00" * 40).decode(),
        key_line("a") + "\n" + key_line("b"),
        "ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519" + b"\x00" * 5000).decode(),
    ],
)
def test_hostile_key_files_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        hostkeys.parse_public_key(text)


def test_a_key_line_parses_with_its_comment() -> None:
    key = hostkeys.parse_public_key(key_line("a") + " root@host\n")
    assert key.line == key_line("a") and key.fingerprint == fingerprint_of("a")


async def test_a_removed_member_leaves_no_pin_behind() -> None:
    """A stale pin would refuse the next VM given the same name and vmid as HostKeyChanged."""
    from . import day2_world

    w, b = day2_world.World(), day2_world.body(1, 2)
    await w.pass_(b)
    assert cond(await w.settle(b), "Ready")["status"] == "True"
    pins = w.objects.secrets[(NS, "demo-host-keys")]["data"]
    assert any(k.startswith("demo-agent-1.") for k in pins)
    b["spec"]["agents"]["replicas"] = 1
    day2_world.bump(b)
    assert cond(await w.settle(b), "Ready")["status"] == "True"
    assert w.objects.deleted_children == ["demo-agent-1"]
    await w.pass_(b)  # the pass after the removal no longer counts it as leaving
    pins = w.objects.secrets[(NS, "demo-host-keys")]["data"]
    assert {k.rsplit(".", 1)[0] for k in pins} == {"demo-server-0", "demo-agent-0"}


async def test_a_re_cloned_vm_drops_the_old_vms_pin() -> None:
    w, body = World(), cluster_body(1, 1)
    await _ready(w, body)
    child = w.objects.children[(NS, "demo-agent-0")]
    old_vmid = child["status"]["vmid"]
    child["status"]["vmid"] = old_vmid + 50
    w.ssh.hosts[child["status"]["addresses"][0]].host_key = "SHA256:the-new-vm"
    await _ready(w, body)
    assert f"demo-agent-0.{old_vmid}" not in _pins(w) and f"demo-agent-0.{old_vmid + 50}" in _pins(w)


def test_nothing_is_forgotten_while_a_members_vmid_is_unknown() -> None:
    keys = hostkeys.HostKeys(objects=None, ref=None, ssh=None)  # type: ignore[arg-type]
    keys.stored = {"a.101": "k1", "b.102": "k2", "gone.103": "k3", "leaving.104": "k4"}
    keys.forget_others({"a": 101, "b": None})
    assert set(keys.stored) == {"a.101", "b.102", "gone.103", "leaving.104"}
    keys.forget_others({})
    assert len(keys.stored) == 4
    keys.forget_others({"a": 101, "b": 102}, keep={"leaving"})
    assert set(keys.stored) == {"a.101", "b.102", "leaving.104"}
