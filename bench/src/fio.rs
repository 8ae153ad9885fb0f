//! The fio view: the shapes of Mountpoint for Amazon S3's own fio read benchmarks (256 KiB
//! reads through the sync engine, time-based, one and several threads, sequential and random,
//! each also run again once the cache holds the data), over the dataset's big object, on every
//! mounted system. A second opinion on the seq and rand workloads from a tool others use.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::spec::DatasetSpec;
use crate::systems::{self, MountConfig, System};
use crate::units::{MIB, fmt_value};
use crate::workloads::Params;

const BLOCK: &str = "256k";

/// One fio job shape.
#[derive(Clone, Copy, Debug)]
struct Profile {
    name: &'static str,
    random: bool,
    threads: u32,
}

const PROFILES: [Profile; 4] = [
    Profile {
        name: "seq 1 thread",
        random: false,
        threads: 1,
    },
    Profile {
        name: "seq 4 threads",
        random: false,
        threads: 4,
    },
    Profile {
        name: "rand 4 threads",
        random: true,
        threads: 4,
    },
    Profile {
        name: "rand 32 threads",
        random: true,
        threads: 32,
    },
];

#[derive(Debug, Clone, Serialize)]
pub struct FioRow {
    pub system: String,
    pub profile: String,
    /// MiB/s on a fresh mount (empty cache) and on a second run of the same mount (page cache
    /// dropped by fio first, so the daemon's own cache serves it).
    pub cold_mibps: Option<f64>,
    pub cached_mibps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub fn available() -> bool {
    Command::new("fio")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn run(
    cfg: &MountConfig,
    spec: &DatasetSpec,
    systems: &[System],
    params: &Params,
    quick: bool,
) -> Vec<FioRow> {
    let runtime = Duration::from_secs(if quick { 5 } else { 20 });
    let mut rows = Vec::new();
    for &sys in systems.iter().filter(|s| s.is_mount()) {
        for p in PROFILES {
            let label = format!("fio / {} / {}", sys.name(), p.name);
            eprintln!("[bench] {label}: starting");
            let mut row = FioRow {
                system: sys.name().into(),
                profile: p.name.into(),
                cold_mibps: None,
                cached_mibps: None,
                error: None,
            };
            if let Err(e) = profile_on(cfg, spec, sys, p, runtime, params, &mut row) {
                eprintln!("[bench] {label}: {e:#}");
                row.error = Some(format!("{e:#}"));
            }
            rows.push(row);
        }
    }
    rows
}

fn profile_on(
    cfg: &MountConfig,
    spec: &DatasetSpec,
    sys: System,
    p: Profile,
    runtime: Duration,
    params: &Params,
    row: &mut FioRow,
) -> Result<()> {
    let mounted = systems::mount(sys, cfg, "fio")?;
    let file = mounted.mountpoint.join(spec.seq_key());
    let result = (|| {
        if params.drop_caches {
            systems::drop_caches()?;
        }
        row.cold_mibps = Some(fio(&file, spec.seq_bytes, p, runtime)?);
        row.cached_mibps = Some(fio(&file, spec.seq_bytes, p, runtime)?);
        anyhow::Ok(())
    })();
    let unmounted = mounted.unmount();
    result?;
    unmounted.map(|_| ())
}

/// One fio run; its aggregate read bandwidth in MiB/s.
fn fio(file: &Path, size: u64, p: Profile, runtime: Duration) -> Result<f64> {
    // A stuck mount must not stop the bench: fio gets its run time and two minutes more.
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "10"])
        .arg((runtime.as_secs() + 120).to_string())
        .arg("fio")
        .arg(format!("--name={}", p.name.replace(' ', "_")))
        .arg(format!("--filename={}", file.display()))
        .arg(format!(
            "--rw={}",
            if p.random { "randread" } else { "read" }
        ))
        .arg(format!("--bs={BLOCK}"))
        .args([
            "--ioengine=sync",
            "--readonly",
            "--time_based",
            "--group_reporting",
        ])
        .arg(format!("--runtime={}s", runtime.as_secs()))
        .arg(format!("--numjobs={}", p.threads))
        .arg("--output-format=json");
    if p.random {
        cmd.arg(format!("--size={size}"));
    } else {
        // Each sequential thread reads its own stretch of the object (loops when it ends).
        let share = size / u64::from(p.threads);
        cmd.arg(format!("--size={share}"))
            .arg(format!("--offset_increment={share}"));
    }
    let out = cmd.output().context("running fio")?;
    if !out.status.success() {
        bail!(
            "fio exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    read_bandwidth(&out.stdout)
}

/// The group's read bandwidth (bytes/s in `jobs[0].read.bw_bytes`) in MiB/s.
fn read_bandwidth(json: &[u8]) -> Result<f64> {
    // fio may print notes before the JSON document.
    let text = String::from_utf8_lossy(json);
    let start = text.find('{').context("fio printed no JSON")?;
    let v: serde_json::Value =
        serde_json::from_str(&text[start..]).context("reading fio's JSON")?;
    let bw = v["jobs"][0]["read"]["bw_bytes"]
        .as_f64()
        .context("no jobs[0].read.bw_bytes in fio's JSON")?;
    Ok(bw / MIB)
}

pub fn markdown(rows: &[FioRow]) -> String {
    let mut systems: Vec<&str> = Vec::new();
    for r in rows {
        if !systems.contains(&r.system.as_str()) {
            systems.push(&r.system);
        }
    }
    let mut out = String::from("| profile, MiB/s (cold / cached) |");
    for s in &systems {
        out.push_str(&format!(" {s} |"));
    }
    out.push_str("\n|---|");
    out.push_str(&"--:|".repeat(systems.len()));
    out.push('\n');
    for p in PROFILES {
        out.push_str(&format!("| {} |", p.name));
        for s in &systems {
            let cell = rows
                .iter()
                .find(|r| r.system == *s && r.profile == p.name)
                .map_or_else(
                    || "-".to_string(),
                    |r| match (r.cold_mibps, r.cached_mibps) {
                        (Some(c), Some(w)) => format!("{} / {}", fmt_value(c), fmt_value(w)),
                        (Some(c), None) => format!("{} / -", fmt_value(c)),
                        _ => "failed".to_string(),
                    },
                );
            out.push_str(&format!(" {cell} |"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_bandwidth_is_read_from_fios_json() {
        let json = br#"note: both iodepth >= 1 and synchronous I/O engine are selected
{"fio version": "fio-3.33", "jobs": [{"jobname": "x", "read": {"bw_bytes": 524288000}}]}"#;
        assert_eq!(read_bandwidth(json).unwrap(), 500.0);
        assert!(read_bandwidth(b"{\"jobs\": []}").is_err());
    }

    #[test]
    fn the_table_has_a_column_per_system_and_a_row_per_profile() {
        let rows = vec![
            FioRow {
                system: "fluid-fuse".into(),
                profile: "seq 1 thread".into(),
                cold_mibps: Some(612.0),
                cached_mibps: Some(3400.0),
                error: None,
            },
            FioRow {
                system: "s3fs".into(),
                profile: "seq 1 thread".into(),
                cold_mibps: None,
                cached_mibps: None,
                error: Some("mount failed".into()),
            },
        ];
        let md = markdown(&rows);
        assert!(
            md.starts_with("| profile, MiB/s (cold / cached) | fluid-fuse | s3fs |\n"),
            "{md}"
        );
        assert!(
            md.contains("| seq 1 thread | 612 / 3400 | failed |"),
            "{md}"
        );
        assert!(md.contains("| rand 32 threads | - | - |"), "{md}");
    }
}
