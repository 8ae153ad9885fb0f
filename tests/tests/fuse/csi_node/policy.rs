//! What an administrator allows a volume to reach: local roots, the node's cloud identity.

use super::*;

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
