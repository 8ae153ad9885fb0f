//! What every cache tier offers the cache: store a block, look one up, say whether it holds
//! one, evict by scope, and report what it holds. The cache walks its tiers as one ordered list of these
//! (MEM first, then the disks, like Fluid's `tieredstore.levels`), so a further tier (another
//! node's cache, a write-back area) plugs in beside them. What only one kind of tier does stays
//! on its own type: the memory tier's pins and whole-object holds, the disk tiers' write queue,
//! index and promotion between disks.

use async_trait::async_trait;
use bytes::Bytes;

use super::TierStats;
use super::key::BlockKey;

/// What became of a block offered to a tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    Stored,
    /// The block was there already.
    Exists,
    /// The block is larger than the whole quota.
    TooLarge,
    /// Writing failed (logged); the block is not stored.
    Failed,
}

#[async_trait]
pub trait Tier: Send + Sync {
    /// Stores the block unless the tier holds it already, making room by dropping its least
    /// recently used blocks (a disk tier down to its low watermark). Moving what a disk tier
    /// drops into the next disk tier is the cache's (`DiskTier::put` with the lower tiers).
    async fn put(&self, key: BlockKey, data: Bytes) -> Put;

    /// The block, when this tier holds it whole and good (a hit is counted); `None` otherwise.
    async fn get(&self, key: &BlockKey) -> Option<Bytes>;

    /// Whether the tier lists the block, without I/O (a disk block may still turn out bad).
    fn contains(&self, key: &BlockKey) -> bool;

    /// Drops every block of the objects whose names start with `prefix`: (blocks, bytes).
    async fn evict(&self, prefix: &str) -> (u64, u64);

    /// Bytes held now.
    fn used(&self) -> u64;

    /// The tier's quota in bytes.
    fn capacity(&self) -> u64;

    /// Its figures at one instant.
    fn stats(&self) -> TierStats;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::disk::DiskTier;
    use crate::cache::mem::MemTier;
    use fluid_volume::tier::Medium;

    /// The contract the cache relies on, held by each kind of tier through `dyn Tier`.
    async fn holds_the_contract(tier: &dyn Tier, name: &str) {
        let key = |o: &str, i| BlockKey::new(o, i);
        let data = Bytes::from(vec![7u8; 10_000]);
        assert_eq!(
            tier.put(key("a/x", 0), data.clone()).await,
            Put::Stored,
            "{name}"
        );
        assert_eq!(
            tier.put(key("a/x", 0), data.clone()).await,
            Put::Exists,
            "{name}"
        );
        assert_eq!(
            tier.put(key("b/y", 1), data.clone()).await,
            Put::Stored,
            "{name}"
        );
        assert!(tier.contains(&key("a/x", 0)), "{name}");
        assert_eq!(tier.get(&key("a/x", 0)).await, Some(data.clone()), "{name}");
        assert_eq!(tier.get(&key("a/x", 1)).await, None, "{name}");
        assert!(
            tier.used() >= 20_000 && tier.used() <= tier.capacity(),
            "{name}"
        );
        assert_eq!(tier.stats().blocks, 2, "{name}");
        let big = Bytes::from(vec![0u8; tier.capacity() as usize + 1]);
        assert_eq!(tier.put(key("c", 0), big).await, Put::TooLarge, "{name}");
        let (blocks, bytes) = tier.evict("a/").await;
        assert_eq!(blocks, 1, "{name}");
        assert!(bytes >= 10_000, "{name}");
        assert!(!tier.contains(&key("a/x", 0)), "{name}");
        assert!(tier.contains(&key("b/y", 1)), "{name}");
    }

    #[tokio::test]
    async fn memory_and_disk_tiers_hold_one_contract() {
        holds_the_contract(&MemTier::new(1 << 20), "memory").await;
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskTier::open(Medium::Ssd, dir.path().into(), 1 << 20, 0.9, 0.5, 64 << 10)
            .await
            .unwrap();
        holds_the_contract(&disk, "disk").await;
    }
}
