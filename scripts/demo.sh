#!/usr/bin/env bash
# make demo: the main job end to end on one machine. Starts SeaweedFS, puts an image-like sample
# dataset in a bucket, runs the CSI controller and node plugins on unix sockets, walks a volume
# through CreateVolume -> NodeStage -> NodePublish exactly as the external-provisioner and
# kubelet would, reads the dataset twice through the published path (cold, then warm), prints
# a report, and takes everything down again.
set -euo pipefail
cd "$(dirname "$0")/.."

FILES="${DEMO_FILES:-3000}"
BIG_MIB="${DEMO_BIG_MIB:-512}"
work="$(mktemp -d /tmp/fluid-demo.XXXXXX)"
# The release profile, so the figures are the product's rather than a debug build's.
bin=target/release
pids=()

step() { printf '\n== %s\n' "$*"; }

cleanup() {
  set +e
  if [ -n "${VOL_ID:-}" ]; then
    "$bin/fluid-csi" unpublish --node "unix://$work/node.sock" --volume-id "$VOL_ID" --path "$work/pod/volume" >/dev/null 2>&1
    "$bin/fluid-csi" unstage --node "unix://$work/node.sock" --volume-id "$VOL_ID" --staging-path "$work/staging" >/dev/null 2>&1
    "$bin/fluid-csi" delete --controller "unix://$work/controller.sock" --volume-id "$VOL_ID" >/dev/null 2>&1
  fi
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  wait 2>/dev/null
  # Nothing may stay mounted under the demo's folder.
  grep -o " $work[^ ]*" /proc/self/mountinfo 2>/dev/null | sort -r | while read -r m; do umount -l "$m"; done
  rm -rf "$work"
}
trap cleanup EXIT

step "installing and starting what the demo needs (FUSE, SeaweedFS)"
scripts/services.sh up fuse seaweedfs
eval "$(scripts/services.sh env seaweedfs)"

step "building the release binaries (the first time takes a while on a small machine)"
cargo build --release --quiet -p fuse-cache -p csi-node -p csi-controller -p csi-client \
  -p fluid-tests --bin fluid-fuse --bin fluid-csi-node --bin fluid-csi-controller --bin fluid-csi \
  --bin fluid-sample

bucket="demo-$(date +%s)"
step "making the sample dataset: $FILES images of 50-500 KiB and one ${BIG_MIB} MiB shard in s3://$bucket"
"$bin/fluid-sample" upload --bucket "$bucket" --files "$FILES" --big-mib "$BIG_MIB"

cat > "$work/datasets.yaml" <<YAML
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata: {name: imagenet-sample, namespace: default}
spec:
  mounts:
    - mountPoint: s3://$bucket
      name: sample
      path: /
      options: {endpoint: "$FLUID_S3_ENDPOINT", region: "$FLUID_S3_REGION", path-style: "true"}
YAML

step "starting fluid-csi-controller and fluid-csi-node on unix sockets"
"$bin/fluid-csi-controller" --endpoint "unix://$work/controller.sock" --state-dir "$work/controller-state" \
  --datasets "$work/datasets.yaml" 2>"$work/controller.log" &
pids+=($!)
"$bin/fluid-csi-node" --endpoint "unix://$work/node.sock" --nodeid demo-node --state-dir "$work/node-state" \
  --tier mem:1GiB --tier "ssd:$work/cache:4GiB" 2>"$work/node.log" &
pids+=($!)
for s in controller node; do
  for _ in $(seq 100); do [ -S "$work/$s.sock" ] && break; sleep 0.1; done
  [ -S "$work/$s.sock" ] || { echo "$s plugin did not start:"; tail "$work/$s.log"; exit 1; }
done

step "CreateVolume (StorageClass fluid, parameter dataset=imagenet-sample, PVC in namespace default)"
"$bin/fluid-csi" create --controller "unix://$work/controller.sock" --name pvc-demo \
  --param dataset=imagenet-sample --param csi.storage.k8s.io/pvc/namespace=default > "$work/volume.json"
VOL_ID="$(sed -n 's/.*"volume_id": "\(.*\)".*/\1/p' "$work/volume.json")"
echo "volume $VOL_ID"

step "NodeStageVolume (starts fluid-fuse for the volume) and NodePublishVolume (binds it into the pod)"
mkdir -p "$work/staging"
"$bin/fluid-csi" stage --node "unix://$work/node.sock" --volume "$work/volume.json" --staging-path "$work/staging" \
  --secret "access-key=$FLUID_S3_ACCESS_KEY" --secret "secret-key=$FLUID_S3_SECRET_KEY"
"$bin/fluid-csi" publish --node "unix://$work/node.sock" --volume "$work/volume.json" --staging-path "$work/staging" \
  --target-path "$work/pod/volume" --readonly
ls "$work/pod/volume"

step "epoch 1 (cold: every byte comes from SeaweedFS)"
cold="$("$bin/fluid-sample" read --dir "$work/pod/volume" --threads 8)"
echo "$cold"
sync; echo 3 > /proc/sys/vm/drop_caches
step "epoch 2 (warm: served by the cache tiers; the kernel page cache was dropped first)"
warm="$("$bin/fluid-sample" read --dir "$work/pod/volume" --threads 8)"
echo "$warm"

control="$(find "$work/node-state" -name '*.sock' | head -n 1)"
stats="$("$bin/fluid-fuse" stats --control "unix://$control")"

field() { sed -n "s/.*\"$2\": \([0-9.]*\).*/\1/p" <<<"$1"; }
step "report"
printf '%-8s %10s %10s %12s\n' epoch MB/s files/s seconds
printf '%-8s %10s %10s %12s\n' cold "$(field "$cold" mb_per_s)" "$(field "$cold" files_per_s)" "$(field "$cold" seconds)"
printf '%-8s %10s %10s %12s\n' warm "$(field "$warm" mb_per_s)" "$(field "$warm" files_per_s)" "$(field "$warm" seconds)"
echo
echo "$stats"

step "NodeUnpublish, NodeUnstage, DeleteVolume, and stopping everything"
"$bin/fluid-csi" unpublish --node "unix://$work/node.sock" --volume-id "$VOL_ID" --path "$work/pod/volume"
"$bin/fluid-csi" unstage --node "unix://$work/node.sock" --volume-id "$VOL_ID" --staging-path "$work/staging"
"$bin/fluid-csi" delete --controller "unix://$work/controller.sock" --volume-id "$VOL_ID"
VOL_ID=""
echo "done"
