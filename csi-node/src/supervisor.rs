//! One `fluid-fuse` daemon per staged volume: started at the staging path, watched, restarted
//! when it dies (its targets are then re-bound so readers recover without a pod restart), and
//! adopted again after a restart of this plugin.
//!
//! Every volume lives in a slot guarded by a tokio mutex: CSI calls on one volume, the watcher
//! that restarts its daemon, and start-up recovery take turns; different volumes proceed in
//! parallel. A watcher knows its daemon by a generation number; when the number in the slot
//! changed (the daemon was stopped, replaced or restarted by someone else), the watcher leaves.
//!
//! Daemons run in their own session (setsid) with their output in a log file, not a pipe, so
//! they outlive this plugin: a SIGTERM to the plugin stops serving CSI but never the mounts.
//!
//! Besides the slots, the supervisor keeps a plain list of the staged volumes (their Dataset and
//! control socket), readable without waiting for any volume's lock, and tells subscribers when
//! it changes: the node labels and the cache endpoint work from it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use fluid_volume::logging::LOG_ENV;

use crate::cache_dirs::CacheDirs;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::mounts::{self, PathState, run_blocking};
use crate::state::{StateDir, VolumeRecord, dir_name, remove_dir};

/// How often a daemon that is not our child (adopted after a restart) is checked for life.
const ADOPTED_POLL: Duration = Duration::from_millis(200);
/// How often the ready file is looked for while a daemon mounts.
const READY_POLL: Duration = Duration::from_millis(20);
/// How long a daemon gets to unmount and exit after SIGTERM, then after SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(10);
const KILL_GRACE: Duration = Duration::from_secs(5);
/// Longest wait between restart attempts of a daemon that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A daemon log larger than this is rotated (to `.1`) when the daemon is started again.
const MAX_LOG: u64 = 8 << 20;
/// Lines of the daemon's log quoted in an error.
const LOG_TAIL_LINES: usize = 20;
/// The generation of a volume being stopped: no watcher or retry loop ever matches it.
const STOPPING: u64 = u64::MAX;

/// A staged volume.
#[derive(Debug)]
pub struct Volume {
    pub record: VolumeRecord,
    /// The daemon instance whose watcher may restart it (see the module doc).
    pub generation: u64,
    /// Whether the daemon is believed to serve: false from its death until a restart works.
    pub running: bool,
}

pub type Slot = Arc<Mutex<Option<Volume>>>;

/// A staged volume as the node's other jobs see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Staged {
    /// `namespace/name` of its Dataset, when the volume context names one.
    pub dataset: Option<String>,
    /// Its daemon's control socket (fluid.v1.CacheNode).
    pub control_socket: PathBuf,
    /// Its Dataset must have the node to itself.
    pub exclusive: bool,
    /// Still being staged: it holds its place (see [`Supervisor::claim_placement`]) but is not
    /// labelled or asked for cache figures yet.
    pub pending: bool,
}

/// Which volume owns each staging and target path, to refuse a second volume on the same
/// path. Updated under the owning volume's lock.
#[derive(Default)]
struct Index {
    staging: HashMap<PathBuf, String>,
    targets: HashMap<PathBuf, String>,
}

pub struct Supervisor {
    cfg: Config,
    fuse_binary: PathBuf,
    state: StateDir,
    slots: std::sync::Mutex<HashMap<String, Slot>>,
    index: std::sync::Mutex<Index>,
    generation: AtomicU64,
    boot_id: Option<String>,
    /// The log filter of the daemons ([`LOG_ENV`]): the plugin's own.
    log_filter: String,
    /// Staged volumes by id (see the module doc), and a signal sent on each change.
    staged: std::sync::Mutex<BTreeMap<String, Staged>>,
    staged_changed: watch::Sender<()>,
    cache_dirs: CacheDirs,
}

/// A lock that a panicking holder poisoned is still usable: the maps stay consistent.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Supervisor {
    pub fn new(cfg: Config) -> Result<Arc<Supervisor>> {
        let state = StateDir::open(&cfg.state_dir)?;
        let fuse_binary = cfg.fuse_binary();
        let cache_dirs = CacheDirs::open(state.root());
        Ok(Arc::new(Supervisor {
            cache_dirs,
            cfg,
            fuse_binary,
            state,
            slots: Default::default(),
            index: Default::default(),
            generation: AtomicU64::new(1),
            boot_id: read_boot_id(),
            log_filter: fluid_volume::logging::filter_for_children(),
            staged: Default::default(),
            staged_changed: watch::Sender::new(()),
        }))
    }

    /// Records a volume as staged (after a successful stage, or found at start-up).
    pub fn mark_staged(&self, rec: &VolumeRecord) {
        let entry = Staged {
            dataset: rec.dataset.clone(),
            control_socket: rec.control_socket.clone(),
            exclusive: rec.exclusive,
            pending: false,
        };
        let old = lock(&self.staged).insert(rec.volume_id.clone(), entry.clone());
        if old.as_ref() != Some(&entry) {
            self.staged_changed.send_replace(());
        }
    }

    /// Forgets a volume once it is unstaged.
    pub fn mark_unstaged(&self, volume_id: &str) {
        if lock(&self.staged).remove(volume_id).is_some() {
            self.staged_changed.send_replace(());
        }
    }

    /// The staged Dataset that has this node to itself, if any.
    pub fn exclusive_dataset(&self) -> Option<String> {
        lock(&self.staged)
            .values()
            .find(|s| s.exclusive && !s.pending)
            .and_then(|s| s.dataset.clone())
    }

    /// Claims the node for a new volume of `dataset` (exclusive or not), or says why it may not
    /// be staged beside the volumes staged (or being staged) here: an Exclusive Dataset shares
    /// its nodes with no other Dataset, either way round. The check and the claim are one step,
    /// so two stages of different Datasets at once cannot both pass; the claim becomes the
    /// volume's entry at [`Supervisor::mark_staged`] or goes at
    /// [`Supervisor::abandon_placement`].
    pub fn claim_placement(
        &self,
        volume_id: &str,
        dataset: Option<&str>,
        exclusive: bool,
    ) -> std::result::Result<(), String> {
        let mut staged = lock(&self.staged);
        if let Some(why) = placement_conflict(&staged, volume_id, dataset, exclusive) {
            return Err(why);
        }
        staged.entry(volume_id.to_string()).or_insert(Staged {
            dataset: dataset.map(str::to_string),
            control_socket: PathBuf::new(),
            exclusive,
            pending: true,
        });
        Ok(())
    }

    /// Forgets a claim of [`Supervisor::claim_placement`] whose stage failed.
    pub fn abandon_placement(&self, volume_id: &str) {
        let mut staged = lock(&self.staged);
        if staged.get(volume_id).is_some_and(|s| s.pending) {
            staged.remove(volume_id);
        }
    }

    /// The Datasets (`namespace/name`) with at least one volume staged here.
    pub fn staged_datasets(&self) -> BTreeSet<String> {
        lock(&self.staged)
            .values()
            .filter(|s| !s.pending)
            .filter_map(|s| s.dataset.clone())
            .collect()
    }

    /// The staged volumes of one Dataset: (volume id, control socket), ordered by id.
    pub fn volumes_of(&self, dataset: &str) -> Vec<(String, PathBuf)> {
        lock(&self.staged)
            .iter()
            .filter(|(_, s)| !s.pending && s.dataset.as_deref() == Some(dataset))
            .map(|(id, s)| (id.clone(), s.control_socket.clone()))
            .collect()
    }

    /// A receiver that sees a change each time a volume is staged or unstaged.
    pub fn watch_staged(&self) -> watch::Receiver<()> {
        self.staged_changed.subscribe()
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn state(&self) -> &StateDir {
        &self.state
    }

    pub fn cache_dirs(&self) -> &CacheDirs {
        &self.cache_dirs
    }

    pub fn fuse_binary(&self) -> &Path {
        &self.fuse_binary
    }

    /// The slot of a volume, created empty when the volume is new. Slots are never removed, so
    /// two callers always agree on the lock of a volume.
    pub fn slot(&self, volume_id: &str) -> Slot {
        lock(&self.slots)
            .entry(volume_id.to_string())
            .or_default()
            .clone()
    }

    pub fn existing_slot(&self, volume_id: &str) -> Option<Slot> {
        lock(&self.slots).get(volume_id).cloned()
    }

    fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed)
    }

    /// Claims `staging` for a new volume, counting it against `--max-volumes`.
    pub fn reserve_staging(&self, volume_id: &str, staging: &Path) -> Result<()> {
        let mut idx = lock(&self.index);
        if let Some(other) = idx.staging.get(staging) {
            if other != volume_id {
                return Err(Error::AlreadyExists(format!(
                    "staging_target_path {} is in use by volume {other}",
                    staging.display()
                )));
            }
            return Ok(());
        }
        let max = self.cfg.max_volumes;
        if max > 0 && idx.staging.len() as i64 >= max {
            return Err(Error::ResourceExhausted(format!(
                "this node already holds {max} volumes (--max-volumes)"
            )));
        }
        idx.staging
            .insert(staging.to_path_buf(), volume_id.to_string());
        Ok(())
    }

    pub fn release_staging(&self, volume_id: &str, staging: &Path) {
        let mut idx = lock(&self.index);
        if idx.staging.get(staging).is_some_and(|v| v == volume_id) {
            idx.staging.remove(staging);
        }
    }

    /// Claims `target` for a volume; another volume's target is refused.
    pub fn reserve_target(&self, volume_id: &str, target: &Path) -> Result<()> {
        let mut idx = lock(&self.index);
        match idx.targets.get(target) {
            Some(other) if other != volume_id => Err(Error::AlreadyExists(format!(
                "target_path {} is published for volume {other}",
                target.display()
            ))),
            _ => {
                idx.targets
                    .insert(target.to_path_buf(), volume_id.to_string());
                Ok(())
            }
        }
    }

    pub fn release_target(&self, volume_id: &str, target: &Path) {
        let mut idx = lock(&self.index);
        if idx.targets.get(target).is_some_and(|v| v == volume_id) {
            idx.targets.remove(target);
        }
    }

    /// Whether the record's daemon is alive: same pid, same start time, same boot, not a
    /// zombie.
    pub fn daemon_alive(&self, rec: &VolumeRecord) -> bool {
        let Some(pid) = rec.pid else { return false };
        if rec.boot_id.is_some() && rec.boot_id != self.boot_id {
            return false;
        }
        process_alive(pid, rec.pid_start)
    }

    /// Starts `fluid-fuse` for the volume at its staging path and waits until it has mounted.
    /// On success the slot's generation is new and a watcher supervises the daemon; on failure
    /// the daemon is killed and the error quotes the end of its log.
    pub async fn start_daemon(self: &Arc<Self>, slot: &Slot, vol: &mut Volume) -> Result<()> {
        let rec = &mut vol.record;
        let staging = rec.daemon_path().to_path_buf();
        let st = staging.clone();
        run_blocking("preparing the mount folder", move || prepare_staging(&st)).await?;
        match std::fs::remove_file(&rec.ready_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::io(
                    format!("removing {}", rec.ready_file.display()),
                    e,
                ));
            }
        }
        let log = open_log(&rec.log_file)?;
        let log_err = log
            .try_clone()
            .map_err(|e| Error::io(format!("opening {}", rec.log_file.display()), e))?;

        let mut cmd = tokio::process::Command::new(&self.fuse_binary);
        cmd.arg("mount")
            .arg("--mountpoint")
            .arg(&staging)
            .arg("--dataset")
            .arg(&rec.dataset_file);
        for t in rec.tiers.specs() {
            cmd.arg("--tier").arg(t.to_string());
        }
        cmd.arg("--block-size")
            .arg(rec.block_size.to_string())
            .arg("--control")
            .arg(format!("unix://{}", rec.control_socket.display()))
            .arg("--ready-file")
            .arg(&rec.ready_file)
            .env(LOG_ENV, &self.log_filter)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // SAFETY: setsid(2) is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Daemon(format!("starting {}: {e}", self.fuse_binary.display())))?;
        let Some(pid) = child.id() else {
            return Err(Error::Daemon("fluid-fuse exited at once".into()));
        };
        // Recorded before the wait: a plugin that dies now still finds (and adopts) it.
        rec.pid = Some(pid);
        rec.pid_start = process_start(pid);
        rec.boot_id = self.boot_id.clone();
        if let Err(e) = self.state.save(rec) {
            kill_child(&mut child).await;
            return Err(e);
        }
        tracing::info!(volume = %rec.volume_id, pid, "started fluid-fuse at {}", staging.display());

        let timeout = self.cfg.ready_timeout;
        let deadline = Instant::now() + timeout;
        let failure = loop {
            if ready_file_names(&rec.ready_file, pid) {
                break None;
            }
            match child.try_wait() {
                Ok(Some(status)) => {
                    break Some(format!("fluid-fuse {} before it mounted", describe(status)));
                }
                Ok(None) => {}
                Err(e) => break Some(format!("waiting for fluid-fuse: {e}")),
            }
            if Instant::now() >= deadline {
                break Some(format!(
                    "fluid-fuse did not mount within {} (--ready-timeout)",
                    humantime::format_duration(timeout)
                ));
            }
            tokio::time::sleep(READY_POLL).await;
        };
        let failure = match failure {
            None if !rec.parked => self.attach_staging(rec).await.err().map(|e| e.to_string()),
            other => other,
        };
        if let Some(msg) = failure {
            kill_child(&mut child).await;
            let st = staging.clone();
            let _ = run_blocking("detaching the staging path", move || {
                mounts::detach_fluid(&st)
            })
            .await;
            rec.pid = None;
            rec.pid_start = None;
            let _ = self.state.save(rec);
            let tail = log_tail(&rec.log_file);
            return Err(Error::Daemon(format!(
                "volume {}: {msg}; the end of its log ({}):\n{tail}",
                rec.volume_id,
                rec.log_file.display()
            )));
        }
        let generation = self.next_generation();
        vol.generation = generation;
        vol.running = true;
        self.spawn_watcher(
            slot.clone(),
            vol.record.volume_id.clone(),
            generation,
            Daemon::Child(child),
        );
        Ok(())
    }

    /// Binds a kept volume's daemon mount at its staging path, unless the bind is live already
    /// (a volume whose daemon mounts at the staging path itself needs nothing).
    pub async fn attach_staging(&self, rec: &VolumeRecord) -> Result<()> {
        let Some(mnt) = rec.mount_path.clone() else {
            return Ok(());
        };
        let staging = rec.staging_path.clone();
        run_blocking("binding the staging path", move || {
            if target_is_live(&mnt, &staging)? {
                return Ok(());
            }
            prepare_staging(&staging)?;
            mounts::bind(&mnt, &staging, false)
        })
        .await
    }

    /// NodeUnstage of a kept volume (cleanPolicy OnRuntimeDeleted): its targets and staging
    /// path are unmounted, its daemon keeps serving its cache (stats, warm-ups) until
    /// [`Supervisor::release`], and the node keeps its Dataset label.
    pub async fn park(&self, vol: &mut Volume) -> Result<()> {
        self.unmount_targets(vol).await?;
        let st = vol.record.staging_path.clone();
        run_blocking("unmounting the staging path", move || {
            mounts::unmount_all(&st)
        })
        .await?;
        vol.record.parked = true;
        self.state.save(&vol.record)?;
        self.release_staging(&vol.record.volume_id, &vol.record.staging_path);
        Ok(())
    }

    /// NodeStage of a parked volume: it is staged at `staging` again (the caller then binds it,
    /// or restarts a daemon that died meanwhile).
    pub fn unpark(&self, vol: &mut Volume, staging: &Path, keep: bool) -> Result<()> {
        let id = vol.record.volume_id.clone();
        self.reserve_staging(&id, staging)?;
        let before = vol.record.clone();
        vol.record.staging_path = staging.to_path_buf();
        vol.record.parked = false;
        vol.record.keep = keep;
        if let Err(e) = self.state.save(&vol.record) {
            vol.record = before;
            self.release_staging(&id, staging);
            return Err(e);
        }
        Ok(())
    }

    /// The controller's Release of a Dataset (its CacheRuntime or the Dataset is gone): parked
    /// volumes are torn down now; the others are no longer kept, so that their NodeUnstage
    /// tears them down. The Dataset's disk caches go with the volumes: now for every volume
    /// not in use (also those unstaged before), at NodeUnstage for the others. Returns
    /// (stopped, still in use).
    pub async fn release(&self, dataset: &str) -> Result<(u32, u32)> {
        let (mut stopped, mut in_use) = (0, 0);
        let mut failed = None;
        for (id, _) in self.volumes_of(dataset) {
            let Some(slot) = self.existing_slot(&id) else {
                continue;
            };
            let mut guard = slot.lock().await;
            let Some(vol) = guard.as_mut() else { continue };
            if vol.record.parked {
                match self.teardown(vol).await {
                    Ok(()) => {
                        tracing::info!(volume = %id, dataset, "released: stopped its kept fluid-fuse");
                        *guard = None;
                        stopped += 1;
                    }
                    Err(e) => failed = Some(e),
                }
                continue;
            }
            in_use += 1;
            if vol.record.keep || !vol.record.released {
                vol.record.keep = false;
                vol.record.released = true;
                if let Err(e) = self.state.save(&vol.record) {
                    failed = Some(e);
                }
            }
        }
        // Every volume still here (in use, being staged, or whose teardown failed) keeps its
        // folders; a volume's folder in a tier is named like its state folder.
        let live: BTreeSet<String> = lock(&self.staged).keys().map(|id| dir_name(id)).collect();
        let still_here = |dir: &Path| {
            dir.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| live.contains(n))
        };
        match self.cache_dirs.remove_dataset(dataset, still_here) {
            Ok(n) if n > 0 => tracing::info!(dataset, "released: removed {n} disk cache folder(s)"),
            Ok(_) => {}
            Err(e) => failed = Some(e),
        }
        match failed {
            Some(e) => Err(e),
            None => Ok((stopped, in_use)),
        }
    }

    /// Stops the volume's daemon: SIGTERM (it unmounts the staging path), then SIGKILL.
    /// Its watcher will not restart it.
    pub async fn stop_daemon(&self, vol: &mut Volume) -> Result<()> {
        vol.generation = STOPPING;
        vol.running = false;
        let Some(pid) = vol.record.pid else {
            return Ok(());
        };
        if !self.daemon_alive(&vol.record) {
            vol.record.pid = None;
            return Ok(());
        }
        tracing::info!(volume = %vol.record.volume_id, pid, "stopping fluid-fuse");
        signal(pid, libc::SIGTERM);
        if !self.wait_gone(&vol.record, TERM_GRACE).await {
            tracing::warn!(volume = %vol.record.volume_id, pid, "fluid-fuse ignored SIGTERM; killing it");
            signal(pid, libc::SIGKILL);
            if !self.wait_gone(&vol.record, KILL_GRACE).await {
                return Err(Error::Daemon(format!(
                    "fluid-fuse pid {pid} of volume {} did not exit after SIGKILL",
                    vol.record.volume_id
                )));
            }
        }
        vol.record.pid = None;
        vol.record.pid_start = None;
        Ok(())
    }

    async fn wait_gone(&self, rec: &VolumeRecord, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if !self.daemon_alive(rec) {
                if let Some(pid) = rec.pid {
                    reap(pid);
                }
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        !self.daemon_alive(rec)
    }

    /// Makes every published target of the volume show its current daemon: dead binds of an
    /// earlier daemon are detached and the staging path (or sub path) bound again. With
    /// `only_broken`, targets that already show the live staging mount are left alone.
    /// Targets whose parent folder is gone (the pod is gone) are dropped from the record.
    pub async fn rebind_targets(&self, vol: &mut Volume, only_broken: bool) -> usize {
        let id = vol.record.volume_id.clone();
        let staging = vol.record.staging_path.clone();
        let mut rebound = 0;
        let mut dropped = Vec::new();
        for (target, t) in vol.record.targets.clone() {
            let src = source_path(&staging, t.sub_path.as_deref());
            let (stg, tg) = (staging.clone(), target.clone());
            let result = run_blocking("re-binding a target", move || {
                if only_broken && target_is_live(&stg, &tg)? {
                    return Ok(Rebind::Kept);
                }
                rebind_one(&src, &tg, t.read_only)
            })
            .await;
            match result {
                Ok(Rebind::Kept) => {}
                Ok(Rebind::Bound) => {
                    rebound += 1;
                    tracing::info!(volume = %id, "re-bound target {}", target.display());
                }
                Ok(Rebind::Gone) => {
                    tracing::warn!(volume = %id, "target {} is gone; forgetting it", target.display());
                    dropped.push(target);
                }
                Err(e) => {
                    tracing::error!(volume = %id, "re-binding target {}: {e}", target.display())
                }
            }
        }
        for t in dropped {
            vol.record.targets.remove(&t);
            self.release_target(&id, &t);
        }
        if let Err(e) = self.state.save(&vol.record) {
            tracing::error!(volume = %id, "{e}");
        }
        rebound
    }

    fn spawn_watcher(
        self: &Arc<Self>,
        slot: Slot,
        volume_id: String,
        generation: u64,
        daemon: Daemon,
    ) {
        let sup = self.clone();
        tokio::spawn(async move {
            let how = daemon.wait().await;
            sup.restart_loop(slot, volume_id, generation, how, Duration::ZERO)
                .await;
        });
    }

    /// Restarts a volume's daemon until it works, unless the volume was meanwhile unstaged,
    /// stopped or restarted by someone else (its generation is no longer `expected`).
    async fn restart_loop(
        self: Arc<Self>,
        slot: Slot,
        volume_id: String,
        expected: u64,
        how: String,
        mut delay: Duration,
    ) {
        let mut attempt: u32 = 0;
        loop {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let mut guard = slot.lock().await;
            let Some(vol) = guard.as_mut() else { return };
            if vol.generation != expected {
                return;
            }
            if attempt == 0 {
                tracing::warn!(volume = %volume_id, "fluid-fuse {how}; restarting it");
            }
            vol.running = false;
            let started = Instant::now();
            match self.start_daemon(&slot, vol).await {
                Ok(()) => {
                    let n = self.rebind_targets(vol, false).await;
                    tracing::info!(
                        volume = %volume_id,
                        pid = vol.record.pid,
                        "fluid-fuse restarted and {n} target(s) re-bound in {} ms",
                        started.elapsed().as_millis()
                    );
                    return;
                }
                Err(e) => {
                    tracing::error!(volume = %volume_id, attempt, "restarting fluid-fuse failed: {e}");
                }
            }
            drop(guard);
            attempt += 1;
            delay = backoff(attempt);
        }
    }

    /// Start-up: reads the state records and, per volume, adopts its running daemon, restarts
    /// a dead one, or cleans up a volume whose staging folder is gone. Each volume's lock is
    /// taken before this returns, so CSI calls on it wait until it is recovered.
    pub async fn recover(self: &Arc<Self>) -> Result<()> {
        let (records, stale) = self.state.load_all()?;
        for s in stale {
            tracing::warn!(
                "removing stale state folder {}: {}",
                s.dir.display(),
                s.reason
            );
            if let Err(e) = remove_dir(&s.dir) {
                tracing::error!("{e}");
            }
        }
        for rec in records {
            // Staged as far as the node's labels and cache endpoint go, unless recovery finds
            // the volume gone and tears it down.
            self.mark_staged(&rec);
            let slot = self.slot(&rec.volume_id);
            let guard = slot.clone().lock_owned().await;
            {
                let mut idx = lock(&self.index);
                if !rec.parked {
                    idx.staging
                        .insert(rec.staging_path.clone(), rec.volume_id.clone());
                }
                for t in rec.targets.keys() {
                    idx.targets.insert(t.clone(), rec.volume_id.clone());
                }
            }
            let sup = self.clone();
            tokio::spawn(async move { sup.recover_volume(slot, guard, rec).await });
        }
        Ok(())
    }

    async fn recover_volume(
        self: Arc<Self>,
        slot: Slot,
        mut guard: OwnedMutexGuard<Option<Volume>>,
        rec: VolumeRecord,
    ) {
        let id = rec.volume_id.clone();
        let alive = self.daemon_alive(&rec);
        // A parked volume has no staging path to lose; its daemon's folder is in the state dir.
        let st = (!rec.parked).then(|| rec.staging_path.clone());
        let mnt = rec.daemon_path().to_path_buf();
        let probed = run_blocking("checking the staging path", move || {
            let staging_gone = st.is_some_and(|st| mounts::probe(&st) == PathState::Missing);
            Ok((staging_gone, mounts::probe(&mnt), mounts::mount_at(&mnt)?))
        })
        .await;
        let (staging_gone, state, top) = match probed {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(volume = %id, "{e}");
                (
                    false,
                    PathState::Error(std::io::ErrorKind::Other, e.to_string()),
                    None,
                )
            }
        };
        let mut vol = Volume {
            record: rec,
            generation: 0,
            running: false,
        };

        if staging_gone || state == PathState::Missing {
            tracing::warn!(volume = %id, "staging path {} (or the daemon's mount folder) is gone; cleaning the volume up", vol.record.staging_path.display());
            if let Err(e) = self.teardown(&mut vol).await {
                tracing::error!(volume = %id, "{e}");
                *guard = Some(vol);
            }
            return;
        }

        if alive && state == PathState::Directory && top.as_ref().is_some_and(|m| m.is_fluid()) {
            let (pid, start) = (vol.record.pid.unwrap_or_default(), vol.record.pid_start);
            let generation = self.next_generation();
            vol.generation = generation;
            vol.running = true;
            tracing::info!(volume = %id, pid, "adopted the running fluid-fuse");
            if !vol.record.parked
                && let Err(e) = self.attach_staging(&vol.record).await
            {
                tracing::error!(volume = %id, "{e}");
            }
            self.spawn_watcher(
                slot.clone(),
                id.clone(),
                generation,
                Daemon::Adopted { pid, start },
            );
            let n = self.rebind_targets(&mut vol, true).await;
            if n > 0 {
                tracing::info!(volume = %id, "re-bound {n} target(s) that had lost their mount");
            }
            *guard = Some(vol);
            return;
        }

        if alive {
            tracing::warn!(volume = %id, "fluid-fuse runs but its staging path is not served; restarting it");
            if let Err(e) = self.stop_daemon(&mut vol).await {
                tracing::error!(volume = %id, "{e}");
            }
        }
        vol.generation = 0;
        match self.start_daemon(&slot, &mut vol).await {
            Ok(()) => {
                let n = self.rebind_targets(&mut vol, false).await;
                tracing::info!(volume = %id, "restarted fluid-fuse after a plugin restart; {n} target(s) re-bound");
                *guard = Some(vol);
            }
            Err(e) => {
                tracing::error!(volume = %id, "restarting fluid-fuse failed: {e}; will retry");
                *guard = Some(vol);
                drop(guard);
                let sup = self.clone();
                tokio::spawn(sup.restart_loop(slot, id, 0, "is not running".into(), backoff(1)));
            }
        }
    }

    /// Undoes everything for a volume: unmounts its targets and staging path, stops its
    /// daemon, removes its state folder. Used by NodeUnstageVolume and recovery.
    pub async fn teardown(&self, vol: &mut Volume) -> Result<()> {
        let id = vol.record.volume_id.clone();
        self.unmount_targets(vol).await?;
        self.stop_daemon(vol).await?;
        // A parked volume's last staging path is no longer its to unmount.
        let mut paths = vol.record.mount_path.iter().cloned().collect::<Vec<_>>();
        if !vol.record.parked {
            paths.push(vol.record.staging_path.clone());
        }
        run_blocking("unmounting the staging path", move || {
            paths.iter().try_for_each(|p| mounts::unmount_all(p))
        })
        .await?;
        if vol.record.released {
            self.cache_dirs.remove(&vol.record.disk_dirs())?;
        }
        self.state.remove(&id)?;
        self.release_staging(&id, &vol.record.staging_path);
        self.mark_unstaged(&id);
        Ok(())
    }

    /// Unmounts the targets still published (the CO unpublishes before it unstages; leftovers
    /// must not point at a stopped daemon).
    async fn unmount_targets(&self, vol: &mut Volume) -> Result<()> {
        let id = vol.record.volume_id.clone();
        for target in vol.record.targets.keys().cloned().collect::<Vec<_>>() {
            tracing::warn!(volume = %id, "target {} is still published; unmounting it", target.display());
            let t = target.clone();
            run_blocking("unmounting a target", move || {
                mounts::unmount_all(&t)?;
                mounts::remove_target(&t)
            })
            .await?;
            vol.record.targets.remove(&target);
            self.release_target(&id, &target);
        }
        Ok(())
    }
}

/// Why a volume of `dataset` may not join the volumes in `staged` (see
/// [`Supervisor::claim_placement`]).
fn placement_conflict(
    staged: &BTreeMap<String, Staged>,
    volume_id: &str,
    dataset: Option<&str>,
    exclusive: bool,
) -> Option<String> {
    let others = staged
        .iter()
        .filter(|(id, s)| id.as_str() != volume_id && s.dataset.as_deref() != dataset);
    for (id, s) in others {
        let theirs = s.dataset.as_deref().unwrap_or("(no dataset)");
        if s.exclusive {
            return Some(format!(
                "this node holds the cache of Dataset {theirs} (placement Exclusive, volume {id}); no other Dataset may be staged here"
            ));
        }
        if exclusive {
            return Some(format!(
                "Dataset {} has placement Exclusive, but this node already holds the cache of Dataset {theirs} (volume {id})",
                dataset.unwrap_or("(unnamed)")
            ));
        }
    }
    None
}

/// The folder bound at a target: the staging path or a sub path of it.
pub fn source_path(staging: &Path, sub_path: Option<&str>) -> PathBuf {
    match sub_path {
        Some(s) if !s.is_empty() => staging.join(s),
        _ => staging.to_path_buf(),
    }
}

enum Rebind {
    Kept,
    Bound,
    Gone,
}

/// Whether `target` shows a live bind of the FUSE mount now at `staging`.
pub fn target_is_live(staging: &Path, target: &Path) -> Result<bool> {
    let (Some(s), Some(t)) = (mounts::mount_at(staging)?, mounts::mount_at(target)?) else {
        return Ok(false);
    };
    Ok(s.is_fluid()
        && t.is_fluid()
        && s.dev == t.dev
        && mounts::probe(target) == PathState::Directory)
}

fn rebind_one(src: &Path, target: &Path, read_only: bool) -> Result<Rebind> {
    mounts::detach_all(target)?;
    match mounts::probe(target) {
        PathState::Directory => {}
        PathState::Missing => {
            if !target.parent().is_some_and(Path::is_dir) {
                return Ok(Rebind::Gone);
            }
            std::fs::create_dir(target)
                .map_err(|e| Error::io(format!("creating {}", target.display()), e))?;
        }
        other => {
            return Err(Error::FailedPrecondition(format!(
                "target {} cannot be mounted on: {other:?}",
                target.display()
            )));
        }
    }
    mounts::bind(src, target, read_only)?;
    Ok(Rebind::Bound)
}

/// The staging folder exists, is a directory, and carries no fluid mount (a dead one would
/// be stacked under the new daemon's mount).
fn prepare_staging(staging: &Path) -> Result<()> {
    mounts::detach_fluid(staging)?;
    match mounts::probe(staging) {
        PathState::Directory => Ok(()),
        PathState::Missing => std::fs::create_dir_all(staging)
            .map_err(|e| Error::io(format!("creating {}", staging.display()), e)),
        PathState::Other => Err(Error::invalid(
            "staging_target_path",
            format!("{} exists and is not a directory", staging.display()),
        )),
        PathState::Dead => Err(Error::FailedPrecondition(format!(
            "{} is a dead mount that is not fluid's",
            staging.display()
        ))),
        PathState::Error(_, msg) => Err(Error::Daemon(format!("{}: {msg}", staging.display()))),
    }
}

/// The daemon a watcher waits for.
enum Daemon {
    /// Started by this plugin: waited for.
    Child(tokio::process::Child),
    /// Started by an earlier run of this plugin: polled.
    Adopted { pid: u32, start: Option<u64> },
}

impl Daemon {
    /// Waits until the daemon is gone; says how it ended.
    async fn wait(self) -> String {
        match self {
            Daemon::Child(mut c) => match c.wait().await {
                Ok(status) => describe(status),
                Err(e) => format!("could not be waited for ({e})"),
            },
            Daemon::Adopted { pid, start } => loop {
                tokio::time::sleep(ADOPTED_POLL).await;
                if !process_alive(pid, start) {
                    reap(pid);
                    return format!("(pid {pid}, adopted) is gone");
                }
            },
        }
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => format!("ended ({status})"),
    }
}

async fn kill_child(child: &mut tokio::process::Child) {
    let _ = child.start_kill();
    let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory effects; the pid was checked to be our daemon.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Reaps `pid` if it is a zombie child of ours (when we run as PID 1, orphaned daemons are
/// re-parented to us); harmless otherwise.
fn reap(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        let mut status = 0;
        // SAFETY: waitpid(2) with WNOHANG writes only into `status`.
        unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    }
}

/// State letter and start time (clock ticks after boot) of a process, from /proc/PID/stat.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces or parentheses itself.
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 22 of stat(5) is starttime; `rest` starts at field 3.
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

fn process_start(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|(_, s)| s)
}

pub fn process_alive(pid: u32, start: Option<u64>) -> bool {
    match proc_stat(pid) {
        Some((state, s)) => !matches!(state, 'Z' | 'X' | 'x') && start.is_none_or(|want| want == s),
        None => false,
    }
}

fn read_boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Whether the ready file exists and names `pid` (a leftover of an earlier daemon does not).
fn ready_file_names(path: &Path, pid: u32) -> bool {
    std::fs::read_to_string(path).is_ok_and(|s| s.trim() == pid.to_string())
}

fn open_log(path: &Path) -> Result<std::fs::File> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > MAX_LOG) {
        let _ = std::fs::rename(path, path.with_extension("log.1"));
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

/// The last lines of a daemon log, for error messages.
pub fn log_tail(path: &Path) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let start = len.saturating_sub(16 << 10);
        use std::io::Seek;
        if f.seek(std::io::SeekFrom::Start(start)).is_ok() {
            let _ = f.read_to_end(&mut buf);
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    if tail.is_empty() {
        "(empty)".to_string()
    } else {
        tail.join("\n")
    }
}

/// Wait before retry `attempt` (1, 2, 4 ... seconds, at most 30).
pub fn backoff(attempt: u32) -> Duration {
    let secs = 1u64 << attempt.saturating_sub(1).min(5);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        let (state, start) = proc_stat(me).unwrap();
        assert!(matches!(state, 'R' | 'S'), "{state}");
        assert!(process_alive(me, Some(start)));
        assert!(
            !process_alive(me, Some(start + 1)),
            "a different start time is another process"
        );
        assert!(!process_alive(u32::MAX - 1, None));
    }

    #[test]
    fn placement_is_claimed_in_one_step() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let cfg = Config::try_from_args([
            "fluid-csi-node",
            "--nodeid",
            "n1",
            "--state-dir",
            state.to_str().unwrap(),
        ])
        .unwrap();
        let sup = Supervisor::new(cfg).unwrap();
        // Two stages at once, of an exclusive and of another Dataset: the second loses.
        sup.claim_placement("v1", Some("ml/private"), true).unwrap();
        let why = sup
            .claim_placement("v2", Some("ml/shared"), false)
            .unwrap_err();
        assert!(why.contains("ml/private"), "{why}");
        // A pending claim is neither labelled nor served.
        assert!(sup.staged_datasets().is_empty() && sup.exclusive_dataset().is_none());
        // The same Dataset may join; once the first stage fails, the other Dataset may come.
        sup.claim_placement("v3", Some("ml/private"), true).unwrap();
        sup.abandon_placement("v1");
        sup.abandon_placement("v3");
        sup.claim_placement("v2", Some("ml/shared"), false).unwrap();
        let why = sup
            .claim_placement("v1", Some("ml/private"), true)
            .unwrap_err();
        assert!(why.contains("ml/shared"), "{why}");
    }

    #[test]
    fn backs_off_up_to_a_limit() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(100), MAX_BACKOFF);
    }

    #[test]
    fn tails_logs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        assert_eq!(log_tail(&p), "(empty)");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, text).unwrap();
        let t = log_tail(&p);
        assert!(t.starts_with("line 80") && t.ends_with("line 99"), "{t}");
    }

    #[test]
    fn source_paths() {
        assert_eq!(source_path(Path::new("/s"), None), PathBuf::from("/s"));
        assert_eq!(source_path(Path::new("/s"), Some("")), PathBuf::from("/s"));
        assert_eq!(
            source_path(Path::new("/s"), Some("a/b")),
            PathBuf::from("/s/a/b")
        );
    }
}
