//! The `fluid-fuse` process of a volume: started in its own session with its log in a file,
//! waited for until it has mounted, watched and restarted with back-off when it dies, stopped
//! with SIGTERM then SIGKILL.

use super::*;

/// How often a daemon that is not our child (adopted after a restart) is checked for life.
const ADOPTED_POLL: Duration = Duration::from_millis(200);
/// How often the ready file is looked for while a daemon mounts.
const READY_POLL: Duration = Duration::from_millis(20);
/// How long a daemon gets to unmount and exit after SIGTERM, then after SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(10);
const KILL_GRACE: Duration = Duration::from_secs(5);
/// Longest wait between restart attempts of a daemon that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A daemon log larger than this is rotated to `.1`: when the daemon is started again, and
/// while it runs (checked every [`LOG_CHECK`], copy then truncate: the daemon writes with
/// `O_APPEND`, so its next line lands at the start of the emptied file).
const MAX_LOG: u64 = 8 << 20;
/// How often a running daemon's log size is checked.
const LOG_CHECK: Duration = Duration::from_secs(10);
/// Lines of the daemon's log quoted in an error.
const LOG_TAIL_LINES: usize = 20;
/// The generation of a volume being stopped: no watcher or retry loop ever matches it.
const STOPPING: u64 = u64::MAX;

impl Supervisor {
    /// Whether the record's daemon is alive: same pid, same start time, same boot, not a
    /// zombie.
    pub fn daemon_alive(&self, rec: &VolumeRecord) -> bool {
        let Some(pid) = rec.pid else { return false };
        if rec.boot_id.is_some() && rec.boot_id != self.boot_id {
            return false;
        }
        process_alive(pid, rec.pid_start)
    }

    /// Starts `fluid-fuse` for the volume at its staging path and waits until it has mounted.
    /// On success the slot's generation is new and a watcher supervises the daemon; on failure
    /// the daemon is killed and the error quotes the end of its log.
    pub async fn start_daemon(self: &Arc<Self>, slot: &Slot, vol: &mut Volume) -> Result<()> {
        let rec = &mut vol.record;
        let staging = rec.daemon_path().to_path_buf();
        let st = staging.clone();
        run_blocking("preparing the mount folder", move || prepare_staging(&st)).await?;
        match std::fs::remove_file(&rec.ready_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::io(
                    format!("removing {}", rec.ready_file.display()),
                    e,
                ));
            }
        }
        let log = open_log(&rec.log_file)?;
        let log_err = log
            .try_clone()
            .map_err(|e| Error::io(format!("opening {}", rec.log_file.display()), e))?;

        let mut cmd = tokio::process::Command::new(&self.fuse_binary);
        let mut command = fluid_volume::daemon::MountCommand {
            mountpoint: staging.clone(),
            dataset: rec.dataset_file.clone(),
            tiers: rec.tiers.clone(),
            block_size: rec.block_size,
            control: rec.control_socket.clone(),
            ready_file: rec.ready_file.clone(),
            keeper_socket: rec.keeper_socket(),
            peers: None,
        };
        if self.shares_caches()
            && let Some(dataset) = &rec.dataset
        {
            let file = self.state().peers_file(dataset);
            // The daemon reads it at start: at first it names no one but may (the members are
            // written within seconds).
            if !file.exists() {
                fluid_volume::atomic::write_if_changed(&file, b"", 0o644)
                    .map_err(|e| Error::Daemon(format!("{}: {e}", file.display())))?;
            }
            command.peers = Some(fluid_volume::daemon::PeerFlags {
                file,
                name: self.cfg.nodeid.clone(),
                dataset: dataset.clone(),
            });
            if let Some(token) = &self.cfg.cache_token {
                cmd.env(fluid_proto::cache_auth::TOKEN_ENV, token.as_str());
            }
        }
        cmd.args(command.args())
            .env(LOG_ENV, &self.log_filter)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let cgroup_procs = self
            .daemon_cgroup
            .as_ref()
            .map(|cg| cg.procs_files())
            .unwrap_or_default();
        let procs: Vec<i32> = cgroup_procs
            .iter()
            .map(std::os::fd::AsRawFd::as_raw_fd)
            .collect();
        // SAFETY: setsid(2) and write(2) are async-signal-safe; the descriptors are open in
        // the parent until after the spawn, and the buffer is a constant.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                // Best effort: `enter` below moves it (and says so) if this failed.
                for fd in &procs {
                    libc::write(*fd, b"0".as_ptr().cast(), 1);
                }
                Ok(())
            });
        }
        let spawned = cmd.spawn();
        drop(cgroup_procs);
        let mut child = spawned
            .map_err(|e| Error::Daemon(format!("starting {}: {e}", self.fuse_binary.display())))?;
        let Some(pid) = child.id() else {
            return Err(Error::Daemon("fluid-fuse exited at once".into()));
        };
        if let Some(cg) = &self.daemon_cgroup {
            // It moved itself before exec (see pre_exec); this is the check, and the move
            // if that failed: from now on a kill of the plugin's pod must not reach it.
            if let Err(e) = cg.enter(pid) {
                tracing::warn!(volume = %rec.volume_id, pid, "{e}; this daemon ends with the plugin's pod");
            }
        }
        // Recorded before the wait: a plugin that dies now still finds (and adopts) it.
        rec.pid = Some(pid);
        rec.pid_start = process_start(pid);
        rec.boot_id = self.boot_id.clone();
        rec.fuse_digest = self.fuse_digest.clone();
        if let Err(e) = self.state.save(rec) {
            kill_child(&mut child).await;
            return Err(e);
        }
        tracing::info!(volume = %rec.volume_id, pid, "started fluid-fuse at {}", staging.display());

        let timeout = self.cfg.ready_timeout;
        let deadline = Instant::now() + timeout;
        let failure = loop {
            if ready_file_names(&rec.ready_file, pid) {
                break None;
            }
            match child.try_wait() {
                Ok(Some(status)) => {
                    break Some(format!("fluid-fuse {} before it mounted", describe(status)));
                }
                Ok(None) => {}
                Err(e) => break Some(format!("waiting for fluid-fuse: {e}")),
            }
            if Instant::now() >= deadline {
                break Some(format!(
                    "fluid-fuse did not mount within {} (--ready-timeout)",
                    humantime::format_duration(timeout)
                ));
            }
            tokio::time::sleep(READY_POLL).await;
        };
        let failure = match failure {
            None if !rec.parked => self.attach_staging(rec).await.err().map(|e| e.to_string()),
            other => other,
        };
        if let Some(msg) = failure {
            kill_child(&mut child).await;
            let st = staging.clone();
            let _ = run_blocking("detaching the staging path", move || {
                mounts::detach_fluid(&st)
            })
            .await;
            rec.pid = None;
            rec.pid_start = None;
            let _ = self.state.save(rec);
            let tail = log_tail(&rec.log_file);
            return Err(Error::Daemon(format!(
                "volume {}: {msg}; the end of its log ({}):\n{tail}",
                rec.volume_id,
                rec.log_file.display()
            )));
        }
        let generation = self.next_generation();
        vol.generation = generation;
        vol.running = true;
        self.spawn_watcher(
            slot.clone(),
            vol.record.volume_id.clone(),
            generation,
            Daemon::Child(child),
            vol.record.log_file.clone(),
        );
        Ok(())
    }

    /// Stops the volume's daemon: SIGTERM (it unmounts the staging path), then SIGKILL.
    /// Its watcher will not restart it.
    pub async fn stop_daemon(&self, vol: &mut Volume) -> Result<()> {
        vol.generation = STOPPING;
        vol.running = false;
        let Some(pid) = vol.record.pid else {
            return Ok(());
        };
        if !self.daemon_alive(&vol.record) {
            vol.record.pid = None;
            return Ok(());
        }
        tracing::info!(volume = %vol.record.volume_id, pid, "stopping fluid-fuse");
        signal(pid, libc::SIGTERM);
        if !self.wait_gone(&vol.record, TERM_GRACE).await {
            tracing::warn!(volume = %vol.record.volume_id, pid, "fluid-fuse ignored SIGTERM; killing it");
            signal(pid, libc::SIGKILL);
            if !self.wait_gone(&vol.record, KILL_GRACE).await {
                return Err(Error::Daemon(format!(
                    "fluid-fuse pid {pid} of volume {} did not exit after SIGKILL",
                    vol.record.volume_id
                )));
            }
        }
        vol.record.pid = None;
        vol.record.pid_start = None;
        Ok(())
    }

    pub(super) async fn wait_gone(&self, rec: &VolumeRecord, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if !self.daemon_alive(rec) {
                if let Some(pid) = rec.pid {
                    reap(pid);
                }
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        !self.daemon_alive(rec)
    }

    pub(super) fn spawn_watcher(
        self: &Arc<Self>,
        slot: Slot,
        volume_id: String,
        generation: u64,
        daemon: Daemon,
        log_file: PathBuf,
    ) {
        let sup = self.clone();
        tokio::spawn(async move {
            let wait = daemon.wait();
            tokio::pin!(wait);
            let mut check = tokio::time::interval(LOG_CHECK);
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let how = loop {
                tokio::select! {
                    how = &mut wait => break how,
                    _ = check.tick() => {
                        let log = log_file.clone();
                        match tokio::task::spawn_blocking(move || rotate_log(&log, MAX_LOG)).await {
                            Ok(Ok(true)) => tracing::info!(volume = %volume_id, "fluid-fuse log rotated to {}", rotated(&log_file).display()),
                            Ok(Ok(false)) | Err(_) => {}
                            Ok(Err(e)) => tracing::warn!(volume = %volume_id, "rotating {}: {e}", log_file.display()),
                        }
                    }
                }
            };
            sup.restart_loop(slot, volume_id, generation, how, Duration::ZERO)
                .await;
        });
    }

    /// Restarts a volume's daemon until it works, unless the volume was meanwhile unstaged,
    /// stopped or restarted by someone else (its generation is no longer `expected`).
    pub(super) async fn restart_loop(
        self: Arc<Self>,
        slot: Slot,
        volume_id: String,
        expected: u64,
        how: String,
        mut delay: Duration,
    ) {
        let mut attempt: u32 = 0;
        loop {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let mut guard = slot.lock().await;
            let Some(vol) = guard.as_mut() else { return };
            if vol.generation != expected {
                return;
            }
            if attempt == 0 {
                tracing::warn!(volume = %volume_id, "fluid-fuse {how}; restarting it");
            }
            vol.running = false;
            let started = Instant::now();
            match self.start_daemon(&slot, vol).await {
                Ok(()) => {
                    let n = self.rebind_targets(vol, false).await;
                    tracing::info!(
                        volume = %volume_id,
                        pid = vol.record.pid,
                        "fluid-fuse restarted and {n} target(s) re-bound in {} ms",
                        started.elapsed().as_millis()
                    );
                    return;
                }
                Err(e) => {
                    tracing::error!(volume = %volume_id, attempt, "restarting fluid-fuse failed: {e}");
                }
            }
            drop(guard);
            attempt += 1;
            delay = backoff(attempt);
        }
    }
}

/// The daemon a watcher waits for.
pub(super) enum Daemon {
    /// Started by this plugin: waited for.
    Child(tokio::process::Child),
    /// Started by an earlier run of this plugin: polled.
    Adopted { pid: u32, start: Option<u64> },
}

impl Daemon {
    /// Waits until the daemon is gone; says how it ended.
    async fn wait(self) -> String {
        match self {
            Daemon::Child(mut c) => match c.wait().await {
                Ok(status) => describe(status),
                Err(e) => format!("could not be waited for ({e})"),
            },
            Daemon::Adopted { pid, start } => loop {
                tokio::time::sleep(ADOPTED_POLL).await;
                if !process_alive(pid, start) {
                    reap(pid);
                    return format!("(pid {pid}, adopted) is gone");
                }
            },
        }
    }
}

pub(super) fn describe(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => format!("ended ({status})"),
    }
}

pub(super) async fn kill_child(child: &mut tokio::process::Child) {
    let _ = child.start_kill();
    let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
}

pub(super) fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory effects; the pid was checked to be our daemon.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Reaps `pid` if it is a zombie child of ours (when we run as PID 1, orphaned daemons are
/// re-parented to us); harmless otherwise.
pub(super) fn reap(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        let mut status = 0;
        // SAFETY: waitpid(2) with WNOHANG writes only into `status`.
        unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    }
}

/// State letter and start time (clock ticks after boot) of a process, from /proc/PID/stat.
pub(super) fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces or parentheses itself.
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 22 of stat(5) is starttime; `rest` starts at field 3.
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

pub(super) fn process_start(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|(_, s)| s)
}

pub fn process_alive(pid: u32, start: Option<u64>) -> bool {
    match proc_stat(pid) {
        Some((state, s)) => !matches!(state, 'Z' | 'X' | 'x') && start.is_none_or(|want| want == s),
        None => false,
    }
}

pub(super) fn read_boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Whether the ready file exists and names `pid` (a leftover of an earlier daemon does not).
pub(super) fn ready_file_names(path: &Path, pid: u32) -> bool {
    std::fs::read_to_string(path).is_ok_and(|s| s.trim() == pid.to_string())
}

/// Where a rotated log goes: `<name>.log.1`.
fn rotated(path: &Path) -> PathBuf {
    path.with_extension("log.1")
}

/// Rotates the log of a running daemon once it holds more than `max` bytes: copies it to
/// [`rotated`] (replacing the last one) and truncates it. The daemon keeps its descriptor, and
/// as it appends (`O_APPEND`) its next write goes to the start of the emptied file. Lines
/// written between the copy and the truncation are lost. True when it rotated.
pub(super) fn rotate_log(path: &Path, max: u64) -> std::io::Result<bool> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > max => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    let to = rotated(path);
    let mut from = std::fs::File::open(path)?;
    let mut copy = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&to)?;
    std::io::copy(&mut from, &mut copy)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .set_len(0)?;
    Ok(true)
}

pub(super) fn open_log(path: &Path) -> Result<std::fs::File> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > MAX_LOG) {
        let _ = std::fs::rename(path, rotated(path));
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

/// The last lines of a daemon log, for error messages.
pub fn log_tail(path: &Path) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let start = len.saturating_sub(16 << 10);
        use std::io::Seek;
        if f.seek(std::io::SeekFrom::Start(start)).is_ok() {
            let _ = f.read_to_end(&mut buf);
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    if tail.is_empty() {
        "(empty)".to_string()
    } else {
        tail.join("\n")
    }
}

/// Wait before retry `attempt` (1, 2, 4 ... seconds, at most 30).
pub fn backoff(attempt: u32) -> Duration {
    let secs = 1u64 << attempt.saturating_sub(1).min(5);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        let (state, start) = proc_stat(me).unwrap();
        assert!(matches!(state, 'R' | 'S'), "{state}");
        assert!(process_alive(me, Some(start)));
        assert!(
            !process_alive(me, Some(start + 1)),
            "a different start time is another process"
        );
        assert!(!process_alive(u32::MAX - 1, None));
    }

    #[test]
    fn backs_off_up_to_a_limit() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(100), MAX_BACKOFF);
    }

    #[test]
    fn a_running_daemons_log_is_rotated_by_size() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vol.log");
        assert!(!rotate_log(&p, 100).unwrap(), "no log yet");
        // The daemon's descriptor, as start_daemon opens it.
        let mut daemon = open_log(&p).unwrap();
        daemon.write_all(&[b'a'; 60]).unwrap();
        assert!(!rotate_log(&p, 100).unwrap(), "under the limit");
        daemon.write_all(&[b'b'; 60]).unwrap();
        assert!(rotate_log(&p, 100).unwrap());
        let old = std::fs::read(dir.path().join("vol.log.1")).unwrap();
        assert_eq!(old.len(), 120);
        assert!(old.starts_with(b"aaa") && old.ends_with(b"bbb"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("vol.log.1"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // The same descriptor goes on writing at the start of the emptied file (no hole).
        daemon.write_all(b"after\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"after\n");
        // The next rotation replaces `.1`: the log stays within twice the limit on disk.
        daemon.write_all(&[b'c'; 200]).unwrap();
        assert!(rotate_log(&p, 100).unwrap());
        assert_eq!(
            std::fs::read(dir.path().join("vol.log.1")).unwrap().len(),
            206
        );
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
    }

    #[test]
    fn tails_logs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        assert_eq!(log_tail(&p), "(empty)");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, text).unwrap();
        let t = log_tail(&p);
        assert!(t.starts_with("line 80") && t.ends_with("line 99"), "{t}");
    }
}
