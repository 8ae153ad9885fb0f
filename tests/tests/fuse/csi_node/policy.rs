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

/// `local_context` with the volume's own tiers (as a CacheRuntime or StorageClass sets them).
fn local_context_with_tiers(dir: &Path, tiers: &[&str]) -> HashMap<String, String> {
    let mut ctx = local_context(dir);
    let with = VolumeContext {
        tiers: Some(fluid_volume::tier::Tiers::parse_each(tiers).unwrap()),
        ..VolumeContext::from_map(&ctx.clone().into_iter().collect()).unwrap()
    };
    ctx.extend(with.to_map());
    ctx
}

/// Issue 27, hole 5: a tenant's tiers are input to a root daemon. A disk tier outside the node's
/// cache roots (`..` out of one, or `/proc/1/root`) is refused before any folder is made, and
/// the tiers of all volumes share the node's memory budget (RESOURCE_EXHAUSTED past it).
#[test]
fn tenant_tiers_stay_in_the_cache_roots_and_the_nodes_budget() {
    let env = Env::new();
    let data = env.path("datasets/set");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), b"tenant data").unwrap();
    let roots = env.path("cache");
    let outside = env.path("outside");
    let plugin = Plugin::start_with(
        &env,
        &[
            format!("--local-roots={}", env.path("datasets").display()),
            format!("--cache-roots={}", roots.display()),
            "--mem-budget=100MiB".to_string(),
        ],
    );
    let csi = Csi {
        env: &env,
        plugin: &plugin,
    };
    let none = HashMap::new();
    let staging = |v: &str| env.path(&format!("plugins/fuse.csi.fluid.io/{v}/globalmount"));
    let ctx = local_context_with_tiers(&data, &["mem:16MiB", "ssd:/proc/1/root/tmp/fluid:64MiB"]);
    expect_code(
        csi.stage(stage_req("v1", &staging("v1"), &ctx, &none)),
        Code::PermissionDenied,
        "--cache-roots",
    );
    // A path that climbs out of a root is not a tier at all.
    let mut ctx = local_context(&data);
    ctx.insert(
        fluid_volume::context::TIERS.into(),
        format!("mem:16MiB;ssd:{}/../outside:64MiB", roots.display()),
    );
    expect_code(
        csi.stage(stage_req("v1", &staging("v1"), &ctx, &none)),
        Code::InvalidArgument,
        "without '..'",
    );
    assert!(
        !outside.exists(),
        "a folder was made outside the cache roots"
    );
    assert!(env.daemon_pid("v1").is_none(), "no daemon was started");

    // 64 MiB of memory and then 64 MiB more do not fit a 100 MiB budget; the first's going
    // makes room.
    let inside = format!("ssd:{}/t:64MiB", roots.display());
    let ctx = local_context_with_tiers(&data, &["mem:64MiB", &inside]);
    csi.stage(stage_req("v1", &staging("v1"), &ctx, &none))
        .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
    assert_eq!(
        std::fs::read(staging("v1").join("a.txt")).unwrap(),
        b"tenant data"
    );
    expect_code(
        csi.stage(stage_req("v2", &staging("v2"), &ctx, &none)),
        Code::ResourceExhausted,
        "--mem-budget",
    );
    assert!(env.daemon_pid("v2").is_none(), "no daemon was started");
    csi.unstage("v1", &staging("v1")).unwrap();
    csi.stage(stage_req("v2", &staging("v2"), &ctx, &none))
        .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
    csi.unstage("v2", &staging("v2")).unwrap();
}

/// Issue 27, hole 2 for HDFS: with simple authentication a namenode believes any user name, so
/// a volume may name only users the administrator listed. The check comes before any
/// connection (the namenode here does not even exist).
#[test]
fn hdfs_volumes_act_only_as_users_the_administrator_lists() {
    let env = Env::new();
    let ctx: HashMap<String, String> = VolumeContext {
        dataset: Some("tenant/hdfs".into()),
        mounts: vec![MountSpec {
            mount_point: "hdfs://127.0.0.1:1/data".into(),
            name: "data".into(),
            options: [("user".to_string(), "hdfs".to_string())].into(),
            ..Default::default()
        }],
        ..Default::default()
    }
    .to_map()
    .into_iter()
    .collect();
    let none = HashMap::new();
    let staging = env.path("plugins/fuse.csi.fluid.io/hdfs/globalmount");
    let plugin = Plugin::start(&env);
    let csi = Csi {
        env: &env,
        plugin: &plugin,
    };
    expect_code(
        csi.stage(stage_req("hdfs-vol", &staging, &ctx, &none)),
        Code::PermissionDenied,
        "--hdfs-users",
    );
    drop(plugin);
    // Listed: the volume gets as far as the (missing) namenode.
    let plugin = Plugin::start_with(&env, &["--hdfs-users=hdfs".to_string()]);
    let csi = Csi {
        env: &env,
        plugin: &plugin,
    };
    let err = csi
        .stage(stage_req("hdfs-vol", &staging, &ctx, &none))
        .expect_err("no namenode listens on 127.0.0.1:1");
    assert_ne!(err.code(), Code::PermissionDenied, "{err:?}");
}
