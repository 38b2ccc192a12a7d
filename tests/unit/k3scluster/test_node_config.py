"""Rendering a node's K3s settings files: arguments as config keys, labels and taints, registries
with their Secret values, modes, and a digest that changes exactly when a restart is needed."""

from __future__ import annotations

import base64
import re

import pytest
import yaml

from k3s_deploy import errors
from k3s_deploy.services.k3scluster import node_config as nc
from k3s_deploy.services.k3scluster.install import InstallStep, K3sSettings, render_script

KEY = b"k" * 32


def test_args_map_to_config_keys_by_k3s_rules() -> None:
    keys = nc.config_keys(
        [
            "--disable=traefik",
            "--disable",
            "servicelb",
            "--kubelet-arg=max-pods=50",
            "--write-kubeconfig-mode",
            "0644",
            "--debug",
            "--flannel-backend=host-gw",
            "--flannel-backend=wireguard-native",
        ]
    )
    assert keys == {
        "disable": ["traefik", "servicelb"],  # repeatable: a list, in order
        "kubelet-arg": ["max-pods=50"],
        "write-kubeconfig-mode": "0644",
        "debug": True,  # a lone flag
        "flannel-backend": "wireguard-native",  # single-valued: the last one wins, as on the command line
    }


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["traefik"], "is not a K3s flag"),
        (["--token=stolen"], "--token is set by the operator"),
        (["--server", "https://elsewhere:6443"], "--server is set by the operator"),
        (["-t", "x"], "--token is set by the operator"),
        (["--node-name=x"], "--node-name is set by the operator"),
    ],
)
def test_args_the_operator_owns_or_that_are_not_flags_are_refused(args: list[str], says: str) -> None:
    with pytest.raises(errors.InvalidSpec, match=re.escape(says)) as caught:
        nc.config_keys(args, what="agentArgs")
    assert "spec.k3s.agentArgs" in caught.value.message and caught.value.reason == "InvalidArgs"


def test_server_file_carries_sans_first_and_agent_file_has_no_sans() -> None:
    server = nc.render(
        nc.NodeSettings("server", ("--tls-san=extra.example",), ("vip.example", "extra.example"))
    )
    assert yaml.safe_load(server[nc.CONFIG_FILE].content) == {"tls-san": ["vip.example", "extra.example"]}
    agent = nc.render(nc.NodeSettings("agent", ("--kubelet-arg=max-pods=50",), ("vip.example",)))
    assert yaml.safe_load(agent[nc.CONFIG_FILE].content) == {"kubelet-arg": ["max-pods=50"]}
    assert all(f.mode == 0o600 for f in (*server.values(), *agent.values()))
    assert server[nc.CONFIG_FILE].content.startswith(nc.MARKER)


def test_labels_and_taints_append_and_do_not_change_the_digest() -> None:
    plain = nc.render(nc.NodeSettings("agent", ("--node-label=from=args",)))
    labelled = nc.render(
        nc.NodeSettings(
            "agent", ("--node-label=from=args",), labels={"b": "2", "a": "1"}, taints=("x=y:NoSchedule",)
        )
    )
    node = yaml.safe_load(labelled[nc.NODE_FILE].content)
    assert node == {"node-label+": ["a=1", "b=2"], "node-taint+": ["x=y:NoSchedule"]}
    # K3s applies labels and taints only at registration: no restart for them
    assert not labelled[nc.NODE_FILE].restart
    assert nc.digest(plain, KEY) == nc.digest(labelled, KEY)


def _registries(password: str = "s3cret") -> nc.RegistriesMaterial:  # noqa: S107 - a test value
    return nc.RegistriesMaterial(
        mirrors=(
            nc.Mirror(
                "docker.io", ("https://mirror.example:5000",), (("^rancher/(.*)", "mirror/rancher/$1"),)
            ),
        ),
        configs=(
            nc.RegistryHost("mirror.example:5000", username="puller", password=password, ca="CA-PEM\n"),
            nc.RegistryHost("ghcr.io", token="tok"),
            nc.RegistryHost("lab.example", insecure_skip_verify=True),
        ),
    )


def test_registries_yaml_is_k3s_format_with_secret_values_and_tls_files() -> None:
    files = nc.render(nc.NodeSettings("agent", registries=_registries()))
    doc = yaml.safe_load(files[nc.REGISTRIES_FILE].content)
    ca_path = f"{nc.REGISTRY_CERTS}/mirror.example_5000/ca.crt"
    assert doc == {
        "mirrors": {
            "docker.io": {
                "endpoint": ["https://mirror.example:5000"],
                "rewrite": {"^rancher/(.*)": "mirror/rancher/$1"},
            }
        },
        "configs": {
            "mirror.example:5000": {
                "auth": {"username": "puller", "password": "s3cret"},
                "tls": {"ca_file": ca_path},
            },
            "ghcr.io": {"auth": {"token": "tok"}},
            "lab.example": {"tls": {"insecure_skip_verify": True}},
        },
    }
    assert files[ca_path].content == "CA-PEM\n"
    assert {files[nc.REGISTRIES_FILE].mode, files[ca_path].mode} == {0o600}
    # secret-bearing values never show in a repr (a log line of the object)
    assert "s3cret" not in repr(files) and "s3cret" not in repr(_registries())


def test_digest_is_stable_keyed_and_moves_with_each_input() -> None:
    base = nc.NodeSettings("server", ("--disable=traefik",), ("vip.example",), registries=_registries())
    first = nc.digest(nc.render(base), KEY)
    assert first == nc.digest(nc.render(nc.NodeSettings(**vars(base))), KEY)
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    changed = [
        nc.NodeSettings("server", ("--disable=servicelb",), ("vip.example",), registries=_registries()),
        nc.NodeSettings("server", ("--disable=traefik",), ("vip2.example",), registries=_registries()),
        nc.NodeSettings("server", ("--disable=traefik",), ("vip.example",), registries=_registries("other")),
        nc.NodeSettings("server", ("--disable=traefik",), ("vip.example",)),
    ]
    assert len({first, *(nc.digest(nc.render(c), KEY) for c in changed)}) == 5
    assert nc.digest(nc.render(base), b"another cluster") != first


def test_install_script_writes_the_files_before_the_installer_and_keeps_args_off_its_command_line() -> None:
    files = nc.render(nc.NodeSettings("agent", ("--kubelet-arg=max-pods=50",), registries=_registries()))
    node = nc.NodeFiles(files, nc.digest(files, KEY))
    settings = K3sSettings(
        version="v1.31.4+k3s1", agent_args=("--kubelet-arg=max-pods=50",), node_files={"a0": node}
    )
    step = InstallStep("a0", "agent", "agent", "https://10.0.0.10:6443")
    script = render_script(step, settings, token="tok", node_ip="10.0.0.20", sans=[])
    installer = next(line for line in script.splitlines() if line.startswith('sh "$installer"'))
    assert "max-pods" not in installer
    assert script.index(nc.REGISTRIES_FILE) < script.index('sh "$installer"')
    assert "s3cret" not in script  # the contents travel base64-encoded on stdin
    written = {
        path: base64.b64decode(b64).decode()
        for b64, path in re.findall(
            r"printf '%s' '([^']*)' \| base64 -d > \"\$t\"\nchmod 0600 \"\$t\"; mv -f \"\$t\" (\S+)", script
        )
    }
    assert written == {p: f.content for p, f in files.items()}
    assert f"printf '%s\\n' {node.digest} > {nc.DIGEST_FILE}" in script
