"""Tickets, CSRF tokens, token headers and ACL privilege resolution."""

from __future__ import annotations

import time

from k3s_deploy_lab.pvesim import auth
from k3s_deploy_lab.pvesim.inventory import BUILTIN_ROLES
from k3s_deploy_lab.pvesim.model import Acl, State, Token, User


def make_state() -> State:
    state = State(roles=dict(BUILTIN_ROLES))
    state.users = {"root@pam": User("root@pam", "pw"), "ops@pve": User("ops@pve", "pw2")}
    state.tokens = {
        "ops@pve!a": Token("ops@pve!a", "s=e=cret", True),
        "ops@pve!b": Token("ops@pve!b", "x", False),
    }
    state.acls = [
        Acl("/", "ops@pve", "PVEAuditor"),
        Acl("/vms", "ops@pve", "PVEVMAdmin"),
        Acl("/vms/105", "ops@pve", "NoAccess"),
        Acl("/storage/shared", "ops@pve", "PVEDatastoreUser", propagate=False),
        Acl("/vms", "ops@pve!a", "PVEVMUser"),
        Acl("/pool/k3s", "ops@pve!a", "PVEVMAdmin"),
    ]
    state.pools = {"k3s": [200]}
    return state


def test_ticket_roundtrip_expiry_and_tamper() -> None:
    state = make_state()
    ticket, csrf = auth.make_ticket(state, "root@pam")
    assert auth.verify_ticket(state, ticket) == "root@pam"
    assert auth.verify_csrf(state, csrf, "root@pam") and not auth.verify_csrf(state, csrf, "ops@pve")
    old, _ = auth.make_ticket(state, "root@pam", now=time.time() - 7300)
    assert auth.verify_ticket(state, old) is None
    assert auth.verify_ticket(state, ticket.replace("root@pam", "ops@pve")) is None
    assert auth.verify_ticket(state, "garbage") is None


def test_token_header_splits_at_last_equals() -> None:
    state = make_state()
    ident = auth.verify_token_header(state, "PVEAPIToken=ops@pve!a=s=e=cret")
    assert ident is None  # split at the last '=': the id would be `ops@pve!a=s=e`
    state.tokens["ops@pve!a"].secret = "plain"
    assert auth.verify_token_header(state, "PVEAPIToken=ops@pve!a=plain") == auth.Identity(
        "ops@pve", "ops@pve!a"
    )
    assert auth.verify_token_header(state, "PVEAPIToken=ops@pve!a=wrong") is None
    assert auth.verify_token_header(state, "Bearer x") is None


def test_deepest_acl_wins_and_propagate() -> None:
    state = make_state()
    user = auth.Identity("ops@pve")
    assert auth.has(state, user, "/vms/100", ["VM.Clone"])
    assert not auth.has(state, user, "/vms/105", ["VM.Audit"])  # NoAccess at the deeper level
    assert auth.has(state, user, "/nodes/pve1", ["Sys.Audit"])
    assert auth.has(state, user, "/storage/shared", ["Datastore.AllocateSpace"])
    assert not auth.has(state, user, "/storage/shared/sub", ["Datastore.AllocateSpace"])  # propagate=0
    assert auth.privileges(state, auth.Identity("root@pam"), "/anything") == auth.ALL


def test_privilege_separation_and_pools() -> None:
    state = make_state()
    sep = auth.Identity("ops@pve", "ops@pve!a")
    nosep = auth.Identity("ops@pve", "ops@pve!b")
    assert auth.has(state, sep, "/vms/100", ["VM.PowerMgmt"])
    assert not auth.has(state, sep, "/vms/100", ["VM.Clone"])  # token lacks it
    assert auth.has(state, sep, "/vms/200", ["VM.Clone"])  # via the pool ACL, and the owner has it on /vms
    assert not auth.has(state, sep, "/nodes/pve1", ["Sys.Audit"])  # the owner has it, the token not
    assert auth.has(state, nosep, "/nodes/pve1", ["Sys.Audit"]) and auth.has(
        state, nosep, "/vms/1", ["VM.Clone"]
    )


def test_check_expressions() -> None:
    state = make_state()
    sep = auth.Identity("ops@pve", "ops@pve!a")
    expr = ["and", ["perm", "/vms/{vmid}", ["VM.Clone"]],
            ["or", ["perm", "/vms/{newid}", ["VM.Allocate"]], ["perm", "/pool/{pool}", ["VM.Allocate"], "require_param", "pool"]]]  # fmt: skip
    assert auth.check_expr(state, sep, expr, {"vmid": 200, "newid": 300}) == (False, "/vms/300, VM.Allocate")
    # the pool alternative needs VM.Allocate on /pool/k3s for the token AND its owner
    assert not auth.check_expr(state, sep, expr, {"vmid": 200, "newid": 300, "pool": "k3s"})[0]
    state.acls.append(Acl("/pool/k3s", "ops@pve", "PVEVMAdmin"))
    assert auth.check_expr(state, sep, expr, {"vmid": 200, "newid": 300, "pool": "k3s"})[0]
    any_expr = ["perm", "/vms/{vmid}", ["VM.Config.Disk", "VM.Config.Cloudinit"], "any", 1]
    assert auth.check_expr(state, sep, any_expr, {"vmid": 100})[0]
