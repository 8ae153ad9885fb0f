//! The `fluid-fuse mount` command line of a supervised daemon: the flags a supervisor (the
//! node plugin) passes, named once here. `fluid-fuse`'s clap definition takes its flag names
//! from [`flag`], and its tests parse [`MountCommand::args`] back, so the two cannot drift.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::size::BlockSize;
use crate::tier::Tiers;

/// The long names of `fluid-fuse mount`'s flags that a supervisor sets.
pub mod flag {
    pub const MOUNTPOINT: &str = "mountpoint";
    pub const DATASET: &str = "dataset";
    pub const TIER: &str = "tier";
    pub const BLOCK_SIZE: &str = "block-size";
    pub const CONTROL: &str = "control";
    pub const READY_FILE: &str = "ready-file";
    pub const KEEPER_SOCKET: &str = "keeper-socket";
    pub const PEERS_FILE: &str = "peers-file";
    pub const PEER_NAME: &str = "peer-name";
    pub const PEER_DATASET: &str = "peer-dataset";
}

/// A daemon that shares its Dataset's cache with the other nodes: the members (a peers file
/// its supervisor keeps), its own name among them, and the Dataset its block requests name.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerFlags {
    pub file: PathBuf,
    pub name: String,
    pub dataset: String,
}

/// One supervised mount: a dataset file at a mount point, its tiers and block size, and the
/// sockets and ready file its supervisor talks to it through.
#[derive(Clone, Debug, PartialEq)]
pub struct MountCommand {
    pub mountpoint: PathBuf,
    pub dataset: PathBuf,
    pub tiers: Tiers,
    pub block_size: BlockSize,
    /// The control socket's path (served as `unix://PATH`).
    pub control: PathBuf,
    pub ready_file: PathBuf,
    pub keeper_socket: PathBuf,
    /// Shares the cache with the Dataset's other nodes.
    pub peers: Option<PeerFlags>,
}

impl MountCommand {
    /// The arguments after the binary: `mount --mountpoint … --keeper-socket …`.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["mount".into()];
        let mut set = |name: &str, value: OsString| {
            args.push(format!("--{name}").into());
            args.push(value);
        };
        set(flag::MOUNTPOINT, self.mountpoint.clone().into());
        set(flag::DATASET, self.dataset.clone().into());
        for t in self.tiers.specs() {
            set(flag::TIER, t.to_string().into());
        }
        set(flag::BLOCK_SIZE, self.block_size.to_string().into());
        set(
            flag::CONTROL,
            format!("unix://{}", self.control.display()).into(),
        );
        set(flag::READY_FILE, self.ready_file.clone().into());
        set(flag::KEEPER_SOCKET, self.keeper_socket.clone().into());
        if let Some(p) = &self.peers {
            set(flag::PEERS_FILE, p.file.clone().into());
            set(flag::PEER_NAME, p.name.clone().into());
            set(flag::PEER_DATASET, p.dataset.clone().into());
        }
        args
    }
}
