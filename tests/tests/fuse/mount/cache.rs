//! The tiers: second reads from cache, disk tiers across remounts and block sizes, passthrough, corruption.

use super::*;

#[test]
fn second_read_is_served_from_cache_and_remount_reuses_the_disk_tier() {
    let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    let tree = small_tree();
    let bucket = s3_dataset(&server, &tree, "");
    let cache = tempfile::tempdir().unwrap();
    let mut a = server.mount_args(&format!("s3://{}", bucket.name));
    a.extend(args(&[
        "--block-size",
        "1MiB",
        "--tier",
        "mem:8MiB",
        "--tier",
        &format!("ssd:{}:64MiB", cache.path().display()),
    ]));

    let d = FuseDaemon::start(&a).unwrap();
    check_tree(&d, &tree);
    let first = stats(&d);
    assert!(first.source_requests > 0 && first.misses > 0);
    // No wait for the disk writes behind the reads: a block still queued for the disk is
    // read from the queue (a pinned block pushed out of the small memory tier once was not,
    // and the second pass fetched it again).
    // Drop the kernel's copy so the second pass reaches the daemon.
    std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
    read_all(&d.mountpoint, &tree);
    let second = stats(&d);
    assert_eq!(
        second.source_requests, first.source_requests,
        "second pass went to the source: {second:?}"
    );
    assert!(second.hits > first.hits, "{second:?}");
    for t in &second.tiers {
        assert!(t.used_bytes <= t.capacity_bytes, "tier over quota: {t:?}");
    }
    let (dir, mnt) = d.into_dir();

    let d = FuseDaemon::start_at(dir, mnt, &a).unwrap();
    read_all(&d.mountpoint, &tree);
    let after = stats(&d);
    let disk = after.tiers.iter().find(|t| t.medium == "SSD").unwrap();
    assert!(
        disk.hits > 0,
        "remount did not use the disk tier: {after:?}"
    );
    // The MEM tier holds 8 MiB of the 30+ MiB, so only what the disk lost may be refetched.
    assert_eq!(
        after.source_requests, 0,
        "remount refetched from the source: {after:?}"
    );
}

#[test]
fn a_disk_tier_reopened_with_another_block_size_serves_right_bytes() {
    let tree = small_tree();
    let src = tempfile::tempdir().unwrap();
    tree.write_local(src.path()).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mount = |block_size: &str| {
        args(&[
            "--mount",
            &format!("local://{}", src.path().display()),
            "--block-size",
            block_size,
            "--tier",
            "mem:8MiB",
            "--tier",
            &format!("ssd:{}:256MiB", cache.path().display()),
        ])
    };
    // Blocks cut at 4 MiB (a clean stop writes them all and the index); a remount at 4 MiB
    // serves them from the disk tier.
    let d = FuseDaemon::start(&mount("4MiB")).unwrap();
    read_all(&d.mountpoint, &tree);
    assert!(d.stop().unwrap().success());
    let d = FuseDaemon::start(&mount("4MiB")).unwrap();
    read_all(&d.mountpoint, &tree);
    let same = stats(&d);
    let disk = same.tiers.iter().find(|t| t.medium == "SSD").unwrap();
    assert!(
        disk.hits > 0 && same.source_requests == 0,
        "{same:?}\n{}",
        d.log()
    );
    assert!(d.stop().unwrap().success());

    // Reopened at 1 MiB: none of the 4 MiB blocks is kept, and reads across every 1 MiB and
    // 4 MiB edge of the big file are the source's bytes.
    let d = FuseDaemon::start(&mount("1MiB")).unwrap();
    let fresh = stats(&d);
    let disk = fresh.tiers.iter().find(|t| t.medium == "SSD").unwrap();
    assert_eq!(
        disk.blocks, 0,
        "blocks of another size were kept: {fresh:?}"
    );
    let (big, want) = tree.files.iter().max_by_key(|(_, b)| b.len()).unwrap();
    let path = d.mountpoint.join(big);
    for edge in (MIB..want.len() as u64).step_by(MIB as usize) {
        let at = edge - 4096;
        let got = read_at(&path, at, 8192);
        let end = (at as usize + 8192).min(want.len());
        assert!(
            got == want[at as usize..end],
            "{big}: wrong bytes around {edge} after the block size changed\n{}",
            d.log()
        );
    }
    check_tree(&d, &tree);
    let after = stats(&d);
    assert!(
        after.source_requests > 0,
        "the 1 MiB blocks came from the source: {after:?}"
    );
}

#[test]
fn files_whole_in_memory_are_read_by_kernel_passthrough() {
    let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    let tree = small_tree();
    let bucket = s3_dataset(&server, &tree, "");
    let mut a = server.mount_args(&format!("s3://{}", bucket.name));
    a.extend(args(&["--block-size", "1MiB", "--tier", "mem:64MiB"]));
    let d = FuseDaemon::start(&a).unwrap();
    let (name, want) = tree.files.iter().max_by_key(|(_, b)| b.len()).unwrap();
    let path = d.mountpoint.join(name);
    let len = want.len();
    assert!(len as u64 >= 16 * MIB, "a file of several blocks: {len}");

    // Cold: read through the daemon (in runs of blocks), by read() and by mmap() at once.
    let mapped = std::fs::File::open(&path).unwrap();
    assert!(std::fs::read(&path).unwrap() == want[..], "cold read");
    assert!(read_mapped(&mapped, len) == want[..], "cold mmap");
    let cold = stats(&d);
    assert!(cold.bytes_served >= len as u64, "{cold:?}");
    assert!(
        cold.source_requests < 24,
        "sequential blocks come in runs, fewer requests than blocks: {cold:?}"
    );

    // The object is whole in memory now, but a file mapped from a daemon-served open is
    // still open: new opens must not ask for passthrough (the kernel would fail them).
    assert!(
        std::fs::read(&path).unwrap() == want[..],
        "read beside a mapping"
    );
    drop(mapped);

    // Passthrough: once the daemon has the close of the mapped file (the kernel sends it on
    // its own time), opens are passthrough: the kernel reads the memory tier itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = stats(&d);
        assert!(
            std::fs::read(&path).unwrap() == want[..],
            "passthrough read"
        );
        if stats(&d).passthrough_opens > before.passthrough_opens {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no passthrough open: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The daemon sees no reads, even once the kernel's own caches are dropped.
    let before = stats(&d);
    std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
    let held = std::fs::File::open(&path).unwrap();
    assert!(read_mapped(&held, len) == want[..], "passthrough mmap");
    let after = stats(&d);
    assert_eq!(
        after.bytes_served,
        before.bytes_served,
        "passthrough reads reached the daemon: {after:?}\n{}",
        d.log()
    );
    assert_eq!(after.source_requests, before.source_requests);
    assert_eq!(
        after.passthrough_opens,
        before.passthrough_opens + 1,
        "{after:?}"
    );

    // An open file keeps its bytes when the cache drops the object ...
    let evicted = d.client("evict", &[&format!("/{name}")]).unwrap();
    assert!(evicted.contains("evicted 24 blocks"), "{evicted}");
    let mut again = Vec::new();
    std::io::Read::read_to_end(&mut &held, &mut again).unwrap();
    assert!(again == want[..], "held file after evict");
    drop(held);
    // ... and once it is closed, the next open reads through the daemon from the source. The
    // kernel sends the close on its own time; an open before the daemon has it still follows
    // the held file (whose bytes are whole).
    let deadline = Instant::now() + Duration::from_secs(10);
    let refetched = loop {
        assert!(
            std::fs::read(&path).unwrap() == want[..],
            "read after evict"
        );
        let now = stats(&d);
        if now.source_requests > after.source_requests || Instant::now() > deadline {
            break now;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        refetched.source_requests > after.source_requests,
        "{refetched:?}"
    );
    assert!(refetched.bytes_served > after.bytes_served, "{refetched:?}");
    check_tree(&d, &tree);
}

#[test]
fn corrupted_disk_block_is_detected_and_refetched() {
    let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    let tree = small_tree();
    let bucket = s3_dataset(&server, &tree, "");
    let cache = tempfile::tempdir().unwrap();
    let mut a = server.mount_args(&format!("s3://{}", bucket.name));
    a.extend(args(&[
        "--block-size",
        "1MiB",
        "--tier",
        &format!("ssd:{}:64MiB", cache.path().display()),
    ]));
    let d = FuseDaemon::start(&a).unwrap();
    read_all(&d.mountpoint, &tree);
    let (dir, mnt) = d.into_dir();

    // Flip one byte near the end of every block file (past any header).
    let mut corrupted = 0;
    for f in walk(cache.path()) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("index") || name.ends_with(".tmp") {
            continue;
        }
        let mut bytes = std::fs::read(&f).unwrap();
        if bytes.len() > 64 {
            let i = bytes.len() - 1;
            bytes[i] ^= 0xff;
            std::fs::write(&f, bytes).unwrap();
            corrupted += 1;
        }
    }
    assert!(
        corrupted > 0,
        "no block files found under {}",
        cache.path().display()
    );

    let d = FuseDaemon::start_at(dir, mnt, &a).unwrap();
    check_tree(&d, &tree);
    let s = stats(&d);
    assert!(
        s.source_requests >= corrupted,
        "corrupt blocks were not refetched: {s:?} ({corrupted} corrupted)"
    );
}
