//! Daemons that die, plugins that restart, daemons that fail or hang at start.

use super::*;

/// A reader that loops re-opening and reading one file, recording each outcome.
struct Reader {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<(Instant, Result<(), String>)>>,
}

impl Reader {
    fn start(path: PathBuf, expected: Vec<u8>) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut log = Vec::new();
            while !s.load(Ordering::Relaxed) {
                let r = match std::fs::read(&path) {
                    Ok(b) if b == expected => Ok(()),
                    Ok(b) => Err(format!("MISMATCH: {} bytes", b.len())),
                    Err(e) => Err(e.to_string()),
                };
                log.push((Instant::now(), r));
                std::thread::sleep(Duration::from_millis(10));
            }
            log
        });
        Reader { stop, handle }
    }

    fn finish(self) -> Vec<(Instant, Result<(), String>)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// Waits (up to 5 s after `since`) until `file` under every target reads back as `expected`;
/// returns how long that took.
fn wait_readable(targets: &[PathBuf], file: &str, expected: &[u8], since: Instant) -> Duration {
    let deadline = since + Duration::from_secs(5);
    loop {
        let ok = targets
            .iter()
            .all(|t| std::fs::read(t.join(file)).is_ok_and(|b| b == expected));
        if ok {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "targets not readable again within 5 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn killed_daemon_is_restarted_and_readers_recover() {
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
    let root_target = env.path("pods/a/mount");
    let sub_target = env.path("pods/b/mount");
    csi.publish(publish_req(&vol, &staging, &root_target, true, None))
        .unwrap();
    csi.publish(publish_req(
        &vol,
        &staging,
        &sub_target,
        false,
        Some("sizes"),
    ))
    .unwrap();
    let expected = tree.files["sizes/block+1"].to_vec();
    let reader = Reader::start(root_target.join("sizes/block+1"), expected.clone());
    std::thread::sleep(Duration::from_millis(300));

    for round in 1..=2 {
        let old = env.daemon_pid(&vol).expect("pid");
        let killed_at = Instant::now();
        kill(old, libc::SIGKILL);
        env.wait_new_daemon(&vol, old);
        // The supervisor starts a new daemon and re-binds both targets.
        let took = wait_readable(
            std::slice::from_ref(&root_target),
            "sizes/block+1",
            &expected,
            killed_at,
        );
        let sub_took = wait_readable(
            std::slice::from_ref(&sub_target),
            "block+1",
            &expected,
            killed_at,
        );
        let new = env.daemon_pid(&vol).expect("pid");
        assert_ne!(new, old, "a new daemon");
        assert!(process_alive(new));
        eprintln!(
            "round {round}: kill -9 of fluid-fuse {old} -> readable again through the targets after {} ms (sub path target {} ms), new pid {new}",
            took.as_millis(),
            sub_took.as_millis()
        );
        assert_eq!(
            mount_count(&staging),
            1,
            "one live mount at the staging path"
        );
        // The new bind goes on top of the dead one (so that it reaches containers holding a
        // slave copy of the target); the dead ones leave at unpublish.
        for t in [&root_target, &sub_target] {
            assert_eq!(mount_count(t), round + 1, "{}", t.display());
            assert_eq!(top_mount_dev(t), top_mount_dev(&staging), "{}", t.display());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let log = reader.finish();
    let mismatches: Vec<_> = log
        .iter()
        .filter(|(_, r)| matches!(r, Err(e) if e.starts_with("MISMATCH")))
        .collect();
    assert!(mismatches.is_empty(), "wrong bytes read: {mismatches:?}");
    let errors = log.iter().filter(|(_, r)| r.is_err()).count();
    let last_ok = log.iter().rev().take(5).all(|(_, r)| r.is_ok());
    eprintln!(
        "reader: {} reads, {errors} transient errors, e.g. {:?}",
        log.len(),
        log.iter().find_map(|(_, r)| r.as_ref().err())
    );
    assert!(
        last_ok,
        "the reader recovered by itself: {:?}",
        &log[log.len().saturating_sub(5)..]
    );
    // The read-only flag and sub path survived the re-bind.
    assert!(
        mount_options(&root_target)
            .unwrap()
            .split(',')
            .any(|o| o == "ro")
    );
    assert!(sub_target.join("block+1").is_file());
    let stats = csi.stats(&vol, &root_target.display().to_string()).unwrap();
    assert!(stats.usage[0].total > 0);

    csi.unpublish(&vol, &root_target).unwrap();
    csi.unpublish(&vol, &sub_target).unwrap();
    csi.unstage(&vol, &staging).unwrap();
    env.assert_no_mounts();
}

#[test]
fn plugin_restart_adopts_running_daemons() {
    let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    let tree = small_tree();
    let bucket = dataset(&server, &tree);
    let env = Env::new();
    let mut plugin = env.start_plugin();
    let staging = env.path("staging");
    let target = env.path("pods/a/mount");
    let vol = unique_name("vol");
    {
        let csi = Csi {
            env: &env,
            plugin: &plugin,
        };
        csi.stage(stage_req(
            &vol,
            &staging,
            &context(&server, &bucket.name),
            &s3_secrets(&server),
        ))
        .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
        csi.publish(publish_req(&vol, &staging, &target, false, None))
            .unwrap();
    }
    let deep = target.join("a/b/c/deep.txt");
    assert_eq!(std::fs::read(&deep).unwrap(), b"deep\n");
    let pid = env.daemon_pid(&vol).unwrap();

    // SIGTERM: the plugin exits cleanly; the daemon and the mounts stay.
    let status = plugin.stop();
    assert!(status.success(), "{status:?}\n{}", plugin.log());
    assert!(process_alive(pid), "fluid-fuse survives the plugin");
    assert_eq!(std::fs::read(&deep).unwrap(), b"deep\n");
    // While no plugin runs, the target loses its bind mount and a stale folder appears in
    // the state dir: the next plugin re-binds the one and removes the other.
    fluid_tests::daemon::lazy_unmount(&target);
    assert_eq!(mount_count(&target), 0);
    let junk = env.state_dir().join("junk-without-record");
    std::fs::create_dir(&junk).unwrap();

    // A new plugin on the same state dir adopts the daemon: same pid, one mount. It is
    // configured with another fluid-fuse binary (a newer release: here the same program
    // with bytes appended), so it upgrades the daemon's serving process to it.
    let newer = env.path("fluid-fuse-next");
    let mut bytes = std::fs::read(binary("fluid-fuse")).unwrap();
    bytes.extend_from_slice(b"next release");
    std::fs::write(&newer, &bytes).unwrap();
    std::fs::set_permissions(&newer, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut plugin = Plugin::start_with(&env, &[format!("--fuse-binary={}", newer.display())]);
    {
        let csi = Csi {
            env: &env,
            plugin: &plugin,
        };
        // Stats go through the volume's lock, so they answer once recovery is done.
        csi.stats(&vol, &target.display().to_string())
            .unwrap_or_else(|e| panic!("{e:?}\n{}", plugin.log()));
        assert_eq!(env.daemon_pid(&vol), Some(pid), "{}", plugin.log());
        assert!(!junk.exists(), "stale state folder removed");
        assert!(process_alive(pid));
        assert_eq!(mount_count(&staging), 1);
        assert_eq!(mount_count(&target), 1);
        assert_eq!(std::fs::read(&deep).unwrap(), b"deep\n");
        assert!(plugin.log().contains("adopted"), "{}", plugin.log());
        assert!(
            plugin.log().contains("upgraded fluid-fuse"),
            "{}",
            plugin.log()
        );
        let serving = fluid_tests::daemon::serving_pids(pid);
        assert_eq!(serving.len(), 1, "{serving:?}");
        assert_eq!(
            std::fs::read_link(format!("/proc/{}/exe", serving[0])).unwrap(),
            newer,
            "the serving process runs the plugin's binary"
        );
        // Publishing the same target again is still idempotent.
        csi.publish(publish_req(&vol, &staging, &target, false, None))
            .unwrap();
        assert_eq!(mount_count(&target), 1);
    }

    // The adopted daemon is still supervised: kill -9 brings a new one, readers recover.
    let killed_at = Instant::now();
    kill(pid, libc::SIGKILL);
    env.wait_new_daemon(&vol, pid);
    let took = wait_readable(
        std::slice::from_ref(&target),
        "a/b/c/deep.txt",
        b"deep\n",
        killed_at,
    );
    let pid2 = env.daemon_pid(&vol).unwrap();
    assert_ne!(pid2, pid);
    eprintln!(
        "adopted daemon killed -> readable again after {} ms",
        took.as_millis()
    );

    // A crashed plugin, and the daemon dies while no plugin runs: the next plugin restarts
    // it from the record and re-binds the target.
    plugin.crash();
    kill(pid2, libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(200));
    assert!(std::fs::read(&deep).is_err(), "no daemon, no data");
    let started = Instant::now();
    let plugin = env.start_plugin();
    let took = wait_readable(
        std::slice::from_ref(&target),
        "a/b/c/deep.txt",
        b"deep\n",
        started,
    );
    let pid3 = env.daemon_pid(&vol).unwrap();
    assert!(pid3 != pid2 && process_alive(pid3));
    eprintln!(
        "daemon dead at plugin start -> restarted and readable after {} ms",
        took.as_millis()
    );
    assert_eq!(mount_count(&staging), 1);
    // The new daemon's bind on top of the dead one (see killed_daemon_is_restarted...).
    assert_eq!(top_mount_dev(&target), top_mount_dev(&staging));

    let csi = Csi {
        env: &env,
        plugin: &plugin,
    };
    csi.unpublish(&vol, &target).unwrap();
    csi.unstage(&vol, &staging).unwrap();
    assert!(!process_alive(pid3));
    env.assert_no_mounts();
}

#[test]
fn a_daemon_that_fails_or_hangs_fails_the_stage_with_its_log() {
    let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    let bucket = server
        .temp_bucket("csinode")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let env = Env::new();
    let staging = env.path("staging");
    let ctx = context(&server, &bucket.name);

    // A wrong secret: fluid-fuse exits before mounting; the error quotes its log, never the
    // secret, and nothing stays behind.
    {
        let plugin = env.start_plugin();
        let csi = Csi {
            env: &env,
            plugin: &plugin,
        };
        let vol = unique_name("vol");
        let mut sec = s3_secrets(&server);
        sec.insert("secret-key".into(), "wrong-secret-value".into());
        let err = csi
            .stage(stage_req(&vol, &staging, &ctx, &sec))
            .expect_err("a wrong secret cannot mount");
        assert_eq!(err.code(), Code::Internal, "{err:?}");
        let msg = err.message();
        assert!(
            msg.contains("before it mounted") && msg.contains("end of its log"),
            "{msg}"
        );
        assert!(msg.contains(&format!("s3://{}", bucket.name)), "{msg}");
        assert!(!msg.contains("wrong-secret-value"), "secret leaked: {msg}");
        assert!(!plugin.log().contains("wrong-secret-value"));
        assert_eq!(mount_count(&staging), 0);
        assert!(!env.state_dir().join(&vol).exists(), "state cleaned");
        // The failed stage let go of its staging path: another volume may take it.
        let other = unique_name("other");
        csi.stage(stage_req(&other, &staging, &ctx, &s3_secrets(&server)))
            .unwrap_or_else(|e| panic!("the staging path is still claimed: {e:?}"));
        csi.unstage(&other, &staging).unwrap();
        // The right secret works afterwards.
        csi.stage(stage_req(&vol, &staging, &ctx, &s3_secrets(&server)))
            .unwrap();
        csi.unstage(&vol, &staging).unwrap();
    }

    // A daemon that never becomes ready is killed after --ready-timeout.
    let fake = env.path("fake-fluid-fuse");
    let fake_pid = env.path("fake.pid");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"fake fluid-fuse starting\"\necho $$ > {}\nexec sleep 60\n",
            fake_pid.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let plugin = Plugin::start_with(
        &env,
        &[
            format!("--fuse-binary={}", fake.display()),
            "--ready-timeout=1s".into(),
        ],
    );
    let csi = Csi {
        env: &env,
        plugin: &plugin,
    };
    let vol = unique_name("vol");
    let t0 = Instant::now();
    let err = csi
        .stage(stage_req(&vol, &staging, &ctx, &s3_secrets(&server)))
        .expect_err("never ready");
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(err.code(), Code::Internal);
    assert!(
        err.message().contains("did not mount within 1s")
            && err.message().contains("fake fluid-fuse starting"),
        "{}",
        err.message()
    );
    let pid: u32 = std::fs::read_to_string(&fake_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!process_alive(pid), "the hung daemon was killed");
    env.assert_no_mounts();
}
