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
