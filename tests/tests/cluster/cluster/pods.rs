//! What a user does: install, pods that read Datasets, provisioning, the scheduler, crashes, uninstall.

use super::*;

#[test]
fn helm_install_runs_the_driver_through_the_kubelet() {
    let (_g, c) = setup();
    let ready = c
        .jsonpath(
            Some(RELEASE_NAMESPACE),
            "deployment",
            "fluid-controller",
            "{.status.readyReplicas}",
        )
        .unwrap();
    assert_eq!(ready, "1", "controller Deployment ready");
    let ds = c
        .jsonpath(
            Some(RELEASE_NAMESPACE),
            "daemonset",
            "fluid-node",
            "{.status.numberReady}/{.status.desiredNumberScheduled}",
        )
        .unwrap();
    assert_eq!(ds, "1/1", "node DaemonSet ready on the one node");
    // The kubelet listed the driver in the node's CSINode: it called our plugin registration.
    let drivers = c
        .wait("CSINode lists the driver", POD_TIMEOUT, || {
            let d = c.jsonpath(None, "csinode", &c.node, "{.spec.drivers[*].name}")?;
            Ok(d.contains(DRIVER).then_some(d))
        })
        .unwrap();
    assert_eq!(drivers, DRIVER);
    // The webhook is registered and its Service has a ready endpoint (the controller pod).
    let hooks = c
        .jsonpath(
            None,
            "mutatingwebhookconfiguration",
            "fluid-webhook",
            "{.webhooks[*].name}",
        )
        .unwrap();
    assert!(hooks.contains("pods.webhook.fluid.io"), "{hooks}");
    let endpoints = c
        .kubectl(&[
            "get",
            "endpointslices",
            "-n",
            RELEASE_NAMESPACE,
            "-l",
            "kubernetes.io/service-name=fluid-webhook",
            "-o",
            "jsonpath={.items[*].endpoints[*].conditions.ready}",
        ])
        .unwrap();
    assert_eq!(endpoints, "true");
}

#[test]
fn a_pod_reads_every_file_of_a_dataset_byte_exact() {
    let (_g, c) = setup();
    let ns = c.namespace("e2e-read").unwrap();
    let data = DatasetBucket::create("e2e-read").unwrap();
    dataset(c, &ns.name, "train", &data).unwrap();
    let started = Instant::now();
    let sums = read_all_once(c, &ns.name, "reader", "train").unwrap();
    eprintln!(
        "pod created -> all files read and checked in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(sums, data.expected_sums(&format!("{MOUNT}/bucket")));
    // The webhook gave the pod's Fluid mount HostToContainer propagation.
    let propagation = c
        .jsonpath(
            Some(&ns.name),
            "pod",
            "reader",
            "{.spec.containers[0].volumeMounts[0].mountPropagation}",
        )
        .unwrap();
    assert_eq!(propagation, "HostToContainer");
}

#[test]
fn the_scheduler_follows_the_webhooks_dataset_affinity() {
    let (_g, c) = setup();
    let ns = c.namespace("e2e-sched").unwrap();
    let data = DatasetBucket::create("e2e-sched").unwrap();
    dataset(c, &ns.name, "served", &data).unwrap();
    dataset(c, &ns.name, "unserved", &data).unwrap();
    // A first pod makes the node serve `served` (the node plugin labels the node).
    pod(c, &ns.name, "first", "served", "sleep 3600", "").unwrap();
    c.wait_ready(&ns.name, "first", POD_TIMEOUT).unwrap();
    let key = format!("fluid.io/s-{}-served", ns.name);
    c.wait("the node carries the Dataset's label", POD_TIMEOUT, || {
        let labels = c.jsonpath(None, "node", &c.node, "{.metadata.labels}")?;
        Ok(labels.contains(&key).then_some(()))
    })
    .unwrap();

    // Required: scheduled, and only because the node has the label.
    let required = "fluid.io/dataset.served.sched: required";
    pod(c, &ns.name, "required", "served", "sleep 3600", required).unwrap();
    c.wait_ready(&ns.name, "required", POD_TIMEOUT).unwrap();
    let terms = c
        .jsonpath(
            Some(&ns.name),
            "pod",
            "required",
            "{.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution}",
        )
        .unwrap();
    assert!(
        terms.contains(&key),
        "the webhook required the label: {terms}"
    );

    // Required, of a Dataset no node serves: Pending, with the scheduler's reason.
    pod(
        c,
        &ns.name,
        "nowhere",
        "unserved",
        "sleep 3600",
        "fluid.io/dataset.unserved.sched: required",
    )
    .unwrap();
    let reason = event_messages(c, &ns.name, "nowhere", "FailedScheduling").unwrap();
    assert!(reason.contains("node affinity"), "{reason}");
    let phase = c
        .jsonpath(Some(&ns.name), "pod", "nowhere", "{.status.phase}")
        .unwrap();
    assert_eq!(phase, "Pending");
}

/// A StorageClass made for one test, deleted when dropped.
struct StorageClass<'a> {
    c: &'a Cluster,
    name: String,
}

impl Drop for StorageClass<'_> {
    fn drop(&mut self) {
        let _ = self
            .c
            .kubectl(&["delete", "storageclass", &self.name, "--wait=false"]);
    }
}

fn storage_class<'a>(c: &'a Cluster, name: &str, parameters: &str) -> Result<StorageClass<'a>> {
    c.apply(&format!(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: {name}}}\nprovisioner: {DRIVER}\nreclaimPolicy: Delete\nparameters:\n{parameters}"
    ))?;
    Ok(StorageClass {
        c,
        name: name.to_string(),
    })
}

fn claim(c: &Cluster, ns: &str, name: &str, class: &str) -> Result<()> {
    c.apply(&format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  storageClassName: {class}\n  accessModes: [ReadOnlyMany]\n  resources: {{requests: {{storage: 1Gi}}}}\n"
    ))?;
    Ok(())
}

#[test]
fn csi_provisioner_provisions_dataset_and_inline_volumes() {
    let (_g, c) = setup();
    let ns = c.namespace("e2e-dyn").unwrap();
    let data = DatasetBucket::create("e2e-dyn").unwrap();
    dataset(c, &ns.name, "dyn", &data).unwrap();

    // `dataset` parameter: resolved in the PVC's namespace.
    let by_dataset = storage_class(
        c,
        &format!("{}-ds", ns.name),
        concat!(
            "  dataset: dyn\n",
            // The Secret the controller made from the Dataset's encryptOptions, as the chart's
            // StorageClass names it: CreateVolume cannot hand credentials to the node itself.
            "  csi.storage.k8s.io/node-stage-secret-name: dyn-fluid-credentials\n",
            "  csi.storage.k8s.io/node-stage-secret-namespace: ${pvc.namespace}\n",
        ),
    )
    .unwrap();
    claim(c, &ns.name, "by-dataset", &by_dataset.name).unwrap();
    wait_bound(c, &ns.name, "by-dataset").unwrap();
    let pv = c
        .jsonpath(Some(&ns.name), "pvc", "by-dataset", "{.spec.volumeName}")
        .unwrap();
    let provisioner = c
        .jsonpath(
            None,
            "pv",
            &pv,
            "{.metadata.annotations.pv\\.kubernetes\\.io/provisioned-by}",
        )
        .unwrap();
    assert_eq!(
        provisioner, DRIVER,
        "made by csi-provisioner through our controller"
    );
    let sums = read_all_once(c, &ns.name, "dataset-reader", "by-dataset").unwrap();
    // A provisioned volume of a Dataset mounts the Dataset's root: its one mount `bucket`.
    assert_eq!(sums, data.expected_sums(&format!("{MOUNT}/bucket")));

    // `mountPoint` inline, credentials from a node-stage Secret.
    let s = &data.server;
    c.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: inline-creds, namespace: {}}}\nstringData: {{access-key: {}, secret-key: {}}}\n",
        ns.name, s.access_key, s.secret_key
    ))
    .unwrap();
    let inline = storage_class(
        c,
        &format!("{}-inline", ns.name),
        &format!(
            "  mountPoint: s3://{}/\n  mountOptions: \"endpoint={},region={}\"\n  csi.storage.k8s.io/node-stage-secret-name: inline-creds\n  csi.storage.k8s.io/node-stage-secret-namespace: {}\n",
            data.bucket.name, c.s3_endpoint, s.region, ns.name
        ),
    )
    .unwrap();
    claim(c, &ns.name, "inline", &inline.name).unwrap();
    wait_bound(c, &ns.name, "inline").unwrap();
    let sums = checksums_pod(c, &ns.name, "inline-reader", "inline", MOUNT).unwrap();
    assert_eq!(sums, data.expected_sums(MOUNT));
}

#[test]
fn a_second_pod_starts_warm_on_the_surviving_daemon() {
    let (_g, c) = setup();
    let ns = c.namespace("e2e-warm").unwrap();
    let data = DatasetBucket::create("e2e-warm").unwrap();
    dataset(c, &ns.name, "warm", &data).unwrap();
    let volume = csi_controller::reconcile::objects::pv_name(&ns.name, "warm");
    let expected = data.expected_sums(&format!("{MOUNT}/bucket"));

    let t = Instant::now();
    assert_eq!(
        read_all_once(c, &ns.name, "cold", "warm").unwrap(),
        expected
    );
    let cold = t.elapsed();
    let pid = daemon_pid(&volume).expect("the volume's daemon");
    delete_pod(c, &ns.name, "cold").unwrap();
    // OnRuntimeDeleted (the default): the daemon outlives the last pod on the node.
    c.wait("the volume unstaged by the kubelet", POD_TIMEOUT, || {
        let targets = c
            .fluid_mounts()
            .iter()
            .filter(|m| m.contains(&volume) && m.contains("/pods/"))
            .count();
        Ok((targets == 0).then_some(()))
    })
    .unwrap();
    assert!(alive(pid), "the daemon of {volume} survived the unpublish");

    let t = Instant::now();
    assert_eq!(
        read_all_once(c, &ns.name, "warm", "warm").unwrap(),
        expected
    );
    let warm = t.elapsed();
    assert_eq!(
        daemon_pid(&volume),
        Some(pid),
        "the second pod used the same daemon"
    );
    eprintln!(
        "pod to checksums: cold {:.2} s, warm {:.2} s (includes pod start)",
        cold.as_secs_f64(),
        warm.as_secs_f64()
    );
    // The controller's statistics from the node: the cache holds the data and was hit.
    let status = c
        .wait(
            "Dataset status with cache hits",
            Duration::from_secs(90),
            || {
                let cached = c.jsonpath(
                    Some(&ns.name),
                    "dataset",
                    "warm",
                    "{.status.cacheStates.cached}",
                )?;
                let ratio = c.jsonpath(
                    Some(&ns.name),
                    "dataset",
                    "warm",
                    "{.status.cacheStates.cacheHitRatio}",
                )?;
                let hit = ratio.trim_end_matches('%').parse::<f64>().unwrap_or(0.0);
                Ok(
                    (!cached.is_empty() && !cached.starts_with("0") && hit > 0.0)
                        .then_some(format!("{cached} cached, {ratio} hits")),
                )
            },
        )
        .unwrap();
    let table = c
        .kubectl(&["get", "dataset", "-n", &ns.name, "warm"])
        .unwrap();
    eprintln!("{status}\n{table}");
    // The CacheRuntime's member view: the cluster's one node, ready, holding the cache.
    let members = c
        .wait(
            "the CacheRuntime's members",
            Duration::from_secs(60),
            || {
                let view = c.jsonpath(
                    Some(&ns.name),
                    "cacheruntime",
                    "warm",
                    "{.status.members[*].node} {.status.members[*].ready} {.status.fusePhase}",
                )?;
                Ok((view == format!("{} true Ready", c.node)).then_some(view))
            },
        )
        .unwrap();
    let cached = c
        .jsonpath(
            Some(&ns.name),
            "cacheruntime",
            "warm",
            "{.status.members[0].cached}",
        )
        .unwrap();
    assert!(!cached.is_empty() && !cached.starts_with('0'), "{cached}");
    eprintln!("members: {members}, {cached} owned");
}

#[test]
fn readers_survive_a_killed_daemon_and_a_replaced_node_plugin() {
    let (_g, c) = setup();
    let ns = c.namespace("e2e-kill").unwrap();
    let data = DatasetBucket::create("e2e-kill").unwrap();
    dataset(c, &ns.name, "kill", &data).unwrap();
    let volume = csi_controller::reconcile::objects::pv_name(&ns.name, "kill");
    let file = format!("{MOUNT}/bucket/train/part-0.bin");
    let want = data.files["train/part-0.bin"].clone();
    // The reader loops for the whole test; a failed read is logged, never fatal.
    let script = format!(
        "while :; do sha256sum {file} >/tmp/last 2>&1 || echo fail >>/tmp/failures; sleep 0.2; done"
    );
    pod(c, &ns.name, "reader", "kill", &script, "").unwrap();
    c.wait_ready(&ns.name, "reader", POD_TIMEOUT).unwrap();
    let read = || -> Result<bool> {
        let out = c.exec(&ns.name, "reader", &["sha256sum", &file]);
        Ok(out.is_ok_and(|o| o.starts_with(&want)))
    };
    assert!(read().unwrap(), "reads before any fault");

    // kill -9 of the serving process, 5 times (it runs on this machine, in the node's
    // fluid-fuse cgroup, a child of the volume's keeper): the keeper's successor takes over
    // the FUSE connection, and the reader sees no error at all.
    let keeper = daemon_pid(&volume).expect("daemon");
    let failures = || -> u64 {
        c.exec(
            &ns.name,
            "reader",
            &["sh", "-c", "cat /tmp/failures 2>/dev/null | wc -l"],
        )
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(u64::MAX)
    };
    let mut serving = serving_pids(keeper)
        .first()
        .copied()
        .expect("serving process");
    assert!(
        std::fs::read_to_string(format!("/proc/{serving}/cgroup"))
            .unwrap()
            .contains(":/fluid-fuse"),
        "the serving process runs outside the plugin pod's cgroup"
    );
    for _ in 0..5 {
        // SAFETY: kill(2) on the serving process's pid has no memory effects.
        unsafe { libc::kill(serving as i32, libc::SIGKILL) };
        serving = c
            .wait(
                "a successor serving process",
                Duration::from_secs(30),
                || Ok(serving_pids(keeper).into_iter().find(|p| *p != serving)),
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(700));
        assert!(
            read().unwrap(),
            "right bytes after a kill of the serving process"
        );
    }
    assert_eq!(daemon_pid(&volume), Some(keeper), "the keeper stayed");

    // A DaemonSet rollout (helm upgrade with a changed pod annotation) replaces the node
    // plugin pod; the daemon and the reader's mount stay.
    let old_plugin = c.node_plugin_pod().unwrap();
    let stamp = format!("node.podAnnotations.e2e-rollout=run-{}", std::process::id());
    let chart = fluid_tests::services::chart_dir();
    c.helm(&[
        "upgrade",
        RELEASE,
        &chart.to_string_lossy(),
        "-n",
        RELEASE_NAMESPACE,
        "--reuse-values",
        "--set-string",
        &stamp,
        "--wait",
        "--timeout",
        "180s",
    ])
    .unwrap();
    let new_plugin = c
        .wait("a new node plugin pod", POD_TIMEOUT, || {
            let p = c.node_plugin_pod()?;
            Ok((p != old_plugin).then_some(p))
        })
        .unwrap();
    c.wait_ready(RELEASE_NAMESPACE, &new_plugin, POD_TIMEOUT)
        .unwrap();
    assert!(read().unwrap(), "reads right after the rollout");
    assert_eq!(
        daemon_pid(&volume),
        Some(keeper),
        "the new plugin adopted the daemon"
    );
    assert!(alive(keeper));
    let failed = failures();
    eprintln!(
        "reader loop: {failed} failed reads over 5 kills of the serving process and the rollout"
    );
    assert_eq!(failed, 0, "no reader error over the kills and the rollout");

    // kill -9 of the keeper itself ends the connection: the node plugin mounts again and
    // re-binds the pod's mount (the path of kernels without FUSE_NOTIFY_RESEND).
    let t = Instant::now();
    // SAFETY: kill(2) on the keeper's pid has no memory effects.
    unsafe { libc::kill(keeper as i32, libc::SIGKILL) };
    c.wait(
        "right bytes again after kill -9 of the keeper",
        Duration::from_secs(30),
        || Ok(read()?.then_some(())),
    )
    .unwrap();
    eprintln!(
        "kill -9 of the keeper -> the reader pod reads right bytes again after {:.2} s (re-mount and re-bind)",
        t.elapsed().as_secs_f64()
    );
    assert_ne!(daemon_pid(&volume), Some(keeper));

    let restarts = c
        .jsonpath(
            Some(&ns.name),
            "pod",
            "reader",
            "{.status.phase} {.status.containerStatuses[0].restartCount}",
        )
        .unwrap();
    assert_eq!(restarts, "Running 0", "the reader pod kept running");
}

#[test]
fn namespaces_are_isolated_and_credentials_stay_out_of_sight() {
    let (_g, c) = setup();
    let a = c.namespace("e2e-nsa").unwrap();
    let b = c.namespace("e2e-nsb").unwrap();
    let data = DatasetBucket::create("e2e-iso").unwrap();
    dataset(c, &a.name, "private", &data).unwrap();
    // A's pod reads it, so credentials have travelled through every part.
    assert_eq!(
        read_all_once(c, &a.name, "owner", "private").unwrap(),
        data.expected_sums(&format!("{MOUNT}/bucket"))
    );

    // B asks for A's Dataset by name through a StorageClass: resolved in B, where it is not.
    let class = storage_class(c, &format!("{}-steal", b.name), "  dataset: private\n").unwrap();
    claim(c, &b.name, "steal", &class.name).unwrap();
    let message = event_messages(c, &b.name, "steal", "ProvisioningFailed").unwrap();
    assert!(
        message.contains("private") && message.contains(&b.name),
        "names the Dataset and the namespace: {message}"
    );
    // B claims A's PV directly: the PV is bound to A's claim, so B's stays Pending.
    let pv = c
        .jsonpath(Some(&a.name), "pvc", "private", "{.spec.volumeName}")
        .unwrap();
    c.apply(&format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: grab, namespace: {}}}\nspec:\n  storageClassName: fluid\n  volumeName: {pv}\n  accessModes: [ReadOnlyMany]\n  resources: {{requests: {{storage: 1Gi}}}}\n",
        b.name
    ))
    .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    for claim in ["steal", "grab"] {
        let phase = c
            .jsonpath(Some(&b.name), "pvc", claim, "{.status.phase}")
            .unwrap();
        assert_eq!(phase, "Pending", "B's claim {claim}");
    }

    // The secret key appears nowhere a user or operator looks.
    let secret = &data.server.secret_key;
    let mut places = vec![
        (
            "events",
            c.kubectl(&["get", "events", "-A", "-o", "json"]).unwrap(),
        ),
        ("PVs", c.kubectl(&["get", "pv", "-o", "json"]).unwrap()),
        (
            "Datasets",
            c.kubectl(&["get", "datasets", "-A", "-o", "json"]).unwrap(),
        ),
    ];
    for container in ["controller", "csi-provisioner"] {
        places.push((
            container,
            c.kubectl(&[
                "logs",
                "-n",
                RELEASE_NAMESPACE,
                "deploy/fluid-controller",
                "-c",
                container,
            ])
            .unwrap(),
        ));
    }
    let node = c.node_plugin_pod().unwrap();
    places.push((
        "node plugin log",
        c.kubectl(&["logs", "-n", RELEASE_NAMESPACE, &node])
            .unwrap(),
    ));
    for entry in std::fs::read_dir("/var/lib/fluid/node").unwrap().flatten() {
        for name in ["fluid-fuse.log", "daemon.log"] {
            if let Ok(text) = std::fs::read_to_string(entry.path().join(name)) {
                places.push(("daemon log", text));
            }
        }
    }
    for (what, text) in &places {
        assert!(!text.is_empty() || *what == "daemon log", "{what} read");
        assert!(
            !text.contains(secret.as_str()),
            "the secret key leaked into {what}"
        );
    }
}

#[test]
fn helm_uninstall_leaves_nothing_running_or_mounted() {
    let (_g, c) = setup();
    {
        let ns = c.namespace("e2e-gone").unwrap();
        let data = DatasetBucket::create("e2e-gone").unwrap();
        dataset(c, &ns.name, "gone", &data).unwrap();
        read_all_once(c, &ns.name, "reader", "gone").unwrap();
        delete_pod(c, &ns.name, "reader").unwrap();
        // The daemon is parked (OnRuntimeDeleted) when the chart goes.
        assert!(!c.fuse_daemons().is_empty());
        drop_namespace(c, ns).unwrap();
    }
    // As a user would: the Datasets go first (the tests' namespaces, deleted in the
    // background, take their Datasets, PVs and volumes with them).
    c.wait("the test namespaces gone", Duration::from_secs(300), || {
        let left = c.kubectl(&[
            "get",
            "namespaces",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])?;
        Ok((!left.split_whitespace().any(|n| n.starts_with("e2e-"))).then_some(()))
    })
    .unwrap();
    c.uninstall().unwrap();
    c.wait(
        "no fluid-fuse process and no fluid mount on the node",
        POD_TIMEOUT,
        || {
            let (daemons, mounts) = (c.fuse_daemons(), c.fluid_mounts());
            Ok((daemons.is_empty() && mounts.is_empty()).then_some(()))
        },
    )
    .with_context(|| format!("left: {:?} {:?}", c.fuse_daemons(), c.fluid_mounts()))
    .unwrap();
    // The garbage collector deletes the DaemonSet's and Deployment's pods after them.
    c.wait("no pod of the release", POD_TIMEOUT, || {
        let pods = c.kubectl(&["get", "pods", "-n", RELEASE_NAMESPACE, "-o", "name"])?;
        Ok(pods.trim().is_empty().then_some(()))
    })
    .unwrap();
    let drivers = c
        .wait("the kubelet dropped the driver", POD_TIMEOUT, || {
            let d = c.jsonpath(None, "csinode", &c.node, "{.spec.drivers[*].name}")?;
            Ok((!d.contains(DRIVER)).then_some(d))
        })
        .unwrap();
    assert!(!drivers.contains(DRIVER));
}

/// Deletes a namespace and waits until it is gone (its Datasets, PVs and volumes with it).
fn drop_namespace(c: &Cluster, ns: Namespace<'_>) -> Result<()> {
    c.kubectl(&[
        "delete",
        "namespace",
        &ns.name,
        "--wait=true",
        "--timeout=120s",
    ])?;
    Ok(())
}
