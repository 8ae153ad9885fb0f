//! The chart with values set: tiers, kubelet folder, node selector, daemon cgroup, bad values.

use super::*;

#[test]
fn custom_values_render_tiers_kubelet_dir_and_node_selector() {
    let t = tools();
    let values = write_values(t.home.path());
    let ns = "fluid-custom-ns";
    let yaml = t.template(ns, Some(&values), false, &[]).unwrap();
    let docs = documents(&yaml);

    let sc = one(&docs, "StorageClass", "fluid-imagenet");
    assert_eq!(sc["provisioner"], json!(DRIVER));
    assert_eq!(
        sc["parameters"],
        json!({
            "dataset": "imagenet",
            "subPath": "train",
            // The Secret the controller makes from the Dataset's encryptOptions.
            "csi.storage.k8s.io/node-stage-secret-name": "imagenet-fluid-credentials",
            "csi.storage.k8s.io/node-stage-secret-namespace": "${pvc.namespace}"
        })
    );
    assert_eq!(
        sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
        json!("true")
    );

    let dep = one(&docs, "Deployment", "fluid-custom-controller");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
    let ctl = container(pod, "controller");
    assert_eq!(ctl["image"], json!("registry.example.com/fluid:1.2.3"));
    assert!(strs(&ctl["args"]).contains(&"--stats-interval=1m".to_string()));
    assert!(strs(&ctl["args"]).contains(&"--allow-ambient-credentials".to_string()));
    assert!(
        strs(&ctl["args"]).contains(
            &"--credential-endpoints=https://s3.internal:9000,*.aliyuncs.com".to_string()
        )
    );
    // The controller refuses local:// Datasets outside the node's local roots itself.
    assert!(strs(&ctl["args"]).contains(&"--local-roots=/data/datasets,/srv/shared".to_string()));
    assert_eq!(
        volume(pod, "state-dir")["hostPath"],
        json!({"path": "/var/lib/fluid-custom/controller", "type": "DirectoryOrCreate"})
    );

    let ds = one(&docs, "DaemonSet", "fluid-custom-node");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
    // Helm merges maps with the defaults: the OS selector stays unless set to null.
    assert_eq!(
        pod["nodeSelector"],
        json!({"fluid.io/cache": "true", "kubernetes.io/os": "linux"})
    );
    assert_eq!(pod["serviceAccountName"], json!("fluid-custom-node"));
    let node = container(pod, "node");
    assert_eq!(node["image"], json!("registry.example.com/fluid:1.2.3"));
    // The one log variable the node plugin reads and hands to its fluid-fuse daemons.
    let env = node["env"].as_array().unwrap();
    assert!(
        env.contains(&json!({"name": "FLUID_LOG", "value": "debug,kube=info"})),
        "{env:?}"
    );
    assert_eq!(
        strs(&node["args"]),
        [
            "--endpoint=unix:///csi/csi.sock",
            "--nodeid=$(NODE_ID)",
            "--state-dir=/var/lib/fluid-custom/node",
            "--kubernetes",
            "--cache-endpoint=tcp://0.0.0.0:17788",
            "--cache-advertise=$(NODE_IP):17788",
            "--health-listen=0.0.0.0:9818",
            "--registration-dir=/registration",
            "--kubelet-registration-path=/var/lib/k0s/kubelet/plugins/fuse.csi.fluid.io/csi.sock",
            "--daemon-cgroup=fluid-fuse",
            "--host-cgroup-root=/host/sys/fs/cgroup",
            "--tier=mem:512MiB",
            "--tier=ssd:/mnt/nvme0/fluid:100GiB,high=0.95,low=0.7",
            "--tier=HDD:/data/hdd:cache/fluid:1TiB",
            "--local-roots=/data/datasets,/srv/shared",
            "--cache-roots=/mnt/nvme0/fluid,/var/cache/fluid-extra",
            "--mem-budget=16GiB",
            "--disk-budget=2TiB",
            "--allow-ambient-credentials",
            "--credential-endpoints=https://s3.internal:9000,*.aliyuncs.com",
            "--block-size=8MiB",
        ]
    );
    // The directories local:// Datasets may use, read-only, at the same path.
    for dir in ["/data/datasets", "/srv/shared"] {
        let (m, hp) = mount_at(pod, node, dir);
        assert!(m["name"].as_str().unwrap().starts_with("local-root-"));
        assert_eq!(m["readOnly"], json!(true));
        assert_eq!(*hp, json!({"path": dir, "type": "Directory"}));
    }
    // Each disk tier's directory (and each extra one) is a hostPath at the same path, once.
    let cache_dirs = [
        "/mnt/nvme0/fluid",
        "/data/hdd:cache/fluid",
        "/var/cache/fluid-extra",
    ];
    for dir in cache_dirs {
        let (m, hp) = mount_at(pod, node, dir);
        assert!(m["name"].as_str().unwrap().starts_with("cache-"));
        assert_eq!(*hp, json!({"path": dir, "type": "DirectoryOrCreate"}));
    }
    let cache_vols = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["name"].as_str().unwrap().starts_with("cache-"))
        .count();
    assert_eq!(
        cache_vols,
        cache_dirs.len(),
        "one volume per distinct directory"
    );

    // Everything kubelet-related moved to the custom kubelet dir (trailing slash dropped).
    let k = "/var/lib/k0s/kubelet";
    for path in [
        format!("{k}/pods"),
        format!("{k}/plugins/kubernetes.io/csi"),
    ] {
        let (m, hp) = mount_at(pod, node, &path);
        assert_eq!(m["mountPropagation"], json!("Bidirectional"));
        assert_eq!(hp["path"], json!(path));
    }
    let (m, hp) = mount_at(pod, node, "/var/lib/fluid-custom/node");
    assert_eq!(m["mountPropagation"], json!("Bidirectional"));
    assert_eq!(hp["path"], json!("/var/lib/fluid-custom/node"));
    assert_eq!(
        volume(pod, "socket-dir")["hostPath"]["path"],
        json!(format!("{k}/plugins/{DRIVER}"))
    );
    assert_eq!(
        volume(pod, "registration-dir")["hostPath"]["path"],
        json!(format!("{k}/plugins_registry"))
    );
    assert!(strs(&node["args"]).contains(&format!(
        "--kubelet-registration-path={k}/plugins/{DRIVER}/csi.sock"
    )));
    let ds_text = serde_json::to_string(ds).unwrap();
    assert!(
        !ds_text.contains("/var/lib/kubelet"),
        "default kubelet dir left in the DaemonSet"
    );
    assert!(!ds_text.contains("k0s/kubelet//"), "double slash");

    // Names follow fullnameOverride; RBAC binds the renamed accounts the same way.
    assert_eq!(
        rules_of(&docs, ns, "fluid-custom-node"),
        [json!({"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "patch"]})]
    );
    assert!(allows(
        &rules_of(&docs, ns, "fluid-custom-controller"),
        "",
        "secrets",
        "create"
    ));
}

/// With `node.daemonCgroup` empty the daemons stay in the plugin pod: no hostPID, no host
/// cgroups mounted, no flag.
#[test]
fn an_empty_daemon_cgroup_keeps_the_daemons_in_the_plugin_pod() {
    let t = tools();
    let yaml = t
        .template(
            "fluid-system",
            None,
            false,
            &["--set", "node.daemonCgroup="],
        )
        .unwrap();
    let docs = documents(&yaml);
    let pod = &one(&docs, "DaemonSet", "fluid-node")["spec"]["template"]["spec"];
    assert_eq!(pod.get("hostPID"), None);
    let args = strs(&container(pod, "node")["args"]);
    assert!(!args.iter().any(|a| a.contains("cgroup")), "{args:?}");
    let volumes = pod["volumes"].as_array().unwrap();
    assert!(
        volumes.iter().all(|v| v["name"] != json!("host-cgroup")),
        "{volumes:?}"
    );
}

/// Clusters older than 1.30 have no ValidatingAdmissionPolicy: the administrator turns it off.
#[test]
fn the_node_admission_policy_can_be_left_out() {
    let t = tools();
    let yaml = t
        .template(
            "fluid-system",
            None,
            false,
            &["--set", "node.restrictNodeUpdates=false"],
        )
        .unwrap();
    let docs = documents(&yaml);
    assert!(kind(&docs, "ValidatingAdmissionPolicy").is_empty());
    assert!(kind(&docs, "ValidatingAdmissionPolicyBinding").is_empty());
}

#[test]
fn bad_values_are_refused_with_a_message() {
    let t = tools();
    for (flag, message) in [
        (r#"node.tiers=["nvme:/x:1GiB"]"#, "unknown medium \"nvme\""),
        (
            r#"node.tiers=["ssd:cache:1GiB"]"#,
            "must be an absolute path",
        ),
        (r#"node.tiers=["ssd:100GiB"]"#, "expected ssd:DIR:SIZE"),
        (
            r#"node.tiers=["mem:/x:1GiB"]"#,
            "a mem tier takes only a size",
        ),
        (r#"node.tiers=[]"#, "give at least one tier"),
        (
            r#"node.stateDir="/var/lib/a-very-long-directory-name/for/the/node/state""#,
            "longer than 45",
        ),
        (
            r#"controller.stateDir.type="pvc""#,
            "use emptyDir or hostPath",
        ),
        (
            r#"storageClass={"dataset":"a","parameters":{"mountPoint":"s3://b/"}}"#,
            "not both",
        ),
        (
            r#"node.kubeletDir="var/lib/kubelet""#,
            "must be an absolute path",
        ),
    ] {
        let err = t
            .template("fluid-system", None, false, &["--set-json", flag])
            .expect_err(flag);
        assert!(
            err.contains(message),
            "{flag}: wanted {message:?} in:\n{err}"
        );
    }
}
