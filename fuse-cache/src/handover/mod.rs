//! Upgrades and crashes that readers do not notice: the keeper holds the FUSE connection and
//! the journal, the serving process answers the kernel, and a successor takes over from the
//! journal (see [`keeper`]).

pub mod journal;
pub mod keeper;
pub mod protocol;
pub mod serve;
