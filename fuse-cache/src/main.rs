//! `fluid-fuse`: mounts a dataset as a read-only POSIX tree served through a tiered block
//! cache, and talks to a running daemon (`warmup`, `stats`, `evict`).

use std::process::ExitCode;

use clap::Parser;
use fuse_cache::cli::Cli;
use fuse_cache::commands::run;

/// Allocations from this size up get pages of their own (glibc `mmap`), given back to the
/// system when freed. Cached blocks are such allocations: the memory tier frees old blocks in
/// LRU order while new ones of other sizes arrive, and out of glibc's heap those holes would
/// keep hundreds of MiB beyond the tier's quota resident. (glibc would otherwise raise the
/// threshold to the size of the first large block freed.)
const OWN_PAGES_FROM: libc::c_int = 64 * 1024;

fn main() -> ExitCode {
    // SAFETY: mallopt only sets an allocator parameter; called before any thread exists.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, OWN_PAGES_FROM);
    }
    let cli = Cli::parse();
    fluid_volume::logging::init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fluid-fuse: {e:#}");
            ExitCode::FAILURE
        }
    }
}
