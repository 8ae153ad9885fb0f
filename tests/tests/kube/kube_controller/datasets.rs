//! Datasets become bound volumes and are cleaned up; keyless ones are not walked.

use super::*;

/// Issue 27, hole 2: a Dataset without keys is not walked with the controller's own cloud
/// identity (here AWS keys in its environment, as IRSA or an instance role would be), unless
/// the administrator allows it.
#[tokio::test]
async fn keyless_datasets_are_not_walked_with_the_controllers_identity() -> Result<()> {
    let kube = Kube::connect().await?;
    apply_crds(&kube).await?;
    let server = S3Server::seaweedfs()?;
    let bucket = bucket(&server).await?;
    let mut keyless = dataset("data", &server, &bucket.name, "unused")?;
    keyless.spec.mounts[0].encrypt_options.clear();
    let ambient = [
        ("AWS_ACCESS_KEY_ID", server.access_key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", server.secret_key.as_str()),
    ];
    for (allowed, flags) in [
        (false, vec![]),
        (true, vec!["--allow-ambient-credentials".to_string()]),
    ] {
        let ns = kube.create_namespace("fluid-ambient").await?;
        let controller = ControllerProcess::start_with_env(&flags, &ambient)?;
        let datasets: Api<Dataset> = Api::namespaced(kube.client.clone(), &ns.name);
        let _ds = kube.create_namespaced(&ns.name, &keyless).await?;
        let _rt = kube.create_namespaced(&ns.name, &runtime("data")?).await?;
        let ds = wait_for_object(&datasets, "data", "the walk ended", |d| {
            condition(d, "UfsScanned").is_some_and(|c| {
                c.status == crd::ConditionStatus::True || c.reason.as_deref() == Some("ScanFailed")
            })
        })
        .await
        .with_context(|| controller.log())?;
        let scanned = condition(&ds, "UfsScanned").context("a UfsScanned condition")?;
        let status = ds.status.clone().unwrap_or_default();
        if allowed {
            assert_eq!(scanned.status, crd::ConditionStatus::True, "{scanned:?}");
            assert_eq!(status.file_num.as_deref(), Some("3"));
        } else {
            assert!(
                scanned
                    .message
                    .as_deref()
                    .is_some_and(|m| m.contains("--allow-ambient-credentials")),
                "{scanned:?}"
            );
            assert_eq!(status.file_num, None, "the bucket was walked: {status:?}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn datasets_become_bound_volumes_and_are_cleaned_up() -> Result<()> {
    let kube = Kube::connect().await?;
    apply_crds(&kube).await?;
    let server = S3Server::seaweedfs()?;
    let bucket = bucket(&server).await?;
    let ns_a = kube.create_namespace("fluid-ctl-a").await?;
    let ns_b = kube.create_namespace("fluid-ctl-b").await?;
    let (a, b) = (ns_a.name.as_str(), ns_b.name.as_str());
    let _secret = kube.create_namespaced(a, &credentials(&server)?).await?;
    let controller = ControllerProcess::start(&[])?;
    let datasets_a: Api<Dataset> = Api::namespaced(kube.client.clone(), a);
    let datasets_b: Api<Dataset> = Api::namespaced(kube.client.clone(), b);

    // Without its CacheRuntime a Dataset waits, saying for what.
    let _ds = kube
        .create_namespaced(a, &dataset("data", &server, &bucket.name, "s3cred")?)
        .await?;
    let ds = wait_for_object(&datasets_a, "data", "phase Pending (no runtime)", |d| {
        phase(d) == Some(DatasetPhase::Pending)
    })
    .await
    .with_context(|| controller.log())?;
    let ready = condition(&ds, "Ready").context("a Ready condition")?;
    assert_eq!(ready.reason.as_deref(), Some("NoRuntime"), "{ready:?}");

    // With it: Bound, and the sources' totals.
    let _rt = kube.create_namespaced(a, &runtime("data")?).await?;
    let total: usize = FILES.iter().map(|(_, n)| n).sum();
    let ds = wait_for_object(
        &datasets_a,
        "data",
        "Bound with ufsTotal and fileNum",
        |d| {
            let s = d.status.clone().unwrap_or_default();
            phase(d) == Some(DatasetPhase::Bound) && s.file_num.is_some()
        },
    )
    .await
    .with_context(|| controller.log())?;
    let status = ds.status.clone().unwrap_or_default();
    assert_eq!(status.file_num.as_deref(), Some("3"));
    assert_eq!(status.ufs_total, Some(human_size(total as u64)));
    assert_eq!(
        status.mounts, ds.spec.mounts,
        "status.mounts copies the spec"
    );
    let scanned = condition(&ds, "UfsScanned").context("a UfsScanned condition")?;
    assert_eq!(scanned.status, crd::ConditionStatus::True, "{scanned:?}");

    // The PV and PVC name each other; credentials only in the node-stage Secret.
    let pv_name = pv_name(a, "data");
    let pvs: Api<PersistentVolume> = Api::all(kube.client.clone());
    let pv = wait_for_object(&pvs, &pv_name, "exists", |_| true).await?;
    let spec = pv.spec.clone().context("PV spec")?;
    let claim = spec.claim_ref.clone().context("claimRef")?;
    assert_eq!(
        (claim.namespace.as_deref(), claim.name.as_deref()),
        (Some(a), Some("data"))
    );
    assert_eq!(spec.storage_class_name.as_deref(), Some("fluid"));
    let csi = spec.csi.clone().context("PV csi source")?;
    assert_eq!(csi.driver, "fuse.csi.fluid.io");
    assert_eq!(csi.volume_handle, pv_name);
    let attrs = csi.volume_attributes.clone().unwrap_or_default();
    assert_eq!(
        attrs.get(DATASET).map(String::as_str),
        Some(format!("{a}/data").as_str())
    );
    assert!(attrs[MOUNTS].contains(&bucket.name), "{attrs:?}");
    // The CacheRuntime's 64Mi level, in the tiers' one written form.
    assert_eq!(attrs.get(TIERS).map(String::as_str), Some("mem:64MiB"));
    let attrs_text = format!("{attrs:?}");
    assert!(
        !attrs_text.contains(&server.secret_key),
        "secret in the volume attributes"
    );
    let stage = csi
        .node_stage_secret_ref
        .clone()
        .context("nodeStageSecretRef")?;
    assert_eq!(stage.namespace.as_deref(), Some(a));
    let secrets: Api<Secret> = Api::namespaced(kube.client.clone(), a);
    let stage_secret = secrets
        .get(stage.name.as_deref().unwrap_or_default())
        .await?;
    let per_mount: Vec<BTreeMap<String, String>> =
        serde_json::from_slice(&stage_secret.data.clone().unwrap_or_default()[MOUNT_SECRETS].0)?;
    assert_eq!(per_mount[0]["access-key"], server.access_key);
    assert_eq!(per_mount[0]["secret-key"], server.secret_key);
    let affinity = format!("{:?}", spec.node_affinity);
    assert!(affinity.contains("fluid-test"), "{affinity}");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(kube.client.clone(), a);
    let pvc = pvcs.get("data").await?;
    let pvc_spec = pvc.spec.context("PVC spec")?;
    assert_eq!(pvc_spec.volume_name.as_deref(), Some(pv_name.as_str()));
    assert_eq!(pvc_spec.storage_class_name.as_deref(), Some("fluid"));

    // Namespace B cannot use A's Secret: the same Dataset there fails, naming the Secret only.
    let _ds_b = kube
        .create_namespaced(b, &dataset("data", &server, &bucket.name, "s3cred")?)
        .await?;
    let _rt_b = kube.create_namespaced(b, &runtime("data")?).await?;
    let ds_b = wait_for_object(&datasets_b, "data", "phase Failed", |d| {
        phase(d) == Some(DatasetPhase::Failed)
    })
    .await
    .with_context(|| controller.log())?;
    let msg = condition(&ds_b, "Ready")
        .and_then(|c| c.message.clone())
        .unwrap_or_default();
    assert!(msg.contains("s3cred") && msg.contains(b), "{msg}");
    assert!(!msg.contains(&server.secret_key));
    assert!(
        pvs.get_opt(&super::pv_name(b, "data")).await?.is_none(),
        "no PV for a failed Dataset"
    );

    // Dynamic provisioning: CreateVolume finds Datasets in the PVC's namespace only.
    let mut csi_client = controller.csi().await?;
    let vol = csi_client
        .create_volume(create_request("data", a))
        .await?
        .into_inner()
        .volume
        .context("a volume")?;
    assert_eq!(
        vol.volume_context.get(DATASET).map(String::as_str),
        Some(format!("{a}/data").as_str())
    );
    assert!(vol.volume_context[MOUNTS].contains(&bucket.name));
    let only_in_a = dataset("only-in-a", &server, &bucket.name, "s3cred")?;
    let _only = kube.create_namespaced(a, &only_in_a).await?;
    let err = csi_client
        .create_volume(create_request("only-in-a", b))
        .await
        .expect_err("a Dataset of another namespace");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains(b), "{}", err.message());

    // The schema refuses a mount point we cannot read.
    let mut bad = dataset("bad", &server, &bucket.name, "s3cred")?;
    bad.spec.mounts[0].mount_point = "ftp://example.com/data".into();
    match datasets_a.create(&PostParams::default(), &bad).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422, "{e:?}");
            assert!(e.message.contains("mountPoint"), "{}", e.message);
        }
        other => bail!("an ftp:// Dataset was not refused: {other:?}"),
    }

    // Deletion waits while a pod uses the PVC, then removes PV, PVC and Secret.
    let pods: Api<Pod> = Api::namespaced(kube.client.clone(), a);
    pods.create(&PostParams::default(), &pod_using("data")?)
        .await?;
    datasets_a.delete("data", &DeleteParams::default()).await?;
    let waiting = wait_for_object(&datasets_a, "data", "deletion waiting for the pod", |d| {
        condition(d, "Ready").is_some_and(|c| c.reason.as_deref() == Some("Terminating"))
    })
    .await
    .with_context(|| controller.log())?;
    let msg = condition(&waiting, "Ready")
        .and_then(|c| c.message.clone())
        .unwrap_or_default();
    assert!(msg.contains("trainer"), "{msg}");
    assert!(
        pvs.get_opt(&pv_name).await?.is_some(),
        "the PV stays while the pod runs"
    );
    pods.delete("trainer", &DeleteParams::default().grace_period(0))
        .await?;
    wait_for("the Dataset, its PV, PVC and Secret gone", || async {
        let left = [
            datasets_a.get_opt("data").await.map(|o| o.is_some()),
            pvs.get_opt(&pv_name).await.map(|o| o.is_some()),
            pvcs.get_opt("data").await.map(|o| o.is_some()),
            secrets
                .get_opt("data-fluid-credentials")
                .await
                .map(|o| o.is_some()),
        ];
        match left.iter().position(|r| !matches!(r, Ok(false))) {
            None => Ok(()),
            Some(i) => Err(format!(
                "object {i} of [Dataset, PV, PVC, Secret] still there: {:?}",
                left[i]
            )),
        }
    })
    .await
    .with_context(|| controller.log())?;
    assert!(
        !controller.log().contains(&server.secret_key),
        "the controller logged a secret"
    );
    Ok(())
}
