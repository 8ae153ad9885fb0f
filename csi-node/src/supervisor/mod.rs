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
//!
//! By job: `daemon` (the fluid-fuse process), `placement` (which Datasets share the node),
//! `slots` (per-volume locks and path reservations), `staging` (binds, parking, release,
//! teardown), `recovery` (re-binding targets, adoption at start) and `stage` (NodeStage as one
//! call with its rollback).

mod cgroup;
mod daemon;
mod placement;
mod recovery;
mod slots;
mod stage;
mod staging;

pub use cgroup::DaemonCgroup;
pub use daemon::backoff;
use daemon::{Daemon, read_boot_id};
pub use recovery::{source_path, target_is_live};
pub use stage::StageRequest;
use staging::prepare_staging;

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
    /// What its tiers may hold, (memory, disk) bytes, counted against the node's budgets.
    pub tier_bytes: (u64, u64),
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
    /// SHA-256 of `fuse_binary` (none when it cannot be read; daemons are then never
    /// upgraded on adoption).
    fuse_digest: Option<String>,
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
    /// Where daemons are moved to outlive the plugin's pod (`--daemon-cgroup`), when possible.
    daemon_cgroup: Option<DaemonCgroup>,
}

/// The hex SHA-256 of a file's bytes.
fn file_digest(path: &Path) -> Option<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).ok()?;
    Some(format!("{:x}", h.finalize()))
}

/// A lock that a panicking holder poisoned is still usable: the maps stay consistent.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Supervisor {
    pub fn new(cfg: Config) -> Result<Arc<Supervisor>> {
        let state = StateDir::open(&cfg.state_dir)?;
        let fuse_binary = cfg.fuse_binary();
        let fuse_digest = file_digest(&fuse_binary);
        let cache_dirs = CacheDirs::open(state.root());
        let daemon_cgroup = cfg.daemon_cgroup.as_deref().and_then(|name| {
            match DaemonCgroup::prepare(name, &cfg.host_cgroup_root) {
                Ok(cg) => {
                    tracing::info!("fluid-fuse daemons run in cgroup {name}, outside this plugin's pod");
                    if let Some(max) = cgroup::memory_max(cfg.mem_budget) {
                        match cg.limit_memory(max) {
                            Ok(()) => tracing::info!("cgroup {name}: memory limited to {max} bytes (--mem-budget and 1 GiB for the daemons themselves)"),
                            Err(e) => tracing::warn!("cgroup {name}: the memory of the daemons is not limited: {e}"),
                        }
                    }
                    Some(cg)
                }
                Err(e) => {
                    tracing::warn!("--daemon-cgroup {name}: {e}; fluid-fuse daemons stay in this plugin's cgroup and end with its pod");
                    None
                }
            }
        });
        Ok(Arc::new(Supervisor {
            cache_dirs,
            daemon_cgroup,
            cfg,
            fuse_binary,
            fuse_digest,
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
            tier_bytes: crate::policy::tier_bytes(&rec.tiers),
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

    /// Whether volumes of a Dataset share one cache across the nodes: in Kubernetes, with a
    /// cache endpoint other nodes reach and the token they share.
    pub fn shares_caches(&self) -> bool {
        self.cfg.kubernetes && self.cfg.cache_endpoint.is_some() && self.cfg.cache_token.is_some()
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn state(&self) -> &StateDir {
        &self.state
    }

    pub fn fuse_binary(&self) -> &Path {
        &self.fuse_binary
    }
}
