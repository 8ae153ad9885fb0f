//! The data path of Fluid: sources, the dataset namespace, the tiered block cache and the FUSE
//! adapter. The `fluid-fuse` binary is a thin command line over this; the types its command
//! line shares with the CSI plugins (mount points, tiers, sizes) are in `fluid-volume`.

pub mod cache;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod fs;
pub mod handover;
pub mod histogram;
pub mod log_limit;
pub mod namespace;
pub mod peers;
pub mod reader;
pub mod service;

pub use error::{Error, Result};

/// Locks `m`, also after a panic of another holder: every holder leaves what the mutex guards
/// consistent between statements, so the data is still good.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
