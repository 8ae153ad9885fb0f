//! `fluid-fuse`: mounts a dataset as a read-only POSIX tree served through a tiered block
//! cache, and talks to a running daemon (`warmup`, `stats`, `evict`).

use std::process::ExitCode;

use clap::Parser;
use fuse_cache::cli::{Cli, Command};
use fuse_cache::commands;
use fuse_cache::error::{Error, Result};
use fuse_cache::handover::serve::Outcome;
use fuse_cache::handover::{keeper, serve};

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

fn run(cli: Cli) -> Result<()> {
    // The keeper runs a small runtime of its own on this thread (see `keeper::run`).
    if let Command::Mount(args) = cli.command {
        return keeper::run(*args);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    match cli.command {
        Command::Mount(_) => Ok(()),
        Command::Serve(args) => match serve::serve(&rt, *args)? {
            Outcome::Ended => Ok(()),
            outcome => {
                if let Outcome::CannotTakeOver(e) = &outcome {
                    eprintln!("fluid-fuse serve: {e}");
                }
                // Exits here, with `rt` alive: a serving process that hands over leaves its
                // runtime and FUSE threads to the exit (see `Outcome::HandedOver`).
                std::process::exit(outcome.exit_code())
            }
        },
        Command::Warmup(args) => rt.block_on(commands::warmup(args)),
        Command::Stats(args) => rt.block_on(commands::stats(args)),
        Command::Evict(args) => rt.block_on(commands::evict(args)),
        Command::Upgrade(args) => commands::upgrade(args),
    }
}
