//! Stage, publish, read, unpublish, unstage, alone and twenty at once.

use super::*;

#[test]
fn stage_publish_read_stats_unpublish_unstage() {
    let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    let tree = small_tree();
    let bucket = dataset(&server, &tree);
    let env = Env::new();
    let plugin = env.start_plugin();
    let csi = Csi {
        env: &env,
        plugin: &plugin,
    };
    let ctx = context(&server, &bucket.name);
    let sec = s3_secrets(&server);
    let staging = env.path("plugins/fuse.csi.fluid.io/vol/globalmount");
    let vol = unique_name("vol");

    let t0 = Instant::now();
    csi.stage(stage_req(&vol, &staging, &ctx, &sec))
        .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
    eprintln!("NodeStageVolume took {} ms", t0.elapsed().as_millis());
    assert_eq!(mount_count(&staging), 1);
    // Staging twice is fine; at another path it is not.
    csi.stage(stage_req(&vol, &staging, &ctx, &sec)).unwrap();
    assert_eq!(mount_count(&staging), 1, "idempotent stage mounts once");
    expect_code(
        csi.stage(stage_req(&vol, &env.path("elsewhere"), &ctx, &sec)),
        Code::AlreadyExists,
        "already staged",
    );
    // Another volume cannot take the same staging path.
    expect_code(
        csi.stage(stage_req(&unique_name("other"), &staging, &ctx, &sec)),
        Code::AlreadyExists,
        "in use",
    );

    // Credentials: only in the 0600 dataset file, never on a command line, in the record or
    // in a log.
    let pid = env.daemon_pid(&vol).expect("daemon pid in the record");
    let vol_dir = env.state_dir().join(&vol);
    let dataset_file = vol_dir.join("dataset.yaml");
    let mode = std::fs::metadata(&dataset_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        std::fs::read_to_string(&dataset_file)
            .unwrap()
            .contains(&server.secret_key)
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(!cmdline.contains(&server.secret_key), "{cmdline}");
    for f in ["volume.json", "fluid-fuse.log"] {
        let text = std::fs::read_to_string(vol_dir.join(f)).unwrap_or_default();
        assert!(!text.contains(&server.secret_key), "secret in {f}");
    }

    // Publish read-only into a target whose parents do not exist yet; read it byte-exact.
    let target = env.path("pods/pod-a/volumes/kubernetes.io~csi/pv/mount");
    csi.publish(publish_req(&vol, &staging, &target, true, None))
        .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
    let opts = mount_options(&target).expect("target mounted");
    assert!(opts.split(',').any(|o| o == "ro"), "{opts}");
    tree.verify(&target, 20).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(std::fs::write(target.join("new-file"), b"x").is_err());
    // Publishing again identically is fine; with other flags it is not.
    csi.publish(publish_req(&vol, &staging, &target, true, None))
        .unwrap();
    assert_eq!(mount_count(&target), 1);
    expect_code(
        csi.publish(publish_req(&vol, &staging, &target, false, None)),
        Code::AlreadyExists,
        "already published",
    );
    // A sub path shows only that folder; a missing one is NOT_FOUND.
    let sub_target = env.path("pods/pod-b/mount");
    csi.publish(publish_req(&vol, &staging, &sub_target, false, Some("a/b")))
        .unwrap();
    assert_eq!(
        std::fs::read(sub_target.join("c/deep.txt")).unwrap(),
        b"deep\n"
    );
    let mut names: Vec<String> = std::fs::read_dir(&sub_target)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["c", "sibling.txt"]);
    expect_code(
        csi.publish(publish_req(
            &vol,
            &staging,
            &env.path("pods/pod-c/mount"),
            false,
            Some("no/such/dir"),
        )),
        Code::NotFound,
        "no/such/dir",
    );
    // The wrong staging path for a staged volume.
    expect_code(
        csi.publish(publish_req(
            &vol,
            &env.path("elsewhere"),
            &env.path("pods/pod-c/mount"),
            false,
            None,
        )),
        Code::FailedPrecondition,
        "staged at",
    );

    // Stats: the cache holds what was read.
    let stats = csi
        .stats(&vol, &target.display().to_string())
        .unwrap_or_else(|e| panic!("{e:?}"));
    let u = &stats.usage[0];
    assert_eq!(u.unit, volume_usage::Unit::Bytes as i32);
    assert_eq!(u.total, 64 * MIB as i64, "{u:?}");
    assert!(u.used > 0, "{u:?}");
    assert_eq!(u.available, u.total - u.used);
    csi.stats(&vol, &staging.display().to_string()).unwrap();
    expect_code(
        csi.stats(&vol, &env.path("pods/unknown").display().to_string()),
        Code::NotFound,
        "neither",
    );

    // Unpublish removes the targets; twice is fine.
    for t in [&target, &sub_target] {
        csi.unpublish(&vol, t).unwrap();
        assert!(!t.exists(), "{} removed", t.display());
        csi.unpublish(&vol, t).unwrap();
    }
    // Unstage stops the daemon and leaves no mount and no state.
    csi.unstage(&vol, &staging)
        .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
    assert_eq!(mount_count(&staging), 0);
    assert!(!vol_dir.exists(), "state folder removed");
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!process_alive(pid), "fluid-fuse stopped");
    csi.unstage(&vol, &staging).unwrap();
    expect_code(
        csi.stats(&vol, &staging.display().to_string()),
        Code::NotFound,
        "not staged",
    );
    assert!(
        !plugin.log().contains(&server.secret_key),
        "secret in the plugin log"
    );
    env.assert_no_mounts();
}

#[test]
fn twenty_concurrent_publishes_of_one_volume() {
    let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    let tree = small_tree();
    let bucket = dataset(&server, &tree);
    let env = Env::new();
    let plugin = env.start_plugin();
    let csi = Csi {
        env: &env,
        plugin: &plugin,
    };
    let staging = env.path("staging");
    let vol = unique_name("vol");
    csi.stage(stage_req(
        &vol,
        &staging,
        &context(&server, &bucket.name),
        &s3_secrets(&server),
    ))
    .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));

    let targets: Vec<PathBuf> = (0..20)
        .map(|i| env.path(&format!("pods/p{i:02}/volumes/mount")))
        .collect();
    let t0 = Instant::now();
    let results = env
        .rt
        .block_on(futures::future::join_all(targets.iter().enumerate().map(
            |(i, t)| {
                let mut node = plugin.node.clone();
                let req = publish_req(&vol, &staging, t, i % 2 == 0, None);
                async move { node.node_publish_volume(req).await }
            },
        )));
    eprintln!(
        "20 concurrent publishes took {} ms",
        t0.elapsed().as_millis()
    );
    for (t, r) in targets.iter().zip(results) {
        r.unwrap_or_else(|e| panic!("{}: {e:?}", t.display()));
        assert_eq!(mount_count(t), 1, "{}", t.display());
        assert_eq!(std::fs::read(t.join("a/b/c/deep.txt")).unwrap(), b"deep\n");
    }
    assert_eq!(mount_count(&staging), 1);
    let big = &tree.files["big.bin"];
    assert_eq!(&std::fs::read(targets[7].join("big.bin")).unwrap(), big);

    let results = env
        .rt
        .block_on(futures::future::join_all(targets.iter().map(|t| {
            let mut node = plugin.node.clone();
            let req = NodeUnpublishVolumeRequest {
                volume_id: vol.clone(),
                target_path: t.display().to_string(),
            };
            async move { node.node_unpublish_volume(req).await }
        })));
    for (t, r) in targets.iter().zip(results) {
        r.unwrap();
        assert!(!t.exists());
    }
    csi.unstage(&vol, &staging).unwrap();
    env.assert_no_mounts();
}
