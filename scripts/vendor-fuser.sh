#!/usr/bin/env bash
# Re-creates vendor/fuser from the published fuser 0.18.0 and vendor/fuser.patch.
#
#   scripts/vendor-fuser.sh          writes vendor/fuser (what the workspace builds)
#   scripts/vendor-fuser.sh --check  says whether vendor/fuser is exactly that (make lint)
#   scripts/vendor-fuser.sh --diff   writes vendor/fuser.patch from vendor/fuser as it is now
#
# The crate comes through cargo (so the registry or mirror cargo is set up for), unpacked into
# a temporary folder; only what the workspace builds is kept (no examples, tests or CI files).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.18.0
KEEP=(Cargo.toml LICENSE.md README.md build.rs rustfmt.toml src)
mode="${1:-write}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The published crate, as cargo unpacks it.
mkdir -p "$work/fetch/src"
touch "$work/fetch/src/lib.rs"
cat >"$work/fetch/Cargo.toml" <<TOML
[package]
name = "fetch-fuser"
version = "0.0.0"
edition = "2021"
[dependencies]
fuser = { version = "=$VERSION", default-features = false }
[workspace]
TOML
published="$(cd "$work/fetch" && cargo fetch -q && cargo metadata --format-version 1 |
  python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "fuser"))')"
published="$(dirname "$published")"
mkdir -p "$work/a"
for f in "${KEEP[@]}"; do cp -r "$published/$f" "$work/a/"; done

case "$mode" in
--diff)
  mkdir -p "$work/tree"
  cp -r "$work/a" "$work/tree/a" && cp -r vendor/fuser "$work/tree/b"
  # Without the file times, so the patch changes only when the change does.
  (cd "$work/tree" && diff -ruN a b | sed -E 's/^(---|\+\+\+) ([^\t]+)\t.*/\1 \2/') >vendor/fuser.patch || true
  echo "vendor/fuser.patch: $(grep -c '^+++ ' vendor/fuser.patch) files"
  ;;
write | --check)
  cp -r "$work/a" "$work/b"
  # git apply, not patch(1): git is there wherever the repository is; patch may not be.
  (cd "$work/b" && git apply -p1 "$OLDPWD/vendor/fuser.patch")
  if [ "$mode" = --check ]; then
    if diff -r "$work/b" vendor/fuser >/dev/null; then
      echo "vendor/fuser is fuser $VERSION with vendor/fuser.patch"
    else
      diff -r "$work/b" vendor/fuser | head -20 >&2
      echo "vendor/fuser differs from fuser $VERSION + vendor/fuser.patch (scripts/vendor-fuser.sh --diff after a change to vendor/fuser)" >&2
      exit 1
    fi
  else
    rm -rf vendor/fuser && cp -r "$work/b" vendor/fuser
    echo "vendor/fuser: fuser $VERSION with vendor/fuser.patch"
  fi
  ;;
*) echo "usage: scripts/vendor-fuser.sh [--check|--diff]" >&2; exit 2 ;;
esac
