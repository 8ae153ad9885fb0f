//! The same tree served byte-exact from each kind of store.

use super::*;

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
