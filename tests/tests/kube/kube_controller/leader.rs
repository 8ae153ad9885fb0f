//! Issue 27, hole 6: of several controller replicas one runs the reconcilers (each would run
//! every DataLoad and race the others re-creating PVs), and a standby takes over a killed one
//! within the Lease's bound, without running a finished DataLoad again.

use super::*;
use fluid_tests::kube::Temp;
use k8s_openapi::api::coordination::v1::Lease;
use std::time::{Duration, Instant};

/// A Dataset and its runtime named `name`, once the Dataset is Bound.
async fn bind(
    kube: &Kube,
    ns: &str,
    name: &str,
    server: &S3Server,
    bucket: &str,
) -> Result<(Temp<Dataset>, Temp<CacheRuntime>)> {
    let ds = kube
        .create_namespaced(ns, &dataset(name, server, bucket, "s3cred")?)
        .await?;
    let rt = kube.create_namespaced(ns, &runtime(name)?).await?;
    let datasets: Api<Dataset> = Api::namespaced(kube.client.clone(), ns);
    wait_for_object(&datasets, name, "phase Bound", |d| {
        phase(d) == Some(DatasetPhase::Bound)
    })
    .await?;
    Ok((ds, rt))
}

#[tokio::test]
async fn one_replica_reconciles_and_a_standby_takes_over_a_killed_leader() -> Result<()> {
    let kube = Kube::connect().await?;
    apply_crds(&kube).await?;
    let server = S3Server::seaweedfs()?;
    let bucket = bucket(&server).await?;
    let ns = kube.create_namespace("fluid-leader").await?;
    let _secret = kube
        .create_namespaced(&ns.name, &credentials(&server)?)
        .await?;
    let (_node, dir, plugin) = start_node(&kube, "fluid-leader").await?;
    let lease = unique_name("fluid-lease");
    let duration = Duration::from_secs(6);
    let flags = [
        "--leader-elect".to_string(),
        format!("--leader-election-namespace={}", ns.name),
        format!("--leader-election-id={lease}"),
        format!("--leader-election-duration={}s", duration.as_secs()),
        format!("--cache-token={CACHE_TOKEN}"),
    ];
    let mut replicas = ControllerProcess::start_replicas(2, &flags)?;
    let logs = |r: &[ControllerProcess]| r.iter().map(|c| c.log()).collect::<Vec<_>>().join("\n");

    // One leads and says so; the other stands by.
    let leader = wait_for("one replica leading, one standing by", || async {
        let leading: Vec<usize> = (0..2)
            .filter(|&i| {
                replicas[i]
                    .log()
                    .contains("leading: this replica runs the reconcilers")
            })
            .collect();
        let standing = (0..2)
            .filter(|&i| replicas[i].log().contains("standing by"))
            .count();
        match (leading.as_slice(), standing) {
            ([i], 1) => Ok(*i),
            _ => Err(format!("leading {leading:?}, {standing} standing by")),
        }
    })
    .await
    .with_context(|| logs(&replicas))?;
    let standby = 1 - leader;
    let _first = bind(&kube, &ns.name, "first", &server, &bucket.name)
        .await
        .with_context(|| logs(&replicas))?;
    assert!(
        !replicas[standby]
            .log()
            .contains("running the Dataset reconciler"),
        "the standby reconciles too:\n{}",
        replicas[standby].log()
    );

    // A DataLoad of the first Dataset, served by the node: run once, by the leader alone.
    stage_pv(
        &kube,
        &plugin,
        &pv_name(&ns.name, "first"),
        &dir.path("staging/first"),
    )
    .await?;
    let _load = kube
        .create_namespaced(
            &ns.name,
            &dataload("once", "first", json!({"target": [{"path": "/"}]}))?,
        )
        .await?;
    let loads: Api<DataLoad> = Api::namespaced(kube.client.clone(), &ns.name);
    let done = wait_for_object(&loads, "once", "Complete", |d| {
        load_phase(d) == Some(DataLoadPhase::Complete)
    })
    .await
    .with_context(|| logs(&replicas))?;
    let loaded = done.status.clone().unwrap_or_default();
    let total: u64 = FILES.iter().map(|(_, n)| *n as u64).sum();
    assert_eq!(
        (loaded.files_loaded, loaded.bytes_loaded),
        (3, total),
        "{loaded:?}"
    );
    // A second run (a standby's, or the leader's again) would show by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let runs = |r: &[ControllerProcess]| {
        r.iter()
            .map(|c| {
                c.log()
                    .lines()
                    .filter(|l| l.contains("load finished") && l.contains("dataload=once"))
                    .count()
            })
            .collect::<Vec<_>>()
    };
    let mut expected = vec![0, 0];
    expected[leader] = 1;
    assert_eq!(runs(&replicas), expected, "{}", logs(&replicas));
    let warmups = || {
        plugin
            .log()
            .lines()
            .filter(|l| l.contains("warm-up requested"))
            .count()
    };
    assert_eq!(warmups(), 1, "{}", plugin.log());

    let leases: Api<Lease> = Api::namespaced(kube.client.clone(), &ns.name);
    let held = leases.get(&lease).await?.spec.unwrap_or_default();

    // A crash of the leader (SIGKILL: it cannot hand the Lease back): the standby takes over
    // once the Lease is a whole duration old, and binds the next Dataset.
    let killed = Instant::now();
    replicas[leader].stop();
    wait_for("the standby leading", || async {
        if replicas[standby]
            .log()
            .contains("running the Dataset reconciler")
        {
            Ok(())
        } else {
            Err("still standing by".to_string())
        }
    })
    .await
    .with_context(|| logs(&replicas))?;
    let took = killed.elapsed();
    println!(
        "the standby took over {:.1} s after the leader was killed (Lease of {duration:?})",
        took.as_secs_f64()
    );
    // The leader renewed at most a renew interval (a third of the Lease) before it died; the
    // standby saw that renewal within one of its polls (a third) and takes the Lease once it
    // has seen no change for a whole duration, checking every third: at most 5/3 of the
    // duration, plus slack for the processes and the apiserver (and this test's polling).
    let bound = duration + duration * 2 / 3 + Duration::from_secs(2);
    assert!(
        took <= bound,
        "the standby took over after {took:?}, more than {bound:?}\n{}",
        logs(&replicas)
    );
    let _second = bind(&kube, &ns.name, "second", &server, &bucket.name)
        .await
        .with_context(|| logs(&replicas))?;
    let now = leases.get(&lease).await?.spec.unwrap_or_default();
    assert_ne!(now.holder_identity, held.holder_identity);
    assert!(now.lease_transitions.unwrap_or(0) > held.lease_transitions.unwrap_or(0));

    // The new leader reconciled the finished DataLoad and did not run it again.
    let after = loads.get("once").await?;
    assert_eq!(load_phase(&after), Some(DataLoadPhase::Complete));
    assert_eq!(runs(&replicas)[standby], 0, "{}", logs(&replicas));
    assert_eq!(warmups(), 1, "{}", plugin.log());
    Ok(())
}
