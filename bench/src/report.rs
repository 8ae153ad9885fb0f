//! Results: what each system measured, the tables with fluid-fuse's ratio to every peer and
//! limit, the targets, and the Markdown/JSON forms. No I/O here except formatting, so the
//! unit tests cover it all.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::spec::DatasetSpec;
use crate::systems::System;
use crate::units::{MIB, fmt_value};
use crate::workloads::{Measurement, Metric, Params, Workload};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Ok,
    Timeout,
    Error,
    Skipped,
}

/// One system's run of one workload.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SystemRun {
    pub status: Status,
    /// Why it timed out, failed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub phases: Vec<Measurement>,
    /// The daemon's peak resident memory over the workload (mounts only).
    pub peak_rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl SystemRun {
    pub fn failed(status: Status, message: impl Into<String>) -> SystemRun {
        SystemRun {
            status,
            message: Some(message.into()),
            ..SystemRun::default()
        }
    }

    pub fn phase(&self, phase: &str) -> Option<&Measurement> {
        self.phases.iter().find(|m| m.phase == phase)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SystemEntry {
    pub system: &'static str,
    #[serde(flatten)]
    pub run: SystemRun,
}

#[derive(Clone, Debug, Serialize)]
pub struct WorkloadResult {
    pub workload: &'static str,
    pub description: String,
    pub systems: Vec<SystemEntry>,
    pub rows: Vec<Row>,
    #[serde(skip)]
    pub kind: Option<Workload>,
    #[serde(skip)]
    pub runs: Vec<(System, SystemRun)>,
}

/// One line of a table: a phase's metric for every system, and fluid-fuse's ratios.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Row {
    pub phase: String,
    pub metric: String,
    pub lower_is_better: bool,
    pub values: BTreeMap<&'static str, Option<f64>>,
    /// Systems whose value was cut short by the time limit (the rate of the part done).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partial: Vec<&'static str>,
    /// `fluid-fuse / <system>` for each other system with a value.
    pub ratios: BTreeMap<&'static str, Option<f64>>,
}

fn metric_label(w: Workload, m: Metric) -> String {
    match m {
        Metric::Ops => w.op_unit().to_string(),
        Metric::MiBps => "MiB/s".to_string(),
    }
}

/// A system's figure for a phase: the limits have one phase, `limit`, that stands for all.
fn figure(sys: System, run: &SystemRun, phase: &str, m: Metric) -> Option<(f64, bool)> {
    let p = if sys.is_limit() { "limit" } else { phase };
    run.phase(p).map(|x| (x.value(m), x.partial))
}

pub fn build_rows(w: Workload, runs: &[(System, SystemRun)]) -> Vec<Row> {
    let fluid = runs.iter().find(|(s, _)| *s == System::Fluid);
    let mut rows = Vec::new();
    for phase in w.phases() {
        for &m in w.metrics() {
            let mut row = Row {
                phase: phase.to_string(),
                metric: metric_label(w, m),
                lower_is_better: false,
                values: BTreeMap::new(),
                partial: Vec::new(),
                ratios: BTreeMap::new(),
            };
            for (sys, run) in runs {
                let f = figure(*sys, run, phase, m);
                if let Some((_, true)) = f {
                    row.partial.push(sys.name());
                }
                row.values.insert(sys.name(), f.map(|x| x.0));
            }
            let mine = fluid
                .and_then(|(s, r)| figure(*s, r, phase, m))
                .map(|x| x.0);
            for (sys, run) in runs.iter().filter(|(s, _)| *s != System::Fluid) {
                let theirs = figure(*sys, run, phase, m).map(|x| x.0);
                row.ratios.insert(sys.name(), ratio(mine, theirs));
            }
            rows.push(row);
        }
    }
    // Peak memory of the daemons (the limits have none).
    let mut row = Row {
        phase: "whole workload".into(),
        metric: "peak RSS MiB (process tree)".into(),
        lower_is_better: true,
        values: BTreeMap::new(),
        partial: Vec::new(),
        ratios: BTreeMap::new(),
    };
    let rss = |r: &SystemRun| r.peak_rss_bytes.map(|b| b as f64 / MIB);
    let mine = fluid.and_then(|(_, r)| rss(r));
    for (sys, run) in runs.iter().filter(|(s, _)| s.is_mount()) {
        row.values.insert(sys.name(), rss(run));
        if *sys != System::Fluid {
            row.ratios.insert(sys.name(), ratio(mine, rss(run)));
        }
    }
    rows.push(row);
    rows
}

pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

pub fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) if r < 0.001 => "<0.001x".into(),
        Some(r) if r < 0.01 => format!("{r:.3}x"),
        Some(r) if r >= 100.0 => format!("{r:.0}x"),
        Some(r) if r >= 10.0 => format!("{r:.1}x"),
        Some(r) => format!("{r:.2}x"),
        None => "-".into(),
    }
}

/// What a cell without a figure says: why the system has none.
fn empty_cell(run: Option<&SystemRun>) -> String {
    match run.map(|r| r.status) {
        Some(Status::Timeout) => "timeout".into(),
        Some(Status::Error) => "error".into(),
        Some(Status::Skipped) => "skipped".into(),
        _ => "-".into(),
    }
}

/// The Markdown table of one workload (also what the terminal shows).
pub fn table(w: &WorkloadResult) -> String {
    let systems: Vec<System> = w.runs.iter().map(|(s, _)| *s).collect();
    let others: Vec<System> = systems
        .iter()
        .copied()
        .filter(|s| *s != System::Fluid)
        .collect();
    let mut head = vec!["phase".to_string(), "metric".to_string()];
    head.extend(systems.iter().map(|s| s.name().to_string()));
    if systems.contains(&System::Fluid) {
        head.extend(others.iter().map(|s| format!("fluid/{}", s.name())));
    }
    let mut lines = vec![head];
    for row in &w.rows {
        let mut cells = vec![row.phase.clone(), row.metric.clone()];
        for s in &systems {
            let run = w.runs.iter().find(|(x, _)| x == s).map(|(_, r)| r);
            let cell = match row.values.get(s.name()) {
                Some(Some(v)) => {
                    let star = if row.partial.contains(&s.name()) {
                        "*"
                    } else {
                        ""
                    };
                    format!("{}{star}", fmt_value(*v))
                }
                Some(None) => empty_cell(run),
                None => "".into(),
            };
            cells.push(cell);
        }
        if systems.contains(&System::Fluid) {
            for s in &others {
                cells.push(match row.ratios.get(s.name()) {
                    Some(r) => fmt_ratio(*r),
                    None => "".into(),
                });
            }
        }
        lines.push(cells);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        let cells: Vec<String> = l
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (x, &wd))| {
                if c < 2 {
                    format!("{x:<wd$}")
                } else {
                    format!("{x:>wd$}")
                }
            })
            .collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
        if i == 0 {
            let rule: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(c, &wd)| {
                    if c < 2 {
                        "-".repeat(wd)
                    } else {
                        format!("{}:", "-".repeat(wd.saturating_sub(1)))
                    }
                })
                .collect();
            let _ = writeln!(out, "| {} |", rule.join(" | "));
        }
    }
    out
}

/// A goal the project wants to reach; reported, never enforced.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TargetResult {
    pub name: String,
    /// fluid-fuse's ratio to the reference (or, for memory, its peak in MiB).
    pub got: Option<f64>,
    pub want: String,
    /// None when a figure it needs is missing.
    pub pass: Option<bool>,
}

struct RatioTarget {
    workload: Workload,
    phase: &'static str,
    other: System,
    other_phase: &'static str,
    factor: f64,
}

const RATIO_TARGETS: [RatioTarget; 7] = [
    RatioTarget {
        workload: Workload::Seq,
        phase: "cold",
        other: System::Source,
        other_phase: "limit",
        factor: 0.8,
    },
    RatioTarget {
        workload: Workload::Seq,
        phase: "warm",
        other: System::Memory,
        other_phase: "limit",
        factor: 0.9,
    },
    RatioTarget {
        workload: Workload::Seq,
        phase: "after drop_caches",
        other: System::Memory,
        other_phase: "limit",
        factor: 0.5,
    },
    RatioTarget {
        workload: Workload::Epoch,
        phase: "epoch 2",
        other: System::S3fs,
        other_phase: "epoch 2",
        factor: 5.0,
    },
    RatioTarget {
        workload: Workload::Epoch,
        phase: "epoch 2",
        other: System::Rclone,
        other_phase: "epoch 2",
        factor: 1.5,
    },
    RatioTarget {
        workload: Workload::Epoch,
        phase: "epoch 1",
        other: System::S3fs,
        other_phase: "epoch 1",
        factor: 1.5,
    },
    RatioTarget {
        workload: Workload::Meta,
        phase: "warm",
        other: System::S3fs,
        other_phase: "warm",
        factor: 3.0,
    },
];

/// Evaluates the targets. `fluid_mem_bytes` is the configured memory tier.
pub fn targets(results: &[WorkloadResult], fluid_mem_bytes: u64) -> Vec<TargetResult> {
    let value = |w: Workload, sys: System, phase: &str| -> Option<f64> {
        let wr = results.iter().find(|r| r.kind == Some(w))?;
        let (_, run) = wr.runs.iter().find(|(s, _)| *s == sys)?;
        run.phase(phase).map(|m| m.value(w.main_metric()))
    };
    let mut out: Vec<TargetResult> = RATIO_TARGETS
        .iter()
        .map(|t| {
            let r = ratio(
                value(t.workload, System::Fluid, t.phase),
                value(t.workload, t.other, t.other_phase),
            );
            let of = if t.other.is_limit() {
                format!("{} limit", t.other.name())
            } else {
                format!("{} {}", t.other.name(), t.other_phase)
            };
            let mine = if t.phase.starts_with(t.workload.name()) {
                t.phase.to_string()
            } else {
                format!("{} {}", t.workload.name(), t.phase)
            };
            TargetResult {
                name: format!("{mine} vs {of}"),
                got: r,
                want: format!(">= {}x", t.factor),
                pass: r.map(|r| r >= t.factor),
            }
        })
        .collect();
    let peak = results
        .iter()
        .flat_map(|r| r.runs.iter())
        .filter(|(s, _)| *s == System::Fluid)
        .filter_map(|(_, run)| run.peak_rss_bytes)
        .max();
    let limit = fluid_mem_bytes + (256 << 20);
    out.push(TargetResult {
        name: "fluid-fuse peak RSS vs memory tier + 256 MiB".into(),
        got: peak.map(|b| b as f64 / MIB),
        want: format!("<= {:.0} MiB", limit as f64 / MIB),
        pass: peak.map(|b| b <= limit),
    });
    out
}

pub fn targets_table(t: &[TargetResult]) -> String {
    let mut out = String::from("| target | fluid-fuse | want | result |\n|---|---:|---|---|\n");
    for x in t {
        let got = match (x.name.contains("RSS"), x.got) {
            (true, Some(v)) => format!("{v:.0} MiB"),
            (false, r @ Some(_)) => fmt_ratio(r),
            (_, None) => "-".into(),
        };
        let res = match x.pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "n/a",
        };
        let _ = writeln!(out, "| {} | {got} | {} | {res} |", x.name, x.want);
    }
    out
}

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub memory_mib: u64,
    pub kernel: String,
    pub os: String,
    pub loadavg_at_start: String,
    pub loadavg_at_end: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub started: String,
    pub finished: String,
    pub machine: Machine,
    pub versions: BTreeMap<String, String>,
    pub bucket: String,
    pub dataset_reused: bool,
    pub dataset: DatasetSpec,
    pub params: Params,
    pub fluid_tiers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fluid_args: Vec<String>,
    pub workloads: Vec<WorkloadResult>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recovery: Vec<crate::recovery::RecoveryRow>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub multinode: Vec<crate::multinode::MultinodeRow>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub train: Vec<crate::train::TrainRow>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fio: Vec<crate::fio::FioRow>,
    pub targets: Vec<TargetResult>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn header(&self) -> String {
        let m = &self.machine;
        let mut out = format!(
            "# make bench ({} mode)\n\n\
             Started {}, finished {}. Machine: {} CPUs ({}), {} MiB memory, kernel {}, {}; \
             load average at start {}, at end {}.\n\n",
            self.mode,
            self.started,
            self.finished,
            m.nproc,
            m.cpu,
            m.memory_mib,
            m.kernel,
            m.os,
            m.loadavg_at_start,
            m.loadavg_at_end
        );
        let _ = writeln!(out, "Versions:");
        for (k, v) in &self.versions {
            let _ = writeln!(out, "- {k}: {v}");
        }
        let _ = writeln!(
            out,
            "\nOne SeaweedFS server on 127.0.0.1, bucket `{}` ({}). fluid-fuse tiers: `{}`{}. \
             Each system is mounted afresh, with an empty cache, for each workload; every cold \
             phase starts after `sync; echo 3 > /proc/sys/vm/drop_caches`{}. `source` is \
             aws-sdk-s3 straight at the server (parallel ranged GETs, one LIST), `memory` the \
             same bytes in tmpfs through the same read code: each is the best of {} runs, \
             shown on every row of its metric. So is each seq phase of every system (seq runs on \
             that many fresh mounts, since cold can run only once per mount), and seq starts with \
             one unrecorded source pass (the machine runs faster for a second after an idle \
             spell). Ratios are fluid-fuse / column (for RSS, lower is better). \
             `*`: cut short by the {} s per-workload limit (rate of the part done). Ratios, not \
             absolute figures, are the point: this machine is shared.\n",
            self.bucket,
            if self.dataset_reused {
                "data reused from an earlier run"
            } else {
                "data uploaded by this run"
            },
            self.fluid_tiers.join(" "),
            if self.fluid_args.is_empty() {
                String::new()
            } else {
                format!(", extra arguments `{}`", self.fluid_args.join(" "))
            },
            if self.params.drop_caches {
                ""
            } else {
                " (disabled by --no-drop-caches)"
            },
            self.params.limit_repeats,
            self.params.timeout.as_secs()
        );
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = self.header();
        for w in &self.workloads {
            let _ = writeln!(out, "\n## {}\n\n{}.\n", w.workload, w.description);
            out.push_str(&table(w));
            for (sys, run) in &w.runs {
                if let Some(msg) = &run.message {
                    let _ = writeln!(out, "\n- {} {:?}: {msg}", sys.name(), run.status);
                }
                for n in &run.notes {
                    let _ = writeln!(out, "\n- {}: {n}", sys.name());
                }
            }
        }
        if !self.recovery.is_empty() {
            let _ = writeln!(
                out,
                "\n## recovery\n\n4 readers loop over 64 epoch files (1 MiB reads, page cache dropped each \
                 pass, one reader holding its files open) while fluid-fuse's serving process is \
                 killed (kill -9) every 1.5 s. Stall: per kill, the longest gap between two reads \
                 of a reader across it.\n\n{}",
                crate::recovery::markdown(&self.recovery)
            );
        }
        if !self.multinode.is_empty() {
            let _ = writeln!(
                out,
                "\n## multinode\n\nThree fluid-fuse daemons on this machine (each its own mount, \
                 tiers as above and control socket) read the whole dataset at once, each with {} \
                 threads over the epoch tree beside one reader of the seq object; page cache \
                 dropped before each epoch. First as one shared cache (a peers file, peer \
                 endpoints on loopback: each block has one owner), then as three private caches. \
                 Goal: the source serves the dataset once (1.0x) with sharing, against 3.0x \
                 without.\n\n{}",
                self.params.epoch_threads,
                crate::multinode::markdown(&self.multinode)
            );
        }
        if !self.train.is_empty() {
            let _ = writeln!(
                out,
                "\n## train\n\nA PyTorch DataLoader (4 workers, batches of 32, shuffled by epoch) \
                 over {} JPEGs of 100-200 KiB in 10 class folders, in their own bucket: each image \
                 decoded with Pillow and resized to 64x64, a two-layer convolutional step per \
                 batch (bench/train/train.py); page cache dropped before each epoch, each epoch a \
                 fresh process. Reduction: the total of both epochs against s3fs, direct access \
                 as ossfs was in the seed's figure.\n\n{}",
                self.train.first().map_or(0, |r| r.images),
                crate::train::markdown(&self.train)
            );
        }
        if !self.fio.is_empty() {
            let _ = writeln!(
                out,
                "\n## fio\n\nThe shapes of Mountpoint for Amazon S3's fio read benchmarks over the \
                 big object: 256 KiB reads (sync engine, time-based, group reporting), sequential \
                 (each thread its own stretch) and random, 1 to 32 threads. Each profile on a \
                 fresh mount after drop_caches (cold), then again on that mount (cached: fio drops \
                 the file's pages first, so the daemon's cache serves it).\n\n{}",
                crate::fio::markdown(&self.fio)
            );
        }
        let _ = writeln!(
            out,
            "\n## Targets (reported, not enforced)\n\n{}",
            targets_table(&self.targets)
        );
        for n in &self.notes {
            let _ = writeln!(out, "- {n}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(phase: &str, ops: u64, bytes: u64, secs: f64) -> Measurement {
        Measurement {
            phase: phase.into(),
            ops,
            bytes,
            secs,
            partial: false,
        }
    }

    fn seq_result() -> WorkloadResult {
        let mib = 1u64 << 20;
        let runs = vec![
            (
                System::Fluid,
                SystemRun {
                    phases: vec![
                        m("cold", 100, 400 * mib, 1.0),
                        m("warm", 100, 1000 * mib, 1.0),
                        m("after drop_caches", 100, 600 * mib, 1.0),
                    ],
                    peak_rss_bytes: Some(300 * mib),
                    ..SystemRun::default()
                },
            ),
            (
                System::S3fs,
                SystemRun {
                    phases: vec![
                        m("cold", 100, 200 * mib, 1.0),
                        m("warm", 100, 200 * mib, 2.0),
                    ],
                    peak_rss_bytes: Some(100 * mib),
                    ..SystemRun::default()
                },
            ),
            (System::Rclone, SystemRun::failed(Status::Timeout, "stuck")),
            (
                System::Source,
                SystemRun {
                    phases: vec![m("limit", 10, 800 * mib, 1.0)],
                    ..SystemRun::default()
                },
            ),
            (
                System::Memory,
                SystemRun {
                    phases: vec![m("limit", 10, 2000 * mib, 1.0)],
                    ..SystemRun::default()
                },
            ),
        ];
        WorkloadResult {
            workload: "seq",
            description: "test".into(),
            systems: vec![],
            rows: build_rows(Workload::Seq, &runs),
            kind: Some(Workload::Seq),
            runs,
        }
    }

    #[test]
    fn rows_carry_values_and_ratios() {
        let w = seq_result();
        // cold, warm, after drop_caches, peak RSS
        assert_eq!(w.rows.len(), 4);
        let cold = &w.rows[0];
        assert_eq!(cold.values["fluid-fuse"], Some(400.0));
        assert_eq!(cold.values["source"], Some(800.0));
        assert_eq!(cold.ratios["s3fs"], Some(2.0));
        assert_eq!(cold.ratios["source"], Some(0.5));
        assert_eq!(cold.ratios["memory"], Some(0.2));
        assert_eq!(cold.ratios["rclone"], None);
        // s3fs has no figure after drop_caches: no ratio, not a zero.
        assert_eq!(w.rows[2].values["s3fs"], None);
        assert_eq!(w.rows[2].ratios["s3fs"], None);
        // warm s3fs: 200 MiB in 2 s.
        assert_eq!(w.rows[1].ratios["s3fs"], Some(10.0));
        let rss = &w.rows[3];
        assert!(rss.lower_is_better);
        assert_eq!(rss.values["fluid-fuse"], Some(300.0));
        assert_eq!(rss.ratios["s3fs"], Some(3.0));
        assert!(!rss.values.contains_key("source"));
    }

    #[test]
    fn table_shows_missing_figures_by_reason() {
        let t = table(&seq_result());
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("fluid/s3fs") && lines[0].contains("fluid/memory"));
        assert!(lines[2].contains("timeout"), "{t}");
        assert!(lines[2].contains("0.50x"), "{t}");
        assert!(lines[4].contains(" - "), "{t}");
        // Every line has the same number of cells.
        let cells = |l: &str| l.matches('|').count();
        assert!(lines.iter().all(|l| cells(l) == cells(lines[0])));
    }

    #[test]
    fn targets_pass_fail_and_na() {
        let w = seq_result();
        let t = targets(&[w], 256 << 20);
        let by = |name: &str| t.iter().find(|x| x.name.starts_with(name)).cloned();
        let cold = by("seq cold").expect("seq cold target");
        assert_eq!(cold.got, Some(0.5));
        assert_eq!(cold.pass, Some(false));
        let warm = by("seq warm vs").expect("seq warm target");
        assert_eq!(warm.got, Some(0.5));
        assert_eq!(warm.pass, Some(false));
        let dropped = by("seq after").expect("drop target");
        assert_eq!(dropped.pass, Some(false)); // 0.3x < 0.5x
        assert_eq!(by("epoch 2").map(|x| x.pass), Some(None));
        let rss = by("fluid-fuse peak").expect("rss target");
        assert_eq!(rss.got, Some(300.0));
        assert_eq!(rss.pass, Some(true)); // 300 <= 256 + 256
        let md = targets_table(&t);
        assert!(md.contains("FAIL") && md.contains("PASS") && md.contains("n/a"));
    }
}
