//! The contract between Fluid's three binaries: what the controller writes into a volume
//! context, what the node plugin reads from it and passes to `fluid-fuse` on its command line,
//! and what the daemon serves. Every value that crosses a process boundary has one type here
//! whose constructor enforces every rule the daemon enforces, so a bad setting is refused where
//! it enters (a StorageClass parameter, a CRD field, a flag), never later on a node.
//!
//! Strings appear only at the edges: [`context::VolumeContext::from_map`] and `to_map`, the
//! Dataset YAML, and the parsers behind each command line flag.

pub mod atomic;
pub mod context;
pub mod daemon;
pub mod dataset;
pub mod endpoints;
pub mod error;
pub mod labels;
pub mod logging;
pub mod mountinfo;
pub mod mountpoint;
pub mod options;
pub mod roots;
pub mod size;
pub mod tier;
pub mod upgrade;

pub use error::{Error, Result};
