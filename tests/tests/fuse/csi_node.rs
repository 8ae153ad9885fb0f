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
use fluid_tests::services::{S3Server, TempBucket, http_get, logged_listen, unique_name};
use fluid_tests::tree::{self, Tree, TreeSpec};
use fluid_volume::context::VolumeContext;
use fluid_volume::dataset::MountSpec;
use tonic::Code;
use tonic::transport::Channel;

const MIB: u64 = 1 << 20;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

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

#[test]
fn bad_requests_get_the_right_codes_and_messages() {
    let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    let env = Env::new();
    let plugin = env.start_plugin();
    let csi = Csi {
        env: &env,
        plugin: &plugin,
    };
    let ctx = context(&server, "no-such-bucket-needed");
    let sec = s3_secrets(&server);
    let staging = env.path("staging");
    let vol = unique_name("badvol");

    // Identity and capabilities.
    let info = csi
        .run(
            plugin
                .identity
                .clone()
                .get_plugin_info(GetPluginInfoRequest {}),
        )
        .unwrap();
    assert_eq!(info.name, "fuse.csi.fluid.io");
    let caps = csi
        .run(
            csi.node()
                .node_get_capabilities(NodeGetCapabilitiesRequest {}),
        )
        .unwrap();
    let mut types: Vec<i32> = caps
        .capabilities
        .iter()
        .filter_map(|c| {
            c.r#type
                .as_ref()
                .map(|node_service_capability::Type::Rpc(r)| r.r#type)
        })
        .collect();
    types.sort();
    assert_eq!(
        types,
        vec![
            rpc::Type::StageUnstageVolume as i32,
            rpc::Type::GetVolumeStats as i32
        ]
    );
    let ni = csi
        .run(csi.node().node_get_info(NodeGetInfoRequest {}))
        .unwrap();
    assert_eq!(
        (ni.node_id.as_str(), ni.max_volumes_per_node),
        ("test-node", 50)
    );

    // NodeStageVolume.
    let mut r = stage_req(&vol, &staging, &ctx, &sec);
    r.volume_id.clear();
    expect_code(csi.stage(r), Code::InvalidArgument, "volume_id");
    let mut r = stage_req(&vol, &staging, &ctx, &sec);
    r.staging_target_path.clear();
    expect_code(csi.stage(r), Code::InvalidArgument, "staging_target_path");
    let mut r = stage_req(&vol, &staging, &ctx, &sec);
    r.staging_target_path = "relative/staging".into();
    expect_code(csi.stage(r), Code::InvalidArgument, "staging_target_path");
    let mut r = stage_req(&vol, &staging, &ctx, &sec);
    r.volume_capability = None;
    expect_code(csi.stage(r), Code::InvalidArgument, "volume_capability");
    let mut r = stage_req(&vol, &staging, &ctx, &sec);
    r.volume_capability = Some(VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    });
    expect_code(csi.stage(r), Code::InvalidArgument, "block");
    let mut r = stage_req(&vol, &staging, &ctx, &sec);
    r.volume_context.clear();
    expect_code(csi.stage(r), Code::InvalidArgument, "fluid.io/mounts");
    let mut r = stage_req(&vol, &staging, &ctx, &sec);
    r.volume_context
        .insert("fluid.io/tiers".into(), "mem:lots".into());
    expect_code(csi.stage(r), Code::InvalidArgument, "tier");
    let mut r = stage_req(&vol, &staging, &ctx, &sec);
    r.volume_context.insert(
        "fluid.io/mounts".into(),
        r#"[{"mountPoint":"s3://b","name":"x","options":{"secret-key":"leak"}}]"#.into(),
    );
    expect_code(csi.stage(r), Code::InvalidArgument, "secret");

    // NodePublishVolume.
    let target = env.path("pods/p1/target");
    let mut r = publish_req(&vol, &staging, &target, false, None);
    r.volume_id.clear();
    expect_code(csi.publish(r), Code::InvalidArgument, "volume_id");
    let mut r = publish_req(&vol, &staging, &target, false, None);
    r.target_path.clear();
    expect_code(csi.publish(r), Code::InvalidArgument, "target_path");
    let mut r = publish_req(&vol, &staging, &target, false, None);
    r.volume_capability = None;
    expect_code(csi.publish(r), Code::InvalidArgument, "volume_capability");
    let mut r = publish_req(&vol, &staging, &target, false, None);
    r.staging_target_path.clear();
    expect_code(
        csi.publish(r),
        Code::FailedPrecondition,
        "staging_target_path",
    );
    for bad in ["../escape", "/etc", "a/../../b"] {
        expect_code(
            csi.publish(publish_req(&vol, &staging, &target, false, Some(bad))),
            Code::InvalidArgument,
            "subPath",
        );
    }
    expect_code(
        csi.publish(publish_req(&vol, &staging, &target, false, None)),
        Code::FailedPrecondition,
        "not staged",
    );
    assert!(!target.exists(), "a refused publish creates nothing");

    // NodeUnpublishVolume / NodeUnstageVolume: missing fields refused, unknown ones are OK.
    expect_code(
        csi.unpublish("", &target),
        Code::InvalidArgument,
        "volume_id",
    );
    expect_code(
        csi.run(
            csi.node()
                .node_unpublish_volume(NodeUnpublishVolumeRequest {
                    volume_id: vol.clone(),
                    target_path: String::new(),
                }),
        ),
        Code::InvalidArgument,
        "target_path",
    );
    csi.unpublish(&vol, &target).unwrap();
    expect_code(
        csi.unstage("", &staging),
        Code::InvalidArgument,
        "volume_id",
    );
    expect_code(
        csi.run(csi.node().node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: vol.clone(),
            staging_target_path: String::new(),
        })),
        Code::InvalidArgument,
        "staging_target_path",
    );
    csi.unstage(&vol, &staging).unwrap();

    // NodeGetVolumeStats and NodeExpandVolume.
    expect_code(csi.stats("", "/x"), Code::InvalidArgument, "volume_id");
    expect_code(csi.stats(&vol, ""), Code::InvalidArgument, "volume_path");
    expect_code(csi.stats(&vol, "some/path"), Code::NotFound, &vol);
    expect_code(
        csi.run(csi.node().node_expand_volume(NodeExpandVolumeRequest {
            volume_id: vol.clone(),
            volume_path: target.display().to_string(),
            ..Default::default()
        })),
        Code::Unimplemented,
        "NodeExpandVolume",
    );
    env.assert_no_mounts();
}

/// The plugin answers the kubelet's liveness probe (`/healthz`) and registers itself with the
/// kubelet the way the kubelet's plugin watcher expects:
/// a socket `<driver>-reg.sock` in the registration folder answering GetInfo with the CSI
/// socket's host path, and NotifyRegistrationStatus; the socket goes when the plugin stops.
#[test]
fn the_plugin_serves_the_kubelets_plugin_registration() {
    use fluid_proto::registration::registration_client::RegistrationClient;
    use fluid_proto::registration::{InfoRequest, RegistrationStatus};
    rt().block_on(async {
        let dir = PluginDir::new().unwrap();
        let registry = dir.path("plugins_registry");
        std::fs::create_dir(&registry).unwrap();
        let host_socket = "/var/lib/kubelet/plugins/fuse.csi.fluid.io/csi.sock";
        let mut plugin = NodePlugin::start(
            &dir,
            "n1",
            &[
                format!("--registration-dir={}", registry.display()),
                format!("--kubelet-registration-path={host_socket}"),
                "--health-listen=127.0.0.1:0".to_string(),
            ],
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        let socket = registry.join("fuse.csi.fluid.io-reg.sock");
        // The registration socket comes up beside the CSI one, maybe a moment later (the
        // kubelet, too, retries until it answers).
        let deadline = Instant::now() + Duration::from_secs(10);
        let channel = loop {
            match Endpoint::Unix(socket.clone()).connect().await {
                Ok(c) => break c,
                Err(e) if Instant::now() >= deadline => panic!("{e}\n{}", plugin.log()),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let mut kubelet = RegistrationClient::new(channel);
        let info = kubelet.get_info(InfoRequest {}).await.unwrap().into_inner();
        assert_eq!(info.r#type, "CSIPlugin");
        assert_eq!(info.name, "fuse.csi.fluid.io");
        assert_eq!(info.endpoint, host_socket);
        assert_eq!(info.supported_versions, ["1.0.0"]);
        for (registered, error) in [(true, ""), (false, "driver name taken")] {
            kubelet
                .notify_registration_status(RegistrationStatus {
                    plugin_registered: registered,
                    error: error.into(),
                })
                .await
                .unwrap();
        }
        // The liveness probe's answer, from the plugin itself.
        let health_port = logged_listen(|| plugin.log(), "liveness probes")
            .unwrap()
            .port();
        let health = tokio::task::spawn_blocking(move || http_get(health_port, "/healthz"))
            .await
            .unwrap()
            .unwrap();
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        let log = plugin.log();
        assert!(log.contains("registered with the kubelet"), "{log}");
        assert!(
            log.contains("refused the registration: driver name taken"),
            "{log}"
        );
        assert!(plugin.stop().unwrap().success());
        assert!(
            !socket.exists(),
            "the registration socket outlived the plugin"
        );
    });
}

/// The node plugin's log filter (`FLUID_LOG`, which the chart sets from `node.logLevel`) is the
/// one its fluid-fuse daemons log with.
#[test]
fn the_plugins_log_level_reaches_its_daemons() {
    let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    let bucket = dataset(&server, &small_tree());
    let secrets = s3_secrets(&server);
    let daemon_log = |filter: &str| {
        rt().block_on(async {
            let dir = PluginDir::new().unwrap();
            let env = [("FLUID_LOG", Path::new(filter))];
            let plugin = NodePlugin::start(&dir, "n1", &[], &env)
                .await
                .unwrap_or_else(|e| panic!("{e:#}"));
            let ctx = s3_volume_context(&server, &bucket.name, "default/logs");
            let staging = dir.path("staging");
            let vol = unique_name("vol");
            plugin
                .stage(&vol, &staging, &ctx, &secrets)
                .await
                .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
            std::fs::read_dir(&staging).unwrap().count();
            let log = std::fs::read_to_string(dir.state_dir().join(&vol).join("fluid-fuse.log"))
                .unwrap_or_default();
            plugin.unstage(&vol, &staging).await.unwrap();
            (log, plugin.log())
        })
    };
    let (debug, plugin_debug) = daemon_log("debug");
    assert!(
        debug.contains(" DEBUG "),
        "no debug line in the daemon's log:\n{debug}"
    );
    assert!(plugin_debug.contains(" DEBUG "), "{plugin_debug}");
    let (info, _) = daemon_log("info");
    assert!(
        info.contains(" INFO ") && !info.contains(" DEBUG "),
        "{info}"
    );
    for log in [&debug, &info, &plugin_debug] {
        assert!(!log.contains(&server.secret_key), "a secret in a log");
    }
}

/// A local:// context of one mount at `dir`.
fn local_context(dir: &Path) -> HashMap<String, String> {
    VolumeContext {
        dataset: Some("tenant/local".into()),
        mounts: vec![MountSpec {
            mount_point: format!("local://{}", dir.display()),
            name: "data".into(),
            path: Some("/".into()),
            ..Default::default()
        }],
        ..Default::default()
    }
    .to_map()
    .into_iter()
    .collect()
}

/// Issue 27, hole 1: a tenant's local:// volume pointed at the node's files (the kubelet's pod
/// volumes, or an allowed directory with a symlink out of it) is refused; one under a
/// directory the administrator allows is served, and a symlink inside it leads nowhere else.
#[test]
fn local_volumes_reach_only_directories_the_administrator_allows() {
    let env = Env::new();
    let allowed = env.path("datasets");
    std::fs::create_dir_all(allowed.join("set")).unwrap();
    std::fs::write(allowed.join("set/a.txt"), b"tenant data").unwrap();
    std::fs::write(env.path("host-secret"), b"node secret").unwrap();
    std::os::unix::fs::symlink(env.path("host-secret"), allowed.join("set/leak")).unwrap();
    std::os::unix::fs::symlink("/var/lib", allowed.join("out")).unwrap();

    // By default no local:// volume is staged, wherever it points.
    let plugin = Plugin::start(&env);
    let refusing = Csi {
        env: &env,
        plugin: &plugin,
    };
    let staging = env.path("plugins/fuse.csi.fluid.io/local/globalmount");
    let none = HashMap::new();
    for dir in [Path::new("/var/lib/kubelet/pods"), &allowed.join("set")] {
        expect_code(
            refusing.stage(stage_req("local-vol", &staging, &local_context(dir), &none)),
            Code::PermissionDenied,
            "--local-roots",
        );
    }
    drop(plugin);

    let plugin = Plugin::start_with(&env, &[format!("--local-roots={}", allowed.display())]);
    let csi = Csi {
        env: &env,
        plugin: &plugin,
    };
    for dir in [Path::new("/var/lib/kubelet/pods"), &allowed.join("out")] {
        expect_code(
            csi.stage(stage_req("local-vol", &staging, &local_context(dir), &none)),
            Code::PermissionDenied,
            "not under a directory allowed",
        );
    }
    assert!(
        env.daemon_pid("local-vol").is_none(),
        "no daemon was started"
    );
    csi.stage(stage_req(
        "local-vol",
        &staging,
        &local_context(&allowed.join("set")),
        &none,
    ))
    .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
    assert_eq!(
        std::fs::read(staging.join("a.txt")).unwrap(),
        b"tenant data"
    );
    let leak = std::fs::read(staging.join("leak"));
    assert!(
        leak.is_err(),
        "read the node's file through a symlink: {leak:?}"
    );
    csi.unstage("local-vol", &staging).unwrap();
}

/// Issue 27, hole 2: the node's own cloud identity (here AWS keys in the node plugin's
/// environment, as an instance role or IRSA would be) is not lent to a volume that brings no
/// keys, unless the administrator allows it.
#[test]
fn keyless_s3_volumes_do_not_get_the_nodes_identity() {
    let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    let tree = small_tree();
    let bucket = dataset(&server, &tree);
    let ctx = context(&server, &bucket.name);
    let none = HashMap::new();
    let (key, secret) = (server.access_key.clone(), server.secret_key.clone());
    let ambient = [
        ("AWS_ACCESS_KEY_ID", Path::new(&key)),
        ("AWS_SECRET_ACCESS_KEY", Path::new(&secret)),
    ];
    rt().block_on(async {
        let dir = PluginDir::new().unwrap();
        let staging = dir.path("staging/keyless");
        let plugin = NodePlugin::start(&dir, "n1", &[], &ambient).await.unwrap();
        let refused = plugin.stage("keyless", &staging, &ctx, &none).await;
        expect_code(
            refused,
            Code::PermissionDenied,
            "--allow-ambient-credentials",
        );
        // With its own keys the same volume is served.
        plugin
            .stage(
                "keyed",
                &dir.path("staging/keyed"),
                &ctx,
                &s3_secrets(&server),
            )
            .await
            .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
        plugin
            .unstage("keyed", &dir.path("staging/keyed"))
            .await
            .unwrap();
        drop(plugin);

        // Lent on purpose: the keyless volume reads with the node's identity.
        let flags = ["--allow-ambient-credentials".to_string()];
        let plugin = NodePlugin::start(&dir, "n1", &flags, &ambient)
            .await
            .unwrap();
        plugin
            .stage("keyless", &staging, &ctx, &none)
            .await
            .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
        let (path, data) = tree.files.iter().next().unwrap();
        assert_eq!(std::fs::read(staging.join(path)).unwrap(), data.as_ref());
        plugin.unstage("keyless", &staging).await.unwrap();
    });
}

#[test]
fn stage_publish_read_stats_unpublish_unstage() {
    let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    let tree = small_tree();
    let bucket = dataset(&server, &tree);
    let env = Env::new();
    let plugin = env.start_plugin();
    let csi = Csi {
        env: &env,
        plugin: &plugin,
    };
    let ctx = context(&server, &bucket.name);
    let sec = s3_secrets(&server);
    let staging = env.path("plugins/fuse.csi.fluid.io/vol/globalmount");
    let vol = unique_name("vol");

    let t0 = Instant::now();
    csi.stage(stage_req(&vol, &staging, &ctx, &sec))
        .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
    eprintln!("NodeStageVolume took {} ms", t0.elapsed().as_millis());
    assert_eq!(mount_count(&staging), 1);
    // Staging twice is fine; at another path it is not.
    csi.stage(stage_req(&vol, &staging, &ctx, &sec)).unwrap();
    assert_eq!(mount_count(&staging), 1, "idempotent stage mounts once");
    expect_code(
        csi.stage(stage_req(&vol, &env.path("elsewhere"), &ctx, &sec)),
        Code::AlreadyExists,
        "already staged",
    );
    // Another volume cannot take the same staging path.
    expect_code(
        csi.stage(stage_req(&unique_name("other"), &staging, &ctx, &sec)),
        Code::AlreadyExists,
        "in use",
    );

    // Credentials: only in the 0600 dataset file, never on a command line, in the record or
    // in a log.
    let pid = env.daemon_pid(&vol).expect("daemon pid in the record");
    let vol_dir = env.state_dir().join(&vol);
    let dataset_file = vol_dir.join("dataset.yaml");
    let mode = std::fs::metadata(&dataset_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        std::fs::read_to_string(&dataset_file)
            .unwrap()
            .contains(&server.secret_key)
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(!cmdline.contains(&server.secret_key), "{cmdline}");
    for f in ["volume.json", "fluid-fuse.log"] {
        let text = std::fs::read_to_string(vol_dir.join(f)).unwrap_or_default();
        assert!(!text.contains(&server.secret_key), "secret in {f}");
    }

    // Publish read-only into a target whose parents do not exist yet; read it byte-exact.
    let target = env.path("pods/pod-a/volumes/kubernetes.io~csi/pv/mount");
    csi.publish(publish_req(&vol, &staging, &target, true, None))
        .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
    let opts = mount_options(&target).expect("target mounted");
    assert!(opts.split(',').any(|o| o == "ro"), "{opts}");
    tree.verify(&target, 20).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(std::fs::write(target.join("new-file"), b"x").is_err());
    // Publishing again identically is fine; with other flags it is not.
    csi.publish(publish_req(&vol, &staging, &target, true, None))
        .unwrap();
    assert_eq!(mount_count(&target), 1);
    expect_code(
        csi.publish(publish_req(&vol, &staging, &target, false, None)),
        Code::AlreadyExists,
        "already published",
    );
    // A sub path shows only that folder; a missing one is NOT_FOUND.
    let sub_target = env.path("pods/pod-b/mount");
    csi.publish(publish_req(&vol, &staging, &sub_target, false, Some("a/b")))
        .unwrap();
    assert_eq!(
        std::fs::read(sub_target.join("c/deep.txt")).unwrap(),
        b"deep\n"
    );
    let mut names: Vec<String> = std::fs::read_dir(&sub_target)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["c", "sibling.txt"]);
    expect_code(
        csi.publish(publish_req(
            &vol,
            &staging,
            &env.path("pods/pod-c/mount"),
            false,
            Some("no/such/dir"),
        )),
        Code::NotFound,
        "no/such/dir",
    );
    // The wrong staging path for a staged volume.
    expect_code(
        csi.publish(publish_req(
            &vol,
            &env.path("elsewhere"),
            &env.path("pods/pod-c/mount"),
            false,
            None,
        )),
        Code::FailedPrecondition,
        "staged at",
    );

    // Stats: the cache holds what was read.
    let stats = csi
        .stats(&vol, &target.display().to_string())
        .unwrap_or_else(|e| panic!("{e:?}"));
    let u = &stats.usage[0];
    assert_eq!(u.unit, volume_usage::Unit::Bytes as i32);
    assert_eq!(u.total, 64 * MIB as i64, "{u:?}");
    assert!(u.used > 0, "{u:?}");
    assert_eq!(u.available, u.total - u.used);
    csi.stats(&vol, &staging.display().to_string()).unwrap();
    expect_code(
        csi.stats(&vol, &env.path("pods/unknown").display().to_string()),
        Code::NotFound,
        "neither",
    );

    // Unpublish removes the targets; twice is fine.
    for t in [&target, &sub_target] {
        csi.unpublish(&vol, t).unwrap();
        assert!(!t.exists(), "{} removed", t.display());
        csi.unpublish(&vol, t).unwrap();
    }
    // Unstage stops the daemon and leaves no mount and no state.
    csi.unstage(&vol, &staging)
        .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
    assert_eq!(mount_count(&staging), 0);
    assert!(!vol_dir.exists(), "state folder removed");
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!process_alive(pid), "fluid-fuse stopped");
    csi.unstage(&vol, &staging).unwrap();
    expect_code(
        csi.stats(&vol, &staging.display().to_string()),
        Code::NotFound,
        "not staged",
    );
    assert!(
        !plugin.log().contains(&server.secret_key),
        "secret in the plugin log"
    );
    env.assert_no_mounts();
}

#[test]
fn twenty_concurrent_publishes_of_one_volume() {
    let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    let tree = small_tree();
    let bucket = dataset(&server, &tree);
    let env = Env::new();
    let plugin = env.start_plugin();
    let csi = Csi {
        env: &env,
        plugin: &plugin,
    };
    let staging = env.path("staging");
    let vol = unique_name("vol");
    csi.stage(stage_req(
        &vol,
        &staging,
        &context(&server, &bucket.name),
        &s3_secrets(&server),
    ))
    .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));

    let targets: Vec<PathBuf> = (0..20)
        .map(|i| env.path(&format!("pods/p{i:02}/volumes/mount")))
        .collect();
    let t0 = Instant::now();
    let results = env
        .rt
        .block_on(futures::future::join_all(targets.iter().enumerate().map(
            |(i, t)| {
                let mut node = plugin.node.clone();
                let req = publish_req(&vol, &staging, t, i % 2 == 0, None);
                async move { node.node_publish_volume(req).await }
            },
        )));
    eprintln!(
        "20 concurrent publishes took {} ms",
        t0.elapsed().as_millis()
    );
    for (t, r) in targets.iter().zip(results) {
        r.unwrap_or_else(|e| panic!("{}: {e:?}", t.display()));
        assert_eq!(mount_count(t), 1, "{}", t.display());
        assert_eq!(std::fs::read(t.join("a/b/c/deep.txt")).unwrap(), b"deep\n");
    }
    assert_eq!(mount_count(&staging), 1);
    let big = &tree.files["big.bin"];
    assert_eq!(&std::fs::read(targets[7].join("big.bin")).unwrap(), big);

    let results = env
        .rt
        .block_on(futures::future::join_all(targets.iter().map(|t| {
            let mut node = plugin.node.clone();
            let req = NodeUnpublishVolumeRequest {
                volume_id: vol.clone(),
                target_path: t.display().to_string(),
            };
            async move { node.node_unpublish_volume(req).await }
        })));
    for (t, r) in targets.iter().zip(results) {
        r.unwrap();
        assert!(!t.exists());
    }
    csi.unstage(&vol, &staging).unwrap();
    env.assert_no_mounts();
}

/// A reader that loops re-opening and reading one file, recording each outcome.
struct Reader {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<(Instant, Result<(), String>)>>,
}

impl Reader {
    fn start(path: PathBuf, expected: Vec<u8>) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut log = Vec::new();
            while !s.load(Ordering::Relaxed) {
                let r = match std::fs::read(&path) {
                    Ok(b) if b == expected => Ok(()),
                    Ok(b) => Err(format!("MISMATCH: {} bytes", b.len())),
                    Err(e) => Err(e.to_string()),
                };
                log.push((Instant::now(), r));
                std::thread::sleep(Duration::from_millis(10));
            }
            log
        });
        Reader { stop, handle }
    }

    fn finish(self) -> Vec<(Instant, Result<(), String>)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// Waits (up to 5 s after `since`) until `file` under every target reads back as `expected`;
/// returns how long that took.
fn wait_readable(targets: &[PathBuf], file: &str, expected: &[u8], since: Instant) -> Duration {
    let deadline = since + Duration::from_secs(5);
    loop {
        let ok = targets
            .iter()
            .all(|t| std::fs::read(t.join(file)).is_ok_and(|b| b == expected));
        if ok {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "targets not readable again within 5 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn killed_daemon_is_restarted_and_readers_recover() {
    let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    let tree = small_tree();
    let bucket = dataset(&server, &tree);
    let env = Env::new();
    let plugin = env.start_plugin();
    let csi = Csi {
        env: &env,
        plugin: &plugin,
    };
    let staging = env.path("staging");
    let vol = unique_name("vol");
    csi.stage(stage_req(
        &vol,
        &staging,
        &context(&server, &bucket.name),
        &s3_secrets(&server),
    ))
    .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
    let root_target = env.path("pods/a/mount");
    let sub_target = env.path("pods/b/mount");
    csi.publish(publish_req(&vol, &staging, &root_target, true, None))
        .unwrap();
    csi.publish(publish_req(
        &vol,
        &staging,
        &sub_target,
        false,
        Some("sizes"),
    ))
    .unwrap();
    let expected = tree.files["sizes/block+1"].to_vec();
    let reader = Reader::start(root_target.join("sizes/block+1"), expected.clone());
    std::thread::sleep(Duration::from_millis(300));

    for round in 1..=2 {
        let old = env.daemon_pid(&vol).expect("pid");
        let killed_at = Instant::now();
        kill(old, libc::SIGKILL);
        env.wait_new_daemon(&vol, old);
        // The supervisor starts a new daemon and re-binds both targets.
        let took = wait_readable(
            std::slice::from_ref(&root_target),
            "sizes/block+1",
            &expected,
            killed_at,
        );
        let sub_took = wait_readable(
            std::slice::from_ref(&sub_target),
            "block+1",
            &expected,
            killed_at,
        );
        let new = env.daemon_pid(&vol).expect("pid");
        assert_ne!(new, old, "a new daemon");
        assert!(process_alive(new));
        eprintln!(
            "round {round}: kill -9 of fluid-fuse {old} -> readable again through the targets after {} ms (sub path target {} ms), new pid {new}",
            took.as_millis(),
            sub_took.as_millis()
        );
        assert_eq!(
            mount_count(&staging),
            1,
            "one live mount at the staging path"
        );
        // The new bind goes on top of the dead one (so that it reaches containers holding a
        // slave copy of the target); the dead ones leave at unpublish.
        for t in [&root_target, &sub_target] {
            assert_eq!(mount_count(t), round + 1, "{}", t.display());
            assert_eq!(top_mount_dev(t), top_mount_dev(&staging), "{}", t.display());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let log = reader.finish();
    let mismatches: Vec<_> = log
        .iter()
        .filter(|(_, r)| matches!(r, Err(e) if e.starts_with("MISMATCH")))
        .collect();
    assert!(mismatches.is_empty(), "wrong bytes read: {mismatches:?}");
    let errors = log.iter().filter(|(_, r)| r.is_err()).count();
    let last_ok = log.iter().rev().take(5).all(|(_, r)| r.is_ok());
    eprintln!(
        "reader: {} reads, {errors} transient errors, e.g. {:?}",
        log.len(),
        log.iter().find_map(|(_, r)| r.as_ref().err())
    );
    assert!(
        last_ok,
        "the reader recovered by itself: {:?}",
        &log[log.len().saturating_sub(5)..]
    );
    // The read-only flag and sub path survived the re-bind.
    assert!(
        mount_options(&root_target)
            .unwrap()
            .split(',')
            .any(|o| o == "ro")
    );
    assert!(sub_target.join("block+1").is_file());
    let stats = csi.stats(&vol, &root_target.display().to_string()).unwrap();
    assert!(stats.usage[0].total > 0);

    csi.unpublish(&vol, &root_target).unwrap();
    csi.unpublish(&vol, &sub_target).unwrap();
    csi.unstage(&vol, &staging).unwrap();
    env.assert_no_mounts();
}

#[test]
fn plugin_restart_adopts_running_daemons() {
    let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    let tree = small_tree();
    let bucket = dataset(&server, &tree);
    let env = Env::new();
    let mut plugin = env.start_plugin();
    let staging = env.path("staging");
    let target = env.path("pods/a/mount");
    let vol = unique_name("vol");
    {
        let csi = Csi {
            env: &env,
            plugin: &plugin,
        };
        csi.stage(stage_req(
            &vol,
            &staging,
            &context(&server, &bucket.name),
            &s3_secrets(&server),
        ))
        .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
        csi.publish(publish_req(&vol, &staging, &target, false, None))
            .unwrap();
    }
    let deep = target.join("a/b/c/deep.txt");
    assert_eq!(std::fs::read(&deep).unwrap(), b"deep\n");
    let pid = env.daemon_pid(&vol).unwrap();

    // SIGTERM: the plugin exits cleanly; the daemon and the mounts stay.
    let status = plugin.stop();
    assert!(status.success(), "{status:?}\n{}", plugin.log());
    assert!(process_alive(pid), "fluid-fuse survives the plugin");
    assert_eq!(std::fs::read(&deep).unwrap(), b"deep\n");
    // While no plugin runs, the target loses its bind mount and a stale folder appears in
    // the state dir: the next plugin re-binds the one and removes the other.
    fluid_tests::daemon::lazy_unmount(&target);
    assert_eq!(mount_count(&target), 0);
    let junk = env.state_dir().join("junk-without-record");
    std::fs::create_dir(&junk).unwrap();

    // A new plugin on the same state dir adopts the daemon: same pid, one mount. It is
    // configured with another fluid-fuse binary (a newer release: here the same program
    // with bytes appended), so it upgrades the daemon's serving process to it.
    let newer = env.path("fluid-fuse-next");
    let mut bytes = std::fs::read(binary("fluid-fuse")).unwrap();
    bytes.extend_from_slice(b"next release");
    std::fs::write(&newer, &bytes).unwrap();
    std::fs::set_permissions(&newer, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut plugin = Plugin::start_with(&env, &[format!("--fuse-binary={}", newer.display())]);
    {
        let csi = Csi {
            env: &env,
            plugin: &plugin,
        };
        // Stats go through the volume's lock, so they answer once recovery is done.
        csi.stats(&vol, &target.display().to_string())
            .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
        assert_eq!(env.daemon_pid(&vol), Some(pid), "{}", plugin.log());
        assert!(!junk.exists(), "stale state folder removed");
        assert!(process_alive(pid));
        assert_eq!(mount_count(&staging), 1);
        assert_eq!(mount_count(&target), 1);
        assert_eq!(std::fs::read(&deep).unwrap(), b"deep\n");
        assert!(plugin.log().contains("adopted"), "{}", plugin.log());
        assert!(
            plugin.log().contains("upgraded fluid-fuse"),
            "{}",
            plugin.log()
        );
        let serving = fluid_tests::daemon::serving_pids(pid);
        assert_eq!(serving.len(), 1, "{serving:?}");
        assert_eq!(
            std::fs::read_link(format!("/proc/{}/exe", serving[0])).unwrap(),
            newer,
            "the serving process runs the plugin's binary"
        );
        // Publishing the same target again is still idempotent.
        csi.publish(publish_req(&vol, &staging, &target, false, None))
            .unwrap();
        assert_eq!(mount_count(&target), 1);
    }

    // The adopted daemon is still supervised: kill -9 brings a new one, readers recover.
    let killed_at = Instant::now();
    kill(pid, libc::SIGKILL);
    env.wait_new_daemon(&vol, pid);
    let took = wait_readable(
        std::slice::from_ref(&target),
        "a/b/c/deep.txt",
        b"deep\n",
        killed_at,
    );
    let pid2 = env.daemon_pid(&vol).unwrap();
    assert_ne!(pid2, pid);
    eprintln!(
        "adopted daemon killed -> readable again after {} ms",
        took.as_millis()
    );

    // A crashed plugin, and the daemon dies while no plugin runs: the next plugin restarts
    // it from the record and re-binds the target.
    plugin.crash();
    kill(pid2, libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(200));
    assert!(std::fs::read(&deep).is_err(), "no daemon, no data");
    let started = Instant::now();
    let plugin = env.start_plugin();
    let took = wait_readable(
        std::slice::from_ref(&target),
        "a/b/c/deep.txt",
        b"deep\n",
        started,
    );
    let pid3 = env.daemon_pid(&vol).unwrap();
    assert!(pid3 != pid2 && process_alive(pid3));
    eprintln!(
        "daemon dead at plugin start -> restarted and readable after {} ms",
        took.as_millis()
    );
    assert_eq!(mount_count(&staging), 1);
    // The new daemon's bind on top of the dead one (see killed_daemon_is_restarted...).
    assert_eq!(top_mount_dev(&target), top_mount_dev(&staging));

    let csi = Csi {
        env: &env,
        plugin: &plugin,
    };
    csi.unpublish(&vol, &target).unwrap();
    csi.unstage(&vol, &staging).unwrap();
    assert!(!process_alive(pid3));
    env.assert_no_mounts();
}

#[test]
fn a_daemon_that_fails_or_hangs_fails_the_stage_with_its_log() {
    let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    let bucket = server
        .temp_bucket("csinode")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let env = Env::new();
    let staging = env.path("staging");
    let ctx = context(&server, &bucket.name);

    // A wrong secret: fluid-fuse exits before mounting; the error quotes its log, never the
    // secret, and nothing stays behind.
    {
        let plugin = env.start_plugin();
        let csi = Csi {
            env: &env,
            plugin: &plugin,
        };
        let vol = unique_name("vol");
        let mut sec = s3_secrets(&server);
        sec.insert("secret-key".into(), "wrong-secret-value".into());
        let err = csi
            .stage(stage_req(&vol, &staging, &ctx, &sec))
            .expect_err("a wrong secret cannot mount");
        assert_eq!(err.code(), Code::Internal, "{err:?}");
        let msg = err.message();
        assert!(
            msg.contains("before it mounted") && msg.contains("end of its log"),
            "{msg}"
        );
        assert!(msg.contains(&format!("s3://{}", bucket.name)), "{msg}");
        assert!(!msg.contains("wrong-secret-value"), "secret leaked: {msg}");
        assert!(!plugin.log().contains("wrong-secret-value"));
        assert_eq!(mount_count(&staging), 0);
        assert!(!env.state_dir().join(&vol).exists(), "state cleaned");
        // The failed stage let go of its staging path: another volume may take it.
        let other = unique_name("other");
        csi.stage(stage_req(&other, &staging, &ctx, &s3_secrets(&server)))
            .unwrap_or_else(|e| panic!("the staging path is still claimed: {e:?}"));
        csi.unstage(&other, &staging).unwrap();
        // The right secret works afterwards.
        csi.stage(stage_req(&vol, &staging, &ctx, &s3_secrets(&server)))
            .unwrap();
        csi.unstage(&vol, &staging).unwrap();
    }

    // A daemon that never becomes ready is killed after --ready-timeout.
    let fake = env.path("fake-fluid-fuse");
    let fake_pid = env.path("fake.pid");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"fake fluid-fuse starting\"\necho $$ > {}\nexec sleep 60\n",
            fake_pid.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let plugin = Plugin::start_with(
        &env,
        &[
            format!("--fuse-binary={}", fake.display()),
            "--ready-timeout=1s".into(),
        ],
    );
    let csi = Csi {
        env: &env,
        plugin: &plugin,
    };
    let vol = unique_name("vol");
    let t0 = Instant::now();
    let err = csi
        .stage(stage_req(&vol, &staging, &ctx, &s3_secrets(&server)))
        .expect_err("never ready");
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(err.code(), Code::Internal);
    assert!(
        err.message().contains("did not mount within 1s")
            && err.message().contains("fake fluid-fuse starting"),
        "{}",
        err.message()
    );
    let pid: u32 = std::fs::read_to_string(&fake_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!process_alive(pid), "the hung daemon was killed");
    env.assert_no_mounts();
}
