//! The disk tier against real files in a temp directory: writes, reads, quota, recovery.

use super::*;

const KIB: u64 = 1024;
const TEST_BLOCK_SIZE: u64 = 64 * KIB;

async fn open(dir: &Path, quota: u64) -> DiskTier {
    DiskTier::open(
        Medium::Ssd,
        dir.to_path_buf(),
        quota,
        0.9,
        0.5,
        TEST_BLOCK_SIZE,
    )
    .await
    .unwrap()
}

fn key(i: u64) -> BlockKey {
    BlockKey::new("mnt/file@e1", i)
}

fn data(i: u64, len: usize) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|j| (j as u64 * 31 + i * 7) as u8)
            .collect::<Vec<u8>>(),
    )
}

fn files_on_disk(dir: &Path) -> (u64, u64) {
    let (mut n, mut bytes) = (0, 0);
    for sub in fs::read_dir(dir.join(SUBDIR)).unwrap() {
        let sub = sub.unwrap();
        if sub.file_type().unwrap().is_dir() {
            for f in fs::read_dir(sub.path()).unwrap() {
                n += 1;
                bytes += f.unwrap().metadata().unwrap().len();
            }
        }
    }
    (n, bytes)
}

#[test]
fn header_round_trip() {
    let k = BlockKey::new("obj/with/ü@e\"x\"", 42);
    let d = data(1, 100);
    let h = encode_header(&k, &d);
    assert_eq!(h.len(), header_len(&k));
    let decoded = decode_header(&h).unwrap();
    assert_eq!(
        decoded,
        Header {
            object: k.object.to_string(),
            index: 42,
            data_len: 100,
            data_crc: crc32c::crc32c(&d),
            len: h.len()
        }
    );
    let mut bad = h.clone();
    bad[FIXED] ^= 1;
    assert!(decode_header(&bad).unwrap_err().contains("header checksum"));
    assert!(decode_header(&h[..10]).is_err());
    assert!(decode_header(b"NOPE").is_err());
}

#[test]
fn index_round_trip_and_damage() {
    let entries = vec![(key(1), 10), (BlockKey::new("other", 0), 99)];
    let buf = encode_index(&entries);
    let back = decode_index(&buf).unwrap();
    assert_eq!(
        back,
        vec![
            ("mnt/file@e1".to_string(), 1, 10),
            ("other".to_string(), 0, 99)
        ]
    );
    let mut bad = buf.clone();
    bad[30] ^= 0xff;
    assert!(decode_index(&bad).is_err());
    assert!(decode_index(&buf[..buf.len() - 1]).is_err());
    assert!(decode_index(&encode_index(&[])).unwrap().is_empty());
}

#[tokio::test]
async fn write_then_read() {
    let tmp = tempfile::tempdir().unwrap();
    let tier = open(tmp.path(), 1 << 20).await;
    assert!(tier.get(&key(0)).await.is_none());
    assert_eq!(tier.put(key(0), data(0, 5000), &[]).await, Put::Stored);
    assert_eq!(tier.put(key(0), data(0, 5000), &[]).await, Put::Exists);
    assert!(tier.contains(&key(0)));
    assert_eq!(tier.get(&key(0)).await.unwrap(), data(0, 5000));
    assert_eq!(tier.stats().hits, 1);
    let (used, blocks) = tier.usage();
    assert_eq!(blocks, 1);
    assert_eq!(used, file_len(&key(0), 5000));
    assert_eq!(used % FILE_ALIGN as u64, 0, "padded for O_DIRECT");
    assert_eq!(files_on_disk(tmp.path()), (1, used));
    // Laid out as documented.
    let hex = key(0).hash_hex();
    let file = tmp.path().join(SUBDIR).join(&hex[..2]).join(&hex);
    assert!(file.is_file());
    // Only the daemon's user reads cached tenant data.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&tmp.path().join(SUBDIR)), 0o700);
    assert_eq!(mode(&file), 0o600);
    tier.persist(true).await;
    assert_eq!(mode(&tmp.path().join(SUBDIR).join(INDEX)), 0o600);
    // An empty block is a block too.
    assert_eq!(tier.put(key(1), Bytes::new(), &[]).await, Put::Stored);
    assert_eq!(tier.get(&key(1)).await.unwrap(), Bytes::new());
    assert_eq!(tier.put(key(2), data(2, 2 << 20), &[]).await, Put::TooLarge);
}

#[tokio::test]
async fn unpadded_block_files_still_read() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join(SUBDIR);
    let path = block_path(&root, &key(3));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let body = data(3, 1000);
    let mut file = encode_header(&key(3), &body);
    file.extend_from_slice(&body);
    fs::write(&path, &file).unwrap();
    fs::write(root.join(BLOCK_SIZE_FILE), TEST_BLOCK_SIZE.to_string()).unwrap();
    // No index: the tier takes the file from its header.
    let tier = open(tmp.path(), 1 << 20).await;
    assert_eq!(tier.usage(), (file.len() as u64, 1));
    assert_eq!(tier.get(&key(3)).await.unwrap(), body);
    assert!(fits(file.len() as u64, header_len(&key(3)), 1000));
    assert!(!fits(file.len() as u64 + 1, header_len(&key(3)), 1000));
}

#[tokio::test]
async fn corrupt_block_is_dropped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let tier = open(tmp.path(), 1 << 20).await;
    tier.put(key(0), data(0, 4096), &[]).await;
    tier.put(key(1), data(1, 4096), &[]).await;
    let path = block_path(&tmp.path().join(SUBDIR), &key(0));
    let mut bytes = fs::read(&path).unwrap();
    let last_data = header_len(&key(0)) + 4095;
    bytes[last_data] ^= 0x40;
    fs::write(&path, bytes).unwrap();
    assert!(tier.get(&key(0)).await.is_none());
    assert_eq!(tier.stats().corrupt, 1);
    assert!(!tier.contains(&key(0)));
    assert!(!path.exists());
    assert_eq!(tier.usage(), (file_len(&key(1), 4096), 1));
    // A block file that vanished is a miss and leaves the index.
    fs::remove_file(block_path(&tmp.path().join(SUBDIR), &key(1))).unwrap();
    assert!(tier.get(&key(1)).await.is_none());
    assert_eq!(tier.usage(), (0, 0));
    assert_eq!(tier.stats().corrupt, 1);
    // And it can be stored again.
    assert_eq!(tier.put(key(0), data(0, 4096), &[]).await, Put::Stored);
    assert_eq!(tier.get(&key(0)).await.unwrap(), data(0, 4096));
}

#[tokio::test]
async fn watermarks_keep_usage_under_quota() {
    let tmp = tempfile::tempdir().unwrap();
    let quota = 100 * KIB;
    let tier = open(tmp.path(), quota).await;
    let mut evicting = false;
    for i in 0..200 {
        tier.put(key(i), data(i, 3000), &[]).await;
        let (used, _) = tier.usage();
        assert!(used <= quota, "used {used} after block {i}");
        if tier.stats().evictions > 0 && !evicting {
            evicting = true;
            // The first eviction went down to the low watermark.
            assert!(used <= quota / 2, "used {used} after the first eviction");
        }
    }
    assert!(evicting);
    let (used, blocks) = tier.usage();
    assert!(
        used > quota / 2 - 4 * KIB && used <= (quota as f64 * 0.9) as u64,
        "used {used}"
    );
    assert_eq!(files_on_disk(tmp.path()), (blocks, used));
    // The most recent blocks are the ones kept.
    assert!(tier.contains(&key(199)));
    assert!(!tier.contains(&key(0)));
    assert_eq!(tier.stats().evictions, 200 - blocks);
}

#[tokio::test]
async fn index_survives_restart_and_keeps_lru_order() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let tier = open(tmp.path(), 100 * KIB).await;
        for i in 0..10 {
            tier.put(key(i), data(i, 1000), &[]).await;
        }
        // Block 0 becomes the most recently used.
        assert!(tier.get(&key(0)).await.is_some());
        // Dropped without flush: the index is written on drop.
    }
    let tier = open(tmp.path(), 100 * KIB).await;
    assert_eq!(
        tier.report(),
        &OpenReport {
            index_loaded: true,
            from_index: 10,
            from_headers: 0,
            removed: 0,
            stale: 0,
            evicted: 0,
            other_block_size: 0,
        }
    );
    let order: Vec<u64> = tier.inner.snapshot().iter().map(|(k, _)| k.index).collect();
    assert_eq!(order, (1..10).chain([0]).collect::<Vec<_>>());
    for i in 0..10 {
        assert_eq!(tier.get(&key(i)).await.unwrap(), data(i, 1000));
    }
}

#[tokio::test]
async fn crash_without_index_rebuilds_from_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let sub = tmp.path().join(SUBDIR);
    let used_before;
    {
        let tier = open(tmp.path(), 100 * KIB).await;
        for i in 0..5 {
            tier.put(key(i), data(i, 1000), &[]).await;
        }
        tier.persist(true).await;
        // Written after the last index write, then the process "crashes".
        for i in 5..8 {
            tier.put(key(i), data(i, 1000), &[]).await;
        }
        used_before = tier.used();
        // The process dies: no index write at shutdown.
        tier.skip_index_on_drop();
    }
    // No index at all (or a damaged one), plus leftovers a crash leaves behind.
    fs::remove_file(sub.join(INDEX)).unwrap();
    let hex = key(0).hash_hex();
    fs::write(
        sub.join(&hex[..2]).join(format!("{hex}.tmp.1.1")),
        b"half a block",
    )
    .unwrap();
    fs::create_dir_all(sub.join("ab")).unwrap();
    fs::write(
        sub.join("ab").join("ab000000000000000000000000000000"),
        b"junk",
    )
    .unwrap();
    fs::write(sub.join(INDEX), b"garbage").unwrap();

    let tier = open(tmp.path(), 100 * KIB).await;
    let r = tier.report().clone();
    assert!(!r.index_loaded);
    assert_eq!(r.from_headers, 8);
    assert_eq!(r.removed, 2);
    assert_eq!(tier.used(), used_before);
    for i in 0..8 {
        assert_eq!(tier.get(&key(i)).await.unwrap(), data(i, 1000), "block {i}");
    }
    assert_eq!(files_on_disk(tmp.path()), (8, used_before));
    // The rebuilt index was written at open.
    assert!(
        decode_index(&fs::read(sub.join(INDEX)).unwrap())
            .unwrap()
            .len()
            == 8
    );
}

#[tokio::test]
async fn one_tier_per_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let first = open(tmp.path(), 100 * KIB).await;
    let err = DiskTier::open(
        Medium::Hdd,
        tmp.path().to_path_buf(),
        100 * KIB,
        0.9,
        0.5,
        TEST_BLOCK_SIZE,
    )
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("in use"), "{err}");
    drop(first);
    open(tmp.path(), 100 * KIB).await;
}

#[tokio::test]
async fn stale_index_is_merged_with_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let sub = tmp.path().join(SUBDIR);
    {
        let tier = open(tmp.path(), 100 * KIB).await;
        for i in 0..4 {
            tier.put(key(i), data(i, 1000), &[]).await;
        }
        tier.persist(true).await;
        let stale = fs::read(sub.join(INDEX)).unwrap();
        tier.put(key(4), data(4, 1000), &[]).await;
        tier.remove_prefix("mnt/file@e1").await;
        tier.put(key(5), data(5, 1000), &[]).await;
        drop(tier);
        // As if the process died before the last index write.
        fs::write(sub.join(INDEX), stale).unwrap();
    }
    let tier = open(tmp.path(), 100 * KIB).await;
    let r = tier.report().clone();
    assert!(r.index_loaded);
    assert_eq!((r.from_index, r.from_headers, r.stale), (0, 1, 4));
    assert!(tier.contains(&key(5)));
    assert_eq!(tier.usage().1, 1);
}

#[tokio::test]
async fn smaller_quota_evicts_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let tier = open(tmp.path(), 100 * KIB).await;
        for i in 0..20 {
            tier.put(key(i), data(i, 4000), &[]).await;
        }
    }
    let tier = open(tmp.path(), 40 * KIB).await;
    assert!(tier.used() <= 20 * KIB);
    assert!(tier.report().evicted > 0);
    assert!(tier.contains(&key(19)));
    assert_eq!(files_on_disk(tmp.path()).1, tier.used());
}

#[tokio::test]
async fn evicted_blocks_are_demoted_to_the_next_tier() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let upper = open(a.path(), 20 * KIB).await;
    let lower = [DiskTier::open(
        Medium::Hdd,
        b.path().to_path_buf(),
        1 << 20,
        0.95,
        0.7,
        TEST_BLOCK_SIZE,
    )
    .await
    .unwrap()];
    for i in 0..30 {
        upper.put(key(i), data(i, 1000), &lower).await;
        assert!(upper.used() <= 20 * KIB);
    }
    assert!(upper.stats().evictions > 0);
    for i in 0..30 {
        assert!(
            upper.contains(&key(i)) || lower[0].contains(&key(i)),
            "block {i} lost"
        );
    }
    assert!(lower[0].contains(&key(0)));
    assert_eq!(lower[0].get(&key(0)).await.unwrap(), data(0, 1000));
    assert_eq!(lower[0].usage().1, upper.stats().evictions);
}

#[tokio::test]
async fn remove_by_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let tier = open(tmp.path(), 1 << 20).await;
    tier.put(BlockKey::new("m1/a@1", 0), data(0, 100), &[])
        .await;
    tier.put(BlockKey::new("m1/a@1", 1), data(1, 100), &[])
        .await;
    tier.put(BlockKey::new("m2/a@1", 0), data(2, 100), &[])
        .await;
    let (blocks, bytes) = tier.remove_prefix("m1/").await;
    assert_eq!(blocks, 2);
    assert_eq!(bytes, 2 * file_len(&BlockKey::new("m1/a@1", 0), 100));
    let (used, blocks) = tier.usage();
    assert_eq!(files_on_disk(tmp.path()), (blocks, used));
    assert_eq!(blocks, 1);
    assert!(tier.contains(&BlockKey::new("m2/a@1", 0)));
}

#[tokio::test]
async fn blocks_of_another_block_size_are_dropped_never_served() {
    let tmp = tempfile::tempdir().unwrap();
    let at = |size: u64| {
        DiskTier::open(
            Medium::Ssd,
            tmp.path().to_path_buf(),
            100 * KIB,
            0.9,
            0.5,
            size,
        )
    };
    {
        let tier = at(4 * TEST_BLOCK_SIZE).await.unwrap();
        for i in 0..3 {
            tier.put(key(i), data(i, 1000), &[]).await;
        }
    }
    // The same size again: every block is reused.
    {
        let tier = at(4 * TEST_BLOCK_SIZE).await.unwrap();
        assert_eq!(tier.report().from_index, 3);
        assert_eq!(tier.report().other_block_size, 0);
    }
    // Another size: nothing of the old blocks is listed or read, index or headers.
    let tier = at(TEST_BLOCK_SIZE).await.unwrap();
    assert_eq!(tier.report().other_block_size, 3);
    assert_eq!(tier.report().from_index + tier.report().from_headers, 0);
    for i in 0..3 {
        assert!(tier.get(&key(i)).await.is_none(), "block {i}");
    }
    let marker = fs::read_to_string(tmp.path().join(SUBDIR).join(BLOCK_SIZE_FILE)).unwrap();
    assert_eq!(marker.trim(), TEST_BLOCK_SIZE.to_string());
    drop(tier);

    // A tier from before the size was recorded: its size is unknown, its blocks go.
    fs::remove_file(tmp.path().join(SUBDIR).join(BLOCK_SIZE_FILE)).unwrap();
    {
        let tier = at(TEST_BLOCK_SIZE).await.unwrap();
        tier.put(key(7), data(7, 1000), &[]).await;
    }
    fs::remove_file(tmp.path().join(SUBDIR).join(BLOCK_SIZE_FILE)).unwrap();
    let tier = at(TEST_BLOCK_SIZE).await.unwrap();
    assert_eq!(tier.report().other_block_size, 1);
    assert!(tier.get(&key(7)).await.is_none());
}
