//! The real `fluid-csi-node` as a child process, for tests that need a node plugin with real
//! `fluid-fuse` daemons and mounts (the Kubernetes tests; `csi_node.rs` has its own richer copy).
//!
//! A [`PluginDir`] is a test's world: a temp folder with the CSI socket, the state dir, staging
//! paths and the plugin's logs. It outlives plugin restarts, and when dropped it kills every
//! daemon recorded in the state dir and detaches every mount left under the folder, so a failed
//! test leaves nothing behind. A [`NodePlugin`] is one run of the plugin on it (SIGTERM on drop).
//!
//! Needs root, /dev/fuse and the binaries built: `cargo build -p csi-node -p fuse-cache --bins`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fluid_proto::Endpoint;
use fluid_proto::csi::node_client::NodeClient;
use fluid_proto::csi::volume_capability::access_mode::Mode;
use fluid_proto::csi::volume_capability::{AccessMode, AccessType, MountVolume};
use fluid_proto::csi::{NodeStageVolumeRequest, NodeUnstageVolumeRequest, VolumeCapability};
use fluid_volume::context::VolumeContext;
use fluid_volume::dataset::MountSpec;
use tonic::transport::Channel;

use crate::daemon::{binary, lazy_unmount};
use crate::services::{S3Server, unique_name};

/// How long the plugin gets to serve its CSI socket, and to exit after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A temp folder for one or more runs of the plugin; see the module doc.
pub struct PluginDir {
    dir: tempfile::TempDir,
}

impl PluginDir {
    pub fn new() -> Result<PluginDir> {
        let dir = tempfile::Builder::new()
            .prefix("fluid-node-plugin-test")
            .tempdir()?;
        Ok(PluginDir { dir })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn socket(&self) -> PathBuf {
        self.path("csi.sock")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    /// Mount points under the folder (none once everything is unstaged).
    pub fn mounts(&self) -> Vec<PathBuf> {
        let prefix = format!("{}/", self.dir.path().display());
        fluid_volume::mountinfo::read()
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|mp| mp.display().to_string().starts_with(&prefix))
            .collect()
    }

    /// Pids of the daemons recorded in the state dir.
    pub fn daemon_pids(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(self.state_dir()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("volume.json")).ok())
            .filter_map(|text| serde_json::from_slice::<serde_json::Value>(&text).ok())
            .filter_map(|rec| rec.get("pid")?.as_u64().map(|p| p as u32))
            .collect()
    }
}

impl Drop for PluginDir {
    fn drop(&mut self) {
        for pid in self.daemon_pids() {
            // SAFETY: kill(2) on a fluid-fuse this test's plugin started (its own record).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let mut left = self.mounts();
        // Deepest first: targets sit under staging paths' siblings, binds over binds.
        left.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
        for m in left {
            lazy_unmount(&m);
        }
    }
}

/// One run of `fluid-csi-node` on a [`PluginDir`], stopped with SIGTERM when dropped.
pub struct NodePlugin {
    child: Option<Child>,
    log: PathBuf,
    pub node: NodeClient<Channel>,
}

impl NodePlugin {
    /// Starts the plugin as node `nodeid` with `--endpoint`, `--state-dir`, `--fuse-binary`, a
    /// 64 MiB memory tier and 1 MiB blocks, plus `extra` flags and `env` variables; returns once
    /// it serves CSI.
    pub async fn start(
        dir: &PluginDir,
        nodeid: &str,
        extra: &[String],
        env: &[(&str, &Path)],
    ) -> Result<NodePlugin> {
        let bin = binary("fluid-csi-node");
        if !bin.is_file() {
            bail!(
                "{} is not built: run `cargo build -p csi-node -p fuse-cache --bins`",
                bin.display()
            );
        }
        let log = dir.path(&format!("plugin-{}.log", unique_name("run")));
        let mut cmd = Command::new(&bin);
        cmd.arg(format!("--endpoint=unix://{}", dir.socket().display()))
            .arg(format!("--nodeid={nodeid}"))
            .arg(format!("--state-dir={}", dir.state_dir().display()))
            .arg(format!("--fuse-binary={}", binary("fluid-fuse").display()))
            .arg("--tier=mem:64MiB")
            .arg("--block-size=1MiB")
            .args(extra)
            .env("FLUID_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        cmd.envs(crate::services::credential_endpoints_env());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let deadline = Instant::now() + START_TIMEOUT;
        let channel = loop {
            match Endpoint::Unix(dir.socket()).connect().await {
                Ok(channel) => break channel,
                Err(e) => {
                    let exited = child.try_wait().ok().flatten();
                    if exited.is_some() || Instant::now() > deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        bail!(
                            "fluid-csi-node did not serve ({e}; exit {exited:?}); its log:\n{}",
                            std::fs::read_to_string(&log).unwrap_or_default()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        Ok(NodePlugin {
            child: Some(child),
            log,
            node: NodeClient::new(channel),
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The port of `--cache-endpoint`, as the plugin logged it (start it with port 0).
    pub fn cache_port(&self) -> Result<u16> {
        Ok(crate::services::logged_listen(|| self.log(), "cache service")?.port())
    }

    /// SIGTERM, and the exit status. The daemons keep running, for the next run to adopt.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let mut child = self.child.take().context("the plugin is not running")?;
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "fluid-csi-node ignored SIGTERM for {STOP_TIMEOUT:?}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// NodeStageVolume with a multi-node reader-only mount capability.
    pub async fn stage(
        &self,
        volume_id: &str,
        staging: &Path,
        context: &HashMap<String, String>,
        secrets: &HashMap<String, String>,
    ) -> Result<(), tonic::Status> {
        self.node
            .clone()
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: volume_id.into(),
                staging_target_path: staging.display().to_string(),
                volume_capability: Some(VolumeCapability {
                    access_type: Some(AccessType::Mount(MountVolume::default())),
                    access_mode: Some(AccessMode {
                        mode: Mode::MultiNodeReaderOnly as i32,
                    }),
                }),
                volume_context: context.clone(),
                secrets: secrets.clone(),
                publish_context: Default::default(),
            })
            .await
            .map(drop)
    }

    pub async fn unstage(&self, volume_id: &str, staging: &Path) -> Result<(), tonic::Status> {
        self.node
            .clone()
            .node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: volume_id.into(),
                staging_target_path: staging.display().to_string(),
            })
            .await
            .map(drop)
    }
}

impl Drop for NodePlugin {
    fn drop(&mut self) {
        if self.child.is_some()
            && let Err(e) = self.stop()
        {
            eprintln!("{e:#}");
        }
    }
}

/// The volume context a controller hands over for `bucket` of an S3 server, mounted at the
/// root, as Dataset `dataset` (`namespace/name`); no credentials (see [`s3_secrets`]).
pub fn s3_volume_context(
    server: &S3Server,
    bucket: &str,
    dataset: &str,
) -> HashMap<String, String> {
    VolumeContext {
        dataset: Some(dataset.into()),
        mounts: vec![MountSpec {
            mount_point: format!("s3://{bucket}"),
            name: "data".into(),
            path: Some("/".into()),
            options: [
                ("endpoint".to_string(), server.endpoint.clone()),
                ("region".to_string(), server.region.clone()),
            ]
            .into(),
            ..Default::default()
        }],
        ..Default::default()
    }
    .to_map()
    .into_iter()
    .collect()
}

/// The node-stage secrets with the server's credentials.
pub fn s3_secrets(server: &S3Server) -> HashMap<String, String> {
    HashMap::from([
        ("access-key".to_string(), server.access_key.clone()),
        ("secret-key".to_string(), server.secret_key.clone()),
    ])
}
