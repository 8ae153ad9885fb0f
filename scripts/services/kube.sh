# Kubernetes: a real kube-apiserver with etcd on 127.0.0.1, for the controller's Kubernetes code
# (CRDs, reconcilers, the admission webhook). Sourced by services.sh.
#
# - etcd from Debian (etcd-server), client port 12379, peer port 12380 (not 2379/2380, so an etcd
#   that the Debian package may have started on its default ports never clashes); data wiped on
#   each up.
# - kube-apiserver built from the Go module proxy through tests/kube-apiserver (a wrapper module
#   that requires k8s.io/kubernetes and replaces each staging module with its published v0.x),
#   once, into $FLUID_SERVICES_DIR/bin/kube-apiserver; rebuilt when the wrapper changes.
# - https://127.0.0.1:6443, authentication by client certificate (admin: CN=admin,
#   O=system:masters), RBAC; kubeconfig at $FLUID_SERVICES_DIR/kube/kubeconfig.
# There is no controller-manager, scheduler or kubelet: objects are stored and validated but
# nothing acts on them (see the notes at kube_apiserver_args).

KUBE_VERSION=v1.37.2            # must match tests/kubernetes/go.mod
KUBE_PORT=6443
KUBE_ETCD_PORT=12379
KUBE_ETCD_PEER_PORT=12380
KUBE_SERVICE_CIDR=10.0.0.0/24   # its first address, 10.0.0.1, is in the serving certificate
KUBE_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../tests/kubernetes" && pwd)"

kube_dir() { echo "$FLUID_SERVICES_DIR/kube"; }
kube_bin() { echo "$FLUID_SERVICES_DIR/bin/kube-apiserver"; }
kube_etcd_bin() { echo /usr/bin/etcd; }

kube_up() {
  local dir; dir="$(kube_dir)"
  if pid_alive "$dir/etcd.pid" && pid_alive "$dir/apiserver.pid" && kube_ready; then return 0; fi
  kube_down
  ports_free kube "$KUBE_PORT" "$KUBE_ETCD_PORT" "$KUBE_ETCD_PEER_PORT"
  kube_install
  mkdir -p "$dir"
  kube_pki
  kube_kubeconfig
  etcd_start kube "$dir" "$KUBE_ETCD_PORT" "$KUBE_ETCD_PEER_PORT" || { kube_down; exit 1; }
  local args; mapfile -t args < <(kube_apiserver_args)
  apiserver_start kube "$dir" "https://127.0.0.1:$KUBE_PORT" "${args[@]}" || { kube_down; exit 1; }
}

# What every Kubernetes service needs on the machine: etcd, curl, openssl, the built commands.
kube_install() {
  [ -x "$(kube_etcd_bin)" ] || apt_install etcd-server
  [ -x "$(kube_etcd_bin)" ] || die "kube: etcd-server is installed but $(kube_etcd_bin) is missing"
  command -v curl >/dev/null || apt_install curl
  command -v openssl >/dev/null || apt_install openssl
  kube_build
}

# ports_free WHAT PORT...: fails naming the first port something else listens on (127.0.0.1).
ports_free() {
  local what="$1" p; shift
  for p in "$@"; do
    if tcp_open 127.0.0.1 "$p"; then die "$what: port $p is taken by a process this script did not start"; fi
  done
}

# etcd_start WHAT DIR CLIENT_PORT PEER_PORT: a fresh etcd on 127.0.0.1 with its data, log and
# pid file in DIR; waits until it answers.
etcd_start() {
  local what="$1" dir="$2" port="$3" peer="$4"
  rm -rf "$dir/etcd-data"
  spawn "$dir/etcd.log" "$dir/etcd.pid" "$(kube_etcd_bin)" --name fluid --data-dir "$dir/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "fluid=http://127.0.0.1:$peer" --initial-cluster-state new \
    --logger zap --log-outputs stderr --enable-v2=false
  if ! wait_for "$what: etcd" 30 "$dir/etcd.log" etcd_started "$dir" "$port" || ! etcd_ready "$port"; then
    log "$what: etcd did not start; see $dir/etcd.log"
    return 1
  fi
}
etcd_ready() { [[ "$(curl -sf --max-time 2 "http://127.0.0.1:$1/health" 2>/dev/null)" == *'"health":"true"'* ]]; }
# Stop waiting early when the process died.
etcd_started() { etcd_ready "$2" || ! pid_alive "$1/etcd.pid"; }

# apiserver_start WHAT DIR URL ARG...: kube-apiserver with ARGs, its log and pid file in DIR;
# waits until URL/readyz answers `ok` to DIR/pki's admin certificate.
apiserver_start() {
  local what="$1" dir="$2" url="$3"; shift 3
  spawn "$dir/apiserver.log" "$dir/apiserver.pid" "$(kube_bin)" "$@"
  if ! wait_for "$what: kube-apiserver" 120 "$dir/apiserver.log" apiserver_started "$dir" "$url" \
      || ! apiserver_ready "$dir" "$url"; then
    pid_alive "$dir/apiserver.pid" || { log "$what: kube-apiserver exited; last lines of $dir/apiserver.log:"; tail -n 30 "$dir/apiserver.log" >&2; }
    log "$what: last lines of $dir/etcd.log:"; tail -n 10 "$dir/etcd.log" >&2
    log "$what: kube-apiserver did not become ready; see $dir/apiserver.log"
    return 1
  fi
}
apiserver_ready() {
  [ "$(curl -s --max-time 3 --cacert "$1/pki/ca.crt" --cert "$1/pki/admin.crt" --key "$1/pki/admin.key" \
    "$2/readyz" 2>/dev/null)" = ok ]
}
apiserver_started() { apiserver_ready "$1" "$2" || ! pid_alive "$1/apiserver.pid"; }
kube_ready() { apiserver_ready "$(kube_dir)" "https://127.0.0.1:$KUBE_PORT"; }

# One flag per line.
# - ServiceAccount admission is off: it refuses pods until the controller-manager has made the
#   namespace's `default` ServiceAccount. StorageObjectInUseProtection is off: it puts finalizers
#   on PVCs and PVs that only the controller-manager removes, so deleted ones would stay.
#   Namespaces still get the `kubernetes` finalizer: a deleted namespace stays Terminating
#   (no namespace controller), so tests use fresh namespace names rather than re-creating one.
# - No garbage collector either: ownerReferences do not cascade deletes.
# - The endpoint reconciler is off: Endpoints may not hold a loopback address.
# - Webhooks must be registered with `clientConfig.url` (https://127.0.0.1:PORT/...): a
#   `service` reference needs the service's endpoints, which nothing maintains here.
kube_apiserver_args() {
  local pki; pki="$(kube_dir)/pki"
  printf '%s\n' \
    --bind-address=127.0.0.1 \
    --secure-port="$KUBE_PORT" \
    --advertise-address=127.0.0.1 \
    --etcd-servers="http://127.0.0.1:$KUBE_ETCD_PORT" \
    --client-ca-file="$pki/ca.crt" \
    --tls-cert-file="$pki/apiserver.crt" \
    --tls-private-key-file="$pki/apiserver.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --authorization-mode=RBAC \
    --service-cluster-ip-range="$KUBE_SERVICE_CIDR" \
    --disable-admission-plugins=ServiceAccount,StorageObjectInUseProtection \
    --endpoint-reconciler-type=none \
    --allow-privileged=true \
    --profiling=false
}

# The commands built from tests/kubernetes: the apiserver for the `kube` service, all of them for
# `cluster`. One `go build` makes them all: they share nearly every package, so six cost about
# twice one. csi-provisioner is among them because its own module cannot be built with
# `go install` (its go.mod has replace directives) and, built here, it shares the Kubernetes
# packages instead of compiling its own older copies (~9 minutes less on 2 cores).
KUBE_PACKAGES=(
  k8s.io/kubernetes/cmd/kube-apiserver
  k8s.io/kubernetes/cmd/kube-controller-manager
  k8s.io/kubernetes/cmd/kube-scheduler
  k8s.io/kubernetes/cmd/kubelet
  k8s.io/kubernetes/cmd/kube-proxy
  github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner
)
KUBE_COMMANDS=("${KUBE_PACKAGES[@]##*/}")
CSI_PROVISIONER_VERSION=v6.4.0   # must match tests/kubernetes/go.mod

# Builds the Kubernetes commands when one is missing or the wrapper module (or these build flags)
# changed since they were built.
kube_build() {
  local bindir stamp want c missing=0
  bindir="$FLUID_SERVICES_DIR/bin"; stamp="$bindir/kubernetes.stamp"
  want="$(kube_build_stamp)"
  for c in "${KUBE_COMMANDS[@]}"; do [ -x "$bindir/$c" ] || missing=1; done
  if [ $missing = 0 ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return 0; fi
  command -v go >/dev/null || die "kube: Go is needed to build Kubernetes and is not installed"
  local need gov
  need="$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$KUBE_SRC/go.mod")"
  gov="$(go env GOVERSION)"; gov="${gov#go}"
  if [ "$(printf '%s\n%s\n' "$need" "$gov" | sort -V | head -n1)" != "$need" ]; then
    die "kube: Kubernetes $KUBE_VERSION needs Go >= $need, this machine has $gov"
  fi
  local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  # main.version: csi-provisioner's --version (the Kubernetes commands have no such symbol).
  local ldflags="-s -w -X main.version=$CSI_PROVISIONER_VERSION" pkg key
  # The version stamps of upstream's release build (hack/lib/version.sh); without them /version
  # says v0.0.0-master, and the kubelet's version skew against the apiserver is unknown.
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    for key in gitVersion=$KUBE_VERSION gitMajor=1 gitMinor=$minor gitTreeState=clean; do
      ldflags+=" -X $pkg.$key"
    done
  done
  mkdir -p "$bindir/kubernetes.tmp" "$(kube_dir)"
  log "building Kubernetes $KUBE_VERSION and csi-provisioner $CSI_PROVISIONER_VERSION (${KUBE_COMMANDS[*]}; the first build downloads ~130 MB of modules and compiles for about 20 minutes on 2 cores)"
  rm -f "$stamp"
  # GOFLAGS=-mod=readonly: go.sum is complete, nothing else is fetched or changed in the tree.
  if ! (cd "$KUBE_SRC" && CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN=local \
      nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$bindir/kubernetes.tmp/" "${KUBE_PACKAGES[@]}") \
      >"$(kube_dir)/build.log" 2>&1; then
    tail -n 40 "$(kube_dir)/build.log" >&2
    die "kube: building Kubernetes failed; see $(kube_dir)/build.log"
  fi
  for c in "${KUBE_COMMANDS[@]}"; do mv -f "$bindir/kubernetes.tmp/$c" "$bindir/$c"; done
  rmdir "$bindir/kubernetes.tmp"
  rm -f "$bindir/kube-apiserver.stamp"
  echo "$want" > "$stamp"
}

# What the binaries are built from: go.mod less its comments, go.sum, the release.
kube_build_stamp() {
  (cd "$KUBE_SRC" && { grep -v '^[[:space:]]*//' go.mod; cat go.sum; echo "$KUBE_VERSION"; } | sha256sum)
}

# A CA, the serving certificate (127.0.0.1, localhost, the in-cluster names), the service-account
# key pair and the admin client certificate; made once, kept across ups.
kube_pki() {
  local pki; pki="$(kube_dir)/pki"
  local f
  for f in ca.crt ca.key apiserver.crt apiserver.key sa.key sa.pub admin.crt admin.key; do
    [ -s "$pki/$f" ] || { kube_pki_make "$pki" || die "kube: making certificates failed"; return 0; }
  done
}

kube_pki_make() {
  local pki="$1"
  rm -rf "$pki" "$pki.tmp" && mkdir -p "$pki.tmp" && chmod 700 "$pki.tmp"
  (
    set -e
    pki_apiserver "$pki.tmp" fluid-test-kube-ca "IP:127.0.0.1,IP:10.0.0.1"
  ) || return 1
  mv "$pki.tmp" "$pki"
}

# An admin kubeconfig with everything inline (kube-rs, kubectl and client-go all read it).
kube_kubeconfig() {
  local dir; dir="$(kube_dir)"
  write_kubeconfig "$dir/kubeconfig" "https://127.0.0.1:$KUBE_PORT" "$dir/pki" admin
}

kube_down() {
  local dir; dir="$(kube_dir)"
  # SIGTERM: the apiserver usually stops in about 3 s but has taken 15 s; its state is thrown
  # away anyway, so it gets 5 s before SIGKILL. etcd stops at once.
  stop_pid "$dir/apiserver.pid" TERM 5
  stop_pid "$dir/etcd.pid" TERM 10
  rm -rf "$dir/etcd-data"
}

kube_env() {
  echo "export FLUID_KUBECONFIG=$(kube_dir)/kubeconfig"
  echo "export FLUID_KUBE_APISERVER=https://127.0.0.1:$KUBE_PORT"
}
