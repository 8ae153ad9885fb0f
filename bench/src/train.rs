//! The training workload: a PyTorch DataLoader (4 workers, shuffled, batches of 32) over a
//! tree of JPEGs in the bucket, decoding each image and taking a small convolutional step per
//! batch (`bench/train/train.py`), two epochs per system with the kernel's caches dropped
//! before each; and the same loop over the tree on local disk, the limit. The figure the seed
//! quotes is the epoch time against direct access (ossfs there, s3fs here).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_s3::Client;
use futures::{StreamExt, TryStreamExt, stream};
use serde::{Deserialize, Serialize};

use crate::data;
use crate::systems::{self, MountConfig, System};
use crate::units;
use crate::workloads::Params;

const EPOCHS: u32 = 2;
/// The seed's headline: ResNet50's epoch time cut by 69 % against ossfs (direct access).
const SEED_REDUCTION: f64 = 0.69;
/// The rows the others are measured against: direct access, and the limit.
const S3FS: &str = "s3fs";
const LOCAL: &str = "local disk (limit)";
/// The key that says the bucket holds the whole tree (written last).
const MARKER_KEY: &str = ".train-complete";

#[derive(Debug, Clone, Serialize)]
pub struct TrainRow {
    pub system: String,
    /// Wall seconds of each epoch, listing and every batch included; empty when it failed.
    pub epoch_s: Vec<f64>,
    pub images: u64,
    /// Peak resident memory of the mount's process tree.
    pub peak_rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TrainRow {
    fn total(&self) -> Option<f64> {
        (self.epoch_s.len() == EPOCHS as usize).then(|| self.epoch_s.iter().sum())
    }
}

/// What one epoch of train.py prints.
#[derive(Deserialize)]
struct EpochLine {
    images: u64,
    seconds: f64,
}

/// Where the Python side lives and how large the tree is.
pub struct Setup<'a> {
    pub python: &'a Path,
    pub script: &'a Path,
    pub images: u32,
}

/// The local disk first (the limit), then each mounted system.
pub fn run(
    setup: &Setup,
    cfg: &MountConfig,
    client: &Client,
    rt: &tokio::runtime::Runtime,
    systems: &[System],
    params: &Params,
) -> Result<Vec<TrainRow>> {
    let tree = cfg.work.join(format!("train-{}", setup.images));
    make_tree(setup, &tree)?;
    let bucket = format!("{}-train", cfg.bucket);
    rt.block_on(upload_tree(client, &bucket, &tree))?;
    let mut cfg = cfg.clone();
    cfg.bucket = bucket;

    let mut rows = Vec::new();
    eprintln!("[bench] train / local disk: starting");
    rows.push(epochs(setup, LOCAL, &tree, params, None));
    for &sys in systems.iter().filter(|s| s.is_mount()) {
        eprintln!("[bench] train / {}: starting", sys.name());
        let row = match systems::mount(sys, &cfg, "train") {
            Ok(m) => {
                let root = m.mountpoint.clone();
                let mut row = epochs(setup, sys.name(), &root, params, Some(&m));
                match m.unmount() {
                    Ok(peak) => row.peak_rss_bytes = peak,
                    Err(e) if row.error.is_none() => row.error = Some(format!("{e:#}")),
                    Err(_) => {}
                }
                row
            }
            Err(e) => TrainRow {
                system: sys.name().into(),
                epoch_s: Vec::new(),
                images: 0,
                peak_rss_bytes: None,
                error: Some(format!("{e:#}")),
            },
        };
        eprintln!("[bench] train / {}: {}", sys.name(), summary(&row));
        rows.push(row);
    }
    Ok(rows)
}

fn summary(row: &TrainRow) -> String {
    match &row.error {
        Some(e) => format!("failed: {e}"),
        None => row
            .epoch_s
            .iter()
            .enumerate()
            .map(|(i, s)| format!("epoch {} {s:.1} s", i + 1))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Runs the epochs over `root`, each in a fresh process after dropping the kernel's caches.
fn epochs(
    setup: &Setup,
    system: &str,
    root: &Path,
    params: &Params,
    mounted: Option<&systems::Mounted>,
) -> TrainRow {
    let mut row = TrainRow {
        system: system.into(),
        epoch_s: Vec::new(),
        images: 0,
        peak_rss_bytes: None,
        error: None,
    };
    let deadline = Instant::now() + params.timeout;
    for epoch in 1..=EPOCHS {
        let result = (|| {
            if params.drop_caches {
                systems::drop_caches()?;
            }
            one_epoch(setup, root, epoch, deadline)
        })();
        match result {
            Ok(line) => {
                row.epoch_s.push(line.seconds);
                row.images = line.images;
            }
            Err(e) => {
                let log = mounted
                    .map(|m| format!("; {}:\n{}", m.log.display(), systems::tail(&m.log)))
                    .unwrap_or_default();
                row.error = Some(format!("epoch {epoch}: {e:#}{log}"));
                break;
            }
        }
    }
    row
}

fn one_epoch(setup: &Setup, root: &Path, epoch: u32, deadline: Instant) -> Result<EpochLine> {
    let mut child = Command::new(setup.python)
        .arg(setup.script)
        .arg("epoch")
        .arg(root)
        .arg(epoch.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", setup.python.display()))?;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("not done within the workload's time limit");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last: Vec<&str> = stderr.lines().rev().take(5).collect();
        bail!(
            "train.py exited with {}: {}",
            out.status,
            last.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("train.py printed no result")?;
    serde_json::from_str(line).with_context(|| format!("reading train.py's line {line:?}"))
}

/// The JPEG tree on local disk, made once (train.py skips images already there).
fn make_tree(setup: &Setup, tree: &Path) -> Result<()> {
    let done = tree.join(".complete");
    if done.exists() {
        return Ok(());
    }
    eprintln!(
        "[bench] train: making {} JPEGs in {} (once)",
        setup.images,
        tree.display()
    );
    std::fs::create_dir_all(tree)?;
    let status = Command::new(setup.python)
        .arg(setup.script)
        .arg("make")
        .arg(tree)
        .arg(setup.images.to_string())
        .status()
        .with_context(|| format!("starting {}", setup.python.display()))?;
    if !status.success() {
        bail!("train.py make exited with {status}");
    }
    std::fs::write(&done, b"")?;
    Ok(())
}

/// The tree's files under `dir`, as (key, path) with keys relative to `dir`.
fn files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let path = e.path();
            if e.file_type()?.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "jpg") {
                let key = path
                    .strip_prefix(dir)?
                    .to_string_lossy()
                    .replace(std::path::MAIN_SEPARATOR, "/");
                out.push((key, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Puts the tree into `bucket` once (its marker, written last, says it is all there).
async fn upload_tree(client: &Client, bucket: &str, tree: &Path) -> Result<()> {
    let ctx = |what: &str| format!("train upload to bucket {bucket}: {what}");
    data::ensure_bucket(client, bucket).await?;
    let files = files(tree)?;
    let marker = format!("{} files", files.len());
    if let Ok(out) = client
        .get_object()
        .bucket(bucket)
        .key(MARKER_KEY)
        .send()
        .await
    {
        let body = out.body.collect().await.with_context(|| ctx("marker"))?;
        if body.into_bytes() == marker.as_bytes() {
            return Ok(());
        }
    }
    let t0 = Instant::now();
    eprintln!(
        "[bench] train: uploading {} JPEGs to {bucket} (once)",
        files.len()
    );
    stream::iter(files)
        .map(|(key, path)| async move {
            let body = tokio::fs::read(&path)
                .await
                .with_context(|| format!("reading {}", path.display()))?;
            data::put(client, bucket, &key, body)
                .await
                .with_context(|| ctx(&key))?;
            anyhow::Ok(())
        })
        .buffer_unordered(data::UPLOADS_IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    data::put(client, bucket, MARKER_KEY, marker.into_bytes())
        .await
        .with_context(|| ctx("writing the marker"))?;
    eprintln!(
        "[bench] train: upload done in {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The table: epoch times per system, the total's reduction against s3fs (direct access),
/// beside the seed's 69 %, and each system against the local-disk limit.
pub fn markdown(rows: &[TrainRow]) -> String {
    let mut out = String::from(
        "| system | epoch 1 s | epoch 2 s | total s | reduction vs s3fs | local disk / system | peak RSS MiB |\n|---|--:|--:|--:|--:|--:|--:|\n",
    );
    let total_of = |system: &str| {
        rows.iter()
            .find(|r| r.system == system)
            .and_then(TrainRow::total)
    };
    let (s3fs, local) = (total_of(S3FS), total_of(LOCAL));
    for r in rows {
        let epoch = |i: usize| {
            r.epoch_s
                .get(i)
                .map_or_else(|| "-".to_string(), |s| format!("{s:.1}"))
        };
        let total = r.total();
        let reduction = match (total, s3fs) {
            (Some(t), Some(s)) if r.system != S3FS && s > 0.0 => {
                format!("{:.0} %", (1.0 - t / s) * 100.0)
            }
            _ => "-".into(),
        };
        let vs_local = match (total, local) {
            (Some(t), Some(l)) if t > 0.0 => format!("{:.2}x", l / t),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {reduction} | {vs_local} | {} |\n",
            r.system,
            epoch(0),
            epoch(1),
            total.map_or_else(|| "-".to_string(), |t| format!("{t:.1}")),
            units::fmt_mib(r.peak_rss_bytes)
        ));
        if let Some(e) = &r.error {
            out.push_str(&format!(
                "\n{}: {}\n\n",
                r.system,
                e.lines().next().unwrap_or("")
            ));
        }
    }
    out.push_str(&format!(
        "\nThe seed's figure: ResNet50's epoch time cut by {:.0} % against ossfs (direct access).\n",
        SEED_REDUCTION * 100.0
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(system: &str, epochs: &[f64]) -> TrainRow {
        TrainRow {
            system: system.into(),
            epoch_s: epochs.to_vec(),
            images: 100,
            peak_rss_bytes: Some(64 << 20),
            error: None,
        }
    }

    #[test]
    fn the_table_shows_the_reduction_against_s3fs_and_the_limit() {
        let md = markdown(&[
            row(LOCAL, &[10.0, 10.0]),
            row("fluid-fuse", &[30.0, 10.0]),
            row(S3FS, &[60.0, 60.0]),
            row("s3fs+cache", &[60.0, 30.0]),
        ]);
        // fluid-fuse: 40 s against s3fs's 120 s is a 67 % cut; the limit's 20 s is 0.50x.
        assert!(
            md.contains("| fluid-fuse | 30.0 | 10.0 | 40.0 | 67 % | 0.50x |"),
            "{md}"
        );
        assert!(
            md.contains("| s3fs | 60.0 | 60.0 | 120.0 | - | 0.17x |"),
            "{md}"
        );
        assert!(
            md.contains("| s3fs+cache | 60.0 | 30.0 | 90.0 | 25 % |"),
            "{md}"
        );
        assert!(md.contains("69 %"), "{md}");
    }

    #[test]
    fn a_failed_system_has_no_total_and_says_why() {
        let mut failed = row("rclone", &[12.0]);
        failed.error = Some("epoch 2: not done within the workload's time limit".into());
        let md = markdown(&[row("s3fs", &[60.0, 60.0]), failed]);
        assert!(md.contains("| rclone | 12.0 | - | - | - | - |"), "{md}");
        assert!(md.contains("rclone: epoch 2: not done"), "{md}");
    }
}
