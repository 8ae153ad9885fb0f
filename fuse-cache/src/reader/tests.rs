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
