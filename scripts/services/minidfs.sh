# MiniDFS: a real HDFS for the tests (one NameNode on 127.0.0.1:9820, one DataNode on loopback,
# permissions off), run by tests/minidfs (Hadoop's MiniDFSCluster, built with Maven; the jars are
# cached in ~/.m2). Sourced by services.sh.

MINIDFS_PORT=9820
MINIDFS_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../tests/minidfs" && pwd)"
# Serial GC and a capped heap: the live heap is ~35 MiB, the process ~220 MiB RSS; 2 cores here.
MINIDFS_JAVA_OPTS=(-Xms64m -Xmx512m -XX:+UseSerialGC -Djava.net.preferIPv4Stack=true)

minidfs_dir() { echo "$FLUID_SERVICES_DIR/minidfs"; }

# Java 17: Hadoop 3.4 does not run on Java 23+ (Subject.getSubject is gone), so never trust
# whatever `java` is first on PATH.
minidfs_java_home() {
  local d
  for d in /usr/lib/jvm/java-17-openjdk-*; do
    [ -x "$d/bin/javac" ] && { echo "$d"; return 0; }
  done
  return 1
}

minidfs_up() {
  local dir; dir="$(minidfs_dir)"
  if pid_alive "$dir/pid" && tcp_open 127.0.0.1 "$MINIDFS_PORT"; then return 0; fi
  minidfs_down
  if tcp_open 127.0.0.1 "$MINIDFS_PORT"; then
    die "minidfs: port $MINIDFS_PORT is taken by a process this script did not start"
  fi
  mkdir -p "$dir"
  minidfs_build
  rm -rf "$dir/data"
  local cp; cp="$MINIDFS_SRC/target/classes:$(cat "$MINIDFS_SRC/target/classpath.txt")"
  spawn "$dir/log" "$dir/pid" "$(minidfs_java_home)/bin/java" "${MINIDFS_JAVA_OPTS[@]}" -cp "$cp" \
    io.fluid.minidfs.Main --no-stdin "$dir/data" "$MINIDFS_PORT"
  if ! wait_for "minidfs" 120 "$dir/log" minidfs_started || ! minidfs_ready; then
    pid_alive "$dir/pid" || { log "minidfs exited; last lines of $dir/log:"; tail -n 30 "$dir/log" >&2; }
    minidfs_down
    die "minidfs did not start; see $dir/log"
  fi
}

minidfs_ready() { grep -q '^MINIDFS READY ' "$(minidfs_dir)/log" 2>/dev/null; }
# Stops the wait early when the JVM died.
minidfs_started() { minidfs_ready || ! pid_alive "$(minidfs_dir)/pid"; }

# Compiles Main and writes its classpath when either is missing, a jar on it is gone, or
# tests/minidfs changed since the last build.
minidfs_build() {
  local src="$MINIDFS_SRC" dir want jar
  dir="$(minidfs_dir)"
  want="$(cd "$src" && find pom.xml src -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum)"
  if [ -f "$src/target/classes/io/fluid/minidfs/Main.class" ] && [ -f "$src/target/classpath.txt" ] \
    && [ "$(cat "$src/target/build.stamp" 2>/dev/null)" = "$want" ]; then
    local missing=0
    while IFS= read -r jar; do [ -f "$jar" ] || missing=1; done < <(tr ':' '\n' < "$src/target/classpath.txt")
    [ $missing -eq 0 ] && return 0
  fi
  minidfs_java_home >/dev/null || apt_install openjdk-17-jdk-headless
  minidfs_java_home >/dev/null || die "minidfs: no Java 17 JDK under /usr/lib/jvm"
  command -v mvn >/dev/null || apt_install maven
  log "building minidfs with Maven (the first build downloads the Hadoop jars, ~110 MB)"
  rm -f "$src/target/build.stamp"
  if ! JAVA_HOME="$(minidfs_java_home)" mvn -B -q -f "$src/pom.xml" compile dependency:build-classpath \
      -Dmdep.outputFile="$src/target/classpath.txt" >"$dir/build.log" 2>&1; then
    tail -n 40 "$dir/build.log" >&2
    die "minidfs: Maven build failed; see $dir/build.log"
  fi
  echo "$want" > "$src/target/build.stamp"
}

minidfs_down() {
  local dir; dir="$(minidfs_dir)"
  # SIGTERM makes Main shut the cluster down (about 2 s); SIGKILL after 20 s.
  stop_pid "$dir/pid" TERM 20
  rm -rf "$dir/data"
}

minidfs_env() {
  echo "export FLUID_HDFS_URL=hdfs://127.0.0.1:$MINIDFS_PORT"
}
