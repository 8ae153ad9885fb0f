//! The sources of the data path against real stores: SeaweedFS and Ceph RGW through S3, and
//! HDFS from MiniDFS. Each test builds a tree with the store's own client, then checks what
//! `fluid_source::open` (the retrying source the data path uses) makes of it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use fluid_source::{BlockBuf, Entry, Error, Kind, Source};
use fluid_tests::services::{S3Server, hdfs_url, unique_name};
use fluid_volume::mountpoint::MountPoint;
use futures::{FutureExt, StreamExt};
use rand::{Rng, RngCore};

const MIB: usize = 1 << 20;
/// Concurrent requests when filling a store.
const PARALLEL: usize = 32;

/// What a test puts in a store, relative to the mount's root.
struct Tree {
    files: Vec<(String, Vec<u8>)>,
    /// Every directory, the root ("") included; `m` has no children.
    dirs: Vec<String>,
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rng().fill_bytes(&mut v);
    v
}

fn tree() -> Tree {
    let long = format!("{}.bin", "L".repeat(196));
    assert_eq!(long.len(), 200);
    let sizes: Vec<(String, usize)> = vec![
        ("empty".into(), 0),
        ("one.bin".into(), 1),
        ("sizes/4m-1.bin".into(), 4 * MIB - 1),
        ("sizes/4m.bin".into(), 4 * MIB),
        ("sizes/4m+1.bin".into(), 4 * MIB + 1),
        ("nested/a/b/deep.txt".into(), 1000),
        ("nested/a/sibling.txt".into(), 10),
        ("names/with space.txt".into(), 5),
        ("names/ünïcødé 名前.txt".into(), 7),
        ("names/100% sure.txt".into(), 3),
        ("names/a+b=c.txt".into(), 4),
        ("names/%2Fnot-a-slash".into(), 6),
        (format!("names/{long}"), 2),
    ];
    let files = sizes
        .into_iter()
        .map(|(p, n)| (p, random_bytes(n)))
        .collect();
    let dirs = [
        "",
        "sizes",
        "nested",
        "nested/a",
        "nested/a/b",
        "names",
        "m",
    ];
    Tree {
        files,
        dirs: dirs.iter().map(|d| d.to_string()).collect(),
    }
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

fn base(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl Tree {
    /// The (name, kind) pairs a listing of `dir` must return.
    fn children(&self, dir: &str) -> BTreeSet<(String, &'static str)> {
        let files = self.files.iter().map(|(p, _)| (p.as_str(), "file"));
        let dirs = self
            .dirs
            .iter()
            .filter(|d| !d.is_empty())
            .map(|d| (d.as_str(), "dir"));
        files
            .chain(dirs)
            .filter(|(p, _)| parent(p) == dir)
            .map(|(p, k)| (base(p).to_string(), k))
            .collect()
    }
}

/// `Kind` as a sortable word, for sets of listing entries.
fn kind(k: Kind) -> &'static str {
    match k {
        Kind::File => "file",
        Kind::Dir => "dir",
    }
}

fn mount(url: &str, options: &[(&str, &str)]) -> MountPoint {
    let options = options
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    MountPoint::parse(url, options, "mountPoint").unwrap()
}

/// Every entry of `dir`, and the number of pages it took.
async fn list_all(src: &dyn Source, dir: &str) -> (Vec<Entry>, usize) {
    let mut entries = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let page = src
            .list(dir, token)
            .await
            .unwrap_or_else(|e| panic!("{}: list {dir:?}: {e}", src.name()));
        pages += 1;
        entries.extend(page.entries);
        token = page.next;
        if token.is_none() {
            return (entries, pages);
        }
        assert!(
            pages < 10_000,
            "{}: listing of {dir:?} does not end",
            src.name()
        );
    }
}

/// Everything a source must get right about `tree`.
async fn verify_tree(src: &dyn Source, tree: &Tree) {
    let name = src.name().to_string();
    src.check()
        .await
        .unwrap_or_else(|e| panic!("{name}: check: {e}"));

    for dir in &tree.dirs {
        let meta = src
            .stat(dir)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{name}: dir {dir:?} missing"));
        assert_eq!(meta.kind, Kind::Dir, "{name}: stat {dir:?}");
        let (entries, _) = list_all(src, dir).await;
        let got: BTreeSet<_> = entries
            .iter()
            .map(|e| (e.name.clone(), kind(e.meta.kind)))
            .collect();
        assert_eq!(
            got.len(),
            entries.len(),
            "{name}: duplicate names in {dir:?}: {entries:?}"
        );
        assert_eq!(got, tree.children(dir), "{name}: listing of {dir:?}");
        for e in entries.iter().filter(|e| e.meta.kind == Kind::File) {
            let path = fluid_source::join(dir, &e.name);
            let data = &tree.files.iter().find(|(p, _)| *p == path).unwrap().1;
            assert_eq!(
                e.meta.size,
                data.len() as u64,
                "{name}: listed size of {path:?}"
            );
        }
    }

    for missing in [
        "absent",
        "nested/absent",
        "nested/a/b/deep.txt/below",
        "one.bin/x",
        "m/x",
    ] {
        assert_eq!(
            src.stat(missing).await.unwrap(),
            None,
            "{name}: stat {missing:?}"
        );
    }
    for not_dir in ["absent", "one.bin"] {
        let err = src.list(not_dir, None).await.expect_err(not_dir);
        assert!(
            matches!(err, Error::NotFound(_) | Error::NotADirectory(_)),
            "{name}: list {not_dir:?}: {err}"
        );
    }

    for (path, data) in &tree.files {
        verify_file(src, path, data).await;
    }
}

/// Stat and reads of one file: exact size, the whole file, random ranges, ranges over the
/// 4 MiB mark, and reads at and past the end.
async fn verify_file(src: &dyn Source, path: &str, data: &[u8]) {
    let name = src.name();
    let meta = src
        .stat(path)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{name}: file {path:?} missing"));
    assert_eq!(
        (meta.kind, meta.size),
        (Kind::File, data.len() as u64),
        "{name}: stat {path:?}"
    );
    let size = data.len() as u64;
    let read = |offset: u64, len: u64| {
        let meta = meta.clone();
        async move {
            src.read(path, &meta, offset, len)
                .await
                .unwrap_or_else(|e| panic!("{name}: read {path:?} {offset}+{len}: {e}"))
        }
    };
    assert_eq!(
        read(0, size.max(1)).await,
        Bytes::copy_from_slice(data),
        "{name}: whole {path:?}"
    );
    let mut ranges: Vec<(u64, u64)> =
        vec![(size, 10), (size + 1000, 1), (size.saturating_sub(3), 100)];
    if size > 4 * MIB as u64 - 2 {
        ranges.push((4 * MIB as u64 - 2, 4));
    }
    let mut rng = rand::rng();
    for _ in 0..(if size > 0 { 6 } else { 0 }) {
        let offset = rng.random_range(0..size);
        ranges.push((
            offset,
            rng.random_range(1..=(size - offset + 10).min(MIB as u64)),
        ));
    }
    for (offset, len) in ranges {
        let start = (offset as usize).min(data.len());
        let end = (offset.saturating_add(len) as usize).min(data.len());
        assert_eq!(
            read(offset, len).await,
            Bytes::copy_from_slice(&data[start..end]),
            "{name}: {path:?} {offset}+{len}"
        );
    }
    verify_run(src, &meta, path, data).await;
}

/// A run of buffers filled from one offset: each handed over full and in order, and the
/// bytes are the file's. The last buffer ends at the end of the file.
async fn verify_run(src: &dyn Source, meta: &fluid_source::Meta, path: &str, data: &[u8]) {
    let name = src.name();
    let size = data.len();
    if size < 3 {
        return;
    }
    let offset = size / 3;
    let lens = [(size - offset) / 3, (size - offset) / 3];
    let lens = [lens[0], lens[1], size - offset - lens[0] - lens[1]];
    let mut bufs: VecDeque<BlockBuf> = lens.iter().map(|&l| BlockBuf::new(l)).collect();
    let mut got: Vec<Bytes> = Vec::new();
    src.read_run(path, meta, offset as u64, &mut bufs, &mut |b: BlockBuf| {
        got.push(b.freeze())
    })
    .await
    .unwrap_or_else(|e| panic!("{name}: read_run {path:?} from {offset}: {e}"));
    assert!(bufs.is_empty(), "{name}: every buffer handed over");
    assert_eq!(
        got.iter().map(Bytes::len).collect::<Vec<_>>(),
        lens,
        "{name}: {path:?}"
    );
    assert!(
        got.concat() == data[offset..],
        "{name}: read_run {path:?} from {offset}"
    );
}

// ---------------------------------------------------------------------------------------------
// S3: SeaweedFS and Ceph RGW

/// A bucket of its own for one test, and the mount options that reach it.
struct Bucket {
    server: S3Server,
    client: aws_sdk_s3::Client,
    name: String,
}

impl Bucket {
    async fn create(server: S3Server) -> Self {
        let client = server.client();
        let name = unique_name("src");
        client
            .create_bucket()
            .bucket(&name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: create bucket: {e:?}", server.name));
        Bucket {
            server,
            client,
            name,
        }
    }

    /// Mount options, with the Alluxio/Hadoop spellings on RGW so both sets are exercised.
    fn options(&self) -> Vec<(&str, &str)> {
        let s = &self.server;
        if s.name.contains("RGW") {
            vec![
                ("alluxio.underfs.s3.endpoint", s.endpoint.as_str()),
                ("region", s.region.as_str()),
                ("aws.accessKeyId", s.access_key.as_str()),
                ("aws.secretKey", s.secret_key.as_str()),
            ]
        } else {
            vec![
                ("endpoint", s.endpoint.as_str()),
                ("region", s.region.as_str()),
                ("access-key", s.access_key.as_str()),
                ("secret-key", s.secret_key.as_str()),
            ]
        }
    }

    async fn open(&self, url: &str) -> Arc<dyn Source> {
        fluid_source::open(&mount(url, &self.options()))
            .await
            .unwrap()
    }

    async fn put(&self, key: &str, body: Vec<u8>) {
        self.client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: put {key:?}: {e:?}", self.server.name));
    }

    async fn put_all(&self, objects: Vec<(String, Vec<u8>)>) {
        futures::stream::iter(objects)
            .for_each_concurrent(PARALLEL, |(k, v)| async move { self.put(&k, v).await })
            .await;
    }

    /// Removes every object and the bucket, best effort: it also runs after a failed test.
    async fn delete(self) {
        let pages = self
            .client
            .list_objects_v2()
            .bucket(&self.name)
            .into_paginator()
            .send()
            .try_collect()
            .await;
        let keys: Vec<String> = pages
            .unwrap_or_default()
            .iter()
            .flat_map(|page| {
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string))
            })
            .collect();
        futures::stream::iter(keys)
            .for_each_concurrent(PARALLEL, |k| {
                let req = self.client.delete_object().bucket(&self.name).key(k);
                async move {
                    let _ = req.send().await;
                }
            })
            .await;
        if let Err(e) = self.client.delete_bucket().bucket(&self.name).send().await {
            eprintln!(
                "{}: bucket {} left behind: {e:?}",
                self.server.name, self.name
            );
        }
    }
}

/// Runs `test` on a fresh bucket of `server` and deletes the bucket afterwards, also when the
/// test fails: SeaweedFS reserves volumes for every bucket (7 of the 20 the test server has),
/// so leftover buckets soon make every write fail with HTTP 500.
async fn with_bucket<F, Fut>(server: S3Server, test: F)
where
    F: FnOnce(Arc<Bucket>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let bucket = Arc::new(Bucket::create(server).await);
    let outcome = AssertUnwindSafe(test(bucket.clone())).catch_unwind().await;
    match Arc::try_unwrap(bucket) {
        Ok(bucket) => bucket.delete().await,
        Err(b) => eprintln!(
            "{}: bucket {} still in use, left behind",
            b.server.name, b.name
        ),
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The tree under prefix `data/`, with directory markers (`data/` of the mount root itself,
/// `data/m/` without children, `data/nested/` with children) and decoys just outside it.
async fn s3_tree(bucket: &Bucket) -> Tree {
    let tree = tree();
    let mut objects: Vec<(String, Vec<u8>)> = tree
        .files
        .iter()
        .map(|(p, d)| (format!("data/{p}"), d.clone()))
        .collect();
    for marker in ["data/", "data/m/", "data/nested/"] {
        objects.push((marker.to_string(), Vec::new()));
    }
    for decoy in ["datax/decoy", "data-decoy", "top-decoy"] {
        objects.push((decoy.to_string(), b"decoy".to_vec()));
    }
    bucket.put_all(objects).await;
    tree
}

async fn s3_sources_work(bucket: &Bucket) {
    let tree = s3_tree(bucket).await;
    let src = bucket.open(&format!("s3://{}/data", bucket.name)).await;
    verify_tree(src.as_ref(), &tree).await;

    // The bucket root sees the prefix as a directory and the decoys beside it.
    let root = bucket.open(&format!("s3://{}", bucket.name)).await;
    let (entries, _) = list_all(root.as_ref(), "").await;
    let names: BTreeSet<_> = entries
        .iter()
        .map(|e| (e.name.as_str(), kind(e.meta.kind)))
        .collect();
    let want = BTreeSet::from([
        ("data", "dir"),
        ("datax", "dir"),
        ("data-decoy", "file"),
        ("top-decoy", "file"),
    ]);
    assert_eq!(names, want, "{}: bucket root", bucket.server.name);

    s3_detects_changes(bucket, src.as_ref()).await;
    s3_refuses_wrong_secret_and_missing_bucket(bucket).await;
}

/// An object overwritten after its Meta was taken is refused, not served mixed.
async fn s3_detects_changes(bucket: &Bucket, src: &dyn Source) {
    let server = bucket.server.name;
    bucket
        .put("data/changing.txt", b"version one".to_vec())
        .await;
    let old = src.stat("changing.txt").await.unwrap().unwrap();
    assert!(old.etag.is_some(), "{server}: no ETag");
    bucket
        .put("data/changing.txt", b"version two".to_vec())
        .await;
    let err = src
        .read("changing.txt", &old, 0, 7)
        .await
        .expect_err("stale meta must fail");
    assert!(matches!(err, Error::Changed(_)), "{server}: {err}");
    let new = src.stat("changing.txt").await.unwrap().unwrap();
    assert_ne!(new.version(), old.version(), "{server}");
    assert_eq!(
        &src.read("changing.txt", &new, 8, 3).await.unwrap()[..],
        b"two"
    );
}

async fn s3_refuses_wrong_secret_and_missing_bucket(bucket: &Bucket) {
    let server = bucket.server.name;
    let url = format!("s3://{}/data", bucket.name);
    let mut options = bucket.options();
    options.retain(|(k, _)| !k.contains("ecret"));
    options.push(("secret-key", "not-the-secret-at-all"));
    let wrong = fluid_source::open(&mount(&url, &options)).await.unwrap();
    let err = wrong.check().await.expect_err("a wrong secret must fail");
    assert!(matches!(err, Error::Denied { .. }), "{server}: {err}");
    assert!(
        err.to_string().contains(&url),
        "{server}: message names the mount: {err}"
    );
    assert!(
        !err.to_string().contains("not-the-secret"),
        "{server}: secret in {err}"
    );

    let missing = bucket
        .open(&format!("s3://{}-absent/data", bucket.name))
        .await;
    let err = missing
        .check()
        .await
        .expect_err("a missing bucket must fail");
    assert!(
        matches!(&err, Error::NotFound(m) if m.contains(&format!("{}-absent", bucket.name))),
        "{server}: {err}"
    );
}

/// Also lists 2,500 objects in one directory, in several pages and each exactly once (in the
/// same bucket, to hold SeaweedFS volumes for one bucket only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs_source() {
    let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    with_bucket(server, |bucket| async move {
        s3_sources_work(&bucket).await;
        s3_lists_a_big_directory_page_by_page(&bucket).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ceph_rgw_source() {
    let server = S3Server::ceph_rgw().unwrap_or_else(|e| panic!("{e:#}"));
    with_bucket(
        server,
        |bucket| async move { s3_sources_work(&bucket).await },
    )
    .await;
}

async fn s3_lists_a_big_directory_page_by_page(bucket: &Bucket) {
    let names: BTreeSet<String> = (0..2500).map(|i| format!("f-{i:05}")).collect();
    bucket
        .put_all(
            names
                .iter()
                .map(|n| (format!("big/{n}"), vec![b'x']))
                .collect(),
        )
        .await;
    let src = bucket.open(&format!("s3://{}", bucket.name)).await;
    let (entries, pages) = list_all(src.as_ref(), "big").await;
    assert!(pages > 1, "2,500 entries came in one page");
    assert_eq!(
        entries.len(),
        names.len(),
        "duplicates or losses across pages"
    );
    let got: BTreeSet<String> = entries.iter().map(|e| e.name.clone()).collect();
    assert_eq!(got, names);
    assert!(
        entries
            .iter()
            .all(|e| e.meta.kind == Kind::File && e.meta.size == 1)
    );
}

/// A store that cannot be reached fails with Unavailable once the bounded retries are spent.
#[tokio::test]
async fn unreachable_stores_fail_in_bounded_time() {
    let s3 = mount(
        "s3://nowhere/data",
        &[
            ("endpoint", "http://127.0.0.1:1"),
            ("access-key", "a"),
            ("secret-key", "b"),
        ],
    );
    let hdfs = mount("hdfs://127.0.0.1:1/data", &[]);
    for mp in [s3, hdfs] {
        let started = Instant::now();
        let src = fluid_source::open(&mp).await.unwrap();
        let res = tokio::time::timeout(Duration::from_secs(120), src.check()).await;
        let err = res
            .unwrap_or_else(|_| panic!("{}: check hung", mp.url))
            .expect_err("unreachable");
        assert!(
            matches!(err, Error::Unavailable { .. }),
            "{}: {err}",
            mp.url
        );
        assert!(err.is_retryable());
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}: took {:?}",
            mp.url,
            started.elapsed()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// HDFS: MiniDFS

fn hdfs_client() -> (String, hdfs_native::Client) {
    let url = hdfs_url().unwrap_or_else(|e| panic!("{e:#}"));
    let client = hdfs_native::ClientBuilder::new()
        .with_url(&url)
        .build()
        .unwrap();
    (url, client)
}

async fn hdfs_put(client: &hdfs_native::Client, path: &str, data: Vec<u8>) {
    let options = hdfs_native::WriteOptions::default()
        .overwrite(true)
        .create_parent(true);
    let mut w = client
        .create(path, options)
        .await
        .unwrap_or_else(|e| panic!("create {path}: {e}"));
    w.write_bytes(Bytes::from(data)).await.unwrap();
    w.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minidfs_source() {
    let (url, client) = hdfs_client();
    let top = format!("/{}", unique_name("src"));
    let root = format!("{top}/data");
    let tree = tree();
    for dir in &tree.dirs {
        client
            .mkdirs(&format!("{root}/{dir}"), 0o755, true)
            .await
            .unwrap();
    }
    futures::stream::iter(&tree.files)
        .for_each_concurrent(8, |(p, d)| {
            let (client, path) = (&client, format!("{root}/{p}"));
            async move { hdfs_put(client, &path, d.clone()).await }
        })
        .await;
    hdfs_put(&client, &format!("{top}/datax/decoy"), b"decoy".to_vec()).await;

    let mount_url = format!("{url}{root}");
    let src = fluid_source::open(&mount(&mount_url, &[("user", "root")]))
        .await
        .unwrap();
    verify_tree(src.as_ref(), &tree).await;

    // HDFS has no ETag: a rewrite, even of the same length, shows in mtime and size.
    let path = format!("{root}/changing.txt");
    hdfs_put(&client, &path, b"version one".to_vec()).await;
    let old = src.stat("changing.txt").await.unwrap().unwrap();
    assert_eq!(old.etag, None);
    tokio::time::sleep(Duration::from_millis(20)).await;
    hdfs_put(&client, &path, b"version two".to_vec()).await;
    let err = src
        .read("changing.txt", &old, 0, 7)
        .await
        .expect_err("stale meta must fail");
    assert!(matches!(err, Error::Changed(_)), "{err}");
    hdfs_put(&client, &path, b"v3".to_vec()).await;
    let err = src
        .read("changing.txt", &old, 0, 2)
        .await
        .expect_err("shorter file must fail");
    assert!(matches!(err, Error::Changed(_)), "{err}");
    let new = src.stat("changing.txt").await.unwrap().unwrap();
    assert_eq!(
        &src.read("changing.txt", &new, 0, 100).await.unwrap()[..],
        b"v3"
    );

    assert!(client.delete(&top, true).await.unwrap());
}

/// More than a page of entries, with non-ASCII names that the NameNode sorts before ASCII
/// ones. Page two must be the same whether it resumes the parked cursor or, from another
/// source instance with no cursor, re-lists and skips up to the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minidfs_lists_a_big_directory_page_by_page() {
    let (url, client) = hdfs_client();
    let root = format!("/{}", unique_name("big"));
    let mut names: BTreeSet<String> = (0..1150).map(|i| format!("d-{i:05}")).collect();
    names.extend((0..5).map(|i| format!("ü-{i}")));
    names.extend((0..5).map(|i| format!("名前-{i}")));
    futures::stream::iter(&names)
        .for_each_concurrent(PARALLEL, |n| {
            let client = &client;
            let root = &root;
            async move {
                client
                    .mkdirs(&format!("{root}/{n}"), 0o755, true)
                    .await
                    .unwrap()
            }
        })
        .await;

    let mp = mount(&format!("{url}{root}"), &[]);
    let src = fluid_source::open(&mp).await.unwrap();
    let (entries, pages) = list_all(src.as_ref(), "").await;
    assert!(pages > 1, "{} entries came in one page", entries.len());
    assert_eq!(
        entries.len(),
        names.len(),
        "duplicates or losses across pages"
    );
    let got: BTreeSet<String> = entries.iter().map(|e| e.name.clone()).collect();
    assert_eq!(got, names);
    assert!(entries.iter().all(|e| e.meta.kind == Kind::Dir));

    let first = src.list("", None).await.unwrap();
    let token = first.next.clone().expect("a second page");
    let parked = src.list("", Some(token.clone())).await.unwrap();
    let fresh = fluid_source::open(&mp).await.unwrap();
    let relisted = fresh.list("", Some(token)).await.unwrap();
    let names_of =
        |p: &fluid_source::Page| p.entries.iter().map(|e| e.name.clone()).collect::<Vec<_>>();
    assert_eq!(
        names_of(&relisted),
        names_of(&parked),
        "resume without a cursor"
    );
    let mut both: BTreeMap<String, usize> = BTreeMap::new();
    for n in names_of(&first).into_iter().chain(names_of(&parked)) {
        *both.entry(n).or_default() += 1;
    }
    assert!(both.values().all(|&c| c == 1), "pages overlap");

    assert!(client.delete(&root, true).await.unwrap());
}
