//! The read path: a file read becomes block reads through the cache; misses go to the source
//! (one request per block however many readers wait), and sequential readers get readahead
//! whose window grows while the access stays sequential. A reader at random offsets fetches
//! small aligned pieces of what it reads instead (adjacent missing pieces in one request),
//! cached like blocks, until its access turns sequential.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use tokio::sync::Semaphore;

use crate::cache::{BlockCache, BlockKey, Keep, ObjectId, Run, pieces_name};
use crate::error::{Error, Result};
use crate::histogram::Histogram;
use crate::lock;
use crate::namespace::{Location, Namespace, Node};
use crate::peers::cluster::{Cluster, Owner, Peer};
use fluid_source::BlockBuf;
use fluid_source::{Kind, Meta, Source};

/// Counters of what went to the sources and what readers got.
#[derive(Default)]
pub struct SourceCounters {
    pub bytes: AtomicU64,
    pub requests: AtomicU64,
    pub bytes_served: AtomicU64,
    /// Opens answered with kernel passthrough (their reads never reach us).
    pub passthrough_opens: AtomicU64,
    pub source_latency: Histogram,
    pub read_latency: Histogram,
}

#[derive(Clone, Copy, Debug)]
pub struct ReadConfig {
    pub block_size: u64,
    /// Most blocks a sequential reader may have prefetched ahead of it.
    pub max_readahead_blocks: u64,
    /// Blocks being prefetched at once over all files: bounds prefetch memory.
    pub prefetch_budget_blocks: usize,
    /// Once a reader's readahead is this long, blocks ahead of it are fetched this many bytes
    /// (whole blocks) per request: a store spends less per byte on fewer, larger requests
    /// (SeaweedFS used a sixth less CPU for a cold 1 GiB read in 16 MiB than in 4 MiB ones),
    /// while random reads still fetch one block.
    pub run_bytes: u64,
    /// A reader at random offsets fetches aligned pieces of this size, not whole blocks (a
    /// 4 KiB read at a random offset is then a 64 KiB request, not a 4 MiB one); 0, or a size
    /// not below the block size, fetches whole blocks.
    pub random_fetch_bytes: u64,
}

impl ReadConfig {
    /// Blocks a prefetch request covers, at least 1.
    fn run_blocks(&self) -> u64 {
        (self.run_bytes / self.block_size.max(1)).max(1)
    }
}

impl Default for ReadConfig {
    fn default() -> Self {
        ReadConfig {
            block_size: 4 << 20,
            max_readahead_blocks: 16,
            prefetch_budget_blocks: 32,
            run_bytes: 16 << 20,
            random_fetch_bytes: 64 << 10,
        }
    }
}

/// A file opened for reading: the version of the object it reads, and its access pattern.
pub struct OpenFile {
    pub ino: u64,
    source: Arc<dyn Source>,
    path: String,
    pub meta: Meta,
    object: Arc<str>,
    pattern: Mutex<Pattern>,
}

/// Sequential-access detection. Kernel readahead reorders requests a little under several
/// readers, so "sequential" tolerates small jumps either way. A reader that jumped earns
/// readahead again only after a block's worth of contiguous reads: the kernel splits one large
/// read at a random offset into adjacent requests, which alone are no sign of a stream.
#[derive(Default)]
struct Pattern {
    last_end: u64,
    window: u64,
    /// First block not yet asked to be prefetched.
    prefetched_to: u64,
    /// Bytes read contiguously since the last jump.
    streak: u64,
    /// The reader has jumped: from then on readahead waits for a block's worth of contiguous
    /// reads. A reader that has not (its first requests near the start, in any order, as the
    /// kernel's readahead sends them) is sequential at once.
    jumped: bool,
}

const SEQUENTIAL_SLACK: u64 = 2 << 20;

impl OpenFile {
    /// The cache identity of the object version this file reads.
    pub fn object(&self) -> &Arc<str> {
        &self.object
    }
}

impl Pattern {
    /// Records a read and returns the blocks to prefetch, as a half-open range.
    fn record(
        &mut self,
        offset: u64,
        len: u64,
        cfg: &ReadConfig,
        blocks_in_file: u64,
    ) -> (u64, u64) {
        let sequential = offset + SEQUENTIAL_SLACK >= self.last_end
            && offset <= self.last_end + SEQUENTIAL_SLACK;
        let first_read = self.last_end == 0 && offset == 0;
        self.last_end = self.last_end.max(offset + len);
        if !sequential && !first_read {
            self.window = 0;
            self.prefetched_to = 0;
            self.last_end = offset + len;
            self.streak = len;
            self.jumped = true;
            return (0, 0);
        }
        self.streak += len;
        if self.jumped && self.window == 0 && self.streak < cfg.block_size {
            return (0, 0);
        }
        self.window = (self.window * 2).clamp(1, cfg.max_readahead_blocks);
        let current = (offset + len).saturating_sub(1) / cfg.block_size;
        let from = self.prefetched_to.max(current + 1);
        let mut to = (current + 1 + self.window).min(blocks_in_file);
        let run = cfg.run_blocks();
        if from < to && self.window >= run {
            // Ahead in whole runs, so each prefetch is one request of a run.
            to = to.max(from + run).min(blocks_in_file);
        }
        if from < to {
            self.prefetched_to = to;
            (from, to)
        } else {
            (0, 0)
        }
    }
}

pub struct Reader {
    pub ns: Arc<Namespace>,
    pub cache: Arc<BlockCache>,
    pub cfg: ReadConfig,
    pub counters: Arc<SourceCounters>,
    prefetch_permits: Arc<Semaphore>,
    /// Inodes some open file has read at random offsets.
    random_inodes: Arc<Mutex<HashSet<u64>>>,
    /// The Dataset's other nodes, when its cache is shared: a block another node owns is
    /// read from it.
    pub cluster: Option<Arc<Cluster>>,
    /// Where a block read from its owner is kept here.
    peer_copy: Keep,
}

impl Reader {
    pub fn new(ns: Arc<Namespace>, cache: Arc<BlockCache>, cfg: ReadConfig) -> Self {
        let prefetch_permits = Arc::new(Semaphore::new(cfg.prefetch_budget_blocks.max(1)));
        Reader {
            ns,
            cache,
            cfg,
            counters: Arc::default(),
            prefetch_permits,
            random_inodes: Arc::default(),
            cluster: None,
            peer_copy: Keep::Memory,
        }
    }

    /// Shares the cache with the other members of `cluster`; blocks read from them are kept
    /// as `peer_copy` says.
    pub fn with_cluster(mut self, cluster: Arc<Cluster>, peer_copy: Keep) -> Self {
        self.cluster = Some(cluster);
        self.peer_copy = peer_copy;
        self
    }

    pub fn open(&self, node: &Node) -> Result<OpenFile> {
        if node.meta.kind != Kind::File {
            return Err(Error::IsADirectory(self.ns.path_of(node.ino)));
        }
        let Location::InMount { mount, path } = &node.location else {
            return Err(Error::IsADirectory(self.ns.path_of(node.ino)));
        };
        let source = self
            .ns
            .source(*mount)
            .ok_or_else(|| Error::NotFound(path.clone()))?
            .clone();
        Ok(Self::open_version(
            node.ino,
            source,
            path.clone(),
            node.meta.clone(),
        ))
    }

    /// The object version `meta` of `path` in `source`, as a file to read blocks of (inode 0
    /// when no inode of ours stands for it: a block asked for by another node).
    pub fn open_version(ino: u64, source: Arc<dyn Source>, path: String, meta: Meta) -> OpenFile {
        let object = ObjectId {
            mount: source.name(),
            path: &path,
            version: &meta.version(),
        }
        .name();
        OpenFile {
            ino,
            source,
            path,
            meta,
            object,
            pattern: Mutex::default(),
        }
    }

    /// Drops what is known of inodes the kernel forgot.
    pub fn forget_inodes(&self, inos: &[u64]) {
        let mut random = lock(&self.random_inodes);
        for ino in inos {
            random.remove(ino);
        }
    }

    /// Whether a file of inode `ino` was read at random offsets since the daemon started.
    pub fn read_at_random(&self, ino: u64) -> bool {
        lock(&self.random_inodes).contains(&ino)
    }

    fn blocks_in(&self, meta: &Meta) -> u64 {
        meta.size.div_ceil(self.cfg.block_size)
    }

    /// `size` bytes from `offset` (fewer at end of file).
    pub async fn read(&self, file: &Arc<OpenFile>, offset: u64, size: u64) -> Result<Bytes> {
        let started = Instant::now();
        let result = self.read_range(file, offset, size).await;
        self.counters.read_latency.observe(started.elapsed());
        result
    }

    async fn read_range(&self, file: &Arc<OpenFile>, offset: u64, size: u64) -> Result<Bytes> {
        let end = (offset + size).min(file.meta.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let (pf_from, pf_to, random) = {
            let mut p = lock(&file.pattern);
            let (from, to) = p.record(offset, end - offset, &self.cfg, self.blocks_in(&file.meta));
            (from, to, p.window == 0)
        };
        if random {
            lock(&self.random_inodes).insert(file.ino);
        }
        self.prefetch(file, pf_from, pf_to);
        let bs = self.cfg.block_size;
        let first = offset / bs;
        let last = (end - 1) / bs;
        let out = match self.piece_size(file, random, offset, end) {
            Some(piece) => self.read_pieces(file, offset, end, piece).await?,
            None => {
                let blocks =
                    futures::future::try_join_all((first..=last).map(|i| self.block(file, i)))
                        .await?;
                join_range(&blocks, bs, offset, end, &file.path)?
            }
        };
        self.counters
            .bytes_served
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(out)
    }

    /// The piece size the read `offset..end` is served in, if any: when pieces are on and
    /// smaller than a block, the cache is not shared (there a block's owner serves
    /// it whole), no block of the read is cached whole, and either the reader is at random
    /// offsets or every piece of the read is cached (a random reader read it before).
    fn piece_size(&self, file: &OpenFile, random: bool, offset: u64, end: u64) -> Option<u64> {
        let (piece, bs) = (self.cfg.random_fetch_bytes, self.cfg.block_size);
        // Files never read at random (most, and every warm sequential read) skip the lookups.
        if piece == 0 || piece >= bs || self.cluster.is_some() || !self.read_at_random(file.ino) {
            return None;
        }
        if (offset / bs..=(end - 1) / bs).any(|i| self.cache.contains(&self.key(file, i))) {
            return None;
        }
        if random {
            return Some(piece);
        }
        let object = pieces_name(&file.object, piece);
        (offset / piece..=(end - 1) / piece)
            .all(|index| {
                self.cache.contains(&BlockKey {
                    object: object.clone(),
                    index,
                })
            })
            .then_some(piece)
    }

    /// `offset..end` of `file` from its pieces of `piece` bytes: the missing ones are fetched
    /// with one source request per stretch of adjacent pieces, and kept like blocks.
    async fn read_pieces(
        &self,
        file: &Arc<OpenFile>,
        offset: u64,
        end: u64,
        piece: u64,
    ) -> Result<Bytes> {
        let object = pieces_name(&file.object, piece);
        let (first, last) = (offset / piece, (end - 1) / piece);
        let keys: Vec<BlockKey> = (first..=last)
            .map(|index| BlockKey {
                object: object.clone(),
                index,
            })
            .collect();
        for (pos, run) in self.cache.claim_runs(&keys) {
            let (this, file) = (self.clone_handle(), file.clone());
            tokio::spawn(async move {
                this.fetch_from_source(&file, first + pos as u64, run, piece)
                    .await;
            });
        }
        let parts = futures::future::try_join_all(keys.iter().map(|key| {
            // Claimed above, or by another reader: this fetch runs only if the piece left the
            // cache again before it was read.
            let fetch = BlockFetch {
                object: object.clone(),
                index: key.index,
                len: unit_len(file.meta.size, piece, key.index),
                block_size: piece,
                ..self.block_fetch(file, 0)
            };
            self.cache.get_or_fetch(key, move || async move {
                fetch.read_source(BlockBuf::new(fetch.len)).await
            })
        }))
        .await?;
        join_range(&parts, piece, offset, end, &file.path)
    }

    /// The length of block `index` of an object of `size` bytes.
    fn block_len(&self, size: u64, index: u64) -> usize {
        unit_len(size, self.cfg.block_size, index)
    }

    fn key(&self, file: &OpenFile, index: u64) -> BlockKey {
        BlockKey {
            object: file.object.clone(),
            index,
        }
    }

    /// One whole block: from the cache, else from the node that owns it when the cache is
    /// shared and that is another node (kept here as `peer_copy` says; from the source when
    /// that node fails), else from the source.
    pub async fn block(&self, file: &OpenFile, index: u64) -> Result<Bytes> {
        let key = self.key(file, index);
        if let Some(cluster) = &self.cluster
            && let Owner::Peer(peer) = cluster.owner(&key)
        {
            let fetch = self.block_fetch(file, index);
            let (cluster, keep) = (cluster.clone(), self.peer_copy);
            return self
                .cache
                .get_or_fetch_keeping(&key, keep, move || async move {
                    fetch.via_peer(&cluster, &peer, keep).await
                })
                .await;
        }
        self.owned_block(file, index).await
    }

    /// Whether block `index` of `file` is this node's to cache: always, unless the cache is
    /// shared and another member owns it.
    pub fn owns(&self, file: &OpenFile, index: u64) -> bool {
        self.cluster
            .as_ref()
            .is_none_or(|c| c.owns(&self.key(file, index)))
    }

    /// The blocks of `file` this node owns, with their lengths.
    pub fn owned_blocks<'a>(&'a self, file: &'a OpenFile) -> impl Iterator<Item = (u64, u64)> + 'a {
        let size = file.meta.size;
        (0..size.div_ceil(self.cfg.block_size))
            .filter(move |&i| self.owns(file, i))
            .map(move |i| (i, self.block_len(size, i) as u64))
    }

    /// One whole block as its owner gets it: from the cache, else from the source, kept on
    /// every tier. What another node's request is answered with (never passed on).
    pub async fn owned_block(&self, file: &OpenFile, index: u64) -> Result<Bytes> {
        let fetch = self.block_fetch(file, index);
        self.cache
            .get_or_fetch(&self.key(file, index), move || async move {
                let buf = fetch.buf(Keep::All);
                fetch.read_source(buf).await
            })
            .await
    }

    fn block_fetch(&self, file: &OpenFile, index: u64) -> BlockFetch {
        BlockFetch {
            source: file.source.clone(),
            path: file.path.clone(),
            meta: file.meta.clone(),
            object: file.object.clone(),
            index,
            len: self.block_len(file.meta.size, index),
            block_size: self.cfg.block_size,
            counters: self.counters.clone(),
            cache: self.cache.clone(),
        }
    }

    /// Fetches blocks `from..to` into the cache in the background, a run of blocks per
    /// request, as far as the prefetch budget allows.
    fn prefetch(&self, file: &Arc<OpenFile>, from: u64, to: u64) {
        let run = self.cfg.run_blocks();
        let mut start = from;
        while start < to {
            let end = (start + run).min(to);
            let wanted = (end - start) as usize;
            if self.prefetch_permits.available_permits() < wanted {
                return;
            }
            let keys: Vec<BlockKey> = (start..end)
                .map(|index| BlockKey {
                    object: file.object.clone(),
                    index,
                })
                .collect();
            for (pos, claimed) in self.cache.claim_runs(&keys) {
                // Claimed blocks are fetched even past the budget (their readers wait).
                let permit = u32::try_from(claimed.len())
                    .ok()
                    .and_then(|n| self.prefetch_permits.clone().try_acquire_many_owned(n).ok());
                let this = self.clone_handle();
                let file = file.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    this.fetch_run(&file, start + pos as u64, claimed).await;
                });
            }
            start = end;
        }
    }

    /// Fetches the blocks of `run` (from block `first` on): with one source request, or, when
    /// the cache is shared, the stretches this node gets itself with one request each and the
    /// blocks of other owners from them, all at once.
    async fn fetch_run(&self, file: &OpenFile, first: u64, mut run: Run) {
        let Some(cluster) = &self.cluster else {
            return self
                .fetch_from_source(file, first, run, self.cfg.block_size)
                .await;
        };
        let mine = |index: u64| matches!(cluster.owner(&self.key(file, index)), Owner::Me);
        let mut pieces = Vec::new();
        let mut at = first;
        while !run.is_empty() {
            let n = match cluster.owner(&self.key(file, at)) {
                Owner::Me => {
                    let n = (1..run.len())
                        .find(|&i| !mine(at + i as u64))
                        .unwrap_or(run.len());
                    let rest = run.split_off(n);
                    let bs = self.cfg.block_size;
                    pieces.push(self.fetch_from_source(file, at, run, bs).boxed());
                    run = rest;
                    n
                }
                Owner::Peer(peer) => {
                    let rest = run.split_off(1);
                    let mut one = std::mem::replace(&mut run, rest);
                    let (fetch, keep) = (self.block_fetch(file, at), self.peer_copy);
                    let cluster = cluster.clone();
                    pieces.push(
                        async move {
                            one.set_keep(keep);
                            one.reserve_writes().await;
                            one.deliver(fetch.via_peer(&cluster, &peer, keep).await);
                        }
                        .boxed(),
                    );
                    1
                }
            };
            at += n as u64;
        }
        futures::future::join_all(pieces).await;
    }

    /// Fetches the units of `unit` bytes of `run` (from unit `first` on: blocks, or a random
    /// reader's pieces) with one source request.
    async fn fetch_from_source(&self, file: &OpenFile, first: u64, mut run: Run, unit: u64) {
        run.reserve_writes().await;
        let size = file.meta.size;
        let mut bufs: VecDeque<BlockBuf> = (first..first + run.len() as u64)
            .map(|i| {
                let len = unit_len(size, unit, i);
                if unit == self.cfg.block_size {
                    self.cache.block_buf(&file.object, size, unit, i, len)
                } else {
                    // Pieces are never part of an object's memory file, which holds blocks.
                    BlockBuf::new(len)
                }
            })
            .collect();
        let counters = &self.counters;
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let read = file
            .source
            .read_run(
                &file.path,
                &file.meta,
                first * unit,
                &mut bufs,
                &mut |b: BlockBuf| {
                    counters
                        .bytes
                        .fetch_add(b.filled() as u64, Ordering::Relaxed);
                    run.deliver(Ok(b.freeze()));
                },
            )
            .await;
        counters.source_latency.observe(started.elapsed());
        if let Err(e) = read {
            tracing::debug!(path = %file.path, first, "prefetch failed: {e}");
            run.fail(e.into());
        }
    }

    fn clone_handle(&self) -> Reader {
        Reader {
            ns: self.ns.clone(),
            cache: self.cache.clone(),
            cfg: self.cfg,
            counters: self.counters.clone(),
            prefetch_permits: self.prefetch_permits.clone(),
            random_inodes: self.random_inodes.clone(),
            cluster: self.cluster.clone(),
            peer_copy: self.peer_copy,
        }
    }
}

/// What fetching one block needs, owned, so the fetch can outlive the read that started it
/// (it fills the cache for the readers that come after).
struct BlockFetch {
    source: Arc<dyn Source>,
    path: String,
    meta: Meta,
    object: Arc<str>,
    index: u64,
    len: usize,
    block_size: u64,
    counters: Arc<SourceCounters>,
    cache: Arc<BlockCache>,
}

impl BlockFetch {
    /// A buffer for the block: where the cache keeps it, or memory of its own when it is
    /// not kept.
    fn buf(&self, keep: Keep) -> BlockBuf {
        if keep == Keep::Nothing {
            return BlockBuf::new(self.len);
        }
        let (size, bs) = (self.meta.size, self.block_size);
        self.cache
            .block_buf(&self.object, size, bs, self.index, self.len)
    }

    async fn read_source(&self, mut buf: BlockBuf) -> Result<Bytes> {
        let c = &self.counters;
        c.requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let offset = self.index * self.block_size;
        let read = self
            .source
            .read_into(&self.path, &self.meta, offset, &mut buf)
            .await;
        c.source_latency.observe(started.elapsed());
        read?;
        c.bytes.fetch_add(buf.filled() as u64, Ordering::Relaxed);
        if buf.filled() < self.len {
            // The object shrank since its attributes were read.
            return Err(Error::Changed(self.path.clone()));
        }
        Ok(buf.freeze())
    }

    /// From `peer`, else (it failed; see `peers::cluster`) from the source.
    async fn via_peer(&self, cluster: &Cluster, peer: &Peer, keep: Keep) -> Result<Bytes> {
        let mut buf = self.buf(keep);
        let req = cluster.request(
            self.source.name(),
            &self.path,
            &self.meta,
            self.index,
            self.block_size,
        );
        match cluster.read(peer, req, &mut buf).await {
            Ok(()) => Ok(buf.freeze()),
            Err(_) => {
                buf.clear();
                self.read_source(buf).await
            }
        }
    }
}

/// The length of unit `index` (of `unit` bytes each) of an object of `size` bytes.
fn unit_len(size: u64, unit: u64, index: u64) -> usize {
    unit.min(size.saturating_sub(index * unit)) as usize
}

/// Bytes `offset..end` of an object from its consecutive units of `unit` bytes, `units[0]`
/// being the one `offset` falls in; one unit is sliced without a copy.
fn join_range(units: &[Bytes], unit: u64, offset: u64, end: u64, path: &str) -> Result<Bytes> {
    let first = offset / unit;
    if let [one] = units {
        let start = (offset - first * unit) as usize;
        return slice(one, start, (end - first * unit) as usize, path);
    }
    let last = (end - 1) / unit;
    let mut out = BytesMut::with_capacity((end - offset) as usize);
    for (i, data) in (first..).zip(units) {
        let start = if i == first { offset - i * unit } else { 0 } as usize;
        let stop = if i == last {
            (end - i * unit) as usize
        } else {
            data.len()
        };
        out.extend_from_slice(&slice(data, start, stop, path)?);
    }
    Ok(out.freeze())
}

fn slice(block: &Bytes, start: usize, stop: usize, path: &str) -> Result<Bytes> {
    if stop > block.len() || start > stop {
        return Err(Error::Changed(path.to_string()));
    }
    Ok(block.slice(start..stop))
}

#[cfg(test)]
mod tests;
