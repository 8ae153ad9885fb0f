//! `status.cacheStates` of every bound Dataset, refreshed periodically from the cache daemons of
//! the nodes labelled as holding it: each node plugin serves `CacheNode.GetStats` per dataset
//! at the address in its Node's `fluid.io/cache-endpoint` annotation.
//!
//! - cached: per node the bytes of the blocks it owns (each counted once however many of its
//!   tiers hold it; with a shared cache, the copies a node keeps of blocks another node owns
//!   are not counted), summed over nodes: the cluster's cache, once;
//! - cacheCapacity: every tier's quota, summed over nodes;
//! - cachedPercentage: cached over the Dataset's `ufsTotal` bytes once the walk knows them;
//! - cacheHitRatio: blocks not read from the source (local and peer hits) over all block
//!   lookups, made since the previous refresh (a daemon whose counters went down restarted,
//!   so its counts are all new).
//!
//! The same pass writes the CacheRuntime's member view: the serving nodes with their endpoints,
//! whether each answered and the bytes it owns, and Fluid's `fuseNumber*` counts and
//! `fusePhase` from them.

use std::collections::HashMap;
use std::sync::Arc;

use fluid_volume::size::human_size;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use super::Context;
use super::nodes;
use crate::crd::{
    CacheMember, CacheRuntime, CacheRuntimeStatus, CacheStates, Dataset, DatasetPhase,
    RuntimeCondition, RuntimePhase,
};
use crate::error::Result;

/// Hit and miss counters last seen, by (dataset, node).
type Seen = HashMap<(String, String), (u64, u64)>;

/// Refreshes forever, every `ctx.stats_interval`.
pub async fn run(ctx: Arc<Context>) {
    let mut seen = Seen::new();
    let mut tick = tokio::time::interval(ctx.stats_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = refresh(&ctx, &mut seen).await {
            tracing::warn!("refreshing cache states failed: {e}");
        }
    }
}

#[derive(Default, Debug, PartialEq)]
struct Sum {
    cached: u64,
    capacity: u64,
    hits: u64,
    misses: u64,
    nodes: usize,
}

async fn refresh(ctx: &Context, seen: &mut Seen) -> Result<()> {
    let datasets = Api::<Dataset>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?;
    let all_nodes = Api::<Node>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?;
    // One list for every Dataset's runtime, not a get per Dataset each refresh.
    let runtimes: HashMap<(String, String), CacheRuntime> =
        Api::<CacheRuntime>::all(ctx.client.clone())
            .list(&ListParams::default())
            .await?
            .into_iter()
            .map(|rt| ((rt.namespace().unwrap_or_default(), rt.name_any()), rt))
            .collect();
    for ds in datasets {
        let bound = ds.status.as_ref().and_then(|s| s.phase) == Some(DatasetPhase::Bound);
        if !bound || ds.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ns = ds.namespace().unwrap_or_default();
        let name = ds.name_any();
        let key = format!("{ns}/{name}");
        let mut sum = Sum::default();
        let mut members = Vec::new();
        for node in nodes::serving(&all_nodes.items, &ns, &name) {
            let stats = nodes::stats(&node, &ctx.cache_auth, &key).await;
            members.push(CacheMember {
                node: node.name.clone(),
                endpoint: node.endpoint.clone(),
                ready: stats.is_ok(),
                cached: stats.as_ref().ok().map(|s| human_size(s.owned_bytes)),
            });
            match stats {
                Ok(s) => {
                    sum.nodes += 1;
                    sum.cached += s.owned_bytes;
                    sum.capacity += s.tiers.iter().map(|t| t.capacity_bytes).sum::<u64>();
                    // A block read from its owner is a miss here and a hit of the cluster.
                    let hits = s.hits + s.peer_hits;
                    let misses = s.misses.saturating_sub(s.peer_hits);
                    let before = seen
                        .insert((key.clone(), node.name.clone()), (hits, misses))
                        .unwrap_or((0, 0));
                    let (h, m) = if hits < before.0 || misses < before.1 {
                        (hits, misses)
                    } else {
                        (hits - before.0, misses - before.1)
                    };
                    sum.hits += h;
                    sum.misses += m;
                }
                Err(e) => tracing::debug!(dataset = %key, "no cache stats: {e}"),
            }
        }
        if let Some(rt) = runtimes.get(&(ns.clone(), name.clone())) {
            write_members(ctx, rt, members).await?;
        }
        let total = ctx.scans.bytes(&ds.uid().unwrap_or_default());
        let states = cache_states(&sum, total);
        if ds.status.as_ref().and_then(|s| s.cache_states.as_ref()) == Some(&states) {
            continue;
        }
        let patch = json!({ "status": { "cacheStates": states } });
        Api::<Dataset>::namespaced(ctx.client.clone(), &ns)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(())
}

/// Writes the member view into the status of `runtime` when it changed (a runtime being
/// deleted is left alone).
async fn write_members(
    ctx: &Context,
    runtime: &CacheRuntime,
    members: Vec<CacheMember>,
) -> Result<()> {
    if runtime.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let current = runtime.status.clone().unwrap_or_default();
    let view = member_view(members, current.conditions.clone());
    if view == current {
        return Ok(());
    }
    // Every field named, so that a phase that went away is removed (null) by the merge.
    let patch = json!({ "status": {
        "fuseNumberDesired": view.fuse_number_desired,
        "fuseNumberScheduled": view.fuse_number_scheduled,
        "fuseNumberReady": view.fuse_number_ready,
        "fuseNumberAvailable": view.fuse_number_available,
        "fusePhase": view.fuse_phase,
        "members": view.members,
    } });
    let api = Api::<CacheRuntime>::namespaced(
        ctx.client.clone(),
        &runtime.namespace().unwrap_or_default(),
    );
    match api
        .patch_status(
            &runtime.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        // Deleted since the list: nothing to show.
        Err(kube::Error::Api(ae)) if ae.code == 404 => Ok(()),
        other => other.map(drop).map_err(Into::into),
    }
}

/// Fluid's FUSE counts and phase from the members: every labelled node is desired and
/// scheduled (a node serves a Dataset once a pod there mounts it); those that answer are ready.
fn member_view(members: Vec<CacheMember>, conditions: Vec<RuntimeCondition>) -> CacheRuntimeStatus {
    let all = i32::try_from(members.len()).unwrap_or(i32::MAX);
    let ready = i32::try_from(members.iter().filter(|m| m.ready).count()).unwrap_or(i32::MAX);
    let fuse_phase = match (ready, all) {
        (_, 0) => None,
        (0, _) => Some(RuntimePhase::NotReady),
        (r, a) if r < a => Some(RuntimePhase::PartialReady),
        _ => Some(RuntimePhase::Ready),
    };
    CacheRuntimeStatus {
        fuse_number_desired: all,
        fuse_number_scheduled: all,
        fuse_number_ready: ready,
        fuse_number_available: ready,
        fuse_phase,
        conditions,
        members,
    }
}

fn cache_states(sum: &Sum, ufs_total: Option<u64>) -> CacheStates {
    let lookups = sum.hits + sum.misses;
    CacheStates {
        cache_capacity: Some(human_size(sum.capacity)),
        cached: Some(human_size(sum.cached)),
        cached_percentage: ufs_total.map(|t| {
            let pct = if t == 0 {
                0.0
            } else {
                (sum.cached as f64 / t as f64 * 100.0).min(100.0)
            };
            format!("{pct:.1}%")
        }),
        cache_hit_ratio: (lookups > 0)
            .then(|| format!("{:.1}%", sum.hits as f64 / lookups as f64 * 100.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_and_ratio() {
        let sum = Sum {
            cached: 512 << 20,
            capacity: 4 << 30,
            hits: 3,
            misses: 1,
            nodes: 1,
        };
        let s = cache_states(&sum, Some(1 << 30));
        assert_eq!(s.cached_percentage.as_deref(), Some("50.0%"));
        assert_eq!(s.cache_hit_ratio.as_deref(), Some("75.0%"));
        assert_eq!(s.cache_capacity, Some(human_size(4 << 30)));
        let idle = cache_states(&Sum::default(), None);
        assert_eq!(idle.cached_percentage, None);
        assert_eq!(idle.cache_hit_ratio, None);
    }

    #[test]
    fn the_member_view_counts_who_answers() {
        let member = |node: &str, ready: bool| CacheMember {
            node: node.into(),
            endpoint: format!("{node}:9000"),
            ready,
            cached: ready.then(|| "1.00MiB".into()),
        };
        let phase = |m: Vec<CacheMember>| {
            let v = member_view(m, vec![]);
            (v.fuse_number_desired, v.fuse_number_ready, v.fuse_phase)
        };
        assert_eq!(phase(vec![]), (0, 0, None));
        assert_eq!(
            phase(vec![member("a", false)]),
            (1, 0, Some(RuntimePhase::NotReady))
        );
        assert_eq!(
            phase(vec![member("a", true), member("b", false)]),
            (2, 1, Some(RuntimePhase::PartialReady))
        );
        assert_eq!(
            phase(vec![member("a", true), member("b", true)]),
            (2, 2, Some(RuntimePhase::Ready))
        );
        let v = member_view(vec![member("a", true)], vec![]);
        assert_eq!(v.members[0].endpoint, "a:9000");
        assert_eq!(v.fuse_number_available, 1);
    }
}
