//! Tests of the `BlockCache` facade on real temp directories.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::*;
use fluid_volume::tier::Medium;

const KIB: u64 = 1024;

fn key(object: &str, index: u64) -> BlockKey {
    BlockKey::new(object, index)
}

fn block(i: u64, len: usize) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|j| (j as u64 ^ (i * 131)) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// A fetch that counts its calls and answers `data` after `delay_ms`.
fn fetch(
    count: &Arc<AtomicUsize>,
    data: Bytes,
    delay_ms: u64,
) -> impl FnOnce() -> BoxFuture<'static, Result<Bytes>> {
    let count = count.clone();
    move || {
        async move {
            count.fetch_add(1, SeqCst);
            if delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            Ok(data)
        }
        .boxed()
    }
}

fn ssd(dir: &Path, quota: u64) -> TierSpec {
    TierSpec::disk(Medium::Ssd, dir, quota)
}

fn block_file(dir: &Path, key: &BlockKey) -> std::path::PathBuf {
    let hex = key.hash_hex();
    dir.join("fluid-blocks").join(&hex[..2]).join(hex)
}

#[test]
fn cache_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<BlockCache>();
    check::<Arc<BlockCache>>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_flight_fetches_once_for_32_readers() {
    let cache = Arc::new(
        BlockCache::open(vec![TierSpec::Mem { quota: 1 << 20 }])
            .await
            .unwrap(),
    );
    let count = Arc::new(AtomicUsize::new(0));
    let k = key("m/f@e1", 0);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (cache, count, k) = (cache.clone(), count.clone(), k.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_fetch(&k, fetch(&count, block(0, 5000), 100))
                .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), block(0, 5000));
    }
    assert_eq!(count.load(SeqCst), 1);
    let s = cache.stats();
    assert_eq!(s.misses, 1);
    // Now a hit.
    assert_eq!(
        cache
            .get_or_fetch(&k, fetch(&count, block(9, 1), 0))
            .await
            .unwrap(),
        block(0, 5000)
    );
    assert_eq!(count.load(SeqCst), 1);
    assert_eq!(cache.stats().tiers[0].hits, s.tiers[0].hits + 1);
    assert!(cache.inner.flights().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_fetch_reaches_every_waiter_and_is_not_kept() {
    let cache = Arc::new(
        BlockCache::open(vec![TierSpec::Mem { quota: 1 << 20 }])
            .await
            .unwrap(),
    );
    let count = Arc::new(AtomicUsize::new(0));
    let k = key("m/f@e1", 3);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (cache, count, k) = (cache.clone(), count.clone(), k.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_fetch(&k, move || async move {
                    count.fetch_add(1, SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Err(Error::unavailable("s3://bucket", "503 Slow Down"))
                })
                .await
        }));
    }
    for t in tasks {
        let err = t.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err}");
        assert!(err.to_string().contains("503 Slow Down"));
    }
    assert_eq!(count.load(SeqCst), 1);
    assert!(!cache.contains(&k));
    // The next call fetches again.
    assert_eq!(
        cache
            .get_or_fetch(&k, fetch(&count, block(3, 10), 0))
            .await
            .unwrap(),
        block(3, 10)
    );
    assert_eq!(count.load(SeqCst), 2);
    assert_eq!(cache.stats().misses, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_fetch_is_an_error_and_is_not_kept() {
    let cache = BlockCache::open(vec![TierSpec::Mem { quota: 1 << 20 }])
        .await
        .unwrap();
    let k = key("m/f@e1", 0);
    let err = cache
        .get_or_fetch(&k, || async {
            panic!("fetch bug");
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("abandoned"), "{err}");
    let count = Arc::new(AtomicUsize::new(0));
    assert!(
        cache
            .get_or_fetch(&k, fetch(&count, block(0, 1), 0))
            .await
            .is_ok()
    );
    assert_eq!(count.load(SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fetch_finishes_when_its_reader_gives_up() {
    let cache = BlockCache::open(vec![TierSpec::Mem { quota: 1 << 20 }])
        .await
        .unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let k = key("m/f@e1", 0);
    let gave_up = tokio::time::timeout(
        Duration::from_millis(20),
        cache.get_or_fetch(&k, fetch(&count, block(0, 100), 200)),
    )
    .await;
    assert!(gave_up.is_err());
    for _ in 0..100 {
        if cache.contains(&k) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(cache.contains(&k));
    assert_eq!(cache.get(&k).await.unwrap(), block(0, 100));
    assert_eq!(count.load(SeqCst), 1);
}

#[tokio::test]
async fn without_tiers_every_read_fetches() {
    let cache = BlockCache::open(vec![]).await.unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let k = key("m/f@e1", 0);
    for _ in 0..3 {
        assert_eq!(
            cache
                .get_or_fetch(&k, fetch(&count, block(0, 10), 0))
                .await
                .unwrap(),
            block(0, 10)
        );
    }
    assert_eq!(count.load(SeqCst), 3);
    assert!(!cache.contains(&k));
    assert!(cache.get(&k).await.is_none());
    assert_eq!((cache.capacity(), cache.used()), (0, 0));
    let s = cache.stats();
    assert!(s.tiers.is_empty());
    assert_eq!((s.hits, s.misses), (0, 3));
    cache.flush().await;
}

#[tokio::test]
async fn blocks_survive_a_restart_and_disk_hits_are_promoted() {
    let dir = tempfile::tempdir().unwrap();
    let specs = vec![TierSpec::Mem { quota: 1 << 20 }, ssd(dir.path(), 1 << 20)];
    let count = Arc::new(AtomicUsize::new(0));
    {
        let cache = BlockCache::open(specs.clone()).await.unwrap();
        for i in 0..10 {
            cache
                .get_or_fetch(&key("m/f@e1", i), fetch(&count, block(i, 4000), 0))
                .await
                .unwrap();
        }
        cache.flush().await;
        let s = cache.stats();
        assert_eq!(s.tiers[1].blocks, 10);
        assert_eq!(s.misses, 10);
    }
    assert_eq!(count.load(SeqCst), 10);
    let cache = BlockCache::open(specs).await.unwrap();
    assert!((0..10).all(|i| cache.contains(&key("m/f@e1", i))));
    for i in 0..10 {
        let k = key("m/f@e1", i);
        assert_eq!(
            cache
                .get_or_fetch(&k, fetch(&count, block(99, 1), 0))
                .await
                .unwrap(),
            block(i, 4000)
        );
        // Promoted: now in memory too.
        assert!(cache.inner.mem.as_ref().unwrap().contains(&k));
    }
    assert_eq!(count.load(SeqCst), 10);
    let s = cache.stats();
    assert_eq!(
        (s.tiers[0].medium, s.tiers[0].hits, s.tiers[0].blocks),
        ("MEM", 0, 10)
    );
    assert_eq!((s.tiers[1].medium, s.tiers[1].hits), ("SSD", 10));
    assert_eq!(s.tiers[1].path, dir.path().display().to_string());
    assert_eq!((s.hits, s.misses), (10, 0));
    // A second read is a memory hit.
    cache.get(&key("m/f@e1", 0)).await.unwrap();
    assert_eq!(cache.stats().tiers[0].hits, 1);
    assert_eq!(cache.stats().hit_ratio(), 1.0);
}

#[tokio::test]
async fn blocks_survive_a_crash_without_index() {
    let dir = tempfile::tempdir().unwrap();
    let specs = vec![TierSpec::Mem { quota: 1 << 20 }, ssd(dir.path(), 1 << 20)];
    let count = Arc::new(AtomicUsize::new(0));
    {
        let cache = BlockCache::open(specs.clone()).await.unwrap();
        for i in 0..6 {
            cache
                .get_or_fetch(&key("m/f@e1", i), fetch(&count, block(i, 3000), 0))
                .await
                .unwrap();
        }
        cache.flush().await;
    }
    std::fs::remove_file(dir.path().join("fluid-blocks/index")).unwrap();
    let cache = BlockCache::open(specs).await.unwrap();
    for i in 0..6 {
        let got = cache
            .get_or_fetch(&key("m/f@e1", i), fetch(&count, block(99, 1), 0))
            .await
            .unwrap();
        assert_eq!(got, block(i, 3000));
    }
    assert_eq!(count.load(SeqCst), 6);
    assert_eq!(cache.stats().tiers[1].hits, 6);
    // The rebuilt index is on disk again.
    assert!(dir.path().join("fluid-blocks/index").is_file());
}

#[tokio::test]
async fn a_corrupt_block_is_refetched() {
    let dir = tempfile::tempdir().unwrap();
    // No memory tier: every read goes to the disk.
    let cache = BlockCache::open(vec![ssd(dir.path(), 1 << 20)])
        .await
        .unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let k = key("m/f@e1", 5);
    cache
        .get_or_fetch(&k, fetch(&count, block(5, 8000), 0))
        .await
        .unwrap();
    cache.flush().await;
    assert_eq!(cache.get(&k).await.unwrap(), block(5, 8000));

    let path = block_file(dir.path(), &k);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() - 4000;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();

    assert_eq!(
        cache
            .get_or_fetch(&k, fetch(&count, block(5, 8000), 0))
            .await
            .unwrap(),
        block(5, 8000)
    );
    assert_eq!(count.load(SeqCst), 2);
    let s = cache.stats();
    assert_eq!(s.tiers[0].corrupt, 1);
    assert_eq!(s.misses, 2);
    // The refetched block was written again, whole.
    cache.flush().await;
    assert_eq!(cache.get(&k).await.unwrap(), block(5, 8000));
    assert_eq!(cache.stats().tiers[0].hits, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_stays_under_every_quota() {
    let dir = tempfile::tempdir().unwrap();
    let specs = vec![
        TierSpec::Mem { quota: 40 * KIB },
        ssd(dir.path(), 200 * KIB),
    ];
    let cache = Arc::new(BlockCache::open(specs).await.unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let check = |cache: &BlockCache| {
        for t in cache.stats().tiers {
            assert!(t.used_bytes <= t.capacity_bytes, "{t:?}");
        }
        assert!(cache.used() <= cache.capacity());
    };
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let (cache, count) = (cache.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..150 {
                let n = w * 1000 + i;
                let len = 1000 + (n as usize * 37) % 3000;
                cache
                    .get_or_fetch(&key("m/f@e1", n), fetch(&count, block(n, len), 0))
                    .await
                    .unwrap();
                check(&cache);
                // Instant fetches outrun the disk; let the writer keep up now and then so
                // that the disk tier fills and evicts.
                if i % 8 == 0 {
                    cache.flush().await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    cache.flush().await;
    check(&cache);
    let s = cache.stats();
    assert!(
        s.tiers[0].evictions > 0 && s.tiers[1].evictions > 0,
        "{s:?}"
    );
    assert_eq!(count.load(SeqCst), 600);
    // The disk tier holds what it counts, and no more than its quota.
    let mut on_disk = 0;
    for sub in std::fs::read_dir(dir.path().join("fluid-blocks")).unwrap() {
        let sub = sub.unwrap();
        if sub.file_type().unwrap().is_dir() {
            for f in std::fs::read_dir(sub.path()).unwrap() {
                on_disk += f.unwrap().metadata().unwrap().len();
            }
        }
    }
    assert_eq!(on_disk, s.tiers[1].used_bytes);
    assert!(on_disk <= 200 * KIB);
}

#[tokio::test]
async fn lower_disk_tiers_take_demoted_blocks_and_hits_move_up() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let specs = vec![
        TierSpec::Mem { quota: 10 * KIB },
        ssd(a.path(), 30 * KIB),
        TierSpec::disk(Medium::Hdd, b.path(), 1 << 20),
    ];
    let count = Arc::new(AtomicUsize::new(0));
    {
        let cache = BlockCache::open(specs.clone()).await.unwrap();
        for i in 0..40 {
            cache
                .get_or_fetch(&key("m/f@e1", i), fetch(&count, block(i, 2000), 0))
                .await
                .unwrap();
            cache.flush().await;
        }
        let s = cache.stats();
        assert!(s.tiers[1].evictions > 0);
        assert_eq!(s.tiers[2].blocks, s.tiers[1].evictions);
        assert_eq!(s.tiers[2].medium, "HDD");
        assert!((0..40).all(|i| cache.contains(&key("m/f@e1", i))));
    }
    let cache = BlockCache::open(specs).await.unwrap();
    let k = key("m/f@e1", 0);
    assert!(!cache.inner.disks[0].contains(&k) && cache.inner.disks[1].contains(&k));
    assert_eq!(
        cache
            .get_or_fetch(&k, fetch(&count, block(99, 1), 0))
            .await
            .unwrap(),
        block(0, 2000)
    );
    assert_eq!(count.load(SeqCst), 40);
    assert_eq!(cache.stats().tiers[2].hits, 1);
    assert!(cache.inner.mem.as_ref().unwrap().contains(&k));
    cache.flush().await;
    assert!(cache.inner.disks[0].contains(&k));
}

#[tokio::test]
async fn evict_drops_a_scope_from_every_tier() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlockCache::open(vec![
        TierSpec::Mem { quota: 1 << 20 },
        ssd(dir.path(), 1 << 20),
    ])
    .await
    .unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let obj = |path| {
        ObjectId {
            mount: "s3://b",
            path,
            version: "e1",
        }
        .name()
    };
    for obj in [obj("a/x"), obj("a/y"), obj("b/z")] {
        for i in 0..3 {
            cache
                .get_or_fetch(&key(&obj, i), fetch(&count, block(i, 1000), 0))
                .await
                .unwrap();
        }
    }
    cache.flush().await;
    let before = cache.used();
    let (blocks, bytes) = cache
        .evict(ObjectScope::Dir {
            mount: "s3://b",
            path: "a",
        })
        .await;
    assert_eq!(blocks, 12);
    assert_eq!(bytes, before - cache.used());
    assert!(!cache.contains(&key(&obj("a/x"), 0)));
    assert!(cache.contains(&key(&obj("b/z"), 0)));
    cache
        .get_or_fetch(&key(&obj("a/x"), 0), fetch(&count, block(0, 1000), 0))
        .await
        .unwrap();
    assert_eq!(count.load(SeqCst), 10);
    assert_eq!(cache.evict(ObjectScope::Mount("nothing")).await, (0, 0));
}

#[tokio::test]
async fn a_slow_disk_slows_misses_instead_of_losing_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let options = CacheOptions {
        write_queue: 1,
        ..CacheOptions::default()
    };
    // A memory tier too small for the blocks: whatever is not on disk is gone.
    let cache = BlockCache::open_with(
        Tiers::new(vec![TierSpec::Mem { quota: 500 }, ssd(dir.path(), 4 << 20)]).unwrap(),
        options,
    )
    .await
    .unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let cache = Arc::new(cache);
    let mut futs = Vec::new();
    for i in 0..20 {
        let (cache, count) = (cache.clone(), count.clone());
        futs.push(async move {
            cache
                .get_or_fetch(&key("m/f@e1", i), fetch(&count, block(i, 100), 0))
                .await
        });
    }
    for r in futures::future::join_all(futs).await {
        r.unwrap();
    }
    cache.flush().await;
    let s = cache.stats();
    assert_eq!(s.write_skips, 0, "{s:?}");
    assert_eq!(
        s.tiers[1].blocks, 20,
        "every fetched block reached the disk: {s:?}"
    );
    // A second pass is served from the cache alone.
    for i in 0..20 {
        cache
            .get_or_fetch(&key("m/f@e1", i), fetch(&count, block(i, 100), 0))
            .await
            .unwrap();
    }
    assert_eq!(count.load(SeqCst), 20);
}

#[tokio::test]
async fn bad_tier_lists_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = BlockCache::open(vec![ssd(dir.path(), 1 << 20), TierSpec::Mem { quota: 1 }])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("must be the first tier"), "{err}");
    let err = BlockCache::open(vec![
        ssd(dir.path(), 1 << 20),
        TierSpec::disk(Medium::Hdd, dir.path(), 1 << 20),
    ])
    .await
    .unwrap_err();
    assert!(err.to_string().contains("same directory"), "{err}");
    let err = BlockCache::open(vec![TierSpec::Mem { quota: 0 }])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("quota"), "{err}");
}

#[tokio::test]
async fn capacity_and_used_add_up_the_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlockCache::open(vec![TierSpec::Mem { quota: 1000 }, ssd(dir.path(), 5000)])
        .await
        .unwrap();
    assert_eq!(cache.capacity(), 6000);
    let count = Arc::new(AtomicUsize::new(0));
    cache
        .get_or_fetch(&key("o", 0), fetch(&count, block(0, 100), 0))
        .await
        .unwrap();
    cache.flush().await;
    let s = cache.stats();
    assert_eq!(s.tiers[0].used_bytes, 100);
    assert!(s.tiers[1].used_bytes > 100);
    assert_eq!(cache.used(), s.tiers[0].used_bytes + s.tiers[1].used_bytes);
    assert!(format!("{cache:?}").contains("Mem"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_claim_missing_stretches_and_answer_their_readers_in_order() {
    let cache = Arc::new(
        BlockCache::open(vec![TierSpec::Mem { quota: 1 << 20 }])
            .await
            .unwrap(),
    );
    let keys: Vec<BlockKey> = (0..6).map(|i| key("obj", i)).collect();
    // Block 2 is cached and block 4 is being fetched: the runs are 0..2, 3 and 5.
    let count = Arc::new(AtomicUsize::new(0));
    assert!(
        cache
            .get_or_fetch(&keys[2], fetch(&count, block(2, 100), 0))
            .await
            .is_ok()
    );
    let slow = {
        let (cache, k) = (cache.clone(), keys[4].clone());
        let count = count.clone();
        tokio::spawn(async move {
            cache
                .get_or_fetch(&k, fetch(&count, block(4, 100), 300))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let runs = cache.claim_runs(&keys);
    let shape: Vec<(usize, usize)> = runs.iter().map(|(at, r)| (*at, r.len())).collect();
    assert_eq!(shape, vec![(0, 2), (3, 1), (5, 1)]);
    assert!(cache.claim_runs(&keys).is_empty(), "all claimed or there");

    // A reader of a claimed block waits for the run, which answers blocks as they come.
    let mut runs = runs.into_iter();
    let (_, mut first) = runs.next().unwrap();
    let reader = {
        let (cache, k) = (cache.clone(), keys[1].clone());
        let count = count.clone();
        tokio::spawn(async move { cache.get_or_fetch(&k, fetch(&count, Bytes::new(), 0)).await })
    };
    first.deliver(Ok(block(0, 100)));
    first.deliver(Ok(block(1, 100)));
    assert_eq!(reader.await.unwrap().unwrap(), block(1, 100));
    assert_eq!(cache.get(&keys[0]).await.unwrap(), block(0, 100), "kept");

    // A failed run fails its waiting readers; a dropped one too; neither is remembered.
    let (_, second) = runs.next().unwrap();
    let waiting = {
        let (cache, k) = (cache.clone(), keys[3].clone());
        let count = count.clone();
        tokio::spawn(async move { cache.get_or_fetch(&k, fetch(&count, Bytes::new(), 0)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    second.fail(Error::unavailable("test", "down"));
    assert!(
        waiting
            .await
            .unwrap()
            .unwrap_err()
            .to_string()
            .contains("down")
    );
    let (_, third) = runs.next().unwrap();
    drop(third);
    assert!(
        cache.claim_runs(&keys[3..4]).len() == 1,
        "failed block claimable again"
    );
    assert!(
        cache.claim_runs(&keys[5..6]).len() == 1,
        "dropped block claimable again"
    );
    assert_eq!(slow.await.unwrap().unwrap(), block(4, 100));
    assert_eq!(
        count.load(SeqCst),
        2,
        "only blocks 2 and 4 were fetched by readers"
    );
}

/// A block waiting for the disk writer is read from the queue, not fetched again, when the
/// memory tier could not take it (here there is none).
#[tokio::test]
async fn a_block_waiting_for_the_disk_is_served_from_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlockCache::open(vec![ssd(dir.path(), 4 << 20)])
        .await
        .unwrap();
    // Hold the one disk-writer thread, so the block stays queued while it is read.
    let (hold, held) = std::sync::mpsc::channel::<()>();
    let writer_busy = tokio::spawn(background::run(move || {
        let _ = held.recv();
    }));
    let count = Arc::new(AtomicUsize::new(0));
    let k = key("m/f@e1", 0);
    let data = block(0, 3000);
    for _ in 0..3 {
        let got = cache
            .get_or_fetch(&k, fetch(&count, data.clone(), 0))
            .await
            .unwrap();
        assert_eq!(got, data);
    }
    assert_eq!(count.load(SeqCst), 1, "fetched again while queued");
    assert!(cache.contains(&k));
    let s = cache.stats();
    assert_eq!((s.misses, s.hits, s.tiers[0].blocks), (1, 2, 0), "{s:?}");

    hold.send(()).unwrap();
    writer_busy.await.unwrap();
    cache.flush().await;
    assert_eq!(cache.stats().tiers[0].blocks, 1);
    assert!(
        cache.inner.queued().is_empty(),
        "the queue's copy is gone once written"
    );
    let got = cache
        .get_or_fetch(&k, fetch(&count, data.clone(), 0))
        .await
        .unwrap();
    assert_eq!((got, count.load(SeqCst)), (data, 1));
}

/// Blocks queued for a slow disk beyond what the memory tier holds (pinned ones leave it when
/// nothing else is left) are still read from the queue, never fetched twice.
#[tokio::test]
async fn blocks_queued_past_the_memory_tier_are_served_from_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let options = CacheOptions {
        write_queue: 8,
        ..CacheOptions::default()
    };
    let cache = BlockCache::open_with(
        Tiers::new(vec![
            TierSpec::Mem { quota: 3000 },
            ssd(dir.path(), 4 << 20),
        ])
        .unwrap(),
        options,
    )
    .await
    .unwrap();
    let (hold, held) = std::sync::mpsc::channel::<()>();
    let writer_busy = tokio::spawn(background::run(move || {
        let _ = held.recv();
    }));
    let count = Arc::new(AtomicUsize::new(0));
    let passes = async {
        for pass in 0..2 {
            for i in 0..8 {
                let data = block(i, 1000);
                let got = cache
                    .get_or_fetch(&key("m/f@e1", i), fetch(&count, data.clone(), 0))
                    .await
                    .unwrap();
                assert_eq!(got, data, "pass {pass}, block {i}");
            }
        }
    };
    // A block fetched again would wait for a write slot the held writer never frees.
    tokio::time::timeout(std::time::Duration::from_secs(10), passes)
        .await
        .expect("a queued block was fetched again (and waited for the disk)");
    assert_eq!(count.load(SeqCst), 8, "a queued block was fetched again");

    hold.send(()).unwrap();
    writer_busy.await.unwrap();
    cache.flush().await;
    assert_eq!(cache.stats().tiers[1].blocks, 8);
    assert!(cache.inner.queued().is_empty());
}
