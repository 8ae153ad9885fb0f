//! fluid-fuse end to end: real daemons, real FUSE mounts, real servers.

use std::path::Path;
use std::time::{Duration, Instant};

use fluid_tests::daemon::{FuseDaemon, is_mounted, stats};
use fluid_tests::rt;
use fluid_tests::services::{self, S3Server, TempBucket};
use fluid_tests::tree::{self, Tree, TreeSpec};

const MIB: u64 = 1 << 20;

fn full_spec() -> TreeSpec {
    TreeSpec {
        block_size: MIB,
        big_file: 100 * MIB,
        small_files: 10_000,
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A bucket on `server` holding `tree` under `prefix`, removed when dropped.
fn s3_dataset(server: &S3Server, tree: &Tree, prefix: &str) -> TempBucket {
    let bucket = server
        .temp_bucket("mnt")
        .unwrap_or_else(|e| panic!("{e:#}"));
    rt().block_on(tree.upload_s3(&server.client(), &bucket.name, prefix))
        .unwrap();
    bucket
}

fn check_tree(d: &FuseDaemon, tree: &Tree) {
    if let Err(e) = tree.verify(&d.mountpoint, 200) {
        panic!("{e:#}\ndaemon log:\n{}", d.log());
    }
}

fn small_tree() -> Tree {
    tree::generate(
        &TreeSpec {
            block_size: MIB,
            big_file: 24 * MIB,
            small_files: 20,
        },
        5,
    )
}

fn read_all(root: &Path, tree: &Tree) {
    for p in tree.files.keys() {
        std::fs::read(root.join(p)).unwrap();
    }
}

/// Reads `len` bytes at `offset` of `path` with one pread.
fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0; len];
    let n = f.read_at(&mut buf, offset).unwrap();
    buf.truncate(n);
    buf
}

/// Maps `f` read-only and copies its bytes out through the mapping.
fn read_mapped(f: &std::fs::File, len: usize) -> Vec<u8> {
    use std::os::fd::AsRawFd;
    // SAFETY: a fresh shared read-only mapping of `len` bytes of an open file, unmapped below.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
        let out = std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec();
        libc::munmap(p, len);
        out
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}

mod behaviour;
mod cache;
mod operations;
mod stores;
