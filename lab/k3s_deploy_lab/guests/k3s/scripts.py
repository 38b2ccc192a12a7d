"""Shell scripts the K3s stand-in puts on a guest: the installer and what a real install leaves behind.

The installer is used exactly like ``curl -sfL https://get.k3s.io | sh -`` (same environment variables
and arguments); it hands them to the guests process, which decides as K3s would and writes the
artefacts into the guest. The ``k3s`` "binary" is a script printing the real ``--version`` format and
running ``k3s kubectl`` with the real kubectl.
"""

from __future__ import annotations

import hashlib

# The guest proves who it is with a secret the guests process writes into it at every boot.
GUEST_TOKEN_PATH = "/etc/k3s-lab/guest.token"
KUBECTL_IN_GUEST = "/run/k3s-lab/kubectl"

INSTALL_SH = r"""#!/bin/sh
# k3s-deploy lab installer: takes what https://get.k3s.io takes (INSTALL_K3S_*, K3S_* and the k3s
# command and flags) and installs the lab's K3s stand-in on this guest. See docs/lab-guests.md.
set -e
LAB_URL='@LAB_URL@'
info() { echo '[INFO] ' "$@"; }
fatal() { echo '[ERROR] ' "$@" >&2; exit 1; }
SUDO=
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
fi
if [ ! -r @GUEST_TOKEN@ ]; then
  if [ -n "$SUDO" ] && sudo test -r @GUEST_TOKEN@; then :; else
    fatal "this is not a k3s-deploy lab guest (@GUEST_TOKEN@ is missing)"
  fi
fi
command -v curl >/dev/null 2>&1 || fatal "Can not find curl for downloading files"
n=$#
for a in "$@"; do set -- "$@" --data-urlencode "arg=$a"; done
shift "$n"
for v in $(env | sed -n 's/^\(INSTALL_K3S_[A-Z0-9_]*\|K3S_[A-Z0-9_]*\)=.*/\1/p'); do
  eval "val=\${$v}"
  set -- "$@" --data-urlencode "env.$v=$val"
done
out=$(mktemp)
trap 'rm -f "$out"' EXIT
code=$($SUDO curl -sS -o "$out" -w '%{http_code}' -X POST "$LAB_URL/k3s/v1/install" \
  --data-urlencode "guest=$($SUDO cat @GUEST_TOKEN@)" "$@") || fatal "Download failed"
if [ "$code" = 200 ]; then
  cat "$out"
  exit 0
fi
cat "$out" >&2
exit 1
"""

K3S_BIN = r"""#!/bin/sh
# k3s (k3s-deploy lab stand-in): the server runs in the lab's guests process; see docs/lab-guests.md.
VERSION='@VERSION@'
COMMIT='@COMMIT@'
GOVERSION='@GOVERSION@'
SERVER_URL='@SERVER_URL@'
LAB_URL='@LAB_URL@'
prog=$(basename "$0")
# Verbs the guests process answers (it runs this cluster's etcd): "<exit code>\n<output>".
lab_call() {
  action=$1; shift
  n=$#
  for a in "$@"; do set -- "$@" --data-urlencode "arg=$a"; done
  shift "$n"
  out=$(mktemp); trap 'rm -f "$out"' EXIT
  curl -sS -o "$out" -X POST "$LAB_URL/k3s/v1/$action" --data-urlencode "guest=$(cat @GUEST_TOKEN@)" "$@" \
    || exit 1
  code=$(head -n 1 "$out")
  if [ "$code" = 0 ]; then tail -n +2 "$out"; else tail -n +2 "$out" >&2; fi
  exit "${code:-1}"
}
case "$prog" in
  kubectl|crictl|ctr) set -- "$prog" "$@" ;;
esac
case "$1" in
  --version|-v|version)
    printf 'k3s version %s (%s)\ngo version %s\n' "$VERSION" "$COMMIT" "$GOVERSION"
    ;;
  kubectl)
    shift
    KC=${KUBECONFIG:-/etc/rancher/k3s/k3s.yaml}
    [ -r "$KC" ] || { echo "error: open $KC: permission denied" >&2; exit 1; }
    [ -x @KUBECTL@ ] || { echo "error: kubectl is not available in this lab guest" >&2; exit 1; }
    if [ -n "$SERVER_URL" ] && [ -z "$KUBECONFIG" ]; then
      exec @KUBECTL@ --kubeconfig "$KC" --server "$SERVER_URL" "$@"
    fi
    exec @KUBECTL@ --kubeconfig "$KC" "$@"
    ;;
  crictl|ctr)
    echo "$1: no container runtime runs in a k3s-deploy lab guest" >&2
    exit 1
    ;;
  etcd-snapshot)
    [ "$(id -u)" -eq 0 ] || exec sudo "$0" "$@"
    shift
    lab_call etcd-snapshot "$@"
    ;;
  server)
    case " $* " in
      *" --cluster-reset "*|*" --cluster-reset=true "*)
        [ "$(id -u)" -eq 0 ] || exec sudo "$0" "$@"
        lab_call cluster-reset "$@" ;;
    esac
    echo "k3s $1 runs as the k3s service of this lab guest; re-run the installer to change it" >&2
    exit 1
    ;;
  agent)
    echo "k3s $1 runs as the k3s service of this lab guest; re-run the installer to change it" >&2
    exit 1
    ;;
  ""|help|--help|-h)
    echo "NAME:"
    echo "   k3s - Kubernetes, but small and simple (k3s-deploy lab stand-in)"
    echo "COMMANDS:"
    echo "   server, agent, kubectl, crictl, ctr, etcd-snapshot, --version"
    ;;
  *)
    echo "Incorrect Usage. No help topic for '$1'" >&2
    exit 1
    ;;
esac
"""

_CALL = r"""LAB_URL='@LAB_URL@'
[ "$(id -u)" -eq 0 ] || exec sudo "$0" "$@"
curl -sS -f -X POST "$LAB_URL/k3s/v1/@ACTION@" --data-urlencode "guest=$(cat @GUEST_TOKEN@)" >/dev/null
"""

KILLALL_SH = (
    "#!/bin/sh\n# Stop K3s on this lab guest (the node stops posting status: NotReady).\nset -e\n" + _CALL
)
UNINSTALL_SH = (
    "#!/bin/sh\n# Remove K3s from this lab guest: its Node leaves the cluster, its files go.\nset -e\n"
    + _CALL
)


SYSTEMCTL = r"""#!/bin/sh
# systemctl (k3s-deploy lab guest): no systemd runs here; the k3s units are run by the lab's guests
# process, so start/stop/restart/status/is-active/is-enabled of k3s and k3s-agent work, nothing else.
LAB_URL='@LAB_URL@'
action=""; unit=""
for a in "$@"; do
  case "$a" in
    -*) ;;
    *) if [ -z "$action" ]; then action=$a; elif [ -z "$unit" ]; then unit=${a%.service}; fi ;;
  esac
done
[ "$action" = daemon-reload ] && exit 0
case "$unit" in
  k3s|k3s-agent) ;;
  *) echo "System has not been booted with systemd as init system (PID 1). Can't operate." >&2
     echo "Failed to connect to bus: Host is down" >&2; exit 1 ;;
esac
[ "$(id -u)" -eq 0 ] || exec sudo "$0" "$@"
out=$(mktemp); trap 'rm -f "$out"' EXIT
curl -sS -o "$out" -X POST "$LAB_URL/k3s/v1/service" --data-urlencode "guest=$(cat @GUEST_TOKEN@)" \
  --data-urlencode "action=$action" --data-urlencode "unit=$unit" || exit 1
code=$(head -n 1 "$out")
tail -n +2 "$out"
exit "${code:-1}"
"""


def systemctl_sh(lab_url: str) -> str:
    return _fill(SYSTEMCTL, LAB_URL=lab_url, GUEST_TOKEN=GUEST_TOKEN_PATH)


def _fill(text: str, **values: str) -> str:
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return text


def version_of(k3s_binary_text: str) -> str | None:
    """The version a stand-in ``k3s`` binary was made for (None when it is not one of ours)."""
    for line in k3s_binary_text.splitlines():
        if line.startswith("VERSION='") and line.endswith("'"):
            return line[len("VERSION='") : -1]
    return None


def install_sh(lab_url: str) -> str:
    return _fill(INSTALL_SH, LAB_URL=lab_url, GUEST_TOKEN=GUEST_TOKEN_PATH)


def commit_of(version: str) -> str:
    """A stable short commit per version (real releases print their git commit)."""
    return hashlib.sha1(version.encode()).hexdigest()[:8]  # noqa: S324 - an identifier, not security


def go_version_of(version: str) -> str:
    minor = int(version.split(".")[1]) if version.count(".") >= 2 else 31
    return {29: "go1.22.8", 30: "go1.22.9", 31: "go1.22.9", 32: "go1.23.4"}.get(minor, "go1.23.4")


def k3s_bin(version: str, server_url: str, lab_url: str = "") -> str:
    return _fill(
        K3S_BIN,
        LAB_URL=lab_url,
        GUEST_TOKEN=GUEST_TOKEN_PATH,
        VERSION=version,
        COMMIT=commit_of(version),
        GOVERSION=go_version_of(version),
        SERVER_URL=server_url,
        KUBECTL=KUBECTL_IN_GUEST,
    )


def killall_sh(lab_url: str) -> str:
    return _fill(KILLALL_SH, LAB_URL=lab_url, ACTION="killall", GUEST_TOKEN=GUEST_TOKEN_PATH)


def uninstall_sh(lab_url: str) -> str:
    return _fill(UNINSTALL_SH, LAB_URL=lab_url, ACTION="uninstall", GUEST_TOKEN=GUEST_TOKEN_PATH)
