# csi-sanity: the CSI conformance suite, built from the Go module proxy. Sourced by services.sh.

CSI_SANITY_VERSION=v5.4.0

csisanity_bin() { echo "$FLUID_SERVICES_DIR/bin/csi-sanity"; }

csisanity_up() {
  local bin; bin="$(csisanity_bin)"
  if [ -x "$bin" ] && "$bin" -version 2>&1 | grep -q "$CSI_SANITY_VERSION"; then return 0; fi
  command -v go >/dev/null || die "csi-sanity: Go is needed to build it and is not installed"
  log "building csi-sanity $CSI_SANITY_VERSION"
  mkdir -p "$(dirname "$bin")"
  # The version string is set at link time, as the project's own release build does.
  GOBIN="$(dirname "$bin")" GOFLAGS=-mod=mod \
    go install -ldflags "-X main.VERSION=$CSI_SANITY_VERSION" "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$CSI_SANITY_VERSION" >&2 \
    || die "csi-sanity: go install failed"
}

csisanity_down() { :; }

csisanity_env() { echo "export FLUID_CSI_SANITY=$(csisanity_bin)"; }
