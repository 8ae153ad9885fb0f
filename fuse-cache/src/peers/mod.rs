//! The nodes that serve a Dataset together (issue 17, the distributed cache): who they are
//! (`list`: a peers flag or file; `membership`: the current list, the file re-read when it
//! changes; Kubernetes membership comes later) and which of them owns each block (`owner`:
//! rendezvous hashing). Not yet wired to the read path.

pub mod list;
pub mod membership;
pub mod owner;

pub use membership::Membership;
pub use owner::{Member, Owners};
