//! fluid-fuse end to end: real daemons, real FUSE mounts, real servers.

use std::path::Path;
use std::time::{Duration, Instant};

use fluid_proto::Endpoint;
use fluid_proto::fluid::GetStatsResponse;
use fluid_proto::fluid::cache_node_client::CacheNodeClient;
use fluid_tests::daemon::{FuseDaemon, is_mounted};
use fluid_tests::services::{self, S3Server, TempBucket};
use fluid_tests::tree::{self, Tree, TreeSpec};

const MIB: u64 = 1 << 20;

fn full_spec() -> TreeSpec {
    TreeSpec {
        block_size: MIB,
        big_file: 100 * MIB,
        small_files: 10_000,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn stats(d: &FuseDaemon) -> GetStatsResponse {
    rt().block_on(async {
        let ep: Endpoint = d.control_endpoint().parse().unwrap();
        let mut c = CacheNodeClient::new(ep.connect().await.unwrap());
        c.get_stats(fluid_proto::fluid::GetStatsRequest::default())
            .await
            .unwrap()
            .into_inner()
    })
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A bucket on `server` holding `tree` under `prefix`, removed when dropped.
fn s3_dataset(server: &S3Server, tree: &Tree, prefix: &str) -> TempBucket {
    let bucket = server
        .temp_bucket("mnt")
        .unwrap_or_else(|e| panic!("{e:#}"));
    rt().block_on(tree.upload_s3(&server.client(), &bucket.name, prefix))
        .unwrap();
    bucket
}

fn check_tree(d: &FuseDaemon, tree: &Tree) {
    if let Err(e) = tree.verify(&d.mountpoint, 200) {
        panic!("{e:#}\ndaemon log:\n{}", d.log());
    }
}

#[test]
fn local_source_serves_the_tree_byte_exact() {
    let tree = tree::generate(&full_spec(), 1);
    let src = tempfile::tempdir().unwrap();
    tree.write_local(src.path()).unwrap();
    let url = format!("local://{}", src.path().display());
    let d = FuseDaemon::start(&args(&[
        "--mount",
        &url,
        "--block-size",
        "1MiB",
        "--tier",
        "mem:64MiB",
    ]))
    .unwrap();
    check_tree(&d, &tree);
    let s = stats(&d);
    assert!(
        s.tiers[0].used_bytes <= 64 * MIB,
        "MEM tier over quota: {s:?}"
    );
    let mnt = d.mountpoint.clone();
    assert!(d.stop().unwrap().success());
    assert!(!is_mounted(&mnt), "unmounted on SIGTERM");
}

#[test]
fn seaweedfs_source_serves_the_tree_byte_exact() {
    let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    let tree = tree::generate(&full_spec(), 2);
    let bucket = s3_dataset(&server, &tree, "data/set");
    let mut a = server.mount_args(&format!("s3://{}/data/set", bucket.name));
    a.extend(args(&["--block-size", "1MiB", "--tier", "mem:256MiB"]));
    let d = FuseDaemon::start(&a).unwrap();
    check_tree(&d, &tree);
    let head = rt()
        .block_on(
            server
                .client()
                .head_object()
                .bucket(&bucket.name)
                .key("data/set/big.bin")
                .send(),
        )
        .unwrap();
    let want = std::time::SystemTime::try_from(*head.last_modified().unwrap()).unwrap();
    let got = std::fs::metadata(d.mountpoint.join("big.bin"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(
        got, want,
        "big.bin: modification time is the object's LastModified"
    );
}

#[test]
fn ceph_rgw_source_serves_the_tree_byte_exact() {
    let server = S3Server::ceph_rgw().unwrap_or_else(|e| panic!("{e:#}"));
    let tree = tree::generate(&full_spec(), 3);
    let bucket = s3_dataset(&server, &tree, "");
    let mut a = server.mount_args(&format!("s3://{}", bucket.name));
    a.extend(args(&["--block-size", "1MiB", "--tier", "mem:256MiB"]));
    let d = FuseDaemon::start(&a).unwrap();
    check_tree(&d, &tree);
}

#[test]
fn minidfs_source_serves_the_tree_byte_exact() {
    let url = services::hdfs_url().unwrap_or_else(|e| panic!("{e:#}"));
    let tree = tree::generate(&full_spec(), 4);
    let root = format!("/{}", services::unique_name("mnt"));
    rt().block_on(async {
        let client = hdfs_native::ClientBuilder::new()
            .with_url(&url)
            .build()
            .unwrap();
        tree.upload_hdfs(&client, &root).await.unwrap();
    });
    let d = FuseDaemon::start(&args(&[
        "--mount",
        &format!("{url}{root}"),
        "--block-size",
        "1MiB",
        "--tier",
        "mem:256MiB",
    ]))
    .unwrap();
    check_tree(&d, &tree);
}

fn small_tree() -> Tree {
    tree::generate(
        &TreeSpec {
            block_size: MIB,
            big_file: 24 * MIB,
            small_files: 20,
        },
        5,
    )
}

fn read_all(root: &Path, tree: &Tree) {
    for p in tree.files.keys() {
        std::fs::read(root.join(p)).unwrap();
    }
}

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

/// Reads `len` bytes at `offset` of `path` with one pread.
fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0; len];
    let n = f.read_at(&mut buf, offset).unwrap();
    buf.truncate(n);
    buf
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

/// Maps `f` read-only and copies its bytes out through the mapping.
fn read_mapped(f: &std::fs::File, len: usize) -> Vec<u8> {
    use std::os::fd::AsRawFd;
    // SAFETY: a fresh shared read-only mapping of `len` bytes of an open file, unmapped below.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
        let out = std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec();
        libc::munmap(p, len);
        out
    }
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

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}

#[test]
fn overwritten_object_is_served_fresh_after_the_attribute_ttl() {
    let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    let temp = server
        .temp_bucket("fresh")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let bucket = temp.name.clone();
    let s3 = server.client();
    rt().block_on(async {
        s3.put_object()
            .bucket(&bucket)
            .key("f.txt")
            .body(b"version one".to_vec().into())
            .send()
            .await
            .unwrap();
    });
    let mut a = server.mount_args(&format!("s3://{bucket}"));
    a.extend(args(&["--attr-ttl", "1s", "--entry-ttl", "1s"]));
    let d = FuseDaemon::start(&a).unwrap();
    let f = d.mountpoint.join("f.txt");
    assert_eq!(std::fs::read(&f).unwrap(), b"version one");
    rt().block_on(async {
        s3.put_object()
            .bucket(&bucket)
            .key("f.txt")
            .body(b"version two, longer".to_vec().into())
            .send()
            .await
            .unwrap();
    });
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(std::fs::read(&f).unwrap(), b"version two, longer");
}

#[test]
fn writes_are_refused_read_only() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("x"), b"x").unwrap();
    let d = FuseDaemon::start(&args(&[
        "--mount",
        &format!("local://{}", src.path().display()),
    ]))
    .unwrap();
    for err in [
        std::fs::write(d.mountpoint.join("new"), b"y").unwrap_err(),
        std::fs::OpenOptions::new()
            .write(true)
            .open(d.mountpoint.join("x"))
            .unwrap_err(),
        std::fs::create_dir(d.mountpoint.join("d")).unwrap_err(),
        std::fs::remove_file(d.mountpoint.join("x")).unwrap_err(),
    ] {
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    }
    assert_eq!(std::fs::read(src.path().join("x")).unwrap(), b"x");
}

#[test]
fn a_wrong_secret_fails_the_mount_naming_it() {
    let mut server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    server.secret_key = "wrong-secret-value".into();
    let err = FuseDaemon::start(&server.mount_args("s3://any-bucket"))
        .err()
        .expect("mount must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("s3://any-bucket"), "{msg}");
    assert!(!msg.contains("wrong-secret-value"), "secret leaked: {msg}");
}

#[test]
fn a_directory_of_100k_entries_lists_completely() {
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("huge");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..100_000 {
        std::fs::File::create(dir.join(format!("e{i:06}"))).unwrap();
    }
    let d = FuseDaemon::start(&args(&[
        "--mount",
        &format!("local://{}", src.path().display()),
    ]))
    .unwrap();
    let t = Instant::now();
    let mut it = std::fs::read_dir(d.mountpoint.join("huge")).unwrap();
    assert!(it.next().is_some(), "first entry");
    let count = 1 + it.count();
    assert_eq!(count, 100_000);
    eprintln!("listed 100,000 entries in {:?}", t.elapsed());
}

#[test]
fn reads_fail_with_eio_while_the_source_is_down_and_recover_after() {
    let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    let tree = small_tree();
    let bucket = s3_dataset(&server, &tree, "");
    let target = server
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let proxy = fluid_tests::proxy::CuttableProxy::start(target).unwrap();
    let mut via_proxy = server.clone();
    via_proxy.endpoint = format!("http://{}", proxy.addr);
    let mut a = via_proxy.mount_args(&format!("s3://{}", bucket.name));
    a.extend(args(&["--block-size", "1MiB", "--tier", "mem:4MiB"]));
    let d = FuseDaemon::start(&a).unwrap();
    let big = d.mountpoint.join("big.bin");
    let expected = &tree.files["big.bin"];

    // Read the first megabytes, then cut the source mid-file.
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(&big).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    f.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..], &expected[..MIB as usize]);
    proxy.cut();
    let t = Instant::now();
    let err = f
        .read_at(&mut buf, 20 * MIB)
        .expect_err("a read of an uncached block must fail while the source is down");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(120),
        "the failing read took {:?}",
        t.elapsed()
    );

    proxy.restore();
    let n = f.read_at(&mut buf, 20 * MIB).unwrap();
    assert_eq!(
        &buf[..n],
        &expected[20 * MIB as usize..20 * MIB as usize + n]
    );
}

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
    let ino = std::fs::metadata(d.mountpoint.join("deep/two/sub/y.txt"))
        .unwrap()
        .ino();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        std::fs::metadata(d.mountpoint.join("deep/two/sub/y.txt"))
            .unwrap()
            .ino(),
        ino,
        "inode numbers are stable"
    );
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
