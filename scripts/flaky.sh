#!/usr/bin/env bash
# Runs one test N times and prints how many runs passed: the check for a flaky test.
#
#   scripts/flaky.sh TEST N            e.g. scripts/flaky.sh metrics_are_served_in_prometheus_text 20
#
# TEST is a test's full name (as `cargo test -- --list` prints it, without the module path when
# it is unique). The workspace is built once; the test binary that holds TEST is then run N
# times with `--exact`, each run's output kept in target/flaky/TEST/RUN.log. Start the
# services the test needs first (`scripts/services.sh up`). FLAKY_LOAD=1 runs a CPU hog on
# every core beside it, since most flakes are races that load makes likelier.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -ne 2 || ! $2 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/flaky.sh TEST N   (N: how many runs, 1 or more)" >&2
  exit 2
fi
test_name=$1
runs=$2
CARGO=${CARGO:-cargo}

# The integration tests run the built daemons, which `cargo test` does not build.
$CARGO build --workspace --bins --quiet
mapfile -t binaries < <(
  $CARGO test --workspace --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["executable"] + "\t" + m["manifest_path"].rsplit("/", 1)[0])
'
)

# The binary (and the full name in it) that holds the test.
binary=""
full=""
for entry in "${binaries[@]}"; do
  b=${entry%%$'\t'*}
  found=$("$b" --list --format terse 2>/dev/null | sed -n 's/: test$//p' |
    grep -E "(^|::)${test_name}\$" || true)
  if [[ -n $found ]]; then
    if [[ -n $binary || $(wc -l <<<"$found") -gt 1 ]]; then
      echo "flaky.sh: $test_name names more than one test; give its module path too" >&2
      exit 2
    fi
    binary=$b
    package_dir=${entry#*$'\t'}
    full=$found
  fi
done
if [[ -z $binary ]]; then
  echo "flaky.sh: no test is named $test_name (see cargo test --workspace -- --list)" >&2
  exit 2
fi

hogs=()
load_note=""
if [[ ${FLAKY_LOAD:-0} == 1 ]]; then
  load_note=" (under load)"
  for _ in $(seq "$(nproc)"); do
    (while :; do :; done) &
    hogs+=($!)
  done
fi
stop_hogs() { [[ ${#hogs[@]} -eq 0 ]] || kill "${hogs[@]}" 2>/dev/null || true; }
trap stop_hogs EXIT

logs=target/flaky/$test_name
rm -rf "$logs"
mkdir -p "$logs"
passed=0
failed_runs=()
for run in $(seq "$runs"); do
  # From the package's folder, as cargo test runs it (tests may read paths relative to it).
  if (cd "$package_dir" && "$binary" --exact "$full" --nocapture) \
    >"$logs/$run.log" 2>&1; then
    passed=$((passed + 1))
    echo "run $run/$runs: passed"
  else
    failed_runs+=("$run")
    echo "run $run/$runs: FAILED (log: $logs/$run.log)"
  fi
done
echo "$full: $passed of $runs passed$load_note"
for run in "${failed_runs[@]}"; do
  echo "--- run $run, last lines:"
  tail -n 15 "$logs/$run.log"
done
[[ $passed -eq $runs ]]
