//! The distributed cache with real processes: three fluid-fuse daemons on this machine, each
//! with its own cache directory and its own peer endpoint on a loopback port, over one
//! SeaweedFS bucket. Each block has one owner among them; the others read it from that owner.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fluid_proto::Endpoint;
use fluid_proto::fluid::cache_node_client::CacheNodeClient;
use fluid_tests::daemon::{FuseDaemon, stats};
use fluid_tests::proxy::CuttableProxy;
use fluid_tests::rt;
use fluid_tests::services::{self, S3Server, TempBucket};
use fluid_tests::tree::{self, Tree, TreeSpec};

const MIB: u64 = 1 << 20;
const TOKEN: &str = "peers-test-token-0123456789abcdef";
const NAMES: [&str; 3] = ["a", "b", "c"];

fn dataset(server: &S3Server, tree: &Tree) -> TempBucket {
    let bucket = server
        .temp_bucket("peers")
        .unwrap_or_else(|e| panic!("{e:#}"));
    rt().block_on(tree.upload_s3(&server.client(), &bucket.name, "set"))
        .unwrap();
    bucket
}

/// The members' peers file (`--peers-file`): every daemon reads it again when it changes (each
/// binds its peer port itself, so the file is written once their ports are known).
struct PeersFile {
    dir: tempfile::TempDir,
}

impl PeersFile {
    fn new() -> PeersFile {
        let pf = PeersFile {
            dir: tempfile::tempdir().unwrap(),
        };
        pf.write(&[]);
        pf
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("peers")
    }

    /// Replaces the file at once (a reader never sees half of it).
    fn write(&self, lines: &[String]) {
        let tmp = self.dir.path().join(".peers.tmp");
        std::fs::write(&tmp, lines.join("\n") + "\n").unwrap();
        std::fs::rename(&tmp, self.path()).unwrap();
    }
}

/// One member: its daemon, the port it serves its blocks on, its cache directory (kept
/// across a restart).
struct Member {
    name: &'static str,
    port: Option<u16>,
    cache: tempfile::TempDir,
    daemon: Option<FuseDaemon>,
}

struct Setup<'a> {
    source: Vec<String>,
    peers: &'a PeersFile,
    disk: u64,
    extra: Vec<String>,
}

impl Member {
    fn new(name: &'static str) -> Member {
        Member {
            name,
            port: None,
            cache: tempfile::tempdir().unwrap(),
            daemon: None,
        }
    }

    fn start(&mut self, s: &Setup) {
        let mut a = s.source.clone();
        a.extend([
            "--block-size".into(),
            "1MiB".into(),
            "--tier".into(),
            "mem:64MiB".into(),
            "--tier".into(),
            format!("ssd:{}:{}MiB", self.cache.path().display(), s.disk / MIB),
            "--peers-file".into(),
            s.peers.path().display().to_string(),
            "--peer-name".into(),
            self.name.into(),
            "--peer-listen".into(),
            "tcp://127.0.0.1:0".into(),
            // Generous on a shared 2-core machine: a peer slower than this is skipped (and
            // the read goes to the source), which would blur the source-once figure.
            "--peer-timeout".into(),
            "10s".into(),
        ]);
        // The shared token, unless the test gives another.
        if !s.extra.iter().any(|e| e == "--peer-token") {
            a.extend(["--peer-token".into(), TOKEN.into()]);
        }
        a.extend(s.extra.iter().cloned());
        let d = FuseDaemon::start(&a).unwrap_or_else(|e| panic!("{}: {e:#}", self.name));
        let addr = services::logged_listen(|| d.log(), "--peer-listen")
            .unwrap_or_else(|e| panic!("{}: {e:#}", self.name));
        self.port = Some(addr.port());
        self.daemon = Some(d);
    }

    fn d(&self) -> &FuseDaemon {
        self.daemon.as_ref().expect("started")
    }

    fn port(&self) -> u16 {
        self.port.expect("started")
    }

    /// Its line in the peers file.
    fn endpoint(&self) -> String {
        format!("{} tcp://127.0.0.1:{}", self.name, self.port())
    }
}

/// Writes the peers file and waits until every member of `members` lists `names`.
fn join(file: &PeersFile, lines: &[String], members: &[&Member], names: &[&str]) {
    file.write(lines);
    let deadline = Instant::now() + Duration::from_secs(30);
    for m in members {
        loop {
            let listed = stats(m.d()).members;
            if listed == names {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} lists {listed:?}, not {names:?}",
                m.name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn check(m: &Member, tree: &Tree) {
    if let Err(e) = tree.verify(&m.d().mountpoint, 50) {
        panic!("{}: {e:#}\nits log:\n{}", m.name, m.d().log());
    }
}

/// Every member reads the whole tree at once.
fn epoch(members: &[Member], tree: &Tree) {
    std::thread::scope(|s| {
        for m in members {
            s.spawn(move || check(m, tree));
        }
    });
}

fn source_bytes(members: &[Member]) -> Vec<u64> {
    members
        .iter()
        .map(|m| stats(m.d()).source_bytes_read)
        .collect()
}

/// Three members over the bucket, each knowing the others.
fn three(server: &S3Server, bucket: &TempBucket, disk: u64, file: &PeersFile) -> Vec<Member> {
    let mut members: Vec<Member> = NAMES.iter().map(|n| Member::new(n)).collect();
    let setup = Setup {
        source: server.mount_args(&format!("s3://{}/set", bucket.name)),
        peers: file,
        disk,
        extra: vec![],
    };
    for m in &mut members {
        m.start(&setup);
    }
    let lines: Vec<String> = members.iter().map(Member::endpoint).collect();
    join(file, &lines, &members.iter().collect::<Vec<_>>(), &NAMES);
    members
}

/// ~300 MiB read by all three nodes at once: the source serves it once (and a few blocks more
/// where two nodes raced past a back-off, bounded and printed). Each disk cache holds 160 MiB,
/// less than the dataset and more than its third: the second epoch reads nothing from the
/// source. (Sized so that the rest of the suite, running beside it, keeps its timing.)
#[test]
fn three_nodes_read_each_block_from_the_source_once() {
    let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    let mut tree = tree::generate(
        &TreeSpec {
            block_size: MIB,
            big_file: 192 * MIB,
            small_files: 100,
        },
        17,
    );
    tree.add_shards("shards", 4, 16 * MIB, 18);
    let total: u64 = tree.files.values().map(|b| b.len() as u64).sum();
    let bucket = dataset(&server, &tree);
    let file = PeersFile::new();
    let members = three(&server, &bucket, 160 * MIB, &file);

    let started = Instant::now();
    epoch(&members, &tree);
    let first = started.elapsed();
    let after_one = source_bytes(&members);
    let read: u64 = after_one.iter().sum();
    let stats1: Vec<_> = members.iter().map(|m| stats(m.d())).collect();
    println!(
        "epoch 1: dataset {} MiB, source served {} MiB ({:.3}x) in {first:?}; per node {:?} MiB",
        total / MIB,
        read / MIB,
        read as f64 / total as f64,
        after_one.iter().map(|b| b / MIB).collect::<Vec<_>>()
    );
    for (m, s) in members.iter().zip(&stats1) {
        println!(
            "  {}: local hits {} peer hits {} misses {} served to peers {} blocks, owns {} MiB, peer errors {}",
            m.name,
            s.hits,
            s.peer_hits,
            s.misses,
            s.peer_served_blocks,
            s.owned_bytes / MIB,
            s.peer_errors
        );
        assert_eq!(s.members, NAMES, "{}", m.name);
        assert!(
            s.peer_hits > 0 && s.peer_served_blocks > 0,
            "{}: {s:?}",
            m.name
        );
        assert!(
            s.owned_bytes < 160 * MIB,
            "{}: owns {}",
            m.name,
            s.owned_bytes
        );
    }
    // Without sharing it would be 3x. A block two nodes fetched at once counts twice.
    assert!(
        read as f64 <= total as f64 * 1.05,
        "the source served {read} bytes for a {total}-byte dataset"
    );
    assert!(
        read >= total,
        "every byte comes from the source once: {read} < {total}"
    );
    // Owned bytes are the block files' sizes: each block's header and padding to 4 KiB on top.
    let blocks: u64 = tree
        .files
        .values()
        .map(|b| (b.len() as u64).div_ceil(MIB).max(1))
        .sum();
    let owned: u64 = stats1.iter().map(|s| s.owned_bytes).sum();
    assert!(
        owned >= total * 95 / 100 && owned <= total + blocks * 4096,
        "the owners hold the dataset once: {owned} of {total} in {blocks} blocks"
    );

    let started = Instant::now();
    epoch(&members, &tree);
    let second = started.elapsed();
    let after_two = source_bytes(&members);
    println!(
        "epoch 2: {second:?} ({:.2}x epoch 1), source bytes per node {:?}",
        second.as_secs_f64() / first.as_secs_f64(),
        after_two
            .iter()
            .zip(&after_one)
            .map(|(b, a)| b - a)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        after_two, after_one,
        "the second epoch is served by the three caches together"
    );
    // fluid-fuse stats shows the split.
    let out = members[0].d().client("stats", &[]).unwrap();
    assert!(
        out.contains("peer hits")
            && out.contains("source misses")
            && out.contains("members (3): a, b, c"),
        "{out}"
    );
    for m in &members {
        assert!(!m.d().log().contains(TOKEN), "{} logged the token", m.name);
    }
}

/// A member killed with SIGKILL mid-epoch: the others read on without an error (its blocks go
/// to the next owner or the source), and once it is back it serves its share again.
#[test]
fn a_killed_peer_costs_the_readers_nothing_and_rejoins() {
    let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    let tree = tree::generate(
        &TreeSpec {
            block_size: MIB,
            big_file: 160 * MIB,
            small_files: 200,
        },
        19,
    );
    let bucket = dataset(&server, &tree);
    let file = PeersFile::new();
    let mut members = three(&server, &bucket, 512 * MIB, &file);

    let (left, dead) = members.split_at_mut(2);
    let victim = &mut dead[0];
    let tree_ref = &tree;
    std::thread::scope(|s| {
        let readers: Vec<_> = left
            .iter()
            .map(|m| s.spawn(move || check(m, tree_ref)))
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        let d = victim.daemon.as_ref().unwrap();
        let serving = d.serving_pid();
        for pid in [d.pid(), serving].into_iter().flatten() {
            // SAFETY: kill(2) on processes this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        for r in readers {
            r.join().unwrap();
        }
    });
    drop(victim.daemon.take());
    let s0 = stats(left[0].d());
    assert!(s0.peer_errors > 0, "a never asked the dead peer: {s0:?}");

    // Back, with the same cache directory, on a new port the peers file tells the others.
    victim.start(&Setup {
        source: server.mount_args(&format!("s3://{}/set", bucket.name)),
        peers: &file,
        disk: 512 * MIB,
        extra: vec![],
    });
    let lines: Vec<String> = left
        .iter()
        .chain([&*victim])
        .map(Member::endpoint)
        .collect();
    join(&file, &lines, &[&left[0], &left[1], &*victim], &NAMES);
    // a asks c again once its back-off (at most 30 s) is over: read until c serves blocks.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        left[0]
            .d()
            .client("evict", &["/"])
            .unwrap_or_else(|e| panic!("{e:#}"));
        check(&left[0], &tree);
        if stats(dead[0].d()).peer_served_blocks > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "c did not serve its share again; a's log:\n{}",
            left[0].d().log()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    check(&dead[0], &tree);
}

/// Bytes flipped on the wire from b to a are caught by the per-block checksum: a counts them,
/// reads the block elsewhere, and its readers get the right bytes.
#[test]
fn a_corrupted_block_from_a_peer_is_never_served() {
    let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    let tree = tree::generate(
        &TreeSpec {
            block_size: MIB,
            big_file: 64 * MIB,
            small_files: 50,
        },
        21,
    );
    let bucket = dataset(&server, &tree);
    let source = server.mount_args(&format!("s3://{}/set", bucket.name));
    let mut a = Member::new("a");
    let mut b = Member::new("b");
    // a and b each have a peers file: a's names b through a proxy that flips a byte 200 KiB
    // into each connection.
    let (a_file, b_file) = (PeersFile::new(), PeersFile::new());
    for (m, file) in [(&mut a, &a_file), (&mut b, &b_file)] {
        m.start(&Setup {
            source: source.clone(),
            peers: file,
            disk: 256 * MIB,
            extra: vec![],
        });
    }
    let proxy = CuttableProxy::corrupting(([127, 0, 0, 1], b.port()).into(), 200 << 10).unwrap();
    let through_proxy = format!("b tcp://{}", proxy.addr);
    join(&a_file, &[a.endpoint(), through_proxy], &[&a], &["a", "b"]);
    join(&b_file, &[a.endpoint(), b.endpoint()], &[&b], &["a", "b"]);
    check(&a, &tree);
    let s = stats(a.d());
    println!(
        "a: peer hits {} corrupt {} errors {}",
        s.peer_hits, s.peer_corrupt, s.peer_errors
    );
    assert!(s.peer_corrupt >= 1, "no corrupt block was seen: {s:?}");
    assert!(s.peer_errors >= s.peer_corrupt);
    assert!(
        a.d().log().contains("checksum"),
        "a says why it skipped b:\n{}",
        a.d().log()
    );
}

/// The peer endpoint refuses a request without the shared token, and a node with the wrong
/// token reads everything from the source (and never logs a token).
#[test]
fn peers_need_the_shared_token() {
    let server = S3Server::seaweedfs().unwrap_or_else(|e| panic!("{e:#}"));
    let tree = tree::generate(
        &TreeSpec {
            block_size: MIB,
            big_file: 16 * MIB,
            small_files: 20,
        },
        23,
    );
    let bucket = dataset(&server, &tree);
    let source = server.mount_args(&format!("s3://{}/set", bucket.name));
    let mut a = Member::new("a");
    let mut b = Member::new("b");
    let file = PeersFile::new();
    let wrong = "a-wrong-token-that-is-long-enough";
    a.start(&Setup {
        source: source.clone(),
        peers: &file,
        disk: 64 * MIB,
        extra: vec!["--peer-token".into(), wrong.into()],
    });
    b.start(&Setup {
        source: source.clone(),
        peers: &file,
        disk: 64 * MIB,
        extra: vec![],
    });
    join(&file, &[a.endpoint(), b.endpoint()], &[&a, &b], &["a", "b"]);
    check(&a, &tree);
    let s = stats(a.d());
    assert_eq!(s.peer_hits, 0, "{s:?}");
    assert!(s.peer_errors > 0, "{s:?}");
    for m in [&a, &b] {
        let log = m.d().log();
        assert!(
            !log.contains(TOKEN) && !log.contains(wrong),
            "{} logged a token",
            m.name
        );
    }
    assert!(a.d().log().contains("Unauthenticated"), "{}", a.d().log());

    // A bare client is refused, with a message that names what is missing and not the token.
    let err = rt().block_on(async {
        let ep: Endpoint = format!("tcp://127.0.0.1:{}", b.port()).parse().unwrap();
        let mut c = CacheNodeClient::new(ep.connect().await.unwrap());
        c.get_stats(fluid_proto::fluid::GetStatsRequest::default())
            .await
            .unwrap_err()
    });
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(!err.message().contains(TOKEN));

    // Serving blocks to the network without a token is refused at start, naming the flag.
    let out = std::process::Command::new(fluid_tests::daemon::binary("fluid-fuse"))
        .arg("mount")
        .arg("--mountpoint")
        .arg(tempfile::tempdir().unwrap().path())
        .args(&source)
        .args(["--peers", "a=tcp://127.0.0.1:1", "--peer-name", "a"])
        .args(["--peer-listen", "tcp://127.0.0.1:0"])
        .env_remove(fluid_proto::cache_auth::TOKEN_ENV)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--peer-listen"),
        "{err}"
    );
}
