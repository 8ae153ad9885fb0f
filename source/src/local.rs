//! A POSIX directory as a source: the embedded default and the test oracle.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use crate::BlockBuf;
use crate::{Entry, Kind, Meta, Page, Source, check_relative};
use crate::{Error, Result};

/// Entries a listing page returns, so huge directories stream.
const PAGE_SIZE: usize = 1000;

pub struct LocalSource {
    root: PathBuf,
    name: String,
}

impl LocalSource {
    pub fn new(root: PathBuf, url: &str) -> Self {
        LocalSource {
            root,
            name: url.to_string(),
        }
    }

    fn full(&self, path: &str) -> Result<PathBuf> {
        check_relative(path)?;
        Ok(if path.is_empty() {
            self.root.clone()
        } else {
            self.root.join(path)
        })
    }

    fn err(&self, path: &str, e: std::io::Error) -> Error {
        match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound(format!("{}/{path}", self.name)),
            std::io::ErrorKind::PermissionDenied => Error::Denied {
                source_name: self.name.clone(),
                message: format!("{path}: {e}"),
            },
            _ => Error::io(format!("{}/{path}", self.name), e),
        }
    }
}

fn meta_of(m: &std::fs::Metadata) -> Meta {
    let mtime = m.modified().unwrap_or(std::time::UNIX_EPOCH);
    if m.is_dir() {
        Meta::dir(mtime)
    } else {
        Meta {
            kind: Kind::File,
            size: m.len(),
            mtime,
            etag: None,
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::io("local source task", std::io::Error::other(e)))?
}

#[async_trait]
impl Source for LocalSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn stat(&self, path: &str) -> Result<Option<Meta>> {
        let full = self.full(path)?;
        match std::fs::metadata(&full) {
            Ok(m) => Ok(Some(meta_of(&m))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
            Err(e) => Err(self.err(path, e)),
        }
    }

    async fn list(&self, dir: &str, token: Option<String>) -> Result<Page> {
        let full = self.full(dir)?;
        let after = token.unwrap_or_default();
        let name = self.name.clone();
        let dir_s = dir.to_string();
        let res = blocking(move || {
            // Sorted names make the token (the last name returned) a stable resume point.
            let mut names: Vec<String> = std::fs::read_dir(&full)
                .map_err(|e| Error::io(format!("{name}/{dir_s}"), e))?
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.as_str() > after.as_str())
                .collect();
            names.sort_unstable();
            let more = names.len() > PAGE_SIZE;
            names.truncate(PAGE_SIZE);
            let mut entries = Vec::with_capacity(names.len());
            for n in names {
                // An entry removed between readdir and stat is simply skipped.
                if let Ok(m) = std::fs::metadata(full.join(&n)) {
                    entries.push(Entry {
                        name: n,
                        meta: meta_of(&m),
                    });
                }
            }
            let next = if more {
                entries.last().map(|e| e.name.clone())
            } else {
                None
            };
            Ok(Page { entries, next })
        })
        .await;
        res.map_err(|e| match e {
            Error::Io { source, .. } => self.err(dir, source),
            other => other,
        })
    }

    async fn read_into(
        &self,
        path: &str,
        meta: &Meta,
        offset: u64,
        buf: &mut BlockBuf,
    ) -> Result<()> {
        let full = self.full(path)?;
        let expect = meta.clone();
        let shown = format!("{}/{path}", self.name);
        let len = buf.capacity();
        // The blocking read cannot borrow `buf` (a timed-out try would leave it lent), so it
        // reads into memory of its own and this copies: local files are the demo and test
        // source, not the fast path.
        let data = blocking(move || read_range(&full, &expect, offset, len, &shown)).await?;
        buf.clear();
        buf.push(&data);
        Ok(())
    }
}

fn read_range(full: &Path, expect: &Meta, offset: u64, len: usize, shown: &str) -> Result<Bytes> {
    let mut f = std::fs::File::open(full).map_err(|e| Error::io(shown, e))?;
    let now = meta_of(&f.metadata().map_err(|e| Error::io(shown, e))?);
    if now.size != expect.size || now.mtime != expect.mtime {
        return Err(Error::Changed(shown.to_string()));
    }
    let len = (len as u64).min(now.size.saturating_sub(offset)) as usize;
    let mut buf = BlockBuf::new(len);
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| Error::io(shown, e))?;
    f.read_exact(buf.as_mut_slice())
        .map_err(|e| Error::io(shown, e))?;
    buf.set_filled(len);
    Ok(buf.freeze())
}
