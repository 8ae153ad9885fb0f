//! The command line of `fluid-fuse`: one config struct per subcommand, built by clap.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use fluid_proto::Endpoint;
use fluid_proto::fluid::cache_node_client::CacheNodeClient;
use fluid_proto::fluid::cache_node_server::CacheNodeServer;
use fluid_proto::fluid::{EvictRequest, GetStatsRequest, WarmupRequest};

use fluid_volume::dataset::{self, Mount};
use fluid_volume::size::BlockSize;
use fluid_volume::tier::{TierSpec, Tiers};

use crate::cache::{BlockCache, CacheOptions};
use crate::control::Control;
use crate::error::{Error, Result};
use crate::fs::FluidFs;
use crate::namespace::{Namespace, Ttl};
use crate::reader::{ReadConfig, Reader};

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
    /// Mount a dataset and serve it until SIGINT/SIGTERM (runs in the foreground).
    Mount(Box<MountArgs>),
    /// Load paths of the mounted dataset into the cache of a running daemon, with progress.
    Warmup(WarmupArgs),
    /// Print the cache figures of a running daemon.
    Stats(ControlArgs),
    /// Drop the cached blocks of paths from every tier of a running daemon.
    Evict(EvictArgs),
}

#[derive(Args, Debug)]
pub struct MountArgs {
    /// Directory to mount on (must exist).
    #[arg(long)]
    pub mountpoint: PathBuf,
    /// Dataset YAML: a Fluid Dataset (spec.mounts[]: mountPoint, name, path, options, readOnly).
    #[arg(long, conflicts_with = "mount", required_unless_present = "mount")]
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
    #[arg(long = "tier", value_name = "SPEC")]
    pub tiers: Vec<String>,
    /// Cache block size, 64KiB to 64MiB (e.g. 4MiB). Disk tiers remember the size their blocks
    /// were cut at and drop blocks of another size when reopened.
    #[arg(long, default_value_t = BlockSize::DEFAULT, value_parser = BlockSize::from_flag)]
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
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9400).
    #[arg(long)]
    pub metrics: Option<std::net::SocketAddr>,
    /// Serve the CacheNode gRPC service here (unix:///run/fluid/VOL.sock or tcp://host:port).
    #[arg(long)]
    pub control: Option<String>,
    /// Write this file once the mount is ready (a supervisor waits for it); removed at exit.
    #[arg(long)]
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

pub fn run(cli: Cli) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    match cli.command {
        Command::Mount(args) => mount(&rt, *args),
        Command::Warmup(args) => rt.block_on(warmup(args)),
        Command::Stats(args) => rt.block_on(stats(args)),
        Command::Evict(args) => rt.block_on(evict(args)),
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

fn tiers(args: &MountArgs) -> Result<Tiers> {
    if args.tiers.is_empty() {
        return Ok(Tiers::new(vec![TierSpec::Mem { quota: 1 << 30 }])?);
    }
    Ok(Tiers::parse_each(&args.tiers)?)
}

fn mount(rt: &tokio::runtime::Runtime, mut args: MountArgs) -> Result<()> {
    let mounts = load_mounts(&args)?;
    let block_size = args.block_size.bytes();
    let tiers = tiers(&args)?;
    check_mountpoint(&args.mountpoint)?;
    // Canonical, as /proc/self/mountinfo shows it, for the unmount watch.
    args.mountpoint = std::fs::canonicalize(&args.mountpoint)
        .map_err(|e| Error::io(format!("--mountpoint {}", args.mountpoint.display()), e))?;

    let (reader, control) = rt.block_on(async {
        let mut sources = Vec::with_capacity(mounts.len());
        for m in mounts {
            let src = crate::source::open(&m.mount_point).await?;
            src.check().await.map_err(|e| {
                Error::invalid(
                    format!("mount {:?} ({})", m.name, m.mount_point.url),
                    e.to_string(),
                )
            })?;
            sources.push((m, src));
        }
        let options = CacheOptions {
            block_size,
            ..CacheOptions::default()
        };
        let cache = Arc::new(BlockCache::open_with(tiers, options).await?);
        let ttl = Ttl {
            attr: args.attr_ttl,
            entry: args.entry_ttl,
            negative: args.negative_ttl,
        };
        let ns = Arc::new(Namespace::new(sources, ttl));
        let cfg = ReadConfig {
            block_size,
            max_readahead_blocks: args.readahead_blocks.max(1),
            ..ReadConfig::default()
        };
        let reader = Arc::new(Reader::new(ns, cache, cfg));
        let control = Arc::new(Control {
            reader: reader.clone(),
        });
        Ok::<_, Error>((reader, control))
    })?;

    let stop = Arc::new(tokio::sync::Notify::new());
    if let Some(addr) = args.metrics {
        let bound = rt.block_on(crate::metrics::serve(addr, control.clone()))?;
        tracing::info!("metrics on http://{bound}/metrics");
    }
    let mut control_server = None;
    if let Some(ep) = &args.control {
        let ep: Endpoint = ep
            .parse()
            .map_err(|e: fluid_proto::EndpointError| Error::invalid("--control", e.to_string()))?;
        let bound = rt
            .block_on(ep.bind())
            .map_err(|e| Error::invalid("--control", e.to_string()))?;
        let router = tonic::transport::Server::builder()
            .add_service(CacheNodeServer::new(control.as_ref().clone()));
        let stop = stop.clone();
        control_server = Some(rt.spawn(bound.serve(router, async move { stop.notified().await })));
    }

    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName(fluid_volume::mountinfo::FLUID_SOURCE.into()),
        fuser::MountOption::Subtype("fluid".into()),
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
    ];
    if args.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(args.fuse_threads.max(1));
    let fs = FluidFs::new(rt.handle().clone(), reader.clone(), args.passthrough);
    let session = fuser::spawn_mount(fs, &args.mountpoint, &config)
        .map_err(|e| Error::io(format!("mounting FUSE at {}", args.mountpoint.display()), e))?;

    // Before the ready line: whoever waits for it may unmount at once.
    let dev = mounted_dev(&args.mountpoint);
    raise_kernel_readahead(&args.mountpoint);
    if let Some(f) = &args.ready_file {
        std::fs::write(f, format!("{}\n", std::process::id()))
            .map_err(|e| Error::io(format!("writing {}", f.display()), e))?;
    }
    println!("FLUID-FUSE READY {}", args.mountpoint.display());
    tracing::info!("mounted at {}", args.mountpoint.display());

    rt.block_on(async {
        tokio::select! {
            _ = fluid_proto::endpoint::shutdown_signal() => {}
            _ = unmounted_everywhere(dev) => {
                tracing::warn!("the file system mounted at {} is mounted nowhere any more; exiting", args.mountpoint.display());
            }
        }
    });
    stop.notify_waiters();
    let unmounted = session.umount_and_join().or_else(|e| {
        // Busy (a reader still has files open) or already gone: detach it lazily, so no dead
        // "transport endpoint is not connected" mount is left behind when we exit.
        tracing::warn!(
            "unmounting {}: {e}; detaching it",
            args.mountpoint.display()
        );
        detach(&args.mountpoint)
    });
    rt.block_on(async {
        reader.cache.flush().await;
        if let Some(server) = control_server {
            let _ = server.await;
        }
    });
    if let Some(f) = &args.ready_file {
        let _ = std::fs::remove_file(f);
    }
    unmounted.map_err(|e| Error::io(format!("unmounting {}", args.mountpoint.display()), e))
}

/// The kernel caps a FUSE mount's readahead at its block-device default (128 KiB) whatever the
/// daemon asks for at init; raising the mount's bdi setting lets sequential readers send 1 MiB
/// requests. Best effort: without root or sysfs the mount still works, only with smaller reads.
fn raise_kernel_readahead(mountpoint: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(mountpoint) else {
        return;
    };
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    if let Err(e) = std::fs::write(&knob, "1024") {
        tracing::debug!("could not raise readahead at {knob}: {e}");
    }
}

/// Completes once nothing is mounted at `dir` any more (e.g. `fusermount3 -u` or `umount`
/// from outside), so the daemon does not outlive its mount.
/// The device (`major:minor`, as mountinfo spells it) of the file system mounted at `dir`.
fn mounted_dev(dir: &Path) -> Option<String> {
    fluid_volume::mountinfo::read()
        .ok()?
        .into_iter()
        .rfind(|m| m.mount_point == dir)
        .map(|m| m.dev)
}

/// Resolves once no mount of the file system `dev` is left: it was unmounted by someone else.
/// Not the mount point alone: the node plugin moves a kept volume's mount (a bind to its park
/// folder, then an unmount of the staging path), and the daemon serves on. No `dev` (our mount
/// was gone the moment we looked) resolves at once.
async fn unmounted_everywhere(dev: Option<String>) {
    let Some(dev) = dev else { return };
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Ok(mounts) = fluid_volume::mountinfo::read()
            && !mounts.iter().any(|m| m.dev == dev)
        {
            return;
        }
    }
}

/// Lazily detaches whatever is mounted at `dir`; fine when nothing is.
fn detach(dir: &Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: c is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    match std::io::Error::last_os_error() {
        e if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::ENOENT) => {
            Ok(())
        }
        e => Err(e),
    }
}

/// The mount point must be a directory. A dead FUSE mount left by a crashed daemon answers
/// ENOTCONN: it is detached so the new daemon can mount in its place.
fn check_mountpoint(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::invalid(
            "--mountpoint",
            format!("{} is not a directory", dir.display()),
        )),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            tracing::warn!("{} is a dead FUSE mount; detaching it", dir.display());
            detach(dir).map_err(|e| Error::io(format!("detaching {}", dir.display()), e))
        }
        Err(e) => Err(Error::io(format!("--mountpoint {}", dir.display()), e)),
    }
}

async fn client(args: &ControlArgs) -> Result<CacheNodeClient<tonic::transport::Channel>> {
    let ep: Endpoint = args
        .control
        .parse()
        .map_err(|e: fluid_proto::EndpointError| Error::invalid("--control", e.to_string()))?;
    let channel = ep
        .connect()
        .await
        .map_err(|e| Error::unavailable("fluid-fuse daemon", e.to_string()))?;
    Ok(CacheNodeClient::new(channel))
}

fn status_error(s: tonic::Status) -> Error {
    Error::unavailable("fluid-fuse daemon", s.message().to_string())
}

async fn warmup(args: WarmupArgs) -> Result<()> {
    let mut c = client(&args.control).await?;
    let req = WarmupRequest {
        paths: args.paths.clone(),
        parallelism: args.parallelism,
        ..Default::default()
    };
    let mut stream = c.warmup(req).await.map_err(status_error)?.into_inner();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}) {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut last = None;
    while let Some(p) = stream.message().await.map_err(status_error)? {
        bar.set_length(p.bytes_total);
        bar.set_position(p.bytes_done);
        bar.set_message(format!("{}/{} files", p.files_done, p.files_total));
        last = Some(p);
    }
    bar.finish();
    let p = last
        .ok_or_else(|| Error::unavailable("fluid-fuse daemon", "warm-up ended without a report"))?;
    println!(
        "warmed {} of {} files, {} bytes ({} were already cached){}",
        p.files_done,
        p.files_total,
        p.bytes_done,
        p.bytes_already_cached,
        if p.quota_reached {
            "; stopped: the cache is full"
        } else {
            ""
        }
    );
    for e in &p.errors {
        eprintln!("  {}: {}", e.path, e.message);
    }
    if p.errors.is_empty() {
        Ok(())
    } else {
        Err(Error::unavailable(
            "warm-up",
            format!("{} paths failed", p.errors.len()),
        ))
    }
}

async fn stats(args: ControlArgs) -> Result<()> {
    let s = client(&args)
        .await?
        .get_stats(GetStatsRequest::default())
        .await
        .map_err(status_error)?
        .into_inner();
    println!(
        "{:<5} {:<32} {:>14} {:>14} {:>8} {:>10} {:>10}",
        "TIER", "PATH", "USED", "CAPACITY", "BLOCKS", "HITS", "EVICTIONS"
    );
    for t in &s.tiers {
        println!(
            "{:<5} {:<32} {:>14} {:>14} {:>8} {:>10} {:>10}",
            t.medium, t.path, t.used_bytes, t.capacity_bytes, t.blocks, t.hits, t.evictions
        );
    }
    let total = s.hits + s.misses;
    let ratio = if total == 0 {
        0.0
    } else {
        s.hits as f64 / total as f64
    };
    println!(
        "hits {}  misses {}  hit ratio {:.3}",
        s.hits, s.misses, ratio
    );
    println!(
        "source: {} bytes in {} requests; served {} bytes; {} opens by kernel passthrough",
        s.source_bytes_read, s.source_requests, s.bytes_served, s.passthrough_opens
    );
    Ok(())
}

async fn evict(args: EvictArgs) -> Result<()> {
    let r = client(&args.control)
        .await?
        .evict(EvictRequest {
            paths: args.paths,
            ..Default::default()
        })
        .await
        .map_err(status_error)?
        .into_inner();
    println!(
        "evicted {} blocks, {} bytes",
        r.blocks_evicted, r.bytes_freed
    );
    Ok(())
}
