//! What a running mount serves besides files: the control socket (`fluid-fuse stats`, evict,
//! hand-over) and the Prometheus `/metrics` endpoint.

pub mod control;
pub mod metrics;
