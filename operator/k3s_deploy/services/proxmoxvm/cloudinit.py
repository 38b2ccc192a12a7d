"""Once per boot (and spec change): does the guest run with the cloud-init data its config says?

Proxmox rebuilds the cloud-init drive only at a start or on ``PUT .../cloudinit``, and the guest reads
it at boot. A config write that lands after the start (a reply lost on the way while the write still
went through, two writes crossing, a spec change while the VM runs, a change made in the Proxmox UI)
leaves the guest running with old data: for a K3s node that means the cluster's SSH key is missing
and the node never joins. ``GET .../cloudinit`` lists what the drive was generated from against the
config (PVE 7.2+); the operator never rebuilds the drive of a running VM by itself, so that list stays
true until the next start. One call at the first guest-agent contact of each boot or generation
tells; the answer is kept in memory, so steady state costs nothing. A boot this process started right
after reading and writing the config in the same pass needs no call: the start built the drive from
that config (not so once a write of ours failed: its reply may be lost while it lands after the start).

A stale drive is repaired by bringing the config to the spec and rebooting (the start half of a
reboot rebuilds the drive), but only while the VM is being brought up (uptime below the agent
timeout) or with ``restartPolicy: Automatic``; a VM that has been running longer is not rebooted
behind the user's back: the ``CloudInitStale`` condition says a restart is needed. At most
``MAX_STALE_REBOOTS`` reboots in a row; then the condition reports it instead.
"""

from __future__ import annotations

from k3s_deploy.ports.proxmox import VmSummary
from k3s_deploy.services.proxmoxvm import plan
from k3s_deploy.services.proxmoxvm.configure import configure
from k3s_deploy.services.proxmoxvm.work import (
    AGENT_READY,
    CLOUD_INIT_STALE,
    RESTART_ANNOTATION,
    Work,
    same_boot,
)

MAX_STALE_REBOOTS = 2  # consecutive reboots without ever finding the drive current


def bring_up_window(work: Work) -> int:
    """Seconds of uptime during which a boot still counts as the VM being brought up."""
    agent = work.spec.guest_agent
    return agent.timeout_seconds if agent else 300


async def ensure_fresh_cloud_init(work: Work, vm: VmSummary, boot: float | None) -> None:
    """Check the drive once per boot and generation; reboot or report when it is stale (module doc)."""
    memory = work.memory
    if not plan.wants_cloud_init(work.spec):
        work.conditions.remove(CLOUD_INIT_STALE)
        return
    unknown = boot is None or memory.cloud_init_boot is None  # no uptime listed: go by generation
    if memory.cloud_init_generation == work.obj.generation and (
        unknown or same_boot(boot, memory.cloud_init_boot)
    ):
        return
    if memory.cloud_init_started == work.obj.generation and not memory.write_in_doubt:
        # This process read the config, brought it to this generation and then started the VM, so
        # the start built the drive from it; a config write before the first contact would be ours.
        memory.cloud_init_started = None
        memory.cloud_init_boot, memory.cloud_init_generation = boot, work.obj.generation
        memory.stale_reboots = 0
        work.conditions.remove(CLOUD_INIT_STALE)
        return
    memory.cloud_init_started = None
    client = work.session.client
    stale = plan.stale_cloud_init(await client.cloudinit_pending(vm.node, vm.vmid))
    memory.cloud_init_boot, memory.cloud_init_generation = boot, work.obj.generation
    if not stale:
        memory.stale_reboots = 0
        memory.write_in_doubt = False  # whatever landed late is in the drive, or never came
        work.conditions.remove(CLOUD_INIT_STALE)
        return
    keys = ", ".join(stale)
    uptime = vm.uptime or 0
    automatic = work.spec.restart_policy == "Automatic" or uptime < bring_up_window(work)
    if not automatic or memory.stale_reboots >= MAX_STALE_REBOOTS:
        if memory.stale_reboots >= MAX_STALE_REBOOTS:
            reason = "StillStaleAfterReboots"
            message = (
                f"the cloud-init drive is still older than the config ({keys}) after "
                f"{memory.stale_reboots} reboots; check what keeps changing the VM's cloud-init keys"
            )
        else:
            reason = "RestartRequired"
            message = (
                f"the guest runs with cloud-init data older than its config ({keys}); set the annotation "
                f"{RESTART_ANNOTATION} (any new value) or restartPolicy: Automatic to reboot it"
            )
        if not work.conditions.is_true(CLOUD_INIT_STALE):
            work.event("Warning", CLOUD_INIT_STALE, message)
        work.conditions.set(CLOUD_INIT_STALE, True, reason, message)
        return
    # The config may itself be behind the spec (an old write landing late): fix it first. The reboot
    # is a shutdown plus a start, and the start rebuilds the drive; no PUT .../cloudinit before it, so
    # that a reboot that fails to start leaves the drive listed as stale and the next pass tries again.
    await configure(work, vm, force="cloud-init drive stale")
    memory.stale_reboots += 1
    memory.cloud_init_generation = None
    memory.boot_time = None  # the reboot is a new boot: addresses and the drive are read again
    work.status.addresses = []
    work.conditions.set(
        AGENT_READY, False, CLOUD_INIT_STALE, "rebooting: the guest booted with stale cloud-init"
    )
    work.conditions.remove(CLOUD_INIT_STALE)
    work.event(
        "Warning",
        CLOUD_INIT_STALE,
        f"VM {vm.vmid} booted from a cloud-init drive older than its config ({keys}); "
        f"rebooting to rebuild it (reboot {memory.stale_reboots} of at most {MAX_STALE_REBOOTS})",
    )
    upid = await client.power(vm.node, vm.vmid, "reboot")
    await work.start_task("reboot", vm.node, upid, f"rebooting VM {vm.vmid}: stale cloud-init ({keys})")
