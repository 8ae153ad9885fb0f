//! The `multinode` workload: three fluid-fuse daemons on this machine, each with its own mount,
//! cache and control socket, read the whole dataset (the epoch tree and the seq object) at
//! once, twice. Once as one shared cache (peers file, loopback peer endpoints: each block has
//! one owner and comes from the source once) and once as three private caches (each node reads
//! everything from the source), in the same run. Per epoch: the source bytes per dataset byte,
//! the wall time of the slowest node, files/s per node, and where the blocks came from.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fluid_proto::fluid::GetStatsResponse;
use serde::Serialize;

use crate::spec::DatasetSpec;
use crate::systems::{self, MountConfig, Mounted, System};
use crate::units;
use crate::workloads::{self, Ctx, Params};

const NODES: [&str; 3] = ["a", "b", "c"];
/// Shared by the members; a peer call without it is refused.
const TOKEN: &str = "bench-multinode-token-0123456789";

#[derive(Debug, Clone, Serialize)]
pub struct MultinodeRow {
    pub caches: String,
    pub epoch: u32,
    /// The slowest node's time to read the whole dataset.
    pub wall_s: f64,
    pub source_bytes: u64,
    /// Source bytes over the bytes of the dataset (each node reads all of it).
    pub source_per_dataset_byte: f64,
    /// Mean over the nodes of the epoch files each read per second.
    pub files_per_s_per_node: f64,
    pub local_hits: u64,
    pub peer_hits: u64,
    pub source_misses: u64,
    /// The largest node's peak resident memory (its daemon's process tree) over both epochs.
    pub peak_rss_bytes_per_node: Option<u64>,
}

/// One node: its mount and the socket its stats are read from.
struct Node {
    mounted: Mounted,
    control: PathBuf,
}

pub fn run(cfg: &MountConfig, spec: &DatasetSpec, params: &Params) -> Result<Vec<MultinodeRow>> {
    let mut rows = Vec::new();
    for shared in [true, false] {
        let label = if shared {
            "one shared cache (3 members)"
        } else {
            "three private caches"
        };
        eprintln!("[bench] multinode / {label}: starting");
        let r = run_one(cfg, spec, params, shared, label)
            .with_context(|| format!("multinode / {label}"))?;
        for row in &r {
            eprintln!(
                "[bench] multinode / {label}: epoch {}: {:.1} s, source {:.3}x the dataset, {:.0} files/s per node",
                row.epoch, row.wall_s, row.source_per_dataset_byte, row.files_per_s_per_node
            );
        }
        rows.extend(r);
    }
    Ok(rows)
}

fn run_one(
    cfg: &MountConfig,
    spec: &DatasetSpec,
    params: &Params,
    shared: bool,
    label: &str,
) -> Result<Vec<MultinodeRow>> {
    let root = cfg.work.join("multinode");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let peers_file = root.join("peers");
    std::fs::write(&peers_file, "")?;
    let mut nodes = Vec::new();
    for name in NODES {
        let mut c = cfg.clone();
        // Its own mount point, cache directory and log under the node's directory.
        c.work = root.join(name);
        let control = c.work.join("control.sock");
        std::fs::create_dir_all(&c.work)?;
        c.fluid_args
            .extend(["--control".into(), format!("unix://{}", control.display())]);
        if shared {
            c.fluid_args.extend([
                "--peers-file".into(),
                peers_file.display().to_string(),
                "--peer-name".into(),
                name.into(),
                "--peer-listen".into(),
                "tcp://127.0.0.1:0".into(),
                "--peer-token".into(),
                TOKEN.into(),
                // Three daemons and their readers share this machine's cores: a slow answer
                // is not a dead peer.
                "--peer-timeout".into(),
                "10s".into(),
            ]);
        }
        let mounted = systems::mount(System::Fluid, &c, &format!("multinode-{name}"))?;
        nodes.push(Node { mounted, control });
    }
    if shared {
        let mut lines = String::new();
        for (name, n) in NODES.iter().zip(&nodes) {
            let log = n.mounted.log.clone();
            let addr = fluid_tests::services::logged_listen(
                || std::fs::read_to_string(&log).unwrap_or_default(),
                "--peer-listen",
            )?;
            lines.push_str(&format!("{name} tcp://{addr}\n"));
        }
        std::fs::write(&peers_file, lines)?;
        wait_for_members(&nodes)?;
    }

    let dataset_bytes = spec.epoch_total_bytes() + spec.seq_bytes;
    let mut rows = Vec::new();
    let mut before = stats_of(&nodes)?;
    for epoch in 1..=2u32 {
        if params.drop_caches {
            systems::drop_caches()?;
        }
        let t0 = Instant::now();
        let order = workloads::epoch_order(spec, u64::from(epoch));
        let deadline = t0 + params.timeout;
        let files_per_s: Vec<f64> = std::thread::scope(|s| {
            let handles: Vec<_> = nodes
                .iter()
                .map(|n| {
                    let (order, mnt) = (&order, n.mounted.mountpoint.as_path());
                    s.spawn(move || read_all(mnt, spec, params, deadline, order))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| bail!("a reader panicked")))
                .collect::<Result<Vec<f64>>>()
        })?;
        let wall_s = t0.elapsed().as_secs_f64();
        let after = stats_of(&nodes)?;
        let delta = |f: fn(&GetStatsResponse) -> u64| -> u64 {
            after.iter().map(f).sum::<u64>() - before.iter().map(f).sum::<u64>()
        };
        let source_bytes = delta(|s| s.source_bytes_read);
        let peer_hits = delta(|s| s.peer_hits);
        rows.push(MultinodeRow {
            caches: label.to_string(),
            epoch,
            wall_s,
            source_bytes,
            source_per_dataset_byte: source_bytes as f64 / dataset_bytes as f64,
            files_per_s_per_node: files_per_s.iter().sum::<f64>() / files_per_s.len() as f64,
            local_hits: delta(|s| s.hits),
            peer_hits,
            // A block read from its owner counts as a miss of the reader; not a source read.
            source_misses: delta(|s| s.misses) - peer_hits,
            peak_rss_bytes_per_node: None,
        });
        before = after;
    }
    let mut peak: Option<u64> = None;
    for n in nodes {
        peak = peak.max(n.mounted.unmount().ok().flatten());
    }
    for row in &mut rows {
        row.peak_rss_bytes_per_node = peak;
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(rows)
}

/// One node's epoch: the tree (its epoch threads) and the seq object, together; its files/s.
fn read_all(
    mnt: &Path,
    spec: &DatasetSpec,
    params: &Params,
    deadline: Instant,
    order: &[u32],
) -> Result<f64> {
    let ctx = Ctx {
        root: mnt,
        spec,
        params,
        deadline,
    };
    let (tree, object) = std::thread::scope(|s| {
        let object = s.spawn(|| workloads::seq_pass(&ctx, "object"));
        let tree = workloads::epoch_pass(&ctx, "tree", order);
        let object = object
            .join()
            .unwrap_or_else(|_| bail!("the object reader panicked"));
        (tree, object)
    });
    let (tree, object) = (tree?, object?);
    if tree.partial || object.partial {
        bail!("not done within the {} s limit", params.timeout.as_secs());
    }
    Ok(tree.ops_per_sec())
}

fn stats_of(nodes: &[Node]) -> Result<Vec<GetStatsResponse>> {
    nodes.iter().map(|n| stats(&n.control)).collect()
}

fn stats(control: &Path) -> Result<GetStatsResponse> {
    fluid_tests::daemon::stats_at(&format!("unix://{}", control.display()))
}

/// Waits until every node lists all three members (they re-read the peers file).
fn wait_for_members(nodes: &[Node]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in nodes {
        loop {
            let members = stats(&n.control)?.members;
            if members.len() == NODES.len() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{} lists members {members:?} after 30 s; see {}",
                    n.mounted.mountpoint.display(),
                    n.mounted.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

pub fn markdown(rows: &[MultinodeRow]) -> String {
    let mut out = String::from(
        "| caches | epoch | wall s (slowest node) | source bytes / dataset byte | files/s per node | local hits | peer hits | source misses | peak RSS MiB per node |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.3}x | {:.0} | {} | {} | {} | {} |\n",
            r.caches,
            r.epoch,
            r.wall_s,
            r.source_per_dataset_byte,
            r.files_per_s_per_node,
            r.local_hits,
            r.peer_hits,
            r.source_misses,
            units::fmt_mib(r.peak_rss_bytes_per_node)
        ));
    }
    let epoch1 = |label: &str| {
        rows.iter()
            .find(|r| r.epoch == 1 && r.caches.starts_with(label))
            .map(|r| r.wall_s)
    };
    if let (Some(shared), Some(private)) = (epoch1("one shared"), epoch1("three private")) {
        out.push_str(&format!(
            "\nEpoch 1 wall time, shared / private: {:.2}x.\n",
            shared / private
        ));
    }
    out
}
