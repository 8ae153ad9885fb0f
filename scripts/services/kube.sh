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

KUBE_VERSION=v1.37.2            # must match tests/kube-apiserver/go.mod
KUBE_PORT=6443
KUBE_ETCD_PORT=12379
KUBE_ETCD_PEER_PORT=12380
KUBE_SERVICE_CIDR=10.0.0.0/24   # its first address, 10.0.0.1, is in the serving certificate
KUBE_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../tests/kube-apiserver" && pwd)"

kube_dir() { echo "$FLUID_SERVICES_DIR/kube"; }
kube_bin() { echo "$FLUID_SERVICES_DIR/bin/kube-apiserver"; }
kube_etcd_bin() { echo /usr/bin/etcd; }

kube_up() {
  local dir; dir="$(kube_dir)"
  if pid_alive "$dir/etcd.pid" && pid_alive "$dir/apiserver.pid" && kube_ready; then return 0; fi
  kube_down
  local p
  for p in "$KUBE_PORT" "$KUBE_ETCD_PORT" "$KUBE_ETCD_PEER_PORT"; do
    if tcp_open 127.0.0.1 "$p"; then die "kube: port $p is taken by a process this script did not start"; fi
  done
  [ -x "$(kube_etcd_bin)" ] || apt_install etcd-server
  [ -x "$(kube_etcd_bin)" ] || die "kube: etcd-server is installed but $(kube_etcd_bin) is missing"
  command -v curl >/dev/null || apt_install curl
  command -v openssl >/dev/null || apt_install openssl
  kube_build
  mkdir -p "$dir"
  kube_pki
  kube_kubeconfig

  rm -rf "$dir/etcd-data"
  # Not a job-control shell, so $! is the server's own pid (setsid execs without forking).
  setsid "$(kube_etcd_bin)" --name fluid --data-dir "$dir/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$KUBE_ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$KUBE_ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$KUBE_ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$KUBE_ETCD_PEER_PORT" \
    --initial-cluster "fluid=http://127.0.0.1:$KUBE_ETCD_PEER_PORT" --initial-cluster-state new \
    --logger zap --log-outputs stderr --enable-v2=false \
    </dev/null >"$dir/etcd.log" 2>&1 &
  echo $! > "$dir/etcd.pid"
  if ! wait_for "kube: etcd" 30 "$dir/etcd.log" kube_etcd_started || ! kube_etcd_ready; then
    kube_down
    die "kube: etcd did not start; see $dir/etcd.log"
  fi

  local args; mapfile -t args < <(kube_apiserver_args)
  setsid "$(kube_bin)" "${args[@]}" </dev/null >"$dir/apiserver.log" 2>&1 &
  echo $! > "$dir/apiserver.pid"
  if ! wait_for "kube: kube-apiserver" 120 "$dir/apiserver.log" kube_apiserver_started || ! kube_ready; then
    pid_alive "$dir/apiserver.pid" || { log "kube: kube-apiserver exited; last lines of $dir/apiserver.log:"; tail -n 30 "$dir/apiserver.log" >&2; }
    log "kube: last lines of $dir/etcd.log:"; tail -n 10 "$dir/etcd.log" >&2
    kube_down
    die "kube: kube-apiserver did not become ready; see $dir/apiserver.log"
  fi
}

kube_etcd_ready() { [[ "$(curl -sf --max-time 2 "http://127.0.0.1:$KUBE_ETCD_PORT/health" 2>/dev/null)" == *'"health":"true"'* ]]; }
# Stop waiting early when the process died.
kube_etcd_started() { kube_etcd_ready || ! pid_alive "$(kube_dir)/etcd.pid"; }
kube_ready() {
  local dir; dir="$(kube_dir)"
  [ "$(curl -s --max-time 3 --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" \
    "https://127.0.0.1:$KUBE_PORT/readyz" 2>/dev/null)" = ok ]
}
kube_apiserver_started() { kube_ready || ! pid_alive "$(kube_dir)/apiserver.pid"; }

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

# Builds kube-apiserver from tests/kube-apiserver when the binary is missing or the wrapper module
# (or these build flags) changed since it was built.
kube_build() {
  local bin stamp want
  bin="$(kube_bin)"; stamp="$bin.stamp"
  want="$(kube_build_stamp)"
  if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return 0; fi
  command -v go >/dev/null || die "kube: Go is needed to build kube-apiserver and is not installed"
  local need gov
  need="$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$KUBE_SRC/go.mod")"
  gov="$(go env GOVERSION)"; gov="${gov#go}"
  if [ "$(printf '%s\n%s\n' "$need" "$gov" | sort -V | head -n1)" != "$need" ]; then
    die "kube: kube-apiserver $KUBE_VERSION needs Go >= $need, this machine has $gov"
  fi
  local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  local ldflags="-s -w" pkg key val
  # The version stamps of upstream's release build (hack/lib/version.sh); without them /version
  # says v0.0.0-master.
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    for key in gitVersion=$KUBE_VERSION gitMajor=1 gitMinor=$minor gitTreeState=clean; do
      ldflags+=" -X $pkg.$key"
    done
  done
  mkdir -p "$(dirname "$bin")" "$(kube_dir)"
  log "building kube-apiserver $KUBE_VERSION (the first build downloads ~85 MB of modules, ~550 MB unpacked, and compiles for about 8 minutes on 2 cores)"
  rm -f "$stamp"
  # GOFLAGS=-mod=readonly: go.sum is complete, nothing else is fetched or changed in the tree.
  if ! (cd "$KUBE_SRC" && CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN=local \
      nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$bin.tmp" k8s.io/kubernetes/cmd/kube-apiserver) \
      >"$(kube_dir)/build.log" 2>&1; then
    tail -n 40 "$(kube_dir)/build.log" >&2
    die "kube: building kube-apiserver failed; see $(kube_dir)/build.log"
  fi
  mv -f "$bin.tmp" "$bin"
  echo "$want" > "$stamp"
}

# What the binary is built from: go.mod less its comments, go.sum, the release.
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
    cd "$pki.tmp"
    key() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null; }
    key ca.key
    openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=fluid-test-kube-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -out ca.crt 2>/dev/null
    # sign NAME SUBJECT EXTENSIONS: a leaf certificate signed by the CA (rustls wants a v3,
    # non-CA leaf with the address in subjectAltName).
    sign() {
      key "$1.key"
      openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
      printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" "$3" > "$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 3650 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    sign apiserver "/CN=kube-apiserver" \
      "extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    sign admin "/O=system:masters/CN=admin" "extendedKeyUsage=clientAuth"
    key sa.key
    openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ca.srl
  ) || return 1
  mv "$pki.tmp" "$pki"
}

# An admin kubeconfig with everything inline (kube-rs, kubectl and client-go all read it).
kube_kubeconfig() {
  local dir pki; dir="$(kube_dir)"; pki="$dir/pki"
  b64() { base64 -w0 < "$1"; }
  cat > "$dir/kubeconfig.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: fluid-test
  cluster:
    server: https://127.0.0.1:$KUBE_PORT
    certificate-authority-data: $(b64 "$pki/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(b64 "$pki/admin.crt")
    client-key-data: $(b64 "$pki/admin.key")
contexts:
- name: fluid-test
  context:
    cluster: fluid-test
    user: admin
current-context: fluid-test
EOF
  chmod 600 "$dir/kubeconfig.tmp"
  mv -f "$dir/kubeconfig.tmp" "$dir/kubeconfig"
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
