#!/usr/bin/env bash
# make bench: fluid-fuse side by side with s3fs and rclone on one SeaweedFS server.
set -euo pipefail
cat <<'MSG'
make bench: not built yet.
The benchmark needs the data path (fluid-fuse), which does not exist yet; nothing was measured.
MSG
