//! The data path of Fluid: mount point URLs, sources, the dataset namespace, the tiered block
//! cache and the FUSE adapter. The `fluid-fuse` binary is a thin command line over this.

pub mod cache;
pub mod cli;
pub mod control;
pub mod dataset;
pub mod error;
pub mod fs;
pub mod metrics;
pub mod mountinfo;
pub mod mountpoint;
pub mod namespace;
pub mod reader;
pub mod source;
pub mod volume;

pub use error::{Error, Result};
