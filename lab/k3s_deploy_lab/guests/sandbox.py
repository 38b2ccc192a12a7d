"""A guest's own filesystem view: a root directory on the host, and bubblewrap to run commands in it.

Why bubblewrap: every lab guest must see its *own* ``/etc``, ``/var``, ``/usr/local``, ``/home`` ...
(so ``/etc/rancher/k3s`` of one guest is not the other's) while sharing the host's read-only
programs (``/usr``, ``/bin``, ``/lib*``). ``bwrap`` builds that view per command in a mount
namespace, with real exit codes, stdout and stderr, and without a container runtime.

The commands run as uid 0 inside the sandbox (bwrap drops every capability), whatever the SSH user:
the cloud-init user therefore "is" root for file ownership, and ``sudo`` is a tiny shim that drops
sudo's own options and runs the rest. This is a lab simplification, documented in docs/lab-guests.md.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

# Directories each guest owns (writable, persistent across VM restarts, gone on re-creation).
GUEST_DIRS = ("etc", "var", "usr/local", "home", "root", "tmp", "opt", "run", "srv", "mnt")
# Read-only parts shared with the host. Symlinked top-level dirs (merged /usr) are recreated as links.
HOST_RO = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
# Files copied from the host /etc at seed time (read by ordinary tools: TLS, name resolution, shells).
HOST_ETC_COPY = (
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "nsswitch.conf",
    "host.conf",
    "bash.bashrc",
    "profile",
    "environment",
    "mime.types",
    "localtime",
    "timezone",
    "alternatives",
)
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

SUDO_SHIM = """#!/bin/sh
# Lab guest sudo: every process of this guest already runs as uid 0 in its sandbox, so sudo only has
# to accept sudo's usual options and run the command (see docs/lab-guests.md).
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; break ;;
    -u|-g|-p|-C|-D|-h|-r|-t|-U|-T) shift 2 ;;
    --user=*|--group=*|--prompt=*|--preserve-env=*) shift ;;
    -v|-k|-K) exit 0 ;;
    -*) shift ;;
    *) break ;;
  esac
done
[ $# -eq 0 ] && { echo "usage: sudo [-nEHS] [-u user] command" >&2; exit 1; }
exec "$@"
"""


def bwrap_path() -> str:
    path = shutil.which("bwrap")
    if path is None:
        raise RuntimeError(
            "bubblewrap (bwrap) is not installed; run ./dev setup or apt-get install bubblewrap"
        )
    return path


@dataclass(frozen=True)
class GuestIdentity:
    """What the simulator tells us about a guest that shapes its filesystem."""

    user: str
    hostname: str
    ssh_keys: tuple[str, ...]


class GuestRoot:
    """The on-host directory holding one guest's writable tree, and how to run a command inside it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, guest_path: str) -> Path:
        """The host path behind an absolute guest path in one of the guest's own directories."""
        return self.root / guest_path.lstrip("/")

    @property
    def seeded(self) -> bool:
        return (self.root / "etc" / "passwd").exists()

    def seed(self, ident: GuestIdentity) -> None:
        """Create the tree on first boot (like a fresh cloud image), then apply cloud-init's user data."""
        for name in GUEST_DIRS:
            (self.root / name).mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").chmod(0o1777)
        etc = self.root / "etc"
        if not (etc / "passwd").exists():
            for name in HOST_ETC_COPY:
                src = Path("/etc") / name
                dst = etc / name
                if src.is_dir():
                    shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
                elif src.exists():
                    shutil.copy2(src, dst, follow_symlinks=True)
            (etc / "resolv.conf").write_text("nameserver 127.0.0.53\noptions edns0\n")
            (etc / "os-release").write_text(
                'PRETTY_NAME="Ubuntu 24.04 LTS (k3s-deploy lab guest)"\nNAME="Ubuntu"\nVERSION_ID="24.04"\n'
                "ID=ubuntu\nID_LIKE=debian\n"
            )
            (etc / "machine-id").write_text(os.urandom(16).hex() + "\n")
            for sub in ("systemd/system", "sudoers.d", "ssh"):
                (etc / sub).mkdir(parents=True, exist_ok=True)
            for sub in ("lib", "log", "tmp", "cache"):
                (self.root / "var" / sub).mkdir(parents=True, exist_ok=True)
            sbin = self.root / "usr/local/sbin"
            sbin.mkdir(parents=True, exist_ok=True)
            for sub in ("bin", "lib", "share"):
                (self.root / "usr/local" / sub).mkdir(parents=True, exist_ok=True)
            (sbin / "sudo").write_text(SUDO_SHIM)
            (sbin / "sudo").chmod(0o755)
        self.apply_cloud_init(ident)

    def apply_cloud_init(self, ident: GuestIdentity) -> None:
        """Write the user, hostname and authorized keys as cloud-init would (idempotent)."""
        etc = self.root / "etc"
        home = f"/home/{ident.user}" if ident.user != "root" else "/root"
        passwd = [
            "root:x:0:0:root:/root:/bin/bash",
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin",
        ]
        group = ["root:x:0:", "sudo:x:27:" + ident.user, "nogroup:x:65534:"]
        if ident.user != "root":
            passwd.insert(1, f"{ident.user}:x:1000:1000:{ident.user}:{home}:/bin/bash")
            group.append(f"{ident.user}:x:1000:")
        (etc / "passwd").write_text("\n".join(passwd) + "\n")
        (etc / "group").write_text("\n".join(group) + "\n")
        (etc / "hostname").write_text(ident.hostname + "\n")
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {ident.hostname}\n")
        (etc / "sudoers.d" / "90-cloud-init-users").write_text(f"{ident.user} ALL=(ALL) NOPASSWD:ALL\n")
        ssh_dir = self.path(home) / ".ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text("".join(k.strip() + "\n" for k in ident.ssh_keys))

    def bwrap_argv(
        self,
        ident: GuestIdentity,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        extra_ro_binds: dict[str, str] | None = None,
    ) -> list[str]:
        """The bubblewrap command line that runs ``argv`` inside this guest."""
        home = f"/home/{ident.user}" if ident.user != "root" else "/root"
        args = [
            bwrap_path(),
            "--die-with-parent",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--hostname",
            ident.hostname,
        ]
        for name in HOST_RO:
            host = Path("/") / name
            if host.is_symlink():
                args += ["--symlink", os.readlink(host), f"/{name}"]
            elif host.is_dir():
                args += ["--ro-bind", str(host), f"/{name}"]
        for name in GUEST_DIRS:
            args += ["--bind", str(self.root / name), f"/{name}"]
        for host_path, guest_path in (extra_ro_binds or {}).items():
            args += ["--ro-bind", host_path, guest_path]
        args += ["--proc", "/proc", "--dev", "/dev", "--chdir", home, "--clearenv"]
        full_env = {
            "PATH": GUEST_PATH,
            "HOME": home,
            "USER": ident.user,
            "LOGNAME": ident.user,
            "SHELL": "/bin/bash",
            "LANG": "C.UTF-8",
            "HOSTNAME": ident.hostname,
        }
        full_env.update(env or {})
        for key, value in full_env.items():
            args += ["--setenv", key, value]
        return [*args, "--", *argv]
