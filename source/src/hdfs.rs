//! HDFS as a source, over the pure-Rust `hdfs-native` client (no JVM, no libhdfs).
//!
//! Paging: the NameNode lists a directory in batches (`getListing` with `startAfter`, sorted by
//! name bytes compared as Java's *signed* bytes), but hdfs-native keeps `startAfter` private
//! behind its lazy `ListStatusIterator`. So a page's token is the last name it returned, and
//! the iterator that produced it is parked under (directory, token): the usual reader, which
//! asks for the next page at once, resumes the same NameNode cursor at no extra cost. When the
//! cursor is gone (evicted, timed out, another process), a fresh listing skips every name up to
//! the token in the NameNode's own order, which is exactly what `startAfter` would have done,
//! at the price of re-reading the skipped batches.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use hdfs_native::client::{FileStatus, ListStatusIterator};
use hdfs_native::{Client, ClientBuilder, HdfsError};

use crate::BlockBuf;
use crate::{Entry, Kind, Meta, Page, Source, check_relative};
use crate::{Error, Result};
use fluid_volume::mountpoint::{MountPoint, Store};
use fluid_volume::options;

/// Entries a listing page returns (the NameNode's own default batch, `dfs.ls.limit`).
const PAGE_SIZE: usize = 1000;
/// Bound of any one call, so a dead NameNode or DataNode cannot hang a reader even without
/// the retry wrapper (which cuts attempts shorter).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Parked listing cursors: enough for many concurrent `ls` of big directories.
const MAX_CURSORS: usize = 64;
/// A cursor not resumed for this long is dropped (its reader went away).
const CURSOR_IDLE: Duration = Duration::from_secs(120);
/// hdfs-native's defaults retry a dead NameNode 15 times for minutes; our retry policy does
/// the retrying, so the client only fails over enough to find the active NameNode of a pair.
const CLIENT_DEFAULTS: &[(&str, &str)] = &[
    ("dfs.client.failover.max.attempts", "3"),
    ("dfs.client.failover.sleep.base.millis", "100"),
    ("dfs.client.failover.sleep.max.millis", "1000"),
    ("dfs.client.socket-timeout", "20000"),
];

/// A listing in progress, parked between two pages.
struct Cursor {
    iter: ListStatusIterator,
    /// The first entry of the next page, read to learn that there is a next page.
    peeked: FileStatus,
    parked: Instant,
}

pub struct HdfsSource {
    client: Client,
    /// Absolute HDFS path of the mount's root, without trailing slash except for "/".
    root: String,
    name: String,
    cursors: Mutex<HashMap<(String, String), Cursor>>,
}

impl HdfsSource {
    pub fn new(mp: &MountPoint) -> Result<Self> {
        let Store::Hdfs { namenode, path } = &mp.store else {
            return Err(Error::invalid(
                "mountPoint",
                format!("{}: not an hdfs:// URL", mp.url),
            ));
        };
        let mut config: BTreeMap<String, String> = CLIENT_DEFAULTS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // Hadoop settings given as mount options (HA name services, timeouts) win.
        config.extend(
            mp.options
                .iter()
                .filter(|(k, _)| options::hdfs::is_passthrough(k))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let mut builder = ClientBuilder::new()
            .with_url(namenode.as_str())
            .with_config(config);
        if let Some(user) = mp.option(&options::hdfs::USER) {
            builder = builder.with_user(user);
        }
        let client = builder
            .build()
            .map_err(|e| Error::invalid("mountPoint", format!("{}: {e}", mp.url)))?;
        Ok(HdfsSource {
            client,
            root: path.clone(),
            name: mp.url.clone(),
            cursors: Mutex::new(HashMap::new()),
        })
    }

    /// The absolute HDFS path of a relative path.
    fn full(&self, path: &str) -> Result<String> {
        check_relative(path)?;
        Ok(match (self.root.as_str(), path) {
            (root, "") => root.to_string(),
            ("/", p) => format!("/{p}"),
            (root, p) => format!("{root}/{p}"),
        })
    }

    fn shown(&self, path: &str) -> String {
        if path.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{path}", self.name.trim_end_matches('/'))
        }
    }

    /// Runs one client call under [`CALL_TIMEOUT`], mapping its errors for `path`.
    async fn call<T>(
        &self,
        path: &str,
        fut: impl Future<Output = Result<T, HdfsError>>,
    ) -> Result<T> {
        match tokio::time::timeout(CALL_TIMEOUT, fut).await {
            Ok(res) => res.map_err(|e| self.error(path, e)),
            Err(_) => Err(self.unavailable(path, format!("no answer within {CALL_TIMEOUT:?}"))),
        }
    }

    fn unavailable(&self, path: &str, message: impl std::fmt::Display) -> Error {
        Error::unavailable(self.name.clone(), about(path, message))
    }

    fn error(&self, path: &str, err: HdfsError) -> Error {
        let denied = |message: String| Error::Denied {
            source_name: self.name.clone(),
            message,
        };
        match err {
            HdfsError::FileNotFound(_) => Error::NotFound(self.shown(path)),
            HdfsError::IsADirectoryError(_) => Error::IsADirectory(self.shown(path)),
            HdfsError::RPCError(class, msg) | HdfsError::FatalRPCError(class, msg) => {
                let short = class
                    .rsplit(['.', '$'])
                    .next()
                    .unwrap_or(&class)
                    .to_string();
                match short.as_str() {
                    "FileNotFoundException" => Error::NotFound(self.shown(path)),
                    "ParentNotDirectoryException" => Error::NotADirectory(self.shown(path)),
                    "AccessControlException"
                    | "AuthorizationException"
                    | "InvalidToken"
                    | "SaslException"
                    | "GSSException" => {
                        denied(about(path, format!("{short}: {}", first_line(&msg))))
                    }
                    "StandbyException"
                    | "RetriableException"
                    | "SafeModeException"
                    | "ObserverRetryOnActiveException"
                    | "ConnectException"
                    | "SocketTimeoutException" => {
                        self.unavailable(path, format!("{short}: {}", first_line(&msg)))
                    }
                    _ => Error::io(
                        self.shown(path),
                        std::io::Error::other(format!("{class}: {}", first_line(&msg))),
                    ),
                }
            }
            HdfsError::SASLError(_) | HdfsError::GSSAPIError(..) | HdfsError::NoSASLMechanism => {
                denied(about(path, &err))
            }
            // The NameNode or a DataNode could not be reached or broke off; another try may
            // reach another replica.
            HdfsError::IOError(_)
            | HdfsError::DataTransferError(_)
            | HdfsError::ChecksumError
            | HdfsError::BlocksNotFound(_) => self.unavailable(path, &err),
            HdfsError::InvalidPath(_)
            | HdfsError::InvalidArgument(_)
            | HdfsError::UrlParseError(_) => {
                Error::invalid("path", format!("{}: {err}", self.shown(path)))
            }
            other => Error::io(self.shown(path), std::io::Error::other(other.to_string())),
        }
    }

    /// Takes the parked cursor that ends at `token` in `dir`, dropping stale ones on the way.
    fn take_cursor(&self, dir: &str, token: &str) -> Option<Cursor> {
        let mut cursors = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
        cursors.retain(|_, c| c.parked.elapsed() < CURSOR_IDLE);
        cursors.remove(&(dir.to_string(), token.to_string()))
    }

    fn park_cursor(&self, dir: &str, token: &str, cursor: Cursor) {
        let mut cursors = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
        if cursors.len() >= MAX_CURSORS {
            let oldest = cursors
                .iter()
                .min_by_key(|(_, c)| c.parked)
                .map(|(k, _)| k.clone());
            if let Some(key) = oldest {
                cursors.remove(&key);
            }
        }
        cursors.insert((dir.to_string(), token.to_string()), cursor);
    }

    /// Reads one page from `iter`, starting with `first` when a parked cursor supplied it;
    /// returns the page and the entry after it, if any.
    async fn read_page(
        &self,
        dir: &str,
        full: &str,
        iter: &ListStatusIterator,
        mut first: Option<FileStatus>,
        after: Option<&str>,
    ) -> Result<(Vec<Entry>, Option<FileStatus>)> {
        let mut entries = Vec::new();
        loop {
            let status = match first.take() {
                Some(s) => s,
                None => match iter.next().await {
                    Some(res) => res.map_err(|e| self.error(dir, e))?,
                    None => return Ok((entries, None)),
                },
            };
            // Listing a file yields the file itself, under its own path.
            if status.path.trim_end_matches('/') == full.trim_end_matches('/') && !status.isdir {
                return Err(Error::NotADirectory(self.shown(dir)));
            }
            let name = status
                .path
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            if after.is_some_and(|a| namenode_order(&name, a) != Ordering::Greater)
                || name.is_empty()
            {
                continue;
            }
            if entries.len() == PAGE_SIZE {
                return Ok((entries, Some(status)));
            }
            entries.push(Entry {
                name,
                meta: meta_of(&status),
            });
        }
    }
}

/// The NameNode's order of names: their UTF-8 bytes compared as Java's signed bytes, so every
/// non-ASCII name sorts before every ASCII one.
fn namenode_order(a: &str, b: &str) -> Ordering {
    a.bytes().map(|x| x as i8).cmp(b.bytes().map(|x| x as i8))
}

/// `message` about `path`; the mount URL leads every message already.
fn about(path: &str, message: impl std::fmt::Display) -> String {
    if path.is_empty() {
        message.to_string()
    } else {
        format!("{path:?}: {message}")
    }
}

fn first_line(msg: &str) -> &str {
    msg.lines().next().unwrap_or_default()
}

fn mtime_of(status: &FileStatus) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(status.modification_time)
}

fn meta_of(status: &FileStatus) -> Meta {
    let mtime = mtime_of(status);
    if status.isdir {
        Meta::dir(mtime)
    } else {
        Meta {
            kind: Kind::File,
            size: status.length as u64,
            mtime,
            etag: None,
        }
    }
}

#[async_trait]
impl Source for HdfsSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn stat(&self, path: &str) -> Result<Option<Meta>> {
        let full = self.full(path)?;
        match self.call(path, self.client.get_file_info(&full)).await {
            Ok(status) => Ok(Some(meta_of(&status))),
            Err(Error::NotFound(_) | Error::NotADirectory(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn list(&self, dir: &str, token: Option<String>) -> Result<Page> {
        let full = self.full(dir)?;
        let parked = token.as_deref().and_then(|t| self.take_cursor(dir, t));
        let (iter, first, after) = match parked {
            Some(c) => (c.iter, Some(c.peeked), None),
            // No cursor: a fresh listing that skips what earlier pages returned.
            None => (
                self.client.list_status_iter(&full, false),
                None,
                token.as_deref(),
            ),
        };
        let (entries, peeked) = match tokio::time::timeout(
            CALL_TIMEOUT,
            self.read_page(dir, &full, &iter, first, after),
        )
        .await
        {
            Ok(res) => res?,
            Err(_) => {
                return Err(
                    self.unavailable(dir, format!("listing: no answer within {CALL_TIMEOUT:?}"))
                );
            }
        };
        let next = match (peeked, entries.last()) {
            (Some(peeked), Some(last)) => {
                self.park_cursor(
                    dir,
                    &last.name,
                    Cursor {
                        iter,
                        peeked,
                        parked: Instant::now(),
                    },
                );
                Some(last.name.clone())
            }
            _ => None,
        };
        Ok(Page { entries, next })
    }

    async fn read_into(
        &self,
        path: &str,
        meta: &Meta,
        offset: u64,
        buf: &mut BlockBuf,
    ) -> Result<()> {
        let full = self.full(path)?;
        buf.clear();
        let len = buf.capacity() as u64;
        if len == 0 || offset >= meta.size {
            return Ok(());
        }
        let end = offset.saturating_add(len).min(meta.size);
        let want = (end - offset) as usize;
        let changed = || Error::Changed(self.shown(path));
        let reader = self.call(path, self.client.read(&full)).await?;
        // read_range panics past the end: only a file of the expected length is read.
        if reader.file_length() as u64 != meta.size {
            return Err(changed());
        }
        self.call(
            path,
            reader.read_range_buf(&mut buf.as_mut_slice()[..want], offset as usize),
        )
        .await?;
        // HDFS has no version tag. A rewrite of the same length shows in the modification
        // time; checked after the read, so bytes of a file replaced meanwhile are refused.
        let now = self.call(path, self.client.get_file_info(&full)).await?;
        if now.length as u64 != meta.size || mtime_of(&now) != meta.mtime {
            return Err(changed());
        }
        buf.set_filled(want);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(url: &str) -> HdfsSource {
        HdfsSource::new(&MountPoint::parse(url, Default::default(), "mountPoint").unwrap()).unwrap()
    }

    #[test]
    fn full_paths() {
        let s = source("hdfs://127.0.0.1:9820/data/x");
        assert_eq!(s.full("").unwrap(), "/data/x");
        assert_eq!(s.full("a/b c").unwrap(), "/data/x/a/b c");
        assert!(s.full("../etc").is_err());
        let root = source("hdfs://127.0.0.1:9820");
        assert_eq!(root.full("").unwrap(), "/");
        assert_eq!(root.full("a").unwrap(), "/a");
        assert_eq!(root.shown("a"), "hdfs://127.0.0.1:9820/a");
    }

    #[test]
    fn names_sort_as_the_namenode_sorts_them() {
        // Java compares name bytes signed: UTF-8 lead bytes (>= 0x80) are negative.
        assert_eq!(namenode_order("ü", "a"), Ordering::Less);
        assert_eq!(namenode_order("Z", "a"), Ordering::Less);
        assert_eq!(namenode_order("a", "ab"), Ordering::Less);
        assert_eq!(namenode_order("a b", "a+b"), Ordering::Less);
        assert_eq!(namenode_order("x", "x"), Ordering::Equal);
    }

    #[test]
    fn maps_errors() {
        let s = source("hdfs://127.0.0.1:9820/d");
        let rpc = |class: &str| HdfsError::RPCError(class.into(), "msg\n\tat java.lang...".into());
        assert!(matches!(
            s.error("f", HdfsError::FileNotFound("x".into())),
            Error::NotFound(_)
        ));
        assert!(matches!(
            s.error("f", rpc("java.io.FileNotFoundException")),
            Error::NotFound(_)
        ));
        let denied = s.error(
            "f",
            rpc("org.apache.hadoop.security.AccessControlException"),
        );
        assert!(matches!(denied, Error::Denied { .. }), "{denied}");
        assert!(!denied.to_string().contains("java.lang"), "{denied}");
        assert!(
            s.error("f", rpc("org.apache.hadoop.ipc.StandbyException"))
                .is_retryable()
        );
        let io = HdfsError::IOError(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(s.error("f", io).is_retryable());
        assert!(
            !s.error(
                "f",
                rpc("org.apache.hadoop.fs.PathIsNotEmptyDirectoryException")
            )
            .is_retryable()
        );
    }
}
