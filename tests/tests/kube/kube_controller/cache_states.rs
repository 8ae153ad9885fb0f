//! Cache states of a Dataset follow reads through a node.

use super::*;

#[tokio::test]
async fn cache_states_follow_reads_through_a_node() -> Result<()> {
    let c = Cluster::start("fluid-cache", "64Mi").await?;
    let (kube, ns, node, dir, plugin, controller) = (
        &c.kube,
        c.ns.name.as_str(),
        &c.node,
        &c.dir,
        &c.plugin,
        &c.controller,
    );
    let datasets: Api<Dataset> = Api::namespaced(kube.client.clone(), ns);
    wait_for_object(&datasets, "data", "Bound and scanned", |d| {
        phase(d) == Some(DatasetPhase::Bound)
            && d.status.as_ref().is_some_and(|s| s.ufs_total.is_some())
    })
    .await
    .with_context(|| controller.log())?;

    let pv_name = pv_name(ns, "data");
    let staging = dir.path("staging/data");
    stage_pv(kube, plugin, &pv_name, &staging).await?;
    let label = dataset_label_key(ns, "data");
    wait_for_object(&kube.nodes(), &node.name, "the dataset label", |n| {
        n.labels().get(&label).map(String::as_str) == Some("true")
    })
    .await?;

    // A cold read (misses), then a read from the cache (hits): half of the lookups hit.
    // The mount is named "data", so it sits at /data of the volume (Fluid's default path).
    let staging_dir = staging.join("data");
    let total = tokio::task::spawn_blocking(move || {
        read_all_uncached(&staging_dir)?;
        read_all_uncached(&staging_dir)
    })
    .await??;
    let ds = wait_for_object(&datasets, "data", "cacheStates with the reads", |d| {
        let states = d.status.as_ref().and_then(|s| s.cache_states.clone());
        states.is_some_and(|c| c.cached.as_deref() == Some(human_size(total).as_str()))
    })
    .await
    .with_context(|| controller.log())?;
    let states = ds
        .status
        .and_then(|s| s.cache_states)
        .context("cacheStates")?;
    assert_eq!(
        states.cached_percentage.as_deref(),
        Some("100.0%"),
        "{states:?}"
    );
    assert_eq!(
        states.cache_capacity,
        Some(human_size(64 << 20)),
        "{states:?}"
    );
    let ratio = states.cache_hit_ratio.clone().context("a hit ratio")?;
    assert!(ratio.ends_with('%'), "{states:?}");

    // cleanPolicy OnRuntimeDeleted, the runtime's default: NodeUnstage unmounts the staging
    // path but keeps the daemon and its cache, and the node keeps the Dataset's label.
    let dataset = format!("{ns}/data");
    let pids = dir.daemon_pids();
    assert_eq!(pids.len(), 1, "one daemon: {pids:?}");
    plugin
        .unstage(&pv_name, &staging)
        .await
        .map_err(|s| anyhow::anyhow!("{s:?}"))?;
    assert!(
        !dir.mounts().contains(&staging),
        "the staging path is unmounted: {:?}",
        dir.mounts()
    );
    let kept = cache_stats(c.port, &dataset).await?;
    assert!(
        kept.tiers.first().is_some_and(|t| t.used_bytes >= total),
        "the kept daemon still holds the cache: {kept:?}"
    );
    let n = Api::<k8s_openapi::api::core::v1::Node>::all(kube.client.clone())
        .get(&node.name)
        .await?;
    assert_eq!(n.labels().get(&label).map(String::as_str), Some("true"));

    // A pod comes back: staged again on the same daemon, whose cache serves a cold read
    // without one request to the source.
    stage_pv(kube, plugin, &pv_name, &staging).await?;
    assert_eq!(dir.daemon_pids(), pids, "the kept daemon serves again");
    let staging_dir = staging.join("data");
    tokio::task::spawn_blocking(move || read_all_uncached(&staging_dir)).await??;
    let again = cache_stats(c.port, &dataset).await?;
    assert_eq!(
        again.source_requests, kept.source_requests,
        "a cold read after re-staging is served from the kept cache: {kept:?} -> {again:?}"
    );
    assert!(again.bytes_served >= kept.bytes_served + total, "{again:?}");
    plugin
        .unstage(&pv_name, &staging)
        .await
        .map_err(|s| anyhow::anyhow!("{s:?}"))?;

    // The CacheRuntime goes: the controller releases the node, which stops the daemon.
    Api::<CacheRuntime>::namespaced(kube.client.clone(), ns)
        .delete("data", &DeleteParams::default())
        .await?;
    wait_for_object(&kube.nodes(), &node.name, "no dataset label", |n| {
        !n.labels().contains_key(&label)
    })
    .await
    .with_context(|| format!("{}\n{}", controller.log(), plugin.log()))?;
    let pid = pids[0];
    wait_for("the kept daemon to exit", || async move {
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            Err(format!("pid {pid} runs"))
        } else {
            Ok(())
        }
    })
    .await?;
    assert!(
        dir.daemon_pids().is_empty() && dir.mounts().is_empty(),
        "{:?}",
        dir.mounts()
    );
    Ok(())
}
