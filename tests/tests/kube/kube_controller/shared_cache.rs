//! The distributed cache seen from the controller: two nodes serve one Dataset, a DataLoad
//! warms each block once (on its owner), reads on both nodes then never reach the source,
//! cacheStates counts the cluster's cache once, and the CacheRuntime lists its members.

use super::*;

use crd::RuntimePhase;
use rand::RngCore;

/// Issue 17 through the controller: DataLoad, cacheStates and the CacheRuntime's member view
/// over the node plugins of two Nodes.
#[tokio::test]
async fn a_dataload_warms_each_block_once_across_the_nodes() -> Result<()> {
    let mut rt = runtime_with_quota("data", "64Mi")?;
    rt.spec.fuse.node_selector.clear();
    // Small blocks, so that each node owns a share of the big file.
    rt.spec.block_size = Some("64KiB".into());
    let c = Cluster::with_runtime("fluid-shared", rt).await?;
    let (kube, ns, controller) = (&c.kube, c.ns.name.as_str(), &c.controller);
    let mut big = vec![0u8; (1 << 20) + 3];
    rand::rng().fill_bytes(&mut big);
    c._server
        .client()
        .put_object()
        .bucket(&c._bucket.name)
        .key("big/data.bin")
        .body(big.clone().into())
        .send()
        .await?;
    let total = FILES.iter().map(|(_, n)| *n as u64).sum::<u64>() + big.len() as u64;

    let (node2, dir2, plugin2) = start_node(kube, "fluid-shared").await?;
    let port2 = plugin2.cache_port()?;
    let datasets: Api<Dataset> = Api::namespaced(kube.client.clone(), ns);
    wait_for_object(&datasets, "data", "Bound", |d| {
        phase(d) == Some(DatasetPhase::Bound)
    })
    .await
    .with_context(|| controller.log())?;
    let pv = pv_name(ns, "data");
    let nodes = [
        (&c.plugin, c.dir.path("staging/data"), c.port),
        (&plugin2, dir2.path("staging/data"), port2),
    ];
    for (plugin, staging, _) in &nodes {
        stage_pv(kube, plugin, &pv, staging).await?;
    }
    let mut names = vec![c.node.name.clone(), node2.name.clone()];
    names.sort();
    let key = format!("{ns}/data");
    for (plugin, _, port) in &nodes {
        wait_for("the daemon lists both nodes", || async {
            let mut members = cache_stats(*port, &key)
                .await
                .map_err(|e| e.to_string())?
                .members;
            members.sort();
            if members == names {
                Ok(())
            } else {
                Err(format!("members {members:?}\n{}", plugin.log()))
            }
        })
        .await?;
    }

    // The load warms each block on its owner: the source serves every byte once, in all.
    let loads: Api<DataLoad> = Api::namespaced(kube.client.clone(), ns);
    let _load = kube
        .create_namespaced(ns, &dataload("once", "data", json!({}))?)
        .await?;
    let done = wait_for_object(&loads, "once", "Complete", |d| {
        load_phase(d) == Some(DataLoadPhase::Complete)
    })
    .await
    .with_context(|| controller.log())?;
    let status = done.status.clone().unwrap_or_default();
    let mut loaded_on = status.nodes.clone();
    loaded_on.sort();
    assert_eq!(loaded_on, names, "{status:?}");
    // One copy: each file counted once, the bytes of the two shares adding up to the Dataset.
    assert_eq!(
        (status.files_loaded, status.bytes_loaded),
        (FILES.len() as u64 + 1, total),
        "{status:?}"
    );
    let mut warmed = Vec::new();
    for (_, _, port) in &nodes {
        warmed.push(cache_stats(*port, &key).await?);
    }
    for (name, s) in names.iter().zip(&warmed) {
        println!(
            "after the load, {name}: source {} bytes, owns {} bytes",
            s.source_bytes_read, s.owned_bytes
        );
    }
    let from_source: u64 = warmed.iter().map(|s| s.source_bytes_read).sum();
    assert_eq!(
        from_source, total,
        "each byte from the source once: {warmed:?}"
    );

    // Every file on both nodes, past the page cache: right bytes, none from the source.
    for (_, staging, _) in &nodes {
        let root = staging.join("data");
        let big_path = root.join("big/data.bin");
        let read = tokio::task::spawn_blocking(move || {
            read_all_uncached(&root)?;
            Ok::<_, anyhow::Error>(fluid_tests::read_uncached(&big_path)?)
        })
        .await??;
        assert!(read == big, "big/data.bin differs");
    }
    let mut read = Vec::new();
    for (_, _, port) in &nodes {
        read.push(cache_stats(*port, &key).await?);
    }
    let after: u64 = read.iter().map(|s| s.source_bytes_read).sum();
    let peer_hits: u64 = read.iter().map(|s| s.peer_hits).sum();
    println!(
        "reads on both nodes: {peer_hits} blocks from the other node, source +{} bytes",
        after - from_source
    );
    assert_eq!(after, from_source, "reads went to the source: {read:?}");
    assert!(peer_hits > 0, "{read:?}");

    // The cluster's cache, once: the owners' bytes, not the peer copies.
    let cached = human_size(total);
    wait_for_object(&datasets, "data", "cacheStates of both nodes", |d| {
        let states = d.status.as_ref().and_then(|s| s.cache_states.as_ref());
        states.and_then(|s| s.cached.as_deref()) == Some(cached.as_str())
    })
    .await
    .with_context(|| controller.log())?;

    // The CacheRuntime's member view: both nodes, their endpoints, ready.
    let runtimes: Api<CacheRuntime> = Api::namespaced(kube.client.clone(), ns);
    let rt = wait_for_object(&runtimes, "data", "two ready members", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.fuse_number_ready == 2 && s.members.iter().all(|m| m.ready))
    })
    .await
    .with_context(|| controller.log())?;
    let status = rt.status.context("status")?;
    assert_eq!(status.fuse_phase, Some(RuntimePhase::Ready), "{status:?}");
    let listed: Vec<_> = status.members.iter().map(|m| m.node.clone()).collect();
    assert_eq!(listed, names, "{status:?}");
    assert!(
        status.members.iter().all(|m| m.cached.is_some()),
        "{status:?}"
    );
    let endpoints: std::collections::BTreeSet<_> =
        status.members.iter().map(|m| m.endpoint.clone()).collect();
    let expected: std::collections::BTreeSet<_> = [c.port, port2]
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    assert_eq!(endpoints, expected, "{status:?}");

    for (plugin, staging, _) in &nodes {
        plugin
            .unstage(&pv, staging)
            .await
            .map_err(|s| anyhow::anyhow!("{s:?}"))?;
    }
    drop(plugin2);
    drop(dir2);
    drop(node2);
    Ok(())
}
