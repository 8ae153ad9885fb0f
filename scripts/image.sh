#!/usr/bin/env bash
# Builds the Fluid image without a Docker engine: the release binaries on a Debian bookworm
# root file system made by mmdebstrap, assembled by umoci into an OCI image layout and written
# as an OCI archive, which `ctr -n k8s.io images import`, `skopeo copy oci-archive:...` and
# registries accept. It ships what deploy/image/Dockerfile ships (tests/tests/cluster/image.rs checks).
#
#   scripts/image.sh                 # -> target/image/fluid-<appVersion>.oci.tar
#   scripts/image.sh --out DIR       # another output folder
#   scripts/image.sh --debug         # from the debug build (`make test`'s), for the cluster tests
#   scripts/image.sh --import        # then import it into the test cluster's containerd
#   scripts/image.sh --print-ref     # only print the image reference it tags
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source "$root/scripts/services/lib.sh"
say() { printf '[image] %s\n' "$*" >&2; }

# What the image ships, as in the Dockerfile.
BINARIES=(fluid-fuse fluid-csi-node fluid-csi-controller fluid-csi)
PACKAGES=(fuse3 ca-certificates)
SUITE=bookworm
MIRROR="${FLUID_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

chart="$root/deploy/charts/fluid"
repository="$(sed -n 's/^  repository: *//p' "$chart/values.yaml" | head -n 1)"
tag="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$chart/Chart.yaml")"
[ -n "$repository" ] && [ -n "$tag" ] || { say "error: no image.repository or appVersion in $chart"; exit 1; }
ref="$repository:$tag"

out="$root/target/image"
profile=release
import=0
while [ $# -gt 0 ]; do
  case "$1" in
    --print-ref) echo "$ref"; exit 0 ;;
    --out) out="$2"; shift 2 ;;
    --debug) profile=debug; shift ;;
    --import) import=1; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) say "error: unknown argument $1 (see --help)"; exit 2 ;;
  esac
done

[ "$(id -u)" = 0 ] || { say "error: run as root (mmdebstrap and umoci keep file owners)"; exit 1; }
apt_install mmdebstrap umoci

say "building the $profile binaries"
if [ "$profile" = release ]; then
  cargo build --release --locked -p fuse-cache -p csi-node -p csi-client -p csi-controller --bins >&2
else
  cargo build --locked -p fuse-cache -p csi-node -p csi-client -p csi-controller --bins >&2
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/fluid-image.XXXXXX")"
trap 'rm -rf "$work"' EXIT
started=$(date +%s)

# The Debian root file system is made once per suite and package list and kept with the
# services (mmdebstrap takes about 20 s and the network). It writes a tar because the name ends
# in .tar.
base="$FLUID_SERVICES_DIR/image/$SUITE-$(echo "${PACKAGES[*]}" | tr ' ' '+').tar"
if [ ! -s "$base" ]; then
  say "making the $SUITE root file system (${PACKAGES[*]})"
  mkdir -p "$(dirname "$base")"
  # Documentation, man pages and locales are of no use in a container image.
  mmdebstrap --quiet --variant=minbase --mode=root \
    --include="$(IFS=,; echo "${PACKAGES[*]}")" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    "$SUITE" "${base%.tar}.partial.tar" "$MIRROR" >&2
  mv "${base%.tar}.partial.tar" "$base"
fi

say "assembling $ref"
mkdir "$work/rootfs"
tar -C "$work/rootfs" -xf "$base"
# Debug line tables are for profiling builds, not for the image (the symbols stay, so
# backtraces still name functions): about a fifth of the size of a release binary.
for b in "${BINARIES[@]}"; do
  install -m 0755 "target/$profile/$b" "$work/rootfs/usr/local/bin/$b"
  strip --strip-debug "$work/rootfs/usr/local/bin/$b"
done
mkdir -p "$out"
archive="$out/fluid-$tag.oci.tar"
oci_archive "$ref" "$work/rootfs" "$archive" \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.cmd fluid-csi --config.cmd --help \
  --author "Fluid (Rust)" \
  --config.label "org.opencontainers.image.source=$ref" \
  --config.label "org.opencontainers.image.version=$tag" \
  || { say "error: assembling the image failed"; exit 1; }
size=$(du -m "$archive" | cut -f1)
say "wrote $archive ($ref, $profile build, ${size} MiB, $(( $(date +%s) - started )) s after the build)"
if [ "$import" = 1 ]; then
  eval "$(scripts/services.sh env cluster)"
  sock="$FLUID_CLUSTER_CONTAINERD"
  [ -S "$sock" ] || { say "error: no test cluster containerd at $sock (scripts/services.sh up cluster)"; exit 1; }
  ctr --address "$sock" -n k8s.io images import "$archive" >/dev/null
  say "imported $ref into the test cluster's containerd"
else
  say "load it with: ctr -n k8s.io images import $archive"
fi
