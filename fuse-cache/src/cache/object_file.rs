//! The memory-tier blocks of one large object, kept in one memory file (a memfd) at their
//! offsets in the object.
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
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, Weak};

use crate::lock;

/// Objects from this size up keep their memory-tier blocks in a memory file.
pub(crate) const FILE_BACKED_FROM: u64 = 1 << 20;

const PAGE: u64 = 4096;

/// The memory files of the objects that have blocks mapped or are held, by object name.
#[derive(Default)]
pub(crate) struct ObjectFiles {
    files: Mutex<HashMap<Arc<str>, Weak<ObjectFile>>>,
}

pub(crate) struct ObjectFile {
    object: Arc<str>,
    fd: OwnedFd,
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
        let file = self.file(object, size, block_size)?;
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

    fn file(
        self: &Arc<Self>,
        object: &Arc<str>,
        size: u64,
        block_size: u64,
    ) -> Option<Arc<ObjectFile>> {
        // Created under the lock, so two blocks fetched at once share one file. No file may be
        // dropped under it: a file's drop takes the lock to leave the registry.
        let mut files = lock(&self.files);
        let stale = match files.get(object).and_then(Weak::upgrade) {
            Some(f) if f.size == size && f.block_size == block_size => return Some(f),
            other => other,
        };
        let created = self.create(object, size, block_size);
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
    ) -> Option<Arc<ObjectFile>> {
        // SAFETY: a plain syscall; the fd is checked before it is wrapped.
        let raw = unsafe { libc::memfd_create(c"fluid-block-cache".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            tracing::debug!(
                "memfd_create: {}; blocks use private memory",
                std::io::Error::last_os_error()
            );
            return None;
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let len = libc::off_t::try_from(size).ok()?;
        // SAFETY: ftruncate on the fd just created.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len) } != 0 {
            return None;
        }
        Some(Arc::new(ObjectFile {
            object: object.clone(),
            fd,
            size,
            block_size,
            registry: Arc::downgrade(self),
            state: Mutex::default(),
        }))
    }
}

impl ObjectFile {
    fn map(self: &Arc<Self>, index: u64, offset: u64, len: usize) -> Option<Mapping> {
        let map_len = (len as u64).div_ceil(PAGE) * PAGE;
        // Allocating the block's pages in one call takes them from the allocator together
        // (mostly adjacent, which later reads of the file run faster on) and finds a lack of
        // memory here rather than half way through the fetch.
        // SAFETY: fallocate on our own fd, inside its size (so the size stays the object's:
        // a passthrough reader finds the end of the file there).
        if unsafe {
            libc::fallocate(
                self.fd.as_raw_fd(),
                0,
                libc::off_t::try_from(offset).ok()?,
                len as libc::off_t,
            )
        } != 0
        {
            tracing::debug!(
                "allocating a block in its memory file: {}",
                std::io::Error::last_os_error()
            );
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
            // SAFETY: fallocate on our own fd; punching a hole only frees pages.
            unsafe {
                libc::fallocate(
                    self.fd.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    offset as libc::off_t,
                    len as libc::off_t,
                );
            }
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

impl Mapping {
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

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
    pub(crate) fn mark_complete(&self) {
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

    fn allocated(h: &Hold) -> u64 {
        // SAFETY: fstat into a zeroed struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::fstat(h.fd().as_raw_fd(), &mut st) }, 0);
        st.st_blocks as u64 * 512
    }

    #[test]
    fn a_file_is_held_only_when_complete_and_keeps_its_bytes_while_held() {
        let files = Arc::new(ObjectFiles::default());
        let obj: Arc<str> = "o".into();
        let size = 2 * MIB + 100;
        let blocks: Vec<Mapping> = (0..3)
            .map(|i| {
                let len = MIB.min(size - i * MIB) as usize;
                let m = files.map_block(&obj, size, MIB, i, len).unwrap();
                write(&m, len, i as u8 + 1);
                m
            })
            .collect();
        assert!(files.hold_complete("o").is_none(), "nothing complete yet");
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
        let hold = files.hold_complete("o").unwrap();
        assert_eq!(file_bytes(&hold, MIB - 1, 2), [1, 2]);
        assert_eq!(file_bytes(&hold, 2 * MIB, 100), [3; 100]);
        // Dropping the blocks while held frees nothing; the hold's end does.
        drop(blocks);
        assert_eq!(file_bytes(&hold, 0, 1), [1]);
        assert!(allocated(&hold) >= 2 * MIB);
        let again = files.hold_complete("o").unwrap();
        drop(hold);
        assert_eq!(file_bytes(&again, 2 * MIB + 99, 1), [3], "still held once");
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
