//! `mountpoint-peer`: Mountpoint for Amazon S3's file system (the `mountpoint-s3-fs` library,
//! which `mount-s3` is built on) mounted read-only the way
//! `mount-s3 BUCKET DIR --read-only --endpoint-url URL --force-path-style --cache DIR
//! --max-cache-size MIB --max-memory-target MIB` mounts it, so that `make bench` can set it
//! beside fluid-fuse on the same bucket. Runs in the foreground until SIGINT or SIGTERM (then
//! unmounts); prints `MOUNTPOINT READY` once the mount answers. Credentials come from the AWS
//! environment variables, as for `mount-s3`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use mountpoint_s3_client::config::AddressingStyle;
use mountpoint_s3_client::user_agent::UserAgent;
use mountpoint_s3_fs::data_cache::{
    CacheLimit, DataCacheConfig, DiskDataCacheConfig, ManagedCacheDir,
};
use mountpoint_s3_fs::fs::{CacheConfig, TimeToLive};
use mountpoint_s3_fs::fuse::config::{FuseOptions, FuseSessionConfig, MountPoint};
use mountpoint_s3_fs::memory::{CandidateSize, PagedPool};
use mountpoint_s3_fs::s3::config::{
    ClientConfig, MemoryLimitSetting, PartConfig, Region, TargetThroughputSetting,
};
use mountpoint_s3_fs::s3::{Bucket, Prefix, S3Path};
use mountpoint_s3_fs::{
    MountpointConfig, Runtime, S3FilesystemConfig, Superblock, SuperblockConfig,
};

#[derive(Parser, Debug)]
#[command(
    about = "Mountpoint for Amazon S3 (mountpoint-s3-fs) mounted as mount-s3 would, for make bench"
)]
struct Args {
    /// The bucket to mount.
    bucket: String,
    /// Where to mount it.
    mountpoint: PathBuf,
    /// The S3 endpoint, e.g. http://127.0.0.1:8333 (path-style addressing).
    #[arg(long)]
    endpoint_url: String,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Cache object data on disk under this folder (mount-s3 `--cache`).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// The disk cache's limit in MiB (mount-s3 `--max-cache-size`).
    #[arg(long)]
    max_cache_size: Option<u64>,
    /// The memory Mountpoint aims to stay under, in MiB (mount-s3 `--max-memory-target`).
    #[arg(long, default_value_t = 2048)]
    max_memory_target: u64,
    /// FUSE threads (mount-s3 `--max-threads`).
    #[arg(long, default_value_t = 16)]
    max_threads: usize,
    /// Object and directory metadata lifetime in seconds (mount-s3 `--metadata-ttl`; its
    /// default with `--cache` is 60).
    #[arg(long, default_value_t = 60)]
    metadata_ttl: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mem_limit = usize::try_from(args.max_memory_target << 20)?;
    let part_size = 8 << 20;

    let session_config = FuseSessionConfig::new(
        MountPoint::new(&args.mountpoint).context("the mount point")?,
        FuseOptions {
            read_only: true,
            allow_other: true,
            allow_root: false,
            auto_unmount: false,
            clone_fd: false,
        },
        args.max_threads,
    )?;
    let fs_config = S3FilesystemConfig {
        read_only: true,
        cache_config: CacheConfig::new(TimeToLive::Duration(Duration::from_secs(
            args.metadata_ttl,
        ))),
        ..Default::default()
    };
    let mut managed = None;
    let disk_cache_config = match &args.cache {
        Some(dir) => {
            let dir = ManagedCacheDir::new_from_parent_with_cache_key(dir, None, true)
                .context("creating the cache folder")?;
            let config = DiskDataCacheConfig {
                cache_directory: dir.as_path_buf(),
                block_size: 1 << 20,
                limit: match args.max_cache_size {
                    Some(mib) => CacheLimit::TotalSize {
                        max_size: usize::try_from(mib << 20)?,
                    },
                    None => CacheLimit::default(),
                },
            };
            managed = Some(dir);
            Some(config)
        }
        None => None,
    };
    let data_cache = DataCacheConfig {
        disk_cache_config,
        express_cache_config: None,
    };

    let client_config = ClientConfig {
        region: Region::new_user_specified(args.region.clone()),
        endpoint_url: Some(args.endpoint_url.clone()),
        addressing_style: AddressingStyle::Path,
        dual_stack: false,
        transfer_acceleration: false,
        auth_config: Default::default(),
        requester_pays: false,
        expected_bucket_owner: None,
        throughput_target: TargetThroughputSetting::Default,
        bind: None,
        part_config: PartConfig::with_part_size(part_size)
            .validate(MemoryLimitSetting::Default(mem_limit))?,
        user_agent: UserAgent::new(Some("fluid-bench".to_string())),
        tls_config: None,
    };
    let pool = PagedPool::config()
        .with_candidate_sizes([CandidateSize::new(
            client_config.part_config.read_size_bytes,
        )])
        .with_memory_limit(mem_limit)
        .build();
    let client = client_config
        .create_client(pool.clone(), None)
        .context("creating the S3 client")?;
    let runtime = Runtime::new(client.event_loop_group());
    let s3_path = S3Path::new(
        Bucket::new(args.bucket.clone()).context("the bucket name")?,
        Prefix::new("").context("the prefix")?,
    );
    let superblock = Superblock::new(
        client.clone(),
        s3_path,
        SuperblockConfig {
            cache_config: fs_config.cache_config.clone(),
            s3_personality: fs_config.s3_personality,
        },
    );
    let mut session = MountpointConfig::new(session_config, fs_config, data_cache)?
        .create_fuse_session(superblock, client, runtime, pool)
        .context("mounting")?;
    if let Some(dir) = managed {
        session.run_on_close(Box::new(move || drop(dir)));
    }
    std::fs::metadata(&args.mountpoint).context("the new mount does not answer")?;
    println!("MOUNTPOINT READY");
    session.join().context("serving")?;
    Ok(())
}
