#!/usr/bin/env bash
# make demo: mounts an embedded sample dataset through the CSI plugins and reads it twice.
set -euo pipefail
cat <<'MSG'
make demo: not built yet.
The data path (fluid-fuse) and the CSI plugins do not exist yet, so there is nothing to
demonstrate; nothing was started or measured. What exists today is the workspace, the gRPC
protocol crate and the real test servers: run `make test` to see them work.
MSG
