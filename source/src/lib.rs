//! Remote stores behind one trait: S3 (also Aliyun OSS and Ceph RGW), HDFS and a local
//! directory, bounded retries, and a tree walk. Paths are relative to the mount's root,
//! `/`-separated, without leading or trailing slash; `""` is the root itself.
//!
//! The data path (`fuse-cache`) reads blocks through it into [`BlockBuf`]s; the controller
//! walks a Dataset's mounts with it to count their files and bytes, without linking the data
//! path.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use fluid_volume::mountpoint::{MountPoint, Store};

mod buffer;
mod error;
pub mod hdfs;
pub mod local;
#[cfg(any(test, feature = "mock"))]
pub mod memory;
pub mod retry;
pub mod s3;
pub mod walk;

pub use buffer::{Backing, BlockBuf};
pub use error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

/// What the data path needs to know of an object or directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    /// Exact size in bytes (0 for directories).
    pub size: u64,
    pub mtime: SystemTime,
    /// The store's version tag (an S3 ETag) when it has one.
    pub etag: Option<String>,
}

impl Meta {
    pub fn dir(mtime: SystemTime) -> Self {
        Meta {
            kind: Kind::Dir,
            size: 0,
            mtime,
            etag: None,
        }
    }

    /// Names this version of the object: cache keys carry it, so a changed object never
    /// serves old blocks.
    pub fn version(&self) -> String {
        match &self.etag {
            Some(tag) => format!("e{}", tag.trim_matches('"')),
            None => {
                let nanos = self
                    .mtime
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO)
                    .as_nanos();
                format!("m{nanos}-{}", self.size)
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The last path component.
    pub name: String,
    pub meta: Meta,
}

/// One page of a directory listing; `next` resumes it.
#[derive(Debug, Default)]
pub struct Page {
    pub entries: Vec<Entry>,
    pub next: Option<String>,
}

#[async_trait]
pub trait Source: Send + Sync + 'static {
    /// The mount point URL, for messages (never carries credentials).
    fn name(&self) -> &str;

    /// Proves the store is reachable and the credentials work, for a clear error at mount time.
    /// By default: the mount's root exists and is a directory.
    async fn check(&self) -> Result<()> {
        match self.stat("").await? {
            Some(m) if m.kind == Kind::Dir => Ok(()),
            Some(_) => Err(Error::NotADirectory(self.name().to_string())),
            None => Err(Error::NotFound(self.name().to_string())),
        }
    }

    /// Attributes of `path`, `Ok(None)` when it does not exist.
    async fn stat(&self, path: &str) -> Result<Option<Meta>>;

    /// One page of the entries directly under `dir`, resumed from `token`. Sorted by name
    /// within a page is not required.
    async fn list(&self, dir: &str, token: Option<String>) -> Result<Page>;

    /// Fills `buf` from its start with `buf.capacity()` bytes of `path` from `offset` (fewer
    /// only at the end of the object). `meta` is the version the caller expects; a store that
    /// can check it fails with [`Error::Changed`]. The caller picks the buffer, so a block
    /// lands in the memory it is kept in (its own allocation, or its object's memory file)
    /// with one copy.
    async fn read_into(
        &self,
        path: &str,
        meta: &Meta,
        offset: u64,
        buf: &mut BlockBuf,
    ) -> Result<()>;

    /// Fills the buffers of `bufs` in turn with the bytes of `path` from `offset` on, handing
    /// each to `done` once full and taking it out of `bufs`; on an error, the buffers not
    /// handed over stay in `bufs`. A store that streams one request into them all overrides
    /// this; by default each is one [`Source::read_into`].
    async fn read_run(
        &self,
        path: &str,
        meta: &Meta,
        offset: u64,
        bufs: &mut VecDeque<BlockBuf>,
        done: &mut (dyn FnMut(BlockBuf) + Send),
    ) -> Result<()> {
        read_each(self, path, meta, offset, bufs, done).await
    }

    /// `len` bytes of `path` from `offset` (fewer only at the end of the object), in an
    /// allocation of their own.
    async fn read(&self, path: &str, meta: &Meta, offset: u64, len: u64) -> Result<Bytes> {
        let len = len.min(meta.size.saturating_sub(offset));
        let mut buf = BlockBuf::new(usize::try_from(len).unwrap_or(usize::MAX));
        self.read_into(path, meta, offset, &mut buf).await?;
        Ok(buf.freeze())
    }
}

/// [`Source::read_run`] as one [`Source::read_into`] per buffer.
pub async fn read_each<S: Source + ?Sized>(
    source: &S,
    path: &str,
    meta: &Meta,
    mut offset: u64,
    bufs: &mut VecDeque<BlockBuf>,
    done: &mut (dyn FnMut(BlockBuf) + Send),
) -> Result<()> {
    while let Some(buf) = bufs.front_mut() {
        source.read_into(path, meta, offset, buf).await?;
        if buf.filled() < buf.capacity() {
            return Err(Error::Changed(path.to_string()));
        }
        offset += buf.capacity() as u64;
        if let Some(buf) = bufs.pop_front() {
            done(buf);
        }
    }
    Ok(())
}

/// Opens the store of a mount point, wrapped in bounded retries.
pub async fn open(mp: &MountPoint) -> Result<Arc<dyn Source>> {
    let inner: Arc<dyn Source> = match &mp.store {
        Store::S3 { .. } => Arc::new(s3::S3Source::new(mp).await?),
        Store::Hdfs { .. } => Arc::new(hdfs::HdfsSource::new(mp)?),
        Store::Local { root } => Arc::new(local::LocalSource::new(root.clone(), &mp.url)),
    };
    Ok(Arc::new(retry::Retrying::new(
        inner,
        retry::Policy::default(),
    )))
}

/// Joins a directory path and a name the way every source names children.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Refuses path components that would escape a source root.
pub fn check_relative(path: &str) -> Result<()> {
    if path.starts_with('/') || path.split('/').any(|c| c == ".." || c == ".") {
        return Err(Error::invalid(
            "path",
            format!("{path:?} is not a clean relative path"),
        ));
    }
    Ok(())
}
