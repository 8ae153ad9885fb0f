#!/usr/bin/env bash
# make demo-cluster: what a user does with Fluid on Kubernetes, on the single-node cluster of
# `scripts/services.sh up cluster`: the release image imported into the node's containerd,
# `helm install` of the chart, a sample dataset in a SeaweedFS bucket declared as a Dataset and
# CacheRuntime, then two pods that read all of it through the kubelet's mount: the first cold
# (from the bucket), the second warm (from the cache of the daemon the first one left). Prints
# `kubectl get dataset,pvc,pod` and both read times. The cluster and the chart stay up for you
# to look around (the commands to take them down are printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

FILES="${DEMO_FILES:-1000}"
BIG_MIB="${DEMO_BIG_MIB:-256}"
NS=fluid-demo
bin=target/release

step() { printf '\n== %s\n' "$*"; }

step "starting the cluster and the bucket server (the first time builds Kubernetes: ~25 minutes)"
scripts/services.sh up fuse seaweedfs helm cluster
eval "$(scripts/services.sh env seaweedfs helm cluster)"
kubectl() { command kubectl --kubeconfig "$FLUID_CLUSTER_KUBECONFIG" "$@"; }
helm() { "$FLUID_HELM" --kubeconfig "$FLUID_CLUSTER_KUBECONFIG" "$@"; }

step "building the release image and importing it into the node's containerd"
scripts/image.sh --import
cargo build --release --quiet -p fluid-tests --bin fluid-sample

step "helm install fluid (namespace fluid-system)"
if helm status fluid -n fluid-system >/dev/null 2>&1; then
  helm upgrade fluid deploy/charts/fluid -n fluid-system --wait --timeout 180s >/dev/null
  # Same image tag, new image: the pods must be replaced to run it.
  kubectl -n fluid-system rollout restart deployment/fluid-controller daemonset/fluid-node >/dev/null
  kubectl -n fluid-system rollout status deployment/fluid-controller --timeout 180s >/dev/null
  kubectl -n fluid-system rollout status daemonset/fluid-node --timeout 180s >/dev/null
else
  helm install fluid deploy/charts/fluid -n fluid-system --create-namespace --wait --timeout 180s >/dev/null
fi
kubectl -n fluid-system get pods

bucket="demo-$(date +%s)"
step "making the sample dataset: $FILES images of 50-500 KiB and one ${BIG_MIB} MiB shard in s3://$bucket"
"$bin/fluid-sample" upload --bucket "$bucket" --files "$FILES" --big-mib "$BIG_MIB"

step "declaring Dataset imagenet-sample and its CacheRuntime in namespace $NS"
kubectl delete namespace "$NS" --wait=true --timeout=120s >/dev/null 2>&1 || true
kubectl create namespace "$NS" >/dev/null
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Secret
metadata: {name: sample-s3, namespace: $NS}
# The Secret names where its keys may be sent (a Dataset alone may not choose that).
stringData: {access-key: "$FLUID_S3_ACCESS_KEY", secret-key: "$FLUID_S3_SECRET_KEY", endpoint: "$FLUID_CLUSTER_S3_ENDPOINT"}
---
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata: {name: imagenet-sample, namespace: $NS}
spec:
  mounts:
    - mountPoint: s3://$bucket/
      name: sample
      # SeaweedFS as pods reach it: the node's address (it listens on 127.0.0.1, forwarded).
      options: {endpoint: "$FLUID_CLUSTER_S3_ENDPOINT", region: "$FLUID_S3_REGION"}
      encryptOptions:
        - {name: access-key, valueFrom: {secretKeyRef: {name: sample-s3, key: access-key}}}
        - {name: secret-key, valueFrom: {secretKeyRef: {name: sample-s3, key: secret-key}}}
---
apiVersion: data.fluid.io/v1alpha1
kind: CacheRuntime
metadata: {name: imagenet-sample, namespace: $NS}
spec:
  tieredstore:
    levels:
      - {mediumtype: MEM, quota: 2Gi}
YAML
kubectl -n "$NS" wait pvc/imagenet-sample --for=jsonpath='{.status.phase}'=Bound --timeout=120s >/dev/null

# reader NAME: a pod that reads every file of the Dataset once and prints how long it took.
reader() {
  kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: $NS}
spec:
  restartPolicy: Never
  containers:
    - name: reader
      image: $FLUID_CLUSTER_BUSYBOX_IMAGE
      command: ["sh", "-c", "time sh -c 'find /data -type f | xargs cat | wc -c'"]
      volumeMounts: [{name: data, mountPath: /data}]
  volumes:
    - name: data
      persistentVolumeClaim: {claimName: imagenet-sample, readOnly: true}
YAML
  kubectl -n "$NS" wait "pod/$1" --for=jsonpath='{.status.phase}'=Succeeded --timeout=600s >/dev/null
  printf '%s: ' "$1"
  # busybox `time` prints "real 0m 1.23s"; wc prints the bytes read.
  kubectl -n "$NS" logs "$1" | tr '\n' ' ' | sed 's/  */ /g'
  echo
}

step "pod cold-read: the first read, from the bucket"
reader cold-read
kubectl -n "$NS" delete pod cold-read --wait=true >/dev/null
step "pod warm-read: a new pod, served by the daemon the first one left (cleanPolicy OnRuntimeDeleted)"
reader warm-read

step "kubectl get dataset,pvc,pod -n $NS"
# The controller collects the node's cache figures every 30 s.
sleep 35
kubectl -n "$NS" get dataset,pvc,pod

step "done; the cluster and the chart stay up"
cat <<EOF
  kubectl --kubeconfig $FLUID_CLUSTER_KUBECONFIG get datasets -A
  kubectl --kubeconfig $FLUID_CLUSTER_KUBECONFIG delete namespace $NS   # the Dataset, its PV and daemon
  $FLUID_HELM --kubeconfig $FLUID_CLUSTER_KUBECONFIG uninstall fluid -n fluid-system
  scripts/services.sh down cluster
EOF
