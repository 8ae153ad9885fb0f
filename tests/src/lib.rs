//! Shared support for the integration tests: where the real test servers are, clients for
//! them, a generated dataset tree, and the real `fluid-fuse` daemon as a child process. The
//! servers are started by `scripts/services.sh up`; a test whose server is absent fails with a
//! message naming it, never passes silently.

pub mod cluster;
pub mod controller;
pub mod daemon;
pub mod kube;
pub mod node_plugin;
pub mod proxy;
pub mod services;
pub mod tree;

/// A runtime for the blocking tests' async calls (clients of the daemons and servers).
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Reads the file at `path` after dropping its pages from the kernel's page cache, so that the
/// read reaches the file system (a FUSE daemon and its block cache) again.
pub fn read_uncached(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path)?;
    // SAFETY: posix_fadvise(2) on an open descriptor; no memory is passed.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if r != 0 {
        return Err(std::io::Error::from_raw_os_error(r));
    }
    drop(f);
    std::fs::read(path)
}
