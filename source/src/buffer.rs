//! Memory for a block fetched from a source, mapped with its pages populated up front.
//!
//! A cold read fills the memory tier with new blocks; a fresh 4 MiB allocation in 4 KiB pages
//! takes 1024 page faults as it is written, and perf showed a third of the daemon's time in
//! faulting during a cold sequential read. `MAP_POPULATE` makes the kernel allocate and zero
//! the pages in one call instead. Blocks smaller than [`MAPPED_FROM`] use the heap. Blocks of
//! large objects headed for the data path's memory tier live in memory it owns instead (a
//! mapping of the object's memory file, see [`Backing`]): the source fills them in place.
//!
//! Sources fill a buffer in place (`read_exact` into it, HDFS's `read_range_buf`), so they take
//! this concrete type rather than a `bytes::BufMut`, which hands out uninitialised slices.

use std::ptr::NonNull;

use bytes::Bytes;

/// Memory owned elsewhere that a [`BlockBuf`] is filled in (the data path's memory files).
pub trait Backing: Send + Sync + 'static {
    /// The start of the block's memory: at least the buffer's length, writable, and written
    /// by this buffer alone while it fills (see [`BlockBuf::backed`]).
    fn as_ptr(&self) -> *mut u8;
    /// Writes `data` at `at` bytes into the block by a way cheaper than through the pointer
    /// (a file write); an error makes the buffer copy through the pointer instead.
    fn write_at(&self, at: usize, data: &[u8]) -> std::io::Result<()>;
    /// Called once the block is filled to its length and frozen.
    fn mark_complete(&self);
}

/// Buffers from this size up are mapped (smaller ones stay on the heap).
const MAPPED_FROM: usize = 1 << 20;

/// A buffer of a fixed length, filled front to back, then frozen into [`Bytes`].
pub struct BlockBuf {
    mem: Memory,
    len: usize,
    filled: usize,
}

enum Memory {
    /// A private anonymous mapping of `map_len` bytes.
    Mapped { ptr: NonNull<u8>, map_len: usize },
    /// Small, or the mapping failed.
    Heap(Vec<u8>),
    /// Memory owned elsewhere.
    Backed(Box<dyn Backing>),
}

// SAFETY: the mapping is owned by this value alone (no aliases); it is plain memory.
unsafe impl Send for Memory {}
// SAFETY: shared access only reads.
unsafe impl Sync for Memory {}

impl BlockBuf {
    /// A zeroed buffer of `len` bytes.
    pub fn new(len: usize) -> BlockBuf {
        let mem = if len >= MAPPED_FROM {
            map_populated(len).unwrap_or_else(|| Memory::Heap(vec![0; len]))
        } else {
            Memory::Heap(vec![0; len])
        };
        BlockBuf {
            mem,
            len,
            filled: 0,
        }
    }

    /// A buffer of `len` bytes in `memory`. Unlike [`BlockBuf::new`], the bytes are not
    /// zeroed (they may be the block's from an earlier fetch).
    ///
    /// # Safety
    /// `memory.as_ptr()` must point to at least `len` bytes that stay mapped while `memory`
    /// lives, that this buffer alone writes while it fills, and that nothing writes once it
    /// is frozen.
    pub unsafe fn backed(memory: Box<dyn Backing>, len: usize) -> BlockBuf {
        BlockBuf {
            mem: Memory::Backed(memory),
            len,
            filled: 0,
        }
    }

    /// The length the buffer was made with: what a source is asked to fill.
    pub fn capacity(&self) -> usize {
        self.len
    }

    /// Forgets what was filled, for another try at filling it.
    pub fn clear(&mut self) {
        self.filled = 0;
    }

    pub fn filled(&self) -> usize {
        self.filled
    }

    /// The whole buffer, to fill in place (then [`BlockBuf::set_filled`]).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match &mut self.mem {
            // SAFETY: the mapping holds at least `len` bytes and is ours alone.
            Memory::Mapped { ptr, .. } => unsafe {
                std::slice::from_raw_parts_mut(ptr.as_ptr(), self.len)
            },
            // SAFETY: the memory holds at least `len` bytes, and this buffer is its only
            // writer while it fills it (the contract of `BlockBuf::backed`).
            Memory::Backed(m) => unsafe { std::slice::from_raw_parts_mut(m.as_ptr(), self.len) },
            Memory::Heap(v) => v.as_mut_slice(),
        }
    }

    pub fn set_filled(&mut self, n: usize) {
        self.filled = n.min(self.len);
    }

    /// Appends as much of `chunk` as fits; returns what did not fit.
    pub fn push<'a>(&mut self, chunk: &'a [u8]) -> &'a [u8] {
        let n = chunk.len().min(self.len - self.filled);
        let at = self.filled;
        match &self.mem {
            Memory::Backed(m) => {
                if let Err(e) = m.write_at(at, &chunk[..n]) {
                    // The memory's pages were allocated when it was made, so this is not a
                    // lack of memory; the pointer reaches the same pages.
                    tracing::debug!("writing a block to its backing memory: {e}");
                    self.as_mut_slice()[at..at + n].copy_from_slice(&chunk[..n]);
                }
            }
            _ => self.as_mut_slice()[at..at + n].copy_from_slice(&chunk[..n]),
        }
        self.filled += n;
        &chunk[n..]
    }

    /// The bytes filled so far. A backed block filled to its length is marked complete.
    pub fn freeze(self) -> Bytes {
        if let Memory::Backed(m) = &self.mem
            && self.filled == self.len
        {
            m.mark_complete();
        }
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for BlockBuf {
    fn as_ref(&self) -> &[u8] {
        match &self.mem {
            // SAFETY: the mapping holds at least `len >= filled` bytes.
            Memory::Mapped { ptr, .. } => unsafe {
                std::slice::from_raw_parts(ptr.as_ptr(), self.filled)
            },
            // SAFETY: the memory holds at least `len >= filled` bytes.
            Memory::Backed(m) => unsafe { std::slice::from_raw_parts(m.as_ptr(), self.filled) },
            Memory::Heap(v) => &v[..self.filled],
        }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        if let Memory::Mapped { ptr, map_len } = self {
            // SAFETY: unmaps exactly the mapping made in `map_populated`, used by nothing else.
            unsafe { libc::munmap(ptr.as_ptr().cast(), *map_len) };
        }
    }
}

fn map_populated(len: usize) -> Option<Memory> {
    let map_len = len.div_ceil(4096) * 4096;
    // SAFETY: a fresh private anonymous mapping, owned by the returned value.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return None;
    }
    Some(Memory::Mapped {
        ptr: NonNull::new(raw.cast())?,
        map_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_buffers_are_mapped_and_filled_in_order() {
        let mut b = BlockBuf::new(4 << 20);
        assert!(matches!(b.mem, Memory::Mapped { .. }));
        assert!(b.push(&[7u8; 3 << 20]).is_empty());
        let rest = b.push(&[9u8; 2 << 20]);
        assert_eq!(rest.len(), 1 << 20, "only what fits is taken");
        assert_eq!(b.filled(), 4 << 20);
        let bytes = b.freeze();
        assert_eq!(bytes.len(), 4 << 20);
        assert!(bytes[..3 << 20].iter().all(|&x| x == 7));
        assert!(bytes[3 << 20..].iter().all(|&x| x == 9));
        // Slices keep the mapping alive after the first handle goes.
        let tail = bytes.slice((4 << 20) - 10..);
        drop(bytes);
        assert!(tail[..] == [9u8; 10]);
    }

    #[test]
    fn small_and_odd_sizes() {
        let mut b = BlockBuf::new(1000);
        assert!(matches!(b.mem, Memory::Heap(_)));
        b.as_mut_slice()[..3].copy_from_slice(b"abc");
        b.set_filled(3);
        assert_eq!(&b.freeze()[..], b"abc");
        let mut odd = BlockBuf::new((3 << 20) + 5);
        assert!(odd.push(&vec![1u8; (3 << 20) + 5]).is_empty());
        let bytes = odd.freeze();
        assert_eq!(bytes.len(), (3 << 20) + 5);
        assert_eq!(bytes[(3 << 20) + 4], 1);
    }
}
