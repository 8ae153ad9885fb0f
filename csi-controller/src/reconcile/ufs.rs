//! Background walks of a Dataset's sources for `ufsTotal` and `fileNum`: one per set of mounts
//! (credentials included, so a fixed Secret is walked again), so a huge tree never holds up
//! reconciliation; the reconciler reads the progress into a condition each time it runs. A
//! failed walk is tried again after [`RETRY_AFTER`].

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fluid_source::walk;
use fluid_volume::dataset::{self, MountSpec};

/// Where one walk stands.
#[derive(Clone, Debug, PartialEq)]
pub enum Progress {
    Running { files: u64, bytes: u64 },
    Done { files: u64, bytes: u64 },
    Failed(String),
}

/// How long a failed walk is left before the next reconcile tries again.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);

struct Scan {
    /// Of the mounts walked (in memory only: it covers credentials).
    fingerprint: u64,
    totals: Arc<walk::Totals>,
    outcome: Arc<Mutex<Option<Result<(), String>>>>,
    task: tokio::task::AbortHandle,
    started: Instant,
}

/// The walks, by Dataset uid.
#[derive(Default)]
pub struct Scans {
    scans: Mutex<HashMap<String, Scan>>,
    /// Whether a keyless S3 mount may be walked with the controller's own cloud identity.
    allow_ambient: bool,
    /// The HDFS users a Dataset may act as (`--hdfs-users`).
    hdfs_users: Arc<Vec<String>>,
}

impl Scans {
    /// `allow_ambient`: `--allow-ambient-credentials`; `hdfs_users`: `--hdfs-users`.
    pub fn new(allow_ambient: bool, hdfs_users: Vec<String>) -> Scans {
        Scans {
            scans: Mutex::default(),
            allow_ambient,
            hdfs_users: Arc::new(hdfs_users),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Scan>> {
        self.scans.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The progress of the walk of these mounts, starting it (and abandoning an older one)
    /// when there is none or it failed a while ago. `mounts` carry their credentials.
    pub fn ensure(&self, uid: &str, mounts: Vec<MountSpec>) -> Progress {
        let mut hasher = DefaultHasher::new();
        serde_json::to_string(&mounts)
            .unwrap_or_default()
            .hash(&mut hasher);
        let fingerprint = hasher.finish();
        let mut scans = self.lock();
        if let Some(scan) = scans.get(uid)
            && scan.fingerprint == fingerprint
        {
            let p = progress(scan);
            if !matches!(p, Progress::Failed(_)) || scan.started.elapsed() < RETRY_AFTER {
                return p;
            }
        }
        if let Some(old) = scans.remove(uid) {
            old.task.abort();
        }
        let totals = Arc::new(walk::Totals::default());
        let outcome = Arc::new(Mutex::new(None));
        let walk = walk_all(
            mounts,
            self.allow_ambient,
            self.hdfs_users.clone(),
            totals.clone(),
            outcome.clone(),
        );
        let task = tokio::spawn(walk).abort_handle();
        let scan = Scan {
            fingerprint,
            totals,
            outcome,
            task,
            started: Instant::now(),
        };
        let p = progress(&scan);
        scans.insert(uid.to_string(), scan);
        p
    }

    /// Total bytes of the finished walk of this Dataset, if any.
    pub fn bytes(&self, uid: &str) -> Option<u64> {
        match self.lock().get(uid).map(progress) {
            Some(Progress::Done { bytes, .. }) => Some(bytes),
            _ => None,
        }
    }

    /// Stops and forgets the walk of a deleted Dataset.
    pub fn stop(&self, uid: &str) {
        if let Some(scan) = self.lock().remove(uid) {
            scan.task.abort();
        }
    }

    /// Seconds the walk has run, for the progress message.
    pub fn elapsed(&self, uid: &str) -> Option<u64> {
        self.lock().get(uid).map(|s| s.started.elapsed().as_secs())
    }
}

fn progress(scan: &Scan) -> Progress {
    let (files, bytes) = scan.totals.get();
    match &*scan.outcome.lock().unwrap_or_else(|e| e.into_inner()) {
        None => Progress::Running { files, bytes },
        Some(Ok(())) => Progress::Done { files, bytes },
        Some(Err(m)) => Progress::Failed(m.clone()),
    }
}

async fn walk_all(
    mounts: Vec<MountSpec>,
    allow_ambient: bool,
    hdfs_users: Arc<Vec<String>>,
    totals: Arc<walk::Totals>,
    outcome: Arc<Mutex<Option<Result<(), String>>>>,
) {
    let result = async {
        for m in dataset::resolve(mounts, "spec.mounts")? {
            // The controller's identity (IRSA, instance role) is not lent to tenants' walks,
            // nor is any HDFS user the administrator did not list.
            if let Some(why) = m.mount_point.refused_identity(allow_ambient, &hdfs_users) {
                return Err(fluid_source::Error::Denied {
                    source_name: m.mount_point.url.clone(),
                    message: why,
                });
            }
            let src = fluid_source::open(&m.mount_point).await?;
            walk::count(src.as_ref(), &totals).await?;
        }
        Ok::<(), fluid_source::Error>(())
    }
    .await;
    // Source errors name the mount point URL, which never carries credentials.
    *outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(result.map_err(|e| e.to_string()));
}
