//! The resolved configuration of a mount, built once from its flags ([`MountArgs`]): the
//! dataset's mounts with their options, the cache tiers, the read and namespace settings, the
//! FUSE options. The keeper builds it to check the flags and mount; the serving process builds
//! it to serve.
//!
//! The keeper still hands the serving process its flags (its command line after `mount`), not
//! this resolved form: a keeper may start a serving binary of another release during an
//! upgrade, and both sides understand the command line. Handing over this struct instead
//! needs a versioned encoding both old and new binaries agree on (issue 26).

use fluid_volume::dataset::{self, Mount};
use fluid_volume::tier::{TierSpec, Tiers};

use crate::cli::{MountArgs, PeerArgs};
use crate::error::{Error, Result};
use crate::namespace::Ttl;
use crate::reader::ReadConfig;

/// What a mount serves and how, from its flags.
#[derive(Clone, Debug)]
pub struct MountConfig {
    /// The dataset's mounts (`--dataset` or `--mount`), every `--option` added.
    pub mounts: Vec<Mount>,
    /// The cache tiers, fastest first (default: 1 GiB of memory).
    pub tiers: Tiers,
    pub block_size: u64,
    pub ttl: Ttl,
    pub read: ReadConfig,
    /// Serve the CacheNode gRPC service here.
    pub control: Option<String>,
    pub allow_other: bool,
    pub fuse_threads: usize,
    pub passthrough: bool,
    pub resend: bool,
    /// The distributed cache.
    pub peers: PeerArgs,
}

impl MountConfig {
    /// Resolves the flags: reads `--dataset`, parses the tiers. (The peer flags are checked
    /// by `peers::check` and `peers::join`.)
    pub fn from_args(args: &MountArgs) -> Result<MountConfig> {
        let block_size = args.block_size.bytes();
        Ok(MountConfig {
            mounts: load_mounts(args)?,
            tiers: tiers(&args.tiers)?,
            block_size,
            ttl: Ttl {
                attr: args.attr_ttl,
                entry: args.entry_ttl,
                negative: args.negative_ttl,
            },
            read: ReadConfig {
                block_size,
                max_readahead_blocks: args.readahead_blocks.max(1),
                random_fetch_bytes: args.random_fetch_size,
                ..ReadConfig::default()
            },
            control: args.control.clone(),
            allow_other: args.allow_other,
            fuse_threads: args.fuse_threads.max(1),
            passthrough: args.passthrough,
            resend: args.resend,
            peers: args.peers.clone(),
        })
    }

    /// The mount options (and who may use the mount): the keeper mounts with them, and the
    /// serving process's session is told the same.
    pub fn mount_options(&self) -> fuser::Config {
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::RO,
            fuser::MountOption::FSName(fluid_volume::mountinfo::FLUID_SOURCE.into()),
            fuser::MountOption::Subtype("fluid".into()),
            fuser::MountOption::NoDev,
            fuser::MountOption::NoSuid,
        ];
        if self.allow_other {
            config.acl = fuser::SessionACL::All;
        }
        config
    }

    /// The serving process's session settings (with the mount options).
    pub fn session(&self) -> fuser::Config {
        let mut config = self.mount_options();
        config.n_threads = Some(self.fuse_threads);
        config
    }
}

/// The mounts of `--dataset` or `--mount`, with every `--option` added before they are checked.
fn load_mounts(args: &MountArgs) -> Result<Vec<Mount>> {
    let (mut specs, field) = match &args.dataset {
        Some(file) => (dataset::load_file(file)?, "spec.mounts"),
        None => (dataset::from_urls(&args.mount), "--mount"),
    };
    for opt in &args.options {
        let (k, v) = opt.split_once('=').ok_or_else(|| {
            Error::invalid(
                "--option",
                format!("{:?} is not KEY=VALUE", opt.split('=').next().unwrap_or("")),
            )
        })?;
        for m in &mut specs {
            m.options.insert(k.to_string(), v.to_string());
        }
    }
    Ok(dataset::resolve(specs, field)?)
}

/// The `--tier` flags; none: 1 GiB of memory.
pub(crate) fn tiers(flags: &[String]) -> Result<Tiers> {
    if flags.is_empty() {
        return Ok(Tiers::new(vec![TierSpec::Mem { quota: 1 << 30 }])?);
    }
    Ok(Tiers::parse_each(flags)?)
}
