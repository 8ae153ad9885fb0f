//! The subcommands of `fluid-fuse` that talk to a running mount: `warmup`, `stats`, `evict`
//! and `upgrade` (`mount` and `serve` are the keeper and the serving process, in
//! [`crate::handover`]).

use fluid_proto::Endpoint;
use fluid_proto::fluid::cache_node_client::CacheNodeClient;
use fluid_proto::fluid::{EvictRequest, GetStatsRequest, WarmupRequest};

use crate::cli::{ControlArgs, EvictArgs, UpgradeArgs, WarmupArgs};
use crate::error::{Error, Result};

pub fn upgrade(args: UpgradeArgs) -> Result<()> {
    let binary = match &args.binary {
        Some(p) => Some(
            std::fs::File::open(p)
                .map_err(|e| Error::io(format!("--binary {}", p.display()), e))?,
        ),
        None => None,
    };
    let u = fluid_volume::upgrade::request(&args.keeper_socket, binary.as_ref(), args.timeout)?;
    println!(
        "upgraded: serving process generation {}, readers waited {:.0} ms at most",
        u.generation, u.stall_ms
    );
    Ok(())
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

pub async fn warmup(args: WarmupArgs) -> Result<()> {
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

pub async fn stats(args: ControlArgs) -> Result<()> {
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
    if !s.members.is_empty() {
        // A miss is read from the block's owner, or else from the source.
        let source_misses = s.misses.saturating_sub(s.peer_hits);
        println!(
            "blocks: {} local hits, {} peer hits ({} bytes), {} source misses; {} peer reads failed ({} bad checksums)",
            s.hits, s.peer_hits, s.peer_bytes, source_misses, s.peer_errors, s.peer_corrupt
        );
        println!(
            "served to peers: {} blocks, {} bytes; this node owns {} cached bytes",
            s.peer_served_blocks, s.peer_served_bytes, s.owned_bytes
        );
        println!("members ({}): {}", s.members.len(), s.members.join(", "));
    }
    println!(
        "source: {} bytes in {} requests; served {} bytes; {} opens by kernel passthrough",
        s.source_bytes_read, s.source_requests, s.bytes_served, s.passthrough_opens
    );
    println!(
        "inodes {} (files and directories the daemon keeps)",
        s.inodes
    );
    Ok(())
}

pub async fn evict(args: EvictArgs) -> Result<()> {
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
