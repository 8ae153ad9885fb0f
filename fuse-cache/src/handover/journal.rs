//! The hand-over journal: what a successor serving process needs to take over a live FUSE
//! connection. The kernel sends INIT once per connection and keeps using the node ids and file
//! handles it was given, so they must mean the same to whoever serves next. Every record is
//! written (one `write(2)`) before the reply that hands its id to the kernel, so a serving
//! process killed at any instant leaves a journal that covers every id the kernel holds.
//!
//! The journal is a memory file owned by the keeper (`keeper.rs`) and inherited by each
//! serving process; it lives as long as the mount, and nothing of it is left on disk.
//! Layout: a 16-byte header (magic, then the offset where replay starts), then records:
//! `len: u32` then `tag: u8` and the fields, little-endian. A record cut short by a kill
//! mid-write is dropped on replay (its reply was never sent). Compaction appends a snapshot
//! of what is live, moves the start to it, and punches the old records out of memory, so the
//! journal stays in proportion to what the kernel holds (forgotten nodes leave it).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::lock;
use fluid_source::{Kind, Meta};

const MAGIC: &[u8; 8] = b"FLUIDJ01";
const HEADER_LEN: u64 = 16;
/// A journal is compacted once its records take this much and four times what is live.
pub const COMPACT_FROM: u64 = 16 << 20;

const TAG_INIT: u8 = 1;
const TAG_NODE: u8 = 2;
const TAG_FORGET: u8 = 3;
const TAG_OPEN: u8 = 4;
const TAG_RELEASE: u8 = 5;

/// What the INIT handshake settled (see `fuser::Negotiated`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitRecord {
    pub abi_major: u32,
    pub abi_minor: u32,
    pub kernel_capabilities: u64,
    pub granted: u64,
    pub max_readahead: u32,
}

/// Where a node's data lives, as the journal spells it: most nodes are their parent's
/// path plus their name, which is not written out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeLocation {
    Virtual,
    /// The parent's mount, at the parent's path joined with the name.
    BelowParent,
    InMount {
        mount: u32,
        path: String,
    },
}

/// A node id handed to the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    pub ino: u64,
    pub parent: u64,
    pub name: String,
    pub location: NodeLocation,
    pub meta: Meta,
}

/// A file handle handed to the kernel: the inode and the object version it opened, and the
/// kernel's backing id when it was opened in passthrough mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenRecord {
    pub fh: u64,
    pub ino: u64,
    pub meta: Meta,
    pub backing: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Init(InitRecord),
    Node(NodeRecord),
    Forget(u64),
    Open(OpenRecord),
    Release(u64),
}

/// The journal replayed: the state in force when the last serving process stopped.
#[derive(Debug, Default)]
pub struct Replayed {
    pub init: Option<InitRecord>,
    /// Live nodes in the order they were made (a parent before its children).
    pub nodes: Vec<NodeRecord>,
    /// Open file handles by handle.
    pub opens: HashMap<u64, OpenRecord>,
    /// Bytes of whole records; a torn tail past this is cut off.
    pub valid_len: u64,
}

pub struct Journal {
    file: File,
    /// Set after a failed write: the next serving process could not resolve everything, so
    /// the journal is emptied and no successor takes over (see [`Journal::append`]).
    broken: Mutex<Option<String>>,
    /// The INIT record, for snapshots.
    init: Mutex<Option<InitRecord>>,
}

impl Journal {
    /// A new, empty journal in memory (`memfd_create`), for the keeper.
    pub fn create() -> Result<OwnedFd> {
        let name = c"fluid-fuse-journal";
        // SAFETY: name is a valid NUL-terminated string; the flags are plain bits.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::io(
                "creating the hand-over journal (memfd_create)",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: fd was just returned by memfd_create and is owned by nobody else.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let file = File::from(fd);
        file.write_all_at(&header(HEADER_LEN), 0)
            .map_err(|e| Error::io("writing the hand-over journal's header", e))?;
        Ok(file.into())
    }

    /// The journal behind `fd` (inherited from the keeper).
    pub fn open(fd: OwnedFd) -> Journal {
        Journal {
            file: File::from(fd),
            broken: Mutex::new(None),
            init: Mutex::new(None),
        }
    }

    /// Reads every whole record from the start the header names; cuts off a torn tail so
    /// later appends follow whole ones. An emptied journal (a write failed) is an error: no
    /// successor can take over from it.
    pub fn replay(&self) -> Result<Replayed> {
        let start = self.start().ok_or_else(|| {
            Error::invalid(
                "the hand-over journal",
                "it is incomplete (a write to it failed): the connection cannot be taken over",
            )
        })?;
        // From the start on only: what a compaction left before it is a hole of zeros.
        let mut bytes = Vec::new();
        let mut f = &self.file;
        f.seek(SeekFrom::Start(start))
            .and_then(|_| f.read_to_end(&mut bytes))
            .map_err(|e| Error::io("reading the hand-over journal", e))?;
        let mut out = Replayed::default();
        let mut order: Vec<u64> = Vec::new();
        let mut nodes: HashMap<u64, NodeRecord> = HashMap::new();
        let mut pos = 0;
        while let Some((record, next)) = decode(&bytes, pos) {
            match record {
                Record::Init(i) => out.init = Some(i),
                Record::Node(n) => {
                    if !nodes.contains_key(&n.ino) {
                        order.push(n.ino);
                    }
                    nodes.insert(n.ino, n);
                }
                Record::Forget(ino) => {
                    nodes.remove(&ino);
                }
                Record::Open(o) => {
                    out.opens.insert(o.fh, o);
                }
                Record::Release(fh) => {
                    out.opens.remove(&fh);
                }
            }
            pos = next;
        }
        if pos < bytes.len() {
            tracing::warn!(
                "the hand-over journal ends in a torn record ({} bytes); dropped",
                bytes.len() - pos
            );
            self.file
                .set_len(start + pos as u64)
                .map_err(|e| Error::io("cutting the hand-over journal", e))?;
        }
        out.nodes = order
            .into_iter()
            .filter_map(|ino| nodes.remove(&ino))
            .collect();
        out.valid_len = start + pos as u64;
        *lock(&self.init) = out.init;
        Ok(out)
    }

    /// Appends records with one write at the end of the journal. A failure is logged once
    /// and marks the journal incomplete: the mount keeps working, but a crash is then
    /// recovered the old way (re-mount), not by hand-over.
    pub fn append(&self, records: &[Record]) {
        let mut buf = Vec::with_capacity(64 * records.len());
        for r in records {
            if let Record::Init(i) = r {
                *lock(&self.init) = Some(*i);
            }
            encode(r, &mut buf);
        }
        let mut broken = lock(&self.broken);
        if broken.is_some() {
            return;
        }
        // One writer at a time: the offset is read and advanced under the lock.
        let written = self
            .file
            .metadata()
            .and_then(|m| self.file.write_all_at(&buf, m.len()));
        if let Err(e) = written {
            tracing::warn!(
                "writing the hand-over journal failed ({e}); a crash of this process will end the mount's connection"
            );
            // Emptied, it cannot be mistaken for a whole one (see `replay`).
            let _ = self.file.set_len(0);
            *broken = Some(e.to_string());
        }
    }

    /// Whether every record since the start was written.
    pub fn is_complete(&self) -> bool {
        lock(&self.broken).is_none()
    }

    /// Where replay starts, from the header; `None` for an emptied or foreign file.
    fn start(&self) -> Option<u64> {
        let mut h = [0u8; HEADER_LEN as usize];
        self.file.read_exact_at(&mut h, 0).ok()?;
        let start = u64::from_le_bytes(h[8..16].try_into().ok()?);
        let len = self.file.metadata().ok()?.len();
        (h.starts_with(MAGIC) && (HEADER_LEN..=len).contains(&start)).then_some(start)
    }

    /// Bytes of records from the replay start on (what a successor reads).
    pub fn replay_bytes(&self) -> u64 {
        let len = self.file.metadata().map_or(0, |m| m.len());
        len.saturating_sub(self.start().unwrap_or(HEADER_LEN))
    }

    /// Replaces the records with `live` (the nodes, then the open files): written after the
    /// old ones, then made the start, then the old ones punched out of memory. The caller
    /// holds whatever keeps records from being appended meanwhile. A kill at any point leaves
    /// a journal that replays to the same state.
    pub fn compact(&self, live: impl IntoIterator<Item = Record>) {
        let init = *lock(&self.init);
        let Some(init) = init else { return };
        let mut buf = Vec::new();
        encode(&Record::Init(init), &mut buf);
        for r in live {
            encode(&r, &mut buf);
        }
        let broken = lock(&self.broken);
        if broken.is_some() {
            return;
        }
        let done = (|| -> std::io::Result<()> {
            let start = self.file.metadata()?.len();
            self.file.write_all_at(&buf, start)?;
            self.file.write_all_at(&header(start), 0)?;
            // SAFETY: fallocate on our own descriptor, within the file.
            let punched = unsafe {
                libc::fallocate(
                    self.file.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    HEADER_LEN as i64,
                    (start - HEADER_LEN) as i64,
                )
            };
            if punched != 0 {
                tracing::debug!(
                    "punching the journal's old records: {}",
                    std::io::Error::last_os_error()
                );
            }
            Ok(())
        })();
        match done {
            Ok(()) => tracing::debug!("compacted the hand-over journal to {} bytes", buf.len()),
            Err(e) => tracing::warn!("compacting the hand-over journal: {e}"),
        }
    }
}

fn header(start: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&start.to_le_bytes());
    h
}

fn put_str(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_meta(m: &Meta, out: &mut Vec<u8>) {
    out.push(match m.kind {
        Kind::File => 0,
        Kind::Dir => 1,
    });
    out.extend_from_slice(&m.size.to_le_bytes());
    let (secs, nanos) = match m.mtime.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => (-(e.duration().as_secs() as i64), 0),
    };
    out.extend_from_slice(&secs.to_le_bytes());
    out.extend_from_slice(&nanos.to_le_bytes());
    match &m.etag {
        Some(tag) => {
            out.push(1);
            put_str(tag, out);
        }
        None => out.push(0),
    }
}

pub fn encode(r: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    match r {
        Record::Init(i) => {
            out.push(TAG_INIT);
            out.extend_from_slice(&i.abi_major.to_le_bytes());
            out.extend_from_slice(&i.abi_minor.to_le_bytes());
            out.extend_from_slice(&i.kernel_capabilities.to_le_bytes());
            out.extend_from_slice(&i.granted.to_le_bytes());
            out.extend_from_slice(&i.max_readahead.to_le_bytes());
        }
        Record::Node(n) => {
            out.push(TAG_NODE);
            out.extend_from_slice(&n.ino.to_le_bytes());
            out.extend_from_slice(&n.parent.to_le_bytes());
            put_str(&n.name, out);
            match &n.location {
                NodeLocation::Virtual => out.push(0),
                NodeLocation::BelowParent => out.push(1),
                NodeLocation::InMount { mount, path } => {
                    out.push(2);
                    out.extend_from_slice(&mount.to_le_bytes());
                    put_str(path, out);
                }
            }
            put_meta(&n.meta, out);
        }
        Record::Forget(ino) => {
            out.push(TAG_FORGET);
            out.extend_from_slice(&ino.to_le_bytes());
        }
        Record::Open(o) => {
            out.push(TAG_OPEN);
            out.extend_from_slice(&o.fh.to_le_bytes());
            out.extend_from_slice(&o.ino.to_le_bytes());
            out.extend_from_slice(&o.backing.unwrap_or(0).to_le_bytes());
            put_meta(&o.meta, out);
        }
        Record::Release(fh) => {
            out.push(TAG_RELEASE);
            out.extend_from_slice(&fh.to_le_bytes());
        }
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// Reads fields off a record's body; `None` once it runs short.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take(8)?.try_into().ok().map(i64::from_le_bytes)
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn meta(&mut self) -> Option<Meta> {
        let kind = match self.u8()? {
            0 => Kind::File,
            _ => Kind::Dir,
        };
        let size = self.u64()?;
        let secs = self.i64()?;
        let nanos = self.u32()?;
        let mtime = if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::new(secs as u64, nanos)
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        };
        let etag = match self.u8()? {
            0 => None,
            _ => Some(self.str()?),
        };
        Some(Meta {
            kind,
            size,
            mtime,
            etag,
        })
    }
}

/// The record at `pos` and where the next one starts; `None` at the end or at a torn or
/// unreadable record.
pub fn decode(bytes: &[u8], pos: usize) -> Option<(Record, usize)> {
    let len = u32::from_le_bytes(bytes.get(pos..pos + 4)?.try_into().ok()?) as usize;
    let body = bytes.get(pos + 4..pos + 4 + len)?;
    let mut f = Fields(body);
    let record = match f.u8()? {
        TAG_INIT => Record::Init(InitRecord {
            abi_major: f.u32()?,
            abi_minor: f.u32()?,
            kernel_capabilities: f.u64()?,
            granted: f.u64()?,
            max_readahead: f.u32()?,
        }),
        TAG_NODE => {
            let ino = f.u64()?;
            let parent = f.u64()?;
            let name = f.str()?;
            let location = match f.u8()? {
                0 => NodeLocation::Virtual,
                1 => NodeLocation::BelowParent,
                _ => NodeLocation::InMount {
                    mount: f.u32()?,
                    path: f.str()?,
                },
            };
            Record::Node(NodeRecord {
                ino,
                parent,
                name,
                location,
                meta: f.meta()?,
            })
        }
        TAG_FORGET => Record::Forget(f.u64()?),
        TAG_OPEN => {
            let fh = f.u64()?;
            let ino = f.u64()?;
            let backing = Some(f.u32()?).filter(|b| *b != 0);
            Record::Open(OpenRecord {
                fh,
                ino,
                meta: f.meta()?,
                backing,
            })
        }
        TAG_RELEASE => Record::Release(f.u64()?),
        _ => return None,
    };
    Some((record, pos + 4 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(size: u64, etag: Option<&str>) -> Meta {
        Meta {
            kind: Kind::File,
            size,
            mtime: SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123),
            etag: etag.map(str::to_string),
        }
    }

    fn init() -> InitRecord {
        InitRecord {
            abi_major: 7,
            abi_minor: 41,
            kernel_capabilities: 1 << 39 | 1 << 37,
            granted: 1 << 37,
            max_readahead: 1 << 20,
        }
    }

    fn node(ino: u64, parent: u64, name: &str) -> NodeRecord {
        NodeRecord {
            ino,
            parent,
            name: name.into(),
            location: NodeLocation::BelowParent,
            meta: meta(ino * 10, Some("\"abc\"")),
        }
    }

    #[test]
    fn records_survive_a_round_trip_and_replay_keeps_what_is_live() {
        let j = Journal::open(Journal::create().unwrap());
        let init = init();
        let mount_root = NodeRecord {
            location: NodeLocation::InMount {
                mount: 1,
                path: String::new(),
            },
            ..node(2, 1, "m1")
        };
        j.append(&[Record::Init(init), Record::Node(mount_root.clone())]);
        j.append(&[Record::Node(node(3, 2, "a")), Record::Node(node(4, 2, "b"))]);
        let open = OpenRecord {
            fh: 9,
            ino: 3,
            meta: meta(30, None),
            backing: Some(5),
        };
        j.append(&[
            Record::Open(open.clone()),
            Record::Open(OpenRecord {
                fh: 10,
                backing: None,
                ..open.clone()
            }),
            Record::Release(10),
            Record::Forget(4),
        ]);
        let r = j.replay().unwrap();
        assert_eq!(r.init, Some(init));
        assert_eq!(r.nodes, vec![mount_root, node(3, 2, "a")]);
        assert_eq!(r.opens.len(), 1);
        assert_eq!(r.opens[&9], open);
        assert!(j.is_complete());
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_appends_follow_whole_ones() {
        let j = Journal::open(Journal::create().unwrap());
        j.append(&[Record::Node(node(2, 1, "a"))]);
        let mut torn = Vec::new();
        encode(&Record::Node(node(3, 1, "b")), &mut torn);
        let end = j.file.metadata().unwrap().len();
        j.file.write_all_at(&torn[..torn.len() - 3], end).unwrap();
        let r = j.replay().unwrap();
        assert_eq!(r.nodes, vec![node(2, 1, "a")]);
        assert_eq!(j.file.metadata().unwrap().len(), r.valid_len);
        j.append(&[Record::Node(node(5, 1, "c"))]);
        let names: Vec<_> = j
            .replay()
            .unwrap()
            .nodes
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, ["a", "c"]);
    }

    #[test]
    fn compaction_keeps_what_is_live_and_frees_the_rest() {
        let j = Journal::open(Journal::create().unwrap());
        let init = init();
        j.append(&[Record::Init(init)]);
        for ino in 2..2000 {
            j.append(&[Record::Node(node(ino, 1, &format!("n{ino}")))]);
        }
        let forgets: Vec<Record> = (3..2000).map(Record::Forget).collect();
        j.append(&forgets);
        let before = j.replay_bytes();
        let live = j.replay().unwrap();
        j.compact(live.nodes.iter().cloned().map(Record::Node));
        assert!(
            j.replay_bytes() < before / 20,
            "{} of {before}",
            j.replay_bytes()
        );
        j.append(&[Record::Node(node(5000, 2, "after"))]);
        let r = j.replay().unwrap();
        assert_eq!(r.init, Some(init));
        let inos: Vec<u64> = r.nodes.iter().map(|n| n.ino).collect();
        assert_eq!(inos, [2, 5000]);
        // The old records no longer take memory (a hole in the file).
        let blocks = std::fs::metadata(format!("/proc/self/fd/{}", j.file.as_raw_fd()))
            .map(|m| std::os::unix::fs::MetadataExt::blocks(&m))
            .unwrap();
        assert!(blocks * 512 < before, "{blocks} blocks");
    }

    #[test]
    fn an_emptied_journal_cannot_be_taken_over() {
        let j = Journal::open(Journal::create().unwrap());
        j.file.set_len(0).unwrap();
        let err = j.replay().unwrap_err().to_string();
        assert!(err.contains("incomplete"), "{err}");
    }

    #[test]
    fn garbage_is_never_a_record() {
        assert_eq!(decode(&[], 0), None);
        assert_eq!(decode(&[3, 0, 0, 0, 99, 1, 2], 0), None);
        assert_eq!(decode(&[200, 0, 0, 0, TAG_NODE], 0), None);
    }
}
