//! A disk tier: one file per block under `<dir>/fluid-blocks/<2 hex>/<32 hex>`, an index that
//! survives restart, and high/low watermark eviction.
//!
//! Block file: a header then the data. The header is self-describing, so the index can be
//! rebuilt from the files alone after a crash:
//!
//! ```text
//! magic "FLBK" | version u16 | reserved u16 | object length u32 | index u64 | data length u64
//! | crc32c(data) u32 | object bytes | crc32c(all header bytes before this) u32
//! ```
//!
//! (integers little-endian), then zeros (checked) up to a multiple of 4 KiB ([`FILE_ALIGN`]): blocks are
//! written with `O_DIRECT` where the file system allows it, so filling the tier neither copies
//! every byte into the page cache (about as much CPU as fetching it) nor keeps a second copy of
//! blocks the memory tier already holds. Files without the padding (older ones) read as well.
//! Blocks are written to a temp file and renamed, so a block file is whole or absent; the
//! data's crc32c is checked on every read, and a block that fails it is deleted and reported as
//! a miss.
//!
//! The index (`<dir>/fluid-blocks/index`, written to a temp file and renamed) lists the blocks
//! in least-recently-used order with their file sizes. It is written periodically (when asked),
//! on flush and when the tier is dropped. On open, index entries whose file exists with the
//! listed size are taken as they are; block files the index does not know (written after it,
//! say, before a crash) are taken from their headers, newest last; files that are neither
//! valid blocks nor listed, and temp files, are deleted. So a missing, stale or damaged index
//! costs a header scan, never a wrong byte.
//!
//! Every creation and deletion of block files goes through one async lock per tier, and the
//! bytes counted (whole files, header included) always cover the files present: a write first
//! evicts (deleting files), then writes. So the tier never holds more than its quota. Readers
//! take no such lock.
//!
//! A directory is used by one tier at a time: `fluid-blocks/lock` is held with `flock`.
//!
//! The block size is part of a tier's identity: `fluid-blocks/block-size` names the size its
//! blocks were cut at, written before the first block. A tier opened with another block size
//! (or one written before the file existed, whose size is unknown) drops its blocks and index
//! first: block `i` of an object means other bytes at another size, so serving it would be
//! serving wrong bytes.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;
use lru::LruCache;

use super::TierStats;
use super::background;
use super::key::BlockKey;
use super::tier::{Lookup, Put, Tier};
use crate::error::{Error, Result};
use fluid_volume::tier::Medium;

mod block_file;
mod index;
#[cfg(test)]
mod tests;

use block_file::*;
use index::*;

const SUBDIR: &str = "fluid-blocks";
const INDEX: &str = "index";
const BLOCK_SIZE_FILE: &str = "block-size";
const LOCK: &str = "lock";
/// How long `open` waits for another user of the directory (a previous instance still
/// shutting down) to let go of it.
const LOCK_WAIT: Duration = Duration::from_millis(if cfg!(test) { 300 } else { 3000 });

/// What `open` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct OpenReport {
    /// Whether an index file was read and valid.
    pub index_loaded: bool,
    pub from_index: u64,
    pub from_headers: u64,
    /// Stale temp files, damaged blocks and unknown files deleted.
    pub removed: u64,
    /// Index entries not taken: their file is gone or has another size (changed after the
    /// index was written).
    pub stale: u64,
    /// Blocks evicted because the tier held more than its high watermark (a smaller quota).
    pub evicted: u64,
    /// Blocks dropped because they were cut at another (or an unknown) block size.
    pub other_block_size: u64,
}

/// Cloning shares the tier (the cache keeps one handle in its ordered list of tiers and one
/// for the disk writer).
#[derive(Clone)]
pub(crate) struct DiskTier {
    inner: Arc<Inner>,
}

struct Inner {
    medium: Medium,
    dir: PathBuf,
    root: PathBuf,
    quota: u64,
    high_bytes: u64,
    low_bytes: u64,
    state: Mutex<State>,
    /// Serializes the creation and deletion of block files.
    io: tokio::sync::Mutex<()>,
    /// Serializes index writes, so an older snapshot never replaces a newer one.
    persist: tokio::sync::Mutex<()>,
    /// Blocks added or removed since the index was written.
    changed: AtomicBool,
    /// Blocks read (LRU order changed) since the index was written.
    touched: AtomicBool,
    hits: AtomicU64,
    evictions: AtomicU64,
    corrupt: AtomicU64,
    tmp_seq: AtomicU64,
    #[cfg(test)]
    report: OpenReport,
    /// Holds the `flock` of `fluid-blocks/lock` while the tier is open.
    _lock: File,
}

struct State {
    lru: LruCache<BlockKey, Entry>,
    used: u64,
    next_gen: u64,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// File size, header included.
    len: u64,
    /// Tells a block from a later block under the same key.
    generation: u64,
}

impl State {
    fn add(&mut self, key: BlockKey, len: u64) {
        self.next_gen += 1;
        if let Some(old) = self.lru.put(
            key,
            Entry {
                len,
                generation: self.next_gen,
            },
        ) {
            self.used -= old.len;
        }
        self.used += len;
    }
}

enum ReadError {
    Corrupt(String),
    Io(io::Error),
}

impl DiskTier {
    /// Opens (creating) the tier in `dir` for blocks of `block_size` bytes, loading or
    /// rebuilding its index.
    pub(crate) async fn open(
        medium: Medium,
        dir: PathBuf,
        quota: u64,
        high: f64,
        low: f64,
        block_size: u64,
    ) -> Result<DiskTier> {
        let root = dir.join(SUBDIR);
        let lock = {
            let root = root.clone();
            blocking(move || open_lock(&root)).await?
        };
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match try_flock(&lock) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(Error::invalid(
                        "tier",
                        format!(
                            "cache directory {} is in use by another cache; give each its own",
                            dir.display()
                        ),
                    ));
                }
                Err(e) => {
                    return Err(Error::io(
                        format!("locking {}", root.join(LOCK).display()),
                        e,
                    ));
                }
            }
        }
        let high_bytes = (high * quota as f64) as u64;
        let low_bytes = (low * quota as f64) as u64;
        let (state, report) = {
            let root = root.clone();
            blocking(move || load(&root, high_bytes, low_bytes, block_size)).await?
        };
        tracing::info!(
            dir = %dir.display(),
            blocks = state.lru.len(),
            used = state.used,
            from_index = report.from_index,
            from_headers = report.from_headers,
            removed = report.removed,
            other_block_size = report.other_block_size,
            "opened {} cache tier",
            medium.name()
        );
        let changed = !report.index_loaded
            || report.from_headers > 0
            || report.removed > 0
            || report.stale > 0
            || report.evicted > 0
            || report.other_block_size > 0;
        let tier = DiskTier {
            inner: Arc::new(Inner {
                medium,
                dir,
                root,
                quota,
                high_bytes,
                low_bytes,
                state: Mutex::new(state),
                io: tokio::sync::Mutex::new(()),
                persist: tokio::sync::Mutex::new(()),
                changed: AtomicBool::new(changed),
                touched: AtomicBool::new(false),
                hits: AtomicU64::new(0),
                evictions: AtomicU64::new(report.evicted),
                corrupt: AtomicU64::new(0),
                tmp_seq: AtomicU64::new(0),
                #[cfg(test)]
                report,
                _lock: lock,
            }),
        };
        tier.persist(false).await;
        Ok(tier)
    }

    #[cfg(test)]
    pub(crate) fn report(&self) -> &OpenReport {
        &self.inner.report
    }

    /// Makes the coming drop behave like a crash: the index is not written.
    #[cfg(test)]
    pub(crate) fn skip_index_on_drop(self) {
        self.inner.changed.store(false, Ordering::Relaxed);
        self.inner.touched.store(false, Ordering::Relaxed);
    }

    /// (bytes on disk, blocks) at one instant.
    pub(crate) fn usage(&self) -> (u64, u64) {
        let st = self.inner.state();
        (st.used, st.lru.len() as u64)
    }

    /// Calls `f` with every block held and its length, at one instant.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&BlockKey, u64)) {
        for (k, e) in self.inner.state().lru.iter() {
            f(k, e.len);
        }
    }

    pub(crate) fn used(&self) -> u64 {
        self.inner.state().used
    }

    /// Whether the index lists the block (no I/O).
    pub(crate) fn contains(&self, key: &BlockKey) -> bool {
        self.inner.state().lru.contains(key)
    }

    /// Reads the block and checks it; counts a hit. A missing, unreadable or corrupt block
    /// is dropped from the tier and reported as a miss.
    pub(crate) async fn get(&self, key: &BlockKey) -> Option<Bytes> {
        let entry = *self.inner.state().lru.get(key)?;
        self.inner.touched.store(true, Ordering::Relaxed);
        let path = self.inner.block_path(key);
        let owned = key.clone();
        let read = tokio::task::spawn_blocking(move || read_block(&path, &owned, entry.len)).await;
        match read {
            Ok(Ok(data)) => {
                self.inner.hits.fetch_add(1, Ordering::Relaxed);
                Some(data)
            }
            Ok(Err(ReadError::Corrupt(why))) => {
                self.inner.corrupt.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(block = %key, dir = %self.inner.dir.display(), "dropping corrupt cached block: {why}");
                self.discard(key, entry.generation).await;
                None
            }
            Ok(Err(ReadError::Io(e))) => {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(block = %key, dir = %self.inner.dir.display(), "dropping unreadable cached block: {e}");
                }
                self.discard(key, entry.generation).await;
                None
            }
            Err(e) => {
                tracing::warn!(block = %key, "reading a cached block failed: {e}");
                None
            }
        }
    }

    /// Drops the block if the index still lists the same one that failed to read.
    async fn discard(&self, key: &BlockKey, generation: u64) {
        let _io = self.inner.io.lock().await;
        let removed = {
            let mut st = self.inner.state();
            match st.lru.peek(key) {
                Some(e) if e.generation == generation => {
                    let len = e.len;
                    st.lru.pop(key);
                    st.used -= len;
                    true
                }
                _ => false,
            }
        };
        if removed {
            self.inner.changed.store(true, Ordering::Relaxed);
            let path = self.inner.block_path(key);
            let _ = tokio::task::spawn_blocking(move || remove_quietly(&path)).await;
        }
    }

    /// Stores the block unless it is there. Makes room first: when the new block would take the
    /// tier past its high watermark, least recently used blocks go until it is at its low
    /// watermark (new block included). Evicted blocks are demoted into `lower[0]` (which may
    /// demote further into `lower[1..]`), one at a time.
    pub(crate) fn put<'a>(
        &'a self,
        key: BlockKey,
        data: Bytes,
        lower: &'a [DiskTier],
    ) -> BoxFuture<'a, Put> {
        Box::pin(async move {
            let _io = self.inner.io.lock().await;
            let len = file_len(&key, data.len());
            let victims = {
                let mut st = self.inner.state();
                if st.lru.contains(&key) {
                    return Put::Exists;
                }
                if len > self.inner.quota {
                    return Put::TooLarge;
                }
                let target = if st.used + len > self.inner.high_bytes {
                    self.inner.low_bytes
                } else {
                    self.inner.quota
                };
                let mut victims = Vec::new();
                while st.used + len > target {
                    let Some((k, e)) = st.lru.pop_lru() else {
                        break;
                    };
                    st.used -= e.len;
                    victims.push((k, e.len));
                }
                victims
            };
            if !victims.is_empty() {
                self.inner
                    .evictions
                    .fetch_add(victims.len() as u64, Ordering::Relaxed);
                self.inner.changed.store(true, Ordering::Relaxed);
                self.drop_victims(victims, lower).await;
            }
            let inner = self.inner.clone();
            let k = key.clone();
            let written = background::run(move || inner.write_block(&k, &data)).await;
            match written {
                Some(Ok(())) => {
                    self.inner.state().add(key, len);
                    self.inner.changed.store(true, Ordering::Relaxed);
                    Put::Stored
                }
                Some(Err(e)) => {
                    tracing::warn!(block = %key, dir = %self.inner.dir.display(), "writing a cached block failed: {e}");
                    Put::Failed
                }
                None => {
                    tracing::warn!(block = %key, "writing a cached block failed: the writer panicked");
                    Put::Failed
                }
            }
        })
    }

    /// Deletes evicted blocks (already out of the index), demoting each to the next tier first.
    async fn drop_victims(&self, victims: Vec<(BlockKey, u64)>, lower: &[DiskTier]) {
        let Some((next, rest)) = lower.split_first() else {
            let paths: Vec<PathBuf> = victims
                .iter()
                .map(|(k, _)| self.inner.block_path(k))
                .collect();
            background::run(move || paths.iter().for_each(|p| remove_quietly(p))).await;
            return;
        };
        for (key, len) in victims {
            let path = self.inner.block_path(&key);
            let k = key.clone();
            let read = background::run(move || {
                let data = read_block(&path, &k, len);
                remove_quietly(&path);
                data
            })
            .await;
            if let Some(Ok(data)) = read
                && !next.contains(&key)
            {
                next.put(key, data, rest).await;
            }
        }
    }

    /// Drops every block whose object starts with `prefix`: (blocks, bytes freed).
    pub(crate) async fn remove_prefix(&self, prefix: &str) -> (u64, u64) {
        let _io = self.inner.io.lock().await;
        let gone: Vec<(BlockKey, u64)> = {
            let mut st = self.inner.state();
            let keys: Vec<(BlockKey, u64)> = st
                .lru
                .iter()
                .filter(|(k, _)| k.object.starts_with(prefix))
                .map(|(k, e)| (k.clone(), e.len))
                .collect();
            for (k, len) in &keys {
                st.lru.pop(k);
                st.used -= len;
            }
            keys
        };
        if gone.is_empty() {
            return (0, 0);
        }
        self.inner.changed.store(true, Ordering::Relaxed);
        let bytes = gone.iter().map(|(_, len)| len).sum();
        let blocks = gone.len() as u64;
        let paths: Vec<PathBuf> = gone.iter().map(|(k, _)| self.inner.block_path(k)).collect();
        let _ =
            tokio::task::spawn_blocking(move || paths.iter().for_each(|p| remove_quietly(p))).await;
        (blocks, bytes)
    }

    /// Writes the index if blocks were added or removed since it was last written, or, with
    /// `always`, also if only the LRU order changed. Failures are logged.
    pub(crate) async fn persist(&self, always: bool) {
        let _g = self.inner.persist.lock().await;
        let changed = self.inner.changed.swap(false, Ordering::Relaxed);
        let touched = if always || changed {
            self.inner.touched.swap(false, Ordering::Relaxed)
        } else {
            false
        };
        if !changed && !touched {
            return;
        }
        let inner = self.inner.clone();
        let written = tokio::task::spawn_blocking(move || inner.write_index()).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.inner.changed.store(true, Ordering::Relaxed);
                tracing::warn!(dir = %self.inner.dir.display(), "writing the cache index failed: {e}");
            }
            Err(e) => {
                self.inner.changed.store(true, Ordering::Relaxed);
                tracing::warn!(dir = %self.inner.dir.display(), "writing the cache index failed: {e}");
            }
        }
    }
}

#[async_trait::async_trait]
impl Tier for DiskTier {
    async fn put(&self, key: BlockKey, data: Bytes) -> Put {
        DiskTier::put(self, key, data, &[]).await
    }

    fn get<'a>(&'a self, key: &'a BlockKey) -> Lookup<'a> {
        // A block the index does not list is a miss without I/O, and without a boxed future.
        if DiskTier::contains(self, key) {
            Lookup::Pending(Box::pin(DiskTier::get(self, key)))
        } else {
            Lookup::Ready(None)
        }
    }

    fn contains(&self, key: &BlockKey) -> bool {
        DiskTier::contains(self, key)
    }

    async fn evict(&self, prefix: &str) -> (u64, u64) {
        self.remove_prefix(prefix).await
    }

    fn for_each_block(&self, f: &mut dyn FnMut(&BlockKey, u64)) {
        self.for_each(f)
    }

    fn used(&self) -> u64 {
        DiskTier::used(self)
    }

    fn capacity(&self) -> u64 {
        self.inner.quota
    }

    fn stats(&self) -> TierStats {
        let (used, blocks) = self.usage();
        TierStats {
            medium: self.inner.medium.name(),
            path: self.inner.dir.display().to_string(),
            used_bytes: used,
            capacity_bytes: self.inner.quota,
            blocks,
            hits: self.inner.hits.load(Ordering::Relaxed),
            evictions: self.inner.evictions.load(Ordering::Relaxed),
            corrupt: self.inner.corrupt.load(Ordering::Relaxed),
        }
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn block_path(&self, key: &BlockKey) -> PathBuf {
        block_path(&self.root, key)
    }

    fn write_block(&self, key: &BlockKey, data: &[u8]) -> io::Result<()> {
        let path = self.block_path(key);
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!("{name}.tmp.{}.{seq}", std::process::id()));
        let result = (|| {
            let direct = data.len() >= DIRECT_FROM;
            let mut file = match create_block_file(&tmp, direct) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir_all(tmp.parent().unwrap_or(&self.root))?;
                    create_block_file(&tmp, direct)?
                }
                other => other?,
            };
            WRITE_BUFFER.with_borrow_mut(|buf| {
                let image = block_image(buf, key, data);
                match file.write_all(image) {
                    // Some file systems take O_DIRECT at open and refuse it at write.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        file = File::create(&tmp)?;
                        file.write_all(image)
                    }
                    other => other,
                }
            })?;
            drop(file);
            fs::rename(&tmp, &path)
        })();
        if result.is_err() {
            remove_quietly(&tmp);
        }
        result
    }

    /// Snapshot of the index in LRU order, oldest first.
    fn snapshot(&self) -> Vec<(BlockKey, u64)> {
        self.state()
            .lru
            .iter()
            .rev()
            .map(|(k, e)| (k.clone(), e.len))
            .collect()
    }

    fn write_index(&self) -> io::Result<()> {
        let bytes = encode_index(&self.snapshot());
        fluid_volume::atomic::write(&self.root.join(INDEX), &bytes, 0o600)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let dirty = *self.changed.get_mut() || *self.touched.get_mut();
        if dirty && let Err(e) = self.write_index() {
            tracing::warn!(dir = %self.dir.display(), "writing the cache index at shutdown failed: {e}");
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        Error::io(
            "cache tier",
            io::Error::other(format!("background task failed: {e}")),
        )
    })?
}

fn open_lock(root: &Path) -> Result<File> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    // Tenant data lives below: the node's other users may not list or read it (a tier made
    // by an earlier build, world-readable, is closed as well).
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .and_then(|()| fs::set_permissions(root, fs::Permissions::from_mode(0o700)))
        .map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
    let path = root.join(LOCK);
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

fn try_flock(file: &File) -> io::Result<()> {
    // SAFETY: flock on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn block_path(root: &Path, key: &BlockKey) -> PathBuf {
    let hex = key.hash_hex();
    root.join(&hex[..2]).join(hex)
}

fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), "removing a cache file failed: {e}");
    }
}
