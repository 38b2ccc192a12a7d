"""Add-ons (spec.addons): files in the servers' auto-deploy directory, written, kept and removed
through SSH, recorded in status from what the servers hold; bad input stalls with a reason."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from k3s_deploy import errors
from k3s_deploy.api.addons import Addon
from k3s_deploy.ports.ssh import CommandResult, SshTarget
from k3s_deploy.services.k3scluster import addons

from .fakes import AnsweringSsh, FakeSsh
from .test_reconcile import NS, World, cluster_body, cond

MANIFESTS = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hello\n  namespace: default\ndata:\n  a: b\n"
METALLB: dict[str, Any] = {
    "name": "metallb",
    "helmChart": {
        "repo": "https://metallb.github.io/metallb",
        "chart": "metallb",
        "version": "0.14.8",
        "targetNamespace": "metallb-system",
        "valuesFrom": {"configMapRef": {"name": "metallb-values"}},
    },
}


class ManifestDirSsh(AnsweringSsh):
    """Servers keep uploaded files and answer the add-on listing and removal."""

    def __init__(self, listing_extra: str = "") -> None:
        super().__init__()
        self.listing_extra = listing_extra
        self.removed: list[tuple[str, str]] = []

    def answer(self, target: SshTarget, command: str) -> CommandResult | None:
        if command != addons.LIST and not command.startswith("rm -f -- "):
            return None
        host = self._check(target)
        if command == addons.LIST:
            lines = [
                f"{hashlib.sha256(data).hexdigest()}  {path.rsplit('/', 1)[1]}"
                for path, (data, _mode) in sorted(host.uploads.items())
                if path.startswith(addons.DIR + "/" + addons.PREFIX)
            ]
            return host.result(0, "\n".join(lines) + "\n" + self.listing_extra)
        path = command.removeprefix("rm -f -- ")
        host.uploads.pop(path, None)
        self.removed.append((target.host, path))
        return host.result(0)


async def ready(body: dict[str, Any], ssh: FakeSsh | None = None) -> World:
    w = World()
    if ssh is not None:
        w.ssh = w.deps.ssh = w.target.ssh = w.agents.ssh = ssh
    w.objects.config_maps[(NS, "hello")] = {"manifests.yaml": MANIFESTS}
    w.objects.config_maps[(NS, "metallb-values")] = {"values.yaml": "speaker:\n  frr:\n    enabled: false\n"}
    await w.pass_(body)
    w.boot()
    return w


def files(w: World) -> dict[str, dict[str, tuple[bytes, int]]]:
    return {ip: dict(h.uploads) for ip, h in w.ssh.hosts.items() if h.kubeconfig}


async def test_addons_are_written_to_every_server_and_removed_with_their_file() -> None:
    spec = [{"name": "hello", "manifests": {"configMapRef": {"name": "hello"}}}, METALLB]
    body = cluster_body(3, 1, addons=spec)
    ssh = ManifestDirSsh()
    w = await ready(body, ssh)
    out = await w.pass_(body)
    assert cond(out, "Ready")["status"] == "True", out.status["conditions"]
    hello = f"{addons.DIR}/k3s-deploy-addon-hello.yaml"
    chart = f"{addons.DIR}/k3s-deploy-addon-metallb.yaml"
    servers = files(w)
    assert len(servers) == 3
    for uploads in servers.values():
        assert set(uploads) == {hello, chart}
        assert all(mode == 0o600 for _, mode in uploads.values())
        assert uploads[hello][0].decode().endswith(MANIFESTS)
        helm = yaml.safe_load(uploads[chart][0])
        assert helm["apiVersion"] == "helm.cattle.io/v1" and helm["kind"] == "HelmChart"
        assert helm["metadata"] == {"name": "metallb", "namespace": "kube-system"}
        assert helm["spec"]["repo"] == "https://metallb.github.io/metallb"
        assert helm["spec"]["version"] == "0.14.8" and helm["spec"]["targetNamespace"] == "metallb-system"
        assert yaml.safe_load(helm["spec"]["valuesContent"]) == {"speaker": {"frr": {"enabled": False}}}
    digests = {a["name"]: a["digest"] for a in out.status["addons"]}
    any_server = next(iter(servers.values()))
    assert digests == {
        "hello": "sha256:" + hashlib.sha256(any_server[hello][0]).hexdigest(),
        "metallb": "sha256:" + hashlib.sha256(any_server[chart][0]).hexdigest(),
    }
    assert sorted(e.reason for e in out.events if e.reason.startswith("Addon")) == ["AddonApplied"] * 2
    assert cond(out, addons.CONDITION)["status"] == "True"

    # a quiet pass writes nothing
    before = len([x for x in ssh.log if x[1].startswith("upload")])
    out = await w.pass_(body)
    assert len([x for x in ssh.log if x[1].startswith("upload")]) == before
    assert not [e for e in out.events if e.reason.startswith("Addon")]

    # a file changed on a guest (by hand) is written back
    ip = next(iter(servers))
    w.ssh.hosts[ip].uploads[hello] = (b"tampered", 0o644)
    await w.pass_(body)
    assert w.ssh.hosts[ip].uploads[hello][0].decode().endswith(MANIFESTS)

    # removed from the spec: its file goes from every server, the status follows
    body["spec"]["addons"] = [METALLB]
    out = await w.pass_(body)
    assert sorted(p for _, p in ssh.removed) == [hello] * 3
    assert all(set(u) == {chart} for u in files(w).values())
    assert [a["name"] for a in out.status["addons"]] == ["metallb"]
    assert [e.reason for e in out.events if e.reason.startswith("Addon")] == ["AddonRemoved"]


@pytest.mark.parametrize(
    ("change", "reason", "words"),
    [
        (lambda w: w.objects.config_maps.pop((NS, "hello")), "AddonConfigMapNotFound", "ConfigMap 'hello'"),
        (
            lambda w: w.objects.config_maps.__setitem__((NS, "hello"), {"a": "x: 1", "b": "y: 2"}),
            "AddonConfigMapKeyMissing",
            "name one with key",
        ),
        (
            lambda w: w.objects.config_maps.__setitem__((NS, "hello"), {"m": "a: [unclosed"}),
            "AddonInvalid",
            "not valid YAML",
        ),
        (
            lambda w: w.objects.config_maps.__setitem__((NS, "hello"), {"m": "- just\n- a list\n"}),
            "AddonInvalid",
            "must be a mapping",
        ),
    ],
)
async def test_a_missing_or_broken_configmap_stalls_with_a_reason(
    change: Any, reason: str, words: str
) -> None:
    body = cluster_body(1, 0, addons=[{"name": "hello", "manifests": {"configMapRef": {"name": "hello"}}}])
    w = await ready(body, ManifestDirSsh())
    change(w)
    out = await w.pass_(body)
    stalled = cond(out, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == reason, stalled
    assert words in stalled["message"] and "hello" in stalled["message"]
    assert [e.reason for e in out.events if e.type == "Warning"] == [reason]
    assert not any(files(w).values()), "nothing was written"


async def test_names_read_back_from_a_guest_cannot_point_outside_the_directory() -> None:
    hostile = "\n".join(
        [
            f"{'a' * 64}  k3s-deploy-addon-../../../etc/passwd.yaml",
            f"{'b' * 64}  /etc/shadow",
            f"{'c' * 64}  k3s-deploy-addon-x/../../y.yaml",
            f"{'d' * 64}  k3s-deploy-addon--bad-.yaml",
        ]
    )
    assert addons.parse_listing(hostile) == {}
    body = cluster_body(1, 0, addons=[{"name": "hello", "manifests": {"configMapRef": {"name": "hello"}}}])
    ssh = ManifestDirSsh(listing_extra=hostile)
    w = await ready(body, ssh)
    await w.pass_(body)
    body["spec"]["addons"] = []
    await w.pass_(body)
    assert [p for _, p in ssh.removed] == [f"{addons.DIR}/k3s-deploy-addon-hello.yaml"]
    for name in ("../evil", "a/b", "x.yaml", "", "A"):
        with pytest.raises(errors.InvalidSpec):
            addons.path_of(name)


@pytest.mark.parametrize(
    "addon",
    [
        {"name": "../evil", "manifests": {"configMapRef": {"name": "x"}}},
        {"name": "a/b", "manifests": {"configMapRef": {"name": "x"}}},
        {"name": "ok", "manifests": {"configMapRef": {"name": "x"}}, "helmChart": METALLB["helmChart"]},
        {"name": "ok"},
        {"name": "ok", "helmChart": {**METALLB["helmChart"], "repo": "file:///etc"}},
    ],
)
def test_the_model_refuses_path_tricks_and_ambiguous_addons(addon: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Addon.model_validate(addon)


async def test_no_addons_means_no_ssh_round_trip() -> None:
    body = cluster_body(1, 0)
    ssh = ManifestDirSsh()
    w = await ready(body, ssh)
    await w.pass_(body)
    n = len(ssh.log)
    out = await w.pass_(body)
    assert "addons" not in out.status or out.status["addons"] == []
    assert all(what == "probe" for _, what in ssh.log[n:])
