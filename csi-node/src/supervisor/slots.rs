//! Slots and path reservations: one lock per volume, and which volume owns each staging and
//! target path.

use super::*;

impl Supervisor {
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

    pub(super) fn next_generation(&self) -> u64 {
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
}
