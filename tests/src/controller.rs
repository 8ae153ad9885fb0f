//! The real `fluid-csi-controller` as a child process for the Kubernetes tests: `--kubernetes`
//! against the test kube-apiserver, CSI on a unix socket in a temporary directory, its log kept
//! for failure messages, killed when dropped. One runs at a time on this machine, as one leader
//! does in a cluster: controllers watch every namespace, so two with different flags (say,
//! `--allow-ambient-credentials` or a cache token) would each rewrite the other's tests' objects.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use fluid_proto::Endpoint;
use fluid_proto::csi::controller_client::ControllerClient;
use tonic::transport::Channel;

use crate::daemon::binary;
use crate::kube::{kubeconfig_path, wait_for};

pub struct ControllerProcess {
    child: Child,
    pub socket: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
    /// An exclusive `flock` on [`LOCK`] while the process runs: released by [`Self::stop`].
    alone: Option<std::fs::File>,
}

/// The lock every [`ControllerProcess`] holds while it lives (across test binaries too).
const LOCK: &str = "fluid-tests-controller.lock";
/// How long a controller waits for another test's to end: longer than any test runs one.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

impl ControllerProcess {
    /// Starts `fluid-csi-controller --kubernetes --stats-interval 1s` plus `extra` flags.
    pub fn start(extra: &[String]) -> Result<ControllerProcess> {
        Self::start_with_env(extra, &[])
    }

    /// [`Self::start`] with more environment variables.
    pub fn start_with_env(extra: &[String], env: &[(&str, &str)]) -> Result<ControllerProcess> {
        let alone = Self::wait_alone()?;
        Self::spawn(extra, env, Some(alone))
    }

    /// Replicas of one controller (same flags): they share this test's turn on the apiserver.
    pub fn start_replicas(n: usize, extra: &[String]) -> Result<Vec<ControllerProcess>> {
        let alone = Self::wait_alone()?;
        // Each holds a descriptor of the one locked file: the lock lasts until the last is gone.
        (0..n)
            .map(|_| Self::spawn(extra, &[], Some(alone.try_clone()?)))
            .collect()
    }

    /// The exclusive lock on [`LOCK`], once no other test's controller runs.
    fn wait_alone() -> Result<std::fs::File> {
        let lock = std::env::temp_dir().join(LOCK);
        let alone = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .with_context(|| format!("opening {}", lock.display()))?;
        // Blocks this test's thread until the controller of another test is gone.
        let since = std::time::Instant::now();
        loop {
            match alone.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if since.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => {
                    anyhow::bail!(
                        "locking {} (another test's controller ran for {:?}): {e}",
                        lock.display(),
                        since.elapsed()
                    )
                }
            }
        }
        Ok(alone)
    }

    fn spawn(
        extra: &[String],
        env: &[(&str, &str)],
        alone: Option<std::fs::File>,
    ) -> Result<ControllerProcess> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("csi.sock");
        let log = dir.path().join("controller.log");
        let child = Command::new(binary("fluid-csi-controller"))
            .arg("--kubernetes")
            .arg(format!("--endpoint=unix://{}", socket.display()))
            .arg(format!(
                "--state-dir={}",
                dir.path().join("state").display()
            ))
            .arg("--stats-interval=1s")
            .args(extra)
            .env("KUBECONFIG", kubeconfig_path()?)
            .env("FLUID_LOG", "info,kube=warn")
            .envs(crate::services::credential_endpoints_env())
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting fluid-csi-controller (cargo build -p csi-controller --bins)")?;
        Ok(ControllerProcess {
            child,
            socket,
            log,
            _dir: dir,
            alone,
        })
    }

    /// Its log so far, headed for a failure message.
    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("controller log:\n{log}")
    }

    /// A CSI Controller client, once the socket answers.
    pub async fn csi(&self) -> Result<ControllerClient<Channel>> {
        let ep = Endpoint::Unix(self.socket.clone());
        let channel = wait_for("the controller's CSI socket", || async {
            ep.connect().await.map_err(|e| e.to_string())
        })
        .await?;
        Ok(ControllerClient::new(channel))
    }

    /// Kills it (SIGKILL: what a crash or an outage looks like to the apiserver).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.alone = None;
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
