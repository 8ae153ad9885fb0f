//! The memory tier: blocks as `Bytes` under a byte quota, least recently used dropped first.
//! A block waiting for its disk write is pinned: it is evicted only once written, so the
//! write queue holds no bytes of its own while the block is here. The blocks of a held object
//! (open for kernel passthrough, see `object_file.rs`) are likewise evicted last.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use lru::LruCache;

use super::TierStats;
use super::key::BlockKey;
use super::tier::{Lookup, Put, Tier};

/// Bytes are counted by `Bytes::len()`: a block that is a slice of a larger buffer keeps that
/// buffer alive, so callers should hand in blocks that own their memory.
pub(crate) struct MemTier {
    quota: u64,
    state: Mutex<State>,
    hits: AtomicU64,
    evictions: AtomicU64,
}

struct State {
    lru: LruCache<BlockKey, Bytes>,
    used: u64,
    /// Pin counts: a block queued twice (two promotions) is unpinned twice.
    pinned: HashMap<BlockKey, u32>,
    /// Hold counts of objects whose blocks are evicted last.
    held: HashMap<std::sync::Arc<str>, u32>,
}

impl MemTier {
    pub(crate) fn new(quota: u64) -> Self {
        MemTier {
            quota,
            state: Mutex::new(State {
                lru: LruCache::unbounded(),
                used: 0,
                pinned: HashMap::new(),
                held: HashMap::new(),
            }),
            hits: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The block, now the most recently used; counts a hit.
    pub(crate) fn get(&self, key: &BlockKey) -> Option<Bytes> {
        let found = self.state().lru.get(key).cloned();
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    pub(crate) fn contains(&self, key: &BlockKey) -> bool {
        self.state().lru.contains(key)
    }

    /// Stores the block as the most recently used, dropping least recently used unpinned
    /// blocks until it fits, pinned ones only when nothing else is left (the write queue then
    /// keeps their bytes until written). A block larger than the whole quota is not stored.
    /// Returns whether it is stored; `pin` pins it only then.
    pub(crate) fn insert(&self, key: BlockKey, data: Bytes, pin: bool) -> bool {
        let len = data.len() as u64;
        let mut evicted = 0;
        let stored = {
            let mut st = self.state();
            if let Some(old) = st.lru.pop(&key) {
                st.used -= old.len() as u64;
            }
            if len > self.quota {
                false
            } else {
                while st.used + len > self.quota {
                    let (pinned, held) = (&st.pinned, &st.held);
                    let victim = st
                        .lru
                        .iter()
                        .rev()
                        .find(|(k, _)| {
                            (pinned.is_empty() || !pinned.contains_key(*k))
                                && (held.is_empty() || !held.contains_key(&k.object))
                        })
                        .or_else(|| st.lru.peek_lru())
                        .map(|(k, _)| k.clone());
                    let Some(old) = victim.and_then(|k| st.lru.pop(&k)) else {
                        break;
                    };
                    st.used -= old.len() as u64;
                    evicted += 1;
                }
                st.lru.put(key.clone(), data);
                st.used += len;
                if pin {
                    *st.pinned.entry(key).or_default() += 1;
                }
                true
            }
        };
        self.evictions.fetch_add(evicted, Ordering::Relaxed);
        stored
    }

    /// Undoes one pin of `insert`; the block stays until evicted as usual.
    pub(crate) fn unpin(&self, key: &BlockKey) {
        let mut st = self.state();
        if let Some(n) = st.pinned.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                st.pinned.remove(key);
            }
        }
    }

    /// Keeps `object`'s blocks until nothing else is left to evict, until [`MemTier::release`].
    pub(crate) fn hold(&self, object: &std::sync::Arc<str>) {
        *self.state().held.entry(object.clone()).or_default() += 1;
    }

    pub(crate) fn release(&self, object: &str) {
        let mut st = self.state();
        if let Some(n) = st.held.get_mut(object) {
            *n -= 1;
            if *n == 0 {
                st.held.remove(object);
            }
        }
    }

    /// Drops every block whose object starts with `prefix`: (blocks, bytes).
    pub(crate) fn remove_prefix(&self, prefix: &str) -> (u64, u64) {
        let (mut blocks, mut bytes) = (0, 0);
        let mut st = self.state();
        st.lru.retain(|k, v| {
            let keep = !k.object.starts_with(prefix);
            if !keep {
                blocks += 1;
                bytes += v.len() as u64;
            }
            keep
        });
        st.used -= bytes;
        (blocks, bytes)
    }

    pub(crate) fn quota(&self) -> u64 {
        self.quota
    }

    /// Calls `f` with every block held and its length, at one instant.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&BlockKey, u64)) {
        for (k, v) in self.state().lru.iter() {
            f(k, v.len() as u64);
        }
    }

    pub(crate) fn used(&self) -> u64 {
        self.state().used
    }

    /// (used bytes, blocks) at one instant.
    pub(crate) fn usage(&self) -> (u64, u64) {
        let st = self.state();
        (st.used, st.lru.len() as u64)
    }
}

#[async_trait::async_trait]
impl Tier for MemTier {
    async fn put(&self, key: BlockKey, data: Bytes) -> Put {
        if MemTier::contains(self, &key) {
            Put::Exists
        } else if self.insert(key, data, false) {
            Put::Stored
        } else {
            Put::TooLarge
        }
    }

    fn get<'a>(&'a self, key: &'a BlockKey) -> Lookup<'a> {
        Lookup::Ready(MemTier::get(self, key))
    }

    fn contains(&self, key: &BlockKey) -> bool {
        MemTier::contains(self, key)
    }

    async fn evict(&self, prefix: &str) -> (u64, u64) {
        self.remove_prefix(prefix)
    }

    fn for_each_block(&self, f: &mut dyn FnMut(&BlockKey, u64)) {
        self.for_each(f)
    }

    fn used(&self) -> u64 {
        MemTier::used(self)
    }

    fn capacity(&self) -> u64 {
        self.quota
    }

    fn stats(&self) -> TierStats {
        let (used, blocks) = self.usage();
        TierStats {
            medium: "MEM",
            path: String::new(),
            used_bytes: used,
            capacity_bytes: self.quota,
            blocks,
            hits: self.hits.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            corrupt: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> BlockKey {
        BlockKey::new("obj", i)
    }

    fn block(len: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; len])
    }

    #[test]
    fn lru_order_and_quota() {
        let mem = MemTier::new(300);
        for i in 0..3 {
            assert!(mem.insert(key(i), block(100, i as u8), false));
        }
        assert_eq!(mem.usage(), (300, 3));
        // Touch 0: now 1 is the least recently used and goes first.
        assert_eq!(mem.get(&key(0)).unwrap(), block(100, 0));
        assert!(mem.insert(key(3), block(100, 3), false));
        assert!(!mem.contains(&key(1)));
        assert!(mem.contains(&key(0)) && mem.contains(&key(2)) && mem.contains(&key(3)));
        assert_eq!(mem.stats().evictions, 1);
        // Touch 0 again (order 2, 3, 0); a 150-byte block needs 2 and 3 gone.
        assert!(mem.get(&key(0)).is_some());
        assert!(mem.insert(key(4), block(150, 4), false));
        assert_eq!(mem.usage(), (250, 2));
        assert!(mem.contains(&key(0)) && mem.contains(&key(4)));
        assert_eq!(mem.stats().hits, 2);
        assert!(mem.get(&key(9)).is_none());
        assert_eq!(mem.stats().hits, 2);
    }

    #[test]
    fn too_large_is_not_stored_and_replacing_recounts() {
        let mem = MemTier::new(100);
        assert!(mem.insert(key(0), block(60, 0), false));
        assert!(!mem.insert(key(1), block(101, 1), false));
        assert_eq!(mem.usage(), (60, 1));
        // The same key again replaces the block and its bytes.
        assert!(mem.insert(key(0), block(80, 7), false));
        assert_eq!(mem.usage(), (80, 1));
        assert_eq!(mem.get(&key(0)).unwrap(), block(80, 7));
        assert_eq!(mem.stats().evictions, 0);
    }

    #[test]
    fn usage_never_exceeds_quota() {
        let mem = MemTier::new(10_000);
        let mut rng = 12345u64;
        for i in 0..5_000 {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (rng >> 33) as usize % 2_000;
            mem.insert(key(i % 700), block(len, 0), false);
            let (used, _) = mem.usage();
            assert!(used <= 10_000, "used {used} after {i}");
        }
        // The count of what is there agrees with the sum of lengths.
        let st = mem.state();
        assert_eq!(
            st.used,
            st.lru.iter().map(|(_, v)| v.len() as u64).sum::<u64>()
        );
    }

    #[test]
    fn pinned_blocks_stay_until_unpinned() {
        let mem = MemTier::new(300);
        assert!(mem.insert(key(0), block(100, 0), true));
        assert!(mem.insert(key(1), block(100, 1), false));
        assert!(mem.insert(key(2), block(100, 2), false));
        // 0 is the least recently used but pinned: 1 goes instead.
        assert!(mem.insert(key(3), block(100, 3), false));
        assert!(mem.contains(&key(0)) && !mem.contains(&key(1)));
        // Everything pinned: the quota still holds, the oldest pinned block goes.
        let mem = MemTier::new(200);
        assert!(mem.insert(key(0), block(100, 0), true));
        assert!(mem.insert(key(1), block(100, 1), true));
        assert!(mem.insert(key(2), block(100, 2), false));
        assert_eq!(mem.usage(), (200, 2));
        assert!(!mem.contains(&key(0)) && mem.contains(&key(1)));
        // Once unpinned, 1 is evicted as usual, before the pinned 2.
        mem.unpin(&key(0));
        mem.unpin(&key(1));
        assert!(mem.insert(key(3), block(100, 3), true));
        assert!(mem.insert(key(4), block(100, 4), false));
        assert!(!mem.contains(&key(1)) && mem.contains(&key(3)) && mem.contains(&key(4)));
        mem.unpin(&key(9));
    }

    #[test]
    fn held_objects_are_evicted_last() {
        let mem = MemTier::new(300);
        let held: std::sync::Arc<str> = "held".into();
        assert!(mem.insert(BlockKey::new(held.clone(), 0), block(100, 0), false));
        assert!(mem.insert(key(1), block(100, 1), false));
        mem.hold(&held);
        mem.hold(&held);
        assert!(mem.insert(key(2), block(100, 2), false));
        assert!(mem.insert(key(3), block(100, 3), false));
        assert!(mem.contains(&BlockKey::new(held.clone(), 0)) && !mem.contains(&key(1)));
        mem.release("held");
        assert!(mem.insert(key(4), block(100, 4), false));
        assert!(
            mem.contains(&BlockKey::new(held.clone(), 0)),
            "held once more"
        );
        mem.release("held");
        assert!(mem.insert(key(5), block(100, 5), false));
        assert!(
            !mem.contains(&BlockKey::new(held, 0)),
            "released: least recently used"
        );
        mem.release("never held");
    }

    #[test]
    fn remove_by_prefix() {
        let mem = MemTier::new(1000);
        mem.insert(BlockKey::new("m1/a@1", 0), block(10, 0), false);
        mem.insert(BlockKey::new("m1/a@1", 1), block(10, 0), false);
        mem.insert(BlockKey::new("m1/b@1", 0), block(20, 0), false);
        mem.insert(BlockKey::new("m2/a@1", 0), block(40, 0), false);
        assert_eq!(mem.remove_prefix("m1/a"), (2, 20));
        assert_eq!(mem.remove_prefix("m1/"), (1, 20));
        assert_eq!(mem.usage(), (40, 1));
        assert_eq!(mem.remove_prefix("nothing"), (0, 0));
    }
}
