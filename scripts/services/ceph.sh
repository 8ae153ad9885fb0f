# Ceph RADOS Gateway (S3 API) on 127.0.0.1:7480, sourced by scripts/services.sh.
# A throwaway single-node cluster: one mon, one memstore OSD, one radosgw, no mgr, no cephx.
# Everything (config, data, pid files, logs, admin sockets) lives in $FLUID_SERVICES_DIR/ceph;
# nothing in /etc/ceph or /var/lib/ceph is used. The data is in memory: `ceph_down` drops it.

CEPH_RGW_PORT=7480
CEPH_MON_PORT=6789
CEPH_RGW_UID=fluid
CEPH_RGW_ACCESS_KEY=fluidrgwaccess
CEPH_RGW_SECRET_KEY=fluidrgwsecret00000000000000000000000000

ceph__dir() { printf '%s/ceph' "$FLUID_SERVICES_DIR"; }

# ceph__cli SECONDS CMD ARGS...: runs a Ceph CLI against this cluster's config, bounded in time.
ceph__cli() {
  local t="$1" prog="$2"; shift 2
  timeout "$t" "$prog" -c "$(ceph__dir)/ceph.conf" "$@"
}

# ceph__running: all three daemons alive and RGW accepting connections (the quick path of ceph_up).
ceph__running() {
  local d; d="$(ceph__dir)"
  pid_alive "$d/run/mon.pid" && pid_alive "$d/run/osd.pid" && pid_alive "$d/run/rgw.pid" \
    && tcp_open 127.0.0.1 "$CEPH_RGW_PORT"
}

# ceph__fail MESSAGE LOGFILE...: reports a failed bring-up with the tails of the logs.
ceph__fail() {
  local msg="$1"; shift
  log "ceph: $msg"
  for f in "$@"; do
    [ -f "$f" ] || continue
    log "ceph: last lines of $f:"
    tail -n 30 "$f" >&2 || true
  done
  ceph__stop_all
  return 1
}

ceph__any_alive() {
  local p
  for p in "$@"; do kill -0 "$p" 2>/dev/null && return 0; done
  return 1
}

# ceph__stop_all: SIGTERM to all daemons at once, up to 2 s grace, then SIGKILL to all at once.
# (A clean shutdown takes them 2-6 s, which the throwaway data does not need.)
ceph__stop_all() {
  local d n pid pids=(); d="$(ceph__dir)"
  for n in rgw osd mon; do
    if pid="$(pid_of "$d/run/$n.pid")"; then pids+=("$pid"); fi
  done
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 20); do ceph__any_alive "${pids[@]}" || break; sleep 0.1; done
    kill -KILL "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 50); do ceph__any_alive "${pids[@]}" || break; sleep 0.1; done
  fi
  rm -f "$d/run/rgw.pid" "$d/run/osd.pid" "$d/run/mon.pid"
}

# ceph__start NAME LOGFILE CMD...: starts a daemon in the foreground (-f) in its own session, in the
# background, output to LOGFILE, and records its pid in run/NAME.pid.
ceph__start() {
  local name="$1" logf="$2"; shift 2
  local d; d="$(ceph__dir)"
  setsid "$@" </dev/null >>"$logf" 2>&1 &
  record_pid $! "$d/run/$name.pid"
  disown $! 2>/dev/null || true
}

# ceph__wait WHAT SECONDS PIDFILE CMD...: polls CMD until it succeeds; fails at once when the daemon
# in PIDFILE has exited, or after SECONDS.
ceph__wait() {
  local what="$1" secs="$2" pidf="$3"; shift 3
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    if ! pid_alive "$pidf"; then log "ceph: $what exited"; return 1; fi
    if [ "$(date +%s)" -ge "$deadline" ]; then log "ceph: $what not ready after ${secs}s"; return 1; fi
    sleep 0.2
  done
}

ceph__osd_up() {
  ceph__cli 10 ceph osd dump 2>/dev/null | grep -q '^osd\.0 up'
}

ceph__rgw_http() {
  if command -v curl >/dev/null 2>&1; then
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$CEPH_RGW_PORT/"
  else
    tcp_open 127.0.0.1 "$CEPH_RGW_PORT"
  fi
}

ceph__write_conf() {
  local d="$1" fsid="$2"
  cat >"$d/ceph.conf" <<EOF
[global]
fsid = $fsid
mon_initial_members = a
mon_host = v1:127.0.0.1:$CEPH_MON_PORT
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_msgr2 = false
ms_bind_ipv6 = false
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
keyring = $d/keyring
run_dir = $d/run
log_file = $d/log/\$cluster-\$name.log
log_to_stderr = false
err_to_stderr = true
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_max_pg_per_osd = 1000
mon_warn_on_pool_no_redundancy = false
mon_data_avail_warn = 1
mon_data_avail_crit = 0

[mon]
# Commit map changes at once instead of batching them for 1 s: RGW's start makes ~10 changes in a row.
paxos_propose_interval = 0.05
paxos_min_wait = 0.01
mon_data = $d/mon/\$cluster-\$id
admin_socket = $d/run/\$cluster-\$name.asok

[osd]
osd_data = $d/osd/\$cluster-\$id
osd_objectstore = memstore
memstore_device_bytes = 1610612736
# Fewer op threads: one OSD serving tests on a 2-core machine.
osd_op_num_shards = 2
osd_op_num_threads_per_shard = 2
admin_socket = $d/run/\$cluster-\$name.asok

[client.rgw.fluid]
rgw_frontends = beast endpoint=127.0.0.1:$CEPH_RGW_PORT
rgw_data = $d/rgw
rgw_thread_pool_size = 64
# Deleted and overwritten objects' tails are freed by the garbage collector: soon, as they hold memory.
rgw_gc_obj_min_wait = 30
rgw_gc_processor_period = 30
admin_socket = $d/run/\$cluster-\$name.asok
EOF
}

ceph_up() {
  local d; d="$(ceph__dir)"
  if ceph__running; then
    return 0
  fi

  apt_install ceph-common ceph-mon ceph-osd radosgw || { log "ceph: installing the Ceph packages failed"; return 1; }

  # Not (fully) running: stop what is left and start over from nothing.
  ceph__stop_all
  rm -rf "$d"
  local p
  for p in "$CEPH_MON_PORT" "$CEPH_RGW_PORT"; do
    if tcp_open 127.0.0.1 "$p"; then
      log "ceph: port 127.0.0.1:$p is taken by a process this script did not start; stop it first"
      return 1
    fi
  done
  mkdir -p "$d/run" "$d/log" "$d/mon/ceph-a" "$d/osd/ceph-0" "$d/rgw"
  local fsid; fsid="$(cat /proc/sys/kernel/random/uuid)"
  ceph__write_conf "$d" "$fsid"
  : >"$d/keyring"

  log "ceph: creating monitor"
  monmaptool --create --clobber --fsid "$fsid" --addv a "[v1:127.0.0.1:$CEPH_MON_PORT]" "$d/monmap" \
    >"$d/log/mkfs.log" 2>&1 \
    || { ceph__fail "monmaptool failed" "$d/log/mkfs.log"; return 1; }
  ceph-mon -c "$d/ceph.conf" --mkfs -i a --monmap "$d/monmap" >>"$d/log/mkfs.log" 2>&1 \
    || { ceph__fail "ceph-mon --mkfs failed" "$d/log/mkfs.log" "$d/log/ceph-mon.a.log"; return 1; }
  ceph__start mon "$d/log/mon.out" ceph-mon -c "$d/ceph.conf" -f -i a
  ceph__wait ceph-mon 30 "$d/run/mon.pid" ceph__cli 5 ceph mon stat \
    || { ceph__fail "ceph-mon did not come up" "$d/log/ceph-mon.a.log" "$d/log/mon.out"; return 1; }

  log "ceph: creating OSD"
  local osd_uuid osd_id
  osd_uuid="$(cat /proc/sys/kernel/random/uuid)"
  osd_id="$(ceph__cli 30 ceph osd new "$osd_uuid" 2>>"$d/log/mkfs.log")" \
    || { ceph__fail "ceph osd new failed" "$d/log/mkfs.log" "$d/log/ceph-mon.a.log"; return 1; }
  [ "$osd_id" = 0 ] || { ceph__fail "ceph osd new gave id '$osd_id', expected 0" "$d/log/mkfs.log"; return 1; }
  ceph-osd -c "$d/ceph.conf" -i 0 --mkfs --osd-uuid "$osd_uuid" >>"$d/log/mkfs.log" 2>&1 \
    || { ceph__fail "ceph-osd --mkfs failed" "$d/log/mkfs.log" "$d/log/ceph-osd.0.log"; return 1; }
  # --no-mon-config: with the config fetched from the mon, the OSD's first mon commands carry a
  # zero fsid under auth none ("wrong fsid") and it exits; the file holds all its settings anyway.
  ceph__start osd "$d/log/osd.out" ceph-osd -c "$d/ceph.conf" -f -i 0 --no-mon-config
  ceph__wait ceph-osd 60 "$d/run/osd.pid" ceph__osd_up \
    || { ceph__fail "ceph-osd did not come up" "$d/log/ceph-osd.0.log" "$d/log/osd.out"; return 1; }

  log "ceph: starting radosgw"
  ceph__start rgw "$d/log/rgw.out" radosgw -c "$d/ceph.conf" -f -n client.rgw.fluid --no-mon-config
  ceph__wait radosgw 90 "$d/run/rgw.pid" ceph__rgw_http \
    || { ceph__fail "radosgw did not answer on 127.0.0.1:$CEPH_RGW_PORT" "$d/log/ceph-client.rgw.fluid.log" "$d/log/rgw.out"; return 1; }

  if ! ceph__cli 30 radosgw-admin user info --uid "$CEPH_RGW_UID" >/dev/null 2>&1; then
    ceph__cli 60 radosgw-admin user create --uid "$CEPH_RGW_UID" --display-name "fluid tests" \
      --access-key "$CEPH_RGW_ACCESS_KEY" --secret-key "$CEPH_RGW_SECRET_KEY" >"$d/log/user.log" 2>&1 \
      || { ceph__fail "radosgw-admin user create failed" "$d/log/user.log"; return 1; }
  fi
  ceph__running || { ceph__fail "a daemon died during bring-up" "$d/log/mon.out" "$d/log/osd.out" "$d/log/rgw.out"; return 1; }
}

ceph_down() {
  ceph__stop_all || true
  rm -rf "$(ceph__dir)"
}

ceph_env() {
  echo "export FLUID_RGW_ENDPOINT=http://127.0.0.1:$CEPH_RGW_PORT"
  echo "export FLUID_RGW_ACCESS_KEY=$CEPH_RGW_ACCESS_KEY"
  echo "export FLUID_RGW_SECRET_KEY=$CEPH_RGW_SECRET_KEY"
  echo "export FLUID_RGW_REGION=default"
}
