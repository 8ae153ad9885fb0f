//! gRPC types for CSI v1.12 (`csi.v1`), the Fluid node cache service (`fluid.v1`) and the
//! kubelet's plugin registration (`pluginregistration`), plus [`endpoint`], the one way every
//! binary here serves or dials a gRPC endpoint.

mod authority;
pub mod cache_auth;
pub mod endpoint;
pub mod health;
pub mod http;
pub mod identity;

pub use endpoint::{Endpoint, EndpointError};

/// Container Storage Interface v1.12, package `csi.v1`.
pub mod csi {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("csi.v1");
}

/// The `CacheNode` service each `fluid-fuse` daemon serves, package `fluid.v1`.
pub mod fluid {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("fluid.v1");
}

/// The kubelet's plugin registration API (`pluginregistration/v1`), which the node plugin
/// serves instead of a node-driver-registrar sidecar.
pub mod registration {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("pluginregistration");
}
