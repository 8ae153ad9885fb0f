//! What every cache tier offers the cache: store a block, look one up, say whether it holds
//! one, evict by scope, list and count what it holds. The cache walks its tiers as one ordered
//! list of these (MEM first, then the disks, like Fluid's `tieredstore.levels`), so a further
//! tier (another node's cache, a write-back area) plugs in beside them. What only one kind of
//! tier does stays on its own type: the memory tier's pins and whole-object holds, the disk
//! tiers' index writes and demotion between disks.

use std::future::IntoFuture;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::{BoxFuture, Either, Ready, ready};

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

/// The answer of [`Tier::get`]; `.await` it for the block.
pub enum Lookup<'a> {
    /// Known at once, without I/O: the block (a memory hit), or `None` (not listed). Costs no
    /// allocation, so the memory tier's hit path stays one lock and one LRU lookup.
    Ready(Option<Bytes>),
    /// The block is listed and must be read (a disk tier); `None` if it turns out bad.
    Pending(BoxFuture<'a, Option<Bytes>>),
}

impl<'a> IntoFuture for Lookup<'a> {
    type Output = Option<Bytes>;
    type IntoFuture = Either<Ready<Option<Bytes>>, BoxFuture<'a, Option<Bytes>>>;

    fn into_future(self) -> Self::IntoFuture {
        match self {
            Lookup::Ready(found) => Either::Left(ready(found)),
            Lookup::Pending(read) => Either::Right(read),
        }
    }
}

#[async_trait]
pub trait Tier: Send + Sync {
    /// Stores the block unless the tier holds it already, making room by dropping its least
    /// recently used blocks (a disk tier down to its low watermark). Moving what a disk tier
    /// drops into the next disk tier is the cache's (`DiskTier::put` with the lower tiers).
    async fn put(&self, key: BlockKey, data: Bytes) -> Put;

    /// The block, when this tier holds it whole and good (a hit is counted); `None` otherwise.
    /// Not an `async fn`: a tier that knows the answer at once says so without boxing a future.
    fn get<'a>(&'a self, key: &'a BlockKey) -> Lookup<'a>;

    /// Whether the tier lists the block, without I/O (a disk block may still turn out bad).
    fn contains(&self, key: &BlockKey) -> bool;

    /// Drops every block of the objects whose names start with `prefix`: (blocks, bytes).
    async fn evict(&self, prefix: &str) -> (u64, u64);

    /// Calls `f` with every block listed and its length in bytes, at one instant.
    fn for_each_block(&self, f: &mut dyn FnMut(&BlockKey, u64));

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
        let mut listed = Vec::new();
        tier.for_each_block(&mut |k, _| listed.push(k.clone()));
        listed.sort();
        assert_eq!(listed, [key("a/x", 0), key("b/y", 1)], "{name}");
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
        let mem = MemTier::new(1 << 20);
        holds_the_contract(&mem, "memory").await;
        // The memory tier answers at once, hit or miss: no future to box.
        let tier: &dyn Tier = &mem;
        assert!(matches!(
            tier.get(&BlockKey::new("b/y", 1)),
            Lookup::Ready(Some(_))
        ));
        assert!(matches!(
            tier.get(&BlockKey::new("b/y", 2)),
            Lookup::Ready(None)
        ));
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskTier::open(Medium::Ssd, dir.path().into(), 1 << 20, 0.9, 0.5, 64 << 10)
            .await
            .unwrap();
        holds_the_contract(&disk, "disk").await;
        // A block the disk tier does not list is a miss without I/O.
        let tier: &dyn Tier = &disk;
        assert!(matches!(
            tier.get(&BlockKey::new("b/y", 2)),
            Lookup::Ready(None)
        ));
        assert!(matches!(
            tier.get(&BlockKey::new("b/y", 1)),
            Lookup::Pending(_)
        ));
    }
}
