//! fluid-csi-node end to end: the real plugin binary on a unix socket, real fluid-fuse daemons
//! it starts, real FUSE and bind mounts, a SeaweedFS dataset.
//!
//! Needs root, /dev/fuse and SeaweedFS (`scripts/services.sh up seaweedfs`), and the binaries
//! built: `cargo build -p csi-node -p fuse-cache --bins`.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fluid_proto::Endpoint;
use fluid_proto::csi::identity_client::IdentityClient;
use fluid_proto::csi::node_client::NodeClient;
use fluid_proto::csi::node_service_capability::rpc;
use fluid_proto::csi::volume_capability::access_mode::Mode;
use fluid_proto::csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use fluid_proto::csi::*;
use fluid_tests::daemon::binary;
use fluid_tests::node_plugin::{NodePlugin, PluginDir, s3_secrets, s3_volume_context};
use fluid_tests::rt;
use fluid_tests::services::{S3Server, TempBucket, http_get, logged_listen, unique_name};
use fluid_tests::tree::{self, Tree, TreeSpec};
use fluid_volume::context::VolumeContext;
use fluid_volume::dataset::MountSpec;
use tonic::Code;
use tonic::transport::Channel;

const MIB: u64 = 1 << 20;

fn small_tree() -> Tree {
    tree::generate(
        &TreeSpec {
            block_size: MIB,
            big_file: 6 * MIB,
            small_files: 20,
        },
        7,
    )
}

/// A bucket holding `tree` at its root, removed when dropped.
fn dataset(server: &S3Server, tree: &Tree) -> TempBucket {
    let bucket = server
        .temp_bucket("csinode")
        .unwrap_or_else(|e| panic!("{e:#}"));
    rt().block_on(tree.upload_s3(&server.client(), &bucket.name, ""))
        .unwrap();
    bucket
}

/// The volume context a controller would hand over for the bucket (no credentials).
fn context(server: &S3Server, bucket: &str) -> HashMap<String, String> {
    s3_volume_context(server, bucket, "default/csi-node-test")
}

fn cap(mode: Mode) -> Option<VolumeCapability> {
    Some(VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    })
}

/// Mount points under `dir` in this process's mount namespace.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|mp| mp.starts_with(&prefix))
        .collect()
}

/// How many mountinfo lines have `path` as their mount point.
fn mount_count(path: &Path) -> usize {
    let p = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(p.as_str()))
        .count()
}

/// Field `n` (0-based, of mountinfo(5)) of the top mount at `path`.
fn top_mount_field(path: &Path, n: usize) -> Option<String> {
    let p = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some(p.as_str()))
        .and_then(|l| l.split(' ').nth(n).map(str::to_string))
}

/// The device (major:minor) of the top mount at `path`.
fn top_mount_dev(path: &Path) -> Option<String> {
    top_mount_field(path, 2)
}

/// Per-mount options of the top mount at `path`.
fn mount_options(path: &Path) -> Option<String> {
    top_mount_field(path, 5)
}

fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().chars().next())
        })
        .flatten()
        .is_some_and(|state| state != 'Z' && state != 'X')
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a daemon this test started (through the plugin).
    unsafe { libc::kill(pid as i32, sig) };
}

/// A test's world: a temp dir with the plugin socket, its state dir, staging and target paths.
/// Dropping it stops every daemon recorded in the state dir and detaches every mount left
/// under the dir, so a failed test leaves nothing behind.
struct Env {
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("fluid-csi-node-test")
            .tempdir()
            .unwrap();
        Env { dir, rt: rt() }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn socket(&self) -> PathBuf {
        self.path("csi.sock")
    }

    fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    /// The state record of a volume (its folder is the volume id for plain ids).
    fn record(&self, volume_id: &str) -> Option<serde_json::Value> {
        let text = std::fs::read(self.state_dir().join(volume_id).join("volume.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn daemon_pid(&self, volume_id: &str) -> Option<u32> {
        self.record(volume_id)?
            .get("pid")?
            .as_u64()
            .map(|p| p as u32)
    }

    /// Waits (up to 20 s) until the record names another daemon than `old`. A killed
    /// daemon's serving process may answer for a few milliseconds more (it dies with it),
    /// so reads right after a kill do not show whether the supervisor replaced it.
    fn wait_new_daemon(&self, volume_id: &str, old: u32) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.daemon_pid(volume_id) == Some(old) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn start_plugin(&self) -> Plugin {
        Plugin::start(self)
    }

    fn assert_no_mounts(&self) {
        let left = mounts_under(self.dir.path());
        assert!(left.is_empty(), "mounts left behind: {left:?}");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(self.state_dir()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = self.daemon_pid(&name)
                    && process_alive(pid)
                {
                    kill(pid, libc::SIGKILL);
                }
            }
        }
        let mut left = mounts_under(self.dir.path());
        left.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in left {
            fluid_tests::daemon::lazy_unmount(Path::new(&m));
        }
    }
}

/// The real `fluid-csi-node`, stopped with SIGTERM when dropped.
struct Plugin {
    child: Option<Child>,
    log: PathBuf,
    node: NodeClient<Channel>,
    identity: IdentityClient<Channel>,
}

impl Plugin {
    fn start(env: &Env) -> Plugin {
        Plugin::start_with(env, &[])
    }

    /// Starts with `extra` flags; an extra `--fuse-binary` replaces the real one.
    fn start_with(env: &Env, extra: &[String]) -> Plugin {
        let bin = binary("fluid-csi-node");
        assert!(
            bin.is_file(),
            "{} is not built: run `cargo build -p csi-node -p fuse-cache --bins`",
            bin.display()
        );
        let log = env.path(&format!("plugin-{}.log", unique_name("run")));
        let mut cmd = Command::new(&bin);
        cmd.arg(format!("--endpoint=unix://{}", env.socket().display()))
            .arg("--nodeid=test-node")
            .arg(format!("--state-dir={}", env.state_dir().display()))
            .arg("--tier=mem:64MiB")
            .arg("--block-size=1MiB")
            .arg("--max-volumes=50")
            .args(extra);
        if !extra.iter().any(|a| a.starts_with("--fuse-binary")) {
            cmd.arg(format!("--fuse-binary={}", binary("fluid-fuse").display()));
        }
        let child = cmd
            .env("FLUID_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let channel = loop {
            match env.rt.block_on(Endpoint::Unix(env.socket()).connect()) {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => panic!(
                    "plugin did not serve: {e}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        Plugin {
            child: Some(child),
            log,
            node: NodeClient::new(channel.clone()),
            identity: IdentityClient::new(channel),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        kill(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("plugin ignored SIGTERM\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash.
    fn crash(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}

/// Synchronous CSI calls for the tests.
struct Csi<'a> {
    env: &'a Env,
    plugin: &'a Plugin,
}

type Res<T> = Result<T, tonic::Status>;

impl Csi<'_> {
    fn run<T>(&self, f: impl std::future::Future<Output = Res<tonic::Response<T>>>) -> Res<T> {
        self.env.rt.block_on(f).map(|r| r.into_inner())
    }

    fn node(&self) -> NodeClient<Channel> {
        self.plugin.node.clone()
    }

    fn stage(&self, req: NodeStageVolumeRequest) -> Res<()> {
        self.run(self.node().node_stage_volume(req)).map(drop)
    }

    fn unstage(&self, volume_id: &str, staging: &Path) -> Res<()> {
        self.run(self.node().node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: volume_id.into(),
            staging_target_path: staging.display().to_string(),
        }))
        .map(drop)
    }

    fn publish(&self, req: NodePublishVolumeRequest) -> Res<()> {
        self.run(self.node().node_publish_volume(req)).map(drop)
    }

    fn unpublish(&self, volume_id: &str, target: &Path) -> Res<()> {
        self.run(
            self.node()
                .node_unpublish_volume(NodeUnpublishVolumeRequest {
                    volume_id: volume_id.into(),
                    target_path: target.display().to_string(),
                }),
        )
        .map(drop)
    }

    fn stats(&self, volume_id: &str, path: &str) -> Res<NodeGetVolumeStatsResponse> {
        self.run(
            self.node()
                .node_get_volume_stats(NodeGetVolumeStatsRequest {
                    volume_id: volume_id.into(),
                    volume_path: path.into(),
                    staging_target_path: String::new(),
                }),
        )
    }
}

fn stage_req(
    volume_id: &str,
    staging: &Path,
    ctx: &HashMap<String, String>,
    secrets: &HashMap<String, String>,
) -> NodeStageVolumeRequest {
    NodeStageVolumeRequest {
        volume_id: volume_id.into(),
        staging_target_path: staging.display().to_string(),
        volume_capability: cap(Mode::MultiNodeReaderOnly),
        volume_context: ctx.clone(),
        secrets: secrets.clone(),
        publish_context: Default::default(),
    }
}

fn publish_req(
    volume_id: &str,
    staging: &Path,
    target: &Path,
    readonly: bool,
    sub_path: Option<&str>,
) -> NodePublishVolumeRequest {
    let mut volume_context = HashMap::new();
    if let Some(s) = sub_path {
        volume_context.insert("subPath".to_string(), s.to_string());
    }
    NodePublishVolumeRequest {
        volume_id: volume_id.into(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: cap(Mode::SingleNodeWriter),
        readonly,
        volume_context,
        ..Default::default()
    }
}

#[track_caller]
fn expect_code<T: std::fmt::Debug>(r: Res<T>, code: Code, mentions: &str) {
    match r {
        Ok(v) => panic!("expected {code:?}, got OK {v:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "wrong code: {s:?}");
            assert!(
                s.message().contains(mentions),
                "message {:?} should mention {mentions:?}",
                s.message()
            );
        }
    }
}

mod lifecycle;
mod policy;
mod recovery;
mod requests;
