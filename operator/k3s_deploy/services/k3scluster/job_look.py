"""A look at the guest jobs in flight between whole passes: one SSH command per job, nothing else.

While a member's installer runs, the cluster's next step waits for the job's end, so the job is looked
at often while young (:func:`node_ops.look_after`: from every 0.5 s). A whole pass probes every member
over SSH and reads the children, Secrets and the cluster's API first: half a dozen SSH logins for that
one question, and time spent before the question is asked. Within ``node_ops.POLL_S`` of the last
whole pass, a look asks only the question. The whole pass runs as before when a job has ended (or is
gone), on a new generation or a pause, when no whole pass ran in this process within POLL_S (so what a
pass watches, the children, the nodes, remediation, is still seen every few seconds) and when a look
fails. Nothing is awaited: each look returns when to look again.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from k3s_deploy import errors
from k3s_deploy.api.node_operation import NodeOperation
from k3s_deploy.services.k3scluster import access, guest_jobs, node_ops
from k3s_deploy.services.k3scluster.secrets import read_key
from k3s_deploy.services.k3scluster.state import ClusterPass, NodeView


def whole_pass(r: ClusterPass) -> None:
    """Record that a whole pass of this cluster starts now; its member views (filled as it verifies
    each child's vmid and address) are what the looks until the next whole pass may dial."""
    r.deps.whole_passes[r.ref.uid] = (node_ops._now(), r.views)


async def between(r: ClusterPass) -> float | None:
    """Seconds until the next look when every job in flight still runs and a whole pass ran within
    POLL_S; None: run the whole pass."""
    if r.spec.paused or r.old.observed_generation != r.generation:
        return None
    last = r.deps.whole_passes.get(r.ref.uid)
    if last is None or node_ops._now() - last[0] >= timedelta(seconds=node_ops.POLL_S):
        return None
    verified = last[1]
    in_flight = [
        n
        for n in r.old.nodes
        if n.operation is not None and n.operation.job and n.operation.kind == n.operation.action
    ]
    # Status is writable by the cluster's author: the address and vmid to dial come from the whole
    # pass's verified views, and a member whose status disagrees with them gets a whole pass.
    jobs: list[tuple[NodeView, NodeOperation]] = []
    for n in in_flight:
        view = verified.get(n.name)
        if view is None or not view.ip or view.ip != n.ip or view.vmid != n.vmid or n.operation is None:
            return None
        jobs.append((view, n.operation))
    if not jobs:
        return None
    ref = r.spec.ssh.private_key_secret_ref
    timeout = float(r.spec.ssh.command_timeout_seconds)
    try:
        key = await read_key(r.deps.objects, r.ref.namespace, ref.name, ref.key, what="")
        await r.hostkeys.load()
        states = await asyncio.gather(
            *(
                guest_jobs.poll(
                    r.deps.ssh,
                    access.node_target(r, view, key),
                    str(op.job),
                    timeout_s=timeout,
                )
                for view, op in jobs
            )
        )
    except errors.K3sDeployError:
        return None  # the whole pass says what is wrong
    if not all(s.running for s in states):
        return None
    return min(node_ops.look_after(op) for _, op in jobs)
