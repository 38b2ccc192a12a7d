"""Add-ons of a K3sCluster: manifests or K3s HelmCharts written to the servers' auto-deploy directory.

K3s applies every file in ``/var/lib/rancher/k3s/server/manifests/`` and removes the objects of a
file that goes, so an add-on is one file there, named after the add-on (a DNS label: it can name no
other path). Its content comes from a ConfigMap in the cluster's namespace, or is a ``HelmChart``
(``helm.cattle.io/v1``) built from the fields below and installed by K3s's helm controller.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from k3s_deploy.api.common import ApiModel, K8sName, Rule, SecretKey, StatusModel
from k3s_deploy.api.formats import HttpUrl, Pattern

AddonName = Annotated[
    str,
    Pattern(
        r"[a-z0-9]([-a-z0-9]*[a-z0-9])?",
        40,
        "must be a DNS label (lower-case letters, digits and '-', at most 40 characters): it names the "
        "file k3s-deploy-addon-<name>.yaml in the servers' manifests directory",
    ),
]
ChartName = Annotated[
    str,
    Pattern(
        r"[a-zA-Z0-9][-a-zA-Z0-9_./]*",
        253,
        "is not a chart name (letters, digits, '-', '_', '.' and '/', like metallb or oci://... via repo)",
    ),
]
ChartVersion = Annotated[
    str,
    Pattern(r"[a-zA-Z0-9][-+a-zA-Z0-9_.]*", 64, "is not a chart version (like 0.14.8)"),
]
Namespace = Annotated[
    str,
    Pattern(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", 63, "is not a namespace name (a DNS label)"),
]


class ConfigMapKeyRef(ApiModel):
    """One key of a ConfigMap in the K3sCluster's namespace (the only key when ``key`` is left out)."""

    name: K8sName = Field(description="Name of the ConfigMap (same namespace as the K3sCluster).")
    key: SecretKey | None = Field(
        default=None, description="Key in the ConfigMap's data; may be left out when it has exactly one."
    )


class ManifestsAddon(ApiModel):
    """Kubernetes manifests (multi-document YAML) applied by K3s as they are."""

    config_map_ref: ConfigMapKeyRef = Field(description="ConfigMap key holding the YAML manifests.")


class ValuesFrom(ApiModel):
    """Where a chart's values come from."""

    config_map_ref: ConfigMapKeyRef = Field(description="ConfigMap key holding the values as YAML.")


class HelmChartAddon(ApiModel):
    """A chart installed by K3s's helm controller (a ``helm.cattle.io/v1`` HelmChart object)."""

    repo: HttpUrl = Field(description="Chart repository URL, such as https://metallb.github.io/metallb.")
    chart: ChartName = Field(description="Chart name in the repository.")
    version: ChartVersion | None = Field(default=None, description="Chart version; the newest when left out.")
    target_namespace: Namespace = Field(
        default="kube-system", description="Namespace the chart's release is installed into."
    )
    create_namespace: bool = Field(default=True, description="Create targetNamespace when it is missing.")
    values_from: ValuesFrom | None = Field(default=None, description="Chart values (valuesContent).")


class Addon(ApiModel):
    """One add-on: exactly one of manifests or helmChart."""

    name: AddonName = Field(description="Add-on name; the file is k3s-deploy-addon-<name>.yaml.")
    manifests: ManifestsAddon | None = Field(default=None, description="Manifests from a ConfigMap.")
    helm_chart: HelmChartAddon | None = Field(default=None, description="A K3s HelmChart.")

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "has(self.manifests) != has(self.helmChart)",
            "set exactly one of manifests or helmChart in each add-on",
            lambda m: (m.manifests is None) != (m.helm_chart is None),
        ),
    )


class AddonStatus(StatusModel):
    """An add-on file as the servers hold it."""

    name: str = Field(description="Add-on name.")
    digest: str = Field(
        description="sha256:<hex> of k3s-deploy-addon-<name>.yaml as read back from the servers."
    )
