"""A real local Kubernetes control plane (etcd + kube-apiserver + kubectl) built from Go modules."""

from k3s_deploy_lab.controlplane.plane import ControlPlane, ControlPlaneError

__all__ = ["ControlPlane", "ControlPlaneError"]
