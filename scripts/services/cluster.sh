# cluster: a real single-node Kubernetes cluster for the end-to-end tests (tests/tests/cluster/cluster.rs)
# and `make demo-cluster`. Sourced by services.sh; uses kube.sh's build and start helpers.
#
#   etcd (127.0.0.1:22379) -> kube-apiserver (https://NODE_IP:16443) -> kube-controller-manager,
#   kube-scheduler, kube-proxy (iptables) -> kubelet (node `fluid-node`) -> containerd + runc
#   (Debian's), CNI bridge + host-local (Debian's containernetworking-plugins, pods in 10.88/16).
#
# Everything of it lives in $FLUID_SERVICES_DIR/cluster (configuration, certificates, logs,
# containerd's images) except what the kubelet and CSI drivers expect at fixed host paths:
# /var/lib/kubelet (the kubelet's root; the chart's node.kubeletDir default) and the host-local
# IPAM leases in /var/lib/cni. `down` stops every pod, container and process of it and unmounts
# everything under those paths.
#
# Images come from no registry (the machine reaches none): a pause image and a busybox image
# are built here (tests/pause, Debian's busybox-static), csi-provisioner from the Go module
# proxy with the Kubernetes commands (kube.sh); all three are imported under the references the chart and tests name, so
# `imagePullPolicy: IfNotPresent` finds them. The Fluid image is imported by the tests
# (`scripts/image.sh --debug --import`), because it is built from the workspace.
#
# Why the settings below are what they are (each was needed on this kind of machine):
# - The machine mounts cgroup v1 hierarchies: kubelet `failCgroupV1: false` and the cgroupfs
#   driver (no systemd), containerd's runc `SystemdCgroup = false` to match.
# - Swap may be on: `failSwapOn: false`.
# - The sandbox lacks CAP_SYS_RESOURCE, so runc cannot set the pause container's
#   oom_score_adj of -998 (runc: "can't get final child's PID from pipe: EOF"): containerd's
#   CRI `restrict_oom_score_adj = true` caps it at our own.
# - The kubelet refuses a loopback node IP, and pods cannot reach 127.0.0.1 of the host: the
#   apiserver and the kubelet listen on the machine's first global IPv4 address (NODE_IP), or on
#   a dummy interface's when the machine has none.
# - The apiserver reaches the kubelet (logs, exec) by InternalIP; webhooks are dialled at their
#   endpoints (--enable-aggregator-routing), not through kube-proxy's service rules.
# - Disk-pressure eviction thresholds are 1%: the test machines' disks are often fuller than the
#   kubelet's defaults (10-15% free) allow, and an evicted node plugin is not a useful test.

CLUSTER_ETCD_PORT=22379
CLUSTER_ETCD_PEER_PORT=22380
CLUSTER_API_PORT=16443
CLUSTER_NODE=fluid-node
CLUSTER_POD_CIDR=10.88.0.0/16
CLUSTER_SERVICE_CIDR=10.96.0.0/24   # 10.96.0.1 is the `kubernetes` Service, in the certificate
CLUSTER_BRIDGE=fluid-cni0
CLUSTER_DUMMY_IF=fluid-node0        # only where the machine has no global IPv4 address
CLUSTER_DUMMY_IP=172.31.255.1
CLUSTER_KUBELET_DIR=/var/lib/kubelet
# The references the chart (sidecars.provisioner.image) and the tests use.
CLUSTER_PAUSE_IMAGE=fluid-test.local/pause:1
CLUSTER_BUSYBOX_IMAGE=fluid-test.local/busybox:1
CLUSTER_PAUSE_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../tests/pause" && pwd)"

cluster_dir() { echo "$FLUID_SERVICES_DIR/cluster"; }
# The chart's sidecars.provisioner.image (kube.sh, sourced after this file, sets the version).
cluster_provisioner_image() { echo "registry.k8s.io/sig-storage/csi-provisioner:$CSI_PROVISIONER_VERSION"; }
cluster_run() { echo /run/fluid-cluster; }
cluster_sock() { echo "$(cluster_run)/containerd.sock"; }
cluster_ctr() { ctr --address "$(cluster_sock)" -n k8s.io "$@"; }
cluster_kubectl() { kubectl --kubeconfig "$(cluster_dir)/kubeconfig" "$@"; }

cluster_up() {
  local dir; dir="$(cluster_dir)"
  if cluster_running && cluster_node_ready; then
    cluster_images_present || cluster_images_import
    return 0
  fi
  cluster_down
  ports_free cluster "$CLUSTER_ETCD_PORT" "$CLUSTER_ETCD_PEER_PORT" 10248 10249 10256 10257 10259
  kube_install
  apt_install containerd runc containernetworking-plugins iptables busybox-static umoci socat
  command -v kubectl >/dev/null || apt_install kubernetes-client
  mkdir -p "$dir" "$(cluster_run)"
  local ip; ip="$(cluster_node_ip)"
  cluster_pki "$ip"
  cluster_images_build

  etcd_start cluster "$dir" "$CLUSTER_ETCD_PORT" "$CLUSTER_ETCD_PEER_PORT" || cluster_fail
  local args; mapfile -t args < <(cluster_apiserver_args "$ip")
  apiserver_start cluster "$dir" "https://$ip:$CLUSTER_API_PORT" "${args[@]}" || cluster_fail

  cluster_containerd_start
  cluster_images_import
  cluster_start kube-controller-manager controller-manager \
    --kubeconfig="$dir/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$dir/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$dir/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=10257 --leader-elect=false \
    --controllers='*' --use-service-account-credentials=true \
    --service-account-private-key-file="$dir/pki/sa.key" --root-ca-file="$dir/pki/ca.crt" \
    --service-cluster-ip-range="$CLUSTER_SERVICE_CIDR"
  cluster_start kube-scheduler scheduler \
    --kubeconfig="$dir/scheduler.kubeconfig" \
    --authentication-kubeconfig="$dir/scheduler.kubeconfig" \
    --authorization-kubeconfig="$dir/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=10259 --leader-elect=false
  cluster_kube_proxy_config
  cluster_forward_s3 "$ip"
  cluster_start kube-proxy proxy --config="$dir/kube-proxy.yaml" --hostname-override="$CLUSTER_NODE"
  cluster_kubelet_config "$ip"
  cluster_claim "$CLUSTER_KUBELET_DIR"
  cluster_claim /var/lib/fluid
  # Bidirectional mount propagation (the node plugin's FUSE and bind mounts reaching the
  # kubelet and the pods) needs the host's mounts to be shared, as systemd makes them; this
  # machine's init leaves / private.
  findmnt -no PROPAGATION / | grep -q shared || mount --make-rshared / || die "cluster: mount --make-rshared / failed"
  cluster_start kubelet kubelet --config="$dir/kubelet.yaml" --kubeconfig="$dir/kubelet.kubeconfig" \
    --hostname-override="$CLUSTER_NODE" --node-ip="$ip"
  if ! wait_for "cluster: node $CLUSTER_NODE Ready" 180 "$dir/kubelet.log" cluster_node_ready; then
    cluster_fail
  fi
  # Pods need their namespace's `default` ServiceAccount, which the controller-manager makes
  # a moment after the namespace exists.
  wait_for "cluster: ServiceAccount default/default" 60 "$dir/controller-manager.log" \
    cluster_kubectl get serviceaccount default -n default || cluster_fail
}

cluster_fail() {
  log "cluster: bring-up failed; logs in $(cluster_dir)"
  cluster_down
  exit 1
}

# The processes of the cluster, in the order they are stopped.
CLUSTER_PROCESSES=(kubelet proxy s3-forward scheduler controller-manager containerd apiserver etcd)

# SeaweedFS's S3 port at NODE_IP too, for the pods of the pod network (the controller walks a
# Dataset's store for its size): the test servers listen on 127.0.0.1 only, which is each pod's
# own loopback.
cluster_forward_s3() {
  local ip="$1" dir; dir="$(cluster_dir)"
  spawn "$dir/s3-forward.log" "$dir/s3-forward.pid" \
    socat "TCP-LISTEN:$SEAWEEDFS_S3_PORT,bind=$ip,reuseaddr,fork" "TCP:127.0.0.1:$SEAWEEDFS_S3_PORT"
}

cluster_running() {
  local p
  for p in "${CLUSTER_PROCESSES[@]}"; do pid_alive "$(cluster_dir)/$p.pid" || return 1; done
}

cluster_node_ready() {
  [ "$(cluster_kubectl get node "$CLUSTER_NODE" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# cluster_start BINARY NAME ARG...: BINARY from the Kubernetes build, its log NAME.log.
cluster_start() {
  local bin="$1" name="$2" dir; dir="$(cluster_dir)"; shift 2
  spawn "$dir/$name.log" "$dir/$name.pid" "$FLUID_SERVICES_DIR/bin/$bin" "$@"
  sleep 0.5
  pid_alive "$dir/$name.pid" || { tail -n 20 "$dir/$name.log" >&2; log "cluster: $bin exited at once"; cluster_fail; }
}

# The address the apiserver and the kubelet listen on: the machine's first global IPv4 address,
# else a dummy interface's (made here, removed by down).
cluster_node_ip() {
  local ip
  ip="$(ip -4 -o addr show scope global 2>/dev/null | grep -v " $CLUSTER_BRIDGE " | awk '{print $4}' | cut -d/ -f1 | head -n 1)"
  if [ -z "$ip" ]; then
    ip link add "$CLUSTER_DUMMY_IF" type dummy 2>/dev/null || true
    ip addr add "$CLUSTER_DUMMY_IP/32" dev "$CLUSTER_DUMMY_IF" 2>/dev/null || true
    ip link set "$CLUSTER_DUMMY_IF" up || die "cluster: no global IPv4 address and no dummy interface"
    ip="$CLUSTER_DUMMY_IP"
  fi
  echo "$ip"
}

cluster_apiserver_args() {
  local ip="$1" dir; dir="$(cluster_dir)"
  local pki="$dir/pki"
  printf '%s\n' \
    --bind-address="$ip" \
    --secure-port="$CLUSTER_API_PORT" \
    --advertise-address="$ip" \
    --etcd-servers="http://127.0.0.1:$CLUSTER_ETCD_PORT" \
    --client-ca-file="$pki/ca.crt" \
    --tls-cert-file="$pki/apiserver.crt" \
    --tls-private-key-file="$pki/apiserver.key" \
    --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction \
    --service-cluster-ip-range="$CLUSTER_SERVICE_CIDR" \
    --enable-aggregator-routing=true \
    --allow-privileged=true \
    --profiling=false
}

# Certificates of every component, made again when the node address changed. The kubelet's
# serving certificate is its own self-signed one (the apiserver does not verify it here).
cluster_pki() {
  local ip="$1" dir pki; dir="$(cluster_dir)"; pki="$dir/pki"
  if [ "$(cat "$pki/node-ip" 2>/dev/null)" != "$ip" ]; then
    rm -rf "$pki" "$pki.tmp" && mkdir -p "$pki.tmp" && chmod 700 "$pki.tmp"
    (
      set -e
      pki_apiserver "$pki.tmp" fluid-test-cluster-ca "IP:$ip,IP:127.0.0.1,IP:10.96.0.1"
      pki_sign "$pki.tmp" apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
      # The names the bootstrap RBAC roles and the Node authorizer know.
      pki_sign "$pki.tmp" kubelet "/O=system:nodes/CN=system:node:$CLUSTER_NODE" clientAuth
      pki_sign "$pki.tmp" controller-manager "/CN=system:kube-controller-manager" clientAuth
      pki_sign "$pki.tmp" scheduler "/CN=system:kube-scheduler" clientAuth
      pki_sign "$pki.tmp" kube-proxy "/CN=system:kube-proxy" clientAuth
      echo "$ip" > "$pki.tmp/node-ip"
    ) || die "cluster: making certificates failed"
    mv "$pki.tmp" "$pki"
  fi
  local server="https://$ip:$CLUSTER_API_PORT" c
  write_kubeconfig "$dir/kubeconfig" "$server" "$pki" admin
  for c in kubelet controller-manager scheduler kube-proxy; do
    write_kubeconfig "$dir/$c.kubeconfig" "$server" "$pki" "$c"
  done
}

cluster_containerd_start() {
  local dir; dir="$(cluster_dir)"
  mkdir -p "$dir/cni" "$dir/containerd"
  cat > "$dir/cni/10-fluid-test.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "fluid-test",
  "plugins": [
    {
      "type": "bridge", "bridge": "$CLUSTER_BRIDGE", "isGateway": true, "ipMasq": true,
      "hairpinMode": true,
      "ipam": { "type": "host-local", "ranges": [[{ "subnet": "$CLUSTER_POD_CIDR" }]],
                "routes": [{ "dst": "0.0.0.0/0" }] }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
  cat > "$dir/containerd.toml" <<EOF
version = 2
root = "$dir/containerd"
state = "$(cluster_run)/containerd"
[grpc]
  address = "$(cluster_sock)"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$CLUSTER_PAUSE_IMAGE"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni"
EOF
  spawn "$dir/containerd.log" "$dir/containerd.pid" containerd --config "$dir/containerd.toml"
  wait_for "cluster: containerd" 30 "$dir/containerd.log" cluster_ctr version || cluster_fail
}

cluster_kube_proxy_config() {
  local dir; dir="$(cluster_dir)"
  cat > "$dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $dir/kube-proxy.kubeconfig
mode: iptables
clusterCIDR: $CLUSTER_POD_CIDR
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack:
  # Leave the machine's conntrack table size alone.
  maxPerCore: 0
EOF
}

cluster_kubelet_config() {
  local ip="$1" dir; dir="$(cluster_dir)"
  cat > "$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $ip
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
containerRuntimeEndpoint: unix://$(cluster_sock)
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: $dir/pki/ca.crt
authorization:
  mode: AlwaysAllow
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
serializeImagePulls: false
# 100: no image garbage collection. The images the cluster provides are imported once, at up;
# when other work filled the disk to 99 % (make bench's caches), the kubelet deleted them, pause
# among them, and no pod could start after.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
EOF
}

# The three images the cluster itself provides, as OCI archives in $dir/images; each is made
# again only when what it is built from changed.
cluster_images_build() {
  local dir; dir="$(cluster_dir)"
  mkdir -p "$dir/images" "$FLUID_SERVICES_DIR/bin"
  local root

  # pause: tests/pause, a static Go binary.
  if [ ! -s "$dir/images/pause.tar" ] || [ "$(cat "$dir/images/pause.stamp" 2>/dev/null)" != "$(cluster_pause_stamp)" ]; then
    root="$(mktemp -d)"
    (cd "$CLUSTER_PAUSE_SRC" && CGO_ENABLED=0 GOTOOLCHAIN=local go build -trimpath -ldflags "-s -w" -o "$root/pause" .) \
      || die "cluster: building tests/pause failed"
    oci_archive "$CLUSTER_PAUSE_IMAGE" "$root" "$dir/images/pause.tar" --config.entrypoint /pause
    rm -rf "$root"
    cluster_pause_stamp > "$dir/images/pause.stamp"
  fi

  # busybox: Debian's static busybox with its applets linked in /bin.
  if [ ! -s "$dir/images/busybox.tar" ]; then
    root="$(mktemp -d)"
    mkdir -p "$root/bin" "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    local a
    for a in $("$root/bin/busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"; done
    oci_archive "$CLUSTER_BUSYBOX_IMAGE" "$root" "$dir/images/busybox.tar" --config.cmd sh
    rm -rf "$root"
  fi

  # csi-provisioner: built with the Kubernetes commands (kube_build).
  local prov="$FLUID_SERVICES_DIR/bin/csi-provisioner"
  if [ ! -s "$dir/images/csi-provisioner.tar" ] || [ "$prov" -nt "$dir/images/csi-provisioner.tar" ]; then
    root="$(mktemp -d)"
    cp "$prov" "$root/csi-provisioner"
    oci_archive "$(cluster_provisioner_image)" "$root" "$dir/images/csi-provisioner.tar" --config.entrypoint /csi-provisioner
    rm -rf "$root"
  fi
}
cluster_pause_stamp() { cat "$CLUSTER_PAUSE_SRC/go.mod" "$CLUSTER_PAUSE_SRC/main.go" | sha256sum; }

# Whether containerd still has the three images (a kubelet with image GC on, or a hand, may
# have removed them; without pause no pod starts).
cluster_images_present() {
  local listed ref
  listed="$(cluster_ctr images ls -q 2>/dev/null)" || return 1
  for ref in "$CLUSTER_PAUSE_IMAGE" "$CLUSTER_BUSYBOX_IMAGE" "$(cluster_provisioner_image)"; do
    grep -qxF "$ref" <<<"$listed" || return 1
  done
}

cluster_images_import() {
  local dir f; dir="$(cluster_dir)"
  for f in pause busybox csi-provisioner; do
    cluster_ctr images import "$dir/images/$f.tar" >/dev/null || die "cluster: importing the $f image failed"
  done
}

cluster_down() {
  local dir; dir="$(cluster_dir)"
  [ -d "$dir" ] || return 0
  # The kubelet first, so that it restarts nothing; then every container of the node.
  stop_pid "$dir/kubelet.pid" TERM 10
  if [ -S "$(cluster_sock)" ]; then
    local c
    for c in $(cluster_ctr tasks list -q 2>/dev/null); do cluster_ctr tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true; done
    sleep 1
    for c in $(cluster_ctr tasks list -q 2>/dev/null); do cluster_ctr tasks delete -f "$c" >/dev/null 2>&1 || true; done
    for c in $(cluster_ctr containers list -q 2>/dev/null); do cluster_ctr containers delete "$c" >/dev/null 2>&1 || true; done
  fi
  local p
  for p in "${CLUSTER_PROCESSES[@]:1}"; do stop_pid "$dir/$p.pid" TERM 10; done
  # Shims whose containerd is gone, and fluid-fuse daemons that the node plugin moved out of its
  # pod (they run in the fluid-fuse cgroup, outside every pod).
  cluster_kill_own_shims
  cluster_kill_detached_daemons
  local claimed; mapfile -t claimed < <(cluster_claimed "$CLUSTER_KUBELET_DIR" /var/lib/fluid)
  cluster_unmount_under "${claimed[@]}" "$dir/containerd" "$(cluster_run)"
  [ -x "$FLUID_SERVICES_DIR/bin/kube-proxy" ] && "$FLUID_SERVICES_DIR/bin/kube-proxy" --cleanup >/dev/null 2>&1 || true
  ip link del "$CLUSTER_BRIDGE" 2>/dev/null || true
  ip link del "$CLUSTER_DUMMY_IF" 2>/dev/null || true
  # The node plugin's records (the chart's node.stateDir) describe volumes of this cluster,
  # whose etcd the next up starts empty.
  rm -rf "$dir/etcd-data" /var/lib/cni/networks/fluid-test "$(cluster_run)"
  if [ -n "$(cluster_claimed /var/lib/fluid)" ]; then rm -rf /var/lib/fluid/node; fi
}

# cluster_claim DIR: the cluster's kubelet and node plugin use DIR, a path of the host. One that
# does not exist is made and recorded as this cluster's, so `down` may unmount and remove what
# is under it; one that exists already (a kubelet of this machine?) is used, and left alone.
cluster_claim() {
  local claimed; claimed="$(cluster_dir)/claimed-paths"
  if ! grep -qxF "$1" "$claimed" 2>/dev/null; then
    if [ -e "$1" ]; then
      echo "[services] cluster: $1 was not made by these scripts: 'down' leaves what is under it alone" >&2
      return 0
    fi
    echo "$1" >>"$claimed"
  fi
  mkdir -p "$1"
}

# cluster_claimed DIR...: those of the DIRs that cluster_claim made, one per line.
cluster_claimed() {
  local d
  for d in "$@"; do grep -xF "$d" "$(cluster_dir)/claimed-paths" 2>/dev/null || true; done
}

# The shims of this cluster's containerd: those whose `-address` argument is its socket, exactly
# (a pattern could match the shims of another containerd on a developer's machine).
cluster_kill_own_shims() {
  local sock cmdline pid
  sock="$(cluster_sock)"
  for cmdline in /proc/[0-9]*/cmdline; do
    pid="${cmdline#/proc/}"; pid="${pid%/cmdline}"
    tr '\0' '\n' <"$cmdline" 2>/dev/null | awk -v s="$sock" '
      NR == 1 && $0 !~ /(^|\/)containerd-shim-runc-v2$/ { exit 1 }
      prev == "-address" && $0 == s { found = 1 }
      { prev = $0 }
      END { exit !found }' && kill -9 "$pid" 2>/dev/null || true
  done
}

# The fluid-fuse processes in a `fluid-fuse` cgroup of any hierarchy (see csi-node's
# supervisor::cgroup): daemons of node plugin pods, which outlive those pods by design.
cluster_kill_detached_daemons() {
  local f pid
  for f in /sys/fs/cgroup/*/fluid-fuse/cgroup.procs /sys/fs/cgroup/fluid-fuse/cgroup.procs; do
    [ -f "$f" ] || continue
    for pid in $(cat "$f"); do kill -9 "$pid" 2>/dev/null || true; done
  done
}

# cluster_unmount_under DIR...: lazily unmounts every mount at or below each DIR, deepest first.
cluster_unmount_under() {
  local d m
  for d in "$@"; do
    awk -v d="$d" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r | uniq |
      while read -r m; do umount -l "$m" 2>/dev/null || true; done
  done
}

cluster_env() {
  local ip; ip="$(cat "$(cluster_dir)/pki/node-ip" 2>/dev/null || true)"
  echo "export FLUID_CLUSTER_KUBECONFIG=$(cluster_dir)/kubeconfig"
  echo "export FLUID_CLUSTER_NODE=$CLUSTER_NODE"
  echo "export FLUID_CLUSTER_NODE_IP=$ip"
  echo "export FLUID_CLUSTER_CONTAINERD=$(cluster_sock)"
  echo "export FLUID_CLUSTER_BUSYBOX_IMAGE=$CLUSTER_BUSYBOX_IMAGE"
  # SeaweedFS as every pod reaches it (see cluster_forward_s3).
  echo "export FLUID_CLUSTER_S3_ENDPOINT=http://$ip:$SEAWEEDFS_S3_PORT"
}
