//! The nodes that serve a Dataset together share one cache (the distributed cache): who they
//! are (`list`: a peers flag or file; `membership`: the current list, the file re-read when it
//! changes; in Kubernetes the node plugin writes that file from the Nodes), which of them owns
//! each block (`owner`: rendezvous hashing), how a block travels between them (`wire`) and
//! how this node asks the others (`cluster`). The owner's side is `Control::read_block`.

pub mod cluster;
pub mod list;
pub mod membership;
pub mod owner;
pub mod wire;

pub use cluster::Cluster;
pub use membership::Membership;
pub use owner::{Member, Owners};

use std::sync::Arc;
use std::time::Duration;

use fluid_proto::cache_auth::BearerToken;

use crate::cli::PeerArgs;
use crate::error::{Error, Result};

/// How often a peers file is looked at for changes.
const PEERS_FILE_POLL: Duration = Duration::from_secs(2);

/// Checks the flags of the distributed cache (the keeper does, before it mounts).
pub fn check(args: &PeerArgs) -> Result<()> {
    membership(args).map(|_| ())
}

/// The members `args` give, or `None` for a private cache.
fn membership(args: &PeerArgs) -> Result<Option<Membership>> {
    let membership = match (&args.peers_file, args.peers.is_empty()) {
        (Some(file), _) => Membership::from_file(file)?,
        (None, false) => Membership::fixed(list::from_flag(&args.peers)?),
        (None, true) => {
            if args.peer_listen.is_some() {
                return Err(Error::invalid(
                    "--peer-listen",
                    "serving blocks to peers needs the peers: give --peers or --peers-file",
                ));
            }
            return Ok(None);
        }
    };
    if args.peer_listen.is_some() && args.peer_token.is_none() {
        return Err(Error::invalid(
            "--peer-listen",
            format!(
                "a cache endpoint open to the network needs the shared token: give --peer-token or {}",
                fluid_proto::cache_auth::TOKEN_ENV
            ),
        ));
    }
    Ok(Some(membership))
}

/// The cluster `args` describe, or `None` when no peers are given (a private cache). Starts
/// watching the peers file; call from within the runtime.
pub fn join(args: &PeerArgs) -> Result<Option<Arc<Cluster>>> {
    let Some(membership) = membership(args)? else {
        return Ok(None);
    };
    let membership = Arc::new(membership);
    let me = match &args.peer_name {
        Some(name) => name.clone(),
        None => host_name()?,
    };
    if !membership.owners().members().any(|m| m.name == me) {
        tracing::warn!(
            me = %me,
            "this node is not among the peers: it owns no block and reads every one from a peer"
        );
    }
    let token = BearerToken::new(args.peer_token.as_ref().map(|t| t.as_str()))
        .map_err(|e| Error::invalid("--peer-token", e))?;
    let settings = cluster::Settings {
        me,
        dataset: args.peer_dataset.clone(),
        timeout: args.peer_timeout,
        token,
    };
    tokio::spawn(membership.clone().watch(PEERS_FILE_POLL));
    Ok(Some(Arc::new(Cluster::new(settings, membership))))
}

/// This machine's host name, the default member name.
fn host_name() -> Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the live buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(Error::io(
            "reading the host name (give --peer-name)",
            std::io::Error::last_os_error(),
        ));
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}
