//! Shared support for the integration tests: where the real test servers are and clients
//! for them. The servers are started by `scripts/services.sh up`; a test whose server is
//! absent fails with a message naming it, never passes silently.

pub mod services;
