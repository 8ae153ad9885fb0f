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
use super::tier::Tier;
use crate::error::{Error, Result};
use fluid_volume::tier::Medium;

const BLOCK_MAGIC: [u8; 4] = *b"FLBK";
const BLOCK_VERSION: u16 = 1;
/// Header bytes besides the object name.
const FIXED: usize = 32;
const HEADER_OVERHEAD: usize = FIXED + 4;
/// Longer object names are refused when reading headers (they would be a damaged header).
const MAX_OBJECT_LEN: usize = 1 << 16;

const INDEX_MAGIC: [u8; 8] = *b"FLUIDIDX";
const INDEX_VERSION: u32 = 1;

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

/// The result of [`DiskTier::put`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Put {
    Stored,
    /// The block was there already.
    Exists,
    /// The block is larger than the whole quota.
    TooLarge,
    /// Writing failed (logged); the block is not stored.
    Failed,
}

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
    async fn get(&self, key: &BlockKey) -> Option<Bytes> {
        DiskTier::get(self, key).await
    }

    fn contains(&self, key: &BlockKey) -> bool {
        DiskTier::contains(self, key)
    }

    async fn evict(&self, prefix: &str) -> (u64, u64) {
        self.remove_prefix(prefix).await
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
        let path = self.root.join(INDEX);
        let tmp = self
            .root
            .join(format!("{INDEX}.tmp.{}", std::process::id()));
        let result = fs::write(&tmp, bytes).and_then(|()| fs::rename(&tmp, &path));
        if result.is_err() {
            remove_quietly(&tmp);
        }
        result
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
    fs::create_dir_all(root).map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
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

fn header_len(key: &BlockKey) -> usize {
    HEADER_OVERHEAD + key.object.len()
}

/// Block files are padded to this, the `O_DIRECT` alignment of common file systems.
pub(crate) const FILE_ALIGN: usize = 4096;

/// The size of a block's file: header and data, padded to [`FILE_ALIGN`].
fn file_len(key: &BlockKey, data_len: usize) -> u64 {
    (header_len(key) + data_len).next_multiple_of(FILE_ALIGN) as u64
}

/// Whether a file of `file_len` bytes fits a header of `header` bytes and `data` bytes of data:
/// exactly, or padded to [`FILE_ALIGN`].
fn fits(file_len: u64, header: usize, data: u64) -> bool {
    let body = header as u64 + data;
    file_len == body || file_len == body.next_multiple_of(FILE_ALIGN as u64)
}

thread_local! {
    /// The writer's reusable buffer: fresh 4 MiB buffers cost page faults and zeroing per block.
    static WRITE_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The whole file of a block (header, data, zero padding) in `buf`, at an address aligned for
/// `O_DIRECT`.
fn block_image<'a>(buf: &'a mut Vec<u8>, key: &BlockKey, data: &[u8]) -> &'a [u8] {
    let header = encode_header(key, data);
    let len = file_len(key, data.len()) as usize;
    if buf.len() < len + FILE_ALIGN {
        buf.resize(len + FILE_ALIGN, 0);
    }
    let start = buf.as_ptr().align_offset(FILE_ALIGN).min(FILE_ALIGN);
    let image = &mut buf[start..start + len];
    image[..header.len()].copy_from_slice(&header);
    image[header.len()..header.len() + data.len()].copy_from_slice(data);
    image[header.len() + data.len()..].fill(0);
    image
}

/// Blocks from this size up are written with `O_DIRECT`. A smaller block costs little to copy
/// into the page cache, while waiting for the device on each one (writes are one at a time)
/// held a cold read of many small files to the disk's pace: epoch 1 of the bench, 20,000
/// files of 50-200 KiB, ran at 1000 files/s with the disk tier against 1200 without.
const DIRECT_FROM: usize = 1 << 20;

/// Creates a block's temp file for writing, with `O_DIRECT` when `direct` and the file system
/// takes it.
fn create_block_file(path: &Path, direct: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = |flags| {
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(flags)
            .open(path)
    };
    if !direct {
        return open(0);
    }
    match open(libc::O_DIRECT) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => open(0),
        other => other,
    }
}

fn encode_header(key: &BlockKey, data: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(header_len(key));
    h.extend_from_slice(&BLOCK_MAGIC);
    h.extend_from_slice(&BLOCK_VERSION.to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes());
    h.extend_from_slice(&(key.object.len() as u32).to_le_bytes());
    h.extend_from_slice(&key.index.to_le_bytes());
    h.extend_from_slice(&(data.len() as u64).to_le_bytes());
    h.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
    h.extend_from_slice(key.object.as_bytes());
    let crc = crc32c::crc32c(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

#[derive(Debug, PartialEq, Eq)]
struct Header {
    object: String,
    index: u64,
    data_len: u64,
    data_crc: u32,
    /// Header bytes, where the data starts.
    len: usize,
}

/// The object length a header announces, once its fixed part is there.
fn header_object_len(fixed: &[u8]) -> std::result::Result<usize, String> {
    if fixed.len() < FIXED {
        return Err("shorter than a block header".into());
    }
    if fixed[..4] != BLOCK_MAGIC {
        return Err("not a block file (bad magic)".into());
    }
    let version = u16::from_le_bytes([fixed[4], fixed[5]]);
    if version != BLOCK_VERSION {
        return Err(format!(
            "block format version {version}, expected {BLOCK_VERSION}"
        ));
    }
    let n = u32::from_le_bytes(fixed[8..12].try_into().unwrap_or_default()) as usize;
    if n > MAX_OBJECT_LEN {
        return Err(format!("object name of {n} bytes"));
    }
    Ok(n)
}

fn decode_header(buf: &[u8]) -> std::result::Result<Header, String> {
    let n = header_object_len(buf)?;
    let len = HEADER_OVERHEAD + n;
    if buf.len() < len {
        return Err("shorter than its header".into());
    }
    let crc = u32::from_le_bytes(buf[len - 4..len].try_into().unwrap_or_default());
    if crc32c::crc32c(&buf[..len - 4]) != crc {
        return Err("header checksum mismatch".into());
    }
    let u64_at = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().unwrap_or_default());
    let object = std::str::from_utf8(&buf[FIXED..FIXED + n])
        .map_err(|_| "object name is not UTF-8")?
        .to_string();
    Ok(Header {
        object,
        index: u64_at(12),
        data_len: u64_at(20),
        data_crc: u32::from_le_bytes(buf[28..32].try_into().unwrap_or_default()),
        len,
    })
}

/// Reads a whole block file, checking it is `key`'s, `file_len` long and whole.
fn read_block(path: &Path, key: &BlockKey, file_len: u64) -> std::result::Result<Bytes, ReadError> {
    let mut file = File::open(path).map_err(ReadError::Io)?;
    let mut buf = Vec::with_capacity(file_len as usize);
    file.read_to_end(&mut buf).map_err(ReadError::Io)?;
    let h = decode_header(&buf).map_err(ReadError::Corrupt)?;
    if *h.object != *key.object || h.index != key.index {
        return Err(ReadError::Corrupt(format!(
            "holds block {}#{}",
            h.object, h.index
        )));
    }
    if buf.len() as u64 != file_len || !fits(file_len, h.len, h.data_len) {
        return Err(ReadError::Corrupt(format!(
            "{} bytes, expected {file_len} ({} of header, {} of data)",
            buf.len(),
            h.len,
            h.data_len
        )));
    }
    let end = h.len + h.data_len as usize;
    if crc32c::crc32c(&buf[h.len..end]) != h.data_crc {
        return Err(ReadError::Corrupt("data checksum mismatch".into()));
    }
    // The padding is part of the file too: a flipped bit there is damage all the same.
    if buf[end..].iter().any(|b| *b != 0) {
        return Err(ReadError::Corrupt(
            "padding after the data is not zero".into(),
        ));
    }
    Ok(Bytes::from(buf).slice(h.len..end))
}

/// Reads just the header of a block file.
fn read_header(path: &Path) -> std::result::Result<Header, String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; FIXED];
    file.read_exact(&mut buf)
        .map_err(|_| "shorter than a block header".to_string())?;
    let n = header_object_len(&buf)?;
    buf.resize(HEADER_OVERHEAD + n, 0);
    file.read_exact(&mut buf[FIXED..])
        .map_err(|_| "shorter than its header".to_string())?;
    decode_header(&buf)
}

fn encode_index(entries: &[(BlockKey, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        24 + entries
            .iter()
            .map(|(k, _)| 20 + k.object.len())
            .sum::<usize>(),
    );
    out.extend_from_slice(&INDEX_MAGIC);
    out.extend_from_slice(&INDEX_VERSION.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (key, len) in entries {
        out.extend_from_slice(&(key.object.len() as u32).to_le_bytes());
        out.extend_from_slice(key.object.as_bytes());
        out.extend_from_slice(&key.index.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// (object, index, file length) in LRU order, oldest first.
fn decode_index(buf: &[u8]) -> std::result::Result<Vec<(String, u64, u64)>, String> {
    if buf.len() < 24 || buf[..8] != INDEX_MAGIC {
        return Err("not an index file".into());
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().unwrap_or_default()) {
        return Err("checksum mismatch".into());
    }
    let version = u32::from_le_bytes(body[8..12].try_into().unwrap_or_default());
    if version != INDEX_VERSION {
        return Err(format!("version {version}, expected {INDEX_VERSION}"));
    }
    let count = u64::from_le_bytes(body[12..20].try_into().unwrap_or_default());
    let mut at = 20;
    let mut take = |n: usize| -> std::result::Result<&[u8], String> {
        let s = body.get(at..at + n).ok_or("truncated")?;
        at += n;
        Ok(s)
    };
    let mut out = Vec::new();
    for _ in 0..count {
        let n = u32::from_le_bytes(take(4)?.try_into().unwrap_or_default()) as usize;
        let object = std::str::from_utf8(take(n)?)
            .map_err(|_| "object name is not UTF-8")?
            .to_string();
        let index = u64::from_le_bytes(take(8)?.try_into().unwrap_or_default());
        let len = u64::from_le_bytes(take(8)?.try_into().unwrap_or_default());
        out.push((object, index, len));
    }
    if at != body.len() {
        return Err("trailing bytes".into());
    }
    Ok(out)
}

struct Found {
    path: PathBuf,
    len: u64,
    mtime: SystemTime,
}

/// Makes `root` a tier of blocks of `block_size` bytes: blocks cut at another size, or at a
/// size not recorded, are deleted with the index, and the size is recorded before any block of
/// it is written. Returns how many block files were deleted.
fn claim_block_size(root: &Path, block_size: u64) -> Result<u64> {
    let marker = root.join(BLOCK_SIZE_FILE);
    let recorded = match fs::read_to_string(&marker) {
        Ok(text) => text.trim().parse::<u64>().ok(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(format!("reading {}", marker.display()), e)),
    };
    if recorded == Some(block_size) {
        return Ok(0);
    }
    let mut dropped = 0;
    let listing = |dir: &Path| {
        fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))
    };
    for entry in listing(root)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.len() == 2 && is_hex(&name) && entry.path().is_dir() {
            dropped += listing(&entry.path())?.flatten().count() as u64;
            fs::remove_dir_all(entry.path())
                .map_err(|e| Error::io(format!("removing {}", entry.path().display()), e))?;
        }
    }
    remove_quietly(&root.join(INDEX));
    if dropped > 0 {
        let was = recorded.map_or("an unrecorded size".to_string(), |b| format!("{b} bytes"));
        tracing::warn!(
            dir = %root.display(),
            "dropping {dropped} cached blocks cut at {was}: this tier now holds blocks of {block_size} bytes"
        );
    }
    let tmp = root.join(format!("{BLOCK_SIZE_FILE}.tmp"));
    fs::write(&tmp, format!("{block_size}\n"))
        .and_then(|()| File::open(&tmp)?.sync_all())
        .and_then(|()| fs::rename(&tmp, &marker))
        .map_err(|e| Error::io(format!("writing {}", marker.display()), e))?;
    Ok(dropped)
}

/// Builds the tier's state from the index and the files; see the module comment.
fn load(
    root: &Path,
    high_bytes: u64,
    low_bytes: u64,
    block_size: u64,
) -> Result<(State, OpenReport)> {
    let mut report = OpenReport {
        other_block_size: claim_block_size(root, block_size)?,
        ..OpenReport::default()
    };
    let index_path = root.join(INDEX);
    let listed = match fs::read(&index_path) {
        Ok(buf) => match decode_index(&buf) {
            Ok(entries) => {
                report.index_loaded = true;
                entries
            }
            Err(why) => {
                tracing::warn!(path = %index_path.display(), "ignoring the cache index ({why}); rebuilding from block headers");
                Vec::new()
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            tracing::warn!(path = %index_path.display(), "ignoring the cache index ({e}); rebuilding from block headers");
            Vec::new()
        }
    };

    // Every block file there is, by name; everything else goes.
    let mut files: HashMap<String, Found> = HashMap::new();
    let read_dir = |dir: &Path| {
        fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))
    };
    for entry in read_dir(root)? {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", root.display()), e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir && name.len() == 2 && is_hex(&name) {
            for sub in read_dir(&path)? {
                let sub = sub.map_err(|e| Error::io(format!("listing {}", path.display()), e))?;
                let file_name = sub.file_name().to_string_lossy().into_owned();
                let file_path = sub.path();
                let meta = match sub.metadata() {
                    Ok(m) if m.is_file() => m,
                    _ => continue,
                };
                if file_name.len() == 32 && is_hex(&file_name) && file_name.starts_with(&name) {
                    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    files.insert(
                        file_name,
                        Found {
                            path: file_path,
                            len: meta.len(),
                            mtime,
                        },
                    );
                } else {
                    remove_quietly(&file_path);
                    report.removed += 1;
                }
            }
        } else if name.starts_with(&format!("{INDEX}.tmp.")) {
            remove_quietly(&path);
        }
    }

    let mut state = State {
        lru: LruCache::unbounded(),
        used: 0,
        next_gen: 0,
    };
    let mut names: HashMap<String, Arc<str>> = HashMap::new();
    let mut intern = |s: String| -> Arc<str> {
        names
            .entry(s)
            .or_insert_with_key(|s| Arc::from(s.as_str()))
            .clone()
    };
    for (object, index, len) in listed {
        let key = BlockKey {
            object: intern(object),
            index,
        };
        let hex = key.hash_hex();
        if files.get(&hex).is_some_and(|f| f.len == len) && !state.lru.contains(&key) {
            files.remove(&hex);
            state.add(key, len);
            report.from_index += 1;
        } else {
            report.stale += 1;
        }
    }

    // Block files the index does not list: from their headers, oldest first, so that the
    // newest end up most recently used.
    let mut rest: Vec<(String, Found)> = files.into_iter().collect();
    rest.sort_by_key(|(_, f)| f.mtime);
    for (name, found) in rest {
        let valid = read_header(&found.path).and_then(|h| {
            let key = BlockKey {
                object: intern(h.object),
                index: h.index,
            };
            if key.hash_hex() != name {
                return Err(format!("holds block {key}, which is not named so"));
            }
            if !fits(found.len, h.len, h.data_len) {
                return Err(format!(
                    "{} bytes, its header says {}",
                    found.len,
                    h.len as u64 + h.data_len
                ));
            }
            Ok(key)
        });
        match valid {
            Ok(key) => {
                state.add(key, found.len);
                report.from_headers += 1;
            }
            Err(why) => {
                tracing::info!(path = %found.path.display(), "removing a damaged cache file: {why}");
                remove_quietly(&found.path);
                report.removed += 1;
            }
        }
    }

    // A smaller quota than last time.
    if state.used > high_bytes {
        while state.used > low_bytes {
            let Some((key, e)) = state.lru.pop_lru() else {
                break;
            };
            state.used -= e.len;
            remove_quietly(&block_path(root, &key));
            report.evicted += 1;
        }
    }
    Ok((state, report))
}

fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
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
        assert!(tmp.path().join(SUBDIR).join(&hex[..2]).join(&hex).is_file());
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
}
