# helm: the Helm CLI (built from the Go module proxy) and kubernetes-validate (from PyPI, with the
# Kubernetes JSON schemas bundled, so validating needs no network), for the chart's test
# (tests/tests/cluster/chart.rs). Nothing runs; sourced by services.sh.
#
# - helm into $FLUID_SERVICES_DIR/bin/helm (helm.sh/helm/v3 has no `replace` in its go.mod, so
#   `go install ...@version` works), linked with the version stamps of helm's own release build;
#   rebuilt when they change. Without them `helm template` and `helm lint` assume Kubernetes
#   v1.20 and refuse charts with a newer kubeVersion.
# - kubernetes-validate into its own virtualenv, $FLUID_SERVICES_DIR/helm/venv.

HELM_VERSION=v3.22.0
# The Kubernetes release helm assumes without a cluster: its Makefile derives it from the
# k8s.io/client-go it requires (v0.37.x at v3.22.0 -> 1.37).
HELM_K8S_MINOR=37
KUBERNETES_VALIDATE_VERSION=1.37.0

helm_dir() { echo "$FLUID_SERVICES_DIR/helm"; }
helm_bin() { echo "$FLUID_SERVICES_DIR/bin/helm"; }
helm_validate_bin() { echo "$(helm_dir)/venv/bin/kubernetes-validate"; }

helm_ldflags() {
  local f="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" pkg
  for pkg in pkg/chartutil pkg/lint/rules; do
    f+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$HELM_K8S_MINOR"
  done
  echo "$f"
}

helm_up() {
  local bin; bin="$(helm_bin)"
  if ! { [ -x "$bin" ] && [ "$(cat "$bin.stamp" 2>/dev/null)" = "$(helm_ldflags)" ]; }; then
    command -v go >/dev/null || die "helm: Go is needed to build it and is not installed"
    log "building helm $HELM_VERSION (first time: downloads its modules and compiles for a few minutes)"
    mkdir -p "$(dirname "$bin")" "$(helm_dir)"
    rm -f "$bin.stamp"
    if ! GOBIN="$(dirname "$bin")" GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 \
        nice -n 10 go install -trimpath -ldflags "$(helm_ldflags)" \
        "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >"$(helm_dir)/build.log" 2>&1; then
      tail -n 40 "$(helm_dir)/build.log" >&2
      die "helm: go install failed; see $(helm_dir)/build.log"
    fi
    [ "$("$bin" version --template '{{.Version}}' 2>/dev/null)" = "$HELM_VERSION" ] \
      || die "helm: the built $bin does not report $HELM_VERSION"
    helm_ldflags > "$bin.stamp"
  fi
  local venv; venv="$(helm_dir)/venv"
  # Not `pip show | grep -q`: grep quitting early fails the pipe under pipefail.
  if [ "$("$venv/bin/kubernetes-validate" --version 2>/dev/null)" != "$KUBERNETES_VALIDATE_VERSION" ]; then
    log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION"
    mkdir -p "$(helm_dir)"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2 || die "helm: python3 -m venv failed"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" >&2 \
      || die "helm: installing kubernetes-validate failed"
  fi
  [ -x "$(helm_validate_bin)" ] || die "helm: kubernetes-validate is installed but $(helm_validate_bin) is missing"
}

helm_down() { :; }

helm_env() {
  echo "export FLUID_HELM=$(helm_bin)"
  echo "export FLUID_KUBERNETES_VALIDATE=$(helm_validate_bin)"
}
