//! Recovery no reader notices: `fluid-fuse mount` (the keeper) holds the FUSE connection, and
//! when its serving process is killed a successor takes the connection over from the
//! hand-over journal and has the kernel resend what was left unanswered (Linux 6.9+). Real
//! mounts, real kills, readers that check every byte.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fluid_tests::daemon::FuseDaemon;
use fluid_tests::services::{S3Server, on_own_runtime};
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

const MIB: usize = 1 << 20;

/// Files of mixed sizes (empty to 30 MiB, in two folders) and their SHA-256.
fn tree(dir: &Path) -> Vec<(PathBuf, [u8; 32])> {
    let sizes = [
        ("empty", 0),
        ("small.txt", 1000),
        ("a/mid.bin", 300 * 1024),
        ("a/three.bin", 3 * MIB + 17),
        ("b/c/thirty.bin", 30 * MIB),
    ];
    sizes
        .iter()
        .enumerate()
        .map(|(k, (name, len))| {
            let data: Vec<u8> = (0..*len as u64)
                .map(|i| ((i * 2_654_435_761 + k as u64 * 97) >> 11) as u8)
                .collect();
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &data).unwrap();
            (PathBuf::from(name), Sha256::digest(&data).into())
        })
        .collect()
}

/// What the readers saw.
#[derive(Default)]
struct Seen {
    passes: AtomicU64,
    errors: AtomicU64,
    wrong: AtomicU64,
    /// Longest single read(2), in microseconds.
    longest_us: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Seen {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.first_error.lock().unwrap().get_or_insert(what);
    }

    /// Prints what the readers saw over `what` and asserts no error and no wrong byte.
    fn assert_clean(&self, what: &str, d: &FuseDaemon) {
        let (errors, wrong) = (
            self.errors.load(Ordering::Relaxed),
            self.wrong.load(Ordering::Relaxed),
        );
        eprintln!(
            "{what}: {} reader passes, {errors} read errors, {wrong} wrong checksums; longest read {:.0} ms",
            self.passes.load(Ordering::Relaxed),
            self.longest_us.load(Ordering::Relaxed) as f64 / 1e3,
        );
        assert_eq!(
            errors,
            0,
            "first: {:?}; log:\n{}",
            self.first_error.lock().unwrap(),
            d.log()
        );
        assert_eq!(wrong, 0);
    }
}

/// Reads `f` from its start to its end in 1 MiB steps; its SHA-256. The page cache is dropped
/// first, so the reads reach the file system.
fn sum(f: &mut File, seen: &Seen) -> std::io::Result<[u8; 32]> {
    // SAFETY: advice on our own open descriptor.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    f.seek(SeekFrom::Start(0))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; MIB];
    loop {
        let started = Instant::now();
        let n = f.read(&mut buf)?;
        seen.longest_us
            .fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        if n == 0 {
            return Ok(h.finalize().into());
        }
        h.update(&buf[..n]);
    }
}

/// Four readers until `stop`: two open, read and close every file in turn; two hold every
/// file open (from the others' second pass on) and read them again and again.
fn readers(
    mnt: &Path,
    files: &[(PathBuf, [u8; 32])],
    stop: &Arc<AtomicBool>,
    seen: &Arc<Seen>,
) -> Vec<JoinHandle<()>> {
    (0..4)
        .map(|r| {
            let (mnt, files, stop, seen) = (
                mnt.to_path_buf(),
                files.to_vec(),
                stop.clone(),
                seen.clone(),
            );
            std::thread::spawn(move || {
                let check = |name: &Path, got: std::io::Result<[u8; 32]>, want: &[u8; 32]| match got
                {
                    Ok(sum) if sum == *want => {}
                    Ok(_) => {
                        seen.wrong.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => seen.error(format!("reader {r}: {}: {e}", name.display())),
                };
                // The holders open once the others have read every file: those the memory
                // tier then holds whole are opened in passthrough mode.
                let mut held: Vec<Option<File>> = if r >= 2 {
                    while seen.passes.load(Ordering::Relaxed) < 2 && !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    files
                        .iter()
                        .map(|(n, _)| File::open(mnt.join(n)).ok())
                        .collect()
                } else {
                    Vec::new()
                };
                while !stop.load(Ordering::Relaxed) {
                    for (i, (name, want)) in files.iter().enumerate() {
                        let got = match held.get_mut(i) {
                            Some(Some(f)) => sum(f, &seen),
                            Some(None) => Err(std::io::Error::other("could not be opened")),
                            None => File::open(mnt.join(name)).and_then(|mut f| sum(&mut f, &seen)),
                        };
                        check(name, got, want);
                    }
                    seen.passes.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect()
}

fn passthrough_opens(d: &FuseDaemon) -> u64 {
    let out = d.client("stats", &[]).unwrap();
    out.split(" opens by kernel passthrough")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no passthrough count in {out}"))
}

fn kill9(pid: u32) {
    // SAFETY: kill(2) of a process this test started (through the keeper).
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

fn start(src: &Path, extra: &[&str]) -> FuseDaemon {
    let mut args: Vec<String> = [
        "--mount".to_string(),
        format!("local://{}", src.display()),
        // Files of 1 MiB and more become whole in memory and are opened in passthrough
        // mode; smaller ones, and every file after a kill (a successor's memory tier starts
        // empty), are read through the serving process.
        "--tier".into(),
        "mem:64MiB".into(),
        "--block-size".into(),
        "1MiB".into(),
    ]
    .into();
    args.extend(extra.iter().map(|s| s.to_string()));
    FuseDaemon::start(&args).unwrap()
}

#[test]
fn readers_see_no_error_while_the_serving_process_is_killed_20_times() {
    let src = tempfile::tempdir().unwrap();
    let files = tree(src.path());
    let mut d = start(src.path(), &[]);
    let keeper = d.pid().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let threads = readers(&d.mountpoint, &files, &stop, &seen);

    // Files whole in memory are opened in passthrough mode by now (the kernel reads them
    // itself); such opens live across the kills, and new opens reuse their backing file.
    let deadline = Instant::now() + Duration::from_secs(20);
    while passthrough_opens(&d) == 0 {
        assert!(
            Instant::now() < deadline,
            "no passthrough open: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut serving = d.wait_serving(None, Duration::from_secs(10)).unwrap();
    let mut takeovers = Vec::new();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_secs(2));
        kill9(serving);
        let killed = Instant::now();
        serving = d
            .wait_serving(Some(serving), Duration::from_secs(10))
            .unwrap();
        takeovers.push(killed.elapsed());
    }
    std::thread::sleep(Duration::from_secs(1));
    let last_passthrough = passthrough_opens(&d);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        last_passthrough > 0,
        "the last successor opened files in passthrough mode too"
    );

    takeovers.sort();
    seen.assert_clean(
        &format!(
            "20 kill -9 of the serving process (new one after p50 {:.0} ms, max {:.0} ms)",
            takeovers[takeovers.len() / 2].as_secs_f64() * 1e3,
            takeovers[takeovers.len() - 1].as_secs_f64() * 1e3,
        ),
        &d,
    );
    assert!(seen.passes.load(Ordering::Relaxed) >= 20);
    assert!(d.running(), "the keeper lives on");
    assert_eq!(d.pid(), Some(keeper));
    let log = d.log();
    assert_eq!(
        log.matches("taking over the connection").count(),
        20,
        "{log}"
    );
    // The mount is the one of the start, never replaced.
    assert_eq!(
        fluid_volume::mountinfo::read()
            .unwrap()
            .iter()
            .filter(|m| m.mount_point == d.mountpoint.canonicalize().unwrap())
            .count(),
        1
    );
    assert!(d.stop().unwrap().success());
}

fn upgrade(socket: &Path, binary: Option<&Path>) -> std::process::Output {
    let mut cmd = std::process::Command::new(fluid_tests::daemon::binary("fluid-fuse"));
    cmd.arg("upgrade").arg("--keeper-socket").arg(socket);
    if let Some(b) = binary {
        cmd.arg("--binary").arg(b);
    }
    cmd.output().unwrap()
}

#[test]
fn twenty_upgrades_hand_the_mount_over_without_a_reader_error() {
    let src = tempfile::tempdir().unwrap();
    let files = tree(src.path());
    let sock_dir = tempfile::tempdir().unwrap();
    let socket = sock_dir.path().join("keeper.sock");
    // A "new release": a copy of the binary at another path.
    let newer = sock_dir.path().join("fluid-fuse-next");
    std::fs::copy(fluid_tests::daemon::binary("fluid-fuse"), &newer).unwrap();
    let mut d = start(src.path(), &["--keeper-socket", socket.to_str().unwrap()]);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let threads = readers(&d.mountpoint, &files, &stop, &seen);

    let mut stalls = Vec::new();
    for i in 0..20 {
        std::thread::sleep(Duration::from_millis(500));
        let out = upgrade(&socket, (i % 2 == 0).then_some(newer.as_path()));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ms: f64 = text
            .split("waited ")
            .nth(1)
            .and_then(|t| t.split(' ').next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{text}"));
        stalls.push(ms);
    }
    // The serving process runs the new binary after an upgrade that gave one.
    let out = upgrade(&socket, Some(&newer));
    assert!(out.status.success());
    let serving = d.wait_serving(None, Duration::from_secs(10)).unwrap();
    let exe = std::fs::read_link(format!("/proc/{serving}/exe")).unwrap();
    assert_eq!(exe, newer.canonicalize().unwrap());

    // A binary that cannot serve is refused, and the previous one serves again.
    let out = upgrade(&socket, Some(Path::new("/bin/true")));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("the previous binary serves again"), "{err}");
    std::thread::sleep(Duration::from_millis(500));

    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    stalls.sort_by(f64::total_cmp);
    seen.assert_clean(
        &format!(
            "20 upgrades (hand-over p50 {:.0} ms, max {:.0} ms)",
            stalls[stalls.len() / 2],
            stalls[stalls.len() - 1],
        ),
        &d,
    );
    assert!(d.running());
    assert!(d.stop().unwrap().success());
}

#[test]
fn without_resend_a_killed_serving_process_ends_the_connection_as_before() {
    let src = tempfile::tempdir().unwrap();
    let files = tree(src.path());
    let mut d = start(src.path(), &["--resend", "false"]);
    let serving = d.wait_serving(None, Duration::from_secs(10)).unwrap();
    kill9(serving);
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !d.running(),
        "the keeper exits: its supervisor mounts again"
    );
    let err = std::fs::read(d.mountpoint.join(&files[1].0)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    let log = d.log();
    assert!(
        log.contains("was killed by signal 9") && log.contains("connection"),
        "{log}"
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The memory the keeper's hand-over journal (its memfd) takes: its allocated blocks (after a
/// compaction the old records are a hole).
fn journal_bytes(keeper: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{keeper}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .find(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|l| l.to_string_lossy().contains("fluid-fuse-journal"))
        })
        .and_then(|e| std::fs::metadata(e.path()).ok())
        .map_or(0, |m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
}

fn inodes(d: &FuseDaemon) -> u64 {
    let out = d.client("stats", &[]).unwrap();
    out.lines()
        .find_map(|l| l.split("inodes ").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no inode count in {out}"))
}

#[test]
fn forgotten_inodes_leave_the_table_so_memory_stays_bounded() {
    // 100,000 entries of a local directory. For the figures (slow):
    // FLUID_STAT_WALK_ENTRIES=1000000, and FLUID_STAT_WALK_SOURCE=s3 for a SeaweedFS bucket.
    let entries: usize = std::env::var("FLUID_STAT_WALK_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    const PER_DIR: usize = 1000;
    let dirs = entries.div_ceil(PER_DIR);
    let names = (0..dirs).flat_map(|d| (0..PER_DIR).map(move |f| format!("d{d:04}/f{f:04}")));
    let src = tempfile::tempdir().unwrap();
    let mut _bucket = None;
    let args = if std::env::var("FLUID_STAT_WALK_SOURCE").as_deref() == Ok("s3") {
        let server = S3Server::seaweedfs().unwrap();
        let bucket = server.temp_bucket("walk").unwrap();
        let (client, name) = (server.client(), bucket.name.clone());
        let keys: Vec<String> = names.collect();
        on_own_runtime(async move {
            futures::stream::iter(keys)
                .map(|k| {
                    client
                        .put_object()
                        .bucket(&name)
                        .key(k)
                        .body(Vec::new().into())
                        .send()
                })
                .buffer_unordered(64)
                .try_for_each(|_| async { Ok(()) })
                .await
                .map_err(aws_sdk_s3::Error::from)
        })
        .unwrap();
        let args = server.mount_args(&format!("s3://{}", bucket.name));
        _bucket = Some(bucket);
        args
    } else {
        for name in names {
            let path = src.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            File::create(path).unwrap();
        }
        vec![
            "--mount".to_string(),
            format!("local://{}", src.path().display()),
        ]
    };
    let d = FuseDaemon::start(&args).unwrap();
    let serving = d.wait_serving(None, Duration::from_secs(10)).unwrap();
    let rss_start = rss_kib(serving);
    let started = Instant::now();
    let mut seen = 0;
    for dir in std::fs::read_dir(&d.mountpoint).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            std::fs::symlink_metadata(f.unwrap().path()).unwrap();
            seen += 1;
        }
    }
    let walk = started.elapsed();
    assert_eq!(seen, dirs * PER_DIR);
    let (held, rss_walked) = (inodes(&d), rss_kib(serving));
    assert!(held as usize > dirs * PER_DIR, "{held}");

    // The kernel drops its dentries and inodes and forgets them (FORGET, BATCH_FORGET).
    std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut left = inodes(&d);
    while left as usize > dirs * PER_DIR / 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        left = inodes(&d);
    }
    let rss_forgot = rss_kib(serving);
    eprintln!(
        "stat walk of {seen} entries in {:.1} s: {held} inodes, serving process RSS {} -> {} MiB; \
         after drop_caches: {left} inodes, RSS {} MiB; the keeper's journal {} MiB",
        walk.as_secs_f64(),
        rss_start / 1024,
        rss_walked / 1024,
        rss_forgot / 1024,
        journal_bytes(d.pid().unwrap()) >> 20
    );
    assert!(
        (left as usize) < dirs * PER_DIR / 10,
        "the kernel forgot the walk's inodes, the table kept {left}"
    );
    // Forgotten names resolve again.
    assert!(d.mountpoint.join("d0042/f0042").exists());
}
