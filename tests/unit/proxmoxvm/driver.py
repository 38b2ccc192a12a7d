"""Drives reconcile/finalize passes over a fake Proxmox the way the handlers do (status written back)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from k3s_deploy.api.proxmoxvm import ProxmoxVM
from k3s_deploy.errors import NotYet
from k3s_deploy.services.conditions import Conditions
from k3s_deploy.services.proxmoxvm.delete import finalize
from k3s_deploy.services.proxmoxvm.inventory import Sessions
from k3s_deploy.services.proxmoxvm.reconcile import Outcome, object_ref, open_session, reconcile
from k3s_deploy.services.proxmoxvm.work import Memory, Work

from .fake import FakeConnector, FakeKube, FakeProxmox

SECRET = {"url": b"https://pve.test:8006", "tokenId": b"op@pve!k3sd", "tokenSecret": b"s3cr3t"}


def body(
    spec: dict[str, Any], *, name: str = "vm-a", uid: str = "0a1b2c3d-1111-2222-3333-444455556666"
) -> dict[str, Any]:
    return {
        "apiVersion": "k3sdeploy.io/v1alpha1",
        "kind": "ProxmoxVM",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": uid,
            "generation": 1,
            "annotations": {},
            "labels": {},
        },
        "spec": {"credentialsRef": {"name": "pve"}, **spec},
        "status": {},
    }


class Driver:
    def __init__(
        self, obj: dict[str, Any], proxmox: FakeProxmox | None = None, *, max_age: float = 0.0
    ) -> None:
        self.obj = obj
        self.proxmox = proxmox or FakeProxmox()
        self.kube = FakeKube()
        self.kube.secrets[("ns", "pve")] = dict(SECRET)
        self.sessions = Sessions(FakeConnector(self.proxmox), max_age=max_age)
        self.memory = Memory()
        self.checkpoints: list[dict[str, Any]] = []
        self.outcomes: list[Outcome] = []
        self.wake: Callable[[], None] | None = None  # what the scheduler would pass (None: no wakes)

    async def _checkpoint(self, status: dict[str, Any]) -> None:
        self.checkpoints.append(copy.deepcopy(status))
        self.obj["status"] = copy.deepcopy(status)

    async def once(self) -> Outcome:
        model = ProxmoxVM.model_validate(self.obj)
        out = await reconcile(
            model,
            kube=self.kube,
            sessions=self.sessions,
            memory=self.memory,
            checkpoint=self._checkpoint,
            wake=self.wake,
        )
        self.obj["status"] = out.status
        self.obj["metadata"]["annotations"].update(out.annotations)
        self.outcomes.append(out)
        return out

    async def converge(self, passes: int = 20) -> Outcome:
        """Run passes, finishing tasks in between, until a pass asks for no early requeue."""
        out = await self.once()
        for _ in range(passes):
            if out.requeue_after is None:
                return out
            self.proxmox.finish_tasks()
            for vm in self.proxmox.vms.values():
                if vm.status == "running" and vm.uptime:
                    vm.uptime += 5
            out = await self.once()
        raise AssertionError(f"did not converge: {self.condition('Reconciling')}")

    async def delete(self, passes: int = 20) -> bool:
        for _ in range(passes):
            model = ProxmoxVM.model_validate(self.obj)
            session = await open_session(self.kube, self.sessions, model)
            conds = Conditions(self.obj["status"].get("conditions", []), generation=1)
            status = model.status.model_copy(deep=True)
            work = Work(object_ref(model), model.spec, status, conds, session, self.memory, self._noop)
            try:
                done = await finalize(work)
            except NotYet:
                done = False
            self.obj["status"] = work.status_dict()
            if done:
                return True
            self.proxmox.finish_tasks()
        return False

    def expire(self) -> None:
        for session in self.sessions.all():
            session.inventory.invalidate()

    async def _noop(self) -> None:
        return None

    def condition(self, type_: str) -> dict[str, Any] | None:
        return next((c for c in self.obj["status"].get("conditions", []) if c["type"] == type_), None)

    def bump(self, **spec: Any) -> None:
        self.obj["spec"].update(spec)
        self.obj["metadata"]["generation"] += 1
