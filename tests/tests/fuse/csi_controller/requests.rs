//! Requests the controller must refuse, with the right code and the field named.

use super::*;

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
