//! Placement: which Datasets may share this node, and how much of it. An Exclusive Dataset has
//! its nodes to itself, either way round; the tiers of all volumes share the node's memory and
//! disk budgets. The check and the claim are one step.

use super::*;
use fluid_volume::tier::Tiers;

impl Supervisor {
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
        tiers: &Tiers,
    ) -> Result<()> {
        let mut staged = lock(&self.staged);
        if let Some(why) = placement_conflict(&staged, volume_id, dataset, exclusive) {
            return Err(Error::FailedPrecondition(why));
        }
        let others: Vec<(u64, u64)> = staged
            .iter()
            .filter(|(id, _)| id.as_str() != volume_id)
            .map(|(_, s)| s.tier_bytes)
            .collect();
        crate::policy::check_budget(tiers, &others, &self.cfg)?;
        staged.entry(volume_id.to_string()).or_insert(Staged {
            dataset: dataset.map(str::to_string),
            control_socket: PathBuf::new(),
            exclusive,
            pending: true,
            tier_bytes: crate::policy::tier_bytes(tiers),
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
}

/// Why a volume of `dataset` may not join the volumes in `staged` (see
/// [`Supervisor::claim_placement`]).
pub(super) fn placement_conflict(
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let t = Tiers::default();
        sup.claim_placement("v1", Some("ml/private"), true, &t)
            .unwrap();
        let why = sup
            .claim_placement("v2", Some("ml/shared"), false, &t)
            .unwrap_err()
            .to_string();
        assert!(why.contains("ml/private"), "{why}");
        // A pending claim is neither labelled nor served.
        assert!(sup.staged_datasets().is_empty() && sup.exclusive_dataset().is_none());
        // The same Dataset may join; once the first stage fails, the other Dataset may come.
        sup.claim_placement("v3", Some("ml/private"), true, &t)
            .unwrap();
        sup.abandon_placement("v1");
        sup.abandon_placement("v3");
        sup.claim_placement("v2", Some("ml/shared"), false, &t)
            .unwrap();
        let why = sup
            .claim_placement("v1", Some("ml/private"), true, &t)
            .unwrap_err()
            .to_string();
        assert!(why.contains("ml/shared"), "{why}");
    }
}
