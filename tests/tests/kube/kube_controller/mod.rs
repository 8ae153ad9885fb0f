//! fluid-csi-controller with `--kubernetes` against the test kube-apiserver: a Dataset and its
//! CacheRuntime become a pre-bound PV and PVC with the credentials in a node-stage Secret, the
//! status shows phase, `ufsTotal` and `fileNum` of a real SeaweedFS bucket; Secrets and
//! Datasets never cross namespaces; CreateVolume resolves Datasets from the API server; the
//! schema refuses bad Datasets; deletion waits for the pods that use the PVC; cacheStates follow
//! reads through a node plugin's mount, and a node keeps the Dataset's daemon after its pods leave
//! until the CacheRuntime is deleted (cleanPolicy OnRuntimeDeleted); DataLoads warm the nodes that serve a Dataset (once, on
//! a cron schedule, never across namespaces) and expire.
//!
//! Needs SeaweedFS and the kube-apiserver (`scripts/services.sh up seaweedfs kube`) and the
//! binaries built (`cargo build --workspace --bins`). The apiserver has no controller-manager,
//! so PV and PVC stay `Pending` (nothing binds them): the test checks that they name each other.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result, bail};
use csi_controller::crd::{self, CacheRuntime, DataLoad, DataLoadPhase, Dataset, DatasetPhase};
use csi_controller::reconcile::objects::pv_name;
use fluid_proto::Endpoint;
use fluid_proto::cache_auth::{BearerToken, TOKEN_ENV};
use fluid_proto::csi::volume_capability::{AccessMode, AccessType, MountVolume, access_mode};
use fluid_proto::csi::{CreateVolumeRequest, VolumeCapability};
use fluid_proto::fluid::{GetStatsRequest, GetStatsResponse};
use fluid_tests::controller::ControllerProcess;
use fluid_tests::kube::{
    Kube, apply_crds, kubeconfig_path, unique_name, wait_for, wait_for_object,
};
use fluid_tests::node_plugin::{NodePlugin, PluginDir};
use fluid_tests::services::{S3Server, TempBucket};
use fluid_volume::context::{DATASET, MOUNT_SECRETS, MOUNTS, TIERS};
use fluid_volume::labels::dataset_label_key;
use fluid_volume::size::human_size;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::serde_json::{self, json};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use tonic::Code;

/// The bucket's files: 3 files, 6000 bytes, two levels of directories.
const FILES: [(&str, usize); 3] = [("a/one", 1000), ("a/two", 2000), ("b/c/three", 3000)];

async fn bucket(server: &S3Server) -> Result<TempBucket> {
    let bucket = server.temp_bucket("kubectl")?;
    let client = server.client();
    for (key, len) in FILES {
        client
            .put_object()
            .bucket(&bucket.name)
            .key(key)
            .body(vec![7u8; len].into())
            .send()
            .await
            .with_context(|| format!("uploading {key}"))?;
    }
    Ok(bucket)
}

fn dataset(name: &str, server: &S3Server, bucket: &str, secret: &str) -> Result<Dataset> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "data.fluid.io/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": name},
        "spec": {
            "mounts": [{
                "mountPoint": format!("s3://{bucket}"),
                "name": "data",
                "options": {"endpoint": server.endpoint, "region": server.region},
                "encryptOptions": [
                    {"name": "access-key", "valueFrom": {"secretKeyRef": {"name": secret, "key": "ak"}}},
                    {"name": "secret-key", "valueFrom": {"secretKeyRef": {"name": secret, "key": "sk"}}}
                ]
            }]
        }
    }))?)
}

fn runtime(name: &str) -> Result<CacheRuntime> {
    runtime_with_quota(name, "64Mi")
}

fn runtime_with_quota(name: &str, quota: &str) -> Result<CacheRuntime> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "data.fluid.io/v1alpha1",
        "kind": "CacheRuntime",
        "metadata": {"name": name},
        "spec": {
            "tieredstore": {"levels": [{"mediumtype": "MEM", "quota": quota}]},
            "fuse": {"nodeSelector": {"fluid-test": "yes"}}
        }
    }))?)
}

fn credentials(server: &S3Server) -> Result<Secret> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s3cred"},
        "stringData": {"ak": server.access_key, "sk": server.secret_key}
    }))?)
}

fn pod_using(claim: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "trainer"},
        "spec": {
            "containers": [{"name": "main", "image": "busybox", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
        }
    }))?)
}

fn phase(ds: &Dataset) -> Option<DatasetPhase> {
    ds.status.as_ref().and_then(|s| s.phase)
}

fn condition<'a>(ds: &'a Dataset, type_: &str) -> Option<&'a crd::DatasetCondition> {
    ds.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
}

fn create_request(dataset: &str, namespace: &str) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: format!("pvc-{namespace}-{dataset}"),
        volume_capabilities: vec![VolumeCapability {
            access_mode: Some(AccessMode {
                mode: access_mode::Mode::MultiNodeReaderOnly as i32,
            }),
            access_type: Some(AccessType::Mount(MountVolume::default())),
        }],
        parameters: HashMap::from([
            ("dataset".to_string(), dataset.to_string()),
            (
                "csi.storage.k8s.io/pvc/namespace".to_string(),
                namespace.to_string(),
            ),
            (
                "csi.storage.k8s.io/pvc/name".to_string(),
                "claim".to_string(),
            ),
        ]),
        ..Default::default()
    }
}

/// Kubelet's part, done by hand: NodeStageVolume of a Dataset's PV with the volume attributes
/// and the node-stage Secret the reconciler made.
async fn stage_pv(
    kube: &Kube,
    plugin: &NodePlugin,
    pv_name: &str,
    staging: &std::path::Path,
) -> Result<()> {
    let pv = Api::<PersistentVolume>::all(kube.client.clone())
        .get(pv_name)
        .await?;
    let csi = pv.spec.and_then(|s| s.csi).context("PV csi source")?;
    let mut secrets = HashMap::new();
    if let Some(r) = csi.node_stage_secret_ref {
        let api: Api<Secret> = Api::namespaced(
            kube.client.clone(),
            r.namespace.as_deref().unwrap_or_default(),
        );
        let s = api.get(r.name.as_deref().unwrap_or_default()).await?;
        secrets = csi_controller::reconcile::objects::stage_secrets(&s);
    }
    let context: HashMap<String, String> = csi
        .volume_attributes
        .unwrap_or_default()
        .into_iter()
        .collect();
    std::fs::create_dir_all(staging)?;
    plugin
        .stage(&csi.volume_handle, staging, &context, &secrets)
        .await
        .map_err(|s| anyhow::anyhow!("NodeStageVolume: {s:?}\n{}", plugin.log()))
}

/// Reads every file under `dir` after dropping its pages from the page cache, so the reads
/// reach fluid-fuse.
fn read_all_uncached(dir: &std::path::Path) -> Result<u64> {
    let mut bytes = 0;
    for (key, len) in FILES {
        let path = dir.join(key);
        let data = fluid_tests::read_uncached(&path).with_context(|| path.display().to_string())?;
        assert_eq!(data.len(), len, "{}", path.display());
        bytes += data.len() as u64;
    }
    Ok(bytes)
}

/// The cache-endpoint token the node plugin checks and the controller sends.
const CACHE_TOKEN: &str = "kube-controller-test-token";

/// One node and the controller around Dataset `data` (SeaweedFS, credentials from Secret
/// `s3cred`, a memory tier of `quota` on any node) in a fresh namespace.
struct Cluster {
    // Dropped in this order: the processes before the objects they watch.
    controller: ControllerProcess,
    plugin: NodePlugin,
    dir: PluginDir,
    port: u16,
    node: fluid_tests::kube::Temp<k8s_openapi::api::core::v1::Node>,
    _objects: (
        fluid_tests::kube::Temp<Dataset>,
        fluid_tests::kube::Temp<CacheRuntime>,
        fluid_tests::kube::Temp<Secret>,
    ),
    ns: fluid_tests::kube::Temp<k8s_openapi::api::core::v1::Namespace>,
    _bucket: TempBucket,
    _server: S3Server,
    kube: Kube,
}

impl Cluster {
    async fn start(prefix: &str, quota: &str) -> Result<Cluster> {
        let mut rt = runtime_with_quota("data", quota)?;
        rt.spec.fuse.node_selector.clear();
        Cluster::with_runtime(prefix, rt).await
    }

    /// The same around Dataset `data` with CacheRuntime `rt` (named `data`).
    async fn with_runtime(prefix: &str, rt: CacheRuntime) -> Result<Cluster> {
        let kube = Kube::connect().await?;
        apply_crds(&kube).await?;
        let server = S3Server::seaweedfs()?;
        let bucket = bucket(&server).await?;
        let ns = kube.create_namespace(prefix).await?;
        let secret = kube
            .create_namespaced(&ns.name, &credentials(&server)?)
            .await?;
        let (node, dir, plugin) = start_node(&kube, prefix).await?;
        let port = plugin.cache_port()?;
        let controller = ControllerProcess::start(&[format!("--cache-token={CACHE_TOKEN}")])?;
        let ds = kube
            .create_namespaced(&ns.name, &dataset("data", &server, &bucket.name, "s3cred")?)
            .await?;
        let rt = kube.create_namespaced(&ns.name, &rt).await?;
        Ok(Cluster {
            controller,
            plugin,
            dir,
            port,
            node,
            _objects: (ds, rt, secret),
            ns,
            _bucket: bucket,
            _server: server,
            kube,
        })
    }
}

/// A new Node and its node plugin (`--kubernetes`, a cache endpoint on a loopback port, the
/// test's cache token).
async fn start_node(
    kube: &Kube,
    prefix: &str,
) -> Result<(
    fluid_tests::kube::Temp<k8s_openapi::api::core::v1::Node>,
    PluginDir,
    NodePlugin,
)> {
    let node = kube
        .create_node(&unique_name(&format!("{prefix}-node")))
        .await?;
    let dir = PluginDir::new()?;
    let plugin = NodePlugin::start(
        &dir,
        &node.name,
        &[
            "--kubernetes".into(),
            "--cache-endpoint=tcp://127.0.0.1:0".into(),
            format!("--cache-token={CACHE_TOKEN}"),
        ],
        &[("KUBECONFIG", &kubeconfig_path()?)],
    )
    .await?;
    Ok((node, dir, plugin))
}

fn dataload(name: &str, dataset: &str, extra: serde_json::Value) -> Result<DataLoad> {
    let mut spec = json!({"dataset": {"name": dataset}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "data.fluid.io/v1alpha1",
        "kind": "DataLoad",
        "metadata": {"name": name},
        "spec": spec
    }))?)
}

fn load_phase(dl: &DataLoad) -> Option<DataLoadPhase> {
    dl.status.as_ref().and_then(|s| s.phase)
}

async fn cache_stats(port: u16, dataset: &str) -> Result<GetStatsResponse> {
    let channel = Endpoint::Tcp(([127, 0, 0, 1], port).into())
        .connect()
        .await?;
    let auth = BearerToken::new(Some(CACHE_TOKEN)).map_err(anyhow::Error::msg)?;
    Ok(auth
        .client(channel)
        .get_stats(GetStatsRequest {
            dataset: dataset.to_string(),
        })
        .await?
        .into_inner())
}

mod cache_states;
mod dataloads;
mod datasets;
mod leader;
mod ownership;
mod shared_cache;
