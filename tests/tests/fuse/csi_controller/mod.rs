//! The real `fluid-csi-controller` binary on a unix socket, driven by a CSI client the way the
//! external-provisioner drives it: bad requests, idempotent CreateVolume, ListVolumes paging,
//! records surviving a restart, Identity, and a clean stop on SIGTERM. The controller talks to
//! no storage, so no test server is needed.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use fluid_proto::Endpoint;
use fluid_proto::csi::controller_client::ControllerClient;
use fluid_proto::csi::controller_service_capability::{self, rpc};
use fluid_proto::csi::identity_client::IdentityClient;
use fluid_proto::csi::plugin_capability::{self, service};
use fluid_proto::csi::volume_capability::{
    AccessMode, AccessType, BlockVolume, MountVolume, access_mode,
};
use fluid_proto::csi::*;
use fluid_tests::daemon::binary;
use fluid_tests::node_plugin::{NodePlugin, PluginDir};
use fluid_tests::services::{http_get, logged_listen};
use fluid_volume::context::{BLOCK_SIZE, MOUNTS, TIERS, VolumeContext};
use tonic::transport::Channel;
use tonic::{Code, Response, Status};

const DRIVER: &str = "test.fuse.csi.fluid.io";
const PVC_NAMESPACE: &str = "csi.storage.k8s.io/pvc/namespace";
const SECRET_VALUE: &str = "do-not-log-me-4711";

const CATALOGUE: &str = r#"
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata: {name: imagenet, namespace: ml}
spec:
  mounts:
    - mountPoint: s3://imagenet/train
      name: train
      options: {endpoint: "http://127.0.0.1:8333", region: us-east-1}
    - mountPoint: local:///tmp
      name: scratch
      readOnly: true
  tiers: ["mem:512MiB"]
  blockSize: 1MiB
---
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata: {name: other, namespace: team-b}
spec:
  mounts: [{mountPoint: "local:///tmp", name: data}]
"#;

/// The controller as a child process; stopped with SIGKILL if a test fails half way.
struct Plugin {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
}

impl Plugin {
    /// Starts the binary on `<dir>/csi.sock` with state in `<dir>/state` and `<dir>/datasets.yaml`.
    fn start(dir: &Path) -> Plugin {
        Plugin::start_with(dir, &[])
    }

    /// [`Plugin::start`] with more flags.
    fn start_with(dir: &Path, extra: &[String]) -> Plugin {
        let socket = dir.join("csi.sock");
        let log = dir.join("controller.log");
        let datasets = dir.join("datasets.yaml");
        if !datasets.exists() {
            std::fs::write(&datasets, CATALOGUE).unwrap();
        }
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(binary("fluid-csi-controller"))
            .arg(format!("--endpoint=unix://{}", socket.display()))
            .arg(format!("--state-dir={}", dir.join("state").display()))
            .arg(format!("--datasets={}", datasets.display()))
            .arg(format!("--drivername={DRIVER}"))
            .args(extra)
            .env("FLUID_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starting fluid-csi-controller (built by cargo with the workspace)");
        Plugin {
            child: Some(child),
            socket,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Dials the socket until the server answers (at most 20 s).
    async fn connect(&mut self) -> (IdentityClient<Channel>, ControllerClient<Channel>) {
        let endpoint: Endpoint = format!("unix://{}", self.socket.display()).parse().unwrap();
        for _ in 0..400 {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "fluid-csi-controller exited ({status}) at start:\n{}",
                    self.log()
                );
            }
            if let Ok(channel) = endpoint.connect().await {
                let mut identity = IdentityClient::new(channel.clone());
                if identity.probe(ProbeRequest {}).await.is_ok() {
                    return (identity, ControllerClient::new(channel));
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "fluid-csi-controller did not answer on {}:\n{}",
            endpoint,
            self.log()
        );
    }

    /// SIGTERM, then waits (at most 10 s) for the exit.
    fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        for _ in 0..200 {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        panic!(
            "fluid-csi-controller ignored SIGTERM for 10 s:\n{}",
            self.log()
        );
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn mount_cap(mode: access_mode::Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

fn block_cap() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode {
            mode: access_mode::Mode::SingleNodeWriter as i32,
        }),
    }
}

fn params(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A request as the external-provisioner sends it for a PVC in namespace `ml`.
fn create_req(name: &str, kv: &[(&str, &str)]) -> CreateVolumeRequest {
    let mut parameters = params(kv);
    parameters
        .entry(PVC_NAMESPACE.into())
        .or_insert_with(|| "ml".into());
    parameters.insert(
        "csi.storage.k8s.io/pvc/name".into(),
        format!("claim-{name}"),
    );
    parameters.insert("csi.storage.k8s.io/pv/name".into(), name.into());
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: 1 << 30,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![mount_cap(access_mode::Mode::MultiNodeReaderOnly)],
        parameters,
        ..Default::default()
    }
}

#[track_caller]
fn expect_code<T: Debug>(
    what: &str,
    result: Result<Response<T>, Status>,
    code: Code,
    needle: &str,
) {
    match result {
        Ok(r) => panic!("{what}: expected {code:?}, got OK {:?}", r.get_ref()),
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: {}", s.message());
            assert!(
                s.message().contains(needle),
                "{what}: message {:?} does not name {needle:?}",
                s.message()
            );
            assert!(
                !s.message().contains(SECRET_VALUE),
                "{what}: message shows a secret: {}",
                s.message()
            );
        }
    }
}

/// One setting that the daemon would refuse, written as a StorageClass would give it and as a
/// volume context carries it; what the controller's and the node's errors must name.
struct BadSetting {
    what: &'static str,
    mount_point: &'static str,
    options: &'static [(&'static str, &'static str)],
    tiers: Option<&'static str>,
    block_size: Option<&'static str>,
    /// In CreateVolume's INVALID_ARGUMENT message.
    controller_field: &'static str,
    /// In NodeStageVolume's INVALID_ARGUMENT message.
    node_field: &'static str,
}

const BAD_SETTINGS: &[BadSetting] = &[
    BadSetting {
        what: "block size above 64MiB",
        mount_point: "local:///tmp",
        options: &[],
        tiers: None,
        block_size: Some("128MiB"),
        controller_field: "parameters.blockSize",
        node_field: "volume_context.fluid.io/blockSize",
    },
    BadSetting {
        what: "block size below 64KiB",
        mount_point: "local:///tmp",
        options: &[],
        tiers: None,
        block_size: Some("1KiB"),
        controller_field: "parameters.blockSize",
        node_field: "volume_context.fluid.io/blockSize",
    },
    BadSetting {
        what: "memory tier not first",
        mount_point: "local:///tmp",
        options: &[],
        tiers: Some("ssd:/var/cache/fluid:1GiB;mem:1GiB"),
        block_size: None,
        controller_field: "parameters.tiers",
        node_field: "volume_context.fluid.io/tiers",
    },
    BadSetting {
        what: "one folder in two tiers",
        mount_point: "local:///tmp",
        options: &[],
        tiers: Some("ssd:/var/cache/fluid:1GiB;hdd:/var/cache/fluid/:2GiB"),
        block_size: None,
        controller_field: "parameters.tiers",
        node_field: "volume_context.fluid.io/tiers",
    },
    BadSetting {
        what: "unknown store",
        mount_point: "ftp://host/data",
        options: &[],
        tiers: None,
        block_size: None,
        controller_field: "parameters.mountPoint",
        node_field: "mounts[0].mountPoint",
    },
    BadSetting {
        what: "OSS without an endpoint",
        mount_point: "oss://bucket/data",
        options: &[("region", "cn-hangzhou")],
        tiers: None,
        block_size: None,
        controller_field: "option endpoint",
        node_field: "option endpoint",
    },
    BadSetting {
        what: "path-style not a boolean",
        mount_point: "s3://bucket",
        options: &[("path-style", "sometimes")],
        tiers: None,
        block_size: None,
        controller_field: "option path-style",
        node_field: "option path-style",
    },
    BadSetting {
        what: "a session token as an option",
        mount_point: "s3://bucket",
        options: &[("aws.sessionToken", SECRET_VALUE)],
        tiers: None,
        block_size: None,
        controller_field: "parameters.mountOptions.aws.sessionToken",
        node_field: "mounts[0].options.aws.sessionToken",
    },
    BadSetting {
        what: "an OSS security token as an option",
        mount_point: "oss://bucket",
        options: &[
            ("endpoint", "oss-cn-hangzhou.aliyuncs.com"),
            ("fs.oss.securityToken", SECRET_VALUE),
        ],
        tiers: None,
        block_size: None,
        controller_field: "parameters.mountOptions.fs.oss.securityToken",
        node_field: "mounts[0].options.fs.oss.securityToken",
    },
];

mod lifecycle;
mod requests;
