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

/// CreateVolume refuses every setting NodeStageVolume would refuse, so that a bad StorageClass
/// fails at provisioning with the field named, not later as a mount error in a pod's events.
/// The same table runs against both plugins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_volume_refuses_what_node_stage_refuses() {
    let dir = tempfile::Builder::new()
        .prefix("csi-controller")
        .tempdir()
        .unwrap();
    let mut controller = Plugin::start(dir.path());
    let (_, mut c) = controller.connect().await;
    let node_dir = PluginDir::new().unwrap();
    let node = NodePlugin::start(&node_dir, "n1", &[], &[])
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));

    for (i, case) in BAD_SETTINGS.iter().enumerate() {
        let options: Vec<String> = case
            .options
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let options = options.join(",");
        let mut kv = vec![("mountPoint", case.mount_point)];
        if !options.is_empty() {
            kv.push(("mountOptions", &options));
        }
        kv.extend(case.tiers.map(|t| ("tiers", t)));
        kv.extend(case.block_size.map(|b| ("blockSize", b)));
        let created = c.create_volume(create_req(&format!("bad-{i}"), &kv)).await;
        expect_code(
            case.what,
            created,
            Code::InvalidArgument,
            case.controller_field,
        );

        let mounts = serde_json::json!([{
            "mountPoint": case.mount_point,
            "name": "data",
            "path": "/",
            "options": case.options.iter().copied().collect::<HashMap<_, _>>(),
        }]);
        let mut context = HashMap::from([(MOUNTS.to_string(), mounts.to_string())]);
        context.extend(case.tiers.map(|t| (TIERS.to_string(), t.to_string())));
        context.extend(
            case.block_size
                .map(|b| (BLOCK_SIZE.to_string(), b.to_string())),
        );
        let staging = node_dir.path(&format!("stage-{i}"));
        let staged = node
            .stage(&format!("bad-{i}"), &staging, &context, &HashMap::new())
            .await;
        let status = staged.expect_err(case.what);
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{}: {status:?}",
            case.what
        );
        assert!(
            status.message().contains(case.node_field),
            "{}: {:?} should name {:?}",
            case.what,
            status.message(),
            case.node_field
        );
        assert!(!status.message().contains(SECRET_VALUE), "{}", case.what);
    }
    assert!(node_dir.mounts().is_empty(), "nothing was mounted");
    assert!(
        !controller.log().contains(SECRET_VALUE),
        "a secret reached the log"
    );
    assert!(
        !node.log().contains(SECRET_VALUE),
        "a secret reached the node log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_right_code_and_name_the_field() {
    let dir = tempfile::Builder::new()
        .prefix("csi-controller")
        .tempdir()
        .unwrap();
    let mut plugin = Plugin::start(dir.path());
    let (_, mut c) = plugin.connect().await;
    let ds = [("dataset", "imagenet")];

    let mut r = create_req("", &ds);
    r.name.clear();
    expect_code(
        "missing name",
        c.create_volume(r).await,
        Code::InvalidArgument,
        "name",
    );
    let mut r = create_req("v", &ds);
    r.volume_capabilities.clear();
    expect_code(
        "missing capabilities",
        c.create_volume(r).await,
        Code::InvalidArgument,
        "volume_capabilities",
    );
    let mut r = create_req("v", &ds);
    r.volume_capabilities.push(block_cap());
    expect_code(
        "block access",
        c.create_volume(r).await,
        Code::InvalidArgument,
        "volume_capabilities[1]",
    );
    let mut r = create_req("v", &ds);
    r.volume_capabilities[0].access_mode = None;
    expect_code(
        "no access mode",
        c.create_volume(r).await,
        Code::InvalidArgument,
        "access_mode",
    );
    let r = create_req("v", &[("dataset", "imagenet"), ("mountPoint", "s3://b")]);
    expect_code(
        "dataset and mountPoint",
        c.create_volume(r).await,
        Code::InvalidArgument,
        "not both",
    );
    let r = create_req("v", &[]);
    expect_code(
        "neither dataset nor mountPoint",
        c.create_volume(r).await,
        Code::InvalidArgument,
        "mountPoint",
    );
    let r = create_req("v", &[("dataset", "imagenet2")]);
    expect_code(
        "unknown dataset",
        c.create_volume(r).await,
        Code::NotFound,
        "parameters.dataset",
    );
    // `other` lives in team-b: a PVC in ml never sees it, by name or by namespace/name.
    let r = create_req("v", &[("dataset", "other")]);
    expect_code(
        "dataset of another namespace",
        c.create_volume(r).await,
        Code::NotFound,
        "not found in namespace \"ml\"",
    );
    let r = create_req("v", &[("dataset", "team-b/other")]);
    expect_code(
        "namespaced dataset name",
        c.create_volume(r).await,
        Code::InvalidArgument,
        "parameters.dataset",
    );
    let mut r = create_req("v", &[("dataset", "imagenet")]);
    r.parameters.remove(PVC_NAMESPACE);
    expect_code(
        "no PVC namespace means default",
        c.create_volume(r).await,
        Code::NotFound,
        "\"default\"",
    );
    let r = create_req("v", &[("mountPoint", "ftp://host/x")]);
    expect_code(
        "bad mountPoint URL",
        c.create_volume(r).await,
        Code::InvalidArgument,
        "parameters.mountPoint",
    );
    let r = create_req("v", &[("mountPoint", "s3://ak:sk@bucket")]);
    expect_code(
        "credentials in the URL",
        c.create_volume(r).await,
        Code::InvalidArgument,
        "parameters.mountPoint",
    );
    let opts = format!("endpoint=http://127.0.0.1:8333,secret-key={SECRET_VALUE}");
    let r = create_req(
        "v",
        &[("mountPoint", "s3://bucket"), ("mountOptions", &opts)],
    );
    expect_code(
        "secret in mountOptions",
        c.create_volume(r).await,
        Code::InvalidArgument,
        "parameters.mountOptions.secret-key",
    );
    let r = create_req(
        "v",
        &[("mountPoint", "s3://bucket"), ("password", SECRET_VALUE)],
    );
    expect_code(
        "secret parameter",
        c.create_volume(r).await,
        Code::InvalidArgument,
        "parameters.password",
    );
    let r = create_req("v", &[("dataset", "imagenet"), ("colour", "red")]);
    expect_code(
        "unknown parameter",
        c.create_volume(r).await,
        Code::InvalidArgument,
        "colour",
    );
    let r = create_req("v", &[("dataset", "imagenet"), ("tiers", "mem:lots")]);
    expect_code(
        "bad tiers",
        c.create_volume(r).await,
        Code::InvalidArgument,
        "parameters.tiers",
    );
    let r = create_req("v", &[("dataset", "imagenet"), ("blockSize", "big")]);
    expect_code(
        "bad blockSize",
        c.create_volume(r).await,
        Code::InvalidArgument,
        "parameters.blockSize",
    );
    let r = create_req("v", &[("dataset", "imagenet"), ("subPath", "../etc")]);
    expect_code(
        "bad subPath",
        c.create_volume(r).await,
        Code::InvalidArgument,
        "parameters.subPath",
    );
    let mut r = create_req("v", &ds);
    r.capacity_range = Some(CapacityRange {
        required_bytes: 2 << 30,
        limit_bytes: 1 << 30,
    });
    expect_code(
        "limit < required",
        c.create_volume(r).await,
        Code::InvalidArgument,
        "capacity_range.limit_bytes",
    );
    let mut r = create_req("v", &ds);
    r.volume_content_source = Some(VolumeContentSource::default());
    expect_code(
        "content source",
        c.create_volume(r).await,
        Code::InvalidArgument,
        "volume_content_source",
    );

    expect_code(
        "DeleteVolume without id",
        c.delete_volume(DeleteVolumeRequest::default()).await,
        Code::InvalidArgument,
        "volume_id",
    );
    let gone = DeleteVolumeRequest {
        volume_id: "fluid-no-such-volume".into(),
        secrets: params(&[("secret-key", SECRET_VALUE)]),
    };
    c.delete_volume(gone)
        .await
        .expect("DeleteVolume of an unknown id is OK");

    let validate = |id: &str, caps: Vec<VolumeCapability>| ValidateVolumeCapabilitiesRequest {
        volume_id: id.into(),
        volume_capabilities: caps,
        ..Default::default()
    };
    let snw = || vec![mount_cap(access_mode::Mode::SingleNodeWriter)];
    expect_code(
        "Validate without id",
        c.validate_volume_capabilities(validate("", snw())).await,
        Code::InvalidArgument,
        "volume_id",
    );
    expect_code(
        "Validate unknown id",
        c.validate_volume_capabilities(validate("fluid-nope", snw()))
            .await,
        Code::NotFound,
        "fluid-nope",
    );
    expect_code(
        "ListVolumes negative max_entries",
        c.list_volumes(ListVolumesRequest {
            max_entries: -1,
            starting_token: String::new(),
        })
        .await,
        Code::InvalidArgument,
        "max_entries",
    );
    expect_code(
        "ListVolumes bad token",
        c.list_volumes(ListVolumesRequest {
            max_entries: 0,
            starting_token: "invalid-token".into(),
        })
        .await,
        Code::Aborted,
        "starting_token",
    );
    expect_code(
        "GetCapacity",
        c.get_capacity(GetCapacityRequest::default()).await,
        Code::Unimplemented,
        "GetCapacity",
    );
    expect_code(
        "ControllerPublishVolume",
        c.controller_publish_volume(ControllerPublishVolumeRequest::default())
            .await,
        Code::Unimplemented,
        "ControllerPublishVolume",
    );

    // A good volume, created with CSI secrets attached: they must not reach the log.
    let mut r = create_req("good", &ds);
    r.secrets = params(&[("secret-key", SECRET_VALUE)]);
    let vol = c
        .create_volume(r)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let caps = vec![
        mount_cap(access_mode::Mode::SingleNodeWriter),
        mount_cap(access_mode::Mode::MultiNodeReaderOnly),
    ];
    let ok = c
        .validate_volume_capabilities(validate(&vol.volume_id, caps.clone()))
        .await
        .unwrap()
        .into_inner();
    let confirmed = ok.confirmed.expect("mount capabilities are confirmed");
    assert_eq!(confirmed.volume_capabilities, caps);
    assert_eq!(ok.message, "");
    let no = c
        .validate_volume_capabilities(validate(&vol.volume_id, vec![block_cap()]))
        .await
        .unwrap()
        .into_inner();
    assert!(
        no.confirmed.is_none() && no.message.contains("block"),
        "{no:?}"
    );
    expect_code(
        "Validate without capabilities",
        c.validate_volume_capabilities(validate(&vol.volume_id, vec![]))
            .await,
        Code::InvalidArgument,
        "volume_capabilities",
    );

    assert_eq!(plugin.stop().code(), Some(0), "{}", plugin.log());
    let log = plugin.log();
    assert!(log.contains("volume created"), "{log}");
    assert!(
        !log.contains(SECRET_VALUE),
        "the log shows a secret:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_is_idempotent_lists_in_pages_and_survives_restart() {
    let dir = tempfile::Builder::new()
        .prefix("csi-controller")
        .tempdir()
        .unwrap();
    let mut plugin = Plugin::start(dir.path());
    let (_, mut c) = plugin.connect().await;

    // A Dataset volume: the context carries what the node needs, and nothing secret.
    let req = create_req(
        "pvc-imagenet",
        &[("dataset", "imagenet"), ("subPath", "train")],
    );
    let v1 = c
        .create_volume(req.clone())
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert!(
        v1.volume_id.starts_with("fluid-") && v1.volume_id.len() <= 128,
        "{}",
        v1.volume_id
    );
    assert_eq!(v1.capacity_bytes, 1 << 30);
    let ctx = VolumeContext::from_map(&v1.volume_context).expect("the node can read the context");
    assert_eq!(ctx.dataset.as_deref(), Some("ml/imagenet"));
    assert_eq!(ctx.mounts.len(), 2);
    assert_eq!(
        ctx.tiers.map(|t| t.to_string()).as_deref(),
        Some("mem:512MiB")
    );
    assert_eq!(
        ctx.block_size.map(|b| b.to_string()).as_deref(),
        Some("1MiB")
    );
    assert_eq!(ctx.sub_path.as_deref(), Some("train"));

    // The same request again (a provisioner retry): the same volume.
    let v2 = c
        .create_volume(req.clone())
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(v1, v2);
    // Same name, other capacity or other parameters: ALREADY_EXISTS.
    let mut bigger = req.clone();
    bigger.capacity_range = Some(CapacityRange {
        required_bytes: 2 << 30,
        limit_bytes: 2 << 30,
    });
    expect_code(
        "other capacity",
        c.create_volume(bigger).await,
        Code::AlreadyExists,
        "pvc-imagenet",
    );
    let mut other = req.clone();
    other.parameters.insert("subPath".into(), "val".into());
    expect_code(
        "other parameters",
        c.create_volume(other).await,
        Code::AlreadyExists,
        "pvc-imagenet",
    );
    // The team-b Dataset from a team-b PVC: found there.
    let tb = create_req(
        "pvc-other",
        &[("dataset", "other"), (PVC_NAMESPACE, "team-b")],
    );
    let tb = c
        .create_volume(tb)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(
        tb.volume_context
            .get("fluid.io/dataset")
            .map(String::as_str),
        Some("team-b/other")
    );
    // An inline mount point volume, without capacity.
    let mut inline = create_req(
        "pvc-inline",
        &[
            ("mountPoint", "s3://bucket/prefix"),
            (
                "mountOptions",
                "endpoint=http://127.0.0.1:8333,path-style=true",
            ),
            ("tiers", "mem:64MiB"),
        ],
    );
    inline.capacity_range = None;
    let inline = c
        .create_volume(inline)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(inline.capacity_bytes, 0);
    let ictx = VolumeContext::from_map(&inline.volume_context).unwrap();
    assert_eq!(ictx.dataset, None);
    assert_eq!(ictx.mounts[0].mount_point, "s3://bucket/prefix");

    // Delete one, then five more volumes: ListVolumes pages through all of them by 2.
    c.delete_volume(DeleteVolumeRequest {
        volume_id: inline.volume_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    c.delete_volume(DeleteVolumeRequest {
        volume_id: inline.volume_id.clone(),
        ..Default::default()
    })
    .await
    .expect("deleting twice is OK");
    let mut expected: BTreeSet<String> = [v1.volume_id.clone(), tb.volume_id.clone()].into();
    for i in 0..5 {
        let r = create_req(&format!("pvc-page-{i}"), &[("mountPoint", "local:///tmp")]);
        expected.insert(
            c.create_volume(r)
                .await
                .unwrap()
                .into_inner()
                .volume
                .unwrap()
                .volume_id,
        );
    }
    assert_eq!(expected.len(), 7);
    let all = list_in_pages(&mut c, 2).await;
    assert_eq!(
        all,
        expected.iter().cloned().collect::<Vec<_>>(),
        "pages in id order, no repeats"
    );
    let everything = c
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(everything.entries.len(), 7);
    assert!(everything.next_token.is_empty());
    assert!(everything.entries.iter().all(|e| e.status.is_none()));
    expect_code(
        "bad token",
        c.list_volumes(ListVolumesRequest {
            max_entries: 2,
            starting_token: "not-a-token".into(),
        })
        .await,
        Code::Aborted,
        "starting_token",
    );

    // Restart on the same state dir: the volumes are still there, and still idempotent.
    assert_eq!(plugin.stop().code(), Some(0), "{}", plugin.log());
    drop(c);
    let mut plugin = Plugin::start(dir.path());
    let (_, mut c) = plugin.connect().await;
    assert_eq!(
        list_in_pages(&mut c, 3).await,
        expected.iter().cloned().collect::<Vec<_>>()
    );
    let again = c
        .create_volume(req)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(again, v1);
    assert_eq!(plugin.stop().code(), Some(0), "{}", plugin.log());
}

async fn list_in_pages(c: &mut ControllerClient<Channel>, page: i32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let r = c
            .list_volumes(ListVolumesRequest {
                max_entries: page,
                starting_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.entries.len() <= page as usize);
        ids.extend(r.entries.into_iter().map(|e| e.volume.unwrap().volume_id));
        if r.next_token.is_empty() {
            return ids;
        }
        token = r.next_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_capabilities_and_sigterm() {
    let dir = tempfile::Builder::new()
        .prefix("csi-controller")
        .tempdir()
        .unwrap();
    let mut plugin = Plugin::start_with(dir.path(), &["--health-listen=127.0.0.1:0".to_string()]);
    let (mut identity, mut c) = plugin.connect().await;
    let health_port = logged_listen(|| plugin.log(), "liveness probes")
        .unwrap()
        .port();
    // The liveness probe's answer, from the plugin itself (its CSI endpoint answers Probe).
    let health = tokio::task::spawn_blocking(move || http_get(health_port, "/healthz"))
        .await
        .unwrap()
        .unwrap();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    let info = identity
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, DRIVER);
    assert!(!info.vendor_version.is_empty());
    let caps = identity
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let controller_service = PluginCapability {
        r#type: Some(plugin_capability::Type::Service(
            plugin_capability::Service {
                r#type: service::Type::ControllerService as i32,
            },
        )),
    };
    assert!(caps.capabilities.contains(&controller_service), "{caps:?}");
    assert_eq!(
        identity
            .probe(ProbeRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready,
        Some(true)
    );

    let caps = c
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut rpcs: Vec<i32> = caps
        .capabilities
        .iter()
        .map(|cap| match &cap.r#type {
            Some(controller_service_capability::Type::Rpc(r)) => r.r#type,
            None => panic!("capability without a type"),
        })
        .collect();
    rpcs.sort();
    assert_eq!(
        rpcs,
        [
            rpc::Type::CreateDeleteVolume as i32,
            rpc::Type::ListVolumes as i32
        ]
    );

    assert!(plugin.socket.exists());
    let status = plugin.stop();
    assert_eq!(status.code(), Some(0), "{}", plugin.log());
    assert!(
        !plugin.socket.exists(),
        "the socket file is removed on SIGTERM"
    );
}

#[test]
fn a_bad_catalogue_stops_the_start_naming_document_and_field() {
    let dir = tempfile::Builder::new()
        .prefix("csi-controller")
        .tempdir()
        .unwrap();
    let bad = CATALOGUE.replace("mountPoint: \"local:///tmp\"", "mountPoint: \"ftp://x\"");
    std::fs::write(dir.path().join("datasets.yaml"), bad).unwrap();
    let mut plugin = Plugin::start(dir.path());
    let mut child = plugin.child.take().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    let log = plugin.log();
    assert!(
        log.contains("document 2 (team-b/other)") && log.contains("spec.mounts[0].mountPoint"),
        "{log}"
    );
    assert!(!plugin.socket.exists());
}
