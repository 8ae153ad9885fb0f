#!/usr/bin/env bash
# Installs and runs the real servers the tests talk to, on 127.0.0.1 only.
#   scripts/services.sh up [NAME...]    install (first time) and start; quick when already running
#   scripts/services.sh down [NAME...]  stop
#   scripts/services.sh env             print endpoints and credentials as `export` lines
# Each service lives in scripts/services/NAME.sh and defines NAME_up, NAME_down, NAME_env.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# What `up`, `down` and `env` act on when no NAME is given. `kube` builds Kubernetes and
# csi-provisioner from source the first time (one `go build`); later `kube` and `cluster` start in
# under a minute.
ALL_SERVICES=(fuse seaweedfs ceph minidfs csisanity kube helm cluster)

# shellcheck source=services/lib.sh
source "$here/services/lib.sh"
for f in "$here"/services/*.sh; do
  [ "$(basename "$f")" = lib.sh ] && continue
  # shellcheck disable=SC1090
  source "$f"
done

cmd="${1:-}"
shift || true
names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${ALL_SERVICES[@]}")

case "$cmd" in
  up)
    for s in "${names[@]}"; do
      t0=$(date +%s)
      "${s}_up"
      log "$s ready ($(( $(date +%s) - t0 ))s)"
    done ;;
  down)
    for s in "${names[@]}"; do "${s}_down" || true; done ;;
  env)
    for s in "${names[@]}"; do "${s}_env"; done ;;
  *)
    echo "usage: $0 up|down|env [$(IFS='|'; echo "${ALL_SERVICES[*]}")...]" >&2
    exit 2 ;;
esac
