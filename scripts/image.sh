#!/usr/bin/env bash
# Builds the Fluid image without a Docker engine: the release binaries on a Debian bookworm
# root file system made by mmdebstrap, assembled by umoci into an OCI image layout and written
# as an OCI archive, which `ctr -n k8s.io images import`, `skopeo copy oci-archive:...` and
# registries accept. It ships what deploy/image/Dockerfile ships (tests/tests/image.rs checks).
#
#   scripts/image.sh                 # -> target/image/fluid-<appVersion>.oci.tar
#   scripts/image.sh --out DIR       # another output folder
#   scripts/image.sh --print-ref     # only print the image reference it tags
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export FLUID_SERVICES_DIR="${FLUID_SERVICES_DIR:-/var/tmp/fluid-services}"
mkdir -p "$FLUID_SERVICES_DIR"
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
while [ $# -gt 0 ]; do
  case "$1" in
    --print-ref) echo "$ref"; exit 0 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) say "error: unknown argument $1 (see --help)"; exit 2 ;;
  esac
done

[ "$(id -u)" = 0 ] || { say "error: run as root (mmdebstrap and umoci keep file owners)"; exit 1; }
apt_install mmdebstrap umoci

say "building the release binaries"
cargo build --release --locked -p fuse-cache -p csi-node -p csi-controller -p csi-client --bins >&2

work="$(mktemp -d "${TMPDIR:-/tmp}/fluid-image.XXXXXX")"
trap 'rm -rf "$work"' EXIT
started=$(date +%s)

say "making the $SUITE root file system (${PACKAGES[*]})"
# Documentation, man pages and locales are of no use in a container image.
mmdebstrap --quiet --variant=minbase --mode=root \
  --include="$(IFS=,; echo "${PACKAGES[*]}")" \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  "$SUITE" "$work/rootfs.tar" "$MIRROR" >&2

say "assembling $ref"
layout="$work/oci"
umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci unpack --image "$layout:$tag" "$work/bundle" >&2
tar -C "$work/bundle/rootfs" -xf "$work/rootfs.tar"
# Debug line tables are for profiling builds, not for the image (the symbols stay, so
# backtraces still name functions): about a fifth of the size.
for b in "${BINARIES[@]}"; do
  install -m 0755 "target/release/$b" "$work/bundle/rootfs/usr/local/bin/$b"
  strip --strip-debug "$work/bundle/rootfs/usr/local/bin/$b"
done
umoci repack --image "$layout:$tag" "$work/bundle"
umoci config --image "$layout:$tag" \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.cmd fluid-csi --config.cmd --help \
  --author "Fluid (Rust)" \
  --config.label "org.opencontainers.image.source=$ref" \
  --config.label "org.opencontainers.image.version=$tag"
# The name under which `ctr images import` and registries know the image.
umoci gc --layout "$layout"
python3 - "$layout/index.json" "$ref" <<'PY'
import json, sys
path, ref = sys.argv[1], sys.argv[2]
index = json.load(open(path))
for m in index["manifests"]:
    m.setdefault("annotations", {})["io.containerd.image.name"] = ref
json.dump(index, open(path, "w"))
PY

mkdir -p "$out"
archive="$out/fluid-$tag.oci.tar"
tar -C "$layout" -cf "$archive.tmp" .
mv "$archive.tmp" "$archive"
size=$(du -m "$archive" | cut -f1)
say "wrote $archive ($ref, ${size} MiB, $(( $(date +%s) - started )) s after the build)"
say "load it with: ctr -n k8s.io images import $archive"
