//! NodeStageVolume as one call: a volume staged again is attached to its daemon (restarted if it
//! died); a new one claims its place on the node and its staging path, gets a record, cache
//! folders and a dataset file, and a daemon. A new stage that fails half way undoes what it did
//! ([`Rollback`]), so a retry starts clean and nothing is left claimed.

use fluid_volume::context::{CleanPolicy, VolumeContext, write_dataset_file};

use super::*;

/// What NodeStageVolume asks for, its context already checked.
pub struct StageRequest<'a> {
    pub volume_id: &'a str,
    pub staging: &'a Path,
    pub context: &'a VolumeContext,
    /// Credentials for the dataset file; never logged or returned.
    pub secrets: &'a HashMap<String, String>,
}

/// The steps of a new stage taken so far, undone in reverse order when dropped armed.
struct Rollback<'a> {
    sup: &'a Supervisor,
    volume_id: &'a str,
    staging: &'a Path,
    record_made: bool,
    armed: bool,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if self.record_made
            && let Err(e) = self.sup.state().remove(self.volume_id)
        {
            tracing::error!(volume = %self.volume_id, "{e}");
        }
        self.sup.release_staging(self.volume_id, self.staging);
        self.sup.abandon_placement(self.volume_id);
    }
}

impl Supervisor {
    /// Stages a volume (idempotent: staging it again at the same path is fine, at another
    /// path is ALREADY_EXISTS).
    pub async fn stage(self: &Arc<Self>, req: StageRequest<'_>) -> Result<()> {
        let StageRequest {
            volume_id: id,
            staging,
            context: ctx,
            secrets,
        } = req;
        let slot = self.slot(id);
        let mut guard = slot.lock().await;
        let keep = ctx.clean_policy == CleanPolicy::OnRuntimeDeleted;
        if let Some(vol) = guard.as_mut() {
            return self
                .stage_again(&slot, vol, staging, ctx, secrets, keep)
                .await;
        }

        // Disk tiers get a folder of their own per volume, so two volumes never share files.
        let tiers = ctx
            .tiers
            .as_ref()
            .unwrap_or(&self.cfg.tiers)
            .in_subdirectories(&dir_name(id));
        self.claim_placement(id, ctx.dataset.as_deref(), ctx.exclusive, &tiers)?;
        let mut rollback = Rollback {
            sup: self,
            volume_id: id,
            staging,
            record_made: false,
            armed: true,
        };
        self.reserve_staging(id, staging)?;
        let block_size = ctx.block_size.unwrap_or(self.cfg.block_size);
        let mut record =
            self.state
                .new_record(id, staging, tiers, block_size, ctx.dataset.clone())?;
        rollback.record_made = true;
        record.exclusive = ctx.exclusive;
        if keep {
            record.keep = true;
            record.mount_path = Some(self.state.volume_dir(id).join("mnt"));
        }
        let disk_dirs = record.disk_dirs();
        for dir in &disk_dirs {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating cache dir {}", dir.display()), e))?;
        }
        if let Some(dataset) = &record.dataset {
            self.cache_dirs.record(dataset, &disk_dirs)?;
        }
        write_dataset_file(&record.dataset_file, &ctx.mounts_with_secrets(secrets)?)?;
        let mut vol = Volume {
            record,
            generation: 0,
            running: false,
        };
        self.start_daemon(&slot, &mut vol).await?;
        rollback.armed = false;
        tracing::info!(
            volume = %id,
            dataset = vol.record.dataset.as_deref().unwrap_or("-"),
            pid = vol.record.pid,
            "staged at {}",
            staging.display()
        );
        self.mark_staged(&vol.record);
        *guard = Some(vol);
        Ok(())
    }

    /// A stage of a volume this node has: a parked one is taken back, a running daemon is
    /// attached, a dead one is restarted with the credentials given (they may have been
    /// rotated) and its targets re-bound.
    async fn stage_again(
        self: &Arc<Self>,
        slot: &Slot,
        vol: &mut Volume,
        staging: &Path,
        ctx: &VolumeContext,
        secrets: &HashMap<String, String>,
        keep: bool,
    ) -> Result<()> {
        let id = vol.record.volume_id.clone();
        if vol.record.parked {
            self.unpark(vol, staging, keep)?;
            tracing::info!(volume = %id, pid = vol.record.pid, "staged at {} again with its kept fluid-fuse", staging.display());
        } else if vol.record.staging_path != staging {
            return Err(Error::AlreadyExists(format!(
                "volume {id} is already staged at {}, not {}",
                vol.record.staging_path.display(),
                staging.display()
            )));
        }
        if vol.running && self.daemon_alive(&vol.record) {
            return self.attach_staging(&vol.record).await;
        }
        // A daemon that runs without serving goes first.
        if self.daemon_alive(&vol.record) {
            self.stop_daemon(vol).await?;
        }
        write_dataset_file(&vol.record.dataset_file, &ctx.mounts_with_secrets(secrets)?)?;
        self.start_daemon(slot, vol).await?;
        self.rebind_targets(vol, false).await;
        Ok(())
    }
}
