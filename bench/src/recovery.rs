//! The `recovery` workload: readers loop over files of the dataset while the serving process
//! of fluid-fuse is killed (kill -9) again and again. Two ways of recovering, in one run:
//! the hand-over (the keeper's successor takes the FUSE connection over and the kernel
//! resends; Linux 6.9+), and the way without it (`--resend false`: the connection ends and
//! the mount is made again, as the node plugin does on older kernels). Per kill: the longest
//! a reader waited for a read (its stall), and every read error.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::spec::DatasetSpec;
use crate::systems::{self, MountConfig, System};
use crate::units;

const READERS: usize = 4;
const FILES: u32 = 64;
const KILL_EVERY: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone, Serialize)]
pub struct RecoveryRow {
    pub system: String,
    pub kills: usize,
    pub read_errors: u64,
    pub wrong_bytes: u64,
    pub stall_p50_ms: f64,
    pub stall_p99_ms: f64,
    pub stall_max_ms: f64,
    /// The largest peak resident memory of the daemon's process tree over its mounts.
    pub peak_rss_bytes: Option<u64>,
}

/// What the readers share.
#[derive(Default)]
struct Shared {
    errors: AtomicU64,
    wrong: AtomicU64,
    /// Completion times of successful reads, per reader.
    done: Mutex<Vec<Vec<Instant>>>,
}

pub fn run(cfg: &MountConfig, spec: &DatasetSpec, quick: bool) -> Result<Vec<RecoveryRow>> {
    let kills = if quick { 5 } else { 20 };
    let mut rows = Vec::new();
    for (label, resend) in [
        ("fluid-fuse, hand-over (FUSE_NOTIFY_RESEND)", true),
        (
            "fluid-fuse --resend false (connection ends, re-mount)",
            false,
        ),
    ] {
        eprintln!("[bench] recovery / {label}: {kills} kills of the serving process");
        rows.push(run_one(cfg, spec, label, resend, kills)?);
    }
    Ok(rows)
}

fn run_one(
    cfg: &MountConfig,
    spec: &DatasetSpec,
    label: &str,
    resend: bool,
    kills: usize,
) -> Result<RecoveryRow> {
    let mut cfg = cfg.clone();
    cfg.fluid_args.push(format!("--resend={resend}"));
    let workload = if resend {
        "recovery"
    } else {
        "recovery-remount"
    };
    let mut mounted = systems::mount(System::Fluid, &cfg, workload)?;
    let mnt = mounted.mountpoint.clone();
    let paths: Vec<PathBuf> = (0..FILES.min(spec.epoch_files))
        .map(|i| mnt.join(spec.epoch_key(i)))
        .collect();
    // The reference: one clean pass.
    let mut want = HashMap::new();
    for p in &paths {
        let data = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        want.insert(p.clone(), crc32c::crc32c(&data));
    }
    let want = Arc::new(want);
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Shared {
        done: Mutex::new(vec![Vec::new(); READERS]),
        ..Shared::default()
    });
    let threads: Vec<_> = (0..READERS)
        .map(|r| {
            let (paths, want, stop, shared) =
                (paths.clone(), want.clone(), stop.clone(), shared.clone());
            std::thread::spawn(move || reader(r, &paths, &want, &stop, &shared))
        })
        .collect();

    let mut kill_times = Vec::new();
    let mut peak: Option<u64> = None;
    for _ in 0..kills {
        std::thread::sleep(KILL_EVERY);
        let keeper = mounted.pid().context("the keeper is gone")?;
        let Some(serving) = serving_pid(keeper) else {
            bail!("{label}: no serving process under keeper {keeper}");
        };
        kill_times.push(Instant::now());
        // SAFETY: kill(2) of a process this bench started (through the keeper).
        unsafe { libc::kill(serving as i32, libc::SIGKILL) };
        if !resend {
            // The keeper ends with the connection; mount again, as the node plugin would.
            let deadline = Instant::now() + Duration::from_secs(10);
            while mounted.running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            peak = peak.max(mounted.peak_now());
            drop(mounted);
            mounted = systems::mount(System::Fluid, &cfg, workload)?;
        } else {
            let deadline = Instant::now() + Duration::from_secs(10);
            while serving_pid(keeper).is_none_or(|p| p == serving) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    std::thread::sleep(KILL_EVERY);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    peak = peak.max(mounted.unmount().ok().flatten());

    let done = shared.done.lock().unwrap_or_else(|e| e.into_inner());
    let mut stalls: Vec<f64> = kill_times
        .iter()
        .map(|k| {
            done.iter()
                .filter_map(|times| stall_over(times, *k))
                .fold(0.0, f64::max)
        })
        .collect();
    stalls.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        stalls
            .get(((stalls.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok(RecoveryRow {
        system: label.to_string(),
        kills: kill_times.len(),
        read_errors: shared.errors.load(Ordering::Relaxed),
        wrong_bytes: shared.wrong.load(Ordering::Relaxed),
        stall_p50_ms: pct(0.5),
        stall_p99_ms: pct(0.99),
        stall_max_ms: stalls.last().copied().unwrap_or(0.0),
        peak_rss_bytes: peak,
    })
}

/// The gap between the last read done before `kill` and the first one after it, in ms.
fn stall_over(times: &[Instant], kill: Instant) -> Option<f64> {
    let after = times.partition_point(|t| *t < kill);
    let (before, next) = (times.get(after.checked_sub(1)?)?, times.get(after)?);
    Some(next.duration_since(*before).as_secs_f64() * 1e3)
}

/// Reads every file in 1 MiB steps (page cache dropped first), again and again; reader 0
/// holds its files open across the kills. An error is counted and the file tried again.
fn reader(
    r: usize,
    paths: &[PathBuf],
    want: &HashMap<PathBuf, u32>,
    stop: &AtomicBool,
    s: &Shared,
) {
    let mut held: HashMap<PathBuf, File> = HashMap::new();
    let mut done = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    while !stop.load(Ordering::Relaxed) {
        for p in paths {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let got = read_one(r == 0, p, &mut held, &mut buf, &mut done);
            match got {
                Ok(crc) if Some(&crc) == want.get(p) => {}
                Ok(_) => {
                    s.wrong.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    s.errors.fetch_add(1, Ordering::Relaxed);
                    held.remove(p);
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    s.done.lock().unwrap_or_else(|e| e.into_inner())[r] = done;
}

fn read_one(
    hold: bool,
    p: &Path,
    held: &mut HashMap<PathBuf, File>,
    buf: &mut [u8],
    done: &mut Vec<Instant>,
) -> std::io::Result<u32> {
    let mut own;
    let f = if hold {
        if !held.contains_key(p) {
            held.insert(p.to_path_buf(), File::open(p)?);
        }
        held.get_mut(p)
            .ok_or_else(|| std::io::Error::other("not held"))?
    } else {
        own = File::open(p)?;
        &mut own
    };
    // SAFETY: advice on our own open descriptor.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    std::io::Seek::seek(f, std::io::SeekFrom::Start(0))?;
    let mut crc = 0;
    loop {
        let n = f.read(buf)?;
        done.push(Instant::now());
        if n == 0 {
            return Ok(crc);
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
    }
}

/// The live `fluid-fuse serve` child of `keeper`.
fn serving_pid(keeper: u32) -> Option<u32> {
    fluid_tests::daemon::serving_pids(keeper).into_iter().next()
}

pub fn markdown(rows: &[RecoveryRow]) -> String {
    let mut out = String::from(
        "| system | kills | read errors | wrong bytes | stall p50 ms | stall p99 ms | stall max ms | peak RSS MiB |\n|---|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {} |\n",
            r.system,
            r.kills,
            r.read_errors,
            r.wrong_bytes,
            r.stall_p50_ms,
            r.stall_p99_ms,
            r.stall_max_ms,
            units::fmt_mib(r.peak_rss_bytes)
        ));
    }
    out
}
