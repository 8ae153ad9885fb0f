//! `fluid-fuse`: mounts a dataset as a read-only POSIX tree served through a tiered block
//! cache, and talks to a running daemon (`warmup`, `stats`, `evict`).

use std::process::ExitCode;

use clap::Parser;
use fuse_cache::cli::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLUID_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fluid-fuse: {e:#}");
            ExitCode::FAILURE
        }
    }
}
