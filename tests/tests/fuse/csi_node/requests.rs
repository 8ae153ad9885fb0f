//! Requests the plugin must refuse or answer as the kubelet expects: codes, messages, registration, log level.

use super::*;

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
