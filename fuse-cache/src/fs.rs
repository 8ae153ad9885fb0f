//! The FUSE adapter: a thin fuser `Filesystem` that hands each request to the tokio runtime
//! and replies when the async work is done, so one slow fetch never blocks other requests.
//!
//! A file whose object the memory tier holds whole is opened in kernel passthrough mode: the
//! kernel reads the object's memory file itself (see `cache/object_file.rs`), with no request
//! to us and no copy through the FUSE page cache. The kernel fails an open (EIO) whose mode
//! differs from the inode's other open files, so an open follows the inode's open files, and
//! only an inode with none may start passthrough.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, Request,
};
use tokio::runtime::Handle as Runtime;

use crate::cache::Resident;
use crate::error::Error;
use crate::handover::journal::{Journal, OpenRecord, Record};
use crate::lock;
use crate::namespace::{DirStream, Namespace, Node};
use crate::reader::{OpenFile, Reader};
use fluid_source::Kind;

/// Releases and forgets between two looks at the journal's size.
const JOURNAL_CHECK_EVERY: u64 = 4096;
/// Bytes a live node or open file takes in the journal, about.
const JOURNAL_BYTES_PER_LIVE: u64 = 64;

/// Nodes forgotten between two returns of free heap memory to the system.
const TRIM_AFTER_FORGETS: usize = 50_000;

/// Largest read the kernel sends us (it splits bigger ones).
const MAX_READ: u32 = 1 << 20;

pub struct FluidFs {
    rt: Runtime,
    ns: Arc<Namespace>,
    reader: Arc<Reader>,
    files: Mutex<HashMap<u64, Handle>>,
    /// Open files by inode, by mode.
    opens: Mutex<HashMap<u64, InodeOpens>>,
    /// Wanted, granted by the kernel at init, and not refused since.
    passthrough: AtomicBool,
    /// Open files that may be read by passthrough later with direct I/O until then, rather
    /// than through the kernel page cache (needs passthrough, and mmap of direct I/O files).
    direct_cold: AtomicBool,
    dirs: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<DirStream>>>>,
    /// The object version each inode was last opened at: the kernel page cache is kept
    /// across opens while it is unchanged.
    opened_versions: Mutex<HashMap<u64, String>>,
    next_fh: AtomicU64,
    /// Where open file handles are written for a successor, and the connection's fd.
    handover: Handover,
    forgotten_since_trim: std::sync::atomic::AtomicUsize,
    /// Releases and forgets since the start (see [`JOURNAL_CHECK_EVERY`]).
    journal_events: AtomicU64,
}

/// What a serving process that may be succeeded needs beyond the file system itself.
pub struct Handover {
    pub journal: Arc<Journal>,
    /// The /dev/fuse descriptor of the connection (for backing ids a predecessor registered).
    pub fuse_fd: RawFd,
    /// How many serving processes came before this one: file handles of this one start at
    /// `generation << 40`, so they never collide with a predecessor's.
    pub generation: u64,
}

struct Handle {
    file: Arc<OpenFile>,
    passthrough: bool,
}

#[derive(Default)]
struct InodeOpens {
    cached: u32,
    passthrough: Option<Passthrough>,
}

/// The passthrough opens of one inode, which share one backing file.
struct Passthrough {
    opens: u32,
    /// Registered with the kernel until the last of them is released.
    backing: BackingFile,
    /// Keeps the memory file whole meanwhile (none for a predecessor's backing file: the
    /// kernel holds that file itself).
    _resident: Option<Resident>,
}

/// A backing file registered with the kernel (by this process or a predecessor), by its
/// number on the connection; unregistered when dropped. One owner for both kinds: a
/// predecessor's id has no fuser `BackingId`, so ours are kept as raw ids too.
struct BackingFile {
    id: u32,
    fuse_fd: RawFd,
}

impl BackingFile {
    /// Answers an open in passthrough mode with this backing file.
    fn reply(&self, reply: ReplyOpen, fh: u64) {
        // SAFETY: the id is registered on this connection; the wrapper is turned back into
        // the raw id at once, so only `Drop` below ever closes it.
        let wrapped = unsafe { reply.wrap_backing(self.id) };
        reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &wrapped);
        let _ = wrapped.into_raw();
    }
}

impl Drop for BackingFile {
    fn drop(&mut self) {
        // SAFETY: the fd is the connection's, open for as long as the session (which owns
        // this file system) lives.
        let fuse = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fuse_fd) };
        if let Err(e) = fuser::BackingId::close_raw(fuse, self.id) {
            tracing::debug!("closing backing file {}: {e}", self.id);
        }
    }
}

/// Failed reads logged: a few a minute (a store that is down fails every read).
static READ_FAILURES: crate::log_limit::RateLimit =
    crate::log_limit::RateLimit::new(10, std::time::Duration::from_secs(60));

fn errno(e: &Error) -> Errno {
    Errno::from_i32(e.errno())
}

impl FluidFs {
    /// `passthrough`: open files the memory tier holds whole in kernel passthrough mode, when
    /// the kernel allows it. Open file handles are written to the journal of `handover`.
    pub fn new(rt: Runtime, reader: Arc<Reader>, passthrough: bool, handover: Handover) -> Self {
        FluidFs {
            rt,
            ns: reader.ns.clone(),
            reader,
            files: Mutex::default(),
            opens: Mutex::default(),
            passthrough: AtomicBool::new(passthrough),
            direct_cold: AtomicBool::new(false),
            dirs: Mutex::default(),
            opened_versions: Mutex::default(),
            next_fh: AtomicU64::new((handover.generation << 40) | 1),
            handover,
            forgotten_since_trim: Default::default(),
            journal_events: AtomicU64::new(0),
        }
    }

    /// Takes over the open files of a predecessor: their handles read the object versions
    /// they opened, passthrough ones keep their backing file. A handle whose inode is
    /// unknown is skipped (its reads then open the inode afresh, see `read`).
    pub fn adopt_opens(&self, opens: &HashMap<u64, OpenRecord>) -> usize {
        let mut adopted = 0;
        let mut inode_opens = lock(&self.opens);
        let mut files = lock(&self.files);
        for o in opens.values() {
            let Ok(mut node) = self.ns.node(o.ino) else {
                continue;
            };
            node.meta = o.meta.clone();
            let Ok(file) = self.reader.open(&node) else {
                continue;
            };
            let io = inode_opens.entry(o.ino).or_default();
            match o.backing {
                Some(id) => {
                    let p = io.passthrough.get_or_insert_with(|| Passthrough {
                        opens: 0,
                        backing: BackingFile {
                            id,
                            fuse_fd: self.handover.fuse_fd,
                        },
                        _resident: None,
                    });
                    p.opens += 1;
                }
                None => io.cached += 1,
            }
            files.insert(
                o.fh,
                Handle {
                    file: Arc::new(file),
                    passthrough: o.backing.is_some(),
                },
            );
            adopted += 1;
        }
        adopted
    }

    fn journal(&self, record: Record) {
        self.handover.journal.append(&[record]);
    }

    /// Every [`JOURNAL_CHECK_EVERY`] releases and forgotten nodes: compacts the journal once its
    /// records are many times what is live (opens and releases, forgotten nodes).
    fn maybe_compact_journal(&self, events: u64) {
        let h = &self.handover;
        let before = self.journal_events.fetch_add(events, Ordering::Relaxed);
        if before / JOURNAL_CHECK_EVERY == (before + events) / JOURNAL_CHECK_EVERY {
            return;
        }
        let bytes = h.journal.replay_bytes();
        let live = (self.ns.node_count() + lock(&self.files).len()) as u64 * JOURNAL_BYTES_PER_LIVE;
        if bytes < crate::handover::journal::COMPACT_FROM || bytes < 4 * live {
            return;
        }
        // Nothing is journaled meanwhile: opens hold `opens`, releases `files`, new and
        // forgotten nodes the namespace's table.
        let inode_opens = lock(&self.opens);
        let files = lock(&self.files);
        let open_records: Vec<Record> = files
            .iter()
            .map(|(fh, handle)| {
                Record::Open(OpenRecord {
                    fh: *fh,
                    ino: handle.file.ino,
                    meta: handle.file.meta.clone(),
                    backing: handle
                        .passthrough
                        .then(|| inode_opens.get(&handle.file.ino))
                        .flatten()
                        .and_then(|io| io.passthrough.as_ref())
                        .map(|p| p.backing.id),
                })
            })
            .collect();
        self.ns.with_node_records(|nodes| {
            h.journal.compact(nodes.chain(open_records));
        });
        tracing::info!(
            "compacted the hand-over journal: {} MiB of records to {} MiB",
            bytes >> 20,
            h.journal.replay_bytes() >> 20
        );
    }

    fn ttl(&self) -> Duration {
        self.ns.ttl.attr
    }

    /// Registers the memory file of a wholly cached object as a backing file; `None` when the
    /// object is not whole in memory or passthrough is off.
    fn start_passthrough(&self, reply: &ReplyOpen, file: &OpenFile) -> Option<Passthrough> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        let resident = self.reader.cache.hold_resident(file.object())?;
        match reply.open_backing(resident.fd()) {
            Ok(backing) => Some(Passthrough {
                opens: 0,
                backing: BackingFile {
                    id: backing.into_raw(),
                    fuse_fd: self.handover.fuse_fd,
                },
                _resident: Some(resident),
            }),
            Err(e) => {
                self.passthrough.store(false, Ordering::Relaxed);
                tracing::warn!(
                    "the kernel refused a passthrough backing file ({e}); files are read through the daemon from now on"
                );
                None
            }
        }
    }
}

impl FluidFs {
    /// Drops what is kept per inode for the nodes the kernel forgot.
    fn forgotten(&self, forgets: &[(u64, u64)]) {
        let gone = self.ns.forget(forgets);
        self.maybe_compact_journal(forgets.len() as u64);
        if gone.is_empty() {
            return;
        }
        let mut versions = lock(&self.opened_versions);
        for ino in &gone {
            versions.remove(ino);
        }
        if versions.capacity() > 4 * versions.len() + 1024 {
            versions.shrink_to_fit();
        }
        drop(versions);
        self.reader.forget_inodes(&gone);
        // The freed nodes are many small allocations spread over the heap: glibc keeps
        // them unless asked (after a forget of 1,000,000 nodes, 150 MiB stayed resident).
        let dropped = self
            .forgotten_since_trim
            .fetch_add(gone.len(), Ordering::Relaxed);
        if dropped + gone.len() >= TRIM_AFTER_FORGETS {
            self.forgotten_since_trim.store(0, Ordering::Relaxed);
            #[cfg(target_env = "gnu")]
            // SAFETY: malloc_trim only returns free heap memory to the system.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }

    /// The open file of handle `fh`. A handle this process never gave out (a predecessor's
    /// whose record was lost) opens inode `ino` afresh at its current version.
    fn file_of(&self, fh: u64, ino: u64) -> Option<Arc<OpenFile>> {
        if let Some(h) = lock(&self.files).get(&fh) {
            return Some(h.file.clone());
        }
        let node = self.ns.node(ino).ok()?;
        let file = Arc::new(self.reader.open(&node).ok()?);
        lock(&self.files).insert(
            fh,
            Handle {
                file: file.clone(),
                passthrough: false,
            },
        );
        Some(file)
    }

    /// The listing of directory handle `fh`; a predecessor's handle (directory handles are
    /// not journaled) gets a listing made now, which resumes at the kernel's offset.
    fn dir_stream(&self, fh: u64, ino: u64) -> Result<Arc<tokio::sync::Mutex<DirStream>>, Errno> {
        if let Some(s) = lock(&self.dirs).get(&fh) {
            return Ok(s.clone());
        }
        let stream = self.ns.open_dir(ino).map_err(|e| errno(&e))?;
        let stream = Arc::new(tokio::sync::Mutex::new(stream));
        lock(&self.dirs).insert(fh, stream.clone());
        Ok(stream)
    }
}

pub fn attr_of(node: &Node) -> FileAttr {
    let dir = node.meta.kind == Kind::Dir;
    FileAttr {
        ino: INodeNo(node.ino),
        size: node.meta.size,
        blocks: node.meta.size.div_ceil(512),
        atime: node.meta.mtime,
        mtime: node.meta.mtime,
        ctime: node.meta.mtime,
        crtime: node.meta.mtime,
        kind: if dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: if dir { 0o555 } else { 0o444 },
        nlink: if dir { 2 } else { 1 },
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: MAX_READ,
        flags: 0,
    }
}

impl Filesystem for FluidFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Best effort: an older kernel keeps its own, smaller limits.
        let _ = config.set_max_readahead(MAX_READ);
        let _ = config.set_max_background(64);
        // readdirplus answers `ls -l` from one listing page instead of a lookup per entry;
        // AUTO_INVAL_DATA drops kept pages when a file's size or mtime changes.
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_AUTO_INVAL_DATA;
        if let Err(missing) = config.add_capabilities(wanted) {
            tracing::debug!("kernel lacks FUSE capabilities {missing:?}");
        }
        // Depth 1: backing files are on a plain file system (shmem), and an overlay may
        // still stack on this mount.
        if self.passthrough.load(Ordering::Relaxed)
            && (config
                .add_capabilities(InitFlags::FUSE_PASSTHROUGH)
                .is_err()
                || config.set_max_stack_depth(1).is_err())
        {
            tracing::info!("the kernel has no FUSE passthrough; files are read through the daemon");
            self.passthrough.store(false, Ordering::Relaxed);
        }
        let direct = self.passthrough.load(Ordering::Relaxed)
            && config
                .add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP)
                .is_ok();
        self.direct_cold.store(direct, Ordering::Relaxed);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str().map(str::to_string) else {
            return reply.error(Errno::ENOENT);
        };
        let ns = self.ns.clone();
        let ttl = self.ttl();
        self.rt.spawn(async move {
            match ns.lookup(parent.0, &name).await {
                Ok(node) => {
                    // Before the reply: a FORGET may follow it at once.
                    ns.looked_up(node.ino);
                    reply.entry(&ttl, &attr_of(&node), Generation(0))
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.forgotten(&[(ino.0, nlookup)]);
    }

    fn batch_forget(&self, _req: &Request, nodes: &[fuser::ForgetOne]) {
        let forgets: Vec<(u64, u64)> = nodes.iter().map(|n| (n.nodeid().0, n.nlookup())).collect();
        self.forgotten(&forgets);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let ns = self.ns.clone();
        let ttl = self.ttl();
        self.rt.spawn(async move {
            match ns.getattr(ino.0).await {
                Ok(node) => reply.attr(&ttl, &attr_of(&node)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::from_i32(libc::EROFS));
        }
        let node = match self.ns.node(ino.0) {
            Ok(n) => n,
            Err(e) => return reply.error(errno(&e)),
        };
        let file = match self.reader.open(&node) {
            Ok(file) => Arc::new(file),
            Err(e) => return reply.error(errno(&e)),
        };
        let version = file.meta.version();
        let unchanged = lock(&self.opened_versions).insert(ino.0, version.clone()) == Some(version);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let mut opens = lock(&self.opens);
        let io = opens.entry(ino.0).or_default();
        if io.cached == 0 && io.passthrough.is_none() {
            io.passthrough = self.start_passthrough(&reply, &file);
        }
        // An open that comes while passthrough opens last reads their backing file, even if
        // the object changed since (the kernel allows no other mode then).
        let passthrough = io.passthrough.is_some();
        self.journal(Record::Open(OpenRecord {
            fh,
            ino: ino.0,
            meta: file.meta.clone(),
            backing: io.passthrough.as_ref().map(|p| p.backing.id),
        }));
        lock(&self.files).insert(fh, Handle { file, passthrough });
        match &mut io.passthrough {
            Some(p) => {
                p.opens += 1;
                self.reader
                    .counters
                    .passthrough_opens
                    .fetch_add(1, Ordering::Relaxed);
                p.backing.reply(reply, fh);
            }
            None => {
                io.cached += 1;
                let flags = if self.direct_cold.load(Ordering::Relaxed)
                    && self.reader.cache.may_become_resident(node.meta.size)
                    && !self.reader.read_at_random(ino.0)
                {
                    // Will be read by passthrough once whole in memory: meanwhile the
                    // kernel page cache would only add a copy and pages to allocate. A file
                    // read at random offsets keeps the page cache, which serves its hot
                    // parts while the memory tier holds only some of it.
                    FopenFlags::FOPEN_DIRECT_IO
                } else if unchanged {
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                reply.opened(FileHandle(fh), flags);
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(file) = self.file_of(fh.0, ino.0) else {
            return reply.error(Errno::EBADF);
        };
        let reader = self.reader.clone();
        self.rt.spawn(async move {
            match reader.read(&file, offset, size as u64).await {
                Ok(data) => reply.data(&data),
                Err(e) => {
                    if let Some(n) = READ_FAILURES.admit() {
                        let more = crate::log_limit::left_out(n);
                        tracing::warn!("read of inode {} at {offset} failed: {e}{more}", file.ino);
                    }
                    reply.error(errno(&e))
                }
            }
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let handle = lock(&self.files).remove(&fh.0);
        if handle.is_some() {
            self.journal(Record::Release(fh.0));
        }
        reply.ok();
        self.maybe_compact_journal(1);
        let Some(handle) = handle else { return };
        let mut opens = lock(&self.opens);
        let Some(io) = opens.get_mut(&handle.file.ino) else {
            return;
        };
        if handle.passthrough {
            if let Some(p) = &mut io.passthrough {
                p.opens -= 1;
                if p.opens == 0 {
                    // Closes the backing file and lets the memory tier evict the object.
                    io.passthrough = None;
                }
            }
        } else {
            io.cached = io.cached.saturating_sub(1);
        }
        if io.cached == 0 && io.passthrough.is_none() {
            opens.remove(&handle.file.ino);
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.ns.open_dir(ino.0) {
            Ok(stream) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                lock(&self.dirs).insert(fh, Arc::new(tokio::sync::Mutex::new(stream)));
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let stream = match self.dir_stream(fh.0, ino.0) {
            Ok(stream) => stream,
            Err(e) => return reply.error(e),
        };
        let ns = self.ns.clone();
        self.rt.spawn(async move {
            let mut stream = stream.lock().await;
            let listed = walk_dir(&ns, &mut stream, ino.0, offset, |off, name, node| {
                let kind = if node.is_dir() {
                    FileType::Directory
                } else {
                    FileType::RegularFile
                };
                reply.add(INodeNo(node.ino), off, kind, name)
            })
            .await;
            match listed {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let stream = match self.dir_stream(fh.0, ino.0) {
            Ok(stream) => stream,
            Err(e) => return reply.error(e),
        };
        let ns = self.ns.clone();
        let ttl = self.ttl();
        self.rt.spawn(async move {
            let mut stream = stream.lock().await;
            let listed = walk_dir(&ns, &mut stream, ino.0, offset, |off, name, node| {
                let full = reply.add(
                    INodeNo(node.ino),
                    off,
                    name,
                    &ttl,
                    &attr_of(node),
                    Generation(0),
                );
                // The kernel counts a lookup for every entry it is given but "." and "..".
                if !full && name != "." && name != ".." {
                    ns.looked_up(node.ino);
                }
                full
            })
            .await;
            match listed {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.dirs).remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let stats = self.reader.cache.stats();
        let cap: u64 = stats.tiers.iter().map(|t| t.capacity_bytes).sum();
        let used: u64 = stats.tiers.iter().map(|t| t.used_bytes).sum();
        let bsize = 4096u64;
        reply.statfs(
            cap / bsize,
            cap.saturating_sub(used) / bsize,
            0,
            0,
            0,
            bsize as u32,
            255,
            bsize as u32,
        );
    }
}

/// Hands the entries of directory `ino` from the readdir `offset` on to `add` until it reports
/// a full buffer or the directory ends, fetching listing pages as needed. Offsets: 1 is ".",
/// 2 is "..", i + 3 follows entry i, so a reader resumes where the kernel left off.
async fn walk_dir(
    ns: &Namespace,
    stream: &mut DirStream,
    ino: u64,
    offset: u64,
    mut add: impl FnMut(u64, &str, &Node) -> bool,
) -> crate::error::Result<()> {
    let dir = ns.node(ino)?;
    if offset < 2 {
        let parent = ns.node(dir.parent)?;
        for (off, name, node) in [(1, ".", &dir), (2, "..", &parent)]
            .into_iter()
            .skip(offset as usize)
        {
            if add(off, name, node) {
                return Ok(());
            }
        }
    }
    let mut i = offset.saturating_sub(2) as usize;
    while ns.fill(stream, i).await? {
        let (name, child) = &stream.entries[i];
        // A node missing here was never inserted: skip it rather than fail the listing.
        if let Ok(node) = ns.node(*child)
            && add((i + 3) as u64, name, &node)
        {
            return Ok(());
        }
        i += 1;
    }
    Ok(())
}
