"""The lab's kube-vip stand-in reads the VIP from the same manifest the operator writes."""

from __future__ import annotations

from k3s_deploy.api.endpoint import KubeVip
from k3s_deploy.services.k3scluster.kubevip import manifest
from k3s_deploy_lab.guests.k3s.vip import kube_vip_address


def test_the_operators_manifest_names_the_vip() -> None:
    assert kube_vip_address(manifest(KubeVip(), "127.9.3.254")) == "127.9.3.254"


def test_a_services_only_kube_vip_or_other_files_name_no_vip() -> None:
    assert kube_vip_address("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n") is None
    assert kube_vip_address("{not yaml: [") is None
    services_only = manifest(KubeVip(), "127.9.3.254").replace(
        "- name: cp_enable\n          value: 'true'", "- name: cp_enable\n          value: 'false'"
    )
    assert services_only != manifest(KubeVip(), "127.9.3.254")
    assert kube_vip_address(services_only) is None
