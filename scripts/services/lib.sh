# Helpers shared by the service scripts. Sourced, not run.

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

# Where every service keeps its state, logs and downloads (scripts that source this file share
# the default).
export FLUID_SERVICES_DIR="${FLUID_SERVICES_DIR:-/var/tmp/fluid-services}"
mkdir -p "$FLUID_SERVICES_DIR"

# spawn LOGFILE PIDFILE CMD...: runs CMD in the background in its own session, with no input and
# its output in LOGFILE, and records it in PIDFILE. This is not a job-control shell, so $! is
# CMD's own pid (setsid execs without forking).
spawn() {
  local logf="$1" pidf="$2"; shift 2
  setsid "$@" </dev/null >"$logf" 2>&1 &
  record_pid $! "$pidf"
}

# A pid file holds "PID START": the pid and the process's start time (clock ticks after boot,
# field 22 of /proc/PID/stat). A pid alone is not a process: after a reboot, or on a machine
# restored from a copy of this directory, the pid in a stale file belongs to whatever runs now
# (once it was the MiniDFS that the cluster's `up` had just started, and `down` stopped it).

# proc_start PID: the start time of process PID; fails when there is none (or only its zombie).
proc_start() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  # The command name (field 2) may hold spaces; the fields after its ')' split safely, from the
  # state (field 3) on.
  # shellcheck disable=SC2086
  set -- ${stat##*) }
  [ "$1" != Z ] || return 1
  echo "${20}"
}

# record_pid PID PIDFILE
record_pid() {
  local start; start="$(proc_start "$1")" || start=gone
  echo "$1 $start" >"$2"
}

# pid_of PIDFILE: prints the pid when the process recorded in PIDFILE still runs; fails otherwise
# (no file, a dead process, or a pid that another process has taken since).
pid_of() {
  local pid start
  [ -f "$1" ] || return 1
  read -r pid start <"$1" || [ -n "$pid" ] || return 1
  [ -n "$start" ] && [ "$(proc_start "$pid")" = "$start" ] || return 1
  echo "$pid"
}

# The Go builds of test tools (Kubernetes, csi-provisioner, helm, csi-sanity) keep their module
# and build caches with the services, so a machine that keeps $FLUID_SERVICES_DIR (or a CI cache
# of it) compiles each of them once.
export GOMODCACHE="$FLUID_SERVICES_DIR/go/mod"
export GOCACHE="$FLUID_SERVICES_DIR/go/build"

# apt_install PKG...: installs the Debian packages that are missing, running `apt-get update` once.
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  if [ ! -f "$FLUID_SERVICES_DIR/.apt-updated" ]; then
    apt-get update -qq >&2 && touch "$FLUID_SERVICES_DIR/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# wait_for DESCRIPTION SECONDS LOGFILE CMD...: polls CMD until it succeeds; on timeout prints the log tail and fails.
wait_for() {
  local what="$1" secs="$2" logf="$3"; shift 3
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "$what not ready after ${secs}s; last lines of $logf:"
      tail -n 30 "$logf" >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.5
  done
}

# pid_alive PIDFILE: true when the process recorded in PIDFILE runs.
pid_alive() { pid_of "$1" >/dev/null; }

# stop_pid PIDFILE SIGNAL SECONDS: sends SIGNAL to the process recorded in PIDFILE, waits, then
# SIGKILL; removes PIDFILE. A pid that another process has taken is left alone.
stop_pid() {
  local pidf="$1" sig="$2" secs="$3" pid start
  [ -f "$pidf" ] || return 0
  if pid="$(pid_of "$pidf")"; then
    start="$(proc_start "$pid")"
    kill "-$sig" "$pid" 2>/dev/null || true
    local i=0
    while [ "$(proc_start "$pid")" = "$start" ] && [ $i -lt $(( secs * 10 )) ]; do sleep 0.1; i=$((i + 1)); done
    [ "$(proc_start "$pid")" = "$start" ] && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidf"
}

# tcp_open HOST PORT: true when something accepts connections there.
tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# A small PKI for the test clusters, with openssl. pki_ca DIR CN: a CA (ca.crt, ca.key) in DIR.
pki_ca() {
  pki_key "$1/ca.key"
  openssl req -x509 -new -key "$1/ca.key" -sha256 -days 3650 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$1/ca.crt" 2>/dev/null
}
pki_key() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null; }
# pki_sign DIR NAME SUBJECT USAGE [SANS]: NAME.crt and NAME.key, a leaf signed by DIR's CA
# (rustls wants a v3, non-CA leaf with the address in subjectAltName). USAGE: serverAuth,
# clientAuth or both, comma-separated; SANS: e.g. IP:127.0.0.1,DNS:localhost.
pki_sign() {
  local dir="$1" name="$2" subject="$3" usage="$4" sans="${5:-}"
  pki_key "$dir/$name.key"
  openssl req -new -key "$dir/$name.key" -subj "$subject" -out "$dir/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [ -z "$sans" ] || echo "subjectAltName=$sans"
  } > "$dir/$name.ext"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -sha256 -days 3650 -extfile "$dir/$name.ext" -out "$dir/$name.crt" 2>/dev/null
  rm -f "$dir/$name.csr" "$dir/$name.ext" "$dir/ca.srl"
}
# pki_apiserver DIR CA_CN SANS: what every test apiserver needs in DIR: a CA, the serving
# certificate for SANS, the admin client certificate (system:masters) and the service-account
# key pair.
pki_apiserver() {
  pki_ca "$1" "$2"
  pki_sign "$1" apiserver "/CN=kube-apiserver" serverAuth \
    "$3,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  pki_sign "$1" admin "/O=system:masters/CN=admin" clientAuth
  pki_keypair "$1" sa
}

# pki_keypair DIR NAME: NAME.key and NAME.pub (service-account token signing).
pki_keypair() {
  pki_key "$1/$2.key"
  openssl pkey -in "$1/$2.key" -pubout -out "$1/$2.pub" 2>/dev/null
}

# write_kubeconfig FILE SERVER PKI_DIR CERT_NAME: a kubeconfig with everything inline (kube-rs,
# kubectl and client-go all read it) that authenticates with PKI_DIR/CERT_NAME.crt.
write_kubeconfig() {
  local file="$1" server="$2" pki="$3" cert="$4"
  cat > "$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: fluid-test
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 < "$pki/ca.crt")
users:
- name: $cert
  user:
    client-certificate-data: $(base64 -w0 < "$pki/$cert.crt")
    client-key-data: $(base64 -w0 < "$pki/$cert.key")
contexts:
- name: fluid-test
  context:
    cluster: fluid-test
    user: $cert
current-context: fluid-test
EOF
  chmod 600 "$file.tmp"
  mv -f "$file.tmp" "$file"
}

# oci_archive REF ROOTFS OUT [UMOCI_CONFIG_ARG...]: the folder ROOTFS as a one-layer OCI image
# named REF, written as an OCI archive (an image layout in a tar) to OUT, which
# `ctr images import`, `skopeo copy oci-archive:` and registries accept. The arguments after
# OUT go to `umoci config` (entrypoint, cmd, env, labels). Needs root: files keep their owners.
oci_archive() {
  local ref="$1" rootfs="$2" out="$3"; shift 3
  local tag="${ref##*:}" work
  work="$(mktemp -d "${TMPDIR:-/tmp}/oci-archive.XXXXXX")"
  (
    set -e
    umoci init --layout "$work/oci"
    umoci new --image "$work/oci:$tag"
    umoci unpack --image "$work/oci:$tag" "$work/bundle" >/dev/null
    cp -a "$rootfs/." "$work/bundle/rootfs/"
    umoci repack --image "$work/oci:$tag" "$work/bundle"
    umoci config --image "$work/oci:$tag" "$@"
    umoci gc --layout "$work/oci"
    # The name under which `ctr images import` and registries know the image.
    python3 - "$work/oci/index.json" "$ref" <<'PY'
import json, sys
path, ref = sys.argv[1], sys.argv[2]
index = json.load(open(path))
for m in index["manifests"]:
    m.setdefault("annotations", {})["io.containerd.image.name"] = ref
json.dump(index, open(path, "w"))
PY
    mkdir -p "$(dirname "$out")"
    tar -C "$work/oci" -cf "$out.tmp" .
    mv "$out.tmp" "$out"
  )
  local rc=$?
  rm -rf "$work"
  return $rc
}
