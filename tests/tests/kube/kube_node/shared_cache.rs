//! The distributed cache through the node plugins: members from the Nodes, block reads between
//! the plugins.

use super::*;

/// Issue 17 in Kubernetes: the node plugins of two nodes serving one Dataset make its cache one.
/// Each learns the other from the Nodes (the Dataset's label and the cache-endpoint
/// annotation), writes the members to its daemon's peers file, and passes the other node's
/// block reads to its daemon: a file read on both nodes comes from the source once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_of_a_dataset_share_its_cache() {
    let World {
        server,
        kube,
        kubeconfig,
        bucket,
        data,
        nodes: _,
        dir,
    } = World::new().await;
    let token = "shared-cache-test-token-0123456789";
    let env = [
        ("KUBECONFIG", kubeconfig.as_path()),
        (TOKEN_ENV, Path::new(token)),
    ];
    let flags = [
        "--kubernetes".to_string(),
        "--cache-endpoint=tcp://127.0.0.1:0".to_string(),
    ];
    let (n1, n2) = (create_node(&kube).await, create_node(&kube).await);
    let dir2 = PluginDir::new().unwrap();
    let p1 = NodePlugin::start(&dir, &n1.name, &flags, &env)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let p2 = NodePlugin::start(&dir2, &n2.name, &flags, &env)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let dataset = format!("{}/shared", unique_name("kk"));
    let mut ctx = s3_volume_context(&server, &bucket.name, &dataset);
    // 13 blocks of the 3 MiB file, so that each node owns some.
    ctx.insert(BLOCK_SIZE.into(), "256KiB".into());
    let sec = s3_secrets(&server);
    let (s1, s2) = (dir.path("staging/a"), dir2.path("staging/b"));
    for (p, id, s) in [(&p1, "vol-a", &s1), (&p2, "vol-b", &s2)] {
        p.stage(id, s, &ctx, &sec)
            .await
            .unwrap_or_else(|e| panic!("{e:?}\n{}", p.log()));
    }
    let c1 = cache_client(p1.cache_port().unwrap(), Some(token)).await;
    let c2 = cache_client(p2.cache_port().unwrap(), Some(token)).await;
    let mut both = vec![n1.name.clone(), n2.name.clone()];
    both.sort();
    for (c, p) in [(&c1, &p1), (&c2, &p2)] {
        k::wait_for("each daemon lists both nodes", || async {
            let s = stats(c, &dataset).await.map_err(|e| e.to_string())?;
            let mut members = s.members.clone();
            members.sort();
            if members == both {
                Ok(())
            } else {
                Err(format!("members {members:?}"))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", p.log()));
    }

    assert!(read_uncached(s1.join("data.bin")).await == data);
    assert!(read_uncached(s2.join("data.bin")).await == data);
    let (a, b) = (
        stats(&c1, &dataset).await.unwrap(),
        stats(&c2, &dataset).await.unwrap(),
    );
    println!(
        "node a: source {} bytes, peer hits {}, served to peer {}; node b: source {} bytes, peer hits {}, served to peer {}",
        a.source_bytes_read,
        a.peer_hits,
        a.peer_served_blocks,
        b.source_bytes_read,
        b.peer_hits,
        b.peer_served_blocks
    );
    assert!(a.peer_hits > 0 && b.peer_hits > 0, "{a:?}\n{b:?}");
    assert_eq!(a.peer_errors + b.peer_errors, 0, "{a:?}\n{b:?}");
    // Every block from the source once, for the two nodes together.
    assert_eq!(
        a.source_bytes_read + b.source_bytes_read,
        data.len() as u64,
        "{a:?}\n{b:?}"
    );
    for (p, id, s) in [(&p1, "vol-a", &s1), (&p2, "vol-b", &s2)] {
        p.unstage(id, s).await.unwrap();
    }
}
