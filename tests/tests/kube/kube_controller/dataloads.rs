//! DataLoads warm the nodes that serve a Dataset, up to the cache quota.

use super::*;

#[tokio::test]
async fn dataloads_warm_the_nodes_that_serve_a_dataset() -> Result<()> {
    let c = Cluster::start("fluid-load", "64Mi").await?;
    let (kube, ns, node, dir, port, plugin, controller) = (
        &c.kube,
        c.ns.name.as_str(),
        &c.node,
        &c.dir,
        c.port,
        &c.plugin,
        &c.controller,
    );
    let other_ns = kube.create_namespace("fluid-load-other").await?;
    let datasets: Api<Dataset> = Api::namespaced(kube.client.clone(), ns);
    let loads: Api<DataLoad> = Api::namespaced(kube.client.clone(), ns);

    // Before any node serves the Dataset, a load waits and says why.
    let _once = kube
        .create_namespaced(
            ns,
            &dataload(
                "once",
                "data",
                json!({"target": [{"path": "/", "replicas": 1}]}),
            )?,
        )
        .await?;
    let pending = wait_for_object(&loads, "once", "Pending: no node yet", |d| {
        d.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.reason.as_deref() == Some("NoNodes"))
        })
    })
    .await
    .with_context(|| controller.log())?;
    assert_eq!(load_phase(&pending), Some(DataLoadPhase::Pending));

    wait_for_object(&datasets, "data", "Bound", |d| {
        phase(d) == Some(DatasetPhase::Bound)
    })
    .await?;
    let pv_name = pv_name(ns, "data");
    let staging = dir.path("staging/data");
    stage_pv(kube, plugin, &pv_name, &staging).await?;

    // Once: every byte of the Dataset lands in the node's cache.
    let key = format!("{ns}/data");
    let before = cache_stats(port, &key).await?;
    let done = wait_for_object(&loads, "once", "Complete", |d| {
        load_phase(d) == Some(DataLoadPhase::Complete)
    })
    .await
    .with_context(|| controller.log())?;
    let status = done.status.clone().unwrap_or_default();
    let total: u64 = FILES.iter().map(|(_, n)| *n as u64).sum();
    assert_eq!(
        (status.files_loaded, status.bytes_loaded),
        (3, total),
        "{status:?}"
    );
    assert_eq!(status.nodes, vec![node.name.clone()]);
    assert!(status.duration.is_some() && status.last_successful_time.is_some());
    let warmed = cache_stats(port, &key).await?;
    assert!(warmed.tiers[0].used_bytes >= total, "{warmed:?}");
    assert!(
        warmed.source_requests > before.source_requests,
        "{warmed:?}"
    );

    // A cold read through the mount is served from the cache alone.
    let staging_dir = staging.join("data");
    tokio::task::spawn_blocking(move || read_all_uncached(&staging_dir)).await??;
    let after_read = cache_stats(port, &key).await?;
    assert_eq!(
        after_read.source_requests, warmed.source_requests,
        "reads after the load went to the source: {after_read:?}"
    );
    assert!(after_read.hits > warmed.hits, "{after_read:?}");

    // Evict from the controller's side frees those bytes on every serving node.
    let out = std::process::Command::new(fluid_tests::daemon::binary("fluid-csi-controller"))
        .args(["evict", &key])
        .env("KUBECONFIG", kubeconfig_path()?)
        .env(TOKEN_ENV, CACHE_TOKEN)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&node.name) && text.contains("freed"),
        "{text}"
    );
    assert_eq!(
        cache_stats(port, &key).await?.tiers[0].used_bytes,
        0,
        "{text}"
    );

    // Cron: runs again and again (a six-field schedule: every 2 seconds).
    let _cron = kube
        .create_namespaced(
            ns,
            &dataload(
                "cron",
                "data",
                json!({"policy": "Cron", "schedule": "*/2 * * * * *"}),
            )?,
        )
        .await?;
    let runs = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    wait_for("two runs of the cron DataLoad", || {
        let (loads, runs) = (loads.clone(), runs.clone());
        async move {
            let dl = loads.get("cron").await.map_err(|e| e.to_string())?;
            let mut runs = runs.lock().map_err(|e| e.to_string())?;
            if let Some(t) = dl.status.and_then(|s| s.last_successful_time) {
                runs.insert(t.0.as_second());
            }
            if runs.len() >= 2 {
                Ok(())
            } else {
                Err(format!("{} run(s)", runs.len()))
            }
        }
    })
    .await
    .with_context(|| controller.log())?;

    // A DataLoad of another namespace's Dataset is refused.
    let _cross = kube
        .create_namespaced(
            &other_ns.name,
            &dataload(
                "steal",
                "data",
                json!({"dataset": {"name": "data", "namespace": ns}}),
            )?,
        )
        .await?;
    let other_loads: Api<DataLoad> = Api::namespaced(kube.client.clone(), &other_ns.name);
    let refused = wait_for_object(&other_loads, "steal", "Failed", |d| {
        load_phase(d) == Some(DataLoadPhase::Failed)
    })
    .await?;
    let reason = refused.status.unwrap_or_default().conditions[0]
        .reason
        .clone();
    assert_eq!(reason.as_deref(), Some("CrossNamespace"));

    // A finished load with a time to live goes away.
    let _ttl = kube
        .create_namespaced(
            ns,
            &dataload("short-lived", "data", json!({"ttlSecondsAfterFinished": 1}))?,
        )
        .await?;
    wait_for(
        "the short-lived DataLoad deleted after it finished",
        || async {
            match loads.get_opt("short-lived").await {
                Ok(None) => Ok(()),
                Ok(Some(d)) => Err(format!("still there: {:?}", d.status.map(|s| s.phase))),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await
    .with_context(|| controller.log())?;
    Ok(())
}

#[tokio::test]
async fn a_dataload_stops_at_the_cache_quota() -> Result<()> {
    // 3 KiB of memory tier for 6000 bytes: the load stops once the tier is (nearly) full.
    let c = Cluster::start("fluid-quota", "3Ki").await?;
    let (kube, ns, dir, port, plugin, controller) = (
        &c.kube,
        c.ns.name.as_str(),
        &c.dir,
        c.port,
        &c.plugin,
        &c.controller,
    );
    let datasets: Api<Dataset> = Api::namespaced(kube.client.clone(), ns);
    wait_for_object(&datasets, "data", "Bound", |d| {
        phase(d) == Some(DatasetPhase::Bound)
    })
    .await
    .with_context(|| controller.log())?;
    let pv_name = pv_name(ns, "data");
    stage_pv(kube, plugin, &pv_name, &dir.path("staging/data")).await?;
    let loads: Api<DataLoad> = Api::namespaced(kube.client.clone(), ns);
    let _load = kube
        .create_namespaced(ns, &dataload("fill", "data", json!({}))?)
        .await?;
    let done = wait_for_object(&loads, "fill", "Complete", |d| {
        load_phase(d) == Some(DataLoadPhase::Complete)
    })
    .await
    .with_context(|| controller.log())?;
    let status = done.status.unwrap_or_default();
    let cond = status.conditions.first().context("a condition")?;
    assert_eq!(
        cond.reason.as_deref(),
        Some("CacheQuotaReached"),
        "{status:?}"
    );
    assert!(
        cond.message
            .as_deref()
            .unwrap_or_default()
            .contains("cache quota"),
        "{cond:?}"
    );
    let total: u64 = FILES.iter().map(|(_, n)| *n as u64).sum();
    assert!(
        status.files_loaded < 3 && status.bytes_loaded < total,
        "stopped before the end: {status:?}"
    );
    let stats = cache_stats(port, &format!("{ns}/data")).await?;
    let tier = &stats.tiers[0];
    assert!(
        tier.used_bytes <= tier.capacity_bytes && tier.evictions == 0,
        "the load did not evict what it loaded: {stats:?}"
    );
    Ok(())
}
