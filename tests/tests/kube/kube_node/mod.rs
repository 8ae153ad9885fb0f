//! fluid-csi-node in a cluster: the real plugin with `--kubernetes` against the test
//! kube-apiserver labels its Node `fluid.io/s-<ns>-<name>=true` while it holds volumes of a
//! Dataset, advertises its cache endpoint in a Node annotation, serves the Datasets' cache
//! figures there (real fluid-fuse daemons over SeaweedFS), removes stale labels at start, keeps
//! an Exclusive Dataset's node to itself, and keeps the daemons of cleanPolicy OnRuntimeDeleted
//! volumes after NodeUnstage (and across its own restarts) until the Dataset is released.
//!
//! Needs root, /dev/fuse, SeaweedFS and the kube-apiserver (`scripts/services.sh up seaweedfs
//! kube`), and the binaries built: `cargo build -p csi-node -p fuse-cache --bins`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use fluid_proto::Endpoint;
use fluid_proto::cache_auth::{BearerToken, NodeClient, TOKEN_ENV};
use fluid_proto::csi::volume_capability::access_mode::Mode;
use fluid_proto::csi::volume_capability::{AccessMode, AccessType, MountVolume};
use fluid_proto::csi::{NodePublishVolumeRequest, VolumeCapability};
use fluid_proto::fluid::{
    EvictRequest, GetStatsRequest, GetStatsResponse, ReleaseRequest, WarmupRequest,
};
use fluid_tests::kube::{self as k, Kube, Temp, annotation, label, unique_name, wait_for_object};
use fluid_tests::node_plugin::{NodePlugin, PluginDir, s3_secrets, s3_volume_context};
use fluid_tests::services::{S3Server, TempBucket};
use fluid_volume::context::{BLOCK_SIZE, CLEAN_POLICY, EXCLUSIVE, PLACEMENT, TIERS};
use fluid_volume::labels::{
    CACHE_ENDPOINT_ANNOTATION, EXCLUSIVE_LABEL, dataset_label_key, exclusive_label_value,
};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use rand::RngCore;
use tonic::Code;

const MIB: usize = 1 << 20;

/// A bucket with `data.bin` (3 MiB + 1 byte: four 1 MiB blocks) and `small.txt`.
async fn bucket_with_data(server: &S3Server) -> Result<(TempBucket, Vec<u8>)> {
    let bucket = server.temp_bucket("kubenode")?;
    let mut data = vec![0u8; 3 * MIB + 1];
    rand::rng().fill_bytes(&mut data);
    let client = server.client();
    for (key, body) in [
        ("data.bin", data.clone()),
        ("small.txt", b"small\n".to_vec()),
    ] {
        client
            .put_object()
            .bucket(&bucket.name)
            .key(key)
            .body(body.into())
            .send()
            .await
            .with_context(|| format!("uploading {key}"))?;
    }
    Ok((bucket, data))
}

/// Reads a file through the mount, past the kernel's page cache.
async fn read_uncached(path: PathBuf) -> Vec<u8> {
    tokio::task::spawn_blocking(move || {
        fluid_tests::read_uncached(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    })
    .await
    .expect("reader thread")
}

/// A client of a node plugin's cache endpoint, sending `token` if given.
async fn cache_client(port: u16, token: Option<&str>) -> NodeClient {
    let ep = Endpoint::Tcp(([127, 0, 0, 1], port).into());
    let channel = ep.connect().await.unwrap_or_else(|e| panic!("{e}"));
    BearerToken::new(token).unwrap().client(channel)
}

async fn stats(c: &NodeClient, dataset: &str) -> Result<GetStatsResponse, tonic::Status> {
    c.clone()
        .get_stats(GetStatsRequest {
            dataset: dataset.into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn wait_label(api: &Api<Node>, node: &str, key: &str, present: bool) -> Node {
    let what = if present {
        format!("label {key}=true")
    } else {
        format!("no label {key}")
    };
    wait_for_object(api, node, &what, |n| {
        (label(n, key) == Some("true")) == present
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

#[track_caller]
fn expect_code<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, mentions: &str) {
    match r {
        Ok(v) => panic!("expected {code:?}, got {v:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "{s:?}");
            assert!(
                s.message().contains(mentions),
                "{:?} should mention {mentions:?}",
                s.message()
            );
        }
    }
}

/// What each test starts from: SeaweedFS with a bucket holding `data.bin` and `small.txt`,
/// the apiserver, and an empty plugin folder.
struct World {
    server: S3Server,
    kube: Kube,
    kubeconfig: PathBuf,
    bucket: TempBucket,
    data: Vec<u8>,
    nodes: Api<Node>,
    dir: PluginDir,
}

impl World {
    async fn new() -> World {
        let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
        let kube = Kube::connect().await.unwrap_or_else(|e| panic!("{e:#}"));
        let (bucket, data) = bucket_with_data(&server).await.unwrap();
        World {
            nodes: kube.nodes(),
            kubeconfig: k::kubeconfig_path().unwrap(),
            dir: PluginDir::new().unwrap(),
            server,
            kube,
            bucket,
            data,
        }
    }
}

/// A Node object for the test's plugin, deleted when dropped.
async fn create_node(kube: &Kube) -> Temp<Node> {
    kube.create_node(&unique_name("fluid-test"))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

fn stage_paths(dir: &PluginDir, n: usize) -> Vec<PathBuf> {
    (0..n).map(|i| dir.path(&format!("staging{i}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_labels_and_cache_endpoint_follow_staged_volumes() {
    let World {
        server,
        kube,
        kubeconfig,
        bucket,
        data,
        nodes,
        dir,
    } = World::new().await;
    let node = create_node(&kube).await;
    let mut plugin = NodePlugin::start(
        &dir,
        &node.name,
        &[
            "--kubernetes".into(),
            "--cache-endpoint=tcp://127.0.0.1:0".into(),
        ],
        &[("KUBECONFIG", &kubeconfig)],
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let port = plugin.cache_port().unwrap();

    // The Dataset's namespace need not exist: the node only reads the volume context.
    let ns = unique_name("kn");
    let dataset = format!("{ns}/imagenet");
    let key = dataset_label_key(&ns, "imagenet");
    assert_eq!(key, format!("fluid.io/s-{ns}-imagenet"));
    let ctx = s3_volume_context(&server, &bucket.name, &dataset);
    let sec = s3_secrets(&server);
    let staging = stage_paths(&dir, 3);
    plugin
        .stage("vol-a", &staging[0], &ctx, &sec)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));

    // The label and the annotation appear.
    let n = wait_label(&nodes, &node.name, &key, true).await;
    let n = if annotation(&n, CACHE_ENDPOINT_ANNOTATION).is_some() {
        n
    } else {
        wait_for_object(&nodes, &node.name, "the cache endpoint annotation", |n| {
            annotation(n, CACHE_ENDPOINT_ANNOTATION).is_some()
        })
        .await
        .unwrap()
    };
    assert_eq!(
        annotation(&n, CACHE_ENDPOINT_ANNOTATION),
        Some(format!("127.0.0.1:{port}").as_str())
    );

    // Cache figures of the Dataset, through the node's cache endpoint.
    let cache = cache_client(port, None).await;
    let before = stats(&cache, &dataset).await.unwrap();
    assert_eq!(before.source_bytes_read, 0, "{before:?}");
    assert_eq!(before.mount_points, vec![format!("s3://{}", bucket.name)]);
    let file = staging[0].join("data.bin");
    assert!(
        read_uncached(file.clone()).await == data,
        "bytes read through the mount"
    );
    let cold = stats(&cache, &dataset).await.unwrap();
    assert!(cold.source_bytes_read >= data.len() as u64, "{cold:?}");
    assert!(
        cold.misses >= 4 && cold.bytes_served >= data.len() as u64,
        "{cold:?}"
    );
    assert!(read_uncached(file.clone()).await == data);
    let warm = stats(&cache, &dataset).await.unwrap();
    // The file is whole in the memory tier now: the daemon serves it from there, or (where
    // the kernel has FUSE passthrough) the kernel reads the tier's memory itself.
    assert!(
        warm.hits >= cold.hits + 4 || warm.passthrough_opens > cold.passthrough_opens,
        "second read from the cache: {cold:?} -> {warm:?}"
    );
    assert_eq!(warm.source_bytes_read, cold.source_bytes_read, "{warm:?}");
    assert!(warm.tiers[0].used_bytes >= data.len() as u64, "{warm:?}");
    eprintln!(
        "dataset {dataset} on node {}: cold read: {} misses, {} source bytes; warm read: {} hits, {} passthrough opens",
        node.name,
        cold.misses,
        cold.source_bytes_read,
        warm.hits - cold.hits,
        warm.passthrough_opens - cold.passthrough_opens
    );

    // Bad and unknown Datasets.
    expect_code(stats(&cache, "").await, Code::InvalidArgument, "dataset");
    expect_code(
        stats(&cache, &format!("{ns}/no-such-dataset")).await,
        Code::NotFound,
        &format!(
            "no volume of dataset {ns}/no-such-dataset is staged on node {}",
            node.name
        ),
    );

    // A second volume of the same Dataset: one answer, summed over both daemons.
    plugin
        .stage("vol-b", &staging[1], &ctx, &sec)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
    let two = stats(&cache, &dataset).await.unwrap();
    assert_eq!(two.tiers.len(), 1, "one MEM tier entry: {two:?}");
    assert_eq!(two.tiers[0].capacity_bytes, 2 * 64 * MIB as u64, "{two:?}");
    assert_eq!(two.source_bytes_read, warm.source_bytes_read, "{two:?}");

    // Evict and warm up the Dataset on this node: both volumes.
    let evicted = cache
        .clone()
        .evict(EvictRequest {
            paths: vec!["/".into()],
            dataset: dataset.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(evicted.bytes_freed >= data.len() as u64, "{evicted:?}");
    assert_eq!(
        stats(&cache, &dataset).await.unwrap().tiers[0].used_bytes,
        0
    );
    let mut progress = cache
        .clone()
        .warmup(WarmupRequest {
            paths: vec!["/".into()],
            dataset: dataset.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(p) = progress.message().await.unwrap() {
        last = Some(p);
    }
    let last = last.expect("warm-up progress");
    assert!(last.done && last.errors.is_empty(), "{last:?}");
    assert_eq!(
        last.files_total, 4,
        "two files in each of two volumes: {last:?}"
    );
    let total = 2 * (data.len() as u64 + 6);
    assert_eq!(
        (last.bytes_total, last.bytes_done),
        (total, total),
        "{last:?}"
    );
    let warmed = stats(&cache, &dataset).await.unwrap();
    assert!(
        warmed.tiers[0].used_bytes >= 2 * data.len() as u64,
        "{warmed:?}"
    );
    expect_code(
        cache
            .clone()
            .evict(EvictRequest {
                paths: vec!["/no/such/path".into()],
                dataset: dataset.clone(),
            })
            .await,
        Code::NotFound,
        "volume vol-",
    );

    // A Dataset whose key would be too long gets the shortened, hashed key.
    let long_name = format!("a-rather-long-dataset-name-{}", "x".repeat(60));
    let long_dataset = format!("{ns}/{long_name}");
    let long_key = dataset_label_key(&ns, &long_name);
    let long_label = long_key.strip_prefix("fluid.io/").unwrap();
    assert_eq!(long_label.len(), 63, "{long_key}");
    assert!(!long_key.contains(&long_name), "{long_key}");
    plugin
        .stage(
            "vol-c",
            &staging[2],
            &s3_volume_context(&server, &bucket.name, &long_dataset),
            &sec,
        )
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
    let n = wait_label(&nodes, &node.name, &long_key, true).await;
    eprintln!("labels of node {}: {:?}", node.name, n.metadata.labels);
    assert_eq!(label(&n, &key), Some("true"));
    assert!(stats(&cache, &long_dataset).await.is_ok());

    // Unstaging: a label goes with the last volume of its Dataset.
    plugin.unstage("vol-c", &staging[2]).await.unwrap();
    let n = wait_label(&nodes, &node.name, &long_key, false).await;
    assert_eq!(label(&n, &key), Some("true"));
    plugin.unstage("vol-a", &staging[0]).await.unwrap();
    assert!(
        stats(&cache, &dataset).await.is_ok(),
        "vol-b still holds the Dataset"
    );
    plugin.unstage("vol-b", &staging[1]).await.unwrap();
    let n = wait_label(&nodes, &node.name, &key, false).await;
    assert_eq!(
        annotation(&n, CACHE_ENDPOINT_ANNOTATION),
        Some(format!("127.0.0.1:{port}").as_str()),
        "the endpoint stays advertised"
    );
    expect_code(
        stats(&cache, &dataset).await,
        Code::NotFound,
        "no volume of dataset",
    );

    let status = plugin.stop().unwrap();
    assert!(status.success(), "{status:?}\n{}", plugin.log());
    assert!(
        !plugin.log().contains(&server.secret_key),
        "secret in the plugin log"
    );
    assert!(dir.mounts().is_empty(), "mounts left: {:?}", dir.mounts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_waits_for_its_node_and_removes_stale_labels_at_start() {
    let World {
        server,
        kube,
        kubeconfig,
        bucket,
        nodes,
        dir,
        ..
    } = World::new().await;
    let node_name = unique_name("fluid-test");
    let args = ["--kubernetes".to_string()];
    let env: [(&str, &Path); 1] = [("KUBECONFIG", &kubeconfig)];

    // The Node does not exist yet: staging works anyway, the plugin says why it cannot label.
    let mut plugin = NodePlugin::start(&dir, &node_name, &args, &env)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let ns = unique_name("kn");
    let dataset = format!("{ns}/coco");
    let key = dataset_label_key(&ns, "coco");
    let staging = dir.path("staging");
    plugin
        .stage(
            "vol-a",
            &staging,
            &s3_volume_context(&server, &bucket.name, &dataset),
            &s3_secrets(&server),
        )
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
    k::wait_for("the plugin's warning about the missing Node", || async {
        let log = plugin.log();
        if log.contains(&format!("Node {node_name} does not exist")) {
            Ok(())
        } else {
            Err(log)
        }
    })
    .await
    .unwrap();

    // The Node appears with labels of all kinds: only the stale dataset label (ours: prefix
    // fluid.io/s- and value true) and the stale annotation (no --cache-endpoint now) go.
    let stale = "fluid.io/s-x-y";
    let keep = [
        ("fluid.io/s-h-alluxio-m-x-y", "2GiB"),
        ("example.com/s-x-y", "true"),
        ("kubernetes.io/hostname", node_name.as_str()),
    ];
    let mut labels = vec![(stale, "true")];
    labels.extend(keep);
    let node = kube
        .create_node_with_labels(
            &node_name,
            &labels,
            &[(CACHE_ENDPOINT_ANNOTATION, "10.9.9.9:1")],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let n = wait_for_object(
        &nodes,
        &node.name,
        "labelled, stale label and annotation gone",
        |n| {
            label(n, &key) == Some("true")
                && label(n, stale).is_none()
                && annotation(n, CACHE_ENDPOINT_ANNOTATION).is_none()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", plugin.log()));
    for (k, v) in keep {
        assert_eq!(label(&n, k), Some(v), "{k} is not ours");
    }

    // The plugin stops (labels stay: the cache is still here); meanwhile a stale label appears
    // and ours is lost. The next start adopts the daemon and repairs both.
    let status = plugin.stop().unwrap();
    assert!(status.success(), "{status:?}\n{}", plugin.log());
    assert_eq!(
        label(&nodes.get(&node.name).await.unwrap(), &key),
        Some("true")
    );
    let patch = serde_json::json!({"metadata": {"labels": {stale: "true", key.as_str(): null}}});
    nodes
        .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let plugin = NodePlugin::start(&dir, &node_name, &args, &env)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    wait_for_object(&nodes, &node.name, "labels repaired after a restart", |n| {
        label(n, &key) == Some("true") && label(n, stale).is_none()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", plugin.log()));
    assert!(plugin.log().contains("adopted"), "{}", plugin.log());

    plugin.unstage("vol-a", &staging).await.unwrap();
    let n = wait_label(&nodes, &node.name, &key, false).await;
    for (k, v) in keep {
        assert_eq!(label(&n, k), Some(v), "{k} is not ours");
    }
    drop(plugin);
    assert!(dir.mounts().is_empty(), "mounts left: {:?}", dir.mounts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_dataset_keeps_the_node_to_itself() {
    let World {
        server,
        kube,
        kubeconfig,
        bucket,
        data: _,
        nodes,
        dir,
    } = World::new().await;
    let node = create_node(&kube).await;
    let plugin = NodePlugin::start(
        &dir,
        &node.name,
        &["--kubernetes".into()],
        &[("KUBECONFIG", &kubeconfig)],
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let ns = unique_name("kx");
    let context = |name: &str, exclusive: bool| {
        let mut c = s3_volume_context(&server, &bucket.name, &format!("{ns}/{name}"));
        if exclusive {
            c.insert(PLACEMENT.into(), EXCLUSIVE.into());
        }
        c
    };
    let sec = s3_secrets(&server);
    let staging = stage_paths(&dir, 3);

    // An Exclusive Dataset: the node says so, and refuses every other Dataset.
    plugin
        .stage("vol-excl", &staging[0], &context("private", true), &sec)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
    let value = exclusive_label_value(&ns, "private");
    wait_for_object(&nodes, &node.name, "fluid_exclusive", |n| {
        label(n, EXCLUSIVE_LABEL) == Some(value.as_str())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    expect_code(
        plugin
            .stage("vol-shared", &staging[1], &context("shared", false), &sec)
            .await,
        Code::FailedPrecondition,
        &format!("{ns}/private"),
    );
    // A second volume of the same Dataset is fine.
    plugin
        .stage("vol-excl-2", &staging[2], &context("private", true), &sec)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));

    // Once it is gone, the label goes and other Datasets may come; an Exclusive one may not
    // join them.
    for (id, path) in [("vol-excl", &staging[0]), ("vol-excl-2", &staging[2])] {
        plugin.unstage(id, path).await.unwrap();
    }
    wait_for_object(&nodes, &node.name, "no fluid_exclusive", |n| {
        label(n, EXCLUSIVE_LABEL).is_none()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    plugin
        .stage("vol-shared", &staging[1], &context("shared", false), &sec)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
    expect_code(
        plugin
            .stage("vol-excl", &staging[0], &context("private", true), &sec)
            .await,
        Code::FailedPrecondition,
        "placement Exclusive",
    );
    plugin.unstage("vol-shared", &staging[1]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_volumes_outlive_unstage_and_plugin_restarts_until_released() {
    let World {
        server,
        kube,
        kubeconfig,
        bucket,
        data,
        nodes,
        dir,
    } = World::new().await;
    let node = create_node(&kube).await;
    let ssd = dir.path("ssd");
    let flags = [
        "--kubernetes".to_string(),
        "--cache-endpoint=tcp://127.0.0.1:0".to_string(),
        format!("--cache-roots={}", ssd.display()),
    ];
    // The cache endpoint takes calls with the shared token only (given here by environment).
    let token = "kept-volumes-test-token";
    let env = [
        ("KUBECONFIG", kubeconfig.as_path()),
        (TOKEN_ENV, Path::new(token)),
    ];
    let mut plugin = NodePlugin::start(&dir, &node.name, &flags, &env)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let ns = unique_name("kk");
    let dataset = format!("{ns}/kept");
    let key = dataset_label_key(&ns, "kept");
    // An SSD tier too: a Dataset's disk caches go when it is released, not before.
    let mut on_demand = s3_volume_context(&server, &bucket.name, &dataset);
    on_demand.insert(
        TIERS.into(),
        format!("mem:16MiB;ssd:{}:64MiB", ssd.display()),
    );
    let mut ctx = on_demand.clone();
    ctx.insert(CLEAN_POLICY.into(), "OnRuntimeDeleted".into());
    let sec = s3_secrets(&server);
    let staging = stage_paths(&dir, 1).remove(0);

    plugin
        .stage("vol-kept", &staging, &ctx, &sec)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
    assert!(read_uncached(staging.join("data.bin")).await == data);
    let pids = dir.daemon_pids();
    assert_eq!(pids.len(), 1, "{pids:?}");
    // Staged, the file system is mounted at the staging path alone: the kubelet refuses to
    // unstage a volume whose file system has another mount.
    assert_eq!(dir.mounts(), vec![staging.clone()]);
    plugin.unstage("vol-kept", &staging).await.unwrap();
    assert!(!dir.mounts().contains(&staging), "{:?}", dir.mounts());
    // Unstaged twice is still fine; a publish of a parked volume is refused.
    plugin.unstage("vol-kept", &staging).await.unwrap();
    let publish = plugin
        .node
        .clone()
        .node_publish_volume(NodePublishVolumeRequest {
            volume_id: "vol-kept".into(),
            staging_target_path: staging.display().to_string(),
            target_path: dir.path("target").display().to_string(),
            volume_capability: Some(VolumeCapability {
                access_type: Some(AccessType::Mount(MountVolume::default())),
                access_mode: Some(AccessMode {
                    mode: Mode::MultiNodeReaderOnly as i32,
                }),
            }),
            ..Default::default()
        })
        .await;
    expect_code(publish, Code::FailedPrecondition, "not staged");

    // The plugin restarts: it adopts the kept daemon, which still serves the cache figures.
    plugin.stop().unwrap();
    let plugin = NodePlugin::start(&dir, &node.name, &flags, &env)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let port = plugin.cache_port().unwrap();
    for wrong in [None, Some("not-the-kept-volumes-token")] {
        let refused = stats(&cache_client(port, wrong).await, &dataset).await;
        expect_code(refused, Code::Unauthenticated, TOKEN_ENV);
    }
    assert!(
        !plugin.log().contains(token),
        "the token is in the plugin log"
    );
    let cache = cache_client(port, Some(token)).await;
    let kept = stats(&cache, &dataset).await.unwrap();
    assert!(kept.source_bytes_read >= data.len() as u64, "{kept:?}");
    assert_eq!(dir.daemon_pids(), pids, "{}", plugin.log());
    wait_label(&nodes, &node.name, &key, true).await;

    // Staged again: the kept cache serves a cold read with no source request.
    plugin
        .stage("vol-kept", &staging, &ctx, &sec)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
    assert!(read_uncached(staging.join("data.bin")).await == data);
    assert_eq!(
        dir.mounts(),
        vec![staging.clone()],
        "the park mount moved back"
    );
    let again = stats(&cache, &dataset).await.unwrap();
    assert_eq!(again.source_requests, kept.source_requests, "{again:?}");
    assert_eq!(dir.daemon_pids(), pids);

    // Released while in use: the daemon stays until its NodeUnstage, which then stops it.
    let release = |dataset: String| {
        let mut c = cache.clone();
        async move {
            c.release(ReleaseRequest { dataset })
                .await
                .map(|r| r.into_inner())
        }
    };
    let r = release(dataset.clone()).await.unwrap();
    assert_eq!((r.stopped, r.in_use), (0, 1));
    assert_eq!(dir.daemon_pids(), pids);
    assert!(
        ssd.join("vol-kept").is_dir(),
        "in use: its disk cache stays"
    );
    plugin.unstage("vol-kept", &staging).await.unwrap();
    assert!(
        dir.daemon_pids().is_empty() && dir.mounts().is_empty(),
        "{:?}",
        dir.mounts()
    );
    assert!(
        !ssd.join("vol-kept").exists(),
        "released: its disk cache went at unstage"
    );
    wait_label(&nodes, &node.name, &key, false).await;

    // An OnDemand volume's disk cache stays after its NodeUnstage (a new stage finds it),
    // until the Dataset is released.
    plugin
        .stage("vol-od", &staging, &on_demand, &sec)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
    plugin.unstage("vol-od", &staging).await.unwrap();
    assert!(dir.daemon_pids().is_empty());
    assert!(ssd.join("vol-od").is_dir());

    // Released while parked: stopped at once; a second Release finds nothing.
    plugin
        .stage("vol-kept", &staging, &ctx, &sec)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
    plugin.unstage("vol-kept", &staging).await.unwrap();
    assert_eq!(dir.daemon_pids().len(), 1);
    let r = release(dataset.clone()).await.unwrap();
    assert_eq!((r.stopped, r.in_use), (1, 0));
    assert!(
        dir.daemon_pids().is_empty() && dir.mounts().is_empty(),
        "{:?}",
        dir.mounts()
    );
    for v in ["vol-kept", "vol-od"] {
        assert!(!ssd.join(v).exists(), "{v}: disk cache left after release");
    }
    let r = release(dataset.clone()).await.unwrap();
    assert_eq!((r.stopped, r.in_use), (0, 0));
    expect_code(
        release(String::new()).await,
        Code::InvalidArgument,
        "dataset",
    );
    wait_label(&nodes, &node.name, &key, false).await;
}

mod shared_cache;
