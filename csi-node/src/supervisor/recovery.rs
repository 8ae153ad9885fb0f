//! Recovery: targets re-bound after a daemon restart, so readers recover without a pod
//! restart; volumes and daemons adopted from the state dir when this plugin starts.

use super::*;

/// How long an adopted daemon's upgrade to this plugin's binary may take.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(60);

impl Supervisor {
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

    /// An adopted daemon that serves with another binary than this plugin's (a plugin of
    /// a newer image) is handed to this plugin's binary: its keeper replaces the serving
    /// process, and readers only stall. A daemon that cannot be upgraded (no keeper
    /// socket: started by an older plugin) keeps its binary.
    async fn upgrade_adopted(&self, rec: &mut VolumeRecord) {
        let Some(digest) = self.fuse_digest.clone() else {
            return;
        };
        if rec.fuse_digest.as_deref() == Some(digest.as_str()) {
            return;
        }
        let id = rec.volume_id.clone();
        let socket = rec.keeper_socket();
        let binary = self.fuse_binary.clone();
        let done = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&binary)
                .map_err(|e| format!("opening {}: {e}", binary.display()))?;
            fluid_volume::upgrade::request(&socket, Some(&file), UPGRADE_TIMEOUT)
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match done {
            Ok(u) => {
                tracing::info!(volume = %id, generation = u.generation, "upgraded fluid-fuse to this plugin's binary; readers waited {:.0} ms at most", u.stall_ms);
                rec.fuse_digest = Some(digest);
                if let Err(e) = self.state.save(rec) {
                    tracing::error!(volume = %id, "{e}");
                }
            }
            Err(e) => {
                tracing::warn!(volume = %id, "fluid-fuse serves with another binary than this plugin's and could not be upgraded: {e}");
            }
        }
    }

    pub(super) async fn recover_volume(
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
            self.upgrade_adopted(&mut vol.record).await;
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
                vol.record.log_file.clone(),
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
}

/// The folder bound at a target: the staging path or a sub path of it.
pub fn source_path(staging: &Path, sub_path: Option<&str>) -> PathBuf {
    match sub_path {
        Some(s) if !s.is_empty() => staging.join(s),
        _ => staging.to_path_buf(),
    }
}

pub(super) enum Rebind {
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

/// Binds `src` onto `target` again, on top of whatever (dead) mount is there. Not unmounting
/// first is what lets the new mount reach running containers: a container's volume is a slave
/// copy of the target mount itself (HostToContainer propagation, which the webhook sets), so a
/// mount made on top of that mount propagates into the container, while one made after
/// unmounting it only reaches the host's copy of the kubelet's folder. The dead mounts below
/// are unmounted with the target at NodeUnpublish.
pub(super) fn rebind_one(src: &Path, target: &Path, read_only: bool) -> Result<Rebind> {
    match mounts::probe(target) {
        PathState::Directory | PathState::Dead => {}
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

#[cfg(test)]
mod tests {
    use super::*;

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
