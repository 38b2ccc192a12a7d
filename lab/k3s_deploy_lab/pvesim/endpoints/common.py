"""Checks several handlers share: root-only options, locks, running state."""

from __future__ import annotations

from k3s_deploy_lab.pvesim.apierror import ApiError
from k3s_deploy_lab.pvesim.model import VM
from k3s_deploy_lab.pvesim.routing import Call


def skiplock(call: Call) -> bool:
    """`skiplock` is for root@pam only, as in PVE."""
    if not call.flag("skiplock"):
        return False
    if call.ident.user != "root@pam" or call.ident.tokenid:
        raise ApiError(403, "Permission check failed (Only root may use this option.)")
    return True


def check_lock(vm: VM, skip: bool = False) -> None:
    if vm.lock and not skip:
        raise ApiError(500, f"VM is locked ({vm.lock})")


def require_running(vm: VM) -> None:
    if vm.status != "running":
        raise ApiError(500, f"VM {vm.vmid} not running")
