//! Issue 27, hole 6: of several controller replicas one runs the reconcilers (each would run
//! every DataLoad and race the others re-creating PVs), and a standby takes over a killed one.

use super::*;
use fluid_tests::kube::Temp;
use k8s_openapi::api::coordination::v1::Lease;
use std::time::Instant;

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
    let lease = unique_name("fluid-lease");
    let flags = [
        "--leader-elect".to_string(),
        format!("--leader-election-namespace={}", ns.name),
        format!("--leader-election-id={lease}"),
        "--leader-election-duration=6s".to_string(),
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
    println!(
        "the standby took over {:.1} s after the leader was killed (Lease of 6 s)",
        killed.elapsed().as_secs_f64()
    );
    let _second = bind(&kube, &ns.name, "second", &server, &bucket.name)
        .await
        .with_context(|| logs(&replicas))?;
    let now = leases.get(&lease).await?.spec.unwrap_or_default();
    assert_ne!(now.holder_identity, held.holder_identity);
    assert!(now.lease_transitions.unwrap_or(0) > held.lease_transitions.unwrap_or(0));
    Ok(())
}
