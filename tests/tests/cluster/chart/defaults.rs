//! The chart with its default values: the objects it documents.

use super::*;

#[test]
fn default_values_render_the_documented_objects() {
    let t = tools();
    let ns = "fluid-system";
    let docs = documents(&t.template(ns, None, false, &[]).unwrap());

    // Every object this chart makes, and each namespaced one in the release's namespace.
    let kinds: BTreeSet<String> = docs
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    let want: BTreeSet<String> = [
        "CSIDriver/fuse.csi.fluid.io",
        "StorageClass/fluid",
        "ServiceAccount/fluid-controller",
        "ClusterRole/fluid-controller",
        "ClusterRoleBinding/fluid-controller",
        "Role/fluid-controller",
        "RoleBinding/fluid-controller",
        "Deployment/fluid-controller",
        "ServiceAccount/fluid-node",
        "ClusterRole/fluid-node",
        "ClusterRoleBinding/fluid-node",
        "DaemonSet/fluid-node",
        "Secret/fluid-webhook-tls",
        "Service/fluid-webhook",
        "MutatingWebhookConfiguration/fluid-webhook",
        "Secret/fluid-cache-token",
        "ValidatingAdmissionPolicy/fluid-node-own-node",
        "ValidatingAdmissionPolicyBinding/fluid-node-own-node",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(kinds, want);

    // The cache endpoints' token: 48 generated characters (64 in base64), given to the node
    // plugin and the controller from the Secret, never in their command lines.
    let token = one(&docs, "Secret", "fluid-cache-token");
    assert_eq!(token["data"]["token"].as_str().map(str::len), Some(64));
    let from_secret = json!({"name": "FLUID_CACHE_TOKEN", "valueFrom": {"secretKeyRef": {"name": "fluid-cache-token", "key": "token"}}});
    for (kind_, name, c) in [
        ("Deployment", "fluid-controller", "controller"),
        ("DaemonSet", "fluid-node", "node"),
    ] {
        let pod = &one(&docs, kind_, name)["spec"]["template"]["spec"];
        let env = container(pod, c)["env"].as_array().unwrap();
        assert!(env.contains(&from_secret), "{name}: {env:?}");
    }
    for d in &docs {
        let cluster_scoped = [
            "CSIDriver",
            "StorageClass",
            "ClusterRole",
            "ClusterRoleBinding",
            "MutatingWebhookConfiguration",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ]
        .contains(&d["kind"].as_str().unwrap());
        let want_ns = if cluster_scoped {
            Value::Null
        } else {
            json!(ns)
        };
        assert_eq!(
            d["metadata"]["namespace"], want_ns,
            "{}",
            d["metadata"]["name"]
        );
    }

    let driver = one(&docs, "CSIDriver", DRIVER);
    assert_eq!(driver["spec"]["attachRequired"], json!(false));
    assert_eq!(driver["spec"]["podInfoOnMount"], json!(true));
    assert_eq!(
        driver["spec"]["volumeLifecycleModes"],
        json!(["Persistent"])
    );
    assert_eq!(driver["spec"]["fsGroupPolicy"], json!("None"));

    let sc = one(&docs, "StorageClass", "fluid");
    assert_eq!(sc["provisioner"], json!(DRIVER));
    assert_eq!(sc["reclaimPolicy"], json!("Delete"));
    assert_eq!(sc["volumeBindingMode"], json!("Immediate"));
    assert_eq!(
        sc["parameters"],
        Value::Null,
        "dataset is optional: no parameters by default"
    );
    assert_eq!(
        sc["metadata"]["annotations"],
        Value::Null,
        "not the default class"
    );

    // The controller: its command line, the provisioner with the PVC metadata it needs, the
    // liveness probe wired to the controller's own /healthz port.
    let dep = one(&docs, "Deployment", "fluid-controller");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], json!("fluid-controller"));
    let ctl = container(pod, "controller");
    assert_eq!(ctl["image"], json!("ghcr.io/fluid-rs/fluid:0.1.0"));
    assert_eq!(ctl["command"], json!(["fluid-csi-controller"]));
    assert_eq!(
        strs(&ctl["args"]),
        [
            "--endpoint=unix:///csi/csi.sock",
            "--state-dir=/var/lib/fluid/controller",
            "--kubernetes",
            "--leader-elect",
            "--leader-election-id=fluid-controller",
            "--stats-interval=30s",
            "--health-listen=0.0.0.0:9808",
            "--webhook-listen=0.0.0.0:9443",
        ]
    );
    // The Lease lives in the controller's own namespace (its Role grants Leases there only).
    let env = ctl["env"].as_array().unwrap();
    assert!(
        env.iter().any(|e| e["name"] == "POD_NAMESPACE"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"),
        "{env:?}"
    );
    let prov = container(pod, "csi-provisioner");
    assert!(
        prov["image"]
            .as_str()
            .unwrap()
            .starts_with("registry.k8s.io/sig-storage/csi-provisioner:v6.")
    );
    let prov_args = strs(&prov["args"]);
    for a in [
        "--csi-address=/csi/csi.sock",
        "--extra-create-metadata",
        "--leader-election",
    ] {
        assert!(
            prov_args.iter().any(|x| x == a),
            "provisioner lacks {a}: {prov_args:?}"
        );
    }
    // The controller answers its liveness probe itself: no livenessprobe sidecar.
    let names = container_names(pod);
    assert_eq!(names, ["controller", "csi-provisioner"]);
    assert_eq!(ctl["livenessProbe"]["httpGet"]["port"], json!("healthz"));
    assert_eq!(
        ctl["ports"][0],
        json!({"name": "healthz", "containerPort": 9808, "protocol": "TCP"})
    );
    assert!(volume(pod, "state-dir").get("emptyDir").is_some());
    for c in [ctl, prov] {
        assert_eq!(
            c["volumeMounts"][0],
            json!({"name": "socket-dir", "mountPath": "/csi"})
        );
    }

    // The node plugin.
    let ds = one(&docs, "DaemonSet", "fluid-node");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], json!("fluid-node"));
    assert_eq!(pod["hostNetwork"], json!(true));
    // The daemons leave the pod's cgroup through the host's PID 1 (--daemon-cgroup).
    assert_eq!(pod["hostPID"], json!(true));
    assert_eq!(pod["dnsPolicy"], json!("ClusterFirstWithHostNet"));
    assert_eq!(pod["priorityClassName"], json!("system-node-critical"));
    assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]));
    assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    let node = container(pod, "node");
    assert_eq!(node["command"], json!(["fluid-csi-node"]));
    assert_eq!(
        strs(&node["args"]),
        [
            "--endpoint=unix:///csi/csi.sock",
            "--nodeid=$(NODE_ID)",
            "--state-dir=/var/lib/fluid/node",
            "--kubernetes",
            "--cache-endpoint=tcp://0.0.0.0:7788",
            "--cache-advertise=$(NODE_IP):7788",
            "--health-listen=0.0.0.0:9818",
            "--registration-dir=/registration",
            "--kubelet-registration-path=/var/lib/kubelet/plugins/fuse.csi.fluid.io/csi.sock",
            "--daemon-cgroup=fluid-fuse",
            "--host-cgroup-root=/host/sys/fs/cgroup",
            "--tier=mem:1GiB",
        ]
    );
    let env = node["env"].as_array().unwrap();
    assert!(env.contains(
        &json!({"name": "NODE_ID", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}})
    ));
    assert!(env.contains(
        &json!({"name": "NODE_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}})
    ));
    assert!(env.contains(&json!({"name": "FLUID_LOG", "value": "info"})));
    assert_eq!(node["securityContext"]["privileged"], json!(true));
    // Host paths at the same path in the container (kubelet passes host paths in CSI calls),
    // with the mounts made there propagated back to the host.
    for path in [
        "/var/lib/kubelet/pods",
        "/var/lib/kubelet/plugins/kubernetes.io/csi",
        "/var/lib/fluid/node",
    ] {
        let (m, hp) = mount_at(pod, node, path);
        assert_eq!(m["mountPropagation"], json!("Bidirectional"), "{path}");
        assert_eq!(hp["path"], json!(path));
    }
    let (_, fuse) = mount_at(pod, node, "/dev/fuse");
    assert_eq!(*fuse, json!({"path": "/dev/fuse", "type": "CharDevice"}));
    let (m, sock) = mount_at(pod, node, "/csi");
    assert_eq!(m.get("mountPropagation"), None);
    assert_eq!(
        sock["path"],
        json!("/var/lib/kubelet/plugins/fuse.csi.fluid.io")
    );
    // The mem tier has no directory: no cache volume.
    assert!(
        !pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"].as_str().unwrap().starts_with("cache-"))
    );
    // The plugin answers its liveness probe and registers itself with the kubelet: no
    // livenessprobe or registrar sidecar.
    let (_, regdir) = mount_at(pod, node, "/registration");
    assert_eq!(regdir["path"], json!("/var/lib/kubelet/plugins_registry"));
    let names = container_names(pod);
    assert_eq!(names, ["node"]);
    assert_eq!(
        node["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "healthz"})
    );
    let ports = node["ports"].as_array().unwrap();
    assert!(ports.contains(&json!({"name": "healthz", "containerPort": 9818, "protocol": "TCP"})));
    assert!(ports.contains(&json!({"name": "cache", "containerPort": 7788, "protocol": "TCP"})));

    // RBAC: the node plugin may only read Nodes (the members of each shared cache) and patch
    // them (its own labels, by the admission policy), nothing else.
    let node_rules = rules_of(&docs, ns, "fluid-node");
    assert_eq!(
        node_rules,
        [json!({"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "patch"]})]
    );
    assert!(!allows(&node_rules, "", "secrets", "get"));
    // The controller gets what its reconcilers and the provisioner use.
    let ctl_rules = rules_of(&docs, ns, "fluid-controller");
    for (group, resources, verbs) in [
        (
            "data.fluid.io",
            &["datasets", "cacheruntimes"][..],
            &["get", "list", "watch", "update", "patch"][..],
        ),
        (
            "data.fluid.io",
            &[
                "datasets/status",
                "cacheruntimes/status",
                "dataloads/status",
            ],
            &["get", "update", "patch"],
        ),
        (
            "data.fluid.io",
            &["dataloads"],
            &["get", "list", "watch", "patch", "delete"],
        ),
        (
            "",
            &["persistentvolumes", "persistentvolumeclaims"],
            &[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ],
        ),
        ("", &["secrets"], &["get", "create", "patch", "delete"]),
        ("", &["pods", "nodes"], &["get", "list", "watch"]),
        (
            "",
            &["events"],
            &["create", "patch", "list", "watch", "update"],
        ),
        ("events.k8s.io", &["events"], &["create", "patch"]),
        (
            "storage.k8s.io",
            &["storageclasses", "csinodes", "volumeattachments"],
            &["get", "list", "watch"],
        ),
        (
            "coordination.k8s.io",
            &["leases"],
            &["get", "list", "watch", "create", "update", "delete"],
        ),
    ] {
        for r in resources {
            for v in verbs {
                assert!(
                    allows(&ctl_rules, group, r, v),
                    "controller may not {v} {group}/{r}"
                );
            }
        }
    }
    // ... and no more: no wildcards, Leases only in its own namespace, Nodes read-only.
    assert!(!ctl_rules.iter().any(|r| r.to_string().contains('*')));
    assert!(!allows(&ctl_rules, "", "nodes", "patch"));
    assert!(!allows(&ctl_rules, "", "pods", "delete"));
    // Secrets only as it is pointed at them (issue 27, hole 4): never listed or watched.
    for verb in ["list", "watch", "update"] {
        assert!(
            !allows(&ctl_rules, "", "secrets", verb),
            "controller may {verb} secrets"
        );
    }
    let lease_role = one(&docs, "Role", "fluid-controller");
    assert!(allows(
        lease_role["rules"].as_array().unwrap(),
        "coordination.k8s.io",
        "leases",
        "update"
    ));
    assert!(!allows(
        one(&docs, "ClusterRole", "fluid-controller")["rules"]
            .as_array()
            .unwrap(),
        "coordination.k8s.io",
        "leases",
        "get"
    ));
}
