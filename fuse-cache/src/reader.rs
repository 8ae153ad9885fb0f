//! The read path: a file read becomes block reads through the cache; misses go to the source
//! (one request per block however many readers wait), and sequential readers get readahead
//! whose window grows while the access stays sequential.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::sync::Semaphore;

use crate::cache::{BlockCache, BlockKey};
use crate::error::{Error, Result};
use crate::metrics::Histogram;
use crate::namespace::{Location, Namespace, Node};
use crate::source::{Kind, Meta, Source};

/// Counters of what went to the sources and what readers got.
#[derive(Default)]
pub struct SourceCounters {
    pub bytes: AtomicU64,
    pub requests: AtomicU64,
    pub bytes_served: AtomicU64,
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
}

impl Default for ReadConfig {
    fn default() -> Self {
        ReadConfig {
            block_size: 4 << 20,
            max_readahead_blocks: 16,
            prefetch_budget_blocks: 32,
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
/// readers, so "sequential" tolerates small jumps either way.
#[derive(Default)]
struct Pattern {
    last_end: u64,
    window: u64,
    /// First block not yet asked to be prefetched.
    prefetched_to: u64,
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
            return (0, 0);
        }
        self.window = (self.window * 2).clamp(1, cfg.max_readahead_blocks);
        let current = (offset + len).saturating_sub(1) / cfg.block_size;
        let from = self.prefetched_to.max(current + 1);
        let to = (current + 1 + self.window).min(blocks_in_file);
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
}

/// The cache identity of an object version: mount URL, path and version. Eviction by path
/// matches on the prefix before the version.
pub fn object_prefix(mount_url: &str, path: &str) -> String {
    format!("{mount_url}\u{1}{path}")
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
        }
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
        let object = format!(
            "{}\u{1}{}",
            object_prefix(source.name(), path),
            node.meta.version()
        );
        Ok(OpenFile {
            ino: node.ino,
            source,
            path: path.clone(),
            meta: node.meta.clone(),
            object: object.into(),
            pattern: Mutex::default(),
        })
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
        let (pf_from, pf_to) = {
            let mut p = file.pattern.lock().unwrap_or_else(|e| e.into_inner());
            p.record(offset, end - offset, &self.cfg, self.blocks_in(&file.meta))
        };
        for index in pf_from..pf_to {
            self.prefetch(file, index);
        }
        let bs = self.cfg.block_size;
        let first = offset / bs;
        let last = (end - 1) / bs;
        if first == last {
            let block = self.block(file, first).await?;
            let start = (offset - first * bs) as usize;
            let stop = (end - first * bs) as usize;
            self.counters
                .bytes_served
                .fetch_add((stop - start) as u64, Ordering::Relaxed);
            return slice(&block, start, stop, &file.path);
        }
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        let blocks =
            futures::future::try_join_all((first..=last).map(|i| self.block(file, i))).await?;
        for (i, block) in (first..=last).zip(blocks) {
            let start = if i == first {
                (offset - i * bs) as usize
            } else {
                0
            };
            let stop = if i == last {
                (end - i * bs) as usize
            } else {
                block.len()
            };
            out.extend_from_slice(&slice(&block, start, stop, &file.path)?);
        }
        self.counters
            .bytes_served
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(out.freeze())
    }

    /// One whole block, from the cache or the source.
    pub async fn block(&self, file: &OpenFile, index: u64) -> Result<Bytes> {
        let key = BlockKey {
            object: file.object.clone(),
            index,
        };
        let bs = self.cfg.block_size;
        let want = bs.min(file.meta.size.saturating_sub(index * bs));
        let source = file.source.clone();
        let path = file.path.clone();
        let meta = file.meta.clone();
        let counters = self.counters.clone();
        self.cache
            .get_or_fetch(&key, move || async move {
                counters.requests.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let data = source.read(&path, &meta, index * bs, want).await;
                counters.source_latency.observe(started.elapsed());
                let data = data?;
                counters
                    .bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                if (data.len() as u64) < want {
                    // The object shrank since its attributes were read.
                    return Err(Error::Changed(path));
                }
                Ok(data)
            })
            .await
    }

    /// Fetches a block into the cache in the background, if the prefetch budget allows.
    fn prefetch(&self, file: &Arc<OpenFile>, index: u64) {
        let key = BlockKey {
            object: file.object.clone(),
            index,
        };
        if self.cache.contains(&key) {
            return;
        }
        let Ok(permit) = self.prefetch_permits.clone().try_acquire_owned() else {
            return;
        };
        let this = self.clone_handle();
        let file = file.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = this.block(&file, index).await {
                tracing::debug!(path = %file.path, index, "prefetch failed: {e}");
            }
        });
    }

    fn clone_handle(&self) -> Reader {
        Reader {
            ns: self.ns.clone(),
            cache: self.cache.clone(),
            cfg: self.cfg,
            counters: self.counters.clone(),
            prefetch_permits: self.prefetch_permits.clone(),
        }
    }
}

fn slice(block: &Bytes, start: usize, stop: usize, path: &str) -> Result<Bytes> {
    if stop > block.len() || start > stop {
        return Err(Error::Changed(path.to_string()));
    }
    Ok(block.slice(start..stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ReadConfig {
        ReadConfig {
            block_size: 4 << 20,
            max_readahead_blocks: 8,
            prefetch_budget_blocks: 8,
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
}
