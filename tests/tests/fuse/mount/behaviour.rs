//! What a reader sees: fresh objects after the TTL, read-only, bad secrets, 100k entries, a store that goes down.

use super::*;

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
