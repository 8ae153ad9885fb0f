//! A Dataset's PV, PVC and Secret are its own (issue 27, hole 3): `team-dev/x` and
//! `team/dev-x` once made one PV, `<namespace>-<name>`, and deleting one Dataset deleted the
//! other's PV; a PVC a user made under a Dataset's name was taken over, then deleted with it.

use super::*;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaimSpec};
use kube::api::ObjectMeta;

/// A PVC a user made themselves, of another StorageClass.
fn users_claim(name: &str) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: Some("standard".into()),
            resources: Some(k8s_openapi::api::core::v1::VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".into(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity("1Gi".into()),
                )])),
                limits: None,
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// The PV a Dataset's PVC is pre-bound to, once the PVC exists.
async fn bound_pv(kube: &Kube, ns: &str, claim: &str) -> Result<PersistentVolume> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(kube.client.clone(), ns);
    let pvc = wait_for_object(&pvcs, claim, "pre-bound to a PV", |c| {
        c.spec.as_ref().is_some_and(|s| s.volume_name.is_some())
    })
    .await?;
    let pv_name = pvc.spec.and_then(|s| s.volume_name).unwrap_or_default();
    let pv = Api::<PersistentVolume>::all(kube.client.clone())
        .get(&pv_name)
        .await
        .with_context(|| format!("PV {pv_name} of {ns}/{claim}"))?;
    let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.clone());
    let claim_ref = claim_ref.context("claimRef")?;
    let claimed = (claim_ref.namespace.as_deref(), claim_ref.name.as_deref());
    anyhow::ensure!(
        claimed == (Some(ns), Some(claim)),
        "PV {pv_name} claims {claimed:?}, not {ns}/{claim}"
    );
    Ok(pv)
}

#[tokio::test]
async fn datasets_whose_names_join_alike_keep_their_own_volumes() -> Result<()> {
    let kube = Kube::connect().await?;
    apply_crds(&kube).await?;
    let server = S3Server::seaweedfs()?;
    let bucket = bucket(&server).await?;
    // `<team>-dev` + `x` and `<team>` + `dev-x`: joined with `-`, the same text.
    let team = kube.create_namespace("fluid-team").await?;
    let dev = kube
        .create_cluster(&Namespace {
            metadata: ObjectMeta {
                name: Some(format!("{}-dev", team.name)),
                ..Default::default()
            },
            ..Default::default()
        })
        .await?;
    let controller = ControllerProcess::start(&[])?;
    let _secrets = (
        kube.create_namespaced(&dev.name, &credentials(&server)?)
            .await?,
        kube.create_namespaced(&team.name, &credentials(&server)?)
            .await?,
    );
    let _x = (
        kube.create_namespaced(&dev.name, &dataset("x", &server, &bucket.name, "s3cred")?)
            .await?,
        kube.create_namespaced(&dev.name, &runtime("x")?).await?,
    );
    // The first is bound before its look-alike and the user's PVC exist.
    let x = bound_pv(&kube, &dev.name, "x")
        .await
        .with_context(|| controller.log())?;
    let _users_claim = kube
        .create_namespaced(&team.name, &users_claim("mine"))
        .await?;
    let _dev_x = (
        kube.create_namespaced(
            &team.name,
            &dataset("dev-x", &server, &bucket.name, "s3cred")?,
        )
        .await?,
        kube.create_namespaced(&team.name, &runtime("dev-x")?)
            .await?,
    );
    let _mine = (
        kube.create_namespaced(
            &team.name,
            &dataset("mine", &server, &bucket.name, "s3cred")?,
        )
        .await?,
        kube.create_namespaced(&team.name, &runtime("mine")?)
            .await?,
    );
    let dev_x = bound_pv(&kube, &team.name, "dev-x")
        .await
        .with_context(|| controller.log())?;
    assert_ne!(x.name_any(), dev_x.name_any(), "one PV for two Datasets");

    // The user's own PVC `mine` is neither taken over nor given to the Dataset `mine`.
    let team_datasets: Api<Dataset> = Api::namespaced(kube.client.clone(), &team.name);
    let mine = wait_for_object(&team_datasets, "mine", "refusing the user's PVC", |d| {
        condition(d, "Ready").is_some_and(|c| c.reason.as_deref() == Some("Conflict"))
    })
    .await
    .with_context(|| controller.log())?;
    let message = condition(&mine, "Ready").and_then(|c| c.message.clone());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("PersistentVolumeClaim mine")),
        "{message:?}"
    );
    let team_pvcs: Api<PersistentVolumeClaim> = Api::namespaced(kube.client.clone(), &team.name);
    let users = team_pvcs.get("mine").await?;
    assert_eq!(
        users
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref()),
        Some("standard"),
        "the user's PVC was taken over"
    );

    // Deleting `team/dev-x` and `team/mine` leaves `team-dev/x`'s PV and PVC, and the user's PVC.
    for name in ["dev-x", "mine"] {
        team_datasets.delete(name, &DeleteParams::default()).await?;
    }
    wait_for("the two Datasets of the team gone", || async {
        match (
            team_datasets.get_opt("dev-x").await,
            team_datasets.get_opt("mine").await,
        ) {
            (Ok(None), Ok(None)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .with_context(|| controller.log())?;
    let pvs: Api<PersistentVolume> = Api::all(kube.client.clone());
    let after = pvs.get(&x.name_any()).await?;
    assert!(
        after.metadata.deletion_timestamp.is_none(),
        "the PV of {}/x is being deleted",
        dev.name
    );
    assert!(
        pvs.get_opt(&dev_x.name_any()).await?.is_none(),
        "dev-x's PV left"
    );
    let dev_pvcs: Api<PersistentVolumeClaim> = Api::namespaced(kube.client.clone(), &dev.name);
    assert!(
        dev_pvcs.get_opt("x").await?.is_some(),
        "x's PVC was deleted"
    );
    assert!(
        team_pvcs.get_opt("mine").await?.is_some(),
        "the user's PVC was deleted with the Dataset of its name"
    );
    Ok(())
}

/// A PV made before PV names had a hash (`<namespace>-<name>`) stays the Dataset's PV after an
/// upgrade: its pre-bound PVC names it, and a PVC's volume cannot change.
#[tokio::test]
async fn a_pv_named_as_before_the_hash_is_kept_after_an_upgrade() -> Result<()> {
    use csi_controller::reconcile::objects::LABEL_UID;
    let kube = Kube::connect().await?;
    apply_crds(&kube).await?;
    let server = S3Server::seaweedfs()?;
    let bucket = bucket(&server).await?;
    let ns = kube.create_namespace("fluid-upgrade").await?;
    let _secret = kube
        .create_namespaced(&ns.name, &credentials(&server)?)
        .await?;
    let mut controller = ControllerProcess::start(&[])?;
    let _ds = kube
        .create_namespaced(&ns.name, &dataset("data", &server, &bucket.name, "s3cred")?)
        .await?;
    let _rt = kube.create_namespaced(&ns.name, &runtime("data")?).await?;
    let hashed = bound_pv(&kube, &ns.name, "data")
        .await
        .with_context(|| controller.log())?;
    controller.stop();

    // What the previous version left: the same PV named `<namespace>-data` (no uid label), and
    // the Dataset's PVC pre-bound to it.
    let pvs: Api<PersistentVolume> = Api::all(kube.client.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(kube.client.clone(), &ns.name);
    let legacy_name = format!("{}-data", ns.name);
    let mut legacy = hashed.clone();
    legacy.metadata = ObjectMeta {
        name: Some(legacy_name.clone()),
        labels: hashed.metadata.labels.clone().map(|mut l| {
            l.remove(LABEL_UID);
            l
        }),
        ..Default::default()
    };
    if let Some(csi) = legacy.spec.as_mut().and_then(|s| s.csi.as_mut()) {
        csi.volume_handle = legacy_name.clone();
    }
    legacy.status = None;
    pvs.create(&PostParams::default(), &legacy).await?;
    pvs.delete(&hashed.name_any(), &DeleteParams::default())
        .await?;
    let mut claim = pvcs.get("data").await?;
    pvcs.delete("data", &DeleteParams::default()).await?;
    claim.metadata = ObjectMeta {
        name: claim.metadata.name.clone(),
        labels: claim.metadata.labels.clone(),
        owner_references: claim.metadata.owner_references.clone(),
        ..Default::default()
    };
    if let Some(spec) = claim.spec.as_mut() {
        spec.volume_name = Some(legacy_name.clone());
    }
    claim.status = None;
    wait_for("the old PVC gone", || async {
        match pvcs.get_opt("data").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    pvcs.create(&PostParams::default(), &claim).await?;

    // The upgraded controller adopts it (its labels get the uid) and makes no second PV.
    let controller = ControllerProcess::start(&[])?;
    wait_for_object(
        &pvs,
        &legacy_name,
        "labelled with the Dataset's uid",
        |pv| pv.labels().contains_key(LABEL_UID),
    )
    .await
    .with_context(|| controller.log())?;
    let pv = bound_pv(&kube, &ns.name, "data").await?;
    assert_eq!(pv.name_any(), legacy_name);
    assert!(
        pvs.get_opt(&hashed.name_any()).await?.is_none(),
        "a second PV was made"
    );
    Ok(())
}

/// Issue 27, hole 4: a Dataset may not map a Secret to an option that is sent in clear. With
/// `endpoint` from a Secret, the node would send the Secret's value to whatever host it names.
#[tokio::test]
async fn a_secret_is_never_the_value_of_an_option_sent_in_clear() -> Result<()> {
    let kube = Kube::connect().await?;
    apply_crds(&kube).await?;
    let server = S3Server::seaweedfs()?;
    let bucket = bucket(&server).await?;
    let ns = kube.create_namespace("fluid-oracle").await?;
    let _secret = kube
        .create_namespaced(&ns.name, &credentials(&server)?)
        .await?;
    let controller = ControllerProcess::start(&[])?;
    let mut oracle = dataset("data", &server, &bucket.name, "s3cred")?;
    let mut endpoint = oracle.spec.mounts[0].encrypt_options[1].clone();
    endpoint.name = "endpoint".into();
    oracle.spec.mounts[0].encrypt_options.push(endpoint);
    oracle.spec.mounts[0].options.remove("endpoint");
    let _ds = kube.create_namespaced(&ns.name, &oracle).await?;
    let _rt = kube.create_namespaced(&ns.name, &runtime("data")?).await?;
    let datasets: Api<Dataset> = Api::namespaced(kube.client.clone(), &ns.name);
    let failed = wait_for_object(&datasets, "data", "phase Failed", |d| {
        phase(d) == Some(DatasetPhase::Failed)
    })
    .await
    .with_context(|| controller.log())?;
    let message = condition(&failed, "Ready").and_then(|c| c.message.clone());
    let message = message.unwrap_or_default();
    assert!(
        message.contains("encryptOptions[2].name") && message.contains("not a credential"),
        "{message}"
    );
    assert!(!message.contains(&server.secret_key), "{message}");
    let secrets: Api<Secret> = Api::namespaced(kube.client.clone(), &ns.name);
    assert!(
        secrets.get_opt("data-fluid-credentials").await?.is_none(),
        "the Secret's value was copied for the node"
    );
    Ok(())
}

/// Waits for the Dataset `name` to fail with a Ready message holding `why`, and for a Warning
/// Event about it holding `why` as well.
async fn refused_with_an_event(
    kube: &Kube,
    ns: &str,
    name: &str,
    why: &str,
    controller: &ControllerProcess,
) -> Result<()> {
    use k8s_openapi::api::events::v1::Event;
    let datasets: Api<Dataset> = Api::namespaced(kube.client.clone(), ns);
    let failed = wait_for_object(&datasets, name, "phase Failed", |d| {
        phase(d) == Some(DatasetPhase::Failed)
    })
    .await
    .with_context(|| controller.log())?;
    let message = condition(&failed, "Ready").and_then(|c| c.message.clone());
    assert!(
        message.as_deref().is_some_and(|m| m.contains(why)),
        "{message:?}"
    );
    let events: Api<Event> = Api::namespaced(kube.client.clone(), ns);
    let event = wait_for("a Warning Event about the Dataset", || async {
        let list = events
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .into_iter()
            .find(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                    && e.type_.as_deref() == Some("Warning")
            })
            .ok_or_else(|| "none yet".to_string())
    })
    .await
    .with_context(|| controller.log())?;
    assert_eq!(event.reason.as_deref(), Some("Invalid"), "{event:?}");
    assert!(
        event.note.as_deref().is_some_and(|n| n.contains(why)),
        "{event:?}"
    );
    Ok(())
}

/// Issue 27, hole 5, at the controller: a CacheRuntime whose disk tier climbs out of its folder
/// stops its Dataset with a condition that says why, and a Warning Event beside it.
#[tokio::test]
async fn a_tier_path_with_dot_dot_fails_the_dataset_with_an_event() -> Result<()> {
    let kube = Kube::connect().await?;
    apply_crds(&kube).await?;
    let server = S3Server::seaweedfs()?;
    let bucket = bucket(&server).await?;
    let ns = kube.create_namespace("fluid-tier").await?;
    let _secret = kube
        .create_namespaced(&ns.name, &credentials(&server)?)
        .await?;
    let controller = ControllerProcess::start(&[])?;
    let _ds = kube
        .create_namespaced(&ns.name, &dataset("data", &server, &bucket.name, "s3cred")?)
        .await?;
    let mut rt = runtime("data")?;
    rt.spec.tieredstore.levels = serde_json::from_value(json!([
        {"mediumtype": "SSD", "path": "/var/cache/fluid/../../lib/kubelet", "quota": "1Gi"}
    ]))?;
    let _rt = kube.create_namespaced(&ns.name, &rt).await?;
    refused_with_an_event(&kube, &ns.name, "data", "without '..'", &controller).await?;

    // Without `..`, the host's root through PID 1: refused here too, not only at NodeStage.
    let _ds = kube
        .create_namespaced(&ns.name, &dataset("host", &server, &bucket.name, "s3cred")?)
        .await?;
    let mut rt = runtime("host")?;
    rt.spec.tieredstore.levels = serde_json::from_value(json!([
        {"mediumtype": "SSD", "path": "/proc/1/root/var/lib/kubelet", "quota": "1Gi"}
    ]))?;
    let _rt = kube.create_namespaced(&ns.name, &rt).await?;
    refused_with_an_event(&kube, &ns.name, "host", "/proc, /sys or /dev", &controller).await
}

/// Issue 27, hole 1, at the controller: a local:// Dataset outside the administrator's local
/// roots (here `/proc/1/root`, the host's root through PID 1) fails before any node is asked.
#[tokio::test]
async fn a_local_dataset_outside_the_local_roots_fails_with_an_event() -> Result<()> {
    let kube = Kube::connect().await?;
    apply_crds(&kube).await?;
    let ns = kube.create_namespace("fluid-local").await?;
    let controller = ControllerProcess::start(&["--local-roots=/srv/datasets".to_string()])?;
    let ds: Dataset = serde_json::from_value(json!({
        "apiVersion": "data.fluid.io/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": "host"},
        "spec": {"mounts": [{"mountPoint": "local:///proc/1/root/etc", "name": "etc"}]}
    }))?;
    let _ds = kube.create_namespaced(&ns.name, &ds).await?;
    let _rt = kube.create_namespaced(&ns.name, &runtime("host")?).await?;
    refused_with_an_event(&kube, &ns.name, "host", "--local-roots", &controller).await?;
    let pvs: Api<PersistentVolume> = Api::all(kube.client.clone());
    assert!(
        pvs.get_opt(&pv_name(&ns.name, "host")).await?.is_none(),
        "a PV was made for it"
    );
    Ok(())
}

/// Issue 27: a tenant who may create Datasets but not read Secrets maps a Secret to
/// `access-key` (allowed: it is a credential) and names their own server as `endpoint`. The
/// size scan (and the node) would send the access key id in the SigV4 `Authorization` header
/// there. The endpoint is neither the administrator's (`--credential-endpoints`, here the test
/// S3 server) nor the Secret's own, so the Dataset fails saying why and nothing reaches the
/// tenant's server.
#[tokio::test]
async fn secret_credentials_are_never_sent_to_an_endpoint_the_tenant_chose() -> Result<()> {
    use std::io::Read;
    use std::sync::{Arc, Mutex};
    let kube = Kube::connect().await?;
    apply_crds(&kube).await?;
    let server = S3Server::seaweedfs()?;
    let bucket = bucket(&server).await?;
    // The tenant's server: keeps whatever requests reach it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let trap = format!("http://{}", listener.local_addr()?);
    let received = Arc::new(Mutex::new(Vec::<u8>::new()));
    {
        let received = received.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut conn = conn;
                let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = conn.read(&mut buf) {
                    received.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            }
        });
    }
    let ns = kube.create_namespace("fluid-exfil").await?;
    let _secret = kube
        .create_namespaced(&ns.name, &credentials(&server)?)
        .await?;
    let controller = ControllerProcess::start(&[])?;
    let mut ds = dataset("data", &server, &bucket.name, "s3cred")?;
    ds.spec.mounts[0]
        .options
        .insert("endpoint".into(), trap.clone());
    let _ds = kube.create_namespaced(&ns.name, &ds).await?;
    let _rt = kube.create_namespaced(&ns.name, &runtime("data")?).await?;
    refused_with_an_event(&kube, &ns.name, "data", "option endpoint", &controller).await?;
    let datasets: Api<Dataset> = Api::namespaced(kube.client.clone(), &ns.name);
    let message = condition(&datasets.get("data").await?, "Ready")
        .and_then(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains(&trap) && message.contains("--credential-endpoints"),
        "{message}"
    );
    // A scan started before the refusal would have reached the trap by now.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let got = String::from_utf8_lossy(&received.lock().unwrap()).to_string();
    assert!(
        !got.contains(&server.access_key),
        "the access key id reached the tenant's server:\n{got}"
    );
    let secrets: Api<Secret> = Api::namespaced(kube.client.clone(), &ns.name);
    assert!(
        secrets.get_opt("data-fluid-credentials").await?.is_none(),
        "the Secret's values were copied for the node"
    );
    Ok(())
}

/// Issue 27: the PV, PVC and Secret of a Dataset are written only over the object the
/// reconciler looked up. One made under the name by someone else between the look-up and the
/// write (absent before, or deleted and made again) is refused by the API server, not
/// force-taken by server-side apply.
#[tokio::test]
async fn objects_made_since_the_look_up_are_never_taken_over() -> Result<()> {
    use csi_controller::reconcile::dataset::apply_exactly;
    let kube = Kube::connect().await?;
    let ns = kube.create_namespace("fluid-race").await?;
    let secrets: Api<Secret> = Api::namespaced(kube.client.clone(), &ns.name);
    let secret = |owner: &str, value: &str| -> Result<Secret> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "data-fluid-credentials", "labels": {"owner": owner}},
            "data": {"k": k8s_openapi::ByteString(value.as_bytes().to_vec())}
        }))?)
    };
    let is_theirs = |s: &Secret| {
        s.labels().get("owner").map(String::as_str) == Some("them")
            && s.data
                .as_ref()
                .and_then(|d| d.get("k"))
                .map(|v| v.0.as_slice())
                == Some(b"theirs".as_slice())
    };
    let conflict = |e: &kube::Error| matches!(e, kube::Error::Api(ae) if ae.code == 409);

    // Absent at the look-up, made by someone else since: the write fails, theirs stays.
    secrets
        .create(&PostParams::default(), &secret("them", "theirs")?)
        .await?;
    let err = apply_exactly(&secrets, &secret("fluid", "ours")?, None)
        .await
        .unwrap_err();
    assert!(conflict(&err), "{err}");
    assert!(is_theirs(&secrets.get("data-fluid-credentials").await?));

    // Ours at the look-up, then deleted and made again by someone else: Conflict, theirs stays.
    secrets
        .delete("data-fluid-credentials", &DeleteParams::default())
        .await?;
    let ours = apply_exactly(&secrets, &secret("fluid", "ours")?, None).await?;
    secrets
        .delete("data-fluid-credentials", &DeleteParams::default())
        .await?;
    secrets
        .create(&PostParams::default(), &secret("them", "theirs")?)
        .await?;
    let err = apply_exactly(&secrets, &secret("fluid", "ours-2")?, Some(&ours))
        .await
        .unwrap_err();
    assert!(conflict(&err), "{err}");
    assert!(is_theirs(&secrets.get("data-fluid-credentials").await?));

    // Still ours: applied.
    secrets
        .delete("data-fluid-credentials", &DeleteParams::default())
        .await?;
    let ours = apply_exactly(&secrets, &secret("fluid", "ours")?, None).await?;
    let applied = apply_exactly(&secrets, &secret("fluid", "ours-2")?, Some(&ours)).await?;
    assert_eq!(applied.uid(), ours.uid());
    assert_eq!(
        applied.data.and_then(|d| d.get("k").cloned()).map(|v| v.0),
        Some(b"ours-2".to_vec())
    );
    Ok(())
}
