//! Unit tests of the reader over the in-memory source.

use super::*;
use crate::namespace::Ttl;
use fluid_source::memory::{Fault, MemorySource, Op};
use fluid_source::retry::{Policy, Retrying};
use fluid_volume::dataset::{MountSpec, resolve};
use fluid_volume::tier::TierSpec;
use std::time::Duration;

const MIB: u64 = 1 << 20;

/// A reader over `source` as the dataset's only mount, with a 64 MiB memory tier and
/// 1 MiB blocks.
async fn reader_over(source: Arc<dyn Source>) -> Reader {
    let spec = MountSpec {
        mount_point: "local:///in-memory".into(),
        name: "m".into(),
        path: Some("/".into()),
        ..Default::default()
    };
    let mount = resolve(vec![spec], "mounts").unwrap().remove(0);
    let ns = Arc::new(Namespace::new(vec![(mount, source)], Ttl::default()));
    let cache = BlockCache::open(vec![TierSpec::Mem { quota: 64 * MIB }])
        .await
        .unwrap();
    Reader::new(
        ns,
        Arc::new(cache),
        ReadConfig {
            block_size: MIB,
            ..cfg()
        },
    )
}

async fn open(reader: &Reader, path: &str) -> Arc<OpenFile> {
    let node = reader.ns.resolve_path(path).await.unwrap();
    Arc::new(reader.open(&node).unwrap())
}

fn bytes(len: u64) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn concurrent_readers_of_a_block_make_one_source_request() {
    let source = Arc::new(MemorySource::new("mem://"));
    source.put("f", bytes(MIB / 2));
    // Slow, so that every reader arrives while the first fetch is in flight.
    source.inject(Op::Read, Fault::Delay(Duration::from_millis(100)), 1);
    let reader = Arc::new(reader_over(source.clone()).await);
    let file = open(&reader, "/f").await;
    let reads = (0..16).map(|i| {
        let (reader, file) = (reader.clone(), file.clone());
        tokio::spawn(async move { reader.read(&file, i * 1000, 4096).await })
    });
    for (i, r) in futures::future::join_all(reads)
        .await
        .into_iter()
        .enumerate()
    {
        let got = r.unwrap().unwrap();
        let at = i * 1000;
        assert_eq!(&got[..], &bytes(MIB / 2)[at..at + 4096]);
    }
    assert_eq!(source.requests(Op::Read), 1);
    assert_eq!(source.bytes_read(), MIB / 2);
}

#[tokio::test]
async fn a_failed_fetch_fails_its_read_and_the_next_read_fetches_again() {
    let source = Arc::new(MemorySource::new("mem://"));
    source.put("f", bytes(MIB));
    source.inject(Op::Read, Fault::Unavailable, 1);
    let reader = reader_over(source.clone()).await;
    let file = open(&reader, "/f").await;
    let err = reader.read(&file, 0, 4096).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO, "{err}");
    assert_eq!(
        &reader.read(&file, 0, 4096).await.unwrap()[..],
        &bytes(4096)[..]
    );
    assert_eq!(source.requests(Op::Read), 2);
}

#[tokio::test]
async fn a_short_read_is_never_served_as_the_block() {
    let source = Arc::new(MemorySource::new("mem://"));
    source.put("f", bytes(MIB));
    source.inject(Op::Read, Fault::Short(1000), 1);
    let reader = reader_over(source.clone()).await;
    let file = open(&reader, "/f").await;
    let err = reader.read(&file, 0, 4096).await.unwrap_err();
    assert_eq!(err.errno(), libc::ESTALE, "{err}");
    // Nothing of the short block was kept.
    assert_eq!(
        &reader.read(&file, 0, 4096).await.unwrap()[..],
        &bytes(4096)[..]
    );
}

/// A random reader's piece that comes back short fails the read (no garbage, no zeros) and
/// is not kept: the next read fetches it again.
#[tokio::test]
async fn a_short_piece_is_never_served() {
    let source = Arc::new(MemorySource::new("mem://"));
    let data = bytes(8 * MIB);
    source.put("f", data.clone());
    source.inject(Op::Read, Fault::Short(1000), 1);
    let reader = reader_over(source.clone()).await;
    let file = open(&reader, "/f").await;
    let at = 5 * MIB + 100;
    let err = reader.read(&file, at, 4096).await.unwrap_err();
    assert_eq!(err.errno(), libc::ESTALE, "{err}");
    let got = reader.read(&file, at, 4096).await.unwrap();
    assert_eq!(&got[..], &data[at as usize..][..4096]);
    assert_eq!(source.requests(Op::Read), 2);
}

/// A short block among those a sequential reader prefetches is never served: at most the
/// read that needs it fails, and it is fetched again.
#[tokio::test]
async fn a_short_prefetched_block_is_fetched_again() {
    let source = Arc::new(MemorySource::new("mem://"));
    let data = bytes(4 * MIB);
    source.put("f", data.clone());
    let reader = reader_over(source.clone()).await;
    let file = open(&reader, "/f").await;
    // Block 0, and its readahead from block 1 on: the first read of the run is short.
    source.inject(Op::Read, Fault::Short(10), 1);
    let mut got = Vec::new();
    let mut failed = 0;
    let mut at = 0;
    while at < 4 * MIB {
        match reader.read(&file, at, 128 << 10).await {
            Ok(b) => {
                assert_eq!(&b[..], &data[at as usize..][..b.len()], "at {at}");
                got.extend_from_slice(&b);
                at += b.len() as u64;
            }
            Err(e) => {
                assert_eq!(e.errno(), libc::ESTALE, "{e}");
                failed += 1;
                assert!(failed < 2, "the short block is fetched again");
            }
        }
    }
    // The short block was fetched once more (whether its reader waited on the prefetch,
    // which then fetches again, or fetched it itself and failed).
    assert_eq!(got, data);
    assert_eq!(source.requests(Op::Read), 5);
}

/// Wrong bytes of the right length cannot be told from right ones: the memory source gives
/// no checksum (`Meta::etag` is none) and the reader keeps none of its own, so it serves and
/// keeps what the source answered. What it can check, the length, is checked (the short-read
/// tests above). If the reader ever verifies content, this test must expect an error.
#[tokio::test]
async fn wrong_bytes_of_the_right_length_are_not_detected() {
    let source = Arc::new(MemorySource::new("mem://"));
    let data = bytes(MIB);
    source.put("f", data.clone());
    source.inject(Op::Read, Fault::WrongBytes, 1);
    let reader = reader_over(source.clone()).await;
    let file = open(&reader, "/f").await;
    let got = reader.read(&file, 0, 4096).await.unwrap();
    let flipped: Vec<u8> = data[..4096].iter().map(|b| !b).collect();
    assert_eq!(&got[..], &flipped[..]);
    assert_eq!(reader.read(&file, 0, 4096).await.unwrap(), got, "kept");
    assert_eq!(source.requests(Op::Read), 1);
}

/// The reader has no deadline of its own: a source that never answers is cut off by the
/// `Retrying` wrapper every real source is opened with (`fluid_source::open`), after
/// `attempt_timeout` per try. A hung try is retried; when every try hangs, the read fails
/// with EIO instead of waiting forever.
#[tokio::test]
async fn a_hanging_source_read_is_cut_off_by_the_attempt_timeout() {
    let source = Arc::new(MemorySource::new("mem://"));
    let data = bytes(8 * MIB);
    source.put("f", data.clone());
    let policy = Policy {
        attempts: 2,
        first_backoff: Duration::from_millis(1),
        attempt_timeout: Duration::from_millis(100),
        ..Policy::default()
    };
    let reader = reader_over(Arc::new(Retrying::new(source.clone(), policy))).await;
    let file = open(&reader, "/f").await;
    let bounded = |offset| {
        let (reader, file) = (&reader, &file);
        async move {
            tokio::time::timeout(Duration::from_secs(10), reader.read(file, offset, 4096))
                .await
                .expect("the read hung")
        }
    };
    // Reads at random offsets (one piece each, no prefetch). One hung try: retried, and the
    // read is served.
    source.inject(Op::Read, Fault::Hang, 1);
    let at = 5 * MIB + 100;
    let got = bounded(at).await.unwrap();
    assert_eq!(&got[..], &data[at as usize..][..4096]);
    assert_eq!(source.requests(Op::Read), 2);
    // Every try hangs: an error.
    let before = source.requests(Op::Read);
    source.inject(Op::Read, Fault::Hang, 2);
    let started = Instant::now();
    let err = bounded(2 * MIB + 100).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO, "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(source.requests(Op::Read) - before, 2);
}

#[tokio::test]
async fn transient_source_errors_are_retried_under_the_reader() {
    let source = Arc::new(MemorySource::new("mem://"));
    source.put("f", bytes(MIB));
    source.inject(Op::Read, Fault::Unavailable, 2);
    let policy = Policy {
        first_backoff: Duration::from_millis(1),
        ..Policy::default()
    };
    let retrying = Arc::new(Retrying::new(source.clone(), policy));
    let reader = reader_over(retrying).await;
    let file = open(&reader, "/f").await;
    assert_eq!(
        &reader.read(&file, 0, 4096).await.unwrap()[..],
        &bytes(4096)[..]
    );
    assert_eq!(source.requests(Op::Read), 3);
}

#[tokio::test]
async fn random_reads_fetch_pieces_and_adjacent_misses_share_a_request() {
    const KIB: u64 = 1024;
    let source = Arc::new(MemorySource::new("mem://"));
    let data = bytes(8 * MIB);
    source.put("f", data.clone());
    let reader = reader_over(source.clone()).await;
    let file = open(&reader, "/f").await;
    // Source requests as the reader makes them (the memory source counts one per piece
    // of a run; S3 serves a run with one GET).
    let requests = || reader.counters.requests.load(Ordering::Relaxed);
    let read = |offset: u64, len: u64| {
        let (reader, file) = (&reader, &file);
        async move { reader.read(file, offset, len).await.unwrap() }
    };
    // A 4 KiB read far from the start: one 64 KiB piece, not the 1 MiB block.
    let at = 5 * MIB + 100;
    assert_eq!(&read(at, 4096).await[..], &data[at as usize..][..4096]);
    assert_eq!((requests(), source.bytes_read()), (1, 64 * KIB));
    // Elsewhere, then there again: the second time from the cached piece.
    assert_eq!(
        &read(MIB + 50, 4096).await[..],
        &data[(MIB + 50) as usize..][..4096]
    );
    assert_eq!(&read(at, 4096).await[..], &data[at as usize..][..4096]);
    assert_eq!((requests(), source.bytes_read()), (2, 128 * KIB));
    // 200 KiB across four pieces, none cached: one request for the four.
    let at = 3 * MIB + 10;
    assert_eq!(
        &read(at, 200 * KIB).await[..],
        &data[at as usize..][..200 * KIB as usize]
    );
    assert_eq!((requests(), source.bytes_read()), (3, 6 * 64 * KIB));
    // Across the end of the file: the last piece is short.
    let at = 8 * MIB - 3000;
    assert_eq!(&read(at, 4096).await[..], &data[at as usize..]);
    // A sequential pass from the start: right bytes where pieces were read before.
    for i in 0..8 {
        let got = read(i * MIB, MIB).await;
        assert_eq!(
            &got[..],
            &data[(i * MIB) as usize..][..MIB as usize],
            "block {i}"
        );
    }
    let whole = source.bytes_read() - 7 * 64 * KIB;
    // Each byte once more: block 0 in pieces (the reader had jumped back to the start),
    // then, readahead earned, blocks 1 to 7 whole.
    assert_eq!(whole, 8 * MIB);
    // A block cached whole serves random reads without pieces.
    let before = requests();
    assert_eq!(
        &read(6 * MIB + 7, 4096).await[..],
        &data[(6 * MIB + 7) as usize..][..4096]
    );
    assert_eq!(requests(), before);
}

#[tokio::test]
async fn a_sequential_read_of_what_pieces_hold_needs_no_fetch() {
    let source = Arc::new(MemorySource::new("mem://"));
    let data = bytes(4 * MIB);
    source.put("f", data.clone());
    let reader = reader_over(source.clone()).await;
    let requests = || reader.counters.requests.load(Ordering::Relaxed);
    // A random reader reads 256 KiB at 2 MiB: four pieces.
    let random = open(&reader, "/f").await;
    reader.read(&random, 3 * MIB, 4096).await.unwrap();
    reader.read(&random, 2 * MIB, 256 << 10).await.unwrap();
    assert_eq!(requests(), 2);
    // Another open reads from 2 MiB on, as a new sequential reader: the first 128 KiB from
    // the pieces; the block after them is then fetched whole.
    let seq = open(&reader, "/f").await;
    let got = reader.read(&seq, 2 * MIB, 128 << 10).await.unwrap();
    assert_eq!(&got[..], &data[2 * MIB as usize..][..128 << 10]);
    assert_eq!(requests(), 2, "served by the pieces");
    let got = reader.read(&seq, 2 * MIB + (128 << 10), MIB).await.unwrap();
    assert_eq!(
        &got[..],
        &data[(2 * MIB + (128 << 10)) as usize..][..MIB as usize]
    );
    assert!(requests() > 2);
}

#[tokio::test]
async fn pieces_off_fetch_whole_blocks() {
    let source = Arc::new(MemorySource::new("mem://"));
    source.put("f", bytes(4 * MIB));
    let mut reader = reader_over(source.clone()).await;
    reader.cfg.random_fetch_bytes = 0;
    let file = open(&reader, "/f").await;
    reader.read(&file, 3 * MIB + 5, 4096).await.unwrap();
    assert_eq!(source.bytes_read(), MIB);
}

fn cfg() -> ReadConfig {
    ReadConfig {
        block_size: 4 << 20,
        max_readahead_blocks: 8,
        prefetch_budget_blocks: 8,
        run_bytes: 16 << 20,
        random_fetch_bytes: 64 << 10,
    }
}

#[test]
fn sequential_reads_grow_the_window() {
    let mut p = Pattern::default();
    let mib = 1 << 20;
    let mut ranges = Vec::new();
    for i in 0..40u64 {
        ranges.push(p.record(i * mib, mib, &cfg(), 100));
    }
    assert_eq!(ranges[0], (1, 2), "first read prefetches the next block");
    let furthest = ranges.iter().map(|r| r.1).max().unwrap();
    assert!(
        furthest >= 10 + 8 - 1,
        "window grew to the maximum: {ranges:?}"
    );
    assert!(ranges.iter().all(|r| r.1 - r.0 <= 8));
    // Once the window is a run long (4 blocks of 16 MiB), the reader is read ahead in
    // whole runs, each one request: 4 blocks every 4 blocks read.
    let steady: Vec<_> = ranges[20..].iter().filter(|r| r.0 < r.1).collect();
    assert!(!steady.is_empty());
    assert!(steady.iter().all(|r| r.1 - r.0 == 4), "{steady:?}");
    assert!(
        steady.windows(2).all(|w| w[1].0 == w[0].1),
        "no gaps: {steady:?}"
    );
}

#[test]
fn a_new_reader_near_the_start_is_sequential_in_any_order() {
    // The kernel's readahead may send the second request of a file first.
    let mut p = Pattern::default();
    let c = cfg();
    let ahead = p.record(128 << 10, 128 << 10, &c, 100);
    assert!(p.window > 0 && ahead.0 < ahead.1, "{ahead:?}");
    p.record(0, 128 << 10, &c, 100);
    assert!(p.window > 0);
}

#[test]
fn after_a_jump_readahead_waits_for_a_block_of_contiguous_reads() {
    let mut p = Pattern::default();
    let mib = 1 << 20;
    let c = cfg(); // 4 MiB blocks
    p.record(0, mib, &c, 100);
    assert!(p.window > 0);
    // A jump, then the adjacent pieces of one large read: still random.
    assert_eq!(p.record(50 * mib, 128 << 10, &c, 100), (0, 0));
    assert_eq!(p.record(50 * mib + (128 << 10), mib, &c, 100), (0, 0));
    assert_eq!(p.window, 0);
    // A block's worth of contiguous reads earns readahead back.
    let mut at = 50 * mib + (128 << 10) + mib;
    let mut ahead = (0, 0);
    for _ in 0..3 {
        ahead = p.record(at, mib, &c, 100);
        at += mib;
    }
    assert!(p.window > 0 && ahead.0 < ahead.1, "{ahead:?}");
}

#[test]
fn random_reads_do_not_prefetch_and_small_reorders_are_tolerated() {
    let mut p = Pattern::default();
    let mib = 1 << 20;
    p.record(0, mib, &cfg(), 100);
    assert_eq!(p.record(300 * mib, 4096, &cfg(), 100), (0, 0));
    assert_eq!(p.record(17 * mib, 4096, &cfg(), 100), (0, 0));
    // A reader at 40 MiB whose requests arrive slightly out of order stays sequential.
    let mut q = Pattern::default();
    q.record(0, mib, &cfg(), 100);
    q.record(2 * mib, mib, &cfg(), 100);
    let back = q.record(mib, mib, &cfg(), 100);
    assert!(
        q.window > 0,
        "a small backward jump keeps readahead: {back:?}"
    );
}
