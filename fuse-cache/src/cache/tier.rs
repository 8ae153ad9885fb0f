//! What every cache tier offers the cache: look a block up, say whether it holds one, evict by
//! scope, and report what it holds. The cache walks its tiers as one ordered list of these
//! (MEM first, then the disks, like Fluid's `tieredstore.levels`), so a further tier (another
//! node's cache, a write-back area) plugs in beside them. What only one kind of tier does stays
//! on its own type: the memory tier's pins and whole-object holds, the disk tiers' write queue,
//! index and promotion between disks.

use async_trait::async_trait;
use bytes::Bytes;

use super::TierStats;
use super::key::BlockKey;

#[async_trait]
pub trait Tier: Send + Sync {
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
