//! What the keeper and its serving process agree on: the descriptors the keeper puts in the
//! serving process, what the serving process writes on its ready pipe, and its exit codes.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::error::{Error, Result};

/// Descriptor numbers of the connection, the journal and the ready pipe in the serving
/// process.
pub const FUSE_FD: RawFd = 3;
pub const JOURNAL_FD: RawFd = 4;
pub const READY_FD: RawFd = 5;
/// ... and of the --metrics listener, when there is one.
pub const METRICS_FD: RawFd = 6;

/// The exit status of a serving process that stopped for an upgrade (SIGUSR1), its cache
/// index flushed.
pub const HANDED_OVER: i32 = 75;

/// The exit status of a successor that cannot take the connection over (the journal is
/// incomplete): the keeper then ends the connection rather than try again.
pub const CANNOT_TAKE_OVER: i32 = 76;

/// What the serving process tells the keeper on its ready pipe once it answers requests.
pub const READY: &str = "serving";
/// ... followed by this when the kernel can resend requests (the keeper may then replace a
/// dead serving process without ending the connection).
pub const CAN_RESEND: &str = "resend";

/// Takes the descriptor `fd` as ours. The keeper put it there for us (see [`super::keeper`]).
pub fn inherited(fd: RawFd, what: &str) -> Result<OwnedFd> {
    // SAFETY: fcntl(F_GETFD) only checks that the descriptor is open.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(Error::invalid(
            what,
            format!(
                "descriptor {fd} is not open (fluid-fuse serve is started by fluid-fuse mount)"
            ),
        ));
    }
    // SAFETY: the descriptor is open and nothing else in this process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
