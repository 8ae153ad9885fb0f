//! The memory-tier blocks of one large object, kept in one memory file at their offsets in
//! the object (a file on a private tmpfs in large pages, or a memfd: `memory_file.rs`).
//!
//! A block fetched for the memory tier is a shared mapping of its range of the object's memory
//! file: the source's bytes are written into the file, and the tier reads them through the
//! mapping as before.
//! Once every block of an object is in the file, the file is a complete copy of the object,
//! and a FUSE open can hand it to the kernel as a passthrough backing file: reads then go from
//! shmem straight to the reader with no daemon round trip and no second copy through the FUSE
//! page cache (which `drop_caches` empties, while the memory tier's pages stay).
//!
//! Pages of a block are freed (a hole punched in the file) when the last mapping of the block
//! goes, unless the file is [`Hold`]: the kernel reads a held file without asking us, so its
//! bytes must stay until the hold ends; blocks dropped meanwhile are freed then.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, Weak};

use super::memory_file;
use crate::lock;

/// Objects from this size up keep their memory-tier blocks in a memory file.
pub(crate) const FILE_BACKED_FROM: u64 = 1 << 20;

const PAGE: u64 = 4096;

/// A file whose first block fetched starts before this offset is taken as read from the
/// start (`ObjectFiles::create`): the largest readahead window with the default settings.
const FROM_START: u64 = 64 << 20;

/// The page size asked for on the tmpfs (`ObjectFile::allocate`).
const FOLIO: u64 = 256 << 10;

fn fallocate(fd: &OwnedFd, mode: libc::c_int, offset: u64, len: u64) -> std::io::Result<()> {
    let offset = libc::off_t::try_from(offset).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let len = libc::off_t::try_from(len).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: fallocate on a descriptor we own.
    if unsafe { libc::fallocate(fd.as_raw_fd(), mode, offset, len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The memory files of the objects that have blocks mapped or are held, by object name.
#[derive(Default)]
pub(crate) struct ObjectFiles {
    files: Mutex<HashMap<Arc<str>, Weak<ObjectFile>>>,
}

pub(crate) struct ObjectFile {
    object: Arc<str>,
    fd: OwnedFd,
    /// On the private tmpfs, in large pages (`memory_file.rs`); else a memfd.
    large_folios: bool,
    size: u64,
    block_size: u64,
    registry: Weak<ObjectFiles>,
    state: Mutex<FileState>,
}

#[derive(Default)]
struct FileState {
    /// Blocks with a live mapping or whose bytes are in the file; others are holes.
    blocks: HashMap<u64, BlockState>,
    /// Blocks whose bytes are all in the file.
    complete: u64,
    /// Passthrough opens relying on the file's bytes.
    holds: u32,
    /// The file's size: the object's for a memfd; on the tmpfs, the end of the furthest block
    /// mapped so far (see `allocate`).
    file_len: u64,
}

#[derive(Default)]
struct BlockState {
    maps: u32,
    complete: bool,
}

/// One block's range of an object's memory file, mapped shared and writable (pages are mapped
/// as they are touched).
pub(crate) struct Mapping {
    file: Arc<ObjectFile>,
    index: u64,
    ptr: NonNull<u8>,
    map_len: usize,
}

// SAFETY: the mapping is plain memory; the file's state is behind a mutex.
unsafe impl Send for Mapping {}
// SAFETY: shared access only reads.
unsafe impl Sync for Mapping {}

/// Keeps every byte of an object's memory file in place while a passthrough open reads it.
pub struct Hold {
    file: Arc<ObjectFile>,
}

impl ObjectFiles {
    /// A mapping of block `index` (`len` bytes, its length in the object) in `object`'s memory
    /// file, with its pages allocated. `None` when the object is too small to be file
    /// backed, the block does not start on a page, or the kernel refuses the file or mapping
    /// (out of descriptors, say): the caller then uses memory of its own.
    pub(crate) fn map_block(
        self: &Arc<Self>,
        object: &Arc<str>,
        size: u64,
        block_size: u64,
        index: u64,
        len: usize,
    ) -> Option<Mapping> {
        let offset = index.checked_mul(block_size)?;
        if size < FILE_BACKED_FROM
            || !block_size.is_multiple_of(PAGE)
            || len == 0
            || offset.checked_add(len as u64)? > size
        {
            return None;
        }
        let file = self.file(object, size, block_size, index)?;
        file.map(index, offset, len)
    }

    /// Holds `object`'s memory file when it has every block of the object.
    pub(crate) fn hold_complete(&self, object: &str) -> Option<Hold> {
        let file = lock(&self.files).get(object)?.upgrade()?;
        {
            let mut st = lock(&file.state);
            if st.complete != file.size.div_ceil(file.block_size) {
                return None;
            }
            st.holds += 1;
        }
        Some(Hold { file })
    }

    /// `object`'s memory file, made for block `first` if there is none.
    fn file(
        self: &Arc<Self>,
        object: &Arc<str>,
        size: u64,
        block_size: u64,
        first: u64,
    ) -> Option<Arc<ObjectFile>> {
        // Created under the lock, so two blocks fetched at once share one file. No file may be
        // dropped under it: a file's drop takes the lock to leave the registry.
        let mut files = lock(&self.files);
        let stale = match files.get(object).and_then(Weak::upgrade) {
            Some(f) if f.size == size && f.block_size == block_size => return Some(f),
            other => other,
        };
        let created = self.create(object, size, block_size, first);
        if let Some(f) = &created {
            files.insert(object.clone(), Arc::downgrade(f));
        }
        drop(files);
        drop(stale);
        created
    }

    fn create(
        self: &Arc<Self>,
        object: &Arc<str>,
        size: u64,
        block_size: u64,
        first: u64,
    ) -> Option<Arc<ObjectFile>> {
        // Large pages come in order: a block mapped inside the file's size (out of order) gets
        // 2 MiB pages (`allocate`), dear on a VM that returns free memory to its host. A file
        // whose first block fetched is near its start is most likely read from the start (and
        // may become resident for passthrough); the blocks of a sequential reader are fetched
        // a few at once, so not always block 0 first. A file first fetched further in is read
        // at random: a memfd in small pages. (Random 1 MiB reads of a cold 1 GiB object ran at
        // 48-74 MiB/s on the tmpfs against 77-97 in memfds.)
        let from_start = first.saturating_mul(block_size) < FROM_START;
        let (fd, large_folios) = memory_file::create(block_size, from_start)?;
        let file = ObjectFile {
            object: object.clone(),
            fd,
            large_folios,
            size,
            block_size,
            registry: Arc::downgrade(self),
            state: Mutex::default(),
        };
        if !large_folios {
            file.set_len(&mut lock(&file.state), size).ok()?;
        }
        Some(Arc::new(file))
    }
}

impl ObjectFile {
    fn map(self: &Arc<Self>, index: u64, offset: u64, len: usize) -> Option<Mapping> {
        let map_len = (len as u64).div_ceil(PAGE) * PAGE;
        if let Err(e) = self.allocate(offset, len as u64) {
            tracing::debug!("allocating a block in its memory file: {e}");
            return None;
        }
        // SAFETY: a fresh shared mapping of our own file, inside its size (rounded to a page),
        // owned by the returned value.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.fd.as_raw_fd(),
                libc::off_t::try_from(offset).ok()?,
            )
        };
        if raw == libc::MAP_FAILED {
            return None;
        }
        let ptr = NonNull::new(raw.cast())?;
        lock(&self.state).blocks.entry(index).or_default().maps += 1;
        Some(Mapping {
            file: self.clone(),
            index,
            ptr,
            map_len: map_len as usize,
        })
    }

    /// Allocates the pages of `len` bytes at `offset` (a block's range) and makes the file
    /// reach past them, so the block can be mapped.
    ///
    /// Allocating a block's pages in one call takes them from the allocator together and finds
    /// a lack of memory here rather than half way through the fetch. A memfd's size is the
    /// object's from the start. On the tmpfs the page size follows the size of each
    /// allocation beyond the file's end, while inside it the kernel takes 2 MiB pages: so the
    /// file grows block by block, and a block past the end is allocated in [`FOLIO`] pieces.
    fn allocate(&self, offset: u64, len: u64) -> std::io::Result<()> {
        if !self.large_folios {
            return fallocate(&self.fd, 0, offset, len);
        }
        let mut st = lock(&self.state);
        // Inside the file the pieces' size would change nothing: one call.
        let piece = if offset >= st.file_len { FOLIO } else { len };
        let mut at = offset;
        while at < offset + len {
            let n = piece.min(offset + len - at);
            fallocate(&self.fd, libc::FALLOC_FL_KEEP_SIZE, at, n)?;
            at += n;
        }
        if offset + len > st.file_len {
            self.set_len(&mut st, offset + len)?;
        }
        Ok(())
    }

    fn set_len(&self, st: &mut FileState, len: u64) -> std::io::Result<()> {
        let off = libc::off_t::try_from(len).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        // SAFETY: ftruncate on our own fd.
        if unsafe { libc::ftruncate(self.fd.as_raw_fd(), off) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        st.file_len = len;
        Ok(())
    }

    /// Frees the pages of blocks neither mapped nor held. Called with the state locked.
    fn punch_unused(&self, st: &mut FileState, only: Option<u64>) {
        if st.holds > 0 {
            return;
        }
        let unused: Vec<u64> = match only {
            Some(i) => st
                .blocks
                .get(&i)
                .filter(|b| b.maps == 0)
                .map(|_| i)
                .into_iter()
                .collect(),
            None => st
                .blocks
                .iter()
                .filter(|(_, b)| b.maps == 0)
                .map(|(i, _)| *i)
                .collect(),
        };
        for index in unused {
            if st.blocks.remove(&index).is_some_and(|b| b.complete) {
                st.complete -= 1;
            }
            let offset = index * self.block_size;
            let len = self.block_size.min(self.size - offset).div_ceil(PAGE) * PAGE;
            // Punching a hole only frees pages; a failure leaves them to the file's end.
            let _ = fallocate(
                &self.fd,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            );
        }
    }
}

impl Drop for ObjectFile {
    fn drop(&mut self) {
        let Some(registry) = self.registry.upgrade() else {
            return;
        };
        let mut files = lock(&registry.files);
        // A new file for the object may have taken the entry already.
        if files
            .get(&self.object)
            .is_some_and(|w| w.strong_count() == 0)
        {
            files.remove(&self.object);
        }
    }
}

impl fluid_source::Backing for Mapping {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn write_at(&self, at: usize, data: &[u8]) -> std::io::Result<()> {
        Mapping::write_at(self, at, data)
    }

    fn mark_complete(&self) {
        Mapping::mark_complete(self)
    }
}

impl Mapping {
    /// Writes `data` at `at` bytes into the block through the file rather than the mapping:
    /// the kernel then allocates the pages as it copies, where a write through the mapping
    /// takes a page fault (and a page clearing) per page.
    pub(crate) fn write_at(&self, at: usize, mut data: &[u8]) -> std::io::Result<()> {
        let mut offset = self.index * self.file.block_size + at as u64;
        while !data.is_empty() {
            // SAFETY: pwrite from a live slice to our own fd.
            let n = unsafe {
                libc::pwrite(
                    self.file.fd.as_raw_fd(),
                    data.as_ptr().cast(),
                    data.len(),
                    offset as libc::off_t,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            data = &data[n as usize..];
            offset += n as u64;
        }
        Ok(())
    }

    /// The block's bytes are all written: the file now holds them.
    ///
    /// In a memfd its pages are locked in memory as well. A write leaves a page marked
    /// referenced, so the first read of it moves it to the active list, under the LRU lock:
    /// 15 % of the first passthrough read after a cold one (5.1 GB/s against 6.6 for the
    /// next). Locked pages are on the unevictable list, where reads leave them be; and a memory
    /// tier is no use swapped out. The tmpfs's large pages move once per 64 or 512 small ones
    /// and are left alone. Without the right to lock (a user's RLIMIT_MEMLOCK) the pages stay
    /// as they are.
    pub(crate) fn mark_complete(&self) {
        if !self.file.large_folios {
            // SAFETY: locks the pages of our own live mapping; failure changes nothing.
            unsafe { libc::mlock(self.ptr.as_ptr().cast(), self.map_len) };
        }
        let mut st = lock(&self.file.state);
        let block = st.blocks.entry(self.index).or_default();
        if !block.complete {
            block.complete = true;
            st.complete += 1;
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `ObjectFile::map`, used by nothing else.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.map_len) };
        let file = &self.file;
        let mut st = lock(&file.state);
        if let Some(b) = st.blocks.get_mut(&self.index) {
            b.maps -= 1;
        }
        file.punch_unused(&mut st, Some(self.index));
    }
}

impl Hold {
    /// The memory file, to register as the backing file of a passthrough open.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.fd.as_fd()
    }

    pub fn object(&self) -> &Arc<str> {
        &self.file.object
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut st = lock(&self.file.state);
        st.holds -= 1;
        self.file.punch_unused(&mut st, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluid_source::Backing;

    const MIB: u64 = 1 << 20;

    fn write(m: &Mapping, len: usize, byte: u8) {
        // SAFETY: the mapping holds at least `len` bytes.
        unsafe { std::slice::from_raw_parts_mut(m.as_ptr(), len) }.fill(byte);
    }

    fn file_bytes(h: &Hold, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        // SAFETY: pread into a buffer of `len` bytes.
        let n = unsafe {
            libc::pread(
                h.fd().as_raw_fd(),
                buf.as_mut_ptr().cast(),
                len,
                offset as libc::off_t,
            )
        };
        assert_eq!(n, len as isize);
        buf
    }

    /// Bytes locked in memory of the mapping's area, from /proc/self/smaps.
    fn locked(m: &Mapping) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let start = format!("{:x}-", m.as_ptr() as usize);
        let section = smaps
            .split_once(&format!("\n{start}"))
            .map(|(_, rest)| rest)
            .unwrap();
        let line = section.lines().find(|l| l.starts_with("Locked:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    fn allocated(h: &Hold) -> u64 {
        // SAFETY: fstat into a zeroed struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::fstat(h.fd().as_raw_fd(), &mut st) }, 0);
        st.st_blocks as u64 * 512
    }

    #[test]
    fn a_file_is_held_only_when_complete_and_keeps_its_bytes_while_held() {
        // A memfd; a file on the private tmpfs where the process may make it (as root).
        held_file_keeps_its_bytes(MIB);
        held_file_keeps_its_bytes(4 * MIB);
    }

    fn held_file_keeps_its_bytes(block: u64) {
        let files = Arc::new(ObjectFiles::default());
        let obj: Arc<str> = "o".into();
        let size = 2 * block + 100;
        let blocks: Vec<Mapping> = (0..3)
            .map(|i| {
                let len = block.min(size - i * block) as usize;
                let m = files.map_block(&obj, size, block, i, len).unwrap();
                write(&m, len, i as u8 + 1);
                m
            })
            .collect();
        assert!(files.hold_complete("o").is_none(), "nothing complete yet");
        assert_eq!(
            locked(&blocks[0]),
            0,
            "nothing locked before it is complete"
        );
        // SAFETY: fstat into a zeroed struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let fd = blocks[2].file.fd.as_raw_fd();
        assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
        assert_eq!(
            st.st_size as u64, size,
            "the file ends where the object does"
        );
        blocks[0].mark_complete();
        blocks[1].mark_complete();
        assert!(files.hold_complete("o").is_none(), "block 2 missing");
        blocks[2].mark_complete();
        // SAFETY: a plain query.
        if unsafe { libc::geteuid() } == 0 {
            // (Adjacent mappings of the file may have merged into one.)
            let locked = locked(&blocks[0]);
            if blocks[0].file.large_folios {
                assert_eq!(locked, 0, "large pages are not locked");
            } else {
                assert!(locked >= block, "complete blocks are locked: {locked}");
            }
        }
        let hold = files.hold_complete("o").unwrap();
        assert_eq!(file_bytes(&hold, block - 1, 2), [1, 2]);
        assert_eq!(file_bytes(&hold, 2 * block, 100), [3; 100]);
        // Dropping the blocks while held frees nothing; the hold's end does.
        drop(blocks);
        assert_eq!(file_bytes(&hold, 0, 1), [1]);
        assert!(allocated(&hold) >= 2 * block);
        let again = files.hold_complete("o").unwrap();
        drop(hold);
        assert_eq!(
            file_bytes(&again, 2 * block + 99, 1),
            [3],
            "still held once"
        );
        let fd = again.file.clone();
        drop(again);
        let st = lock(&fd.state);
        assert_eq!((st.complete, st.blocks.len()), (0, 0));
        drop(st);
        let probe = Hold { file: fd.clone() };
        assert_eq!(allocated(&probe), 0, "pages freed");
        std::mem::forget(probe);
    }

    #[test]
    fn files_of_blocks_in_whole_2_mib_pages_are_on_the_private_tmpfs() {
        let files = Arc::new(ObjectFiles::default());
        let on_tmpfs = |block: u64| {
            let obj: Arc<str> = format!("o{block}").into();
            let m = files
                .map_block(&obj, 8 * MIB, block, 0, MIB as usize)
                .unwrap();
            let fd = m.file.fd.as_raw_fd();
            // SAFETY: fstatfs into a zeroed struct.
            let mut st: libc::statfs = unsafe { std::mem::zeroed() };
            assert_eq!(unsafe { libc::fstatfs(fd, &mut st) }, 0);
            let link = std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .unwrap()
                .to_string_lossy()
                .into_owned();
            assert_eq!(st.f_type, libc::TMPFS_MAGIC, "{link}");
            assert_eq!(m.file.large_folios, !link.starts_with("/memfd:"), "{link}");
            m.file.large_folios
        };
        assert!(!on_tmpfs(MIB), "1 MiB blocks would split 2 MiB pages");
        assert!(!memory_file::on_tmpfs(3 * MIB));
        // SAFETY: a plain query.
        if unsafe { libc::geteuid() } == 0 {
            assert!(memory_file::on_tmpfs(4 * MIB), "root may make the tmpfs");
            assert!(on_tmpfs(4 * MIB));
        }
    }

    #[test]
    fn a_file_on_the_tmpfs_grows_block_by_block_and_only_files_read_from_the_start_are_there() {
        // SAFETY: a plain query.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: only root makes the private tmpfs");
            return;
        }
        let files = Arc::new(ObjectFiles::default());
        let obj: Arc<str> = "g".into();
        let size = 10 * MIB + 5;
        let file_len = |m: &Mapping| {
            // SAFETY: fstat into a zeroed struct.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            assert_eq!(unsafe { libc::fstat(m.file.fd.as_raw_fd(), &mut st) }, 0);
            st.st_size as u64
        };
        let b0 = files.map_block(&obj, size, 4 * MIB, 0, 4 << 20).unwrap();
        assert!(b0.file.large_folios);
        assert_eq!(file_len(&b0), 4 * MIB, "up to the furthest block mapped");
        let b2 = files
            .map_block(&obj, size, 4 * MIB, 2, 2 * MIB as usize + 5)
            .unwrap();
        assert_eq!(
            file_len(&b2),
            size,
            "the last block brings it to the object's size"
        );
        let b1 = files.map_block(&obj, size, 4 * MIB, 1, 4 << 20).unwrap();
        assert_eq!(file_len(&b1), size, "a block inside leaves it alone");
        for (m, byte) in [(&b0, 1u8), (&b1, 2), (&b2, 3)] {
            let len = if m.index == 2 {
                2 * MIB as usize + 5
            } else {
                4 << 20
            };
            write(m, len, byte);
            m.mark_complete();
        }
        let hold = files.hold_complete("g").unwrap();
        assert_eq!(file_bytes(&hold, 4 * MIB - 1, 2), [1, 2]);
        assert_eq!(file_bytes(&hold, size - 1, 1), [3]);
        // A file first fetched far from its start is read at random: a memfd.
        let big = 256 * MIB;
        let random = files
            .map_block(&"r".into(), big, 4 * MIB, 20, 4 << 20)
            .unwrap();
        assert!(!random.file.large_folios);
        assert_eq!(file_len(&random), big);
        let near = files
            .map_block(&"n".into(), big, 4 * MIB, 3, 4 << 20)
            .unwrap();
        assert!(
            near.file.large_folios,
            "a sequential reader fetches a few blocks at once"
        );
    }

    #[test]
    fn a_block_is_freed_with_its_last_mapping_and_small_objects_are_not_backed() {
        let files = Arc::new(ObjectFiles::default());
        let obj: Arc<str> = "o".into();
        assert!(files.map_block(&obj, MIB - 1, MIB, 0, 100).is_none());
        assert!(
            files.map_block(&obj, 4 * MIB, 1000, 0, 1000).is_none(),
            "unaligned"
        );
        assert!(
            files.map_block(&obj, 4 * MIB, MIB, 4, 1).is_none(),
            "past the end"
        );
        let a = files
            .map_block(&obj, 4 * MIB, MIB, 1, MIB as usize)
            .unwrap();
        write(&a, MIB as usize, 9);
        a.mark_complete();
        // A second mapping of the same block (a refetch) keeps the bytes when the first goes.
        let b = files
            .map_block(&obj, 4 * MIB, MIB, 1, MIB as usize)
            .unwrap();
        drop(a);
        // SAFETY: reads the mapping's first byte.
        assert_eq!(unsafe { *b.as_ptr() }, 9);
        let file = b.file.clone();
        assert_eq!(lock(&file.state).complete, 1);
        drop(b);
        assert_eq!(lock(&file.state).complete, 0);
        drop(file);
        assert!(
            lock(&files.files).is_empty(),
            "the registry forgets the file"
        );
    }
}
