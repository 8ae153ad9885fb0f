//! An in-memory store for unit tests of what reads through a [`Source`] (the reader, the
//! cache, the FUSE adapter, peers): objects put by the test, every request counted, and faults
//! injected on the requests the test picks (latency, errors, short reads, wrong bytes). Built
//! with the `mock` feature only; integration tests use the real servers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{BlockBuf, Entry, Error, Kind, Meta, Page, Result, Source, check_relative, join};

/// The kinds of request a [`MemorySource`] counts and can fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Stat,
    List,
    Read,
}

/// What an injected fault does to a request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Waits this long, then answers as usual.
    Delay(Duration),
    /// Never answers (the caller's timeout must end it).
    Hang,
    /// Fails as a store that cannot be reached (retryable).
    Unavailable,
    /// Fails as a store that refuses the credentials.
    Denied,
    /// A read delivers only this many bytes.
    Short(usize),
    /// A read delivers the right number of bytes, every one of them flipped.
    WrongBytes,
}

/// A fault for the next `times` requests of one kind (touching `path`, when given).
struct Armed {
    op: Op,
    path: Option<String>,
    fault: Fault,
    times: u64,
}

struct Object {
    data: Bytes,
    mtime: SystemTime,
}

/// See the module notes.
pub struct MemorySource {
    name: String,
    objects: Mutex<BTreeMap<String, Object>>,
    faults: Mutex<VecDeque<Armed>>,
    page_size: usize,
    stats: AtomicU64,
    lists: AtomicU64,
    reads: AtomicU64,
    bytes_read: AtomicU64,
}

impl MemorySource {
    /// An empty store named `name` (as a mount point URL, for messages).
    pub fn new(name: &str) -> MemorySource {
        MemorySource {
            name: name.to_string(),
            objects: Mutex::default(),
            faults: Mutex::default(),
            page_size: 1000,
            stats: AtomicU64::new(0),
            lists: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
        }
    }

    /// Listings return pages of at most `n` entries.
    pub fn with_page_size(mut self, n: usize) -> MemorySource {
        self.page_size = n.max(1);
        self
    }

    /// Puts (or replaces, as a new version) the object at `path`; its directories exist from
    /// then on.
    pub fn put(&self, path: &str, data: impl Into<Bytes>) {
        let mut objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        // A replaced object is a new version even within the clock's resolution.
        let mtime = objects
            .get(path)
            .map(|o| o.mtime + Duration::from_nanos(1))
            .unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        objects.insert(
            path.to_string(),
            Object {
                data: data.into(),
                mtime,
            },
        );
    }

    pub fn remove(&self, path: &str) {
        self.lock_objects().remove(path);
    }

    /// Makes the next `times` requests of kind `op` fail or misbehave as `fault` says (in the
    /// order armed, one fault per request).
    pub fn inject(&self, op: Op, fault: Fault, times: u64) {
        self.arm(op, None, fault, times);
    }

    /// [`Self::inject`] for the requests that touch `path` only.
    pub fn inject_at(&self, op: Op, path: &str, fault: Fault, times: u64) {
        self.arm(op, Some(path.to_string()), fault, times);
    }

    /// How many requests of kind `op` were made (faulted ones included).
    pub fn requests(&self, op: Op) -> u64 {
        self.counter(op).load(Ordering::SeqCst)
    }

    /// Bytes delivered by reads.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::SeqCst)
    }

    fn arm(&self, op: Op, path: Option<String>, fault: Fault, times: u64) {
        if times > 0 {
            self.faults
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(Armed {
                    op,
                    path,
                    fault,
                    times,
                });
        }
    }

    fn lock_objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Object>> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn counter(&self, op: Op) -> &AtomicU64 {
        match op {
            Op::Stat => &self.stats,
            Op::List => &self.lists,
            Op::Read => &self.reads,
        }
    }

    /// Counts the request and takes the fault armed for it, if any.
    fn take_fault(&self, op: Op, path: &str) -> Option<Fault> {
        self.counter(op).fetch_add(1, Ordering::SeqCst);
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let i = faults
            .iter()
            .position(|a| a.op == op && a.path.as_deref().is_none_or(|p| p == path))?;
        let armed = &mut faults[i];
        armed.times -= 1;
        let fault = armed.fault.clone();
        if armed.times == 0 {
            faults.remove(i);
        }
        Some(fault)
    }

    /// Applies the faults every kind of request shares; the rest are the caller's.
    async fn apply(&self, fault: &Option<Fault>, path: &str) -> Result<()> {
        match fault {
            Some(Fault::Delay(d)) => tokio::time::sleep(*d).await,
            Some(Fault::Hang) => std::future::pending::<()>().await,
            Some(Fault::Unavailable) => {
                return Err(Error::unavailable(
                    &self.name,
                    format!("{path}: injected outage"),
                ));
            }
            Some(Fault::Denied) => {
                return Err(Error::Denied {
                    source_name: self.name.clone(),
                    message: format!("{path}: injected refusal"),
                });
            }
            _ => {}
        }
        Ok(())
    }

    fn meta_of(&self, path: &str) -> Option<Meta> {
        let objects = self.lock_objects();
        if let Some(o) = objects.get(path) {
            return Some(Meta {
                kind: Kind::File,
                size: o.data.len() as u64,
                mtime: o.mtime,
                etag: None,
            });
        }
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let is_dir = path.is_empty()
            || objects
                .range(prefix.clone()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&prefix));
        is_dir.then(|| Meta::dir(SystemTime::UNIX_EPOCH))
    }
}

#[async_trait]
impl Source for MemorySource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn stat(&self, path: &str) -> Result<Option<Meta>> {
        check_relative(path)?;
        let fault = self.take_fault(Op::Stat, path);
        self.apply(&fault, path).await?;
        Ok(self.meta_of(path))
    }

    async fn list(&self, dir: &str, token: Option<String>) -> Result<Page> {
        check_relative(dir)?;
        let fault = self.take_fault(Op::List, dir);
        self.apply(&fault, dir).await?;
        match self.meta_of(dir) {
            Some(m) if m.kind == Kind::Dir => {}
            Some(_) => return Err(Error::NotADirectory(join(&self.name, dir))),
            None => return Err(Error::NotFound(join(&self.name, dir))),
        }
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        // The names directly under `dir`, each once, in order.
        let names: Vec<String> = {
            let objects = self.lock_objects();
            let mut names: Vec<String> = objects
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .filter_map(|(k, _)| k[prefix.len()..].split('/').next().map(str::to_string))
                .collect();
            names.dedup();
            names
        };
        let start = match &token {
            Some(after) => names.partition_point(|n| n <= after),
            None => 0,
        };
        let page: Vec<String> = names[start..]
            .iter()
            .take(self.page_size)
            .cloned()
            .collect();
        let next = (start + page.len() < names.len())
            .then(|| page.last().cloned())
            .flatten();
        let entries = page
            .into_iter()
            .filter_map(|name| {
                let meta = self.meta_of(&join(dir, &name))?;
                Some(Entry { name, meta })
            })
            .collect();
        Ok(Page { entries, next })
    }

    async fn read_into(
        &self,
        path: &str,
        meta: &Meta,
        offset: u64,
        buf: &mut BlockBuf,
    ) -> Result<()> {
        check_relative(path)?;
        let fault = self.take_fault(Op::Read, path);
        self.apply(&fault, path).await?;
        buf.clear();
        let data = {
            let objects = self.lock_objects();
            let Some(o) = objects.get(path) else {
                return Err(Error::NotFound(join(&self.name, path)));
            };
            if o.mtime != meta.mtime || o.data.len() as u64 != meta.size {
                return Err(Error::Changed(join(&self.name, path)));
            }
            o.data.clone()
        };
        let from = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let to = from.saturating_add(buf.capacity()).min(data.len());
        let mut bytes = data[from..to].to_vec();
        match fault {
            Some(Fault::Short(n)) => bytes.truncate(n),
            Some(Fault::WrongBytes) => bytes.iter_mut().for_each(|b| *b = !*b),
            _ => {}
        }
        buf.push(&bytes);
        self.bytes_read
            .fetch_add(bytes.len() as u64, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> MemorySource {
        let s = MemorySource::new("mem://test").with_page_size(2);
        s.put("a/x", vec![1u8; 10]);
        s.put("a/y", vec![2u8; 5]);
        s.put("a/sub/z", vec![3u8; 3]);
        s.put("b", vec![4u8; 4]);
        s
    }

    async fn read(s: &MemorySource, path: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let meta = s.stat(path).await?.expect("exists");
        let mut buf = BlockBuf::new(len);
        s.read_into(path, &meta, offset, &mut buf).await?;
        Ok(buf.as_ref().to_vec())
    }

    #[tokio::test]
    async fn stats_lists_in_pages_and_reads_ranges() {
        let s = store();
        assert_eq!(s.stat("a").await.unwrap().unwrap().kind, Kind::Dir);
        assert_eq!(s.stat("a/x").await.unwrap().unwrap().size, 10);
        assert_eq!(s.stat("nope").await.unwrap(), None);
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let page = s.list("a", token).await.unwrap();
            assert!(page.entries.len() <= 2);
            names.extend(page.entries.into_iter().map(|e| e.name));
            token = page.next;
            if token.is_none() {
                break;
            }
        }
        assert_eq!(names, ["sub", "x", "y"]);
        assert_eq!(read(&s, "a/x", 8, 4).await.unwrap(), [1, 1]);
        assert_eq!(s.requests(Op::List), 2);
        assert_eq!(s.bytes_read(), 2);
    }

    #[tokio::test]
    async fn faults_hit_the_requests_they_are_armed_for_then_stop() {
        let s = store();
        s.inject_at(Op::Read, "b", Fault::Unavailable, 1);
        s.inject(Op::Read, Fault::Short(1), 1);
        // The path-bound fault skips other paths.
        assert_eq!(read(&s, "a/y", 0, 5).await.unwrap(), [2]);
        let err = read(&s, "b", 0, 4).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert_eq!(read(&s, "b", 0, 4).await.unwrap(), [4; 4]);
        s.inject(Op::Read, Fault::WrongBytes, 1);
        assert_eq!(read(&s, "b", 0, 4).await.unwrap(), [!4u8; 4]);
        s.inject(Op::Stat, Fault::Denied, 1);
        assert!(matches!(s.stat("b").await, Err(Error::Denied { .. })));
        s.inject(Op::Read, Fault::Hang, 1);
        let meta = s.stat("b").await.unwrap().unwrap();
        let mut buf = BlockBuf::new(4);
        let hung = tokio::time::timeout(
            Duration::from_millis(50),
            s.read_into("b", &meta, 0, &mut buf),
        );
        assert!(hung.await.is_err());
        assert_eq!(s.requests(Op::Read), 5);
    }

    #[tokio::test]
    async fn a_replaced_object_fails_reads_of_the_old_version() {
        let s = store();
        let old = s.stat("b").await.unwrap().unwrap();
        s.put("b", vec![5u8; 4]);
        let mut buf = BlockBuf::new(4);
        let err = s.read_into("b", &old, 0, &mut buf).await.unwrap_err();
        assert!(matches!(err, Error::Changed(_)), "{err}");
        assert_ne!(s.stat("b").await.unwrap().unwrap().version(), old.version());
    }
}
