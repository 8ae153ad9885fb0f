//! The tiered block cache: a file is split into fixed blocks, each cached under a
//! [`BlockKey`] that names the object version. Tiers are ordered like Fluid's
//! `tieredstore.levels`: an optional memory tier first, then disk tiers (SSD, HDD).
//!
//! - The cache holds its tiers as one ordered list behind the [`Tier`] trait, and looks up,
//!   checks, evicts and counts through it, in order. Beside the list it keeps typed handles
//!   to what only one kind of tier does: the memory tier is the tier the cache pins and
//!   promotes into (pins of queued blocks, whole-object holds for passthrough, memory files),
//!   and the disk tiers are what the disk writer writes into, demoting each tier's evicted
//!   blocks into the next one, and whose indexes it writes.
//! - [`BlockCache::get`] looks in each tier in order; a block found below the memory tier is
//!   promoted into it (and, found below the first disk tier, queued for that tier).
//! - [`BlockCache::get_or_fetch`] fetches a missing block once however many readers want it
//!   (single flight), stores it in memory and queues it for the first disk tier. The disk
//!   write happens in the background through a bounded queue. A fetch takes its place in that
//!   queue before it reads the source, so when the disk stays slower than the source, misses
//!   slow down to the disk's pace instead of fetching blocks the cache would then lose (and
//!   fetch again); hits never wait. Only promotions from a lower disk tier are skipped when
//!   the queue is full (`write_skips`). A queued block is pinned in the memory tier until it
//!   is written, so the queue costs no memory of its own and may be long (half the memory
//!   tier): a burst of misses runs at the source's pace and the disk catches up after it.
//!   A queued block the memory tier could not take or had to drop (no memory tier, or one
//!   full of pinned blocks) is still found by readers: the queue's copy serves them until it
//!   lands.
//! - A block evicted from disk tier `i` is demoted into tier `i + 1` when there is one; a
//!   block evicted from memory is dropped (it was written through to disk when fetched).
//! - Blocks of large objects fetched for the memory tier live in one memory file per object
//!   (`object_file.rs`); [`BlockCache::hold_resident`] hands out such a file once it holds the
//!   whole object, for kernel passthrough.
//! - The disk indexes are written periodically, on [`BlockCache::flush`] and when the cache
//!   is dropped, and reused at the next open; `disk.rs` describes the file layout.
//!
//! Without any tier the cache is a pass-through: every `get_or_fetch` fetches (concurrent
//! callers of one block still share one fetch).
//!
//! Locks: std mutexes guard only in-memory maps and are never held across `.await`; disk
//! file creation and deletion is serialized per disk tier by an async lock, and all file I/O
//! runs in `spawn_blocking`.

mod background;
mod disk;
mod key;
mod mem;
mod memory_file;
mod object_file;
mod run;
mod tier;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

pub use key::{BlockKey, ObjectId, ObjectScope, mix64, pieces_name, stable_hash64};
use run::{Claimed, FlightGuard};
pub use run::{Keep, Run};

use crate::error::{Error, Result};
use disk::DiskTier;
use fluid_source::BlockBuf;
use fluid_volume::tier::{TierSpec, Tiers};
use mem::MemTier;
use object_file::ObjectFiles;
pub use tier::Tier;

/// Tunables of a [`BlockCache`] besides its tiers.
#[derive(Clone, Debug)]
pub struct CacheOptions {
    /// Blocks being fetched for, or waiting to be written to, the first disk tier, at least.
    /// With a memory tier the queue is half of it in blocks of `block_size` when that is more:
    /// queued blocks are pinned there and share its bytes. Without one, each queued block
    /// holds its own bytes, so this bounds the memory the disk writes use.
    pub write_queue: usize,
    /// The usual block size, to count the memory tier in blocks.
    pub block_size: u64,
    /// How often changed disk indexes are written.
    pub index_interval: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            write_queue: 64,
            block_size: 4 << 20,
            index_interval: Duration::from_secs(30),
        }
    }
}

/// Figures of one tier.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TierStats {
    /// `MEM`, `SSD` or `HDD`.
    pub medium: &'static str,
    /// The directory of a disk tier; empty for MEM.
    pub path: String,
    /// Bytes held: block data for MEM, whole files (header included) for disk tiers.
    pub used_bytes: u64,
    pub capacity_bytes: u64,
    pub blocks: u64,
    /// Reads this tier answered.
    pub hits: u64,
    pub evictions: u64,
    /// Blocks that failed their checksum and were dropped (disk tiers).
    pub corrupt: u64,
}

/// Figures of the whole cache.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// In tier order, MEM first.
    pub tiers: Vec<TierStats>,
    /// Reads answered by any tier.
    pub hits: u64,
    /// Fetches made for missing blocks (readers sharing one fetch count once).
    pub misses: u64,
    /// Promotions into the first disk tier skipped because the write queue was full.
    pub write_skips: u64,
}

impl CacheStats {
    /// Hits over hits and misses, 0 before any read.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

/// The block cache of one daemon; share it with `Arc`. Must be opened inside a tokio runtime.
pub struct BlockCache {
    inner: Arc<Inner>,
}

struct Inner {
    specs: Vec<TierSpec>,
    /// Every tier in lookup order: the memory tier first when there is one, then the disks.
    /// Lookups, `contains`, eviction, stats and usage walk this list, and promotion goes by a
    /// tier's position in it, so another kind of tier (a peer's cache, a write-back area)
    /// joins the list without touching the reader.
    tiers: Vec<Arc<dyn Tier>>,
    /// The tier the cache pins and promotes into: `tiers[0]` when there is a memory tier.
    /// Typed because what the cache does to it is not a tier's contract: it pins a queued
    /// block until written (`insert` with `pin`, `unpin`), keeps a passthrough object's blocks
    /// (`hold`, `release`), and backs large objects' blocks with memory files
    /// (`object_files`). The hit path reaches it through the list at no extra cost.
    mem: Option<Arc<MemTier>>,
    /// Memory files of large objects' memory-tier blocks.
    object_files: Arc<ObjectFiles>,
    /// The disk tiers, `tiers[first_disk..]` in order (handles to the same tiers). Typed for
    /// the disk writer: it writes into `disks[0]`, demoting what that tier drops into
    /// `disks[1..]` (`DiskTier::put` with the lower tiers), and writes their indexes.
    disks: Vec<DiskTier>,
    /// The position of the first disk tier in `tiers` (`tiers.len()` without one). Blocks
    /// queued for it are looked up just before it.
    first_disk: usize,
    flights: Mutex<HashMap<BlockKey, Flight>>,
    next_flight: AtomicU64,
    misses: AtomicU64,
    write_skips: AtomicU64,
    /// Blocks waiting for the disk writer that the memory tier does not hold (the queue's jobs
    /// own the bytes; this map shares them), so that readers find them meanwhile.
    queued: Mutex<HashMap<BlockKey, Bytes>>,
    /// Reads answered from `queued`.
    queued_hits: AtomicU64,
    /// To the background disk writer; `None` without disk tiers.
    writer: Option<mpsc::Sender<Job>>,
    /// Places in the disk write queue; `None` without disk tiers.
    write_slots: Option<Arc<Semaphore>>,
}

/// One fetch in progress, awaited by every reader of its block.
#[derive(Clone)]
struct Flight {
    id: u64,
    result: Shared<BoxFuture<'static, Result<Bytes>>>,
}

enum Job {
    /// Store a block in the first disk tier.
    Write {
        key: BlockKey,
        data: Bytes,
        /// Whether the memory tier pinned the block for this write.
        pinned: bool,
        /// Freed once the block is on disk, letting the next fetch start.
        _slot: OwnedSemaphorePermit,
    },
    /// Answered once every job queued before it is done.
    Barrier(oneshot::Sender<()>),
}

impl BlockCache {
    /// Opens the tiers in order, loading the disk tiers' indexes; the list must keep the rules
    /// of [`Tiers`].
    pub async fn open(specs: Vec<TierSpec>) -> Result<BlockCache> {
        Self::open_with(Tiers::new(specs)?, CacheOptions::default()).await
    }

    pub async fn open_with(tiers: Tiers, options: CacheOptions) -> Result<BlockCache> {
        let specs = tiers.into_specs();
        let mut mem: Option<Arc<MemTier>> = None;
        let mut disks: Vec<DiskTier> = Vec::new();
        let mut dirs: Vec<PathBuf> = Vec::new();
        for spec in &specs {
            match spec {
                // `Tiers` keeps the memory tier first, and the only one.
                TierSpec::Mem { quota } => mem = Some(Arc::new(MemTier::new(*quota))),
                TierSpec::Disk {
                    medium,
                    dir,
                    quota,
                    high,
                    low,
                } => {
                    // `Tiers` compared the names; two names can still reach one directory.
                    let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
                    if dirs.contains(&canonical) {
                        return Err(Error::invalid(
                            format!("tier {spec}"),
                            "another tier uses the same directory",
                        ));
                    }
                    dirs.push(canonical);
                    let tier = DiskTier::open(
                        *medium,
                        dir.clone(),
                        *quota,
                        *high,
                        *low,
                        options.block_size,
                    );
                    disks.push(tier.await?);
                }
            }
        }
        let in_mem = mem
            .as_ref()
            .map_or(0, |m| m.quota() / 2 / options.block_size.max(1));
        let write_queue = options
            .write_queue
            .max(usize::try_from(in_mem).unwrap_or(usize::MAX))
            .max(1);
        let (writer, queue) = if disks.is_empty() {
            (None, None)
        } else {
            // Room for every write slot plus barriers, so a write with a slot is never refused.
            let (tx, rx) = mpsc::channel(write_queue + 16);
            (Some(tx), Some(rx))
        };
        let mut list: Vec<Arc<dyn Tier>> = Vec::new();
        list.extend(mem.iter().map(|m| m.clone() as Arc<dyn Tier>));
        let first_disk = list.len();
        list.extend(disks.iter().map(|d| Arc::new(d.clone()) as Arc<dyn Tier>));
        let inner = Arc::new(Inner {
            specs,
            tiers: list,
            mem,
            object_files: Arc::default(),
            disks,
            first_disk,
            flights: Mutex::new(HashMap::new()),
            next_flight: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            write_skips: AtomicU64::new(0),
            queued: Mutex::new(HashMap::new()),
            queued_hits: AtomicU64::new(0),
            write_slots: writer
                .as_ref()
                .map(|_| Arc::new(Semaphore::new(write_queue))),
            writer,
        });
        if let Some(rx) = queue {
            tokio::spawn(write_behind(
                Arc::downgrade(&inner),
                rx,
                options.index_interval,
            ));
        }
        Ok(BlockCache { inner })
    }

    /// The tiers, as opened.
    pub fn specs(&self) -> &[TierSpec] {
        &self.inner.specs
    }

    /// The block from the first tier that has it, counting a hit there. A block found on disk
    /// is promoted into the memory tier. A corrupt disk block is dropped and is a miss.
    pub async fn get(&self, key: &BlockKey) -> Option<Bytes> {
        self.inner.get(key).await
    }

    /// The block from the cache, or else from `fetch`, which runs once for all concurrent
    /// callers of one key and finishes (and fills the cache) even when they all give up. A
    /// failed fetch hands its error to every caller waiting on it and is not remembered.
    /// `fetch` is called at most once, and only when this caller starts the fetch.
    pub async fn get_or_fetch<F, Fut>(&self, key: &BlockKey, fetch: F) -> Result<Bytes>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes>> + Send + 'static,
    {
        self.get_or_fetch_keeping(key, Keep::All, fetch).await
    }

    /// [`Self::get_or_fetch`], keeping a fetched block only as `keep` says.
    pub async fn get_or_fetch_keeping<F, Fut>(
        &self,
        key: &BlockKey,
        keep: Keep,
        fetch: F,
    ) -> Result<Bytes>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes>> + Send + 'static,
    {
        if let Some(data) = self.inner.get(key).await {
            return Ok(data);
        }
        let (flight, claimed) = {
            let mut flights = self.inner.flights();
            if let Some(f) = flights.get(key) {
                (f.result.clone(), None)
            } else {
                // A fetch may have finished between the lookup above and now: a delivered block
                // is kept (in the memory tier, or in the disk queue's copy when that tier could
                // not hold it) before its flight ends.
                let kept = self.inner.mem.as_ref().and_then(|m| m.get(key));
                if let Some(data) = kept.or_else(|| self.inner.queued_copy(key)) {
                    return Ok(data);
                }
                let (result, claimed) = self.inner.claim(&mut flights, key);
                (result, Some(claimed))
            }
        };
        if let Some(claimed) = claimed {
            let mut run = Run {
                inner: self.inner.clone(),
                pending: VecDeque::from([claimed]),
                keep,
            };
            let fut = fetch();
            tokio::spawn(async move {
                run.reserve_writes().await;
                run.deliver(fut.await);
            });
        }
        flight.await
    }

    /// Claims for fetching the blocks of `keys` that no tier holds and no fetch is getting, in
    /// runs of consecutive keys (the caller passes consecutive blocks of one object, to fetch
    /// each run with one request): each run with the position of its first key in `keys`.
    /// Readers of a claimed block wait for it until the run delivers it or is dropped.
    pub fn claim_runs(&self, keys: &[BlockKey]) -> Vec<(usize, Run)> {
        let mut runs: Vec<(usize, Run)> = Vec::new();
        let mut flights = self.inner.flights();
        for (i, key) in keys.iter().enumerate() {
            if flights.contains_key(key) || self.contains(key) {
                continue;
            }
            let (_, claimed) = self.inner.claim(&mut flights, key);
            match runs.last_mut() {
                Some((first, run)) if *first + run.pending.len() == i => {
                    run.pending.push_back(claimed)
                }
                _ => runs.push((
                    i,
                    Run {
                        inner: self.inner.clone(),
                        pending: VecDeque::from([claimed]),
                        keep: Keep::All,
                    },
                )),
            }
        }
        runs
    }

    /// A buffer for block `index` (`len` bytes) of `object` (`size` bytes, in blocks of
    /// `block_size`), to fetch it into: in the object's memory file when there is a memory
    /// tier and the object is large, else memory of its own.
    pub fn block_buf(
        &self,
        object: &Arc<str>,
        size: u64,
        block_size: u64,
        index: u64,
        len: usize,
    ) -> BlockBuf {
        self.inner
            .mem
            .as_ref()
            .and_then(|_| {
                let m = self
                    .inner
                    .object_files
                    .map_block(object, size, block_size, index, len)?;
                // SAFETY: the mapping holds the block's `len` bytes for as long as it lives,
                // and one fetch at a time fills a block (the flight table), after which the
                // block is only read.
                Some(unsafe { BlockBuf::backed(Box::new(m), len) })
            })
            .unwrap_or_else(|| BlockBuf::new(len))
    }

    /// Whether an object of `size` bytes can come to be held whole in a memory file (see
    /// [`BlockCache::hold_resident`]): it is kept in one and fits the memory tier.
    pub fn may_become_resident(&self, size: u64) -> bool {
        self.inner
            .mem
            .as_ref()
            .is_some_and(|m| size >= object_file::FILE_BACKED_FROM && size <= m.quota())
    }

    /// The memory file of `object` when it holds every block of it, kept whole (and its blocks
    /// evicted last) while the returned value lives.
    pub fn hold_resident(&self, object: &Arc<str>) -> Option<Resident> {
        let mem = self.inner.mem.as_ref()?;
        let hold = self.inner.object_files.hold_complete(object)?;
        mem.hold(object);
        Some(Resident {
            hold,
            cache: self.inner.clone(),
        })
    }

    /// Whether any tier holds the block (no I/O; a disk block may still turn out corrupt).
    pub fn contains(&self, key: &BlockKey) -> bool {
        self.inner.tiers.iter().any(|t| t.contains(key)) || self.inner.queued().contains_key(key)
    }

    /// Drops every block of the objects in `scope` from every tier: (blocks, bytes freed),
    /// summed over tiers (a block in MEM and on SSD counts twice). Fetches in flight and queued
    /// disk writes are not cancelled.
    pub async fn evict(&self, scope: ObjectScope<'_>) -> (u64, u64) {
        let prefix = &scope.name_prefix();
        let (mut blocks, mut bytes) = (0, 0);
        for t in &self.inner.tiers {
            let (n, b) = t.evict(prefix).await;
            blocks += n;
            bytes += b;
        }
        (blocks, bytes)
    }

    pub fn stats(&self) -> CacheStats {
        let inner = &self.inner;
        let tiers: Vec<TierStats> = inner.tiers.iter().map(|t| t.stats()).collect();
        CacheStats {
            hits: tiers.iter().map(|t| t.hits).sum::<u64>()
                + inner.queued_hits.load(Ordering::Relaxed),
            tiers,
            misses: inner.misses.load(Ordering::Relaxed),
            write_skips: inner.write_skips.load(Ordering::Relaxed),
        }
    }

    /// Waits for the disk writes queued so far, then writes the disk indexes.
    pub async fn flush(&self) {
        if let Some(tx) = &self.inner.writer {
            let (done, wait) = oneshot::channel();
            if tx.send(Job::Barrier(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
        for d in &self.inner.disks {
            d.persist(true).await;
        }
    }

    /// The sum of the tiers' quotas.
    pub fn capacity(&self) -> u64 {
        self.inner.tiers.iter().map(|t| t.capacity()).sum()
    }

    /// The bytes of the distinct blocks that `select` picks (a block on two tiers counts
    /// once).
    pub fn distinct_bytes(&self, select: impl Fn(&BlockKey) -> bool) -> u64 {
        let inner = &self.inner;
        let mut seen = std::collections::HashMap::new();
        let mut add = |k: &BlockKey, len: u64| {
            if !seen.contains_key(k) && select(k) {
                seen.insert(k.clone(), len);
            }
        };
        for t in &inner.tiers {
            t.for_each_block(&mut add);
        }
        seen.values().sum()
    }

    /// The sum of the bytes the tiers hold.
    pub fn used(&self) -> u64 {
        self.inner.tiers.iter().map(|t| t.used()).sum()
    }
}

impl fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockCache")
            .field("tiers", &self.inner.specs)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn flights(&self) -> MutexGuard<'_, HashMap<BlockKey, Flight>> {
        self.flights.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a fetch of `key` (not in flight): the result its readers wait on, and what
    /// the fetcher answers it with.
    fn claim(
        self: &Arc<Self>,
        flights: &mut HashMap<BlockKey, Flight>,
        key: &BlockKey,
    ) -> (Shared<BoxFuture<'static, Result<Bytes>>>, Claimed) {
        self.misses.fetch_add(1, Ordering::Relaxed);
        let id = self.next_flight.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel::<Result<Bytes>>();
        let result = async move {
            rx.await.unwrap_or_else(|_| {
                Err(Error::unavailable(
                    "block cache",
                    "the fetch of a block was abandoned (it panicked)",
                ))
            })
        }
        .boxed()
        .shared();
        flights.insert(
            key.clone(),
            Flight {
                id,
                result: result.clone(),
            },
        );
        let claimed = Claimed {
            // Removes the flight however the fetch ends, a panic included.
            guard: FlightGuard {
                inner: self.clone(),
                key: key.clone(),
                id,
            },
            tx,
            slot: None,
        };
        (result, claimed)
    }

    /// The block from the first tier in order that has it. Blocks queued for the first disk
    /// tier are looked up just before it. A block found below the memory tier is promoted
    /// into it; found below the first disk tier, it is also queued for that tier when the
    /// queue has room. A memory hit is one lock and one LRU lookup: the memory tier answers
    /// with [`tier::Lookup::Ready`], which boxes nothing.
    async fn get(&self, key: &BlockKey) -> Option<Bytes> {
        for (i, t) in self.tiers.iter().enumerate() {
            if i == self.first_disk
                && let Some(data) = self.queued_copy(key)
            {
                return Some(data);
            }
            let Some(data) = t.get(key).await else {
                continue;
            };
            let from_memory = i == 0 && self.mem.is_some();
            if !from_memory {
                let slot = if i > self.first_disk {
                    let slot = self
                        .write_slots
                        .as_ref()
                        .and_then(|s| s.clone().try_acquire_owned().ok());
                    if slot.is_none() {
                        self.write_skips.fetch_add(1, Ordering::Relaxed);
                    }
                    slot
                } else {
                    None
                };
                self.keep(key, &data, slot);
            }
            return Some(data);
        }
        None
    }

    /// A place in the disk write queue for a block about to be fetched, waited for when the
    /// queue is full; `None` when there is no disk tier or it already has the block.
    async fn write_slot(&self, key: &BlockKey) -> Option<OwnedSemaphorePermit> {
        let slots = self.write_slots.as_ref()?;
        if self.disks[0].contains(key) {
            return None;
        }
        slots.clone().acquire_owned().await.ok()
    }

    /// Puts a block into the memory tier and, with a write slot, queues it for the first disk
    /// tier (pinned in memory until written) unless that tier has it.
    fn keep(&self, key: &BlockKey, data: &Bytes, slot: Option<OwnedSemaphorePermit>) {
        let queue = match (&self.writer, slot) {
            (Some(tx), Some(slot)) if !self.disks[0].contains(key) => Some((tx, slot)),
            _ => None,
        };
        let pinned = self
            .mem
            .as_ref()
            .is_some_and(|m| m.insert(key.clone(), data.clone(), queue.is_some()))
            && queue.is_some();
        let Some((tx, slot)) = queue else { return };
        // Readers find a queued block here too: a pinned block may still leave the memory
        // tier when it holds nothing else to drop (a queue longer than the tier, on a slow
        // disk), and until written it would be nowhere a reader looks. The write job holds the
        // same bytes, so this costs no memory.
        self.queued().insert(key.clone(), data.clone());
        let job = Job::Write {
            key: key.clone(),
            data: data.clone(),
            pinned,
            _slot: slot,
        };
        // The channel has room for every slot, so this fails only when the writer is gone.
        if tx.try_send(job).is_err() {
            self.written(key, pinned);
        }
    }

    /// The block of a write job is on disk (or will not be): the memory tier may drop it again,
    /// or the queue's copy goes.
    fn written(&self, key: &BlockKey, pinned: bool) {
        if let (true, Some(m)) = (pinned, &self.mem) {
            m.unpin(key);
        }
        self.queued().remove(key);
    }

    /// The disk queue's copy of a block waiting to be written; counts a hit.
    fn queued_copy(&self, key: &BlockKey) -> Option<Bytes> {
        let data = self.queued().get(key).cloned()?;
        self.queued_hits.fetch_add(1, Ordering::Relaxed);
        Some(data)
    }

    fn queued(&self) -> MutexGuard<'_, HashMap<BlockKey, Bytes>> {
        self.queued.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An object whose memory file holds all of it; see [`BlockCache::hold_resident`].
pub struct Resident {
    hold: object_file::Hold,
    cache: Arc<Inner>,
}

impl Resident {
    /// The memory file, to register as a passthrough backing file.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.hold.fd()
    }
}

impl Drop for Resident {
    fn drop(&mut self) {
        if let Some(m) = &self.cache.mem {
            m.release(self.hold.object());
        }
    }
}

/// The background disk writer: queued blocks, barriers, and the periodic index writes. Holds
/// the cache weakly, so dropping the cache ends it (queued writes are then dropped).
async fn write_behind(cache: Weak<Inner>, mut queue: mpsc::Receiver<Job>, interval: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            job = queue.recv() => {
                let Some(job) = job else { break };
                match job {
                    Job::Write { key, data, pinned, _slot } => {
                        let Some(inner) = cache.upgrade() else { break };
                        inner.disks[0].put(key.clone(), data, &inner.disks[1..]).await;
                        inner.written(&key, pinned);
                    }
                    Job::Barrier(done) => {
                        let _ = done.send(());
                    }
                }
            }
            _ = tick.tick() => {
                let Some(inner) = cache.upgrade() else { break };
                for d in &inner.disks {
                    d.persist(false).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
