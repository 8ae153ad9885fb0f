# Helpers shared by the service scripts. Sourced, not run.

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

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

# pid_alive PIDFILE: true when the process named in PIDFILE runs.
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pid PIDFILE SIGNAL SECONDS: sends SIGNAL, waits, then SIGKILL.
stop_pid() {
  local pidf="$1" sig="$2" secs="$3" pid
  [ -f "$pidf" ] || return 0
  pid="$(cat "$pidf")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "-$sig" "$pid" 2>/dev/null || true
    local i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt $(( secs * 10 )) ]; do sleep 0.1; i=$((i + 1)); done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidf"
}

# tcp_open HOST PORT: true when something accepts connections there.
tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
