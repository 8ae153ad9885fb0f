//! Where the memory files of large objects (`object_file.rs`) are made: unnamed files on a
//! tmpfs of the process's own, mounted `huge=within_size`, or memfds where that cannot be had.
//!
//! The point is the page size. A memfd's pages follow the machine-wide shmem setting, 4 KiB on
//! most distributions; the tmpfs lets the kernel (6.14 on) allocate large folios, sized by each
//! allocation beyond the file's end (`ObjectFile::allocate` asks for 256 KiB). Allocating a
//! page, charging it and adding it to the page cache and the LRU costs about the same for
//! 4 KiB as for 256 KiB, and a read looks up, locks and ages each page it copies. Cold read of
//! a 1 GiB object through the mount on the 2-CPU bench VM: 61-70 CPU ticks of the daemon per
//! GiB against 110-140 with memfds, and 890-930 MB/s against 590-790; passthrough reads of
//! the cached file 17-18 GB/s against 6-7.
//!
//! Not 2 MiB pages on purpose: a virtual machine that hands free memory back to its host
//! (virtio-balloon free page reporting, which the bench VM has) reports free 2 MiB runs, so
//! a fresh 2 MiB page is faulted in from the host as it is first written. Allocating and
//! writing 1 GiB in 2 MiB pages took 2.3 s there, against 0.1 s in 256 KiB pages and 0.45 s
//! in 4 KiB ones. Inside the file's size the kernel does take 2 MiB pages (blocks fetched out
//! of order land there), so a block size must be a multiple of 2 MiB for punching a block's
//! pages out never to split one, and a file read at random is a memfd (`ObjectFiles::create`).
//!
//! The tmpfs is made with the mount API (`fsopen`, `fsmount`) and never attached to a path,
//! so no other process sees it, nothing is left mounted after a crash, and it goes with its
//! last file. Its files are unnamed (`O_TMPFILE`). Making it needs CAP_SYS_ADMIN, which the
//! daemon has to mount FUSE. Its size is left unlimited: the memory tier's quota bounds what
//! is allocated.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

const HUGE_PAGE: u64 = 2 << 20;

// Mount API constants from <linux/mount.h> (not in the libc crate).
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x02;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x04;
const MOUNT_ATTR_NOEXEC: libc::c_uint = 0x08;

/// The root of the process's tmpfs, once made; `None` when the kernel refused it.
static TMPFS: OnceLock<Option<OwnedFd>> = OnceLock::new();

/// A new empty memory file for an object cached in blocks of `block_size` bytes, on the
/// tmpfs when `large_pages` and it can be had (else a memfd); the flag says which it is.
pub(crate) fn create(block_size: u64, large_pages: bool) -> Option<(OwnedFd, bool)> {
    if large_pages && let Some(root) = tmpfs_for(block_size) {
        match tmpfile(root) {
            Ok(fd) => return Some((fd, true)),
            Err(e) => tracing::debug!("a file on the private tmpfs: {e}; using a memfd"),
        }
    }
    memfd().map(|fd| (fd, false))
}

/// Whether memory files of objects in `block_size` blocks go on the tmpfs.
#[cfg(test)]
pub(crate) fn on_tmpfs(block_size: u64) -> bool {
    tmpfs_for(block_size).is_some()
}

/// The tmpfs's root (made on first use) when files in `block_size` blocks may go there.
fn tmpfs_for(block_size: u64) -> Option<&'static OwnedFd> {
    if !block_size.is_multiple_of(HUGE_PAGE) {
        return None;
    }
    TMPFS.get_or_init(mount_tmpfs).as_ref()
}

fn mount_tmpfs() -> Option<OwnedFd> {
    match try_mount_tmpfs() {
        Ok(root) => Some(root),
        Err(e) => {
            tracing::info!(
                "no private tmpfs for the memory tier ({e}); large files are cached in memfds (small pages)"
            );
            None
        }
    }
}

fn try_mount_tmpfs() -> std::io::Result<OwnedFd> {
    // SAFETY: fsopen with a constant name; the fd is checked before it is wrapped.
    let fs = owned(unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), FSOPEN_CLOEXEC) })?;
    let options: [(&CStr, &CStr); 4] = [
        (c"huge", c"within_size"),
        (c"size", c"0"),
        (c"nr_inodes", c"0"),
        (c"mode", c"0700"),
    ];
    for (key, value) in options {
        // SAFETY: fsconfig on our own fs context with NUL-terminated strings.
        check(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            )
        })?;
    }
    // SAFETY: as above, with no key or value.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })?;
    // SAFETY: fsmount of the context just created; the fd is checked before it is wrapped.
    owned(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        )
    })
}

fn tmpfile(root: &OwnedFd) -> std::io::Result<OwnedFd> {
    // SAFETY: openat relative to our own mount fd; the fd is checked before it is wrapped.
    owned(unsafe {
        libc::openat(
            root.as_raw_fd(),
            c".".as_ptr(),
            libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
            0o600,
        )
    } as libc::c_long)
}

fn memfd() -> Option<OwnedFd> {
    // SAFETY: a plain syscall; the fd is checked before it is wrapped.
    let raw = unsafe { libc::memfd_create(c"fluid-block-cache".as_ptr(), libc::MFD_CLOEXEC) };
    match owned(raw as libc::c_long) {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::debug!("memfd_create: {e}; blocks use private memory");
            None
        }
    }
}

fn check(ret: libc::c_long) -> std::io::Result<()> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Wraps a descriptor a syscall returned, or the error it set.
fn owned(ret: libc::c_long) -> std::io::Result<OwnedFd> {
    check(ret)?;
    let raw = libc::c_int::try_from(ret).map_err(|_| std::io::ErrorKind::InvalidData)?;
    // SAFETY: `raw` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}
