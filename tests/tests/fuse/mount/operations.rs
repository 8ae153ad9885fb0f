//! What an operator uses: warmup and evict, metrics, unions of mounts, SIGTERM, external unmounts.

use super::*;

#[test]
fn warmup_loads_the_cache_and_evict_frees_it_through_the_cli() {
    let src = tempfile::tempdir().unwrap();
    let tree = small_tree();
    tree.write_local(src.path()).unwrap();
    let d = FuseDaemon::start(&args(&[
        "--mount",
        &format!("local://{}", src.path().display()),
        "--block-size",
        "1MiB",
        "--tier",
        "mem:128MiB",
        "--metrics",
        "127.0.0.1:0",
    ]))
    .unwrap();
    let total: u64 = tree.files.values().map(|b| b.len() as u64).sum();

    let out = d.client("warmup", &["/"]).unwrap();
    assert!(
        out.contains(&format!(
            "warmed {} of {} files",
            tree.files.len(),
            tree.files.len()
        )),
        "{out}"
    );
    let warm = stats(&d);
    assert_eq!(
        warm.source_bytes_read, total,
        "warm-up read every byte once: {warm:?}"
    );
    assert_eq!(warm.tiers[0].used_bytes, total);

    // A cold read through the mount is now served entirely from the cache.
    read_all(&d.mountpoint, &tree);
    let after = stats(&d);
    assert_eq!(
        after.source_requests, warm.source_requests,
        "reads after warm-up went to the source"
    );

    let printed = d.client("stats", &[]).unwrap();
    assert!(
        printed.contains("MEM") && printed.contains("hit ratio"),
        "{printed}"
    );

    let evicted = d.client("evict", &["/big.bin"]).unwrap();
    assert!(evicted.contains("evicted 24 blocks"), "{evicted}");
    let freed = stats(&d);
    assert_eq!(freed.tiers[0].used_bytes, total - 24 * MIB);

    let bad = d.client("warmup", &["/no/such/path"]);
    assert!(bad.unwrap_err().to_string().contains("/no/such/path"));
}

#[test]
fn metrics_are_served_in_prometheus_text() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), vec![7u8; 3 * MIB as usize]).unwrap();
    // Port 0: the daemon binds a free port itself and prints it (a port picked here and
    // released could be taken by another process before the daemon binds it).
    let d = FuseDaemon::start(&args(&[
        "--mount",
        &format!("local://{}", src.path().display()),
        "--metrics",
        "127.0.0.1:0",
    ]))
    .unwrap();
    let port = d
        .metrics
        .expect("the daemon prints its metrics address")
        .port();
    std::fs::read(d.mountpoint.join("f")).unwrap();
    // The fetch's latency is recorded when its request ends, which may be just after the
    // reader got the block's bytes: scrape until it shows (as Prometheus would, later).
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let body = services::http_get(port, "/metrics").unwrap();
        let reads = body
            .lines()
            .find_map(|l| l.strip_prefix("fluid_read_duration_seconds_count "))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        let settled =
            body.contains("fluid_source_request_duration_seconds_count 1\n") && reads >= 3;
        if settled || Instant::now() >= deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains("fluid_source_read_bytes_total 3145728"),
        "{body}"
    );
    assert!(
        body.contains("fluid_cache_used_bytes{tier=\"MEM\""),
        "{body}"
    );
    // One 3 MiB file in one 4 MiB block: one source request, several reads through the mount.
    assert!(
        body.contains("fluid_source_request_duration_seconds_count 1\n"),
        "{body}"
    );
    let reads = body
        .lines()
        .find_map(|l| l.strip_prefix("fluid_read_duration_seconds_count "))
        .unwrap();
    assert!(reads.parse::<u64>().unwrap() >= 3, "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    // Every sample name served before the move to prometheus-client, which dashboards use,
    // with the tier labels as they were.
    for name in [
        "fluid_cache_hits_total{tier=\"MEM\",path=",
        "fluid_cache_misses_total ",
        "fluid_cache_used_bytes{tier=\"MEM\",path=",
        "fluid_cache_capacity_bytes{tier=\"MEM\",path=",
        "fluid_cache_evictions_total{tier=\"MEM\",path=",
        "fluid_source_read_bytes_total ",
        "fluid_source_requests_total ",
        "fluid_served_bytes_total ",
        "fluid_passthrough_opens_total ",
        "fluid_read_duration_seconds_bucket{le=",
        "fluid_source_request_duration_seconds_sum ",
    ] {
        assert!(
            body.lines().any(|l| l.starts_with(name)),
            "no sample starts with {name:?}:\n{body}"
        );
    }

    // A successor of a killed serving process answers on the same port (the keeper holds
    // the listener), with its own figures.
    let first = d.wait_serving(None, Duration::from_secs(10)).unwrap();
    // SAFETY: kill(2) of a process this test started (through the keeper).
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    d.wait_serving(Some(first), Duration::from_secs(10))
        .unwrap();
    let after = services::http_get(port, "/metrics").unwrap();
    assert!(after.starts_with("HTTP/1.1 200"), "{after}");
    assert!(
        after.contains("fluid_source_read_bytes_total 0\n"),
        "{after}"
    );
    let missing = services::http_get(port, "/nothing").unwrap();
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
}

#[test]
fn a_dataset_unions_its_mounts_with_stable_inodes() {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(one.path().join("x.txt"), b"from one").unwrap();
    std::fs::create_dir(two.path().join("sub")).unwrap();
    std::fs::write(two.path().join("sub/y.txt"), b"from two").unwrap();
    let dataset = one.path().join("dataset.yaml");
    std::fs::write(
        &dataset,
        format!(
            "apiVersion: data.fluid.io/v1alpha1\nkind: Dataset\nmetadata: {{name: union}}\nspec:\n  mounts:\n    \
             - {{mountPoint: 'local://{}', name: one}}\n    - {{mountPoint: 'local://{}', name: two, path: /deep/two}}\n",
            one.path().display(),
            two.path().display()
        ),
    )
    .unwrap();
    let d = FuseDaemon::start(&args(&[
        "--dataset",
        dataset.to_str().unwrap(),
        "--attr-ttl",
        "1s",
        "--entry-ttl",
        "1s",
    ]))
    .unwrap();
    let names = |p: &Path| -> Vec<String> {
        let mut v: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&d.mountpoint), ["deep", "one"]);
    assert_eq!(names(&d.mountpoint.join("deep")), ["two"]);
    assert_eq!(
        std::fs::read(d.mountpoint.join("one/x.txt")).unwrap(),
        b"from one"
    );
    assert_eq!(
        std::fs::read(d.mountpoint.join("deep/two/sub/y.txt")).unwrap(),
        b"from two"
    );
    assert!(std::fs::metadata(d.mountpoint.join("deep/missing")).is_err());

    use std::os::unix::fs::MetadataExt;
    // Held open: an inode the kernel forgets (another test's drop_caches evicts unused ones)
    // may come back under a new number; one in use must keep its number past the TTLs.
    let held = std::fs::File::open(d.mountpoint.join("deep/two/sub/y.txt")).unwrap();
    let ino = held.metadata().unwrap().ino();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        std::fs::metadata(d.mountpoint.join("deep/two/sub/y.txt"))
            .unwrap()
            .ino(),
        ino,
        "inode numbers are stable"
    );
    drop(held);
}

#[test]
fn sigterm_with_open_files_and_external_unmounts_leave_no_dead_mount() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"held open").unwrap();
    let url = format!("local://{}", src.path().display());

    // SIGTERM while a reader holds a file open: the busy mount is detached, not left dead.
    let d = FuseDaemon::start(&args(&["--mount", &url])).unwrap();
    let held = std::fs::File::open(d.mountpoint.join("f")).unwrap();
    let mnt = d.mountpoint.clone();
    let status = d.stop().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!is_mounted(&mnt), "mount left behind at {}", mnt.display());
    drop(held);

    // Unmounted from outside: the daemon notices and exits by itself.
    let mut d = FuseDaemon::start(&args(&["--mount", &url])).unwrap();
    fluid_tests::daemon::lazy_unmount(&d.mountpoint);
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.running() {
        assert!(
            Instant::now() < deadline,
            "fluid-fuse still runs after its mount went away; its log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The node plugin moves a kept volume's mount (a bind to its park folder, then the staging
/// path unmounted): the daemon serves on through the bind, and exits once its file system is
/// mounted nowhere.
#[test]
fn the_daemon_serves_while_any_mount_of_it_remains() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f.txt"), b"still here\n").unwrap();
    let url = format!("local://{}", src.path().display());
    let mut d = FuseDaemon::start(&args(&["--mount", &url, "--tier", "mem:16MiB"])).unwrap();
    let park = tempfile::tempdir().unwrap();
    let bind = |from: &Path, to: &Path| {
        let (f, t) = (
            std::ffi::CString::new(from.as_os_str().as_encoded_bytes()).unwrap(),
            std::ffi::CString::new(to.as_os_str().as_encoded_bytes()).unwrap(),
        );
        // SAFETY: valid NUL-terminated paths; a plain bind mount.
        let rc = unsafe {
            libc::mount(
                f.as_ptr(),
                t.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
    };
    bind(&d.mountpoint, park.path());
    fluid_tests::daemon::lazy_unmount(&d.mountpoint);
    // Longer than the daemon's watch interval (1 s).
    std::thread::sleep(Duration::from_millis(2500));
    assert!(d.running(), "exited with a mount of it left:\n{}", d.log());
    assert_eq!(
        std::fs::read(park.path().join("f.txt")).unwrap(),
        b"still here\n",
        "served through the bind"
    );
    fluid_tests::daemon::lazy_unmount(park.path());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while d.running() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !d.running(),
        "still running with no mount left:\n{}",
        d.log()
    );
}
