//! What becomes of a staged volume's mounts: the staging path bound to a kept daemon, parked
//! at NodeUnstage (cleanPolicy OnRuntimeDeleted), released with its Dataset, torn down.

use super::*;

impl Supervisor {
    /// Moves a kept volume's file system from its park folder to its staging path (bind there,
    /// then unmount the park folder), after NodeStage of a parked volume or a recovery that
    /// finds both mounted (records of plugins that kept both). Nothing to do when the park
    /// folder holds no mount.
    pub async fn attach_staging(&self, rec: &VolumeRecord) -> Result<()> {
        let Some(park) = rec.mount_path.clone() else {
            return Ok(());
        };
        let staging = rec.staging_path.clone();
        run_blocking("binding the staging path", move || {
            if !mounts::mount_at(&park)?.is_some_and(|m| m.is_fluid()) {
                return Ok(());
            }
            if !target_is_live(&park, &staging)? {
                prepare_staging(&staging)?;
                mounts::bind(&park, &staging, false)?;
            }
            mounts::unmount_all(&park)
        })
        .await
    }

    /// NodeUnstage of a kept volume (cleanPolicy OnRuntimeDeleted): its targets are unmounted,
    /// its file system moves from the staging path to the park folder, and its daemon keeps
    /// serving its cache (stats, warm-ups) until [`Supervisor::release`]; the node keeps its
    /// Dataset label.
    pub async fn park(&self, vol: &mut Volume) -> Result<()> {
        self.unmount_targets(vol).await?;
        let st = vol.record.staging_path.clone();
        let park = vol.record.mount_path.clone();
        run_blocking("parking the volume's mount", move || {
            if let Some(park) = park
                && mounts::mount_at(&st)?.is_some_and(|m| m.is_fluid())
                && !target_is_live(&st, &park)?
            {
                prepare_staging(&park)?;
                mounts::bind(&st, &park, false)?;
            }
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
    pub(super) async fn unmount_targets(&self, vol: &mut Volume) -> Result<()> {
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

/// The staging folder exists, is a directory, and carries no fluid mount (a dead one would
/// be stacked under the new daemon's mount).
pub(super) fn prepare_staging(staging: &Path) -> Result<()> {
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
