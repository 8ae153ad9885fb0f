//! The workloads as a program sees them: POSIX reads and stats under a directory, which is a
//! FUSE mount for the systems and a tmpfs copy for the memory limit. Every pass checks what it
//! read (sizes, counts, and the first bytes of each read against the generator), so a system
//! that returns wrong data fails instead of looking fast.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::spec::DatasetSpec;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Workload {
    Seq,
    Rand4k,
    Rand1m,
    Epoch,
    Meta,
}

/// What a row of a table shows: operations per second or MiB per second of a phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Ops,
    MiBps,
}

impl Workload {
    pub const ALL: [Workload; 5] = [
        Workload::Seq,
        Workload::Rand4k,
        Workload::Rand1m,
        Workload::Epoch,
        Workload::Meta,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Seq => "seq",
            Workload::Rand4k => "rand-4k",
            Workload::Rand1m => "rand-1m",
            Workload::Epoch => "epoch",
            Workload::Meta => "meta",
        }
    }

    pub fn parse(s: &str) -> Result<Workload> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .with_context(|| {
                format!("unknown workload {s:?}; one of seq, rand-4k, rand-1m, epoch, meta")
            })
    }

    /// The phases a mounted system runs, in order, on one fresh mount.
    pub fn phases(self) -> &'static [&'static str] {
        match self {
            Workload::Seq => &["cold", "warm", "after drop_caches"],
            Workload::Rand4k | Workload::Rand1m | Workload::Meta => &["cold", "warm"],
            Workload::Epoch => &["epoch 1", "epoch 2"],
        }
    }

    /// The name of what one operation is, for the ops row.
    pub fn op_unit(self) -> &'static str {
        match self {
            Workload::Seq => "reads/s",
            Workload::Rand4k | Workload::Rand1m => "IOPS",
            Workload::Epoch => "files/s",
            Workload::Meta => "entries/s",
        }
    }

    /// The rows of this workload's table, per phase, before the memory row.
    pub fn metrics(self) -> &'static [Metric] {
        match self {
            Workload::Seq => &[Metric::MiBps],
            Workload::Rand4k | Workload::Rand1m | Workload::Epoch => &[Metric::Ops, Metric::MiBps],
            Workload::Meta => &[Metric::Ops],
        }
    }

    /// The metric the chart and the targets use.
    pub fn main_metric(self) -> Metric {
        self.metrics()[0]
    }

    pub fn describe(self, spec: &DatasetSpec, p: &Params) -> String {
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        match self {
            Workload::Seq => format!(
                "one {:.0} MiB object read start to end with 1 MiB reads",
                mib(spec.seq_bytes)
            ),
            Workload::Rand4k | Workload::Rand1m => {
                let (cold, warm) = p.rand_counts(self == Workload::Rand4k);
                format!(
                    "{} threads of {} preads at random 4 KiB-aligned offsets of the {:.0} MiB \
                     object (fadvise RANDOM); cold: {cold} new offsets per thread from an empty \
                     cache (few enough that most miss), warm: {warm} per thread cycling over the \
                     offsets cold read; each phase also stops after {} s",
                    p.rand_threads,
                    if self == Workload::Rand4k {
                        "4 KiB"
                    } else {
                        "1 MiB"
                    },
                    mib(spec.seq_bytes),
                    p.rand_time.as_secs()
                )
            }
            Workload::Epoch => format!(
                "{} files of {}-{} KiB ({:.0} MiB) in {} dirs, each read whole, {} parallel readers, \
                 a new shuffled order each epoch",
                spec.epoch_files,
                spec.epoch_min_bytes >> 10,
                spec.epoch_max_bytes >> 10,
                mib(spec.epoch_total_bytes()),
                spec.epoch_dirs,
                p.epoch_threads
            ),
            Workload::Meta => format!(
                "readdir + lstat of every entry of a tree of {} files in {} dirs ({} entries), \
                 {} threads",
                spec.meta_files,
                spec.meta_dirs,
                spec.meta_entries(),
                p.meta_threads
            ),
        }
    }
}

/// Sizes of the workloads that are not fixed by the dataset.
#[derive(Clone, Debug, Serialize)]
pub struct Params {
    pub rand_threads: usize,
    /// Reads per thread: cold (distinct offsets, empty cache) and warm (cycling over them).
    pub rand_4k_cold: usize,
    pub rand_4k_warm: usize,
    pub rand_1m_cold: usize,
    pub rand_1m_warm: usize,
    #[serde(with = "secs")]
    pub rand_time: Duration,
    pub epoch_threads: usize,
    pub meta_threads: usize,
    /// The most one system may spend on one workload, all phases and its mount together.
    #[serde(with = "secs")]
    pub timeout: Duration,
    pub drop_caches: bool,
    /// The limits are ceilings: each is the best of this many runs; so are the seq warm and
    /// after-drop_caches phases of every system.
    pub limit_repeats: usize,
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
}

impl Params {
    /// (cold, warm) reads per thread of the 4 KiB or the 1 MiB workload.
    pub fn rand_counts(&self, small: bool) -> (usize, usize) {
        if small {
            (self.rand_4k_cold, self.rand_4k_warm)
        } else {
            (self.rand_1m_cold, self.rand_1m_warm)
        }
    }

    pub fn new(quick: bool) -> Params {
        Params {
            rand_threads: 4,
            // Cold counts stay well under the object's 4 MiB blocks (256, quick: 32) so that
            // most cold reads really miss every cache.
            rand_4k_cold: if quick { 8 } else { 64 },
            rand_4k_warm: if quick { 5_000 } else { 20_000 },
            rand_1m_cold: if quick { 4 } else { 16 },
            rand_1m_warm: if quick { 250 } else { 1_000 },
            rand_time: Duration::from_secs(if quick { 10 } else { 30 }),
            epoch_threads: 8,
            meta_threads: 4,
            timeout: Duration::from_secs(if quick { 180 } else { 900 }),
            drop_caches: true,
            limit_repeats: 3,
        }
    }
}

/// One phase's figures.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Measurement {
    pub phase: String,
    pub ops: u64,
    pub bytes: u64,
    pub secs: f64,
    /// Stopped at the workload's time limit: the rate is over the part that was done.
    pub partial: bool,
}

impl Measurement {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.secs.max(1e-9)
    }

    pub fn mib_per_sec(&self) -> f64 {
        self.bytes as f64 / (1u64 << 20) as f64 / self.secs.max(1e-9)
    }

    pub fn value(&self, m: Metric) -> f64 {
        match m {
            Metric::Ops => self.ops_per_sec(),
            Metric::MiBps => self.mib_per_sec(),
        }
    }
}

/// Where a pass reads, what it should find, and when it must stop.
pub struct Ctx<'a> {
    pub root: &'a Path,
    pub spec: &'a DatasetSpec,
    pub params: &'a Params,
    pub deadline: Instant,
}

impl Ctx<'_> {
    fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }
}

const MIB: usize = 1 << 20;

/// Reads the sequential object start to end with 1 MiB reads.
pub fn seq_pass(ctx: &Ctx, phase: &str) -> Result<Measurement> {
    let path = ctx.root.join(ctx.spec.seq_key());
    let t0 = Instant::now();
    let mut f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; MIB];
    let (mut off, mut reads, mut partial) = (0u64, 0u64, false);
    loop {
        if ctx.expired() {
            partial = true;
            break;
        }
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {} at {off}", path.display()))?;
        if n == 0 {
            break;
        }
        if reads % 16 == 0 && !ctx.spec.check(ctx.spec.seq_id(), off, &buf[..n]) {
            bail!("wrong bytes in {} at offset {off}", path.display());
        }
        off += n as u64;
        reads += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    if !partial && off != ctx.spec.seq_bytes {
        bail!(
            "{} ended after {off} bytes; the object has {}",
            path.display(),
            ctx.spec.seq_bytes
        );
    }
    Ok(Measurement {
        phase: phase.into(),
        ops: reads,
        bytes: off,
        secs,
        partial,
    })
}

/// The distinct offsets each rand thread reads cold, fixed by the seed.
pub fn rand_offsets(spec: &DatasetSpec, p: &Params, len: u64) -> Vec<Vec<u64>> {
    let count = p.rand_counts(len <= 4096).0;
    let slots = (spec.seq_bytes - len) / 4096 + 1;
    (0..p.rand_threads)
        .map(|t| {
            let mut rng = StdRng::seed_from_u64(spec.seed ^ len ^ ((t as u64) << 32));
            (0..count)
                .map(|_| rng.random_range(0..slots) * 4096)
                .collect()
        })
        .collect()
}

/// Each thread preads `len` bytes at its offsets, cycling over them, `count` times (or, with
/// `count` None, once over its offsets) until the phase's time is up or the workload's
/// deadline passes. Returns the figures and how many reads each thread did.
pub fn rand_pass(
    ctx: &Ctx,
    phase: &str,
    len: usize,
    offsets: &[Vec<u64>],
    count: Option<usize>,
) -> Result<(Measurement, Vec<usize>)> {
    let path = ctx.root.join(ctx.spec.seq_key());
    let phase_end = (Instant::now() + ctx.params.rand_time).min(ctx.deadline);
    let hit_deadline = AtomicBool::new(false);
    let t0 = Instant::now();
    let results: Vec<Result<usize>> = std::thread::scope(|s| {
        let handles: Vec<_> = offsets
            .iter()
            .map(|offs| {
                let (path, hit_deadline) = (&path, &hit_deadline);
                s.spawn(move || -> Result<usize> {
                    let f =
                        File::open(path).with_context(|| format!("opening {}", path.display()))?;
                    // SAFETY: a valid fd; advice only.
                    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
                    let mut buf = vec![0u8; len];
                    let n = if offs.is_empty() {
                        0
                    } else {
                        count.unwrap_or(offs.len())
                    };
                    for (i, &off) in offs.iter().cycle().take(n).enumerate() {
                        let now = Instant::now();
                        if now >= phase_end {
                            if now >= ctx.deadline {
                                hit_deadline.store(true, Ordering::Relaxed);
                            }
                            return Ok(i);
                        }
                        f.read_exact_at(&mut buf, off).with_context(|| {
                            format!("pread {len} at {off} of {}", path.display())
                        })?;
                        if !ctx.spec.check(ctx.spec.seq_id(), off, &buf) {
                            bail!("wrong bytes in {} at offset {off}", path.display());
                        }
                    }
                    Ok(n)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a reader thread panicked")))
            })
            .collect()
    });
    let secs = t0.elapsed().as_secs_f64();
    let done = results.into_iter().collect::<Result<Vec<usize>>>()?;
    let ops: u64 = done.iter().map(|&d| d as u64).sum();
    Ok((
        Measurement {
            phase: phase.into(),
            ops,
            bytes: ops * len as u64,
            secs,
            partial: hit_deadline.load(Ordering::Relaxed),
        },
        done,
    ))
}

/// The order of one epoch: every file once, shuffled by the seed and the epoch number.
pub fn epoch_order(spec: &DatasetSpec, epoch: u64) -> Vec<u32> {
    let mut order: Vec<u32> = (0..spec.epoch_files).collect();
    order.shuffle(&mut StdRng::seed_from_u64(spec.seed ^ (epoch << 48)));
    order
}

/// Reads every file of the epoch whole, `epoch_threads` at a time, in `order`.
pub fn epoch_pass(ctx: &Ctx, phase: &str, order: &[u32]) -> Result<Measurement> {
    let next = AtomicUsize::new(0);
    let (files, bytes) = (AtomicU64::new(0), AtomicU64::new(0));
    let partial = AtomicBool::new(false);
    let first_err: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..ctx.params.epoch_threads {
            s.spawn(|| {
                let mut buf = Vec::with_capacity(ctx.spec.epoch_max_bytes as usize + 1);
                loop {
                    if first_err.lock().map(|e| e.is_some()).unwrap_or(true) {
                        return;
                    }
                    if ctx.expired() {
                        partial.store(true, Ordering::Relaxed);
                        return;
                    }
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = order.get(k) else { return };
                    match read_epoch_file(ctx, i, &mut buf) {
                        Ok(n) => {
                            files.fetch_add(1, Ordering::Relaxed);
                            bytes.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => {
                            if let Ok(mut slot) = first_err.lock() {
                                slot.get_or_insert(e);
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    let secs = t0.elapsed().as_secs_f64();
    if let Some(e) = first_err.into_inner().ok().flatten() {
        return Err(e);
    }
    Ok(Measurement {
        phase: phase.into(),
        ops: files.into_inner(),
        bytes: bytes.into_inner(),
        secs,
        partial: partial.into_inner(),
    })
}

fn read_epoch_file(ctx: &Ctx, i: u32, buf: &mut Vec<u8>) -> Result<u64> {
    let path = ctx.root.join(ctx.spec.epoch_key(i));
    buf.clear();
    File::open(&path)
        .and_then(|mut f| f.read_to_end(buf))
        .with_context(|| format!("reading {}", path.display()))?;
    let want = ctx.spec.epoch_size(i);
    if buf.len() as u64 != want {
        bail!(
            "{} has {} bytes; the object has {want}",
            path.display(),
            buf.len()
        );
    }
    if !ctx.spec.check(ctx.spec.epoch_id(i), 0, buf) {
        bail!("wrong bytes in {}", path.display());
    }
    Ok(want)
}

/// readdir + lstat of every entry under `meta/`, its directories shared out to threads.
pub fn meta_pass(ctx: &Ctx, phase: &str) -> Result<Measurement> {
    let top = ctx.root.join("meta");
    let t0 = Instant::now();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for e in std::fs::read_dir(&top).with_context(|| format!("listing {}", top.display()))? {
        let e = e.with_context(|| format!("listing {}", top.display()))?;
        let md = e
            .metadata()
            .with_context(|| format!("lstat {}", e.path().display()))?;
        if md.is_dir() {
            dirs.push(e.path());
        }
    }
    let entries = AtomicU64::new(dirs.len() as u64);
    let next = AtomicUsize::new(0);
    let partial = AtomicBool::new(false);
    let first_err: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..ctx.params.meta_threads {
            s.spawn(|| {
                loop {
                    if ctx.expired() {
                        partial.store(true, Ordering::Relaxed);
                        return;
                    }
                    let Some(dir) = dirs.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        return;
                    };
                    let r = (|| -> Result<()> {
                        let list = std::fs::read_dir(dir)
                            .with_context(|| format!("listing {}", dir.display()))?;
                        for e in list {
                            let e = e.with_context(|| format!("listing {}", dir.display()))?;
                            e.metadata()
                                .with_context(|| format!("lstat {}", e.path().display()))?;
                            entries.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(())
                    })();
                    if let Err(e) = r {
                        if let Ok(mut slot) = first_err.lock() {
                            slot.get_or_insert(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    let secs = t0.elapsed().as_secs_f64();
    if let Some(e) = first_err.into_inner().ok().flatten() {
        return Err(e);
    }
    let (n, partial) = (entries.into_inner(), partial.into_inner());
    if !partial && n != ctx.spec.meta_entries() {
        bail!(
            "the walk of {} found {n} entries; the tree has {}",
            top.display(),
            ctx.spec.meta_entries()
        );
    }
    Ok(Measurement {
        phase: phase.into(),
        ops: n,
        bytes: 0,
        secs,
        partial,
    })
}

/// The error of a run stopped by the workload's time limit (as opposed to a failure).
#[derive(Debug)]
pub struct TimeLimit(pub String);

impl std::fmt::Display for TimeLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TimeLimit {}

/// Keeps the better of two measurements of a limit by the workload's main metric.
pub fn keep_best(best: &mut Option<Measurement>, m: Measurement, w: Workload) {
    let metric = w.main_metric();
    if best
        .as_ref()
        .is_none_or(|b| m.value(metric) > b.value(metric))
    {
        *best = Some(m);
    }
}

/// What a run of one workload on one system sends back, phase by phase.
pub enum Event {
    Phase(Measurement),
    /// A note for the table (e.g. a phase that could not run).
    Note(String),
    Done(Result<()>),
}

/// Runs every phase of `w` under `root` (a fresh mount), or a single `limit` phase for the
/// memory limit, sending each result as soon as it is known.
pub fn run_phases(w: Workload, ctx: &Ctx, limit_only: bool, send: &dyn Fn(Event)) -> Result<()> {
    let phases: Vec<&str> = if limit_only {
        vec!["limit"]
    } else {
        w.phases().to_vec()
    };
    let mut rand_cold_done: Option<Vec<usize>> = None;
    for (i, phase) in phases.iter().enumerate() {
        if ctx.expired() {
            return Err(
                TimeLimit(format!("stopped at the time limit before phase {phase}")).into(),
            );
        }
        if *phase == "after drop_caches" {
            if !ctx.params.drop_caches {
                send(Event::Note(format!("{phase}: skipped (--no-drop-caches)")));
                continue;
            }
            if let Err(e) = crate::systems::drop_caches() {
                send(Event::Note(format!("{phase}: skipped ({e:#})")));
                continue;
            }
        }
        let m = match w {
            Workload::Seq if *phase == "cold" || limit_only => seq_pass(ctx, phase)?,
            // A warm pass of 1 GiB takes a fraction of a second, where any noise on a shared
            // machine shows; like the limits, each system's repeatable passes are the best of
            // a few (cold cannot be repeated on one mount).
            Workload::Seq => {
                let mut best = None;
                for run in 0..ctx.params.limit_repeats.max(1) {
                    if run > 0 && *phase == "after drop_caches" {
                        crate::systems::drop_caches()?;
                    }
                    let m = seq_pass(ctx, phase)?;
                    let partial = m.partial;
                    keep_best(&mut best, m, w);
                    if partial || ctx.expired() {
                        break;
                    }
                }
                best.context("no seq pass ran")?
            }
            Workload::Rand4k | Workload::Rand1m => {
                let len = if w == Workload::Rand4k { 4096 } else { MIB };
                let warm_count = ctx.params.rand_counts(w == Workload::Rand4k).1;
                let mut offs = rand_offsets(ctx.spec, ctx.params, len as u64);
                // Cold reads each offset once; warm (and the memory limit) cycles over the
                // offsets cold got to.
                let count = if *phase == "cold" {
                    None
                } else {
                    Some(warm_count)
                };
                if let Some(done) = &rand_cold_done {
                    for (o, &d) in offs.iter_mut().zip(done) {
                        o.truncate(d);
                    }
                }
                let (m, done) = rand_pass(ctx, phase, len, &offs, count)?;
                if *phase == "cold" {
                    rand_cold_done = Some(done);
                }
                m
            }
            Workload::Epoch => epoch_pass(ctx, phase, &epoch_order(ctx.spec, i as u64 + 1))?,
            Workload::Meta => meta_pass(ctx, phase)?,
        };
        let partial = m.partial;
        send(Event::Phase(m));
        if partial {
            return Err(
                TimeLimit(format!("stopped at the time limit during phase {phase}")).into(),
            );
        }
    }
    Ok(())
}
