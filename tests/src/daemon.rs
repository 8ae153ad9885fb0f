//! Runs the real `fluid-fuse` binary as a child process, as the CSI node plugin does, and
//! stops it cleanly (SIGTERM, then kill and a lazy unmount) when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The workspace's built binary `name` (cargo builds it before the tests of the workspace).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/test-xxxx -> target/debug/NAME
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    dir.join(name)
}

pub struct FuseDaemon {
    child: Option<Child>,
    pub mountpoint: PathBuf,
    pub control: PathBuf,
    /// Where the daemon serves its metrics, as it printed (with `--metrics`).
    pub metrics: Option<std::net::SocketAddr>,
    stderr_log: PathBuf,
    _dir: tempfile::TempDir,
}

impl FuseDaemon {
    /// Mounts with `args` (everything after `mount --mountpoint DIR --control SOCK`) and waits
    /// for the ready line.
    pub fn start(args: &[String]) -> Result<FuseDaemon> {
        let dir = tempfile::Builder::new()
            .prefix("fluid-fuse-test")
            .tempdir()?;
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint)?;
        Self::start_at(dir, mountpoint, args)
    }

    /// Like [`start`](Self::start) on a mount point of the caller's choosing (for remounts).
    pub fn start_at(
        dir: tempfile::TempDir,
        mountpoint: PathBuf,
        args: &[String],
    ) -> Result<FuseDaemon> {
        let control = dir.path().join("control.sock");
        let stderr_log = dir.path().join("stderr.log");
        let mut child = Command::new(binary("fluid-fuse"))
            .arg("mount")
            .arg("--mountpoint")
            .arg(&mountpoint)
            .arg("--control")
            .arg(format!("unix://{}", control.display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_log)?)
            .spawn()
            .context("starting fluid-fuse")?;
        let stdout = child.stdout.take().context("fluid-fuse stdout")?;
        // The metrics address (when asked for) comes before the ready line.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut metrics = None;
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if let Some(url) = line.strip_prefix("FLUID-FUSE METRICS http://") {
                    metrics = url.trim_end_matches("/metrics").parse().ok();
                }
                if line.starts_with("FLUID-FUSE READY") {
                    let _ = tx.send(metrics);
                }
            }
        });
        let mut daemon = FuseDaemon {
            child: Some(child),
            mountpoint,
            control,
            metrics: None,
            stderr_log,
            _dir: dir,
        };
        let ready = rx.recv_timeout(Duration::from_secs(60));
        if let Ok(metrics) = ready {
            daemon.metrics = metrics;
        } else {
            let status = daemon
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            let log = daemon.log();
            daemon.kill();
            bail!("fluid-fuse did not become ready (exit {status:?}); its log:\n{log}");
        }
        Ok(daemon)
    }

    /// Whether the daemon process still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The pid of the keeper (`fluid-fuse mount`, the process this started).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The pid of the keeper's serving process (`fluid-fuse serve`), once there is one.
    pub fn serving_pid(&self) -> Option<u32> {
        serving_pids(self.pid()?).into_iter().next()
    }

    /// Waits (up to `timeout`) for a serving process other than `not`; its pid.
    pub fn wait_serving(&self, not: Option<u32>, timeout: Duration) -> Result<u32> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(pid) = self.serving_pid().filter(|p| Some(*p) != not) {
                return Ok(pid);
            }
            if std::time::Instant::now() >= deadline {
                let ps = Command::new("ps")
                    .args(["-eLo", "pid,ppid,stat,wchan:32,cmd"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                let ours: Vec<&str> = ps.lines().filter(|l| l.contains("fluid-fuse")).collect();
                bail!(
                    "no new serving process within {timeout:?}; processes:\n{}\nlog:\n{}",
                    ours.join("\n"),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn control_endpoint(&self) -> String {
        format!("unix://{}", self.control.display())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Runs a `fluid-fuse` client subcommand (stats, warmup, evict) against this daemon.
    pub fn client(&self, sub: &str, extra: &[&str]) -> Result<String> {
        let out = Command::new(binary("fluid-fuse"))
            .arg(sub)
            .arg("--control")
            .arg(self.control_endpoint())
            .args(extra)
            .output()?;
        if !out.status.success() {
            bail!(
                "fluid-fuse {sub} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops the daemon with SIGTERM and waits for a clean exit; returns its exit status.
    pub fn stop(mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        for _ in 0..200 {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        bail!(
            "fluid-fuse did not exit within 10 s of SIGTERM; log:\n{}",
            self.log()
        )
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        lazy_unmount(&self.mountpoint);
    }

    /// Takes the temp dir back (to remount on the same place after `stop`).
    pub fn into_dir(mut self) -> (tempfile::TempDir, PathBuf) {
        self.kill();
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().expect("tempdir"));
        (dir, self.mountpoint.clone())
    }
}

impl Drop for FuseDaemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            for _ in 0..100 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.kill();
    }
}

/// A live process of this machine, as /proc shows it.
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    /// Its command line, argument by argument.
    pub args: Vec<Vec<u8>>,
}

impl Process {
    /// Whether it runs `fluid-fuse SUBCOMMAND` (the keeper is `mount`, its child `serve`).
    pub fn is_fluid_fuse(&self, subcommand: &str) -> bool {
        self.args
            .first()
            .is_some_and(|a| a.ends_with(b"fluid-fuse"))
            && self.args.get(1).map(Vec::as_slice) == Some(subcommand.as_bytes())
    }
}

/// Every process that is not a zombie.
pub fn processes() -> Vec<Process> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesized command name: state, ppid, ...
        let mut after = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .unwrap_or("")
            .split_whitespace();
        let (state, ppid) = (after.next(), after.next().and_then(|p| p.parse().ok()));
        let (Some(ppid), false) = (ppid, state == Some("Z")) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        out.push(Process { pid, ppid, args });
    }
    out
}

/// `root` and every live process below it (children, their children, ...).
pub fn tree(root: u32) -> Vec<u32> {
    let all = processes();
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(all.iter().filter(|p| p.ppid == parent).map(|p| p.pid));
        i += 1;
    }
    out
}

/// The live `fluid-fuse serve` children of `keeper`.
pub fn serving_pids(keeper: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|p| p.ppid == keeper && p.is_fluid_fuse("serve"))
        .map(|p| p.pid)
        .collect()
}

/// Detaches whatever is mounted at `dir` (no error when nothing is).
pub fn lazy_unmount(dir: &Path) {
    if let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) {
        // SAFETY: c is a valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Whether `dir` is a mount point in this process's mount namespace.
pub fn is_mounted(dir: &Path) -> bool {
    fluid_volume::mountinfo::is_mounted(dir).unwrap_or(false)
}

/// The daemon's cache figures: GetStats on its control endpoint.
pub fn stats(d: &FuseDaemon) -> fluid_proto::fluid::GetStatsResponse {
    stats_at(&d.control_endpoint()).unwrap_or_else(|e| panic!("GetStats: {e:#}"))
}

/// `GetStats` of the daemon whose control endpoint is `endpoint` (`unix:///...`).
pub fn stats_at(endpoint: &str) -> Result<fluid_proto::fluid::GetStatsResponse> {
    crate::rt().block_on(async {
        let ep: fluid_proto::Endpoint = endpoint
            .parse()
            .map_err(|e: fluid_proto::EndpointError| anyhow::anyhow!("{endpoint}: {e}"))?;
        let channel = ep.connect().await?;
        Ok(
            fluid_proto::fluid::cache_node_client::CacheNodeClient::new(channel)
                .get_stats(fluid_proto::fluid::GetStatsRequest::default())
                .await?
                .into_inner(),
        )
    })
}
