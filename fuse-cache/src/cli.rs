//! The command line of `fluid-fuse`: one config struct per subcommand, built by clap.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use fluid_volume::daemon::flag;
use fluid_volume::size::BlockSize;

#[derive(Parser, Debug)]
#[command(
    name = "fluid-fuse",
    version,
    about = "Mounts a Fluid dataset (S3, OSS, Ceph, HDFS, local) as a read-only file system with a tiered block cache"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Mount a dataset and serve it until SIGINT/SIGTERM (runs in the foreground). The
    /// process that mounts keeps the FUSE connection and runs a serving process on it: a
    /// crashed serving process is replaced without readers seeing an error (Linux 6.9+).
    Mount(Box<MountArgs>),
    /// The serving process of a mount, started by `mount` (not for direct use).
    #[command(hide = true)]
    Serve(Box<ServeArgs>),
    /// Load paths of the mounted dataset into the cache of a running daemon, with progress.
    Warmup(WarmupArgs),
    /// Print the cache figures of a running daemon.
    Stats(ControlArgs),
    /// Drop the cached blocks of paths from every tier of a running daemon.
    Evict(EvictArgs),
    /// Replace the serving process of a running mount (e.g. with a newer fluid-fuse binary)
    /// without unmounting: readers stall for the hand-over, and see no error.
    Upgrade(UpgradeArgs),
}

#[derive(Args, Debug)]
pub struct MountArgs {
    /// Directory to mount on (must exist).
    #[arg(long = flag::MOUNTPOINT)]
    pub mountpoint: PathBuf,
    /// Dataset YAML: a Fluid Dataset (spec.mounts[]: mountPoint, name, path, options, readOnly).
    #[arg(long = flag::DATASET, conflicts_with = "mount", required_unless_present = "mount")]
    pub dataset: Option<PathBuf>,
    /// A mount point URL (s3://bucket/prefix, oss://bucket/prefix, hdfs://host:port/path,
    /// local:///dir); repeat for several, each then appears as /m0, /m1, ...
    #[arg(long)]
    pub mount: Vec<String>,
    /// An option for every --mount, KEY=VALUE (endpoint, region, path-style, access-key,
    /// secret-key, ...); repeatable. Secrets may also come from the environment.
    #[arg(long = "option", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// A cache tier, fastest first: `mem:2GiB`, `ssd:/var/cache/fluid:100GiB,high=0.95,low=0.7`
    /// or `hdd:DIR:SIZE`. Repeat for several tiers. Default: mem:1GiB.
    #[arg(long = flag::TIER, value_name = "SPEC")]
    pub tiers: Vec<String>,
    /// Cache block size, 64KiB to 64MiB (e.g. 4MiB). Disk tiers remember the size their blocks
    /// were cut at and drop blocks of another size when reopened.
    #[arg(long = flag::BLOCK_SIZE, default_value_t = BlockSize::DEFAULT, value_parser = BlockSize::from_flag)]
    pub block_size: BlockSize,
    /// How long file attributes are trusted before asking the source again.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub attr_ttl: Duration,
    /// How long directory entries and listings are trusted.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub entry_ttl: Duration,
    /// How long a missing name is remembered as missing.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub negative_ttl: Duration,
    /// Largest readahead window of a sequential reader, in blocks.
    #[arg(long, default_value_t = 16)]
    pub readahead_blocks: u64,
    /// What a reader at random offsets fetches per miss, in aligned pieces of this size
    /// (merged when adjacent), instead of whole blocks: a 4 KiB read costs a small request,
    /// not a block's. The pieces are cached like blocks. 0, or a size not below the block
    /// size, fetches whole blocks.
    #[arg(long, default_value = "64KiB", value_parser = fluid_volume::size::size_flag)]
    pub random_fetch_size: u64,
    /// Serve Prometheus metrics (OpenMetrics text on GET /metrics) on this address, e.g.
    /// 127.0.0.1:9400; port 0 takes a free one. The address is printed as `FLUID-FUSE METRICS
    /// http://HOST:PORT/metrics` before the ready line, and stays the same when the serving
    /// process is replaced.
    #[arg(long)]
    pub metrics: Option<std::net::SocketAddr>,
    /// Serve the CacheNode gRPC service here (unix:///run/fluid/VOL.sock or tcp://host:port).
    #[arg(long = flag::CONTROL)]
    pub control: Option<String>,
    /// Write this file once the mount is ready (a supervisor waits for it); removed at exit.
    #[arg(long = flag::READY_FILE)]
    pub ready_file: Option<PathBuf>,
    /// Let users other than the one mounting read the files (FUSE allow_other).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub allow_other: bool,
    /// FUSE worker threads that take requests from the kernel.
    #[arg(long, default_value_t = 2)]
    pub fuse_threads: usize,
    /// Open files the memory tier holds whole in kernel passthrough mode (Linux 6.9+, as
    /// root): the kernel then reads them from the tier's memory itself, without a request to
    /// the daemon. Off, every read goes through the daemon.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub passthrough: bool,
    /// Replace a serving process that died without ending the FUSE connection: the kernel
    /// sends the requests it left unanswered to its successor (FUSE_NOTIFY_RESEND, Linux
    /// 6.9+), so readers see a short stall and no error. Off (or on older kernels), a crash
    /// ends the connection: readers get "transport endpoint is not connected" until the
    /// mount is replaced (the node plugin does that and re-binds the pods' mounts).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub resend: bool,
    /// Listen here (a unix socket path) for `fluid-fuse upgrade`.
    #[arg(long = flag::KEEPER_SOCKET)]
    pub keeper_socket: Option<PathBuf>,
    #[command(flatten)]
    pub peers: PeerArgs,
}

/// The distributed cache: the nodes serving one Dataset share their caches. Each block has an
/// owner among them (rendezvous hashing over the members); a node reads a block it does not
/// own from its owner, which fetches it from the source once for all of them.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Distributed cache")]
pub struct PeerArgs {
    /// The nodes sharing the cache, NAME=ENDPOINT (tcp://HOST:PORT: a node's --peer-listen,
    /// or its node plugin's cache endpoint), comma separated or repeated; this node among
    /// them as --peer-name.
    #[arg(
        long,
        value_name = "NAME=ENDPOINT",
        value_delimiter = ',',
        conflicts_with = "peers_file"
    )]
    pub peers: Vec<String>,
    /// A file of the nodes sharing the cache, `NAME ENDPOINT` a line (`#` comments); read
    /// again when it changes, so members join and leave without a restart (the node plugin
    /// writes it from the Kubernetes Nodes).
    #[arg(long = flag::PEERS_FILE, value_name = "FILE")]
    pub peers_file: Option<PathBuf>,
    /// This node's name among the members. Default: the host name.
    #[arg(long = flag::PEER_NAME)]
    pub peer_name: Option<String>,
    /// Serve this node's blocks to the others here (tcp://HOST:PORT); needs the token.
    #[arg(long, value_name = "ENDPOINT")]
    pub peer_listen: Option<String>,
    /// The Dataset as namespace/name, sent with every block request so that a node plugin's
    /// cache endpoint can pass it to the right daemon.
    #[arg(long = flag::PEER_DATASET, value_name = "NAMESPACE/NAME", default_value = "")]
    pub peer_dataset: String,
    /// A peer that sends nothing for this long (it says "still fetching" every 250 ms while
    /// its source is slow) is skipped: the block is read from the source, and the peer is
    /// backed off (2 s, doubling to 30 s). At least 500ms.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_peer_timeout)]
    pub peer_timeout: Duration,
    /// Where a block read from the node that owns it is kept here: `memory` (the memory tier
    /// only: hot blocks stay near their readers, the disks hold each block once in the
    /// cluster), `none`, or `all` (every tier, like an owned block).
    #[arg(long, value_enum, default_value_t = PeerCopy::Memory)]
    pub peer_copy: PeerCopy,
    /// The token the nodes share: sent with every block request and required of every one
    /// served (the node plugins' cache token). 16 printable characters or more.
    #[arg(long, env = fluid_proto::cache_auth::TOKEN_ENV, hide_env_values = true, value_name = "TOKEN", value_parser = fluid_proto::cache_auth::parse_token)]
    pub peer_token: Option<fluid_proto::cache_auth::Token>,
}

/// `--peer-copy`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerCopy {
    Memory,
    None,
    All,
}

impl PeerCopy {
    pub fn keep(self) -> crate::cache::Keep {
        match self {
            PeerCopy::Memory => crate::cache::Keep::Memory,
            PeerCopy::None => crate::cache::Keep::Nothing,
            PeerCopy::All => crate::cache::Keep::All,
        }
    }
}

fn parse_peer_timeout(s: &str) -> std::result::Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(500) {
        return Err(format!(
            "{s} is shorter than 500ms: an owner that is fetching says so every 250 ms"
        ));
    }
    Ok(d)
}

#[derive(Args, Debug)]
pub struct UpgradeArgs {
    /// The mount's `--keeper-socket`.
    #[arg(long)]
    pub keeper_socket: PathBuf,
    /// The fluid-fuse binary to serve with from now on; default: the one the mount runs.
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// How long to wait for the new serving process.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// `fluid-fuse serve`: the mount's arguments and the descriptors the keeper hands over.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub mount: MountArgs,
    /// The /dev/fuse descriptor of the mount.
    #[arg(long)]
    pub fuse_fd: i32,
    /// The hand-over journal (a memory file of the keeper).
    #[arg(long)]
    pub journal_fd: i32,
    /// A pipe to tell the keeper that requests are answered.
    #[arg(long)]
    pub ready_fd: i32,
    /// The listening socket for --metrics (the keeper binds it once, for every serving
    /// process).
    #[arg(long)]
    pub metrics_fd: Option<i32>,
    /// Serving processes before this one; above 0, the connection is taken over.
    #[arg(long, default_value_t = 0)]
    pub generation: u64,
}

#[derive(Args, Debug)]
pub struct ControlArgs {
    /// The daemon's control endpoint, as given to `mount --control`.
    #[arg(long)]
    pub control: String,
}

#[derive(Args, Debug)]
pub struct WarmupArgs {
    #[command(flatten)]
    pub control: ControlArgs,
    /// Files read at once.
    #[arg(long, default_value_t = 8)]
    pub parallelism: u32,
    /// Dataset paths to load (files or directories); `/` is everything.
    #[arg(required = true)]
    pub paths: Vec<String>,
}

#[derive(Args, Debug)]
pub struct EvictArgs {
    #[command(flatten)]
    pub control: ControlArgs,
    /// Dataset paths whose cached blocks are dropped.
    #[arg(required = true)]
    pub paths: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tiers;
    use fluid_volume::daemon::MountCommand;
    use fluid_volume::tier::{Medium, TierSpec, Tiers};

    /// What the node plugin passes is what `fluid-fuse mount` reads: the flags are named once
    /// (`fluid_volume::daemon::flag`), and this parses the supervisor's command line back.
    #[test]
    fn the_supervisors_command_line_parses_to_the_same_mount() {
        let command = MountCommand {
            mountpoint: "/var/lib/kubelet/staging/vol".into(),
            dataset: "/run/fluid/vol/dataset.yaml".into(),
            tiers: Tiers::new(vec![
                TierSpec::Mem { quota: 64 << 20 },
                TierSpec::disk(Medium::Ssd, "/var/cache/fluid/vol", 1 << 30),
            ])
            .unwrap(),
            block_size: BlockSize::from_flag("1MiB").unwrap(),
            control: "/run/fluid/vol/control.sock".into(),
            ready_file: "/run/fluid/vol/ready".into(),
            keeper_socket: "/run/fluid/vol/keeper.sock".into(),
            peers: Some(fluid_volume::daemon::PeerFlags {
                file: "/var/lib/fluid/node/.peers/ml_imagenet".into(),
                name: "node-1".into(),
                dataset: "ml/imagenet".into(),
            }),
        };
        let argv = std::iter::once("fluid-fuse".into()).chain(command.args());
        let Command::Mount(m) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not a mount command");
        };
        assert_eq!(m.mountpoint, command.mountpoint);
        assert_eq!(m.dataset.as_ref(), Some(&command.dataset));
        assert_eq!(tiers(&m.tiers).unwrap(), command.tiers);
        assert_eq!(m.block_size, command.block_size);
        assert_eq!(
            m.control,
            Some(format!("unix://{}", command.control.display()))
        );
        assert_eq!(m.ready_file.as_ref(), Some(&command.ready_file));
        assert_eq!(m.keeper_socket.as_ref(), Some(&command.keeper_socket));
        let peers = command.peers.as_ref().unwrap();
        assert_eq!(m.peers.peers_file.as_ref(), Some(&peers.file));
        assert_eq!(m.peers.peer_name.as_ref(), Some(&peers.name));
        assert_eq!(m.peers.peer_dataset, peers.dataset);
    }
}
