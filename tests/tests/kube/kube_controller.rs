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

/// Issue 27, hole 2: a Dataset without keys is not walked with the controller's own cloud
/// identity (here AWS keys in its environment, as IRSA or an instance role would be), unless
/// the administrator allows it.
#[tokio::test]
async fn keyless_datasets_are_not_walked_with_the_controllers_identity() -> Result<()> {
    let kube = Kube::connect().await?;
    apply_crds(&kube).await?;
    let server = S3Server::seaweedfs()?;
    let bucket = bucket(&server).await?;
    let mut keyless = dataset("data", &server, &bucket.name, "unused")?;
    keyless.spec.mounts[0].encrypt_options.clear();
    let ambient = [
        ("AWS_ACCESS_KEY_ID", server.access_key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", server.secret_key.as_str()),
    ];
    for (allowed, flags) in [
        (false, vec![]),
        (true, vec!["--allow-ambient-credentials".to_string()]),
    ] {
        let ns = kube.create_namespace("fluid-ambient").await?;
        let controller = ControllerProcess::start_with_env(&flags, &ambient)?;
        let datasets: Api<Dataset> = Api::namespaced(kube.client.clone(), &ns.name);
        let _ds = kube.create_namespaced(&ns.name, &keyless).await?;
        let _rt = kube.create_namespaced(&ns.name, &runtime("data")?).await?;
        let ds = wait_for_object(&datasets, "data", "the walk ended", |d| {
            condition(d, "UfsScanned").is_some_and(|c| {
                c.status == crd::ConditionStatus::True || c.reason.as_deref() == Some("ScanFailed")
            })
        })
        .await
        .with_context(|| controller.log())?;
        let scanned = condition(&ds, "UfsScanned").context("a UfsScanned condition")?;
        let status = ds.status.clone().unwrap_or_default();
        if allowed {
            assert_eq!(scanned.status, crd::ConditionStatus::True, "{scanned:?}");
            assert_eq!(status.file_num.as_deref(), Some("3"));
        } else {
            assert!(
                scanned
                    .message
                    .as_deref()
                    .is_some_and(|m| m.contains("--allow-ambient-credentials")),
                "{scanned:?}"
            );
            assert_eq!(status.file_num, None, "the bucket was walked: {status:?}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn datasets_become_bound_volumes_and_are_cleaned_up() -> Result<()> {
    let kube = Kube::connect().await?;
    apply_crds(&kube).await?;
    let server = S3Server::seaweedfs()?;
    let bucket = bucket(&server).await?;
    let ns_a = kube.create_namespace("fluid-ctl-a").await?;
    let ns_b = kube.create_namespace("fluid-ctl-b").await?;
    let (a, b) = (ns_a.name.as_str(), ns_b.name.as_str());
    let _secret = kube.create_namespaced(a, &credentials(&server)?).await?;
    let controller = ControllerProcess::start(&[])?;
    let datasets_a: Api<Dataset> = Api::namespaced(kube.client.clone(), a);
    let datasets_b: Api<Dataset> = Api::namespaced(kube.client.clone(), b);

    // Without its CacheRuntime a Dataset waits, saying for what.
    let _ds = kube
        .create_namespaced(a, &dataset("data", &server, &bucket.name, "s3cred")?)
        .await?;
    let ds = wait_for_object(&datasets_a, "data", "phase Pending (no runtime)", |d| {
        phase(d) == Some(DatasetPhase::Pending)
    })
    .await
    .with_context(|| controller.log())?;
    let ready = condition(&ds, "Ready").context("a Ready condition")?;
    assert_eq!(ready.reason.as_deref(), Some("NoRuntime"), "{ready:?}");

    // With it: Bound, and the sources' totals.
    let _rt = kube.create_namespaced(a, &runtime("data")?).await?;
    let total: usize = FILES.iter().map(|(_, n)| n).sum();
    let ds = wait_for_object(
        &datasets_a,
        "data",
        "Bound with ufsTotal and fileNum",
        |d| {
            let s = d.status.clone().unwrap_or_default();
            phase(d) == Some(DatasetPhase::Bound) && s.file_num.is_some()
        },
    )
    .await
    .with_context(|| controller.log())?;
    let status = ds.status.clone().unwrap_or_default();
    assert_eq!(status.file_num.as_deref(), Some("3"));
    assert_eq!(status.ufs_total, Some(human_size(total as u64)));
    assert_eq!(
        status.mounts, ds.spec.mounts,
        "status.mounts copies the spec"
    );
    let scanned = condition(&ds, "UfsScanned").context("a UfsScanned condition")?;
    assert_eq!(scanned.status, crd::ConditionStatus::True, "{scanned:?}");

    // The PV and PVC name each other; credentials only in the node-stage Secret.
    let pv_name = format!("{a}-data");
    let pvs: Api<PersistentVolume> = Api::all(kube.client.clone());
    let pv = wait_for_object(&pvs, &pv_name, "exists", |_| true).await?;
    let spec = pv.spec.clone().context("PV spec")?;
    let claim = spec.claim_ref.clone().context("claimRef")?;
    assert_eq!(
        (claim.namespace.as_deref(), claim.name.as_deref()),
        (Some(a), Some("data"))
    );
    assert_eq!(spec.storage_class_name.as_deref(), Some("fluid"));
    let csi = spec.csi.clone().context("PV csi source")?;
    assert_eq!(csi.driver, "fuse.csi.fluid.io");
    assert_eq!(csi.volume_handle, pv_name);
    let attrs = csi.volume_attributes.clone().unwrap_or_default();
    assert_eq!(
        attrs.get(DATASET).map(String::as_str),
        Some(format!("{a}/data").as_str())
    );
    assert!(attrs[MOUNTS].contains(&bucket.name), "{attrs:?}");
    // The CacheRuntime's 64Mi level, in the tiers' one written form.
    assert_eq!(attrs.get(TIERS).map(String::as_str), Some("mem:64MiB"));
    let attrs_text = format!("{attrs:?}");
    assert!(
        !attrs_text.contains(&server.secret_key),
        "secret in the volume attributes"
    );
    let stage = csi
        .node_stage_secret_ref
        .clone()
        .context("nodeStageSecretRef")?;
    assert_eq!(stage.namespace.as_deref(), Some(a));
    let secrets: Api<Secret> = Api::namespaced(kube.client.clone(), a);
    let stage_secret = secrets
        .get(stage.name.as_deref().unwrap_or_default())
        .await?;
    let per_mount: Vec<BTreeMap<String, String>> =
        serde_json::from_slice(&stage_secret.data.clone().unwrap_or_default()[MOUNT_SECRETS].0)?;
    assert_eq!(per_mount[0]["access-key"], server.access_key);
    assert_eq!(per_mount[0]["secret-key"], server.secret_key);
    let affinity = format!("{:?}", spec.node_affinity);
    assert!(affinity.contains("fluid-test"), "{affinity}");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(kube.client.clone(), a);
    let pvc = pvcs.get("data").await?;
    let pvc_spec = pvc.spec.context("PVC spec")?;
    assert_eq!(pvc_spec.volume_name.as_deref(), Some(pv_name.as_str()));
    assert_eq!(pvc_spec.storage_class_name.as_deref(), Some("fluid"));

    // Namespace B cannot use A's Secret: the same Dataset there fails, naming the Secret only.
    let _ds_b = kube
        .create_namespaced(b, &dataset("data", &server, &bucket.name, "s3cred")?)
        .await?;
    let _rt_b = kube.create_namespaced(b, &runtime("data")?).await?;
    let ds_b = wait_for_object(&datasets_b, "data", "phase Failed", |d| {
        phase(d) == Some(DatasetPhase::Failed)
    })
    .await
    .with_context(|| controller.log())?;
    let msg = condition(&ds_b, "Ready")
        .and_then(|c| c.message.clone())
        .unwrap_or_default();
    assert!(msg.contains("s3cred") && msg.contains(b), "{msg}");
    assert!(!msg.contains(&server.secret_key));
    assert!(
        pvs.get_opt(&format!("{b}-data")).await?.is_none(),
        "no PV for a failed Dataset"
    );

    // Dynamic provisioning: CreateVolume finds Datasets in the PVC's namespace only.
    let mut csi_client = controller.csi().await?;
    let vol = csi_client
        .create_volume(create_request("data", a))
        .await?
        .into_inner()
        .volume
        .context("a volume")?;
    assert_eq!(
        vol.volume_context.get(DATASET).map(String::as_str),
        Some(format!("{a}/data").as_str())
    );
    assert!(vol.volume_context[MOUNTS].contains(&bucket.name));
    let only_in_a = dataset("only-in-a", &server, &bucket.name, "s3cred")?;
    let _only = kube.create_namespaced(a, &only_in_a).await?;
    let err = csi_client
        .create_volume(create_request("only-in-a", b))
        .await
        .expect_err("a Dataset of another namespace");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains(b), "{}", err.message());

    // The schema refuses a mount point we cannot read.
    let mut bad = dataset("bad", &server, &bucket.name, "s3cred")?;
    bad.spec.mounts[0].mount_point = "ftp://example.com/data".into();
    match datasets_a.create(&PostParams::default(), &bad).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422, "{e:?}");
            assert!(e.message.contains("mountPoint"), "{}", e.message);
        }
        other => bail!("an ftp:// Dataset was not refused: {other:?}"),
    }

    // Deletion waits while a pod uses the PVC, then removes PV, PVC and Secret.
    let pods: Api<Pod> = Api::namespaced(kube.client.clone(), a);
    pods.create(&PostParams::default(), &pod_using("data")?)
        .await?;
    datasets_a.delete("data", &DeleteParams::default()).await?;
    let waiting = wait_for_object(&datasets_a, "data", "deletion waiting for the pod", |d| {
        condition(d, "Ready").is_some_and(|c| c.reason.as_deref() == Some("Terminating"))
    })
    .await
    .with_context(|| controller.log())?;
    let msg = condition(&waiting, "Ready")
        .and_then(|c| c.message.clone())
        .unwrap_or_default();
    assert!(msg.contains("trainer"), "{msg}");
    assert!(
        pvs.get_opt(&pv_name).await?.is_some(),
        "the PV stays while the pod runs"
    );
    pods.delete("trainer", &DeleteParams::default().grace_period(0))
        .await?;
    wait_for("the Dataset, its PV, PVC and Secret gone", || async {
        let left = [
            datasets_a.get_opt("data").await.map(|o| o.is_some()),
            pvs.get_opt(&pv_name).await.map(|o| o.is_some()),
            pvcs.get_opt("data").await.map(|o| o.is_some()),
            secrets
                .get_opt("data-fluid-credentials")
                .await
                .map(|o| o.is_some()),
        ];
        match left.iter().position(|r| !matches!(r, Ok(false))) {
            None => Ok(()),
            Some(i) => Err(format!(
                "object {i} of [Dataset, PV, PVC, Secret] still there: {:?}",
                left[i]
            )),
        }
    })
    .await
    .with_context(|| controller.log())?;
    assert!(
        !controller.log().contains(&server.secret_key),
        "the controller logged a secret"
    );
    Ok(())
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
    use std::os::fd::AsRawFd;
    let mut bytes = 0;
    for (key, len) in FILES {
        let path = dir.join(key);
        let f = std::fs::File::open(&path).with_context(|| path.display().to_string())?;
        // SAFETY: posix_fadvise(2) on an open descriptor; no memory is passed.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        let data = std::fs::read(&path)?;
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
        let kube = Kube::connect().await?;
        apply_crds(&kube).await?;
        let server = S3Server::seaweedfs()?;
        let bucket = bucket(&server).await?;
        let ns = kube.create_namespace(prefix).await?;
        let secret = kube
            .create_namespaced(&ns.name, &credentials(&server)?)
            .await?;
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
        let port = plugin.cache_port()?;
        let controller = ControllerProcess::start(&[format!("--cache-token={CACHE_TOKEN}")])?;
        let ds = kube
            .create_namespaced(&ns.name, &dataset("data", &server, &bucket.name, "s3cred")?)
            .await?;
        let mut rt = runtime_with_quota("data", quota)?;
        rt.spec.fuse.node_selector.clear();
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

#[tokio::test]
async fn cache_states_follow_reads_through_a_node() -> Result<()> {
    let c = Cluster::start("fluid-cache", "64Mi").await?;
    let (kube, ns, node, dir, plugin, controller) = (
        &c.kube,
        c.ns.name.as_str(),
        &c.node,
        &c.dir,
        &c.plugin,
        &c.controller,
    );
    let datasets: Api<Dataset> = Api::namespaced(kube.client.clone(), ns);
    wait_for_object(&datasets, "data", "Bound and scanned", |d| {
        phase(d) == Some(DatasetPhase::Bound)
            && d.status.as_ref().is_some_and(|s| s.ufs_total.is_some())
    })
    .await
    .with_context(|| controller.log())?;

    let pv_name = format!("{ns}-data");
    let staging = dir.path("staging/data");
    stage_pv(kube, plugin, &pv_name, &staging).await?;
    let label = dataset_label_key(ns, "data");
    wait_for_object(&kube.nodes(), &node.name, "the dataset label", |n| {
        n.labels().get(&label).map(String::as_str) == Some("true")
    })
    .await?;

    // A cold read (misses), then a read from the cache (hits): half of the lookups hit.
    // The mount is named "data", so it sits at /data of the volume (Fluid's default path).
    let staging_dir = staging.join("data");
    let total = tokio::task::spawn_blocking(move || {
        read_all_uncached(&staging_dir)?;
        read_all_uncached(&staging_dir)
    })
    .await??;
    let ds = wait_for_object(&datasets, "data", "cacheStates with the reads", |d| {
        let states = d.status.as_ref().and_then(|s| s.cache_states.clone());
        states.is_some_and(|c| c.cached.as_deref() == Some(human_size(total).as_str()))
    })
    .await
    .with_context(|| controller.log())?;
    let states = ds
        .status
        .and_then(|s| s.cache_states)
        .context("cacheStates")?;
    assert_eq!(
        states.cached_percentage.as_deref(),
        Some("100.0%"),
        "{states:?}"
    );
    assert_eq!(
        states.cache_capacity,
        Some(human_size(64 << 20)),
        "{states:?}"
    );
    let ratio = states.cache_hit_ratio.clone().context("a hit ratio")?;
    assert!(ratio.ends_with('%'), "{states:?}");

    // cleanPolicy OnRuntimeDeleted, the runtime's default: NodeUnstage unmounts the staging
    // path but keeps the daemon and its cache, and the node keeps the Dataset's label.
    let dataset = format!("{ns}/data");
    let pids = dir.daemon_pids();
    assert_eq!(pids.len(), 1, "one daemon: {pids:?}");
    plugin
        .unstage(&pv_name, &staging)
        .await
        .map_err(|s| anyhow::anyhow!("{s:?}"))?;
    assert!(
        !dir.mounts().contains(&staging),
        "the staging path is unmounted: {:?}",
        dir.mounts()
    );
    let kept = cache_stats(c.port, &dataset).await?;
    assert!(
        kept.tiers.first().is_some_and(|t| t.used_bytes >= total),
        "the kept daemon still holds the cache: {kept:?}"
    );
    let n = Api::<k8s_openapi::api::core::v1::Node>::all(kube.client.clone())
        .get(&node.name)
        .await?;
    assert_eq!(n.labels().get(&label).map(String::as_str), Some("true"));

    // A pod comes back: staged again on the same daemon, whose cache serves a cold read
    // without one request to the source.
    stage_pv(kube, plugin, &pv_name, &staging).await?;
    assert_eq!(dir.daemon_pids(), pids, "the kept daemon serves again");
    let staging_dir = staging.join("data");
    tokio::task::spawn_blocking(move || read_all_uncached(&staging_dir)).await??;
    let again = cache_stats(c.port, &dataset).await?;
    assert_eq!(
        again.source_requests, kept.source_requests,
        "a cold read after re-staging is served from the kept cache: {kept:?} -> {again:?}"
    );
    assert!(again.bytes_served >= kept.bytes_served + total, "{again:?}");
    plugin
        .unstage(&pv_name, &staging)
        .await
        .map_err(|s| anyhow::anyhow!("{s:?}"))?;

    // The CacheRuntime goes: the controller releases the node, which stops the daemon.
    Api::<CacheRuntime>::namespaced(kube.client.clone(), ns)
        .delete("data", &DeleteParams::default())
        .await?;
    wait_for_object(&kube.nodes(), &node.name, "no dataset label", |n| {
        !n.labels().contains_key(&label)
    })
    .await
    .with_context(|| format!("{}\n{}", controller.log(), plugin.log()))?;
    let pid = pids[0];
    wait_for("the kept daemon to exit", || async move {
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            Err(format!("pid {pid} runs"))
        } else {
            Ok(())
        }
    })
    .await?;
    assert!(
        dir.daemon_pids().is_empty() && dir.mounts().is_empty(),
        "{:?}",
        dir.mounts()
    );
    Ok(())
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

#[tokio::test]
async fn dataloads_warm_the_nodes_that_serve_a_dataset() -> Result<()> {
    let c = Cluster::start("fluid-load", "64Mi").await?;
    let (kube, ns, node, dir, port, plugin, controller) = (
        &c.kube,
        c.ns.name.as_str(),
        &c.node,
        &c.dir,
        c.port,
        &c.plugin,
        &c.controller,
    );
    let other_ns = kube.create_namespace("fluid-load-other").await?;
    let datasets: Api<Dataset> = Api::namespaced(kube.client.clone(), ns);
    let loads: Api<DataLoad> = Api::namespaced(kube.client.clone(), ns);

    // Before any node serves the Dataset, a load waits and says why.
    let _once = kube
        .create_namespaced(
            ns,
            &dataload(
                "once",
                "data",
                json!({"target": [{"path": "/", "replicas": 1}]}),
            )?,
        )
        .await?;
    let pending = wait_for_object(&loads, "once", "Pending: no node yet", |d| {
        d.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.reason.as_deref() == Some("NoNodes"))
        })
    })
    .await
    .with_context(|| controller.log())?;
    assert_eq!(load_phase(&pending), Some(DataLoadPhase::Pending));

    wait_for_object(&datasets, "data", "Bound", |d| {
        phase(d) == Some(DatasetPhase::Bound)
    })
    .await?;
    let pv_name = format!("{ns}-data");
    let staging = dir.path("staging/data");
    stage_pv(kube, plugin, &pv_name, &staging).await?;

    // Once: every byte of the Dataset lands in the node's cache.
    let key = format!("{ns}/data");
    let before = cache_stats(port, &key).await?;
    let done = wait_for_object(&loads, "once", "Complete", |d| {
        load_phase(d) == Some(DataLoadPhase::Complete)
    })
    .await
    .with_context(|| controller.log())?;
    let status = done.status.clone().unwrap_or_default();
    let total: u64 = FILES.iter().map(|(_, n)| *n as u64).sum();
    assert_eq!(
        (status.files_loaded, status.bytes_loaded),
        (3, total),
        "{status:?}"
    );
    assert_eq!(status.nodes, vec![node.name.clone()]);
    assert!(status.duration.is_some() && status.last_successful_time.is_some());
    let warmed = cache_stats(port, &key).await?;
    assert!(warmed.tiers[0].used_bytes >= total, "{warmed:?}");
    assert!(
        warmed.source_requests > before.source_requests,
        "{warmed:?}"
    );

    // A cold read through the mount is served from the cache alone.
    let staging_dir = staging.join("data");
    tokio::task::spawn_blocking(move || read_all_uncached(&staging_dir)).await??;
    let after_read = cache_stats(port, &key).await?;
    assert_eq!(
        after_read.source_requests, warmed.source_requests,
        "reads after the load went to the source: {after_read:?}"
    );
    assert!(after_read.hits > warmed.hits, "{after_read:?}");

    // Evict from the controller's side frees those bytes on every serving node.
    let out = std::process::Command::new(fluid_tests::daemon::binary("fluid-csi-controller"))
        .args(["evict", &key])
        .env("KUBECONFIG", kubeconfig_path()?)
        .env(TOKEN_ENV, CACHE_TOKEN)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&node.name) && text.contains("freed"),
        "{text}"
    );
    assert_eq!(
        cache_stats(port, &key).await?.tiers[0].used_bytes,
        0,
        "{text}"
    );

    // Cron: runs again and again (a six-field schedule: every 2 seconds).
    let _cron = kube
        .create_namespaced(
            ns,
            &dataload(
                "cron",
                "data",
                json!({"policy": "Cron", "schedule": "*/2 * * * * *"}),
            )?,
        )
        .await?;
    let runs = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    wait_for("two runs of the cron DataLoad", || {
        let (loads, runs) = (loads.clone(), runs.clone());
        async move {
            let dl = loads.get("cron").await.map_err(|e| e.to_string())?;
            let mut runs = runs.lock().map_err(|e| e.to_string())?;
            if let Some(t) = dl.status.and_then(|s| s.last_successful_time) {
                runs.insert(t.0.as_second());
            }
            if runs.len() >= 2 {
                Ok(())
            } else {
                Err(format!("{} run(s)", runs.len()))
            }
        }
    })
    .await
    .with_context(|| controller.log())?;

    // A DataLoad of another namespace's Dataset is refused.
    let _cross = kube
        .create_namespaced(
            &other_ns.name,
            &dataload(
                "steal",
                "data",
                json!({"dataset": {"name": "data", "namespace": ns}}),
            )?,
        )
        .await?;
    let other_loads: Api<DataLoad> = Api::namespaced(kube.client.clone(), &other_ns.name);
    let refused = wait_for_object(&other_loads, "steal", "Failed", |d| {
        load_phase(d) == Some(DataLoadPhase::Failed)
    })
    .await?;
    let reason = refused.status.unwrap_or_default().conditions[0]
        .reason
        .clone();
    assert_eq!(reason.as_deref(), Some("CrossNamespace"));

    // A finished load with a time to live goes away.
    let _ttl = kube
        .create_namespaced(
            ns,
            &dataload("short-lived", "data", json!({"ttlSecondsAfterFinished": 1}))?,
        )
        .await?;
    wait_for(
        "the short-lived DataLoad deleted after it finished",
        || async {
            match loads.get_opt("short-lived").await {
                Ok(None) => Ok(()),
                Ok(Some(d)) => Err(format!("still there: {:?}", d.status.map(|s| s.phase))),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await
    .with_context(|| controller.log())?;
    Ok(())
}

#[tokio::test]
async fn a_dataload_stops_at_the_cache_quota() -> Result<()> {
    // 3 KiB of memory tier for 6000 bytes: the load stops once the tier is (nearly) full.
    let c = Cluster::start("fluid-quota", "3Ki").await?;
    let (kube, ns, dir, port, plugin, controller) = (
        &c.kube,
        c.ns.name.as_str(),
        &c.dir,
        c.port,
        &c.plugin,
        &c.controller,
    );
    let datasets: Api<Dataset> = Api::namespaced(kube.client.clone(), ns);
    wait_for_object(&datasets, "data", "Bound", |d| {
        phase(d) == Some(DatasetPhase::Bound)
    })
    .await
    .with_context(|| controller.log())?;
    let pv_name = format!("{ns}-data");
    stage_pv(kube, plugin, &pv_name, &dir.path("staging/data")).await?;
    let loads: Api<DataLoad> = Api::namespaced(kube.client.clone(), ns);
    let _load = kube
        .create_namespaced(ns, &dataload("fill", "data", json!({}))?)
        .await?;
    let done = wait_for_object(&loads, "fill", "Complete", |d| {
        load_phase(d) == Some(DataLoadPhase::Complete)
    })
    .await
    .with_context(|| controller.log())?;
    let status = done.status.unwrap_or_default();
    let cond = status.conditions.first().context("a condition")?;
    assert_eq!(
        cond.reason.as_deref(),
        Some("CacheQuotaReached"),
        "{status:?}"
    );
    assert!(
        cond.message
            .as_deref()
            .unwrap_or_default()
            .contains("cache quota"),
        "{cond:?}"
    );
    let total: u64 = FILES.iter().map(|(_, n)| *n as u64).sum();
    assert!(
        status.files_loaded < 3 && status.bytes_loaded < total,
        "stopped before the end: {status:?}"
    );
    let stats = cache_stats(port, &format!("{ns}/data")).await?;
    let tier = &stats.tiers[0];
    assert!(
        tier.used_bytes <= tier.capacity_bytes && tier.evictions == 0,
        "the load did not evict what it loaded: {stats:?}"
    );
    Ok(())
}
