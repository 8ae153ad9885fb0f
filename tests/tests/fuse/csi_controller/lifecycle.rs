//! Create, list, delete across restarts; identity, capabilities, SIGTERM, a bad catalogue.

use super::*;

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
